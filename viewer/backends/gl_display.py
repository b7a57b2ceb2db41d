"""An RGBA8 texture holding a rendered image (row 0 = top) and the fullscreen pass that shows it.

Used by the CUDA path (filled through CUDA-GL interop or a host copy) and the compute-tile GL
path (filled with ``imageStore``); ``blit.vert`` flips ``v`` so that row 0 lands at the top.
"""

from __future__ import annotations

import numpy as np
import torch
from OpenGL import GL

from shaders import shader_source

from .gl_splats import _compile_program

__all__ = ["DisplayTexture"]


class DisplayTexture:
    """An RGBA8 texture of the image size and the program that stretches it over the viewport."""

    def __init__(self) -> None:
        self.program = _compile_program(shader_source("blit.vert"), shader_source("blit.frag"))
        self._flip = GL.glGetUniformLocation(self.program, "flip_y")
        self.vao = GL.glGenVertexArrays(1)
        self.texture = 0
        self.size = (0, 0)

    def allocate(self, width: int, height: int) -> None:
        """(Re)create the texture at ``width`` x ``height``; the caller unregisters it first."""
        if self.texture:
            GL.glDeleteTextures(1, [self.texture])
        self.texture = GL.glGenTextures(1)
        GL.glBindTexture(GL.GL_TEXTURE_2D, self.texture)
        GL.glTexStorage2D(GL.GL_TEXTURE_2D, 1, GL.GL_RGBA8, width, height)
        for name in (GL.GL_TEXTURE_MIN_FILTER, GL.GL_TEXTURE_MAG_FILTER):
            GL.glTexParameteri(GL.GL_TEXTURE_2D, name, GL.GL_NEAREST)
        GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
        self.size = (width, height)

    def upload_from_host(self, rgba: torch.Tensor) -> None:
        """The fallback copy: ``rgba`` [H, W, 4] uint8 (any device) through host memory."""
        array = np.ascontiguousarray(rgba.cpu().numpy())
        GL.glBindTexture(GL.GL_TEXTURE_2D, self.texture)
        GL.glPixelStorei(GL.GL_UNPACK_ALIGNMENT, 1)
        GL.glTexSubImage2D(GL.GL_TEXTURE_2D, 0, 0, 0, self.size[0], self.size[1], GL.GL_RGBA,
                           GL.GL_UNSIGNED_BYTE, array)
        GL.glBindTexture(GL.GL_TEXTURE_2D, 0)

    def draw(self, viewport: tuple[int, int]) -> None:
        """Stretch the texture over ``viewport`` (width, height); row 0 of the image at the top."""
        GL.glViewport(0, 0, *viewport)
        GL.glDisable(GL.GL_BLEND)
        GL.glUseProgram(self.program)
        GL.glUniform1i(self._flip, 1)
        GL.glActiveTexture(GL.GL_TEXTURE0)
        GL.glBindTexture(GL.GL_TEXTURE_2D, self.texture)
        GL.glBindVertexArray(self.vao)
        GL.glDrawArrays(GL.GL_TRIANGLES, 0, 3)
        GL.glBindVertexArray(0)
        GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
        GL.glUseProgram(0)

    def release(self) -> None:
        if self.texture:
            GL.glDeleteTextures(1, [self.texture])
        GL.glDeleteVertexArrays(1, [self.vao])
        GL.glDeleteProgram(self.program)
