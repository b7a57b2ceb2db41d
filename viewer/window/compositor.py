"""What the window shows each frame: the last rendered image, kept in a framebuffer of its own
and scaled into the window, with overlays (``viewer/window/overlay.py``) blended on top.

Keeping the image lets the render loop skip rendering when nothing changed (the window and the
panel stay responsive however slow a render is) and render at a reduced resolution while the user
interacts (``viewer/window/pacing.py``). Images keep row 0 at the top of the framebuffer, as every
backend draws them, so copies need no flip.
"""

from __future__ import annotations

import numpy as np
import torch
from OpenGL import GL
from PIL import Image

from shaders import shader_source

from ..backends.gl_splats import _compile_program, read_framebuffer

__all__ = ["RenderTarget", "Compositor", "fit_rect"]

LETTERBOX = (0.08, 0.08, 0.09)   # around an image whose aspect differs from the window's


def fit_rect(image_size: tuple[int, int], window_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x, y, width, height) of an image of ``image_size``'s aspect scaled to fit the window,
    centred (GL's bottom-left origin)."""
    scale = min(window_size[0] / image_size[0], window_size[1] / image_size[1])
    width, height = max(1, round(image_size[0] * scale)), max(1, round(image_size[1] * scale))
    return (window_size[0] - width) // 2, (window_size[1] - height) // 2, width, height


class RenderTarget:
    """An RGBA8 framebuffer object, (re)allocated at the size asked for."""

    def __init__(self) -> None:
        self.fbo = GL.glGenFramebuffers(1)
        self.colour = GL.glGenRenderbuffers(1)
        self.size = (0, 0)

    def bind(self, width: int, height: int) -> None:
        """Bind for drawing and reading, at ``width`` x ``height``; sets the viewport."""
        if self.size != (width, height):
            GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, self.colour)
            GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, GL.GL_RGBA8, width, height)
            GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self.fbo)
            GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, GL.GL_RENDERBUFFER, self.colour)
            status = GL.glCheckFramebufferStatus(GL.GL_FRAMEBUFFER)
            if status != GL.GL_FRAMEBUFFER_COMPLETE:
                raise RuntimeError(f"render target {width}x{height} incomplete (status 0x{status:x})")
            self.size = (width, height)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self.fbo)
        GL.glViewport(0, 0, width, height)

    def read(self) -> torch.Tensor:
        """The image as float32 [3, H, W] in [0, 1], row 0 = top."""
        GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, self.fbo)
        return read_framebuffer(*self.size)

    def release(self) -> None:
        GL.glDeleteFramebuffers(1, [self.fbo])
        GL.glDeleteRenderbuffers(1, [self.colour])


class Compositor:
    """The kept image (``target``) and the overlay pass (``shaders/overlay.frag``)."""

    def __init__(self) -> None:
        self.target = RenderTarget()
        self.program = _compile_program(shader_source("blit.vert"), shader_source("overlay.frag"))
        self._flip = GL.glGetUniformLocation(self.program, "flip_y")
        self.vao = GL.glGenVertexArrays(1)
        self._textures: dict[str, tuple[int, Image.Image | None, tuple[int, int]]] = {}   # name -> (texture, image, size)

    def present(self, window_size: tuple[int, int], framebuffer: int = 0) -> tuple[int, int, int, int]:
        """Draw the kept image into ``framebuffer`` (bound afterwards), scaled to fit a window of
        ``window_size`` (letterboxed when the aspects differ); returns where it went."""
        GL.glBindFramebuffer(GL.GL_DRAW_FRAMEBUFFER, framebuffer)
        GL.glViewport(0, 0, *window_size)
        rect = fit_rect(self.target.size, window_size)
        if rect != (0, 0, *window_size):
            GL.glClearColor(*LETTERBOX, 1.0)
            GL.glClear(GL.GL_COLOR_BUFFER_BIT)
        GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, self.target.fbo)
        x, y, width, height = rect
        same = (width, height) == self.target.size
        GL.glBlitFramebuffer(0, 0, *self.target.size, x, y, x + width, y + height, GL.GL_COLOR_BUFFER_BIT,
                             GL.GL_NEAREST if same else GL.GL_LINEAR)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, framebuffer)
        return rect

    def draw_overlay(self, name: str, image: Image.Image, x: int, y: int, window_size: tuple[int, int]) -> None:
        """Blend ``image`` (RGBA, straight alpha) with its top-left corner at window pixel
        (``x``, ``y``) (origin top left) into the bound framebuffer. ``name`` keeps one texture
        per overlay; the same image object is uploaded only once (it is kept for that comparison)."""
        texture = self._upload(name, image)
        width, height = image.size
        GL.glViewport(int(x), int(window_size[1] - y - height), width, height)
        GL.glEnable(GL.GL_BLEND)
        GL.glBlendFunc(GL.GL_ONE, GL.GL_ONE_MINUS_SRC_ALPHA)
        GL.glUseProgram(self.program)
        GL.glUniform1i(self._flip, 1)
        GL.glActiveTexture(GL.GL_TEXTURE0)
        GL.glBindTexture(GL.GL_TEXTURE_2D, texture)
        GL.glBindVertexArray(self.vao)
        GL.glDrawArrays(GL.GL_TRIANGLES, 0, 3)
        GL.glBindVertexArray(0)
        GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
        GL.glUseProgram(0)
        GL.glDisable(GL.GL_BLEND)
        GL.glViewport(0, 0, *window_size)

    def _upload(self, name: str, image: Image.Image) -> int:
        texture, uploaded, size = self._textures.get(name, (0, None, (0, 0)))
        if texture and uploaded is image:
            return texture
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        rgba[..., :3] *= rgba[..., 3:]   # premultiplied alpha
        pixels = np.ascontiguousarray((rgba * 255.0 + 0.5).astype(np.uint8))
        if not texture or size != image.size:
            if texture:
                GL.glDeleteTextures(1, [texture])
            texture = GL.glGenTextures(1)
            GL.glBindTexture(GL.GL_TEXTURE_2D, texture)
            GL.glTexStorage2D(GL.GL_TEXTURE_2D, 1, GL.GL_RGBA8, *image.size)
            for parameter in (GL.GL_TEXTURE_MIN_FILTER, GL.GL_TEXTURE_MAG_FILTER):
                GL.glTexParameteri(GL.GL_TEXTURE_2D, parameter, GL.GL_NEAREST)
        GL.glBindTexture(GL.GL_TEXTURE_2D, texture)
        GL.glPixelStorei(GL.GL_UNPACK_ALIGNMENT, 1)
        GL.glTexSubImage2D(GL.GL_TEXTURE_2D, 0, 0, 0, *image.size, GL.GL_RGBA, GL.GL_UNSIGNED_BYTE, pixels)
        GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
        self._textures[name] = (texture, image, image.size)
        return texture

    def release(self) -> None:
        for texture, _, _ in self._textures.values():
            GL.glDeleteTextures(1, [texture])
        self._textures.clear()
        GL.glDeleteVertexArrays(1, [self.vao])
        GL.glDeleteProgram(self.program)
        self.target.release()
