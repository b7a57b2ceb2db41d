"""The OpenGL compute path (``--backend gl-compute``): the reference rasterizer's tile algorithm in
GLSL compute shaders, for GPUs whose fixed-function graphics units are few.

Why: data-centre GPUs such as the H100 run fragment shaders and blending on a handful of
graphics units only, so the instanced-quad path (``viewer/backends/gl_splats.py``) is fragment-bound
there (about 160 ms per 1080p frame of 1M Gaussians), while compute shaders use every SM.

Per frame (``shaders/tile_*.comp``), after :class:`GpuDepthSort` ordered the splats:
1. ``tile_project``: project each splat (``splat_common.glsl``, the same numerics as the quads),
   store it by front-to-back rank, count the 16x16 tiles of its rectangle;
2. ``tile_scan``: power-of-two list segments per tile, their starts and the total (read back:
   the one synchronisation of a frame, to size the list buffer);
3. ``tile_emit``: each splat's rank into the list of every tile it covers;
4. ``tile_blend``: per tile, sort the list and blend front to back with the reference's early
   stop, into an RGBA8 image (row 0 = top) shown by :class:`DisplayTexture`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from OpenGL import GL

from rasterizer.camera import Camera
from shaders import shader_source

from .gl_display import DisplayTexture
from .gl_splats import SplatRenderer, _compile_compute, view_uniform_locations

__all__ = ["TileSplatRenderer", "TILE"]

TILE = 16
# SSBO bindings of shaders/tile_*.comp
GEOMETRY, COLOUR, CONIC_C, RECTS, TILE_COUNT, SEGMENT_START, TOTAL, TILE_FILL, LISTS = range(8, 17)


class TileSplatRenderer:
    """Draws ``splats``' model (its SSBOs and depth sort are shared) with compute shaders."""

    def __init__(self, splats: SplatRenderer) -> None:
        self.splats = splats
        self.programs = {name: _compile_compute(shader_source(f"tile_{name}.comp"))
                         for name in ("project", "scan", "emit", "blend")}
        self.view_uniforms = view_uniform_locations(self.programs["project"])
        self.uniforms = {(name, u): GL.glGetUniformLocation(program, u)
                         for name, program in self.programs.items()
                         for u in ("count", "grid", "tiles", "image_size", "background", "inverse_depth")}
        self.buffers = dict(zip((GEOMETRY, COLOUR, CONIC_C, RECTS, TILE_COUNT, SEGMENT_START, TOTAL,
                                 TILE_FILL, LISTS), GL.glGenBuffers(9)))
        self.sizes: dict[int, int] = {}
        self.display = DisplayTexture()
        self.pairs = 0   # list entries of the last frame (padding included)

    def _reserve(self, binding: int, nbytes: int) -> None:
        """Grow buffer ``binding`` to at least ``nbytes`` (never shrinks, to avoid churn)."""
        if self.sizes.get(binding, 0) < nbytes:
            GL.glBindBuffer(GL.GL_SHADER_STORAGE_BUFFER, self.buffers[binding])
            GL.glBufferData(GL.GL_SHADER_STORAGE_BUFFER, nbytes, None, GL.GL_DYNAMIC_COPY)
            self.sizes[binding] = nbytes
        GL.glBindBufferBase(GL.GL_SHADER_STORAGE_BUFFER, binding, self.buffers[binding])

    def _uniform(self, program: str, name: str, *values) -> None:
        location = self.uniforms[(program, name)]
        if isinstance(values[0], int):
            getattr(GL, f"glUniform{len(values)}ui")(location, *values)
        else:
            getattr(GL, f"glUniform{len(values)}f")(location, *values)

    def draw(self, camera: Camera, background: Sequence[float] = (0.0, 0.0, 0.0), sh_degree: int | None = None,
             scaling_modifier: float = 1.0, antialiasing: bool = False, fast_culling: bool = False) -> None:
        """Render ``camera``'s view and draw it over the viewport of the camera's size."""
        splats, count = self.splats, max(self.splats.count, 1)
        grid = ((camera.width + TILE - 1) // TILE, (camera.height + TILE - 1) // TILE)
        tiles = grid[0] * grid[1]
        if self.display.size != (camera.width, camera.height):
            self.display.allocate(camera.width, camera.height)
        splats.sort(camera)
        splats.bind_buffers()
        for binding, nbytes in ((GEOMETRY, 16 * count), (COLOUR, 16 * count), (CONIC_C, 4 * count),
                                (RECTS, 16 * count), (TILE_COUNT, 4 * tiles), (SEGMENT_START, 4 * tiles),
                                (TOTAL, 4), (TILE_FILL, 4 * tiles)):
            self._reserve(binding, nbytes)
        for binding in (TILE_COUNT, TILE_FILL):
            GL.glBindBuffer(GL.GL_SHADER_STORAGE_BUFFER, self.buffers[binding])
            GL.glClearBufferData(GL.GL_SHADER_STORAGE_BUFFER, GL.GL_R32UI, GL.GL_RED_INTEGER, GL.GL_UNSIGNED_INT, None)

        GL.glUseProgram(self.programs["project"])
        splats.set_view_uniforms(self.view_uniforms, camera, sh_degree, scaling_modifier, antialiasing, fast_culling)
        GL.glUniform1i(self.uniforms[("project", "inverse_depth")], 0)
        self._uniform("project", "count", splats.count)
        self._uniform("project", "grid", *grid)
        GL.glMemoryBarrier(GL.GL_SHADER_STORAGE_BARRIER_BIT)
        GL.glDispatchCompute((splats.count + 255) // 256, 1, 1)

        GL.glUseProgram(self.programs["scan"])
        self._uniform("scan", "tiles", tiles)
        GL.glMemoryBarrier(GL.GL_SHADER_STORAGE_BARRIER_BIT)
        GL.glDispatchCompute(1, 1, 1)
        GL.glMemoryBarrier(GL.GL_BUFFER_UPDATE_BARRIER_BIT)
        GL.glBindBuffer(GL.GL_SHADER_STORAGE_BUFFER, self.buffers[TOTAL])
        self.pairs = int(np.frombuffer(bytes(GL.glGetBufferSubData(GL.GL_SHADER_STORAGE_BUFFER, 0, 4)), np.uint32)[0])
        self._reserve(LISTS, 4 * max(self.pairs, 1))

        GL.glUseProgram(self.programs["emit"])
        self._uniform("emit", "count", splats.count)
        self._uniform("emit", "grid", *grid)
        GL.glMemoryBarrier(GL.GL_SHADER_STORAGE_BARRIER_BIT)
        GL.glDispatchCompute((splats.count + 255) // 256, 1, 1)

        GL.glUseProgram(self.programs["blend"])
        self._uniform("blend", "grid", *grid)
        self._uniform("blend", "image_size", float(camera.width), float(camera.height))
        self._uniform("blend", "background", *(float(v) for v in background))
        GL.glBindImageTexture(0, self.display.texture, 0, GL.GL_FALSE, 0, GL.GL_WRITE_ONLY, GL.GL_RGBA8)
        GL.glMemoryBarrier(GL.GL_SHADER_STORAGE_BARRIER_BIT)
        GL.glDispatchCompute(grid[0], grid[1], 1)
        GL.glMemoryBarrier(GL.GL_TEXTURE_FETCH_BARRIER_BIT | GL.GL_SHADER_IMAGE_ACCESS_BARRIER_BIT)
        GL.glUseProgram(0)
        self.display.draw((camera.width, camera.height))

    def release(self) -> None:
        GL.glDeleteBuffers(len(self.buffers), list(self.buffers.values()))
        for program in self.programs.values():
            GL.glDeleteProgram(program)
        self.display.release()
