"""Editing in the viewer: the control panel's Edit section (``panel.py``) and the crop box drawn
over the view and moved with Ctrl + mouse (``crop_box.py``), over ``trainer.edit``."""
