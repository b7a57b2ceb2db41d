"""``splat-view --connect HOST:PORT``: the render window showing a model that trains elsewhere.

:class:`RemoteView` sits between the render loop and :class:`viewer.network.client.RemoteClient`. Every
frame it sends the current view and the panel's controls (Train, Keep alive, Scaling modifier,
local rendering) to the network thread and draws what came back:

* with splatview's trainer (extension) and local rendering on: the latest snapshot, through the
  app's normal render path (all render modes, full frame rate, any camera motion);
* otherwise (the reference's ``train.py``, or local rendering off): the trainer's latest image,
  uploaded to a texture and blitted with a vertical flip (its row 0 is the top, GL's is the
  bottom), as SIBR's remote viewer draws it;
* nothing yet: the background colour.

When the trainer's source folder is readable here, its cameras become the input cameras (for
snapping, P and [ ]) and the view starts at the first one, as SIBR loads the dataset from the
received path; otherwise the first snapshot is framed.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
from OpenGL import GL

from rasterizer.gaussians import Gaussians

from ..scene_source import ViewerInput, framing_camera, scene_frame
from ..state import ViewerState
from .client import RemoteClient, RemoteState

__all__ = ["RemoteView", "run_connected"]

CONNECT_WAIT_S = 30.0   # scripted runs (--frames) wait this long for the first remote content


class RemoteView:
    """Per-frame glue between a :class:`RemoteClient` and a ``ViewerApp`` (GL context current)."""

    def __init__(self, client: RemoteClient, app):
        self.client = client
        self.app = app
        self.latest = RemoteState()
        self._snapshot_sequence = 0
        self._frame_sequence = 0
        self._texture: int | None = None
        self._framebuffer: int | None = None
        self._texture_size = (0, 0)
        self._start_version = app.state.version
        self._placed = False
        self._local = False

    # ----- per frame -------------------------------------------------------------------------------
    def update(self) -> None:
        """Send the view and the controls, pick up what arrived (once per frame, with the render
        window's GL context current)."""
        state = self.app.state
        self.latest = self.client.latest()
        self._adopt_cameras(state)
        self._adopt_snapshot(state)
        self._local = self.latest.extension is not None and state.remote_local_rendering
        self.client.set_controls(train=state.remote_train, keep_alive=state.remote_keep_alive,
                                 scaling_modifier=state.scaling_modifier, local_rendering=self._local)
        self.client.set_view(None if self._local else state.camera())
        state.shows_remote_images = not (self._local and self._snapshot_sequence)

    def content_version(self) -> tuple:
        """Changes whenever what :meth:`draw` shows changes (for the render loop's kept image)."""
        frame = self.latest.frame
        return (self._local, self._snapshot_sequence, frame.sequence if frame is not None else -1,
                self._background(self.app.state))

    def draw(self, width: int, height: int) -> bool:
        """Draw into the bound framebuffer at ``width`` x ``height``; returns False when the app
        should draw the local model itself (a snapshot is in use)."""
        if self._local and self._snapshot_sequence:
            return False
        frame = self.latest.frame
        if frame is None or self._local:
            GL.glViewport(0, 0, width, height)
            GL.glClearColor(*self._background(self.app.state), 1.0)
            GL.glClear(GL.GL_COLOR_BUFFER_BIT)
            return True
        if frame.sequence != self._frame_sequence:
            self._upload(frame.pixels)
            self._frame_sequence = frame.sequence
        self._blit(width, height)
        return True

    def has_content(self) -> bool:
        """A snapshot, or the trainer's image of the view currently asked for, has arrived."""
        if self._snapshot_sequence > 0:
            return True
        frame, camera = self.latest.frame, self.app.state.camera()
        return frame is not None and frame.pixels.shape[:2] == (camera.height, camera.width) and \
            bool((frame.camera.world_to_camera == camera.world_to_camera).all())

    def _background(self, state: ViewerState) -> tuple[float, float, float]:
        stats = self.latest.stats or {}
        return tuple(stats.get("background", state.background))

    def _adopt_cameras(self, state: ViewerState) -> None:
        """The source's cameras, once, if the user has not moved yet."""
        if self._placed or not self.latest.cameras:
            return
        self._placed = True
        state.input_cameras = list(self.latest.cameras)
        state.set_scene(*scene_frame(self.app.input.gaussians, state.input_cameras))
        if state.version == self._start_version:
            state.snap_to(0)
            self._start_version = state.version

    def _adopt_snapshot(self, state: ViewerState) -> None:
        if self.latest.snapshot_sequence == self._snapshot_sequence or self.latest.gaussians is None:
            return
        gaussians: Gaussians = self.latest.gaussians
        first = self._snapshot_sequence == 0
        self._snapshot_sequence = self.latest.snapshot_sequence
        self.app.set_gaussians(gaussians)
        stats = self.latest.stats or {}
        if "background" in stats:
            state.background = tuple(float(v) for v in stats["background"])
        if first and not self._placed and len(gaussians) and state.version == self._start_version:
            camera = framing_camera(gaussians, state.width, state.height, state.fov_y)
            state.input_cameras = [camera]
            state.snap_to(0)
            self._start_version = state.version

    # ----- the trainer's image ------------------------------------------------------------------------
    def _upload(self, pixels: np.ndarray) -> None:
        height, width = pixels.shape[:2]
        if self._texture is None:
            self._texture = GL.glGenTextures(1)
            self._framebuffer = GL.glGenFramebuffers(1)
        GL.glBindTexture(GL.GL_TEXTURE_2D, self._texture)
        GL.glPixelStorei(GL.GL_UNPACK_ALIGNMENT, 1)  # rows of W*3 bytes are not 4-aligned
        GL.glTexImage2D(GL.GL_TEXTURE_2D, 0, GL.GL_RGBA8, width, height, 0, GL.GL_RGB, GL.GL_UNSIGNED_BYTE,
                        np.ascontiguousarray(pixels))
        GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_MIN_FILTER, GL.GL_NEAREST)
        GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_MAG_FILTER, GL.GL_NEAREST)
        GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
        GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, self._framebuffer)
        GL.glFramebufferTexture2D(GL.GL_READ_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, GL.GL_TEXTURE_2D,
                                  self._texture, 0)
        GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, 0)
        self._texture_size = (width, height)

    def _blit(self, width: int, height: int) -> None:
        """Texture row 0 (the image's top) sits at GL's bottom: blit with y flipped, into the
        bound draw framebuffer."""
        source_width, source_height = self._texture_size
        GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, self._framebuffer)
        GL.glViewport(0, 0, width, height)
        GL.glBlitFramebuffer(0, 0, source_width, source_height, 0, height, width, 0,
                             GL.GL_COLOR_BUFFER_BIT, GL.GL_NEAREST if (width, height) == self._texture_size
                             else GL.GL_LINEAR)
        GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, 0)

    def release(self) -> None:
        if self._texture is not None:
            GL.glDeleteFramebuffers(1, [self._framebuffer])
            GL.glDeleteTextures(1, [self._texture])
            self._texture = self._framebuffer = None

    # ----- the panel's statistics ----------------------------------------------------------------------
    def stats_lines(self) -> dict[str, Any]:
        """``{label: value}`` for the panel: connection, then the trainer's statistics."""
        latest = self.latest
        lines: dict[str, Any] = {"remote": latest.status}
        stats = latest.stats
        if stats:
            lines["iteration"] = f"{stats.get('iteration')} / {stats.get('iterations')}" + \
                (" (finished)" if stats.get("finished") else "")
            lines["loss"] = f"{stats.get('loss', 0.0):.5f}"
            lines["PSNR"] = f"{stats.get('psnr', 0.0):.2f} dB"
            lines["Gaussians (trainer)"] = f"{stats.get('gaussians', 0):,}"
            lines["steps/s"] = f"{stats.get('steps_per_second', 0.0):.1f}"
        if latest.snapshot_iteration is not None:
            lines["snapshot"] = f"iteration {latest.snapshot_iteration}"
        return lines


