"""The render loop: draws the viewer state every frame into a GLFW window (OpenGL 4.3 core) or,
with ``offscreen=True``, into a framebuffer of a headless EGL context (``viewer/window/surfaces.py``).

Splats are drawn by the backend in ``state.backend``: ``"cuda"`` (the CUDA rasterizer through
CUDA-GL interop, ``viewer/backends/cuda_view.py``), ``"gl"`` (instanced quads, ``viewer/backends/gl_splats.py``)
or ``"gl-compute"`` (the tile algorithm in compute shaders, ``viewer/backends/gl_tiles.py``). The other render modes (ellipsoids, initial points, depth) are GL
drawings (``viewer/backends/gl_modes.py``), as in SIBR. Renderers are created on first use. Keys follow
SIBR: W/S/A/D/Q/E move, I/K/J/L/U/O turn (held keys, scaled by frame time), P snaps to the
closest input camera, [ and ] step to the previous/next input camera, M saves a screenshot,
Esc quits. The left mouse button orbits around the model's median point, the wheel dollies.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from rasterizer.gaussians import Gaussians
from trainer.image_io import save_png

from .backends.gl_splats import SplatRenderer, read_framebuffer
from .navigation.controls import ROTATION_KEYS, TRANSLATION_KEYS, dolly, orbit
from .scene_source import ViewerInput, bulk_points
from .state import ViewerState
from .window.surfaces import OffscreenSurface, SurfaceError, WindowSurface

__all__ = ["ViewerApp", "ViewerError"]

LAUNCH_TIME_VARIABLE = "SPLATVIEW_LAUNCH_TIME"   # set by bench/viewer.py to time start-up
ORBIT_RADIANS_PER_PIXEL = 0.005
DOLLY_PER_WHEEL_STEP = 0.9
ViewerError = SurfaceError   # the window or its GL context could not be created


class ViewerApp:
    """Owns the surface and the renderers; reads and updates a :class:`ViewerState`.

    Args:
        viewer_input: the model and its cameras.
        state: what to draw (``state.backend`` picks the splat renderer).
        visible: show the window (hidden windows still render; tests and ``--frames``).
        panel: optional ``ControlPanel``, driven once per frame.
        offscreen: draw into an EGL framebuffer instead of a window (no input, no panel).
        device: CUDA device for the ``cuda`` backend (and the EGL device offscreen).
        interop: use CUDA-GL interop (else a host copy, as SIBR's ``--no_interop``).
    """

    def __init__(self, viewer_input: ViewerInput, state: ViewerState, visible: bool = True, panel=None,
                 offscreen: bool = False, device: torch.device | None = None, interop: bool = True):
        self.input = viewer_input
        self.state = state
        self.panel = panel
        self.device = device if device is not None else (
            torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None)
        self.interop = interop
        self.target = bulk_points(viewer_input.gaussians).median(dim=0).values \
            if len(viewer_input.gaussians) else torch.zeros(3, dtype=torch.float64)
        title = f"splatview - {viewer_input.title}"
        cuda_index = self.device.index if self.device is not None else None
        self.surface = OffscreenSurface(state.width, state.height, cuda_index) if offscreen \
            else WindowSurface(state.width, state.height, title, visible, state.vsync)
        self._vsync = state.vsync
        self.window = getattr(self.surface, "window", None)
        if self.window is not None:
            self._install_callbacks()
        self.splat_renderers: dict = {}   # backend -> renderer, created on first use
        self.mode_renderers: dict = {}    # render mode -> renderer, created on first use
        self._last_cursor: tuple[float, float] | None = None
        self.frame_seconds = 0.0
        # Called with the app at the start of every frame, before drawing (e.g. in-viewer
        # training swaps in the latest Gaussians with set_gaussians).
        self.frame_callbacks: list[Callable[["ViewerApp"], None]] = []
        self._splat_renderer()   # now, so that a failure is reported before the first frame
        self.remote = None  # RemoteView (viewer/network/view.py) with --connect: it draws first

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
        if self.panel is not None:
            self.panel.close()
        self.surface.make_current()   # the panel's DPG frame made its own context current
        # The GL quad renderer last: the compute path and the modes share its buffers.
        for renderer in (*self.mode_renderers.values(),
                         *sorted(self.splat_renderers.values(), key=lambda r: isinstance(r, SplatRenderer))):
            renderer.release()
        self.surface.release()

    # ----- input ----------------------------------------------------------------------------
    def _on_key(self, window, key, scancode, action, mods) -> None:
        glfw = self._glfw
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
        glfw = self._glfw
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
        if len(gaussians):
            self.target = bulk_points(gaussians).median(dim=0).values
        if "gl" in self.splat_renderers or self.state.backend != "cuda":   # gl-compute shares its buffers
            self.renderer.upload(gaussians)
        if "cuda" in self.splat_renderers:
            self.splat_renderers["cuda"].set_gaussians(gaussians)
        if "ellipsoids" in self.mode_renderers:
            self.mode_renderers["ellipsoids"].upload(gaussians)
        if "initial_points" in self.mode_renderers and self.input.initial_points is None:
            self.mode_renderers.pop("initial_points").release()   # it showed the old centres

    def draw(self) -> None:
        """Render the current state into the window's back buffer."""
        state = self.state
        self.surface.bind()
        if self.remote is not None and self.remote.draw():
            return  # the trainer's image (or nothing yet) was drawn
        mode = state.render_mode
        if mode == "splats":
            self._splat_renderer().draw(state.camera(), state.background, sh_degree=state.sh_degree,
                                        scaling_modifier=state.scaling_modifier, antialiasing=state.antialiasing,
                                        fast_culling=state.fast_culling)
        elif mode == "depth":
            self._mode_renderer(mode).draw(state.camera(), state.background,
                                           scaling_modifier=state.scaling_modifier,
                                           antialiasing=state.antialiasing)
        else:
            self._mode_renderer(mode).draw(state.camera(), state.background)

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

    @staticmethod
    def _report_first_frame(launched: float) -> None:
        """For bench/viewer.py: seconds from ``launched`` (a ``time.time()`` taken by whoever
        started this process) until the first frame has been drawn on the GPU."""
        from OpenGL import GL  # noqa: PLC0415

        GL.glFinish()
        print(f"splat-view: first frame drawn {time.time() - launched:.3f} s after launch", file=sys.stderr, flush=True)

    def screenshot(self, path: str | Path) -> None:
        """Save the back buffer (the frame just drawn) as a PNG."""
        self.surface.bind()
        width, height = self.surface.size()
        save_png(path, read_framebuffer(width, height).clamp(0, 1))

    def run(self, frames: int | None = None, screenshot: str | Path | None = None) -> None:
        """Run the frame loop until the window closes, or for ``frames`` frames; with
        ``screenshot``, the last frame is saved there."""
        count, last = 0, time.perf_counter()
        surface = self.surface
        while not surface.should_close():
            surface.poll()
            now = time.perf_counter()
            self.frame_seconds, last = now - last, now
            self.state.move(self._held_keys(), self.frame_seconds)
            surface.make_current()   # the panel's DPG frame made its own context current
            for callback in self.frame_callbacks:
                callback(self)
            if self.state.vsync != self._vsync:
                self._vsync = self.state.vsync
                surface.set_vsync(self._vsync)
            self.draw()
            count += 1
            if count == 1 and os.environ.get(LAUNCH_TIME_VARIABLE):
                self._report_first_frame(float(os.environ[LAUNCH_TIME_VARIABLE]))
            if frames is not None and count >= frames:
                if screenshot is not None:
                    self.screenshot(screenshot)
                break
            if self.state.screenshot_path:
                self.screenshot(self.state.screenshot_path)
                self.state.screenshot_path = None
            surface.swap()
            if self.panel is not None:
                self.panel.frame(self.frame_seconds, len(self.input.gaussians))
                if not self.panel.is_open():
                    self.panel = None
