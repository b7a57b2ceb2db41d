"""The control panel: a Dear PyGui viewport ("splatview controls") next to the render window.

A thin layer over :class:`ViewerState`: every widget callback only calls ``state.update(...)`` or
``state.snap_*``; the render loop (``ViewerApp.run``) reads the state and calls :meth:`frame`
once per frame. Both windows live in one thread (viewer notes §1.4 ii): DPG brings its own GLFW
(3.3.7, linked into ``_dearpygui.so``) and its own GL context, next to the render window's.

Dear PyGui needs a display: without one it aborts the whole process (SIGABRT, not an
exception), so callers check ``DISPLAY`` and tests run it in a child process.
"""

from __future__ import annotations

import ctypes
import os
import time
from typing import Callable, Mapping, Protocol, Sequence

import dearpygui.dearpygui as dpg

from ..state import NAVIGATION_MODES, RENDER_MODES, SCALING_RANGE, ViewerState

__all__ = ["ControlPanel", "PanelError", "PanelSection"]

TITLE = "splatview controls"


class PanelError(RuntimeError):
    """The panel could not be created (no display, no GL)."""


class PanelSection(Protocol):
    """Extra widgets in the panel's window (e.g. viewer/live/panel.py)."""

    def build(self) -> None:
        """Add the widgets (called inside the panel window's container)."""

    def update(self) -> None:
        """Refresh them (called once per frame, before DPG renders)."""


class _DpgContext:
    """DPG's own GL context, to make current again before each DPG frame.

    Why: DPG makes its context current once (in ``show_viewport``) and never again, while the
    render window makes its own (GL 4.3 core) context current to draw. Without switching back,
    ImGui would draw into the render window's context and leave GL errors there. DPG links its
    GLFW statically but exports the symbols, so ``_dearpygui.so`` (already loaded: same handle)
    gives us its ``glfwGetCurrentContext``/``glfwMakeContextCurrent``.
    """

    def __init__(self):
        library = ctypes.CDLL(os.path.join(os.path.dirname(dpg.__file__), "_dearpygui.so"))
        library.glfwGetCurrentContext.restype = ctypes.c_void_p
        library.glfwMakeContextCurrent.argtypes = [ctypes.c_void_p]
        library.glfwMakeContextCurrent.restype = None
        self._make_current = library.glfwMakeContextCurrent
        self._window = library.glfwGetCurrentContext()  # call right after dpg.show_viewport()
        if not self._window:
            raise PanelError("Dear PyGui has no current GL context after show_viewport()")

    def make_current(self) -> None:
        self._make_current(self._window)


