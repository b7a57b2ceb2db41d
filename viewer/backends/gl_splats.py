"""OpenGL splatting path: instanced quads fed from shader storage buffers (GL 4.3 core).

Conventions:

* Cameras are :class:`rasterizer.Camera` (OpenCV axes, COLMAP principal point). The image is
  drawn so that image row 0 is the *top* of the framebuffer; :func:`read_framebuffer` flips
  GL's bottom-up rows back, so its result lines up with ``rasterizer.render``.
* ``world_to_camera`` is row-major in numpy; it is uploaded with ``transpose=GL_TRUE`` so that
  GLSL's column-major ``mat4`` holds the same matrix (``p_cam = W * p_world``).
* SSBOs (std430): binding 0 ``vec4`` (mean xyz, opacity); binding 1 six floats of the world 3D
  covariance (xx xy xz yy yz zz, computed once on the CPU); binding 2 48 half floats of SH
  (16 coefficients x RGB, zero-padded to degree 3, two per ``uint``); binding 3 the sorted ``uvec2`` pairs
  (key, ~index) of :class:`GpuDepthSort`, back to front.
* Blending is back to front, premultiplied colour, ``glBlendFunc(GL_ONE, GL_ONE_MINUS_SRC_ALPHA)``
  over a clear to the background colour; the alpha channel ends up as 1 - transmittance.

The renderer never creates a window: it draws into whatever GL 4.3 context is current.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from OpenGL import GL

from rasterizer.camera import Camera
from rasterizer.gaussians import Gaussians
from rasterizer.reference import covariance_3d
from shaders import shader_source

__all__ = ["SplatRenderer", "GpuDepthSort", "read_framebuffer"]

SHARED_SORT_BLOCK = 1024   # elements per workgroup in bitonic.comp's shared-memory steps


def _link(stages: tuple[tuple[int, str], ...]) -> int:
    """A linked program from ``(shader kind, source)`` pairs; compile and link errors raise."""
    program = GL.glCreateProgram()
    shaders = []
    for kind, source in stages:
        shader = GL.glCreateShader(kind)
        GL.glShaderSource(shader, source)
        GL.glCompileShader(shader)
        if not GL.glGetShaderiv(shader, GL.GL_COMPILE_STATUS):
            raise RuntimeError(f"shader compile error: {GL.glGetShaderInfoLog(shader).decode()}")
        GL.glAttachShader(program, shader)
        shaders.append(shader)
    GL.glLinkProgram(program)
    for shader in shaders:
        GL.glDeleteShader(shader)
    if not GL.glGetProgramiv(program, GL.GL_LINK_STATUS):
        raise RuntimeError(f"shader link error: {GL.glGetProgramInfoLog(program).decode()}")
    return program


def _compile_program(vertex: str, fragment: str) -> int:
    return _link(((GL.GL_VERTEX_SHADER, vertex), (GL.GL_FRAGMENT_SHADER, fragment)))


def _compile_compute(source: str) -> int:
    return _link(((GL.GL_COMPUTE_SHADER, source),))


VIEW_UNIFORMS = ("world_to_camera", "camera_center", "intrinsics", "image_size", "sh_degree", "scale2",
                 "antialiasing", "fast_culling")


def view_uniform_locations(program: int) -> dict[str, int]:
    """Locations of ``splat_common.glsl``'s view uniforms in ``program``."""
    return {name: GL.glGetUniformLocation(program, name) for name in VIEW_UNIFORMS}


