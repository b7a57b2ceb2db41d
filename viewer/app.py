"""The render window: a GLFW window (OpenGL 4.3 core) drawing the viewer state every frame.

This version draws with the OpenGL splatting path (``viewer/gl_splats.py``); the other render
modes (ellipsoids, initial points, depth) come from ``viewer/gl_modes.py``, picked by
``state.render_mode``. Keys follow SIBR:
W/S/A/D/Q/E move, I/K/J/L/U/O turn (held keys, scaled by frame time), P snaps to the closest
input camera, [ and ] step to the previous/next input camera, M saves a screenshot, Esc quits.
The left mouse button orbits around the model's median point, the wheel dollies towards it.
"""

from __future__ import annotations

import time
from pathlib import Path

import glfw
import torch
from trainer.image_io import save_png

from .gl_splats import SplatRenderer, read_framebuffer
from .navigation import ROTATION_KEYS, TRANSLATION_KEYS, dolly, orbit
from .scene_source import ViewerInput
from .state import ViewerState

__all__ = ["ViewerApp", "ViewerError"]

_MOVE_KEYS = {name: getattr(glfw, f"KEY_{name}") for name in (*TRANSLATION_KEYS, *ROTATION_KEYS)}
ORBIT_RADIANS_PER_PIXEL = 0.005
DOLLY_PER_WHEEL_STEP = 0.9


class ViewerError(RuntimeError):
    """The window or its GL context could not be created (message for the user)."""


