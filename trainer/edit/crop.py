"""The crop box: an oriented box in world space; Gaussians whose centre lies outside it go.

A box is its ``center`` (world units), ``size`` (full edge lengths along its own axes, world
units) and ``rotation`` (Euler angles in degrees, applied about the world x, then y, then z axis:
box-to-world ``R = Rz @ Ry @ Rx``). A world point p is inside when every component of
``R^T (p - center)`` is within half the size. The same three fields are the JSON file that
``splat-edit --crop BOX.json`` reads and the viewer's panel saves::

    {"center": [0.1, -0.2, 0.0], "size": [2.0, 1.5, 2.0], "rotation": [0.0, 30.0, 0.0]}
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rasterizer.files import FileFormatError, atomic_write_text, read_json
from rasterizer.gaussians import Gaussians

__all__ = ["CropBox", "euler_to_matrix", "matrix_to_euler"]


def euler_to_matrix(degrees) -> np.ndarray:
    """``Rz @ Ry @ Rx`` (float64 3x3) for angles (x, y, z) in degrees."""
    x, y, z = (math.radians(float(a)) for a in degrees)
    rx = np.array([[1, 0, 0], [0, math.cos(x), -math.sin(x)], [0, math.sin(x), math.cos(x)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(z), -math.sin(z), 0], [math.sin(z), math.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


def matrix_to_euler(matrix) -> tuple[float, float, float]:
    """Angles (x, y, z) in degrees with ``euler_to_matrix(angles) == matrix`` (a rotation);
    at gimbal lock (y = +-90 degrees) x is taken as 0."""
    m = np.asarray(matrix, dtype=np.float64)
    y = math.asin(max(-1.0, min(1.0, -m[2, 0])))
    if abs(m[2, 0]) < 1.0 - 1e-9:
        x = math.atan2(m[2, 1], m[2, 2])
        z = math.atan2(m[1, 0], m[0, 0])
    else:
        x = 0.0
        z = math.atan2(-m[0, 1], m[1, 1])
    return tuple(math.degrees(a) for a in (x, y, z))


def _triple(value, name: str, path) -> tuple[float, float, float]:
    if not (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        raise FileFormatError(path, f"'{name}' must be a list of three finite numbers, got {value!r}")
    return tuple(float(v) for v in value)


@dataclass(frozen=True)
class CropBox:
    """An oriented box; see the module docstring for the conventions."""

    center: tuple[float, float, float]
    size: tuple[float, float, float]
    rotation: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        values = (*self.center, *self.size, *self.rotation)
        if len(self.center) != 3 or len(self.size) != 3 or len(self.rotation) != 3:
            raise ValueError("CropBox center, size and rotation each need three numbers")
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"CropBox values must be finite: {self}")
        if min(self.size) <= 0:
            raise ValueError(f"CropBox size must be positive, got {self.size}")

    @property
    def matrix(self) -> np.ndarray:
        """Box-to-world rotation (float64 3x3); its columns are the box's axes in world space."""
        return euler_to_matrix(self.rotation)

    def contains(self, points: torch.Tensor) -> torch.Tensor:
        """Bool [N]: whether each world point [N, 3] lies inside (or on) the box."""
        rotation = torch.as_tensor(self.matrix, dtype=torch.float64, device=points.device)
        centre = torch.as_tensor(self.center, dtype=torch.float64, device=points.device)
        half = torch.as_tensor(self.size, dtype=torch.float64, device=points.device) / 2
        local = (points.detach().double() - centre) @ rotation   # R^T (p - c), row vectors
        return (local.abs() <= half).all(dim=1)

    def corners(self) -> np.ndarray:
        """The 8 corners in world space, float64 [8, 3]; corner i has local signs of bits
        (x: bit 0, y: bit 1, z: bit 2), so edges join corners one bit apart."""
        signs = np.array([[1 if i & 1 else -1, 1 if i & 2 else -1, 1 if i & 4 else -1] for i in range(8)], float)
        return np.asarray(self.center) + (signs * np.asarray(self.size) / 2) @ self.matrix.T

    def replace(self, **changes) -> "CropBox":
        """A copy with some fields changed (validated)."""
        values = {"center": self.center, "size": self.size, "rotation": self.rotation}
        values.update({k: tuple(float(x) for x in v) for k, v in changes.items()})
        return CropBox(**values)

    # ----- construction and files ---------------------------------------------------------------
    @classmethod
    def around(cls, gaussians: Gaussians, low: float = 0.01, high: float = 0.99, margin: float = 0.05) -> "CropBox":
        """An axis-aligned box around the bulk of the model: the ``low``..``high`` quantiles of
        the centres on each axis (each edge at least 5 % of the longest), widened by ``margin``
        of its size on each side."""
        means = gaussians.means.detach()
        if len(means) == 0:
            return cls((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        sample = means[:: max(1, len(means) // 200_000)].double().cpu()
        lower = torch.quantile(sample, low, dim=0)
        upper = torch.quantile(sample, high, dim=0)
        size = (upper - lower).clamp_min(1e-6)
        size = torch.maximum(size, 0.05 * size.max())   # a flat model still gets a box with depth
        centre = (lower + upper) / 2
        lower, upper = centre - (0.5 + margin) * size, centre + (0.5 + margin) * size
        return cls(tuple(((lower + upper) / 2).tolist()), tuple((upper - lower).tolist()))

    @classmethod
    def read(cls, path: str | os.PathLike) -> "CropBox":
        """A box from a JSON file; ``FileFormatError`` naming the file and the problem otherwise."""
        path = Path(path)
        entry = read_json(path, "no such crop box file")
        if not isinstance(entry, dict):
            raise FileFormatError(path, 'expected a JSON object {"center": [...], "size": [...], "rotation": [...]}')
        unknown = sorted(set(entry) - {"center", "size", "rotation"})
        if unknown:
            raise FileFormatError(path, f"unknown keys {unknown} (expected center, size, rotation)")
        for key in ("center", "size"):
            if key not in entry:
                raise FileFormatError(path, f"the crop box needs '{key}'")
        center = _triple(entry["center"], "center", path)
        size = _triple(entry["size"], "size", path)
        rotation = _triple(entry.get("rotation", [0, 0, 0]), "rotation", path)
        if min(size) <= 0:
            raise FileFormatError(path, f"'size' must be positive edge lengths, got {list(size)}")
        return cls(center, size, rotation)

    def write(self, path: str | os.PathLike) -> None:
        """Save as JSON (atomically), the format :meth:`read` takes."""
        atomic_write_text(path, json.dumps({"center": list(self.center), "size": list(self.size),
                                            "rotation": list(self.rotation)}, indent=2) + "\n")
