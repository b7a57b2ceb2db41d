"""Helpers shared by the viewer tests that run Dear PyGui in a child process (no test here, and no
module-level skip, so that importing it never skips the importing module)."""

import json
import subprocess

import pytest


def child_state(result: subprocess.CompletedProcess) -> dict:
    """The last ``STATE{json}`` line of a Dear PyGui child process; skips where the child could
    not get a GL 4.3 context (it printed NOGL) or a DPG viewport (DPG aborts the process)."""
    if "NOGL" in result.stdout:
        pytest.skip("no GL 4.3 context here")
    if result.returncode < 0 or "could not create the control panel" in result.stderr:
        pytest.skip(f"Dear PyGui could not open a viewport here (rc {result.returncode}): {result.stderr[-300:]}")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("STATE")]
    assert lines, result.stdout + result.stderr
    return json.loads(lines[-1][len("STATE"):])


# ----- the X server, as a window manager or the user would see it (ctypes over libX11) -----------
class _X11:
    """The few Xlib calls the tests need: find a window by title, its place on the screen, and
    sending it the window manager's "close" message (what a title bar's close button does)."""

    def __init__(self):
        import ctypes
        import ctypes.util

        library = ctypes.util.find_library("X11")
        if library is None:
            pytest.skip("libX11 not found")
        self.c = ctypes
        X = self.X = ctypes.CDLL(library)
        X.XOpenDisplay.restype = ctypes.c_void_p
        X.XOpenDisplay.argtypes = [ctypes.c_char_p]
        X.XCloseDisplay.argtypes = [ctypes.c_void_p]
        X.XDefaultRootWindow.restype = ctypes.c_ulong
        X.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
        X.XQueryTree.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(ctypes.c_ulong),
                                 ctypes.POINTER(ctypes.c_ulong), ctypes.POINTER(ctypes.POINTER(ctypes.c_ulong)),
                                 ctypes.POINTER(ctypes.c_uint)]
        X.XFetchName.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(ctypes.c_char_p)]
        X.XInternAtom.restype = ctypes.c_ulong
        X.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        X.XFlush.argtypes = [ctypes.c_void_p]
        X.XGetGeometry.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(ctypes.c_ulong)] + \
            [ctypes.POINTER(ctypes.c_int)] * 2 + [ctypes.POINTER(ctypes.c_uint)] * 4
        X.XTranslateCoordinates.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_int,
                                            ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int),
                                            ctypes.POINTER(ctypes.c_ulong)]

        class ClientMessage(ctypes.Structure):
            _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                        ("display", ctypes.c_void_p), ("window", ctypes.c_ulong), ("message_type", ctypes.c_ulong),
                        ("format", ctypes.c_int), ("data", ctypes.c_long * 5)]

        class Event(ctypes.Union):
            _fields_ = [("xclient", ClientMessage), ("pad", ctypes.c_long * 24)]

        self.Event = Event
        X.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long, ctypes.POINTER(Event)]

    def _walk(self, display, window, found):
        c = self.c
        root, parent, count = c.c_ulong(), c.c_ulong(), c.c_uint()
        children = c.POINTER(c.c_ulong)()
        if self.X.XQueryTree(display, window, c.byref(root), c.byref(parent), c.byref(children), c.byref(count)):
            for i in range(count.value):
                name = c.c_char_p()
                self.X.XFetchName(display, children[i], c.byref(name))
                found.append((children[i], (name.value or b"").decode(errors="replace")))
                self._walk(display, children[i], found)
        return found

    def windows(self, display_name: str) -> dict:
        """title -> (x, y, width, height, mapped) of every named window on ``display_name``."""
        c, X = self.c, self.X
        display = X.XOpenDisplay(display_name.encode())
        try:
            root = X.XDefaultRootWindow(display)
            result = {}
            for window, name in self._walk(display, root, []):
                if not name:
                    continue
                r, x, y = c.c_ulong(), c.c_int(), c.c_int()
                width, height, border, depth = c.c_uint(), c.c_uint(), c.c_uint(), c.c_uint()
                X.XGetGeometry(display, window, c.byref(r), c.byref(x), c.byref(y), c.byref(width), c.byref(height),
                               c.byref(border), c.byref(depth))
                sx, sy, child = c.c_int(), c.c_int(), c.c_ulong()
                X.XTranslateCoordinates(display, window, root, 0, 0, c.byref(sx), c.byref(sy), c.byref(child))
                result[name] = (sx.value, sy.value, width.value, height.value, window)
            return result
        finally:
            X.XCloseDisplay(display)

    def mapped(self, display_name: str, title: str) -> bool:
        """Whether the window ``title`` is on screen (mapped: IsViewable)."""
        c, X = self.c, self.X

        class Attributes(c.Structure):   # XWindowAttributes up to map_state
            _fields_ = [("x", c.c_int), ("y", c.c_int), ("width", c.c_int), ("height", c.c_int),
                        ("border_width", c.c_int), ("depth", c.c_int), ("visual", c.c_void_p), ("root", c.c_ulong),
                        ("class_", c.c_int), ("bit_gravity", c.c_int), ("win_gravity", c.c_int),
                        ("backing_store", c.c_int), ("backing_planes", c.c_ulong), ("backing_pixel", c.c_ulong),
                        ("save_under", c.c_int), ("colormap", c.c_ulong), ("map_installed", c.c_int),
                        ("map_state", c.c_int), ("rest", c.c_long * 8)]

        X.XGetWindowAttributes.argtypes = [c.c_void_p, c.c_ulong, c.POINTER(Attributes)]
        display = X.XOpenDisplay(display_name.encode())
        try:
            for window, name in self._walk(display, X.XDefaultRootWindow(display), []):
                if name == title:
                    attributes = Attributes()
                    X.XGetWindowAttributes(display, window, c.byref(attributes))
                    return attributes.map_state == 2   # IsViewable
            return False
        finally:
            X.XCloseDisplay(display)

    def close(self, display_name: str, title: str) -> bool:
        """Send WM_DELETE_WINDOW to the window ``title``, as its close button would."""
        c, X = self.c, self.X
        display = X.XOpenDisplay(display_name.encode())
        try:
            targets = [w for w, name in self._walk(display, X.XDefaultRootWindow(display), []) if name == title]
            for window in targets:
                event = self.Event()
                message = event.xclient
                message.type, message.window, message.format = 33, window, 32   # ClientMessage
                message.message_type = X.XInternAtom(display, b"WM_PROTOCOLS", 0)
                message.data[0] = X.XInternAtom(display, b"WM_DELETE_WINDOW", 0)
                X.XSendEvent(display, window, 0, 0, c.byref(event))
            X.XFlush(display)
            return bool(targets)
        finally:
            X.XCloseDisplay(display)


def x11() -> _X11:
    return _X11()
