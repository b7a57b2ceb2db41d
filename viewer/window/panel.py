"""The control panel: a Dear PyGui viewport ("splatview controls") beside the render window.

A thin layer over :class:`ViewerState`: widget callbacks only call ``state.update(...)`` or
``state.snap_*``, and every frame the widgets are refreshed from the state (keys and the mouse
change it too), so what the panel shows is always what is drawn. Controls that do nothing in the
current render mode, backend or connection are hidden (:func:`applicable_controls`).

Both windows live in one thread (viewer notes §1.4 ii): DPG brings its own GLFW (3.3.7, linked
into ``_dearpygui.so``) and its own GL context, next to the render window's. Closing the panel
(its window's close button, the menu, Tab in either window) hides it; Tab in the render window
or its right-click menu shows it again. Closing the render window quits.

Dear PyGui needs a display: without one it aborts the whole process (SIGABRT, not an
exception), so callers check ``DISPLAY`` and tests run it in a child process.
"""

from __future__ import annotations

import ctypes
import math
import os
from typing import Callable, Mapping, Protocol, Sequence

import dearpygui.dearpygui as dpg

from ..options import NAVIGATION_MODES, RENDER_MODES, SCALING_RANGE, UP_AXES
from ..state import FOV_RANGE_DEGREES, SPEED_RANGE, TURN_SPEED_RANGE, ViewerState
from .layout import PANEL_SIZE, Rect

__all__ = ["ControlPanel", "PanelError", "PanelSection", "applicable_controls", "TITLE"]

TITLE = "splatview controls"
GLFW_ICONIFIED = 0x00020002
# Widgets that show a state attribute of the same name, refreshed from the state every frame.
MIRRORED = ("backend", "render_mode", "scaling_modifier", "sh_degree", "antialiasing", "fast_culling", "vsync",
            "navigation", "speed", "turn_speed", "up")


class PanelError(RuntimeError):
    """The panel could not be created (no display, no GL)."""


class PanelSection(Protocol):
    """Extra widgets in the panel's window (e.g. viewer/live/panel.py)."""

    def build(self) -> None:
        """Add the widgets (called inside the panel window's container)."""

    def update(self) -> None:
        """Refresh them (called once per frame, before DPG renders)."""


def applicable_controls(state: ViewerState) -> dict[str, bool]:
    """Which state controls do something now (widget tag -> shown).

    The backend picks how splats are drawn (the other modes are GL drawings); the scaling
    modifier and antialiasing affect splats and depth; the SH degree only splats (and only a
    model with SH beyond degree 0); fast culling only the OpenGL splat backends (the CUDA kernels
    always cull exactly). A trainer's images (``--connect``) take none of the local settings
    except the scaling modifier, which is sent to the trainer.
    """
    remote_images = state.shows_remote_images
    splats = state.render_mode == "splats" and not remote_images
    return {
        "backend": splats and len(state.available_backends) > 1,
        "render_mode": not remote_images,
        "scaling_modifier": remote_images or state.render_mode in ("splats", "depth"),
        "sh_degree": splats and state.max_sh_degree > 0,
        "antialiasing": not remote_images and state.render_mode in ("splats", "depth"),
        "fast_culling": splats and state.backend in ("gl", "gl-compute"),
        "background": not remote_images,
    }