def run_connected(args, address: tuple[str, int]) -> int:
    """``splat-view --connect HOST:PORT`` (arguments from ``viewer.cli``, ``address`` the parsed
    ``--connect``); returns the exit code."""
    from ..app import ViewerApp, ViewerError  # noqa: PLC0415
    from ..launch import choose_backend, open_panel, usable_backends  # noqa: PLC0415

    host, port = address
    try:
        backend, device = choose_backend(args.backend, args.device)   # for snapshots drawn here
    except ValueError as error:
        print(f"splat-view: error: {error}", file=sys.stderr)
        return 1
    width, height = args.rendering_size or (1200, 800)
    empty = Gaussians.empty(sh_degree=3)
    start = framing_camera(empty, width, height)
    viewer_input = ViewerInput(empty, [start], (0.0, 0.0, 0.0), f"{host}:{port} (network viewer)")
    state = ViewerState.from_input_camera([start], 0, width=width, max_sh_degree=3, sh_degree=3,
                                          render_mode=args.render_mode, backend=backend,
                                          available_backends=usable_backends(device), navigation=args.navigation)
    state.height = height
    client = RemoteClient(host, port, use_extension=not args.reference_protocol).start()
    try:
        interactive = args.frames is None
        app = ViewerApp(viewer_input, state, visible=interactive, device=device, interop=not args.no_interop,
                        interactive=interactive, fixed_size=args.rendering_size is not None,
                        with_panel=not args.hide_panel)
        state.update(up=args.up)
    except (ViewerError, RuntimeError) as error:
        client.stop()
        print(f"splat-view: error: {error}", file=sys.stderr)
        return 1
    app.remote = RemoteView(client, app)
    try:
        if args.frames is not None and not _wait_for_content(app):
            print(f"splat-view: error: nothing received from {host}:{port} within {CONNECT_WAIT_S:g} s "
                  f"({app.remote.latest.status})", file=sys.stderr)
            return 1
        if args.frames is None and not args.hide_panel:
            from .panel import RemoteSection  # noqa: PLC0415 - Dear PyGui only when a panel is wanted

            app.panel = open_panel(app, sections=[RemoteSection(app.remote)])
        app.run(args.frames, args.screenshot)
    finally:
        client.stop()
        app.remote.release()
        app.close()
    return 0


def _wait_for_content(app) -> bool:
    """For scripted runs: ask until the first image or snapshot arrives."""
    deadline = time.monotonic() + CONNECT_WAIT_S
    while time.monotonic() < deadline:
        app.remote.update()   # (sends the view: the trainer renders it)
        if app.remote.has_content():
            return True
        time.sleep(0.02)
    return False