class ControlPanel:
    """The Dear PyGui control window editing ``state``.

    ``stats_source``: optional callable returning extra ``{label: value}`` lines shown under the
    statistics (e.g. the backend's own figures); it may be ``None``. ``sections``: extra widget
    groups appended to the window (:class:`PanelSection`).
    """

    def __init__(self, state: ViewerState, stats_source: Callable[[], Mapping[str, object]] | None = None,
                 width: int = 380, height: int = 560, x_pos: int | None = None, y_pos: int = 0,
                 sections: Sequence[PanelSection] = (), remote: bool = False):
        if os.name == "posix" and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
            raise PanelError("no display for the control panel (DISPLAY is not set)")
        self.state = state
        self.stats_source = stats_source
        self.sections = list(sections)
        self.remote = remote  # --connect: add the network viewer's controls
        self._open = True
        dpg.create_context()
        try:
            self._build()
            dpg.create_viewport(title=TITLE, width=width, height=height, vsync=False,
                                x_pos=state.width + 20 if x_pos is None else x_pos, y_pos=y_pos)
            dpg.setup_dearpygui()
            dpg.set_primary_window("splatview_panel", True)
            dpg.show_viewport()
            self._context = _DpgContext()
        except Exception as error:
            dpg.destroy_context()
            self._open = False
            raise PanelError(f"could not create the control panel: {error}") from error

    # ----- widgets ----------------------------------------------------------------------------
    def _build(self) -> None:
        state = self.state
        with dpg.window(tag="splatview_panel", label=TITLE):
            dpg.add_text("frame: -", tag="stat_frame")
            dpg.add_text("Gaussians: -", tag="stat_count")
            dpg.add_combo(list(state.available_backends), label="backend", tag="backend",
                          default_value=state.backend, callback=self._setting("backend"))
            dpg.add_text("", tag="stat_extra")
            dpg.add_separator()
            if self.remote:
                for name, label in (("remote_train", "Train"), ("remote_keep_alive", "Keep model alive (after training)"),
                                    ("remote_local_rendering", "Render locally (splatview trainer)")):
                    dpg.add_checkbox(label=label, tag=name, default_value=getattr(state, name),
                                     callback=self._setting(name))
                dpg.add_separator()
            dpg.add_combo(RENDER_MODES, label="render mode", tag="render_mode", default_value=state.render_mode,
                          callback=self._setting("render_mode"))
            dpg.add_slider_float(label="scaling modifier", tag="scaling_modifier", min_value=SCALING_RANGE[0],
                                 max_value=SCALING_RANGE[1], default_value=state.scaling_modifier,
                                 clamped=True, callback=self._setting("scaling_modifier"))
            dpg.add_slider_int(label="SH degree", tag="sh_degree", min_value=0, max_value=state.max_sh_degree,
                               default_value=state.sh_degree, clamped=True, callback=self._setting("sh_degree"))
            dpg.add_checkbox(label="antialiasing", tag="antialiasing", default_value=state.antialiasing,
                             callback=self._setting("antialiasing"))
            dpg.add_checkbox(label="fast culling", tag="fast_culling", default_value=state.fast_culling,
                             callback=self._setting("fast_culling"))
            dpg.add_color_edit([c * 255.0 for c in state.background], label="background",
                               tag="background", no_alpha=True, callback=self._on_background)
            dpg.add_separator()
            dpg.add_combo(NAVIGATION_MODES, label="navigation", tag="navigation", default_value=state.navigation,
                          callback=self._setting("navigation"))
            dpg.add_slider_float(label="speed", tag="speed", min_value=0.01, max_value=10.0,
                                 default_value=state.speed, callback=self._setting("speed"))
            last = max(len(state.input_cameras) - 1, 0)
            dpg.add_input_int(label="input camera", tag="snap_index", default_value=0, min_value=0,
                              max_value=last, min_clamped=True, max_clamped=True)
            with dpg.group(horizontal=True):
                dpg.add_button(label="Snap to camera", tag="snap_to", callback=self._on_snap_to)
                dpg.add_button(label="Snap to closest", tag="snap_closest", callback=self._on_snap_closest)
            dpg.add_separator()
            dpg.add_checkbox(label="vsync", tag="vsync", default_value=state.vsync, callback=self._setting("vsync"))
            dpg.add_button(label="Screenshot", tag="screenshot", callback=self._on_screenshot)
            for section in self.sections:
                dpg.add_separator()
                section.build()

    def _setting(self, name: str):
        """A DPG callback ``(sender, app_data)`` that sets ``state.<name>`` to the widget's value."""

        def callback(sender=None, app_data=None, user_data=None):
            self.state.update(**{name: app_data})
            self._show(name)

        return callback

    def _show(self, name: str) -> None:
        """Reflect the state's (possibly clamped) value back into its widget."""
        if dpg.does_item_exist(name):
            dpg.set_value(name, getattr(self.state, name))

    def _on_background(self, sender=None, app_data=None, user_data=None) -> None:
        # DPG's colour values are 0..255 through get_value/set_value but the callback's app_data
        # is 0..1; read the widget itself, which is always 0..255.
        rgba = dpg.get_value(sender) if sender is not None and dpg.does_item_exist(sender) \
            else [255.0 * v for v in app_data]
        self.state.update(background=tuple(v / 255.0 for v in list(rgba)[:3]))

    def _on_snap_to(self, sender=None, app_data=None, user_data=None) -> None:
        if self.state.input_cameras:
            index = min(max(int(dpg.get_value("snap_index")), 0), len(self.state.input_cameras) - 1)
            self.state.snap_to(index)

    def _on_snap_closest(self, sender=None, app_data=None, user_data=None) -> None:
        if self.state.input_cameras:
            dpg.set_value("snap_index", self.state.snap_to_closest())

    def _on_screenshot(self, sender=None, app_data=None, user_data=None) -> None:
        self.state.screenshot_path = time.strftime("splatview-%Y%m%d-%H%M%S.png")

    # ----- frames -----------------------------------------------------------------------------
    def frame(self, frame_seconds: float, gaussian_count: int) -> None:
        """Update the statistics and render one DPG frame (this also runs widget callbacks)."""
        if not self.is_open():
            return
        fps = 1.0 / frame_seconds if frame_seconds > 0 else 0.0
        dpg.set_value("stat_frame", f"frame: {frame_seconds * 1000:.2f} ms ({fps:.1f} FPS)")
        dpg.set_value("stat_count", f"Gaussians: {gaussian_count:,}")
        if self.stats_source is not None:
            extra = self.stats_source() or {}
            dpg.set_value("stat_extra", "\n".join(f"{key}: {value}" for key, value in extra.items()))
        for section in self.sections:
            section.update()
        self._context.make_current()
        dpg.render_dearpygui_frame()
        if not dpg.is_dearpygui_running():
            self.close()

    def is_open(self) -> bool:
        return self._open

    def close(self) -> None:
        if self._open:
            self._open = False
            self._context.make_current()
            dpg.destroy_context()
