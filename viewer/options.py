"""The viewer's named choices and its key bindings, in one place for the command line, the panel,
the in-window help and the README.

This module imports nothing heavy (no torch, no GL), so that ``splat-view --help`` answers at
once.
"""

from __future__ import annotations

__all__ = ["BACKENDS", "RENDER_MODES", "NAVIGATION_MODES", "UP_AXES", "SCALING_RANGE", "KEYS", "MOUSE",
           "key_help_lines"]

BACKENDS = ("cuda", "gl", "gl-compute")
RENDER_MODES = ("splats", "ellipsoids", "initial_points", "depth")
NAVIGATION_MODES = ("fps", "orbit", "trackball")
# "auto": the input cameras' up direction; "-y" is COLMAP's and graphdeco's (y points down).
UP_AXES = ("auto", "-y", "+y", "+z", "-z", "+x", "-x")
SCALING_RANGE = (0.001, 1.0)  # SIBR's slider

# (keys, what they do): SIBR's keys first, then splatview's own.
KEYS: tuple[tuple[str, str], ...] = (
    ("W S A D", "move forward / back / left / right"),
    ("Q E", "move down / up"),
    ("I K J L", "turn up / down / left / right"),
    ("U O", "roll left / right"),
    ("P", "snap to the closest input camera"),
    ("[ ]", "previous / next input camera"),
    ("M", "screenshot"),
    ("Esc", "close the help or the menu, else quit"),
    ("Tab", "show / hide the control panel"),
    ("H, F1", "show / hide these keys in the window"),
    ("N", "next navigation mode (fps, orbit, trackball)"),
    ("Enter", "add the current view as a camera path keyframe"),
    ("Space", "play / stop the camera path"),
)
# Mouse, per navigation mode.
MOUSE: dict[str, tuple[tuple[str, str], ...]] = {
    "fps": (("left drag", "look around"), ("right / middle drag", "pan"), ("wheel", "move forward / back")),
    "orbit": (("left drag", "turn around the pivot, up stays up"), ("right / middle drag", "pan"),
              ("wheel", "move to / from the pivot"), ("double click", "pivot on the point under the cursor")),
    "trackball": (("left drag", "rotate freely around the pivot"), ("right / middle drag", "pan"),
                  ("wheel", "move to / from the pivot"), ("double click", "pivot on the point under the cursor")),
}
CONTEXT_MENU_HINT = ("right click", "menu (show the panel, help, screenshot, quit)")


def key_help_lines(navigation: str | None = None) -> list[tuple[str, str]]:
    """(keys, meaning) rows: the keys, then the mouse of ``navigation`` (all modes when None)."""
    rows = list(KEYS)
    modes = NAVIGATION_MODES if navigation is None else (navigation,)
    for mode in modes:
        rows += [(f"{button}" if navigation else f"{mode}: {button}", meaning) for button, meaning in MOUSE[mode]]
    rows.append(CONTEXT_MENU_HINT)
    return rows
