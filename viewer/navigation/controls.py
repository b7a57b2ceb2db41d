"""Camera navigation: SIBR's FPS keys and snapping, plus mouse navigation in three modes.

Poses are 4x4 float64 world-to-camera matrices in OpenCV axes (x right, y down, z forward), the
convention of :class:`rasterizer.Camera`. Movements are expressed in the camera's own frame, so
"forward" is +z of the current view and "up" on screen is -y.

FPS keys (SIBR): W/S forward/back, A/D left/right, Q/E down/up (translation, ``speed`` world
units per second); I/K pitch up/down, J/L yaw left/right, U/O roll left/right (rotation,
``rotation_speed`` radians per second).

Mouse (``viewer/options.py`` lists the bindings): :func:`look_around` (fps: the camera turns
about its own centre, up stays up), :func:`orbit` (turntable about a pivot: yaw about the world's
up axis, pitch about the camera's right axis, never over the pole), :func:`trackball` (free
rotation about a pivot, about the camera's own axes), :func:`pan`, :func:`dolly`; a double click
picks the pivot with :func:`pick_point`. Angles are radians, distances world units.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch

from rasterizer.camera import Camera

__all__ = ["TRANSLATION_KEYS", "ROTATION_KEYS", "fps_step", "trackball", "orbit", "look_around", "pan", "dolly",
           "move_forward", "level", "pick_point", "closest_camera", "rotation_about", "camera_centre"]

MAX_PITCH = math.radians(89.0)   # orbit and look-around stop short of the pole (up would flip)

# Key -> unit direction in camera coordinates (OpenCV axes).
TRANSLATION_KEYS = {
    "W": (0.0, 0.0, 1.0), "S": (0.0, 0.0, -1.0),
    "D": (1.0, 0.0, 0.0), "A": (-1.0, 0.0, 0.0),
    "Q": (0.0, 1.0, 0.0), "E": (0.0, -1.0, 0.0),   # Q moves down (+y), E up
}
# Key -> (camera axis, sign): positive angles turn the view as the key names say.
ROTATION_KEYS = {
    "I": ((1.0, 0.0, 0.0), 1.0), "K": ((1.0, 0.0, 0.0), -1.0),   # pitch up / down
    "J": ((0.0, 1.0, 0.0), -1.0), "L": ((0.0, 1.0, 0.0), 1.0),   # yaw left / right
    "U": ((0.0, 0.0, 1.0), -1.0), "O": ((0.0, 0.0, 1.0), 1.0),   # roll left / right
}


def rotation_about(axis: Sequence[float], angle: float) -> torch.Tensor:
    """3x3 float64 rotation by ``angle`` radians about the unit ``axis`` (Rodrigues)."""
    k = torch.as_tensor(axis, dtype=torch.float64)
    k = k / k.norm()
    cross = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def fps_step(world_to_camera: torch.Tensor, pressed: Iterable[str], seconds: float,
             speed: float, rotation_speed: float) -> torch.Tensor:
    """The pose after holding the ``pressed`` keys for ``seconds`` (FPS mode).

    Translation moves the camera centre along its own axes; rotation turns the camera about its
    own centre. A view rotation ``Q`` (in camera coordinates) maps the pose to ``[Q R | Q t]``
    so the centre stays put.
    """
    pose = torch.as_tensor(world_to_camera, dtype=torch.float64).clone()
    keys = {key.upper() for key in pressed}
    move = torch.zeros(3, dtype=torch.float64)
    for key in keys & TRANSLATION_KEYS.keys():
        move += torch.tensor(TRANSLATION_KEYS[key], dtype=torch.float64)
    # Moving the centre by +m (camera frame) shifts camera coordinates of the world by -m.
    pose[:3, 3] -= move * speed * seconds
    for key in sorted(keys & ROTATION_KEYS.keys()):
        axis, sign = ROTATION_KEYS[key]
        turn = rotation_about(axis, sign * rotation_speed * seconds).T  # the world turns opposite
        pose[:3, :3] = turn @ pose[:3, :3]
        pose[:3, 3] = turn @ pose[:3, 3]
    return pose


def camera_centre(world_to_camera: torch.Tensor) -> torch.Tensor:
    """The camera centre in world coordinates, float64 [3]."""
    pose = torch.as_tensor(world_to_camera, dtype=torch.float64)
    return -pose[:3, :3].T @ pose[:3, 3]


def _turn_about(pose: torch.Tensor, point: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """The pose after turning the camera by the world rotation ``rotation`` about ``point``."""
    turned = pose.clone()
    centre = camera_centre(pose)
    turned[:3, :3] = pose[:3, :3] @ rotation.T
    turned[:3, 3] = -turned[:3, :3] @ (point + rotation @ (centre - point))
    return turned


def trackball(world_to_camera: torch.Tensor, target: Sequence[float], yaw: float, pitch: float) -> torch.Tensor:
    """Turn the camera around the world point ``target`` about its own axes (trackball mode).

    ``yaw`` turns about the camera's vertical axis, ``pitch`` about its horizontal axis, both
    in radians; the distance to the target and the target's place on screen are kept.
    """
    pose = torch.as_tensor(world_to_camera, dtype=torch.float64).clone()
    target_t = torch.as_tensor(target, dtype=torch.float64)
    turn = rotation_about((1.0, 0.0, 0.0), pitch) @ rotation_about((0.0, 1.0, 0.0), yaw)
    # Rotate the world about the target, expressed in camera coordinates.
    target_cam = pose[:3, :3] @ target_t + pose[:3, 3]
    pose[:3, :3] = turn @ pose[:3, :3]
    pose[:3, 3] = target_cam - pose[:3, :3] @ target_t
    return pose


def _view_raise_within_limits(pose: torch.Tensor, up: torch.Tensor, raise_view: float) -> float:
    """``raise_view`` (radians by which the view direction turns up) reduced so that the view
    stays at most MAX_PITCH from the horizon."""
    elevation = math.asin(max(-1.0, min(1.0, float(pose[2, :3] @ up))))   # looking above the horizon: > 0
    return max(-MAX_PITCH - elevation, min(MAX_PITCH - elevation, raise_view))


def orbit(world_to_camera: torch.Tensor, pivot: Sequence[float], up: Sequence[float], yaw: float,
          pitch: float) -> torch.Tensor:
    """Turntable rotation about ``pivot`` (orbit mode): ``yaw`` radians about the world ``up``
    axis through the pivot (positive: the camera moves to its right), then ``pitch`` about the
    camera's right axis (positive: the camera rises, looking down more), stopping short of the
    pole so that ``up`` stays up on screen."""
    pose = torch.as_tensor(world_to_camera, dtype=torch.float64)
    pivot_t = torch.as_tensor(pivot, dtype=torch.float64)
    up_t = torch.as_tensor(up, dtype=torch.float64)
    up_t = up_t / up_t.norm()
    # Turning the camera about the pivot by R turns its view by R too: the view turns left
    # (R = a positive turn about up) exactly when the camera moves right.
    turned = _turn_about(pose, pivot_t, rotation_about(up_t, yaw))
    raise_view = _view_raise_within_limits(turned, up_t, -pitch)   # rising means looking down
    return _turn_about(turned, pivot_t, rotation_about(turned[0, :3], raise_view))


def look_around(world_to_camera: torch.Tensor, up: Sequence[float], yaw: float, pitch: float) -> torch.Tensor:
    """Turn the camera about its own centre (fps mouse): ``yaw`` radians about the world ``up``
    axis (positive: look right), ``pitch`` about the camera's right axis (positive: look up),
    stopping short of looking straight up or down."""
    pose = torch.as_tensor(world_to_camera, dtype=torch.float64)
    up_t = torch.as_tensor(up, dtype=torch.float64)
    up_t = up_t / up_t.norm()
    centre = camera_centre(pose)
    turned = _turn_about(pose, centre, rotation_about(up_t, -yaw))
    raise_view = _view_raise_within_limits(turned, up_t, pitch)
    return _turn_about(turned, centre, rotation_about(turned[0, :3], raise_view))


def pan(world_to_camera: torch.Tensor, right: float, down: float) -> torch.Tensor:
    """Move the camera by ``right`` and ``down`` world units along its own x and y axes."""
    pose = torch.as_tensor(world_to_camera, dtype=torch.float64).clone()
    pose[:3, 3] -= torch.tensor([right, down, 0.0], dtype=torch.float64)
    return pose


def move_forward(world_to_camera: torch.Tensor, distance: float) -> torch.Tensor:
    """Move the camera ``distance`` world units along its view direction (negative: back)."""
    pose = torch.as_tensor(world_to_camera, dtype=torch.float64).clone()
    pose[2, 3] -= distance
    return pose


def level(world_to_camera: torch.Tensor, up: Sequence[float]) -> torch.Tensor:
    """The same camera centre and view direction, rolled so that ``up`` points up on screen;
    unchanged when the camera looks (almost) straight along ``up``."""
    pose = torch.as_tensor(world_to_camera, dtype=torch.float64)
    up_t = torch.as_tensor(up, dtype=torch.float64)
    forward = pose[2, :3]
    right = torch.linalg.cross(forward, up_t)
    if right.norm() < 1e-6 * up_t.norm():
        return pose.clone()
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    levelled = pose.clone()
    levelled[:3, :3] = torch.stack([right, down, forward])
    levelled[:3, 3] = -levelled[:3, :3] @ camera_centre(pose)
    return levelled


def pick_point(means: torch.Tensor, camera: Camera, x: float, y: float, radius: float = 6.0) -> torch.Tensor | None:
    """The world point under pixel (``x``, ``y``) (continuous image position, COLMAP's
    convention): on the viewing ray, at the depth of the nearest splat centres that project
    within ``radius`` pixels of it (the 10% depth quantile of those, so that a stray floater in
    front does not decide). The radius doubles up to 8 times when nothing is found; None if the
    pixel shows no splat."""
    pose = camera.world_to_camera.to(means.device, torch.float32)
    points = means.detach().float() @ pose[:3, :3].T + pose[:3, 3]
    depth = points[:, 2]
    front = depth > 1e-6
    safe = torch.where(front, depth, torch.ones_like(depth))
    u = camera.fx * points[:, 0] / safe + camera.cx
    v = camera.fy * points[:, 1] / safe + camera.cy
    distance2 = (u - x) ** 2 + (v - y) ** 2
    for _ in range(4):
        hit = front & (distance2 < radius * radius)
        if bool(hit.any()):
            z = float(torch.quantile(depth[hit].double(), 0.1)) if int(hit.sum()) > 1 else float(depth[hit][0])
            ray = torch.tensor([(x - camera.cx) / camera.fx * z, (y - camera.cy) / camera.fy * z, z], dtype=torch.float64)
            rotation, translation = camera.world_to_camera[:3, :3], camera.world_to_camera[:3, 3]
            return rotation.T @ (ray - translation)
        radius *= 2.0
    return None


def dolly(world_to_camera: torch.Tensor, target: Sequence[float], factor: float) -> torch.Tensor:
    """Move the camera towards (``factor`` < 1) or away from (> 1) ``target`` along the view."""
    pose = torch.as_tensor(world_to_camera, dtype=torch.float64).clone()
    target_cam = pose[:3, :3] @ torch.as_tensor(target, dtype=torch.float64) + pose[:3, 3]
    pose[:3, 3] -= target_cam * (1.0 - factor)  # the camera moves by (1 - factor) of the way
    return pose


def closest_camera(world_to_camera: torch.Tensor, cameras: Sequence[Camera]) -> int:
    """Index of the input camera whose centre is nearest the current camera centre (SIBR's
    "Snap to closest"); ties go to the lower index."""
    if not cameras:
        raise ValueError("there are no input cameras to snap to")
    pose = torch.as_tensor(world_to_camera, dtype=torch.float64)
    centre = -pose[:3, :3].T @ pose[:3, 3]
    distances = torch.stack([(cam.center - centre).norm() for cam in cameras])
    return int(torch.argmin(distances))
