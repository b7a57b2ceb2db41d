"""Where the render window and the control panel go: side by side inside the monitor's work area
(the screen less task bars and docks), and where the user left them last time.

Rectangles are ``(x, y, width, height)`` in screen pixels of the windows' client areas (GLFW's and
Dear PyGui's positions). The layout is remembered in ``viewer.json`` in splatview's folder of the
user's configuration directory: ``$SPLATVIEW_CONFIG_DIR`` when set, else ``%APPDATA%\\splatview``
(Windows), ``~/Library/Application Support/splatview`` (macOS) or
``$XDG_CONFIG_HOME/splatview`` (default ``~/.config/splatview``).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from rasterizer.files import atomic_write_text

__all__ = ["Rect", "Layout", "PANEL_SIZE", "GAP", "config_dir", "place_windows", "restore_layout",
           "load_layout", "save_layout"]

Rect = tuple[int, int, int, int]
PANEL_SIZE = (390, 760)     # the panel's preferred size; its height shrinks to the work area
GAP = 8                     # pixels between the two windows
MIN_RENDER_SIZE = (160, 120)
SETTINGS_FILE = "viewer.json"


@dataclass
class Layout:
    """The render window's rectangle, the panel's (None without a panel) and whether the panel
    is shown."""

    render: Rect
    panel: Rect | None
    panel_visible: bool = True


def config_dir() -> Path:
    """splatview's folder in the user's configuration directory (see the module docstring)."""
    if os.environ.get("SPLATVIEW_CONFIG_DIR"):
        return Path(os.environ["SPLATVIEW_CONFIG_DIR"])
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "splatview"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "splatview"
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "splatview"


def place_windows(work_area: Rect, render_size: tuple[int, int], panel: bool,
                  panel_size: tuple[int, int] = PANEL_SIZE) -> Layout:
    """The render window at the work area's top left, as large as ``render_size`` allows with the
    panel beside it on its right; a render window too large for that is shrunk, keeping its
    aspect. The panel's height is at most the work area's."""
    x, y, width, height = work_area
    panel_width = min(panel_size[0], max(width // 3, 200)) if panel else 0
    room = (width - (panel_width + GAP if panel else 0), height)
    scale = min(1.0, room[0] / render_size[0], room[1] / render_size[1])
    render = (x, y, max(MIN_RENDER_SIZE[0], int(render_size[0] * scale)),
              max(MIN_RENDER_SIZE[1], int(render_size[1] * scale)))
    if not panel:
        return Layout(render, None, False)
    panel_x = min(x + render[2] + GAP, x + width - panel_width)
    return Layout(render, (panel_x, y, panel_width, min(panel_size[1], height)), True)


def _inside(rect: Rect, work_area: Rect) -> bool:
    x, y, width, height = rect
    ax, ay, aw, ah = work_area
    return width >= 1 and height >= 1 and ax <= x and ay <= y and x + width <= ax + aw and y + height <= ay + ah


def restore_layout(saved: Layout | None, work_area: Rect, panel: bool) -> Layout | None:
    """``saved`` when both its windows still lie inside ``work_area`` (the monitor may have
    changed since), else None."""
    if saved is None or not _inside(saved.render, work_area):
        return None
    if not panel:
        return Layout(saved.render, None, False)
    if saved.panel is None or not _inside(saved.panel, work_area):
        return None
    return saved


def _rect(value) -> Rect | None:
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 4 and all(isinstance(v, int) for v in value)):
        raise ValueError("a window rectangle must be four integers")
    return tuple(value)


def load_layout(folder: Path | None = None) -> Layout | None:
    """The remembered layout, or None when there is none or it cannot be read (a damaged file
    is ignored: the windows are then placed afresh)."""
    path = (folder or config_dir()) / SETTINGS_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return Layout(_rect(document["render_window"]), _rect(document.get("panel")),
                      bool(document.get("panel_visible", True)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_layout(layout: Layout, folder: Path | None = None) -> Path:
    """Remember ``layout`` (written atomically); returns the file."""
    path = (folder or config_dir()) / SETTINGS_FILE
    document = {"render_window": list(layout.render), "panel": list(layout.panel) if layout.panel else None,
                "panel_visible": layout.panel_visible}
    atomic_write_text(path, json.dumps(document, indent=1) + "\n")
    return path