class _DpgWindow:
    """DPG's own GLFW window and GL context, through the GLFW that ``_dearpygui.so`` links.

    Why: DPG makes its context current once (in ``show_viewport``) and never again, while the
    render window makes its own (GL 4.3 core) context current to draw. Without switching back,
    ImGui would draw into the render window's context and leave GL errors there. DPG links its
    GLFW statically but exports the symbols, so ``_dearpygui.so`` (already loaded: same handle)
    gives us its ``glfwMakeContextCurrent``, and ``glfwHideWindow``/``glfwShowWindow`` (DPG has
    no call to hide its viewport).
    """

    def __init__(self):
        library = ctypes.CDLL(os.path.join(os.path.dirname(dpg.__file__), "_dearpygui.so"))
        library.glfwGetCurrentContext.restype = ctypes.c_void_p
        for name in ("glfwMakeContextCurrent", "glfwHideWindow", "glfwShowWindow", "glfwFocusWindow"):
            getattr(library, name).argtypes = [ctypes.c_void_p]
            getattr(library, name).restype = None
        library.glfwGetWindowAttrib.argtypes = [ctypes.c_void_p, ctypes.c_int]
        library.glfwGetWindowAttrib.restype = ctypes.c_int
        self._library = library
        self._window = library.glfwGetCurrentContext()  # call right after dpg.show_viewport()
        if not self._window:
            raise PanelError("Dear PyGui has no current GL context after show_viewport()")

    def make_current(self) -> None:
        self._library.glfwMakeContextCurrent(self._window)

    def hide(self) -> None:
        self._library.glfwHideWindow(self._window)

    def show(self) -> None:
        self._library.glfwShowWindow(self._window)

    def iconified(self) -> bool:
        return bool(self._library.glfwGetWindowAttrib(self._window, GLFW_ICONIFIED))


