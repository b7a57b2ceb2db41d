"""The crop box in the render window: its edges drawn over each frame, and mouse controls.

* :class:`CropBoxOverlay` - a ViewerApp overlay: the 12 edges of the enabled box as yellow GL
  lines (``shaders/crop_box.*``) drawn in window pixels over the kept image where the compositor
  put it, projected like the other render modes
  (:func:`~viewer.backends.gl_modes.gl_view_projection`), not depth-tested, so the box shows
  through.
* :class:`CropBoxMouse` - while the box is on and Ctrl is held, the left button drags the box in the view plane, the
  right button turns it (horizontal motion about the camera's vertical axis, vertical motion
  about its horizontal axis) and the wheel scales it; without Ctrl the events go on to the
  viewer's own navigation (its GLFW callbacks are chained, not replaced).

The box arithmetic is in plain functions (:func:`moved_box`, :func:`turned_box`,
:func:`scaled_box`) so that it is testable without a window.
"""

from __future__ import annotations

import math

import numpy as np

from rasterizer.camera import Camera
from trainer.edit import CropBox
from trainer.edit.crop import matrix_to_euler

__all__ = ["CropBoxOverlay", "CropBoxMouse", "moved_box", "turned_box", "scaled_box", "EDGE_RGB"]

EDGE_RGB = (1.0, 0.85, 0.0)
RADIANS_PER_PIXEL = 0.01
SCALE_PER_WHEEL_STEP = 1.1


def moved_box(box: CropBox, camera: Camera, dx: float, dy: float) -> CropBox:
    """``box`` moved so that its centre follows a drag of (dx, dy) pixels in ``camera``'s image
    (parallel to the image plane, at the centre's depth)."""
    camera_to_world = camera.camera_to_world.numpy()
    centre = np.asarray(box.center)
    depth = float((camera.world_to_camera.numpy() @ np.append(centre, 1.0))[2])
    depth = max(depth, 1e-3)
    shift = camera_to_world[:3, 0] * dx * depth / camera.fx + camera_to_world[:3, 1] * dy * depth / camera.fy
    return box.replace(center=tuple(centre + shift))


