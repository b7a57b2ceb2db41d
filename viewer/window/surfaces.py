"""Where the render loop draws: a GLFW window, or an offscreen framebuffer in an EGL context.

Both give the loop the same small interface (``make_current``, ``bind``, ``size``, ``swap``,
``poll``, ``should_close``, ``set_vsync``, ``release``, ``framebuffer``), so ``ViewerApp`` has one
frame loop.
The offscreen surface serves ``splat-view --offscreen`` (scripted frames and screenshots on
machines without a display) and ``bench/viewer.py``; it has no input and never closes itself.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["WindowSurface", "OffscreenSurface", "SurfaceError", "require_opengl_library", "work_area"]


class SurfaceError(RuntimeError):
    """The window or the GL context could not be created (message for the user)."""


def require_opengl_library(offscreen: bool) -> None:
    """Raise SurfaceError (one line for the user) when PyOpenGL finds no OpenGL library.

    Call it before anything imports ``OpenGL.GL``: without a library (a headless GPU server
    with the driver's EGL but no libOpenGL or libGL, say) that import fails with an
    AttributeError deep inside PyOpenGL. ``offscreen``: the EGL platform is selected (the
    message then starts like every other "no offscreen OpenGL context" failure).
    """
    try:
        from OpenGL import platform  # noqa: PLC0415

        library = platform.PLATFORM.GL
    except (ImportError, OSError, AttributeError) as error:
        library, reason = None, f" ({error})"
    else:
        reason = ""
    if library is None:
        what = "no offscreen OpenGL context" if offscreen else "no OpenGL library"
        raise SurfaceError(f"{what}: PyOpenGL found no libOpenGL.so.0 or libGL.so.1{reason}; install the GPU "
                           "driver's OpenGL library or Mesa (e.g. apt install libopengl0 libgl1)")


def _init_glfw():
    import glfw  # noqa: PLC0415

    if not glfw.init():
        raise SurfaceError("could not initialise GLFW (is there a display? set DISPLAY, use Xvfb, "
                           "or run with --offscreen)")
    return glfw


def work_area() -> tuple[int, int, int, int] | None:
    """The primary monitor's work area (x, y, width, height: the screen less task bars and docks),
    or None when GLFW reports no monitor."""
    glfw = _init_glfw()
    monitor = glfw.get_primary_monitor()
    if not monitor:
        return None
    area = tuple(int(v) for v in glfw.get_monitor_workarea(monitor))
    return area if area[2] > 0 and area[3] > 0 else None


class WindowSurface:
    """A GLFW window with an OpenGL 4.3 core context.

    ``resizable``: the user may resize it (the render loop follows ``size()``); scripted runs keep
    a fixed size. ``position``: its client area's top-left corner on the screen (default: where
    the window manager puts it). The window is shown only once placed."""

    framebuffer = 0   # the window's own (default) framebuffer

    def __init__(self, width: int, height: int, title: str, visible: bool = True, vsync: bool = False,
                 resizable: bool = False, position: tuple[int, int] | None = None) -> None:
        glfw = _init_glfw()
        self._glfw = glfw
        for hint, value in ((glfw.CONTEXT_VERSION_MAJOR, 4), (glfw.CONTEXT_VERSION_MINOR, 3),
                            (glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE),
                            (glfw.OPENGL_FORWARD_COMPAT, True), (glfw.VISIBLE, False),
                            (glfw.RESIZABLE, resizable)):
            glfw.window_hint(hint, value)
        self.window = glfw.create_window(width, height, title, None, None)
        if not self.window:
            glfw.terminate()
            raise SurfaceError("could not create an OpenGL 4.3 core window (update the GPU driver)")
        if position is not None:
            glfw.set_window_pos(self.window, *position)
        if visible:
            glfw.show_window(self.window)
        glfw.make_context_current(self.window)
        self.set_vsync(vsync)
        icon = _icon()
        if icon is not None:
            try:
                glfw.set_window_icon(self.window, 1, [icon])
            except Exception:  # noqa: BLE001 - some platforms (Wayland) refuse icons; harmless
                pass

    def make_current(self) -> None:
        self._glfw.make_context_current(self.window)

    def bind(self) -> None:
        from OpenGL import GL  # noqa: PLC0415

        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, 0)

    def size(self) -> tuple[int, int]:
        """Framebuffer size in pixels (HiDPI-aware)."""
        return tuple(self._glfw.get_framebuffer_size(self.window))

    def rect(self) -> tuple[int, int, int, int]:
        """The client area's (x, y, width, height) in screen coordinates (for the layout)."""
        return (*self._glfw.get_window_pos(self.window), *self._glfw.get_window_size(self.window))

    def frame_top(self) -> int:
        """Height of the title bar the window manager added (0 without one)."""
        return int(self._glfw.get_window_frame_size(self.window)[1])

    def move_to(self, x: int, y: int) -> None:
        self._glfw.set_window_pos(self.window, int(x), int(y))

    def close(self) -> None:
        """Ask the loop to end (as the window's close button does)."""
        self._glfw.set_window_should_close(self.window, True)

    def swap(self) -> None:
        self._glfw.swap_buffers(self.window)

    def poll(self) -> None:
        self._glfw.poll_events()

    def should_close(self) -> bool:
        return bool(self._glfw.window_should_close(self.window))

    def set_vsync(self, on: bool) -> None:
        self._glfw.swap_interval(1 if on else 0)

    def release(self) -> None:
        self._glfw.destroy_window(self.window)
        self._glfw.terminate()


