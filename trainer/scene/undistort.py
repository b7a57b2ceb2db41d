"""Lens undistortion for the OpenCV radial-tangential model (``k1 k2 p1 p2`` and optional ``k3``).

The output is a pinhole image with the *same* K and size as the input. For every output pixel
centre ``(u + 0.5, v + 0.5)`` (COLMAP convention: image corner at 0) the normalised pinhole
coordinates ``x = (u + 0.5 - cx) / fx``, ``y = (v + 0.5 - cy) / fy`` are pushed through the
distortion model, mapped back with K and the distorted image is sampled there bilinearly
(``torch.nn.functional.grid_sample``, ``align_corners=False``, whose -1/+1 are the outer pixel
edges, i.e. continuous positions 0 and W). Samples falling outside the distorted image repeat
its border pixels.

Distortion (OpenCV), with ``r2 = x^2 + y^2``::

    radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3
    x_d = x radial + 2 p1 x y + p2 (r2 + 2 x^2)
    y_d = y radial + p1 (r2 + 2 y^2) + 2 p2 x y
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Distortion", "distort_normalized", "undistort_image", "undistortion_grid"]


@dataclass(frozen=True)
class Distortion:
    """OpenCV radial-tangential coefficients (dimensionless, on normalised coordinates)."""

    k1: float = 0.0
    k2: float = 0.0
    p1: float = 0.0
    p2: float = 0.0
    k3: float = 0.0

    @property
    def is_identity(self) -> bool:
        return not any((self.k1, self.k2, self.p1, self.p2, self.k3))


def distort_normalized(x, y, d: Distortion):
    """Apply the distortion to normalised coordinates (numpy arrays or torch tensors)."""
    r2 = x * x + y * y
    radial = 1 + r2 * (d.k1 + r2 * (d.k2 + r2 * d.k3))
    xd = x * radial + 2 * d.p1 * x * y + d.p2 * (r2 + 2 * x * x)
    yd = y * radial + d.p1 * (r2 + 2 * y * y) + 2 * d.p2 * x * y
    return xd, yd


def undistortion_grid(width: int, height: int, fx: float, fy: float, cx: float, cy: float,
                      d: Distortion) -> torch.Tensor:
    """``grid_sample`` grid [1, H, W, 2] (float32): where each undistorted output pixel centre
    lies in the distorted image, in normalised [-1, 1] coordinates (align_corners=False)."""
    u = torch.arange(width, dtype=torch.float64) + 0.5
    v = torch.arange(height, dtype=torch.float64) + 0.5
    y, x = torch.meshgrid((v - cy) / fy, (u - cx) / fx, indexing="ij")
    xd, yd = distort_normalized(x, y, d)
    gx = 2.0 * (fx * xd + cx) / width - 1.0
    gy = 2.0 * (fy * yd + cy) / height - 1.0
    return torch.stack([gx, gy], dim=-1).unsqueeze(0).to(torch.float32)


def undistort_image(image: np.ndarray, fx: float, fy: float, cx: float, cy: float,
                    d: Distortion) -> np.ndarray:
    """Undistort an [H, W, C] image (uint8 or float) taken with intrinsics (fx, fy, cx, cy) in
    pixels at this image's size. Returns the same shape and dtype (uint8 rounded and clamped)."""
    if d.is_identity:
        return image
    height, width = image.shape[:2]
    grid = undistortion_grid(width, height, fx, fy, cx, cy, d)
    pixels = torch.from_numpy(np.array(image, dtype=np.float32))  # a writable float copy
    if pixels.ndim == 2:
        pixels = pixels.unsqueeze(-1)
    sampled = F.grid_sample(pixels.permute(2, 0, 1).unsqueeze(0), grid, mode="bilinear",
                            padding_mode="border", align_corners=False)[0].permute(1, 2, 0)
    if image.ndim == 2:
        sampled = sampled[..., 0]
    if image.dtype == np.uint8:
        return sampled.round().clamp(0, 255).to(torch.uint8).numpy()
    return sampled.numpy().astype(image.dtype, copy=False)