def _axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix of ``angle`` radians about unit ``axis`` (Rodrigues)."""
    x, y, z = axis / np.linalg.norm(axis)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def turned_box(box: CropBox, camera: Camera, dx: float, dy: float) -> CropBox:
    """``box`` turned about its centre by a drag of (dx, dy) pixels: dx about the camera's
    vertical (y) axis, dy about its horizontal (x) axis."""
    camera_to_world = camera.camera_to_world.numpy()
    turn = _axis_rotation(camera_to_world[:3, 1], dx * RADIANS_PER_PIXEL) @ \
        _axis_rotation(camera_to_world[:3, 0], -dy * RADIANS_PER_PIXEL)
    return box.replace(rotation=matrix_to_euler(turn @ box.matrix))


def scaled_box(box: CropBox, wheel_steps: float) -> CropBox:
    """``box`` scaled about its centre by ``SCALE_PER_WHEEL_STEP`` per wheel step."""
    factor = SCALE_PER_WHEEL_STEP ** wheel_steps
    return box.replace(size=tuple(s * factor for s in box.size))


class CropBoxOverlay:
    """Draws ``controller.box`` when ``controller.crop_enabled``; called with the ViewerApp after
    the kept image is shown in the window (``app.overlays``)."""

    def __init__(self, controller):
        self.controller = controller
        self.program = None
        self.vao = None

    def __call__(self, app) -> None:
        if self.controller.crop_enabled:
            from ..window.compositor import fit_rect  # noqa: PLC0415

            state = app.state
            self.draw(state.camera(), self.controller.box,
                      viewport=fit_rect((state.width, state.height), app.surface.size()))

    def draw(self, camera: Camera, box: CropBox, viewport: tuple[int, int, int, int] | None = None) -> None:
        """Draw ``box``'s edges as seen by ``camera`` into the bound framebuffer, in ``viewport``
        (x, y, width, height; GL's bottom-left origin; default: the camera's image size)."""
        from OpenGL import GL  # noqa: PLC0415

        from shaders import shader_source  # noqa: PLC0415

        from ..backends.gl_modes import gl_view_projection  # noqa: PLC0415
        from ..backends.gl_splats import _compile_program  # noqa: PLC0415

        if self.program is None:
            self.program = _compile_program(shader_source("crop_box.vert"), shader_source("crop_box.frag"))
            self.vao = GL.glGenVertexArrays(1)
        blending = GL.glIsEnabled(GL.GL_BLEND)
        GL.glDisable(GL.GL_BLEND)
        GL.glDisable(GL.GL_DEPTH_TEST)
        previous_viewport = GL.glGetIntegerv(GL.GL_VIEWPORT)
        GL.glViewport(*(viewport or (0, 0, camera.width, camera.height)))
        GL.glUseProgram(self.program)
        GL.glUniformMatrix4fv(GL.glGetUniformLocation(self.program, "view_projection"), 1, GL.GL_TRUE,
                              gl_view_projection(camera))
        GL.glUniform3fv(GL.glGetUniformLocation(self.program, "corners"), 8,
                        np.ascontiguousarray(box.corners(), dtype=np.float32))
        GL.glUniform3f(GL.glGetUniformLocation(self.program, "colour"), *EDGE_RGB)
        GL.glBindVertexArray(self.vao)
        GL.glDrawArrays(GL.GL_LINES, 0, 24)
        GL.glBindVertexArray(0)
        GL.glUseProgram(0)
        GL.glViewport(*(int(v) for v in previous_viewport))
        if blending:
            GL.glEnable(GL.GL_BLEND)

    def release(self) -> None:
        from OpenGL import GL  # noqa: PLC0415

        if self.program is not None:
            GL.glDeleteProgram(self.program)
            GL.glDeleteVertexArrays(1, [self.vao])
            self.program = None


class CropBoxMouse:
    """Ctrl + mouse edits ``controller``'s box in ``window`` (viewed through ``state``'s camera)
    while the box is on; other events go on to the callbacks installed before it."""

    def __init__(self, controller, state, window):
        import glfw  # noqa: PLC0415

        self.glfw = glfw
        self.controller = controller
        self.state = state
        self.window = window
        self.dragging: int | None = None      # the GLFW mouse button held since a Ctrl + press
        self.last: tuple[float, float] | None = None
        self.previous_button = glfw.set_mouse_button_callback(window, self._on_button)
        self.previous_cursor = glfw.set_cursor_pos_callback(window, self._on_cursor)
        self.previous_scroll = glfw.set_scroll_callback(window, self._on_scroll)

    def _ctrl(self, mods: int | None = None) -> bool:
        glfw = self.glfw
        if mods is not None:
            return bool(mods & glfw.MOD_CONTROL)
        return any(glfw.get_key(self.window, key) == glfw.PRESS
                   for key in (glfw.KEY_LEFT_CONTROL, glfw.KEY_RIGHT_CONTROL))

    def _on_button(self, window, button, action, mods) -> None:
        glfw = self.glfw
        if (action == glfw.PRESS and self.controller.crop_enabled and self._ctrl(mods)
                and button in (glfw.MOUSE_BUTTON_LEFT, glfw.MOUSE_BUTTON_RIGHT)):
            self.dragging, self.last = button, glfw.get_cursor_pos(window)
            return
        if action == glfw.RELEASE and button == self.dragging:
            self.dragging = self.last = None
            return
        if self.previous_button is not None:
            self.previous_button(window, button, action, mods)

    def _on_cursor(self, window, x: float, y: float) -> None:
        if self.dragging is None:
            if self.previous_cursor is not None:
                self.previous_cursor(window, x, y)
            return
        dx, dy = x - self.last[0], y - self.last[1]
        self.last = (x, y)
        camera = self.state.camera()
        if self.dragging == self.glfw.MOUSE_BUTTON_LEFT:
            self.controller.set_box(moved_box(self.controller.box, camera, dx, dy))
        else:
            self.controller.set_box(turned_box(self.controller.box, camera, dx, dy))

    def _on_scroll(self, window, dx: float, dy: float) -> None:
        if self.controller.crop_enabled and self._ctrl():
            self.controller.set_box(scaled_box(self.controller.box, dy))
        elif self.previous_scroll is not None:
            self.previous_scroll(window, dx, dy)
