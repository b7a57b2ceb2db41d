"""Tiny helpers for tests and tools: a hidden GLFW GL 4.3 core window and a float framebuffer."""

from __future__ import annotations

import glfw
from OpenGL import GL

__all__ = ["create_hidden_window", "FloatFramebuffer", "draw_to_float_image"]


def create_hidden_window(width: int = 64, height: int = 64):
    """Initialise GLFW and make a hidden 4.3 core window's context current; None if impossible.

    The caller owns the window and calls ``glfw.terminate()`` when done.
    """
    if not glfw.init():
        return None
    for hint, value in ((glfw.CONTEXT_VERSION_MAJOR, 4), (glfw.CONTEXT_VERSION_MINOR, 3),
                        (glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE),
                        (glfw.OPENGL_FORWARD_COMPAT, True), (glfw.VISIBLE, False)):
        glfw.window_hint(hint, value)
    window = glfw.create_window(width, height, "splatview-gl", None, None)
    if not window:
        glfw.terminate()
        return None
    glfw.make_context_current(window)
    return window


class FloatFramebuffer:
    """An RGBA32F colour-only framebuffer object, bound for drawing and reading while in use."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.texture = GL.glGenTextures(1)
        GL.glBindTexture(GL.GL_TEXTURE_2D, self.texture)
        GL.glTexStorage2D(GL.GL_TEXTURE_2D, 1, GL.GL_RGBA32F, width, height)
        GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
        self.fbo = GL.glGenFramebuffers(1)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self.fbo)
        GL.glFramebufferTexture2D(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, GL.GL_TEXTURE_2D,
                                  self.texture, 0)
        status = GL.glCheckFramebufferStatus(GL.GL_FRAMEBUFFER)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, 0)
        if status != GL.GL_FRAMEBUFFER_COMPLETE:
            raise RuntimeError(f"float framebuffer incomplete (status 0x{status:x})")

    def __enter__(self) -> "FloatFramebuffer":
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self.fbo)
        return self

    def __exit__(self, *exc) -> None:
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, 0)

    def release(self) -> None:
        GL.glDeleteFramebuffers(1, [self.fbo])
        GL.glDeleteTextures(1, [self.texture])


def draw_to_float_image(renderer, camera, **kwargs):
    """``renderer.draw(camera, **kwargs)`` into a fresh float framebuffer of the camera's size;
    returns its RGB as float32 [3, H, W], row 0 = top (see ``gl_splats.read_framebuffer``)."""
    from ..backends.gl_splats import read_framebuffer  # noqa: PLC0415

    target = FloatFramebuffer(camera.width, camera.height)
    try:
        with target:
            renderer.draw(camera, **kwargs)
            return read_framebuffer(camera.width, camera.height)
    finally:
        target.release()
