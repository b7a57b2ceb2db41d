"""Floater rules: which Gaussians a cleanup of a given strength removes, and why.

Four rules, each a test on one per-Gaussian statistic, all driven by one ``strength`` in [0, 1]
(0 removes nothing; the viewer's slider and ``splat-edit --remove-floaters`` use the same scale):

=============  ===============================================  =================================
rule           removes a Gaussian when                          threshold at strength s (0 < s)
=============  ===============================================  =================================
``opacity``    its opacity is below a minimum                   0.1 s (0.05 at s = 0.5)
``oversize``   its largest standard deviation exceeds a         0.1 * 5^-s of the scene size
               fraction of the scene size                       (0.045 at s = 0.5, 0.02 at 1)
``isolated``   fewer than m other centres lie within a          m = ceil(8 s); radius 3 x the
               radius (scipy's cKDTree)                         model's median 4th-neighbour
                                                                distance
``unseen``     no input camera sees its centre (in front of     any s > 0; skipped without
               the camera, z > 0.2, and inside the image)       cameras
=============  ===============================================  =================================

The scene size is a robust diameter of the model: twice the 90 % quantile of the centres'
distances from their median. Statistics are computed once per model (:meth:`prepare`; the
neighbour search takes a few seconds for a million Gaussians), so moving the strength only
re-thresholds. The ``unseen`` rule does not test occlusion, only the cameras' view frusta.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from rasterizer.camera import Camera
from rasterizer.gaussians import Gaussians

__all__ = ["RULES", "FloaterThresholds", "FloaterAnalysis", "scene_size"]

RULES = ("opacity", "oversize", "isolated", "unseen")
MAX_NEIGHBOURS = 8          # m at strength 1
RADIUS_NEIGHBOUR = 4        # the radius is a multiple of the median distance to this neighbour
RADIUS_FACTOR = 3.0
NEAR = 0.2                  # the reference's frustum test (in_frustum) culls view z <= 0.2


def scene_size(means: torch.Tensor) -> float:
    """A robust diameter of the centres (world units): twice the 90 % quantile of their distance
    from the median centre."""
    if len(means) == 0:
        return 1.0
    sample = means.detach()[:: max(1, len(means) // 200_000)].double().cpu()
    distance = (sample - sample.median(dim=0).values).norm(dim=1)
    return max(2.0 * float(torch.quantile(distance, 0.9)), 1e-9)


@dataclass(frozen=True)
class FloaterThresholds:
    """The thresholds of one strength (see the module docstring); ``None``: rule off."""

    strength: float
    min_opacity: float | None
    max_size: float | None          # world units (a standard deviation)
    min_neighbours: int | None
    radius: float                   # world units
    min_views: int | None

    def describe(self) -> dict[str, str]:
        """Rule -> what it removes, in words (for the panel and the command line)."""
        return {
            "opacity": f"opacity < {self.min_opacity:.3f}" if self.min_opacity is not None else "off",
            "oversize": f"larger than {self.max_size:.4g}" if self.max_size is not None else "off",
            "isolated": (f"fewer than {self.min_neighbours} neighbours within {self.radius:.4g}"
                         if self.min_neighbours is not None else "off"),
            "unseen": "seen by no input camera" if self.min_views is not None else "off (no cameras)",
        }


class FloaterAnalysis:
    """Per-Gaussian statistics of one model and the rules' masks for any strength.

    Args:
        gaussians: the model (any device; statistics are kept on the CPU).
        cameras: the input cameras for the ``unseen`` rule ([] turns the rule off).
    """

    def __init__(self, gaussians: Gaussians, cameras: Sequence[Camera] = ()):
        g = gaussians.detach().to("cpu", torch.float32)
        self.count = len(g)
        self.means = g.means
        self.opacity = g.opacities
        self.size = g.scales.max(dim=1).values if len(g) else torch.zeros(0)
        self.scene_size = scene_size(g.means)
        self.cameras = list(cameras)
        self.neighbour_distance: torch.Tensor | None = None   # [N, MAX_NEIGHBOURS], distance to the k-th
        self.radius = 0.0
        self.views: torch.Tensor | None = None                # [N] cameras seeing each centre
        self._preparing = threading.Lock()   # the viewer prepares in a thread; callers wait for it

    # ----- statistics ----------------------------------------------------------------------------
    def prepare(self) -> "FloaterAnalysis":
        """Compute the neighbour distances and the camera counts (once; safe to call again and
        from several threads: later callers wait for the first)."""
        with self._preparing:
            if self.views is None and self.cameras:
                self.views = self._views()
            if self.neighbour_distance is None:
                self.neighbour_distance, self.radius = self._neighbours()
        return self

    @property
    def ready(self) -> bool:
        """Whether :meth:`prepare` has finished (the masks of a strength > 0 then cost nothing)."""
        return self.neighbour_distance is not None

    def _neighbours(self) -> tuple[torch.Tensor, float]:
        from scipy.spatial import cKDTree  # noqa: PLC0415

        n = self.count
        if n < 2:
            return torch.full((n, MAX_NEIGHBOURS), math.inf), 0.0
        k = min(MAX_NEIGHBOURS, n - 1)
        distance, _ = cKDTree(self.means.numpy()).query(self.means.numpy(), k=k + 1, workers=-1)
        distance = np.asarray(distance, dtype=np.float64)[:, 1:]   # column 0 is the point itself
        if k < MAX_NEIGHBOURS:
            distance = np.concatenate([distance, np.full((n, MAX_NEIGHBOURS - k), np.inf)], axis=1)
        column = min(RADIUS_NEIGHBOUR, k) - 1
        radius = RADIUS_FACTOR * float(np.median(distance[:, column]))
        return torch.from_numpy(distance), radius

    def _views(self) -> torch.Tensor:
        """How many cameras have each centre in front (z > NEAR) and inside their image."""
        means = self.means.double()
        seen = torch.zeros(self.count, dtype=torch.int32)
        for camera in self.cameras:
            view = means @ camera.world_to_camera[:3, :3].T.double() + camera.world_to_camera[:3, 3].double()
            z = view[:, 2]
            safe_z = z.clamp_min(NEAR)
            u = camera.fx * view[:, 0] / safe_z + camera.cx
            v = camera.fy * view[:, 1] / safe_z + camera.cy
            seen += ((z > NEAR) & (u >= 0) & (u < camera.width) & (v >= 0) & (v < camera.height)).int()
        return seen

    # ----- rules ---------------------------------------------------------------------------------
    def thresholds(self, strength: float) -> FloaterThresholds:
        """The rules' thresholds at ``strength`` in [0, 1] (0: every rule off)."""
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        on = strength > 0
        return FloaterThresholds(
            strength=strength,
            min_opacity=0.1 * strength if on else None,
            max_size=0.1 * 5.0 ** -strength * self.scene_size if on else None,
            min_neighbours=math.ceil(MAX_NEIGHBOURS * strength) if on else None,
            radius=self.radius,
            min_views=1 if on and self.cameras else None,
        )

    def masks(self, strength: float) -> dict[str, torch.Tensor]:
        """Rule -> bool [N], True where that rule alone removes the Gaussian."""
        if strength > 0:
            self.prepare()
        t = self.thresholds(strength)
        nothing = torch.zeros(self.count, dtype=torch.bool)
        masks = {
            "opacity": self.opacity < t.min_opacity if t.min_opacity is not None else nothing,
            "oversize": self.size > t.max_size if t.max_size is not None else nothing,
            "isolated": (self.neighbour_distance[:, t.min_neighbours - 1] > t.radius
                         if t.min_neighbours is not None else nothing),
            "unseen": self.views < t.min_views if t.min_views is not None else nothing,
        }
        return masks

    def removed(self, strength: float) -> torch.Tensor:
        """Bool [N]: removed by any rule at ``strength``."""
        result = torch.zeros(self.count, dtype=torch.bool)
        for mask in self.masks(strength).values():
            result |= mask
        return result
