"""Cleaning up a trained model: a crop box, floater rules with one strength, undo, and saving.

Used by ``splat-edit`` (``trainer/cli/edit.py``) and the viewer's edit panel; nothing here
imports the viewer. ``crop.py``: the oriented box; ``floaters.py``: the four floater rules;
``session.py``: preview, apply and undo as masks; ``output.py``: opening a model and saving the
result as a new model folder or a file in any format.
"""

from .crop import CropBox
from .floaters import RULES, FloaterAnalysis, FloaterThresholds
from .output import EditSource, default_output, open_model, plan_output, save_edited
from .session import EditSession, Preview

__all__ = ["CropBox", "RULES", "FloaterAnalysis", "FloaterThresholds", "EditSession", "Preview",
           "EditSource", "open_model", "plan_output", "save_edited", "default_output"]