class GpuDepthSort:
    """Back-to-front order of the splats, sorted on the GPU with compute shaders (GL 4.3).

    ``sort_keys.comp`` writes one ``(~sortable(z), ~index)`` pair per splat (padded to a power
    of two, at least ``SHARED_SORT_BLOCK``), then ``bitonic.comp`` sorts the pairs ascending:
    distances of 1024 and more one dispatch each, shorter ones in shared memory. For 2^20
    entries that is 75 dispatches and no read-back; the CPU never waits for the result.
    The result (``self.buffer``) is read by ``splat.vert`` as its draw order.
    """

    def __init__(self) -> None:
        self.keys_program = _compile_compute(shader_source("sort_keys.comp"))
        self.sort_program = _compile_compute(shader_source("bitonic.comp"))
        self.buffer = GL.glGenBuffers(1)
        self.padded = 0
        self._keys_uniforms = {n: GL.glGetUniformLocation(self.keys_program, n) for n in ("depth_row", "count")}
        self._sort_uniforms = {n: GL.glGetUniformLocation(self.sort_program, n) for n in ("k", "j", "local_steps")}

    def allocate(self, count: int) -> None:
        self.padded = max(SHARED_SORT_BLOCK, 1 << max(count - 1, 1).bit_length())
        GL.glBindBuffer(GL.GL_SHADER_STORAGE_BUFFER, self.buffer)
        GL.glBufferData(GL.GL_SHADER_STORAGE_BUFFER, self.padded * 8, None, GL.GL_DYNAMIC_COPY)   # written and read by the GPU only
        GL.glBindBuffer(GL.GL_SHADER_STORAGE_BUFFER, 0)

    def run(self, means_buffer: int, count: int, world_to_camera: np.ndarray) -> None:
        """Sort for the pose ``world_to_camera`` (4x4, row-major); ``means_buffer`` holds the
        ``vec4`` (mean, opacity) SSBO."""
        GL.glBindBufferBase(GL.GL_SHADER_STORAGE_BUFFER, 0, means_buffer)
        GL.glBindBufferBase(GL.GL_SHADER_STORAGE_BUFFER, 7, self.buffer)
        GL.glUseProgram(self.keys_program)
        GL.glUniform4f(self._keys_uniforms["depth_row"], *(float(v) for v in world_to_camera[2]))
        GL.glUniform1ui(self._keys_uniforms["count"], count)
        GL.glDispatchCompute(self.padded // 256, 1, 1)
        GL.glUseProgram(self.sort_program)
        u, groups = self._sort_uniforms, self.padded // SHARED_SORT_BLOCK
        k = 2
        while k <= self.padded:
            j = k // 2
            GL.glUniform1ui(u["k"], k)
            while j >= SHARED_SORT_BLOCK:
                self._dispatch(u, j, False, groups)
                j //= 2
            self._dispatch(u, j, True, groups)
            k *= 2
        GL.glUseProgram(0)

    @staticmethod
    def _dispatch(uniforms: dict, j: int, local: bool, groups: int) -> None:
        GL.glMemoryBarrier(GL.GL_SHADER_STORAGE_BARRIER_BIT)
        GL.glUniform1ui(uniforms["j"], j)
        GL.glUniform1i(uniforms["local_steps"], int(local))
        GL.glDispatchCompute(groups, 1, 1)

    def read(self, count: int) -> np.ndarray:
        """The splat indices in draw order (for tests; this waits for the GPU)."""
        GL.glMemoryBarrier(GL.GL_BUFFER_UPDATE_BARRIER_BIT)
        GL.glBindBuffer(GL.GL_SHADER_STORAGE_BUFFER, self.buffer)
        data = GL.glGetBufferSubData(GL.GL_SHADER_STORAGE_BUFFER, 0, count * 8)
        GL.glBindBuffer(GL.GL_SHADER_STORAGE_BUFFER, 0)
        pairs = np.frombuffer(bytes(data), dtype=np.uint32).reshape(-1, 2)
        return (~pairs[:, 1]).astype(np.uint32)

    def release(self) -> None:
        GL.glDeleteBuffers(1, [self.buffer])
        GL.glDeleteProgram(self.keys_program)
        GL.glDeleteProgram(self.sort_program)


class SplatRenderer:
    """Draws a :class:`Gaussians` model with the GLSL splat shaders into the current framebuffer.

    The model is uploaded once (:meth:`upload`); the depth sort (:class:`GpuDepthSort`: back to
    front, ties in reverse index order) runs on the GPU, only when the camera pose differs from
    the last sorted one. ``sort_count`` counts the sorts.
    """

    def __init__(self, gaussians: Gaussians | None = None) -> None:
        self.program = _compile_program(shader_source("splat.vert"), shader_source("splat.frag"))
        self.vao = GL.glGenVertexArrays(1)
        self.buffers = GL.glGenBuffers(3)   # means+opacity, cov3d, sh
        self.sorter = GpuDepthSort()
        self.count = 0
        self.sh_degree = 0
        self.sort_count = 0
        self._sorted_pose: bytes | None = None
        self.means = np.zeros((0, 3), dtype=np.float32)   # host copy, for the depth mode's range
        self._uniforms = view_uniform_locations(self.program)
        if gaussians is not None:
            self.upload(gaussians)

    def upload(self, gaussians: Gaussians) -> None:
        """Copy the model's activated parameters into the SSBOs (float32); forces a re-sort."""
        with torch.no_grad():
            g = gaussians.to("cpu", torch.float32)
            n = len(g)
            cov = covariance_3d(g.scales, g.rotations)
            upper = cov[:, [0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2]]
            sh = torch.zeros(n, 16, 3)
            sh[:, : g.sh.shape[1]] = g.sh
            mean_opacity = torch.cat([g.means, g.opacities[:, None]], dim=1)
        # SH as half floats: half the bandwidth, and (on NVIDIA) buffers of millions of splats
        # that stay in video memory (a 576 MB float buffer of 3M splats did not).
        arrays = (np.ascontiguousarray(mean_opacity.numpy(), dtype=np.float32),
                  np.ascontiguousarray(upper.numpy(), dtype=np.float32),
                  np.ascontiguousarray(sh.numpy().reshape(n, 48), dtype=np.float16).view(np.uint32))
        for buffer, array in zip(self.buffers, arrays):
            GL.glBindBuffer(GL.GL_SHADER_STORAGE_BUFFER, buffer)
            GL.glBufferData(GL.GL_SHADER_STORAGE_BUFFER, max(array.nbytes, 4), array if n else None,
                            GL.GL_STATIC_DRAW)
        GL.glBindBuffer(GL.GL_SHADER_STORAGE_BUFFER, 0)
        self.count, self.sh_degree = n, g.sh_degree
        self.means = g.means.numpy()
        self.sorter.allocate(n)
        self._sorted_pose = None

    def sort(self, camera: Camera) -> bool:
        """Re-sort back to front for ``camera`` if its pose changed; returns whether it sorted."""
        pose = camera.world_to_camera.numpy()
        key = pose.tobytes()
        if key == self._sorted_pose:
            return False
        self.sorter.run(self.buffers[0], self.count, pose)
        self._sorted_pose = key
        self.sort_count += 1
        return True

    def bind_buffers(self) -> None:
        """Bind the model's SSBOs and the sorted order at ``splat_common.glsl``'s bindings 0-3."""
        for binding, buffer in enumerate((*self.buffers, self.sorter.buffer)):
            GL.glBindBufferBase(GL.GL_SHADER_STORAGE_BUFFER, binding, buffer)

    def set_view_uniforms(self, locations: dict, camera: Camera, sh_degree: int | None, scaling_modifier: float,
                          antialiasing: bool, fast_culling: bool) -> None:
        """Set ``splat_common.glsl``'s uniforms of the program in use (``locations``: name ->
        location) for ``camera``."""
        pose = np.ascontiguousarray(camera.world_to_camera.numpy(), dtype=np.float32)
        degree = self.sh_degree if sh_degree is None else min(int(sh_degree), self.sh_degree)
        GL.glUniformMatrix4fv(locations["world_to_camera"], 1, GL.GL_TRUE, pose)   # row-major -> transpose
        GL.glUniform3f(locations["camera_center"], *camera.center.tolist())
        GL.glUniform4f(locations["intrinsics"], camera.fx, camera.fy, camera.cx, camera.cy)
        GL.glUniform2f(locations["image_size"], float(camera.width), float(camera.height))
        GL.glUniform1i(locations["sh_degree"], degree)
        GL.glUniform1f(locations["scale2"], float(scaling_modifier) ** 2)
        GL.glUniform1i(locations["antialiasing"], int(antialiasing))
        GL.glUniform1i(locations["fast_culling"], int(fast_culling))

    def draw(self, camera: Camera, background: Sequence[float] = (0.0, 0.0, 0.0),
             sh_degree: int | None = None, scaling_modifier: float = 1.0,
             antialiasing: bool = False, fast_culling: bool = False) -> None:
        """Clear to ``background`` and draw the splats; the viewport is set to the camera's size.
        ``fast_culling`` shrinks each quad to SIBR's per-axis extent (fewer fragments; the image
        loses only the faint corners of the reference's square footprint)."""
        GL.glViewport(0, 0, camera.width, camera.height)
        GL.glClearColor(*(float(v) for v in background), 0.0)
        GL.glClear(GL.GL_COLOR_BUFFER_BIT)
        if self.count == 0:
            return
        self.sort(camera)
        GL.glUseProgram(self.program)
        self.set_view_uniforms(self._uniforms, camera, sh_degree, scaling_modifier, antialiasing, fast_culling)
        self.bind_buffers()
        GL.glMemoryBarrier(GL.GL_SHADER_STORAGE_BARRIER_BIT)
        GL.glDisable(GL.GL_DEPTH_TEST)
        GL.glEnable(GL.GL_BLEND)
        GL.glBlendFunc(GL.GL_ONE, GL.GL_ONE_MINUS_SRC_ALPHA)
        GL.glBindVertexArray(self.vao)
        GL.glDrawArraysInstanced(GL.GL_TRIANGLE_STRIP, 0, 4, self.count)
        GL.glBindVertexArray(0)
        GL.glDisable(GL.GL_BLEND)
        GL.glUseProgram(0)

    def release(self) -> None:
        """Delete the GL objects (the context they were made in must be current)."""
        GL.glDeleteBuffers(3, self.buffers)
        self.sorter.release()
        GL.glDeleteVertexArrays(1, [self.vao])
        GL.glDeleteProgram(self.program)


def read_framebuffer(width: int, height: int) -> torch.Tensor:
    """The bound read framebuffer's RGB as float32 [3, H, W], row 0 = top (GL rows flipped)."""
    GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 1)
    data = GL.glReadPixels(0, 0, width, height, GL.GL_RGB, GL.GL_FLOAT)
    array = np.frombuffer(data, dtype=np.float32).reshape(height, width, 3)[::-1]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
