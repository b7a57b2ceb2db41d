"""The render loop: draws the viewer state into a GLFW window (OpenGL 4.3 core) or, with
``offscreen=True``, into a framebuffer of a headless EGL context (``viewer/window/surfaces.py``).

Splats are drawn by the backend in ``state.backend``: ``"cuda"`` (the CUDA rasterizer through
CUDA-GL interop, ``viewer/backends/cuda_view.py``), ``"gl"`` (instanced quads,
``viewer/backends/gl_splats.py``) or ``"gl-compute"`` (the tile algorithm in compute shaders,
``viewer/backends/gl_tiles.py``). The other render modes (ellipsoids, initial points, depth) are
GL drawings (``viewer/backends/gl_modes.py``), as in SIBR. Renderers are created on first use.

Each frame the loop renders the view only when something it depends on changed, into an image it
keeps (``viewer/window/compositor.py``), at a reduced resolution while the user interacts and a
full render is slow (``viewer/window/pacing.py``); the image is then scaled into the window with
the overlays on top (key help, right-click menu, messages, the camera path). The keys and the
mouse are listed in ``viewer/options.py`` (H or F1 shows them in the window).

In an interactive session (``interactive=True``) the window is resizable (the rendering size
follows it unless ``fixed_size``), it is placed with the panel inside the monitor's work area,
and the layout is remembered between runs (``viewer/window/layout.py``).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from rasterizer.camera import Camera
from rasterizer.gaussians import Gaussians
from trainer.image_io import save_png

from .backends.gl_splats import SplatRenderer
from .navigation.controls import (ROTATION_KEYS, TRANSLATION_KEYS, camera_centre, dolly, look_around, move_forward,
                                  orbit, pan, pick_point, trackball)
from .navigation.path_editor import PathEditor
from .options import key_help_lines
from .scene_source import ViewerInput, scene_frame
from .state import ViewerState
from .window.layout import Layout, load_layout, place_windows, restore_layout, save_layout
from .window.pacing import RenderPacing
from .window.screenshots import unique_screenshot_path
from .window.surfaces import OffscreenSurface, SurfaceError, WindowSurface, work_area

__all__ = ["ViewerApp", "ViewerError"]

LAUNCH_TIME_VARIABLE = "SPLATVIEW_LAUNCH_TIME"   # set by bench/viewer.py to time start-up
DOLLY_PER_WHEEL_STEP = 0.9          # orbit and trackball: the distance to the pivot shrinks by this
FORWARD_PER_WHEEL_STEP = 0.1        # fps: scene scales per wheel step
DOUBLE_CLICK_S, CLICK_PIXELS = 0.35, 4.0
MESSAGE_SECONDS = 4.0
IDLE_FRAME_S = 1 / 60               # an idle interactive loop runs at most this often
ViewerError = SurfaceError   # the window or its GL context could not be created


class ViewerApp:
    """Owns the surface, the renderers and the kept image; reads and updates a
    :class:`ViewerState`.

    Args:
        viewer_input: the model and its cameras.
        state: what to draw (``state.backend`` picks the splat renderer).
        visible: show the window (hidden windows still render; tests and ``--frames``).
        panel: optional ``ControlPanel``, driven once per frame.
        offscreen: draw into an EGL framebuffer instead of a window (no input, no panel).
        device: CUDA device for the ``cuda`` backend (and the EGL device offscreen).
        interop: use CUDA-GL interop (else a host copy, as SIBR's ``--no_interop``).
        interactive: a session for a person (resizable window placed in the work area, remembered
            layout, reduced resolution while moving); False for scripted runs and tests.
        fixed_size: keep the state's rendering size when the window changes (``--rendering-size``).
        with_panel: leave room for the control panel when placing the window.
    """

    def __init__(self, viewer_input: ViewerInput, state: ViewerState, visible: bool = True, panel=None,
                 offscreen: bool = False, device: torch.device | None = None, interop: bool = True,
                 interactive: bool = False, fixed_size: bool = False, with_panel: bool = True):
        self.input = viewer_input
        self.state = state
        self.panel = panel
        self.device = device if device is not None else (
            torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None)
        self.interop = interop
        self.interactive = interactive and not offscreen
        self.fixed_size = fixed_size
        self._scene_from_model = len(viewer_input.gaussians) > 0
        state.set_scene(*scene_frame(viewer_input.gaussians, list(state.input_cameras)))
        title = f"splatview - {viewer_input.title}"
        cuda_index = self.device.index if self.device is not None else None
        self.layout: Layout | None = None
        if offscreen:
            self.surface = OffscreenSurface(state.width, state.height, cuda_index)
        else:
            size, position = (state.width, state.height), None
            if self.interactive:
                self.layout = self._place(with_panel)
                size, position = self.layout.render[2:], self.layout.render[:2]
            self.surface = WindowSurface(*size, title, visible, state.vsync, resizable=self.interactive,
                                         position=position)
        self._vsync = state.vsync
        self.window = getattr(self.surface, "window", None)
        if self.window is not None:
            self._install_callbacks()
        from .window.compositor import Compositor  # noqa: PLC0415 - OpenGL once a context is current

        self.compositor = Compositor()
        self.pacing = RenderPacing(adaptive=self.interactive)
        self.path_editor = PathEditor(state)
        self.splat_renderers: dict = {}   # backend -> renderer, created on first use
        self.mode_renderers: dict = {}    # render mode -> renderer, created on first use
        self.frame_seconds = 0.0
        self.render_seconds = 0.0
        self.model_version = 0
        self.help_visible = False
        self.menu = None                  # the open right-click menu (viewer/window/overlay.Menu)
        self._menu_hover: int | None = None
        self._drag: tuple[int, float, float, float, float] | None = None   # button, start x/y, last x/y
        self._last_click = (0.0, -1e9, -1e9)
        self._message: tuple[str, float] | None = None
        self._overlay_cache: dict[str, tuple] = {}
        # Called with the app at the start of every frame, before drawing (e.g. in-viewer
        # training swaps in the latest Gaussians with set_gaussians).
        self.frame_callbacks: list[Callable[["ViewerApp"], None]] = []
        # Called with the app after the kept image is shown in the window, to draw over it in
        # window pixels (e.g. the edit panel's crop box); below the help, menu and messages.
        self.overlays: list[Callable[["ViewerApp"], None]] = []
        self._splat_renderer()   # now, so that a failure is reported before the first frame
        self.remote = None  # RemoteView (viewer/network/view.py) with --connect: it draws first
        if self.interactive and not fixed_size:
            state.resize(*self.surface.size())

    def _place(self, with_panel: bool) -> Layout:
        """The remembered layout when it fits this monitor, else both windows placed afresh."""
        area = work_area()
        if area is None:
            return Layout((0, 0, self.state.width, self.state.height), None, with_panel)
        remembered = None if self.fixed_size else restore_layout(load_layout(), area, with_panel)
        return remembered or place_windows(area, (self.state.width, self.state.height), with_panel)

    @property
    def renderer(self) -> SplatRenderer:
        """The GL splat renderer (the model in GL buffers), created on first use."""
        if "gl" not in self.splat_renderers:
            self.splat_renderers["gl"] = SplatRenderer(self.input.gaussians)
        return self.splat_renderers["gl"]

    def _splat_renderer(self):
        """The renderer of ``state.backend``, created on first use."""
        backend = self.state.backend
        if backend == "gl":
            return self.renderer
        if backend not in self.splat_renderers:
            if backend == "gl-compute":
                from .backends.gl_tiles import TileSplatRenderer  # noqa: PLC0415

                self.splat_renderers[backend] = TileSplatRenderer(self.renderer)
            elif backend == "cuda":
                from .backends.cuda_view import CudaSplatRenderer  # noqa: PLC0415 - cuda-bindings only when used

                if self.device is None:
                    raise ViewerError("the cuda backend needs an NVIDIA GPU (use --backend gl)")
                self.splat_renderers[backend] = CudaSplatRenderer(self.input.gaussians, self.device, self.interop)
            else:
                raise ValueError(f"unknown backend {backend!r}")
        return self.splat_renderers[backend]

    def _install_callbacks(self) -> None:
        import glfw  # noqa: PLC0415

        self._glfw = glfw
        self._move_keys = {name: getattr(glfw, f"KEY_{name}") for name in (*TRANSLATION_KEYS, *ROTATION_KEYS)}
        glfw.set_key_callback(self.window, self._on_key)
        glfw.set_mouse_button_callback(self.window, self._on_mouse_button)
        glfw.set_cursor_pos_callback(self.window, self._on_cursor)
        glfw.set_scroll_callback(self.window, self._on_scroll)

    def close(self) -> None:
        """Remember the layout (interactive sessions), then release the panel, the renderers and
        the window."""
        if self.interactive and isinstance(self.surface, WindowSurface):
            self._save_layout()
        if self.panel is not None:
            self.panel.close()
        self.surface.make_current()   # the panel's DPG frame made its own context current
        # The GL quad renderer last: the compute path and the modes share its buffers.
        for renderer in (*self.mode_renderers.values(),
                         *sorted(self.splat_renderers.values(), key=lambda r: isinstance(r, SplatRenderer))):
            renderer.release()
        self.compositor.release()
        self.surface.release()

    def _save_layout(self) -> None:
        previous = self.layout or Layout(self.surface.rect(), None, False)
        panel_open = self.panel is not None and self.panel.is_open()
        layout = Layout(self.surface.rect(), self.panel.rect() if panel_open else previous.panel,
                        self.panel.visible if panel_open else previous.panel_visible)
        try:
            save_layout(layout)
        except OSError as error:   # a read-only home: the next run places the windows afresh
            print(f"splat-view: notice: window layout not saved ({error})", file=sys.stderr)

    # ----- messages -----------------------------------------------------------------------------
    def notify(self, text: str, console: bool = False) -> None:
        """Show ``text`` for a few seconds in the window and on the panel (and the console)."""
        self.state.message = text
        self._message = (text, time.monotonic())
        if console:
            print(f"splat-view: {text}", file=sys.stderr, flush=True)

    # ----- input ----------------------------------------------------------------------------
    def toggle_panel(self) -> None:
        if self.panel is None:
            self.notify("no control panel in this session (it was turned off or could not open)")
            return
        self.panel.toggle()
        if not self.panel.visible:
            self.notify("control panel hidden: Tab or the right-click menu shows it again")

    def toggle_help(self) -> None:
        self.help_visible = not self.help_visible
        self.menu = None

    def quit(self) -> None:
        self.surface.close()

    def _actions(self) -> list[tuple[str, str, Callable[[], None]]]:
        """The right-click menu: (label, key, action)."""
        shown = self.panel is not None and self.panel.visible
        playing = self.path_editor.playing
        return [
            ("Hide control panel" if shown else "Show control panel", "Tab", self.toggle_panel),
            ("Key bindings", "H, F1", self.toggle_help),
            ("Next navigation mode", "N", self._next_navigation),
            ("Screenshot", "M", self._request_screenshot),
            ("Add camera path keyframe", "Enter", self._add_keyframe),
            ("Stop camera path" if playing else "Play camera path", "Space", self._toggle_play),
            ("Quit", "Esc", self.quit),
        ]

    def _next_navigation(self) -> None:
        self.notify(f"navigation: {self.state.next_navigation()} (H shows its mouse buttons)")

    def _request_screenshot(self) -> None:
        self.state.screenshot_pending = True

    def _add_keyframe(self) -> None:
        index = self.path_editor.add_current()
        self.notify(f"camera path keyframe {index + 1} of {len(self.path_editor.keyframes)} added")

    def _toggle_play(self) -> None:
        if self.path_editor.playing:
            self.path_editor.stop()
        elif self.path_editor.keyframes:
            self.path_editor.play()
        else:
            self.notify("the camera path is empty: Enter adds the current view as a keyframe")

    def _on_key(self, window, key, scancode, action, mods) -> None:
        glfw = self._glfw
        if action != glfw.PRESS:
            return
        cameras = self.state.input_cameras
        if key == glfw.KEY_ESCAPE:
            if self.menu is not None or self.help_visible:
                self.menu, self.help_visible = None, False
            else:
                self.quit()
        elif key == glfw.KEY_P and cameras:
            index = self.state.snap_to_closest()
            self.notify(f"input camera {index}")
        elif key in (glfw.KEY_LEFT_BRACKET, glfw.KEY_RIGHT_BRACKET) and cameras:
            index = self.state.step_camera(-1 if key == glfw.KEY_LEFT_BRACKET else 1)
            self.notify(f"input camera {index}")
        elif key == glfw.KEY_M:
            self._request_screenshot()
        elif key == glfw.KEY_TAB:
            self.toggle_panel()
        elif key in (glfw.KEY_H, glfw.KEY_F1):
            self.toggle_help()
        elif key == glfw.KEY_N:
            self._next_navigation()
        elif key in (glfw.KEY_ENTER, glfw.KEY_KP_ENTER):
            self._add_keyframe()
        elif key == glfw.KEY_SPACE:
            self._toggle_play()

    def _window_scale(self) -> float:
        """Framebuffer pixels per window coordinate (HiDPI)."""
        window_width = self._glfw.get_window_size(self.window)[0]
        return self.surface.size()[0] / max(window_width, 1)

    def _on_mouse_button(self, window, button, action, mods) -> None:
        glfw = self._glfw
        x, y = glfw.get_cursor_pos(window)
        if action == glfw.PRESS:
            self.press(button, x, y)
        elif action == glfw.RELEASE:
            self.release(button, x, y)

    def press(self, button: int, x: float, y: float) -> None:
        """A mouse button (GLFW's numbers: 0 left, 1 right, 2 middle) pressed at window position
        (``x``, ``y``): picks a menu entry, starts a drag, or (a second left click) picks the pivot."""
        if self.menu is not None:
            entry = self.menu.entry_at(x * self._window_scale(), y * self._window_scale(), self._menu_width())
            self.menu = None
            if entry is not None and button == 0:
                self._actions()[entry][2]()
            return
        self._drag = (button, x, y, x, y)
        if button == 0:
            when, last_x, last_y = self._last_click
            if time.monotonic() - when < DOUBLE_CLICK_S and math.hypot(x - last_x, y - last_y) < CLICK_PIXELS:
                self.pick_pivot(x, y)
            self._last_click = (time.monotonic(), x, y)

    def release(self, button: int, x: float, y: float) -> None:
        """A mouse button released: a right click that did not drag opens the menu."""
        if self._drag is None or self._drag[0] != button:
            return
        _, start_x, start_y, _, _ = self._drag
        self._drag = None
        if button == 1 and math.hypot(x - start_x, y - start_y) < CLICK_PIXELS:
            self.open_menu(x, y)

    def open_menu(self, x: float, y: float) -> None:
        """Open the right-click menu at window position (``x``, ``y``)."""
        from .window.overlay import Menu  # noqa: PLC0415

        scale = self._window_scale()
        self.menu = Menu([(label, key) for label, key, _ in self._actions()], int(x * scale), int(y * scale))
        self._menu_hover = None

    def _menu_width(self) -> int:
        return self._overlay("menu").size[0] if self.menu is not None else 0

    def _on_cursor(self, window, x: float, y: float) -> None:
        if self.menu is not None:
            scale = self._window_scale()
            self._menu_hover = self.menu.entry_at(x * scale, y * scale, self._menu_width())
            return
        if self._drag is None:
            return
        button, start_x, start_y, last_x, last_y = self._drag
        self._drag = (button, start_x, start_y, x, y)
        self.drag(button, x - last_x, y - last_y)

    def drag(self, button: int, dx: float, dy: float) -> None:
        """Apply a mouse drag of (``dx``, ``dy``) window units with ``button`` (GLFW's numbers:
        0 left, 1 right, 2 middle) in the current navigation mode."""
        state = self.state
        height = max(self._glfw.get_window_size(self.window)[1], 1) if self.window is not None else state.height
        if button == 0:
            if state.navigation == "fps":   # the scene follows the cursor: one view height = one field of view
                state.set_pose(look_around(state.world_to_camera, state.up_vector(), yaw=dx * state.fov_y / height,
                                           pitch=dy * state.fov_y / height))
            elif state.navigation == "orbit":   # one window height = half a turn
                state.set_pose(orbit(state.world_to_camera, state.pivot, state.up_vector(),
                                     yaw=-dx * math.pi / height, pitch=dy * math.pi / height))
            else:
                state.set_pose(trackball(state.world_to_camera, state.pivot, yaw=dx * math.pi / height,
                                         pitch=-dy * math.pi / height))
            return
        # Pan: what lies at the pivot's depth (fps: one scene scale away) follows the cursor.
        pose = state.world_to_camera
        depth = state.scene_scale if state.navigation == "fps" else max(
            float(pose[2, :3] @ torch.tensor(state.pivot, dtype=torch.float64) + pose[2, 3]), 1e-3 * state.scene_scale)
        units = depth * 2.0 * math.tan(state.fov_y / 2.0) / height
        moved = pan(pose, right=-dx * units, down=-dy * units)
        if state.navigation != "fps":
            shift = camera_centre(moved) - camera_centre(pose)
            state.pivot = tuple(float(v) for v in torch.tensor(state.pivot, dtype=torch.float64) + shift)
        state.set_pose(moved)

    def _on_scroll(self, window, dx: float, dy: float) -> None:
        self.scroll(dy)

    def scroll(self, steps: float) -> None:
        """The mouse wheel: towards the pivot (orbit, trackball) or forward (fps) for ``steps`` > 0."""
        state = self.state
        if state.navigation == "fps":
            state.set_pose(move_forward(state.world_to_camera, steps * FORWARD_PER_WHEEL_STEP * state.scene_scale))
        else:
            state.set_pose(dolly(state.world_to_camera, state.pivot, DOLLY_PER_WHEEL_STEP ** steps))

    def pick_pivot(self, x: float, y: float) -> bool:
        """Make the model point under window position (``x``, ``y``) the pivot; False if there is
        none there."""
        state = self.state
        scale = self._window_scale() if self.window is not None else 1.0
        rect = self._image_rect()
        window_height = self.surface.size()[1]
        px = (x * scale - rect[0]) * state.width / rect[2]
        py = (y * scale - (window_height - rect[1] - rect[3])) * state.height / rect[3]
        point = pick_point(self.input.gaussians.means, state.camera(), px, py) if len(self.input.gaussians) else None
        if point is None:
            self.notify("nothing under the cursor to turn around")
            return False
        state.pivot = tuple(float(v) for v in point)
        self.notify("pivot: {:.3f} {:.3f} {:.3f}".format(*state.pivot))
        return True

    def _held_keys(self) -> list[str]:
        if self.window is None:
            return []
        glfw = self._glfw
        return [name for name, key in self._move_keys.items() if glfw.get_key(self.window, key) == glfw.PRESS]

    # ----- frames ---------------------------------------------------------------------------
    def set_gaussians(self, gaussians: Gaussians) -> None:
        """Show another model (same cameras; live training, network snapshots): re-upload it to
        every renderer that holds it. Call with the render window's context current (from a
        frame callback or the frame loop)."""
        self.input.gaussians = gaussians
        self.model_version += 1
        if not self._scene_from_model and len(gaussians):   # the first real model: navigate around it
            self._scene_from_model = True
            self.state.set_scene(*scene_frame(gaussians, list(self.state.input_cameras)))
        if "gl" in self.splat_renderers or self.state.backend != "cuda":   # gl-compute shares its buffers
            self.renderer.upload(gaussians)
        if "cuda" in self.splat_renderers:
            self.splat_renderers["cuda"].set_gaussians(gaussians)
        if "ellipsoids" in self.mode_renderers:
            self.mode_renderers["ellipsoids"].upload(gaussians)
        if "initial_points" in self.mode_renderers and self.input.initial_points is None:
            self.mode_renderers.pop("initial_points").release()   # it showed the old centres

    def draw(self) -> None:
        """Render the current state at the rendering size straight into the surface's
        framebuffer (bench/viewer.py times this; the frame loop renders into its kept image)."""
        self.surface.bind()
        self._draw_view(self.state.camera())

    def _draw_view(self, camera: Camera) -> None:
        """Render the view with ``camera`` into the bound framebuffer."""
        state = self.state
        if self.remote is not None and self.remote.draw(camera.width, camera.height):
            return  # the trainer's image (or nothing yet) was drawn
        mode = state.render_mode
        if mode == "splats":
            self._splat_renderer().draw(camera, state.background, sh_degree=state.sh_degree,
                                        scaling_modifier=state.scaling_modifier, antialiasing=state.antialiasing,
                                        fast_culling=state.fast_culling)
        elif mode == "depth":
            self._mode_renderer(mode).draw(camera, state.background, scaling_modifier=state.scaling_modifier,
                                           antialiasing=state.antialiasing)
        else:
            self._mode_renderer(mode).draw(camera, state.background)

    def _mode_renderer(self, mode: str):
        """The renderer of ``mode`` (viewer/backends/gl_modes.py), created on first use."""
        if mode not in self.mode_renderers:
            from .backends import gl_modes  # noqa: PLC0415

            if mode == "ellipsoids":
                renderer = gl_modes.EllipsoidRenderer(self.renderer, self.input.gaussians)
            elif mode == "initial_points":
                renderer = gl_modes.PointsRenderer(self.input.gaussians, self.input.initial_points)
            elif mode == "depth":
                renderer = gl_modes.DepthRenderer(self.renderer)
            else:
                raise ValueError(f"unknown render mode {mode!r}")
            self.mode_renderers[mode] = renderer
        return self.mode_renderers[mode]

    def render_if_needed(self) -> bool:
        """Render into the kept image if the view changed (at the scale the pacing picks);
        returns whether it rendered."""
        from OpenGL import GL  # noqa: PLC0415

        state = self.state
        remote = self.remote.content_version() if self.remote is not None else None
        scale = self.pacing.plan((state.version, self.model_version, state.width, state.height, remote),
                                 time.perf_counter())
        if scale is None:
            return False
        width, height = max(1, round(state.width * scale)), max(1, round(state.height * scale))
        self.compositor.target.bind(width, height)
        start = time.perf_counter()
        self._draw_view(state.camera(width, height))
        if self.interactive:
            GL.glFinish()   # the render's real cost, for the pacing
        self.render_seconds = time.perf_counter() - start
        self.pacing.rendered(scale, self.render_seconds)
        return True

    def _image_rect(self) -> tuple[int, int, int, int]:
        from .window.compositor import fit_rect  # noqa: PLC0415

        return fit_rect((self.state.width, self.state.height), self.surface.size())

    def compose(self) -> None:
        """Show the kept image in the surface with the overlays on top."""
        window_size = self.surface.size()
        self.compositor.present(window_size, self.surface.framebuffer)
        if self.window is None:
            return   # offscreen: the image only
        for overlay in self.overlays:
            overlay(self)
        if self.path_editor.show_path and self.path_editor.keyframes:
            image, left, top = self._path_overlay(window_size)
            if image is not None:
                self.compositor.draw_overlay("path", image, left, top, window_size)
        if self._message is not None:
            if time.monotonic() - self._message[1] < MESSAGE_SECONDS:
                image = self._overlay("message")
                self.compositor.draw_overlay("message", image, 10, window_size[1] - image.size[1] - 10, window_size)
            else:
                self._message = None
        if self.help_visible:
            self.compositor.draw_overlay("help", self._overlay("help"), 10, 10, window_size)
        if self.menu is not None:
            image = self._overlay("menu")
            x = min(self.menu.x, max(window_size[0] - image.size[0], 0))
            y = min(self.menu.y, max(window_size[1] - image.size[1], 0))
            self.menu.x, self.menu.y = x, y
            self.compositor.draw_overlay("menu", image, x, y, window_size)

    def _overlay(self, name: str):
        """The overlay image ``name`` (help, menu, message), made again only when its content changed."""
        from .window import overlay  # noqa: PLC0415 - Pillow text only when an overlay is shown

        if name == "help":
            key = self.state.navigation
            make = lambda: overlay.help_image(  # noqa: E731
                f"Keys and mouse (navigation: {key}) - H or F1 closes", key_help_lines(key))
        elif name == "menu":
            key = (tuple(label for label, _, _ in self._actions()), self._menu_hover, id(self.menu))
            make = lambda: self.menu.image(self._menu_hover)  # noqa: E731
        else:
            key = self._message[0]
            make = lambda: overlay.message_image(key)  # noqa: E731
        cached = self._overlay_cache.get(name)
        if cached is None or cached[0] != key:
            cached = (key, make())
            self._overlay_cache[name] = cached
        return cached[1]

    def _path_overlay(self, window_size: tuple[int, int]):
        """(image, left, top) of the camera path seen from the current view, cropped to what it
        draws; (None, 0, 0) when nothing of it is in view."""
        from .window import overlay  # noqa: PLC0415

        editor, state = self.path_editor, self.state
        key = (editor.version, state.version, window_size, editor.selected, editor.playing)
        cached = self._overlay_cache.get("path")
        if cached is not None and cached[0] == key:
            return cached[1]
        camera = state.camera()
        rect = self._image_rect()
        top_offset = window_size[1] - rect[1] - rect[3]

        def to_window(points: np.ndarray) -> np.ndarray:
            if len(points) == 0:
                return np.zeros((0, 3))
            pose = camera.world_to_camera.numpy()
            local = points @ pose[:3, :3].T + pose[:3, 3]
            depth = local[:, 2]
            safe = np.where(depth > 1e-9, depth, 1.0)
            x = (camera.fx * local[:, 0] / safe + camera.cx) * rect[2] / state.width + rect[0]
            y = (camera.fy * local[:, 1] / safe + camera.cy) * rect[3] / state.height + top_offset
            return np.stack([x, y, depth], axis=1)

        keyframes = to_window(np.stack([k.center.numpy() for k in editor.keyframes]))
        playing = to_window(editor.path.at(editor.position).center.numpy()[None])[0] if editor.playing else None
        image = overlay.path_image(window_size, to_window(editor.curve()), keyframes, editor.selected, playing)
        box = image.getbbox()
        result = (image.crop(box), box[0], box[1]) if box else (None, 0, 0)
        self._overlay_cache["path"] = (key, result)
        return result

    @staticmethod
    def _report_first_frame(launched: float) -> None:
        """For bench/viewer.py: seconds from ``launched`` (a ``time.time()`` taken by whoever
        started this process) until the first frame has been drawn on the GPU."""
        from OpenGL import GL  # noqa: PLC0415

        GL.glFinish()
        print(f"splat-view: first frame drawn {time.time() - launched:.3f} s after launch", file=sys.stderr, flush=True)

    def screenshot(self, path: str | Path, size: tuple[int, int] | None = None) -> tuple[int, int]:
        """Render the view at ``size`` (default: the rendering size; larger than the window is
        fine, up to the GPU's render target limit) and save it as a PNG; returns the size."""
        from OpenGL import GL  # noqa: PLC0415

        from .window.compositor import RenderTarget  # noqa: PLC0415

        width, height = size or (self.state.width, self.state.height)
        limit = int(GL.glGetIntegerv(GL.GL_MAX_RENDERBUFFER_SIZE))
        if max(width, height) > limit:
            raise ValueError(f"screenshot size {width}x{height} is above this GPU's limit of {limit} pixels a side")
        target = RenderTarget()
        try:
            target.bind(width, height)
            self._draw_view(self.state.camera(width, height))
            image = target.read()
        finally:
            target.release()
        save_png(path, image.clamp(0, 1))
        return width, height

    def _take_screenshot(self) -> None:
        """The screenshot asked for with M or the panel: a new file, never overwriting one."""
        self.state.screenshot_pending = False
        path = None
        try:
            path = unique_screenshot_path(self.state.screenshot_folder)
            width, height = self.screenshot(path, self.state.screenshot_size)
        except Exception as error:  # noqa: BLE001 - any failure is one message; the viewer goes on
            if path is not None:
                path.unlink(missing_ok=True)
            self.notify(f"screenshot failed: {str(error).splitlines()[0] if str(error) else type(error).__name__}",
                        console=True)
            return
        self.notify(f"screenshot saved to {path.resolve()} ({width}x{height})", console=True)

    def _follow_window(self) -> None:
        """The rendering size follows the window (unless fixed); a minimised window keeps it."""
        if self.interactive and not self.fixed_size:
            width, height = self.surface.size()
            if width > 0 and height > 0:
                self.state.resize(width, height)

    def render_line(self) -> str:
        """The panel's render statistics line."""
        size = self.compositor.target.size
        scale = self.pacing.shown_scale or 1.0
        reduced = f" ({scale:.0%} while moving)" if scale < 1.0 else ""
        return f"render: {self.render_seconds * 1000:.1f} ms at {size[0]}x{size[1]}{reduced}"

    def run(self, frames: int | None = None, screenshot: str | Path | None = None) -> None:
        """Run the frame loop until the window closes, or for ``frames`` frames; with
        ``screenshot``, the last frame is saved there."""
        count, last = 0, time.perf_counter()
        surface = self.surface
        while not surface.should_close():
            surface.poll()
            now = time.perf_counter()
            self.frame_seconds, last = now - last, now
            if self.state.move(self._held_keys(), self.frame_seconds):
                self.path_editor.stop()
            self.path_editor.advance(self.frame_seconds)
            surface.make_current()   # the panel's DPG frame made its own context current
            for callback in self.frame_callbacks:
                callback(self)
            if self.state.vsync != self._vsync:
                self._vsync = self.state.vsync
                surface.set_vsync(self._vsync)
            self._follow_window()
            if self.remote is not None:
                self.remote.update()
            rendered = self.render_if_needed()
            self.compose()
            count += 1
            if count == 1 and os.environ.get(LAUNCH_TIME_VARIABLE):
                self._report_first_frame(float(os.environ[LAUNCH_TIME_VARIABLE]))
            if frames is not None and count >= frames:
                if screenshot is not None:
                    self.screenshot(screenshot)
                break
            if self.state.screenshot_pending:
                self._take_screenshot()
            surface.swap()
            if self.panel is not None:
                count_shown = None if self.state.shows_remote_images else len(self.input.gaussians)
                self.panel.frame(self.frame_seconds, count_shown, self.render_line())
                if not self.panel.is_open():
                    self.panel = None
            if self.interactive and not rendered:   # idle: leave the CPU to others
                time.sleep(max(0.0, IDLE_FRAME_S - (time.perf_counter() - now)))
