"""Editing in the viewer: a crop box, floater cleanup with a preview, apply/undo and save.

* :class:`EditController` - the viewer's side of a :class:`trainer.edit.EditSession` (no GL, no
  Dear PyGui): the crop box the panel and the mouse edit, the floater strength, how removed
  floaters are shown (``highlight``: drawn in magenta; ``hide``), the Gaussians to display, and
  saving (a new model folder or a file; never over the model opened).
* :class:`EditSection` - the panel's "Edit" widgets (tags start with ``edit_``); a
  :class:`~viewer.window.panel.PanelSection`.
* :func:`attach_editing` - the hook: builds both, registers the frame callback that shows the
  preview, the crop box drawing and its mouse handling (``viewer/edit/crop_box.py``) with a
  :class:`~viewer.app.ViewerApp`, and returns the section for the panel.

Gaussians outside the enabled crop box are hidden in the preview; the panel shows how many
Gaussians the box and each floater rule remove. Apply makes the preview an edit (Undo takes it
back, with its box and strength); Save writes what the preview shows.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from rasterizer.camera import Camera
from rasterizer.files import FileFormatError
from rasterizer.formats import FORMATS
from rasterizer.gaussians import Gaussians, inverse_sigmoid, rgb_to_sh_dc
from trainer.edit import RULES, CropBox, EditSession, EditSource, default_output, save_edited

__all__ = ["EditController", "EditSection", "PreviewUpdater", "attach_editing", "edit_source", "SHOW_MODES",
           "HIGHLIGHT_RGB"]

SHOW_MODES = ("highlight", "hide")
HIGHLIGHT_RGB = (1.0, 0.0, 1.0)     # magenta: rare in captured scenes
HIGHLIGHT_OPACITY = 0.7             # at least this opaque, so that faint floaters show
PREVIEW_INTERVAL = 0.1              # seconds between re-uploads of the preview while dragging


class EditController:
    """Edit state of one model shown in the viewer.

    Args:
        gaussians: the model as opened (not modified).
        cameras: its input cameras for the "unseen" floater rule ([] when there are none).
        source: where the model came from (for the default output name and the copied files).
    """

    def __init__(self, gaussians: Gaussians, cameras: Sequence[Camera], source: EditSource):
        self.session = EditSession(gaussians, cameras)
        self.source = source
        self.crop_enabled = False
        self.box = CropBox.around(gaussians)   # what the fields show, kept while disabled
        self.show = "highlight"
        self.format = "ply"
        self.output = str(default_output(source, self.format))
        self.message = ""
        self.version = 0        # bumped whenever the displayed Gaussians change
        self.box_version = 0    # bumped whenever the box changes (the panel refreshes its fields)

    def start_analysis(self) -> None:
        """Compute the floater statistics in a thread: the neighbour search takes seconds on big
        models, better spent while the user looks than on the first slider move."""
        threading.Thread(target=self.session.analysis.prepare, name="floater-analysis", daemon=True).start()

    # ----- settings ------------------------------------------------------------------------------
    def _changed(self) -> None:
        self.session.set_crop(self.box if self.crop_enabled else None)
        self.version += 1

    def set_crop_enabled(self, enabled: bool) -> None:
        self.crop_enabled = bool(enabled)
        self._changed()

    def set_box(self, box: CropBox) -> None:
        self.box = box
        self.box_version += 1
        self._changed()

    def update_box(self, **changes) -> None:
        """Change ``center``, ``size`` or ``rotation`` (three numbers each); a non-positive or
        non-finite value leaves the box as it was."""
        try:
            self.set_box(self.box.replace(**changes))
        except ValueError:
            self.box_version += 1   # the panel shows the unchanged box again

    def fit_box(self) -> None:
        """The box around the bulk of the Gaussians left by earlier edits."""
        kept = self.session.original.index(self.session.applied.to(self.session.original.device))
        self.set_box(CropBox.around(kept))

    def set_strength(self, strength: float) -> None:
        self.session.set_strength(min(max(float(strength), 0.0), 1.0))
        self.version += 1

    def set_show(self, mode: str) -> None:
        if mode not in SHOW_MODES:
            raise ValueError(f"show must be one of {SHOW_MODES}, got {mode!r}")
        self.show = mode
        self.version += 1

    def set_format(self, format_name: str) -> None:
        """Choose the save format; a default output name follows it."""
        if format_name not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format_name!r}")
        was_default = self.output == str(default_output(self.source, self.format))
        self.format = format_name
        if was_default:
            self.output = str(default_output(self.source, format_name))

    # ----- edits ---------------------------------------------------------------------------------
    def apply(self) -> None:
        removed = self.session.apply()
        self.crop_enabled = False
        self.message = f"applied: {removed:,} Gaussians removed"
        self.version += 1

    def undo(self) -> None:
        if self.session.undo():
            self.crop_enabled = self.session.crop is not None
            if self.session.crop is not None:
                self.box = self.session.crop
                self.box_version += 1
            self.message = "undone"
            self.version += 1

    def save(self) -> Path | None:
        """Write what the preview keeps to ``output`` in ``format``; the outcome is in ``message``."""
        try:
            kept = self.session.preview().kept
            if kept == 0:
                raise ValueError("nothing to save: the edit removes every Gaussian")
            written = save_edited(self.session.result(), self.output, self.format, self.source)
        except (OSError, FileFormatError, ValueError) as error:
            self.message = f"not saved: {error}"
            return None
        self.message = f"saved {kept:,} Gaussians to {written}"
        self.output = str(default_output(self.source, self.format))   # the next save gets a new name
        return written

    def save_box(self, path: str | Path) -> None:
        """Write the crop box as JSON (``splat-edit --crop`` reads it)."""
        try:
            self.box.write(path)
            self.message = f"crop box saved to {path}"
        except OSError as error:
            self.message = f"crop box not saved: {error}"

    # ----- what to show --------------------------------------------------------------------------
    def summary(self) -> list[str]:
        """Lines for the panel: what the box and each rule remove, and what stays."""
        preview = self.session.preview()
        described = preview.thresholds.describe()
        lines = [f"outside the crop box: {int(preview.outside.sum()):,}" if self.crop_enabled else "crop box: off"]
        if self.session.strength > 0:
            lines += [f"{rule}: {preview.rule_counts[rule]:,} ({described[rule]})" for rule in RULES]
            lines.append(f"floaters (any rule): {int(preview.floaters.sum()):,}")
        elif not self.session.analysis.ready:
            lines.append("floater statistics: computing...")
        lines.append(f"kept: {preview.kept:,} of {len(self.session.original):,}")
        return lines

    def display_gaussians(self) -> Gaussians:
        """The Gaussians to draw: what the preview keeps, plus (``highlight``) the floaters it
        removes, recoloured magenta and at least ``HIGHLIGHT_OPACITY`` opaque."""
        preview = self.session.preview()
        original = self.session.original
        highlight = self.show == "highlight" and bool(preview.floaters.any())
        visible = preview.keep | preview.floaters if highlight else preview.keep
        if not highlight and bool(visible.all()):
            return original   # nothing hidden or recoloured: no copy
        shown = original.index(visible.to(original.device))
        if not highlight:
            return shown
        flagged = preview.floaters[visible].to(original.device)
        colour = rgb_to_sh_dc(torch.tensor(HIGHLIGHT_RGB, device=original.device, dtype=original.dtype))
        sh_dc, sh_rest, logits = shown.sh_dc.clone(), shown.sh_rest.clone(), shown.opacity_logits.clone()
        sh_dc[flagged] = colour
        sh_rest[flagged] = 0.0
        floor = float(inverse_sigmoid(torch.tensor(HIGHLIGHT_OPACITY)))
        logits[flagged] = logits[flagged].clamp_min(floor)
        return replace(shown, sh_dc=sh_dc, sh_rest=sh_rest, opacity_logits=logits)


class PreviewUpdater:
    """A ViewerApp frame callback: shows the controller's Gaussians when they changed (at most
    every ``PREVIEW_INTERVAL`` seconds while the user drags a control)."""

    def __init__(self, controller: EditController):
        self.controller = controller
        self.shown = 0
        self.last = 0.0

    def __call__(self, app) -> None:
        if self.controller.version == self.shown or time.monotonic() - self.last < PREVIEW_INTERVAL:
            return
        self.shown = self.controller.version
        self.last = time.monotonic()
        app.set_gaussians(self.controller.display_gaussians())


class EditSection:
    """The panel's Edit widgets over ``controller``; pass it to ``ControlPanel(sections=[...])``."""

    def __init__(self, controller: EditController):
        self.controller = controller
        self._box_shown = -1

    def build(self) -> None:
        import dearpygui.dearpygui as dpg  # noqa: PLC0415 - the rest of this module works without it

        c = self.controller
        c.start_analysis()
        with dpg.collapsing_header(label="Edit", default_open=True, tag="header_edit"):
            dpg.add_text("Ctrl + left drag moves the box, Ctrl + right drag turns it, Ctrl + wheel scales it",
                         wrap=360)
            with dpg.group(horizontal=True):
                dpg.add_checkbox(label="crop box", tag="edit_crop", default_value=c.crop_enabled,
                                 callback=lambda s, a, u=None: c.set_crop_enabled(a))
                dpg.add_button(label="Fit to model", tag="edit_fit", callback=lambda *_: c.fit_box())
            fields = (("center", "center", 0.01), ("size", "size", 0.01), ("rotation", "rotation (deg)", 0.5))
            for field, label, speed in fields:
                dpg.add_drag_floatx(label=label, tag=f"edit_{field}", size=3, speed=speed,
                                    default_value=list(getattr(c.box, field)),
                                    callback=lambda s, a, u=None, f=field: c.update_box(**{f: list(a)[:3]}))
            dpg.add_slider_float(label="floater strength", tag="edit_strength", min_value=0.0, max_value=1.0,
                                 default_value=c.session.strength, clamped=True,
                                 callback=lambda s, a, u=None: c.set_strength(a))
            dpg.add_combo(SHOW_MODES, label="removed floaters", tag="edit_show", default_value=c.show,
                          callback=lambda s, a, u=None: c.set_show(a))
            dpg.add_text("", tag="edit_summary", wrap=360)
            with dpg.group(horizontal=True):
                dpg.add_button(label="Apply", tag="edit_apply", callback=lambda *_: c.apply())
                dpg.add_button(label="Undo", tag="edit_undo", callback=lambda *_: c.undo())
            dpg.add_combo(FORMATS, label="format", tag="edit_format", default_value=c.format,
                          callback=lambda s, a, u=None: self._on_format(a))
            dpg.add_input_text(label="save as", tag="edit_output", default_value=c.output,
                               callback=lambda s, a, u=None: setattr(c, "output", a))
            with dpg.group(horizontal=True):
                dpg.add_button(label="Save", tag="edit_save", callback=lambda *_: c.save())
                dpg.add_button(label="Save box JSON", tag="edit_save_box",
                               callback=lambda *_: c.save_box(Path(c.output).with_suffix("").as_posix() + "-box.json"))
            dpg.add_text("", tag="edit_message", wrap=360)
        self.update()

    def _on_format(self, format_name: str) -> None:
        import dearpygui.dearpygui as dpg  # noqa: PLC0415

        self.controller.set_format(format_name)
        dpg.set_value("edit_output", self.controller.output)

    def update(self) -> None:
        import dearpygui.dearpygui as dpg  # noqa: PLC0415

        c = self.controller
        if self._box_shown != c.box_version:   # changed by the mouse, Fit or Undo
            self._box_shown = c.box_version
            for field in ("center", "size", "rotation"):
                dpg.set_value(f"edit_{field}", list(getattr(c.box, field)))
        dpg.set_value("edit_crop", c.crop_enabled)
        dpg.set_value("edit_strength", c.session.strength)
        dpg.set_value("edit_summary", "\n".join(c.summary()))
        dpg.set_value("edit_message", c.message)
        if dpg.get_value("edit_output") != c.output and not dpg.is_item_active("edit_output"):
            dpg.set_value("edit_output", c.output)
        dpg.configure_item("edit_undo", enabled=c.session.can_undo)