class ControlPanel:
    """The Dear PyGui control window editing ``state``.

    Args:
        state: the viewer state.
        stats_source: optional callable returning extra ``{label: value}`` lines shown under the
            statistics (e.g. the backend's own figures).
        rect: (x, y, width, height) on the screen; default: beside a render window at the origin.
        sections: extra widget groups appended to the window (:class:`PanelSection`).
        actions: what the menu's entries call besides the panel's own: ``"help"`` (toggle the
            key-binding help in the render window) and ``"quit"`` (close the render window).
        visible: start shown (False: hidden until :meth:`show`).
    """

    def __init__(self, state: ViewerState, stats_source: Callable[[], Mapping[str, object]] | None = None,
                 rect: Rect | None = None, sections: Sequence[PanelSection] = (),
                 actions: Mapping[str, Callable[[], None]] | None = None, visible: bool = True):
        if os.name == "posix" and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
            raise PanelError("no display for the control panel (DISPLAY is not set)")
        self.state = state
        self.stats_source = stats_source
        self.sections = list(sections)
        self.actions = dict(actions or {})
        self.visible = visible
        self._open = True
        x, y, width, height = rect or (state.width + 8, 0, *PANEL_SIZE)
        dpg.create_context()
        try:
            self._build()
            dpg.create_viewport(title=TITLE, width=width, height=height, x_pos=x, y_pos=y, vsync=False,
                                min_width=200, min_height=150, disable_close=True)
            dpg.set_exit_callback(self.hide)   # the window's close button (disable_close: no exit)
            dpg.setup_dearpygui()
            dpg.set_primary_window("splatview_panel", True)
            dpg.show_viewport()
            self._window = _DpgWindow()
        except Exception as error:
            dpg.destroy_context()
            self._open = False
            raise PanelError(f"could not create the control panel: {error}") from error
        if not visible:
            self._window.hide()

    # ----- widgets ----------------------------------------------------------------------------
    def _build(self) -> None:
        state = self.state
        with dpg.window(tag="splatview_panel", label=TITLE):
            with dpg.menu_bar():
                with dpg.menu(label="View"):
                    dpg.add_menu_item(label="Hide panel", shortcut="Tab", tag="menu_hide", callback=self.hide)
                    dpg.add_menu_item(label="Key bindings", shortcut="H, F1", tag="menu_help",
                                      callback=self._action("help"))
                    dpg.add_menu_item(label="Screenshot", shortcut="M", tag="menu_screenshot",
                                      callback=self._on_screenshot)
                    dpg.add_separator()
                    dpg.add_menu_item(label="Quit", shortcut="Esc", tag="menu_quit", callback=self._action("quit"))
            dpg.add_text("frame: -", tag="stat_frame")
            dpg.add_text("", tag="stat_render")
            dpg.add_text("Gaussians: -", tag="stat_count")
            dpg.add_text("", tag="stat_extra", wrap=0)
            dpg.add_text("", tag="message", wrap=0, color=(255, 210, 120))
            with dpg.collapsing_header(label="Rendering", default_open=True, tag="header_rendering"):
                dpg.add_combo(list(state.available_backends), label="backend", tag="backend",
                              default_value=state.backend, callback=self._setting("backend"))
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
                dpg.add_checkbox(label="vsync", tag="vsync", default_value=state.vsync, callback=self._setting("vsync"))
            with dpg.collapsing_header(label="Navigation", default_open=True, tag="header_navigation"):
                dpg.add_combo(NAVIGATION_MODES, label="mode (N)", tag="navigation", default_value=state.navigation,
                              callback=self._setting("navigation"))
                dpg.add_slider_float(label="move speed", tag="speed", min_value=SPEED_RANGE[0], max_value=SPEED_RANGE[1],
                                     default_value=state.speed, format="%.2f scene/s", clamped=True,
                                     callback=self._setting("speed"))
                dpg.add_slider_float(label="turn speed", tag="turn_speed", min_value=TURN_SPEED_RANGE[0],
                                     max_value=TURN_SPEED_RANGE[1], default_value=state.turn_speed,
                                     format="%.2f views/s", clamped=True, callback=self._setting("turn_speed"))
                dpg.add_slider_float(label="field of view", tag="fov_degrees", min_value=FOV_RANGE_DEGREES[0],
                                     max_value=FOV_RANGE_DEGREES[1], default_value=math.degrees(state.fov_y),
                                     format="%.1f deg", clamped=True, callback=self._on_fov)
                dpg.add_combo(UP_AXES, label="up axis", tag="up", default_value=state.up, callback=self._setting("up"))
                dpg.add_text("", tag="pose_text")
                last = max(len(state.input_cameras) - 1, 0)
                dpg.add_input_int(label="input camera", tag="snap_index", default_value=state.camera_index or 0,
                                  min_value=0, max_value=last, min_clamped=True, max_clamped=True)
                with dpg.group(horizontal=True):
                    dpg.add_button(label="Snap to camera", tag="snap_to", callback=self._on_snap_to)
                    dpg.add_button(label="Snap to closest (P)", tag="snap_closest", callback=self._on_snap_closest)
            with dpg.collapsing_header(label="Screenshot", default_open=False, tag="header_screenshot"):
                dpg.add_input_intx(label="size (0: window)", tag="screenshot_size", size=2, default_value=[0, 0, 0, 0],
                                   min_value=0, max_value=16384, min_clamped=True, max_clamped=True,
                                   callback=self._on_screenshot_size)
                dpg.add_input_text(label="folder", tag="screenshot_folder", default_value=state.screenshot_folder,
                                   callback=self._setting("screenshot_folder"))
                dpg.add_button(label="Screenshot (M)", tag="screenshot", callback=self._on_screenshot)
            for section in self.sections:
                section.build()

    def _action(self, name: str):
        def callback(sender=None, app_data=None, user_data=None):
            if name in self.actions:
                self.actions[name]()
        return callback

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

    def _on_fov(self, sender=None, app_data=None, user_data=None) -> None:
        self.state.update(fov_y=math.radians(float(app_data)))
        dpg.set_value("fov_degrees", math.degrees(self.state.fov_y))

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

    def _on_screenshot_size(self, sender=None, app_data=None, user_data=None) -> None:
        width, height = (int(v) for v in list(dpg.get_value("screenshot_size"))[:2])
        if width <= 0 and height <= 0:
            self.state.update(screenshot_size=None)
            return
        aspect = self.state.width / self.state.height   # one side given: the other keeps the aspect
        width = width if width > 0 else max(1, round(height * aspect))
        height = height if height > 0 else max(1, round(width / aspect))
        self.state.update(screenshot_size=(width, height))

    def _on_screenshot(self, sender=None, app_data=None, user_data=None) -> None:
        self.state.screenshot_pending = True

    # ----- frames -----------------------------------------------------------------------------
    def _refresh(self, gaussian_count: int | None) -> None:
        state = self.state
        for tag, shown in applicable_controls(state).items():
            dpg.configure_item(tag, show=shown)
        dpg.configure_item("stat_count", show=gaussian_count is not None)
        if gaussian_count is not None:
            dpg.set_value("stat_count", f"Gaussians: {gaussian_count:,}")
        for tag in MIRRORED:   # keys and the mouse change the state too
            if not dpg.is_item_active(tag) and dpg.get_value(tag) != getattr(state, tag):
                dpg.set_value(tag, getattr(state, tag))
        if not dpg.is_item_active("fov_degrees"):
            dpg.set_value("fov_degrees", math.degrees(state.fov_y))
        if state.camera_index is not None and not dpg.is_item_active("snap_index"):
            dpg.set_value("snap_index", state.camera_index)
        x, y, z = (-state.world_to_camera[:3, :3].T @ state.world_to_camera[:3, 3]).tolist()
        dx, dy, dz = state.world_to_camera[2, :3].tolist()
        pivot = "" if state.navigation == "fps" else "\npivot    {:.3f} {:.3f} {:.3f}".format(*state.pivot)
        dpg.set_value("pose_text", f"camera   {x:.3f} {y:.3f} {z:.3f}\nlooking  {dx:.3f} {dy:.3f} {dz:.3f}"
                                   f"{pivot}\n{math.degrees(state.turn_rate):.1f} deg/s, {state.move_speed:.3g} units/s")
        dpg.set_value("message", state.message)
        dpg.configure_item("message", show=bool(state.message))

    def frame(self, frame_seconds: float, gaussian_count: int | None, render_line: str = "") -> None:
        """Update the statistics and render one DPG frame (this also runs widget callbacks).
        ``gaussian_count``: None when the window shows no local model (a trainer's images).
        Nothing happens while the panel is hidden or minimised."""
        if not self._open or not self.visible or self._window.iconified():
            return   # (DPG's frame would block in glfwWaitEvents while its window is minimised)
        fps = 1.0 / frame_seconds if frame_seconds > 0 else 0.0
        dpg.set_value("stat_frame", f"frame: {frame_seconds * 1000:.2f} ms ({fps:.1f} FPS)")
        dpg.set_value("stat_render", render_line)
        self._refresh(gaussian_count)
        if self.stats_source is not None:
            extra = self.stats_source() or {}
            dpg.set_value("stat_extra", "\n".join(f"{key}: {value}" for key, value in extra.items()))
        dpg.configure_item("stat_extra", show=bool(dpg.get_value("stat_extra")))
        for section in self.sections:
            section.update()
        self._window.make_current()
        dpg.render_dearpygui_frame()

    # ----- showing and hiding ---------------------------------------------------------------
    def hide(self, sender=None, app_data=None, user_data=None) -> None:
        """Hide the panel (its close button does this); :meth:`show` brings it back."""
        if self._open and self.visible:
            self.visible = False
            self._window.hide()

    def show(self) -> None:
        if self._open and not self.visible:
            self.visible = True
            self._window.show()

    def toggle(self) -> None:
        self.hide() if self.visible else self.show()

    def rect(self) -> Rect:
        """(x, y, width, height) of the panel on the screen (for the remembered layout)."""
        x, y = dpg.get_viewport_pos()
        return int(x), int(y), int(dpg.get_viewport_client_width()), int(dpg.get_viewport_client_height())

    def is_open(self) -> bool:
        return self._open

    def close(self) -> None:
        """Destroy the panel (the viewer is quitting). Its window is hidden first: DPG 2.3
        leaves it on screen until the process ends."""
        if self._open:
            self._open = False
            self._window.hide()
            self._window.make_current()
            dpg.destroy_context()
