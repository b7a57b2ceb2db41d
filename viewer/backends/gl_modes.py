"""The viewer's other render modes (SIBR's Ellipsoids and Initial Points, plus a depth view).

* :class:`EllipsoidRenderer` - SIBR's Ellipsoid mode (``shaders/ellipsoid.*``, spec section 7.3): an
  instanced 36-vertex cube per Gaussian scaled to its 2-sigma ellipsoid, ray-traced in the fragment
  shader; pass 0 opaque (opacity >= 0.2, depth test + write), pass 1 additive (SRC_ALPHA, ONE),
  alpha 0.05, depth test without writes (opacity < 0.2).
* :class:`PointsRenderer` - the initial point cloud (``input.ply``) or the Gaussian centres as
  depth-tested GL points in their RGB colours (``shaders/points.*``).
* :class:`DepthRenderer` - the splats' alpha-weighted inverse depth (``rasterizer.render``'s
  ``inv_depth``), normalised by the visible range and turbo colour-mapped (``shaders/depth.frag``).

They share :class:`~viewer.backends.gl_splats.SplatRenderer`'s SSBOs (binding 0 mean + opacity, binding 2 SH,
binding 3 order) and add their own (binding 4 rotations, 5 scales, 6 points). The camera projection
is :func:`gl_view_projection`: our :class:`Camera` (OpenCV axes, principal point), image row 0 at the
top of the framebuffer like the splat path, so :func:`~viewer.backends.gl_splats.read_framebuffer` lines the
modes up with the splats. Modes that need a depth buffer draw into an internal framebuffer (RGBA32F +
24-bit depth, as SIBR's FBO) and blit the colour into whatever framebuffer was bound.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from OpenGL import GL

from rasterizer.camera import Camera
from rasterizer.gaussians import Gaussians
from rasterizer.ply import PointCloud
from shaders import shader_source

from .gl_splats import SplatRenderer, _compile_program

__all__ = ["gl_view_projection", "EllipsoidRenderer", "PointsRenderer", "DepthRenderer", "NEAR", "FAR"]

NEAR, FAR = 0.01, 1000.0
SH_C0 = 0.28209479177387814


def gl_view_projection(camera: Camera, near: float = NEAR, far: float = FAR) -> np.ndarray:
    """Row-major float32 4x4 clip-from-world matrix for ``camera``: pixel (fx x/z + cx, fy y/z + cy)
    maps to NDC (2 u / W - 1, 1 - 2 v / H) (row 0 at the top), view z in [near, far] to [-1, 1]."""
    w, h = camera.width, camera.height
    projection = np.array([
        [2.0 * camera.fx / w, 0.0, 2.0 * camera.cx / w - 1.0, 0.0],
        [0.0, -2.0 * camera.fy / h, 1.0 - 2.0 * camera.cy / h, 0.0],
        [0.0, 0.0, (far + near) / (far - near), -2.0 * far * near / (far - near)],
        [0.0, 0.0, 1.0, 0.0]])
    return np.ascontiguousarray(projection @ camera.world_to_camera.numpy(), dtype=np.float32)


class _Target:
    """An internal framebuffer (RGBA32F colour texture + 24-bit depth), resized on demand."""

    def __init__(self) -> None:
        self.fbo = GL.glGenFramebuffers(1)
        self.texture = GL.glGenTextures(1)
        self.depth = GL.glGenRenderbuffers(1)
        self.size: tuple[int, int] | None = None

    def bind(self, width: int, height: int) -> int:
        """Bind for drawing and reading (allocating at this size); returns the previous draw FBO."""
        previous = int(GL.glGetIntegerv(GL.GL_DRAW_FRAMEBUFFER_BINDING))
        if self.size != (width, height):
            GL.glBindTexture(GL.GL_TEXTURE_2D, self.texture)
            GL.glTexImage2D(GL.GL_TEXTURE_2D, 0, GL.GL_RGBA32F, width, height, 0, GL.GL_RGBA, GL.GL_FLOAT, None)
            GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_MIN_FILTER, GL.GL_NEAREST)
            GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_MAG_FILTER, GL.GL_NEAREST)
            GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
            GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, self.depth)
            GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, GL.GL_DEPTH_COMPONENT24, width, height)
            GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, 0)
            GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self.fbo)
            GL.glFramebufferTexture2D(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, GL.GL_TEXTURE_2D, self.texture, 0)
            GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, GL.GL_DEPTH_ATTACHMENT, GL.GL_RENDERBUFFER, self.depth)
            status = GL.glCheckFramebufferStatus(GL.GL_FRAMEBUFFER)
            if status != GL.GL_FRAMEBUFFER_COMPLETE:
                raise RuntimeError(f"render-mode framebuffer incomplete (status 0x{status:x})")
            self.size = (width, height)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self.fbo)
        return previous

    def blit_to(self, previous: int) -> None:
        """Copy the colour into framebuffer ``previous`` and leave that bound."""
        width, height = self.size
        GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, self.fbo)
        GL.glBindFramebuffer(GL.GL_DRAW_FRAMEBUFFER, previous)
        GL.glBlitFramebuffer(0, 0, width, height, 0, 0, width, height, GL.GL_COLOR_BUFFER_BIT, GL.GL_NEAREST)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, previous)

    def release(self) -> None:
        GL.glDeleteFramebuffers(1, [self.fbo])
        GL.glDeleteTextures(1, [self.texture])
        GL.glDeleteRenderbuffers(1, [self.depth])


def _upload(buffer: int, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array, dtype=np.float32)
    GL.glBindBuffer(GL.GL_SHADER_STORAGE_BUFFER, buffer)
    GL.glBufferData(GL.GL_SHADER_STORAGE_BUFFER, max(array.nbytes, 4), array if array.size else None,
                    GL.GL_STATIC_DRAW)
    GL.glBindBuffer(GL.GL_SHADER_STORAGE_BUFFER, 0)


def _clear(camera: Camera, background: Sequence[float]) -> None:
    GL.glViewport(0, 0, camera.width, camera.height)
    GL.glClearColor(*(float(v) for v in background), 1.0)
    GL.glClearDepth(1.0)
    GL.glDepthMask(GL.GL_TRUE)
    GL.glClear(GL.GL_COLOR_BUFFER_BIT | GL.GL_DEPTH_BUFFER_BIT)


class EllipsoidRenderer:
    """SIBR's Ellipsoid mode; shares ``splats``' mean/opacity and SH buffers."""

    def __init__(self, splats: SplatRenderer, gaussians: Gaussians) -> None:
        self.splats = splats
        self.program = _compile_program(shader_source("ellipsoid.vert"), shader_source("ellipsoid.frag"))
        self.vao = GL.glGenVertexArrays(1)
        self.buffers = GL.glGenBuffers(2)   # rotations, scales
        self.target = _Target()
        self._uniforms = {name: GL.glGetUniformLocation(self.program, name)
                          for name in ("view_projection", "camera_center", "pass_index")}
        self.upload(gaussians)

    def upload(self, gaussians: Gaussians) -> None:
        """Rotations and scales (the splat renderer uploads means, opacities and SH)."""
        with torch.no_grad():
            g = gaussians.to("cpu", torch.float32)
            scales = torch.cat([g.scales, torch.zeros(len(g), 1)], dim=1)
            _upload(self.buffers[0], g.rotations.numpy())
            _upload(self.buffers[1], scales.numpy())

    def draw(self, camera: Camera, background: Sequence[float] = (0.0, 0.0, 0.0)) -> None:
        previous = self.target.bind(camera.width, camera.height)
        _clear(camera, background)
        count = self.splats.count
        if count:
            u = self._uniforms
            GL.glUseProgram(self.program)
            GL.glUniformMatrix4fv(u["view_projection"], 1, GL.GL_TRUE, gl_view_projection(camera))
            GL.glUniform3f(u["camera_center"], *camera.center.tolist())
            GL.glBindBufferBase(GL.GL_SHADER_STORAGE_BUFFER, 0, self.splats.buffers[0])
            GL.glBindBufferBase(GL.GL_SHADER_STORAGE_BUFFER, 2, self.splats.buffers[2])
            GL.glBindBufferBase(GL.GL_SHADER_STORAGE_BUFFER, 4, self.buffers[0])
            GL.glBindBufferBase(GL.GL_SHADER_STORAGE_BUFFER, 5, self.buffers[1])
            GL.glBindVertexArray(self.vao)
            GL.glEnable(GL.GL_DEPTH_TEST)
            GL.glDepthFunc(GL.GL_LESS)
            # Pass 0: opaque ellipsoids (opacity >= 0.2), depth test and writes, no blending.
            GL.glUniform1i(u["pass_index"], 0)
            GL.glDrawArraysInstanced(GL.GL_TRIANGLES, 0, 36, count)
            # Pass 1: faint ellipsoids (opacity < 0.2), additive, alpha 0.05, no depth writes.
            GL.glUniform1i(u["pass_index"], 1)
            GL.glDepthMask(GL.GL_FALSE)
            GL.glEnable(GL.GL_BLEND)
            GL.glBlendFunc(GL.GL_SRC_ALPHA, GL.GL_ONE)
            GL.glDrawArraysInstanced(GL.GL_TRIANGLES, 0, 36, count)
            GL.glDisable(GL.GL_BLEND)
            GL.glDepthMask(GL.GL_TRUE)
            GL.glDisable(GL.GL_DEPTH_TEST)
            GL.glBindVertexArray(0)
            GL.glUseProgram(0)
        self.target.blit_to(previous)

    def release(self) -> None:
        GL.glDeleteBuffers(2, self.buffers)
        GL.glDeleteVertexArrays(1, [self.vao])
        GL.glDeleteProgram(self.program)
        self.target.release()


class PointsRenderer:
    """Depth-tested GL points: ``cloud`` (the model folder's ``input.ply``) or, without one, the
    Gaussian centres coloured by their degree-0 SH colour."""

    def __init__(self, gaussians: Gaussians, cloud: PointCloud | None = None, point_size: float = 3.0) -> None:
        self.program = _compile_program(shader_source("points.vert"), shader_source("points.frag"))
        self.vao = GL.glGenVertexArrays(1)
        self.buffer = GL.glGenBuffers(1)
        self.target = _Target()
        self.point_size = point_size
        self._uniforms = {name: GL.glGetUniformLocation(self.program, name)
                          for name in ("view_projection", "point_size")}
        if cloud is None:
            with torch.no_grad():
                g = gaussians.to("cpu", torch.float32)
                rgb = (0.5 + SH_C0 * g.sh_dc[:, 0]).clamp(0.0, 1.0)
                cloud = PointCloud(g.means.numpy(), rgb.numpy())
        self.upload(cloud)

    def upload(self, cloud: PointCloud) -> None:
        n = len(cloud)
        data = np.ones((n, 2, 4), dtype=np.float32)
        data[:, 0, :3], data[:, 1, :3] = cloud.xyz, cloud.rgb
        _upload(self.buffer, data)
        self.count = n

    def draw(self, camera: Camera, background: Sequence[float] = (0.0, 0.0, 0.0)) -> None:
        previous = self.target.bind(camera.width, camera.height)
        _clear(camera, background)
        if self.count:
            u = self._uniforms
            GL.glUseProgram(self.program)
            GL.glUniformMatrix4fv(u["view_projection"], 1, GL.GL_TRUE, gl_view_projection(camera))
            GL.glUniform1f(u["point_size"], float(self.point_size))
            GL.glBindBufferBase(GL.GL_SHADER_STORAGE_BUFFER, 6, self.buffer)
            GL.glEnable(GL.GL_PROGRAM_POINT_SIZE)
            GL.glEnable(GL.GL_DEPTH_TEST)
            GL.glDepthFunc(GL.GL_LESS)
            GL.glBindVertexArray(self.vao)
            GL.glDrawArrays(GL.GL_POINTS, 0, self.count)
            GL.glBindVertexArray(0)
            GL.glDisable(GL.GL_DEPTH_TEST)
            GL.glDisable(GL.GL_PROGRAM_POINT_SIZE)
            GL.glUseProgram(0)
        self.target.blit_to(previous)

    def release(self) -> None:
        GL.glDeleteBuffers(1, [self.buffer])
        GL.glDeleteVertexArrays(1, [self.vao])
        GL.glDeleteProgram(self.program)
        self.target.release()


class DepthRenderer:
    """Colour-mapped inverse depth of the splats: ``splats`` draws (1/z, 0, 0) with its own
    sorting and blending into an internal float target (r = inv_depth, a = alpha), then a
    fullscreen pass (``blit.vert`` + ``depth.frag``) maps r / a through the range of the visible
    Gaussians' 1/z (the weighted mean lies inside it) to a turbo colour, nearer = warmer."""

    def __init__(self, splats: SplatRenderer) -> None:
        self.splats = splats
        self.program = _compile_program(shader_source("blit.vert"), shader_source("depth.frag"))
        self.vao = GL.glGenVertexArrays(1)
        self.target = _Target()
        self._inverse_depth = GL.glGetUniformLocation(splats.program, "inverse_depth")
        self._uniforms = {name: GL.glGetUniformLocation(self.program, name)
                          for name in ("accumulated", "inv_depth_range", "background", "flip_y")}

    def inverse_depth_range(self, camera: Camera) -> tuple[float, float]:
        """(min, max) of 1/z over the Gaussians in front of the near plane and inside the image."""
        means = self.splats.means.astype(np.float64)
        if len(means) == 0:
            return 0.0, 1.0
        pose = camera.world_to_camera.numpy()
        view = means @ pose[:3, :3].T + pose[:3, 3]
        z = view[:, 2]
        front = z > 0.2
        u = camera.fx * view[front, 0] / z[front] + camera.cx
        v = camera.fy * view[front, 1] / z[front] + camera.cy
        inside = (u >= 0) & (u <= camera.width) & (v >= 0) & (v <= camera.height)
        inverse = 1.0 / z[front][inside] if inside.any() else 1.0 / z[front]
        if len(inverse) == 0:
            return 0.0, 1.0
        return float(inverse.min()), float(inverse.max())

    def draw(self, camera: Camera, background: Sequence[float] = (0.0, 0.0, 0.0),
             scaling_modifier: float = 1.0, antialiasing: bool = False) -> None:
        previous = self.target.bind(camera.width, camera.height)
        GL.glProgramUniform1i(self.splats.program, self._inverse_depth, 1)
        try:
            self.splats.draw(camera, (0.0, 0.0, 0.0), sh_degree=0, scaling_modifier=scaling_modifier,
                             antialiasing=antialiasing)
        finally:
            GL.glProgramUniform1i(self.splats.program, self._inverse_depth, 0)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, previous)
        GL.glViewport(0, 0, camera.width, camera.height)
        u = self._uniforms
        GL.glUseProgram(self.program)
        GL.glActiveTexture(GL.GL_TEXTURE0)
        GL.glBindTexture(GL.GL_TEXTURE_2D, self.target.texture)
        GL.glUniform1i(u["accumulated"], 0)
        GL.glUniform1i(u["flip_y"], 0)
        GL.glUniform2f(u["inv_depth_range"], *self.inverse_depth_range(camera))
        GL.glUniform3f(u["background"], *(float(v) for v in background))
        GL.glBindVertexArray(self.vao)
        GL.glDrawArrays(GL.GL_TRIANGLES, 0, 3)
        GL.glBindVertexArray(0)
        GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
        GL.glUseProgram(0)

    def release(self) -> None:
        GL.glDeleteVertexArrays(1, [self.vao])
        GL.glDeleteProgram(self.program)
        self.target.release()