def edit_source(viewer_input, path: str | Path, iteration: int = -1) -> EditSource:
    """What the viewer opened (a ``ViewerInput`` from ``path``, ``--iteration``), for editing: its
    input cameras (none when the only camera is the made-up framing one)."""
    from rasterizer.model_folder import latest_iteration, point_cloud_path  # noqa: PLC0415

    path = Path(path)
    cameras = [] if viewer_input.framing_only else list(viewer_input.cameras)
    if path.is_dir():
        iteration = latest_iteration(path) if iteration == -1 else iteration
        return EditSource(viewer_input.gaussians, cameras, point_cloud_path(path, iteration), path, iteration)
    return EditSource(viewer_input.gaussians, cameras, path)


def attach_editing(app, source: EditSource) -> EditSection:
    """Add editing to ``app`` (a ViewerApp showing ``source.gaussians``): the preview frame
    callback, the crop box drawing and its mouse controls. Returns the panel section."""
    from .crop_box import CropBoxMouse, CropBoxOverlay  # noqa: PLC0415

    controller = EditController(source.gaussians, source.cameras, source)
    app.frame_callbacks.append(PreviewUpdater(controller))
    app.overlays.append(CropBoxOverlay(controller))
    if app.window is not None:
        CropBoxMouse(controller, app.state, app.window)
    return EditSection(controller)
