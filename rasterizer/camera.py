"""Pinhole cameras.

Conventions used everywhere in splatview:

* Camera axes are OpenCV/COLMAP: x right, y down, z forward (the camera looks down +z).
* ``world_to_camera`` is a 4x4 matrix in the column-vector convention: ``p_cam = W @ [p_world, 1]``.
  (The reference stores the transpose; we never do.)
* Intrinsics are in pixels and follow COLMAP: the image corner is at (0, 0) and the first
  pixel's centre is at (0.5, 0.5). A point at camera coordinates (x, y, z) lands on the
  continuous image position (fx*x/z + cx, fy*y/z + cy); the rasterizer indexes pixels by
  their centres, so pixel (i, j) is centred at continuous position (i + 0.5, j + 0.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

__all__ = ["Camera", "canvas_size", "focal_to_fov", "fov_to_focal", "look_at"]


def fov_to_focal(fov: float, pixels: float) -> float:
    """Focal length in pixels for a full field of view ``fov`` (radians) across ``pixels``."""
    return pixels / (2.0 * math.tan(fov / 2.0))


def focal_to_fov(focal: float, pixels: float) -> float:
    """Full field of view in radians for a focal length ``focal`` (pixels) across ``pixels``."""
    return 2.0 * math.atan(pixels / (2.0 * focal))


def _as_matrix(world_to_camera) -> torch.Tensor:
    matrix = torch.as_tensor(np.asarray(world_to_camera, dtype=np.float64) if not isinstance(
        world_to_camera, torch.Tensor) else world_to_camera.detach().cpu().double())
    if matrix.shape != (4, 4):
        raise ValueError(f"world_to_camera must be 4x4, got shape {tuple(matrix.shape)}")
    return matrix.to(torch.float64)


@dataclass(frozen=True, eq=False)  # identity equality: the pose is a tensor
class Camera:
    """A pinhole camera: image size, intrinsics in pixels and a world-to-camera pose.

    Attributes:
        width, height: image size in pixels.
        fx, fy: focal lengths in pixels.
        cx, cy: principal point in pixels, COLMAP convention (image corner at 0).
        world_to_camera: 4x4 float64 tensor, column-vector convention, OpenCV camera axes.
        image_name: optional name of the photo this camera belongs to (for outputs and logs).
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    world_to_camera: torch.Tensor
    image_name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        for name in ("fx", "fy", "cx", "cy"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "world_to_camera", _as_matrix(self.world_to_camera))
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera size must be positive, got {self.width}x{self.height}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")

    # ----- derived quantities -------------------------------------------------
    @property
    def fov_x(self) -> float:
        """Horizontal field of view in radians (from fx and the width)."""
        return focal_to_fov(self.fx, self.width)

    @property
    def fov_y(self) -> float:
        """Vertical field of view in radians (from fy and the height)."""
        return focal_to_fov(self.fy, self.height)

    @property
    def camera_to_world(self) -> torch.Tensor:
        """4x4 float64 inverse of ``world_to_camera``."""
        return torch.linalg.inv(self.world_to_camera)

    @property
    def center(self) -> torch.Tensor:
        """Camera centre in world coordinates, float64 [3]."""
        rotation = self.world_to_camera[:3, :3]
        translation = self.world_to_camera[:3, 3]
        return -rotation.T @ translation

    @property
    def intrinsics(self) -> torch.Tensor:
        """3x3 float64 calibration matrix K (COLMAP principal point convention)."""
        return torch.tensor([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]],
                            dtype=torch.float64)

    # ----- constructors and variants ------------------------------------------
    @classmethod
    def from_fov(cls, width: int, height: int, fov_x: float, fov_y: float | None,
                 world_to_camera, image_name: str = "") -> "Camera":
        """A centred camera (cx = W/2, cy = H/2) from fields of view in radians."""
        fx = fov_to_focal(fov_x, width)
        fy = fx if fov_y is None else fov_to_focal(fov_y, height)
        return cls(width, height, fx, fy, width / 2.0, height / 2.0, world_to_camera, image_name)

    def resized(self, width: int, height: int) -> "Camera":
        """The same camera at another image size; intrinsics scale with the image."""
        sx, sy = width / self.width, height / self.height
        return replace(self, width=width, height=height, fx=self.fx * sx, fy=self.fy * sy,
                       cx=self.cx * sx, cy=self.cy * sy)

    def with_pose(self, world_to_camera) -> "Camera":
        """The same intrinsics with another world-to-camera matrix."""
        return replace(self, world_to_camera=world_to_camera)


def look_at(eye, target, up=(0.0, 1.0, 0.0)) -> torch.Tensor:
    """World-to-camera matrix (OpenCV axes) for a camera at ``eye`` looking at ``target``.

    ``up`` is the world direction that should appear upwards in the image; since OpenCV's
    camera y axis points down, the camera's y axis is chosen opposite to it.
    """
    eye_t = torch.as_tensor(eye, dtype=torch.float64)
    forward = torch.as_tensor(target, dtype=torch.float64) - eye_t
    forward = forward / forward.norm()
    up_t = torch.as_tensor(up, dtype=torch.float64)
    right = torch.linalg.cross(forward, up_t)
    if not right.norm() > 1e-12:  # also catches NaN from eye == target
        raise ValueError("look_at: the up vector is parallel to the viewing direction")
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    rotation = torch.stack([right, down, forward])  # rows: camera axes in world coordinates
    matrix = torch.eye(4, dtype=torch.float64)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = -rotation @ eye_t
    return matrix


def canvas_size(cameras) -> tuple[int, int]:
    """(width, height) of the smallest canvas that holds each camera's image in its top-left
    corner: the largest width and the largest height. A batch of views of several sizes is
    drawn on it in one render (``rasterizer.cuda.render_for_training``, the multi-GPU exchange)."""
    return max(camera.width for camera in cameras), max(camera.height for camera in cameras)