def _icon():
    """The window icon as a GLFW image, or None when it cannot be read."""
    try:
        from importlib.resources import files  # noqa: PLC0415

        from PIL import Image  # noqa: PLC0415

        with Image.open(Path(str(files("assets") / "icon.png"))) as image:
            return image.convert("RGBA").copy()
    except Exception:  # noqa: BLE001 - an icon is cosmetic
        return None


class OffscreenSurface:
    """An RGBA8 framebuffer object in a headless EGL context (see ``viewer/window/egl_context.py``).

    ``cuda_device`` picks the EGL device of that CUDA device, so interop works on NVIDIA.
    """

    @property
    def framebuffer(self) -> int:
        return self.fbo

    def __init__(self, width: int, height: int, cuda_device: int | None = None) -> None:
        from .egl_context import EglContext  # noqa: PLC0415

        try:
            self.context = EglContext(cuda_device)
        except Exception as error:  # noqa: BLE001 - any EGL failure is one message for the user
            raise SurfaceError(f"no offscreen OpenGL context: {error}") from None
        from OpenGL import GL  # noqa: PLC0415

        self._gl = GL
        self.width, self.height = width, height
        self.colour = GL.glGenRenderbuffers(1)
        GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, self.colour)
        GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, GL.GL_RGBA8, width, height)
        self.fbo = GL.glGenFramebuffers(1)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, self.fbo)
        GL.glFramebufferRenderbuffer(GL.GL_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, GL.GL_RENDERBUFFER, self.colour)
        if GL.glCheckFramebufferStatus(GL.GL_FRAMEBUFFER) != GL.GL_FRAMEBUFFER_COMPLETE:
            raise SurfaceError("the offscreen framebuffer is incomplete")

    def make_current(self) -> None:
        self.context.make_current()

    def bind(self) -> None:
        self._gl.glBindFramebuffer(self._gl.GL_FRAMEBUFFER, self.fbo)

    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def swap(self) -> None:
        self._gl.glFlush()   # nothing to present; let the GPU start on the frame

    def poll(self) -> None:
        pass

    def should_close(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def set_vsync(self, on: bool) -> None:
        pass

    def release(self) -> None:
        GL = self._gl  # noqa: N806
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, 0)
        GL.glDeleteFramebuffers(1, [self.fbo])
        GL.glDeleteRenderbuffers(1, [self.colour])
        self.context.release()