class ViewerApp:
    """Owns the window and the GL renderer; reads and updates a :class:`ViewerState`."""

    def __init__(self, viewer_input: ViewerInput, state: ViewerState, visible: bool = True, panel=None):
        self.input = viewer_input
        self.state = state
        self.panel = panel  # optional ControlPanel (viewer/panel.py), driven once per frame
        self.target = viewer_input.gaussians.means.detach().double().median(dim=0).values \
            if len(viewer_input.gaussians) else torch.zeros(3, dtype=torch.float64)
        self.window = self._create_window(visible)
        self.renderer = SplatRenderer(viewer_input.gaussians)
        self.mode_renderers: dict = {}   # render mode -> renderer, created on first use
        self._last_cursor: tuple[float, float] | None = None
        self.frame_seconds = 0.0
        self.remote = None  # RemoteView (viewer/remote_view.py) with --connect: it draws first

    # ----- window ---------------------------------------------------------------------------
    def _create_window(self, visible: bool):
        if not glfw.init():
            raise ViewerError("could not initialise GLFW (is there a display? set DISPLAY or use Xvfb)")
        for hint, value in ((glfw.CONTEXT_VERSION_MAJOR, 4), (glfw.CONTEXT_VERSION_MINOR, 3),
                            (glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE),
                            (glfw.OPENGL_FORWARD_COMPAT, True), (glfw.VISIBLE, visible),
                            (glfw.RESIZABLE, False)):
            glfw.window_hint(hint, value)
        window = glfw.create_window(self.state.width, self.state.height,
                                    f"splatview - {self.input.title}", None, None)
        if not window:
            glfw.terminate()
            raise ViewerError("could not create an OpenGL 4.3 core window (update the GPU driver)")
        glfw.make_context_current(window)
        glfw.swap_interval(1 if self.state.vsync else 0)
        self._vsync = self.state.vsync
        glfw.set_key_callback(window, self._on_key)
        glfw.set_mouse_button_callback(window, self._on_mouse_button)
        glfw.set_cursor_pos_callback(window, self._on_cursor)
        glfw.set_scroll_callback(window, self._on_scroll)
        return window

    def close(self) -> None:
        if self.panel is not None:
            self.panel.close()
            glfw.make_context_current(self.window)
        for renderer in self.mode_renderers.values():
            renderer.release()
        self.renderer.release()
        glfw.destroy_window(self.window)
        glfw.terminate()

    # ----- input ----------------------------------------------------------------------------
    def _on_key(self, window, key, scancode, action, mods) -> None:
        if action != glfw.PRESS:
            return
        cameras = self.state.input_cameras
        if key == glfw.KEY_ESCAPE:
            glfw.set_window_should_close(window, True)
        elif key == glfw.KEY_P and cameras:
            self.state.snap_to_closest()
        elif key in (glfw.KEY_LEFT_BRACKET, glfw.KEY_RIGHT_BRACKET) and cameras:
            self.state.step_camera(-1 if key == glfw.KEY_LEFT_BRACKET else 1)
        elif key == glfw.KEY_M:
            self.state.screenshot_path = time.strftime("splatview-%Y%m%d-%H%M%S.png")

    def _on_mouse_button(self, window, button, action, mods) -> None:
        if button == glfw.MOUSE_BUTTON_LEFT:
            self._last_cursor = glfw.get_cursor_pos(window) if action == glfw.PRESS else None

    def _on_cursor(self, window, x: float, y: float) -> None:
        if self._last_cursor is None:
            return
        dx, dy = x - self._last_cursor[0], y - self._last_cursor[1]
        self._last_cursor = (x, y)
        self.state.set_pose(orbit(self.state.world_to_camera, self.target,
                                  yaw=dx * ORBIT_RADIANS_PER_PIXEL, pitch=-dy * ORBIT_RADIANS_PER_PIXEL))

    def _on_scroll(self, window, dx: float, dy: float) -> None:
        self.state.set_pose(dolly(self.state.world_to_camera, self.target, DOLLY_PER_WHEEL_STEP ** dy))

    def _held_keys(self) -> list[str]:
        return [name for name, key in _MOVE_KEYS.items() if glfw.get_key(self.window, key) == glfw.PRESS]

    # ----- frames ---------------------------------------------------------------------------
    def draw(self) -> None:
        """Render the current state into the window's back buffer."""
        state = self.state
        if self.remote is not None and self.remote.draw():
            return  # the trainer's image (or nothing yet) was drawn
        mode = state.render_mode
        if mode == "splats":
            self.renderer.draw(state.camera(), state.background, sh_degree=state.sh_degree,
                               scaling_modifier=state.scaling_modifier, antialiasing=state.antialiasing)
        elif mode == "depth":
            self._mode_renderer(mode).draw(state.camera(), state.background,
                                           scaling_modifier=state.scaling_modifier,
                                           antialiasing=state.antialiasing)
        else:
            self._mode_renderer(mode).draw(state.camera(), state.background)

    def set_gaussians(self, gaussians) -> None:
        """Show another model (a network snapshot): upload it, drop the per-mode renderers."""
        self.input.gaussians = gaussians
        self.renderer.upload(gaussians)
        for renderer in self.mode_renderers.values():
            renderer.release()
        self.mode_renderers.clear()
        if len(gaussians):
            self.target = gaussians.means.detach().double().median(dim=0).values

    def _mode_renderer(self, mode: str):
        """The renderer of ``mode`` (viewer/gl_modes.py), created on first use."""
        if mode not in self.mode_renderers:
            from . import gl_modes  # noqa: PLC0415

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

    def screenshot(self, path: str | Path) -> None:
        """Save the back buffer (the frame just drawn) as a PNG."""
        width, height = glfw.get_framebuffer_size(self.window)
        save_png(path, read_framebuffer(width, height).clamp(0, 1))

    def run(self, frames: int | None = None, screenshot: str | Path | None = None) -> None:
        """Run the frame loop until the window closes, or for ``frames`` frames; with
        ``screenshot``, the last frame is saved there."""
        count, last = 0, time.perf_counter()
        while not glfw.window_should_close(self.window):
            glfw.poll_events()
            now = time.perf_counter()
            self.frame_seconds, last = now - last, now
            self.state.move(self._held_keys(), self.frame_seconds)
            glfw.make_context_current(self.window)  # the panel's DPG frame made its own current
            if self.state.vsync != self._vsync:
                self._vsync = self.state.vsync
                glfw.swap_interval(1 if self._vsync else 0)
            self.draw()
            count += 1
            if frames is not None and count >= frames:
                if screenshot is not None:
                    self.screenshot(screenshot)
                break
            if self.state.screenshot_path:
                self.screenshot(self.state.screenshot_path)
                self.state.screenshot_path = None
            glfw.swap_buffers(self.window)
            if self.panel is not None:
                self.panel.frame(self.frame_seconds, len(self.input.gaussians))
                if not self.panel.is_open():
                    self.panel = None
