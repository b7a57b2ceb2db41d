"""A headless OpenGL 4.3 core context through EGL: no window, no X server.

Used by ``splat-view --offscreen``, ``bench/viewer.py`` and tests on machines without a display
(GPU servers, CI). GLFW's null platform cannot make an EGL context on those machines
(``shared/reference/viewer-notes.md`` §2.6, §3.5), so the context is created with PyOpenGL's
EGL bindings directly. PyOpenGL picks its platform at its first import: ``PYOPENGL_PLATFORM``
must be ``egl`` before anything imports ``OpenGL`` (:func:`require_egl_platform` checks).

Display choice: with ``cuda_device`` set, the EGL device whose ``EGL_CUDA_DEVICE_NV`` equals it
(NVIDIA), so that CUDA-GL interop works; otherwise the first enumerated device, then Mesa's
surfaceless platform, then the default display.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["EglContext", "require_egl_platform"]

EGL_PLATFORM_DEVICE_EXT = 0x313F
EGL_PLATFORM_SURFACELESS_MESA = 0x31DD
EGL_CUDA_DEVICE_NV = 0x323A


def require_egl_platform() -> None:
    """Make PyOpenGL use EGL; raises if ``OpenGL`` was already imported for another platform."""
    current = os.environ.get("PYOPENGL_PLATFORM")
    if "OpenGL" in sys.modules and current != "egl":
        raise RuntimeError("OpenGL was imported before the EGL platform was selected "
                           "(set PYOPENGL_PLATFORM=egl before importing OpenGL)")
    os.environ["PYOPENGL_PLATFORM"] = "egl"


def _devices(egl) -> list:
    from OpenGL.EGL.EXT.device_enumeration import eglQueryDevicesEXT  # noqa: PLC0415

    count = egl.EGLint()
    if not eglQueryDevicesEXT(0, None, ctypes.pointer(count)) or count.value == 0:
        return []
    devices = (egl.EGLDeviceEXT * count.value)()
    eglQueryDevicesEXT(count.value, devices, ctypes.pointer(count))
    return list(devices[: count.value])


def _cuda_index(device) -> int | None:
    from OpenGL.EGL.EXT.device_query import eglQueryDeviceAttribEXT  # noqa: PLC0415

    value = ctypes.c_long(-1)   # EGLAttrib is pointer-sized
    try:
        ok = eglQueryDeviceAttribEXT(device, EGL_CUDA_DEVICE_NV, ctypes.cast(ctypes.pointer(value), ctypes.POINTER(ctypes.c_long)))
    except Exception:  # noqa: BLE001 - not an NVIDIA device
        return None
    return value.value if ok else None


def _open_display(egl, cuda_device: int | None):
    from OpenGL.EGL.EXT.platform_base import eglGetPlatformDisplayEXT  # noqa: PLC0415

    try:
        devices = _devices(egl)
    except Exception:  # noqa: BLE001 - no device enumeration: try the other platforms
        devices = []
    if cuda_device is not None:
        devices = [d for d in devices if _cuda_index(d) == cuda_device] or devices
    for device in devices:
        display = eglGetPlatformDisplayEXT(EGL_PLATFORM_DEVICE_EXT, device, None)
        if display and _initialise(egl, display):
            return display
    for make in (lambda: eglGetPlatformDisplayEXT(EGL_PLATFORM_SURFACELESS_MESA, None, None),
                 lambda: egl.eglGetDisplay(egl.EGL_DEFAULT_DISPLAY)):
        try:
            display = make()
        except Exception:  # noqa: BLE001
            continue
        if display and _initialise(egl, display):
            return display
    raise RuntimeError("no EGL display could be initialised (install libegl1 and a GL driver)")


def _initialise(egl, display) -> bool:
    major, minor = egl.EGLint(), egl.EGLint()
    try:
        return bool(egl.eglInitialize(display, ctypes.pointer(major), ctypes.pointer(minor)))
    except Exception:  # noqa: BLE001
        return False


class EglContext:
    """A current, surfaceless GL 4.3 core context. Render into framebuffer objects;
    :meth:`release` destroys it."""

    def __init__(self, cuda_device: int | None = None) -> None:
        require_egl_platform()
        from OpenGL import EGL as egl  # noqa: PLC0415, N812 - after the platform is chosen

        self._egl = egl
        self.display = _open_display(egl, cuda_device)
        attributes = (egl.EGLint * 5)(egl.EGL_SURFACE_TYPE, egl.EGL_PBUFFER_BIT,
                                      egl.EGL_RENDERABLE_TYPE, egl.EGL_OPENGL_BIT, egl.EGL_NONE)
        config, count = egl.EGLConfig(), egl.EGLint()
        if not egl.eglChooseConfig(self.display, attributes, ctypes.pointer(config), 1, ctypes.pointer(count)) \
                or count.value == 0:
            raise RuntimeError("EGL: no config with desktop OpenGL")
        egl.eglBindAPI(egl.EGL_OPENGL_API)
        context_attributes = (egl.EGLint * 7)(egl.EGL_CONTEXT_MAJOR_VERSION, 4, egl.EGL_CONTEXT_MINOR_VERSION, 3,
                                              egl.EGL_CONTEXT_OPENGL_PROFILE_MASK,
                                              egl.EGL_CONTEXT_OPENGL_CORE_PROFILE_BIT, egl.EGL_NONE)
        self.context = egl.eglCreateContext(self.display, config, egl.EGL_NO_CONTEXT, context_attributes)
        if not self.context:
            raise RuntimeError("EGL: could not create an OpenGL 4.3 core context")
        if not egl.eglMakeCurrent(self.display, egl.EGL_NO_SURFACE, egl.EGL_NO_SURFACE, self.context):
            raise RuntimeError("EGL: could not make the context current")

    def make_current(self) -> None:
        self._egl.eglMakeCurrent(self.display, self._egl.EGL_NO_SURFACE, self._egl.EGL_NO_SURFACE, self.context)

    def release(self) -> None:
        egl = self._egl
        egl.eglMakeCurrent(self.display, egl.EGL_NO_SURFACE, egl.EGL_NO_SURFACE, egl.EGL_NO_CONTEXT)
        egl.eglDestroyContext(self.display, self.context)
        egl.eglTerminate(self.display)
