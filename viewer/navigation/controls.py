"""Camera navigation as in SIBR's gaussian viewer: FPS keys, orbit/trackball drags, snapping.

Poses are 4x4 float64 world-to-camera matrices in OpenCV axes (x right, y down, z forward), the
convention of :class:`rasterizer.Camera`. Movements are expressed in the camera's own frame, so
"forward" is +z of the current view and "up" on screen is -y.

FPS keys (SIBR): W/S forward/back, A/D left/right, Q/E down/up (translation, ``speed`` world
units per second); I/K pitch up/down, J/L yaw left/right, U/O roll left/right (rotation,
``rotation_speed`` radians per second).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch

from rasterizer.camera import Camera

__all__ = ["TRANSLATION_KEYS", "ROTATION_KEYS", "fps_step", "orbit", "dolly", "closest_camera",
           "rotation_about"]

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


def orbit(world_to_camera: torch.Tensor, target: Sequence[float], yaw: float, pitch: float) -> torch.Tensor:
    """Turn the camera around the world point ``target`` (trackball/orbit drag).

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
