"""The Gaussians container: raw (pre-activation) parameters, as stored in the reference's PLY.

Shapes for N Gaussians with SH degree D (K = (D+1)^2 coefficients per colour channel):

* ``means``          [N, 3]    world positions.
* ``sh_dc``          [N, 1, 3] SH band-0 coefficient per RGB channel (colour = 0.5 + C0 * sh_dc).
* ``sh_rest``        [N, K-1, 3] higher SH coefficients, coefficient-major, RGB last.
* ``opacity_logits`` [N]       opacity before the sigmoid.
* ``log_scales``     [N, 3]    log of the per-axis standard deviations (local rotated axes).
* ``quaternions``    [N, 4]    unnormalised rotation quaternions, order (w, x, y, z).

The tensors may be leaf tensors that require grad; nothing here copies them needlessly.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from .sh import SH_C0, num_sh_coefficients, sh_degree_from_coefficients

__all__ = ["Gaussians", "rgb_to_sh_dc", "sh_dc_to_rgb", "inverse_sigmoid"]


def rgb_to_sh_dc(rgb: torch.Tensor) -> torch.Tensor:
    """SH band-0 coefficient whose evaluated colour is ``rgb`` (the +0.5 offset undone)."""
    return (rgb - 0.5) / SH_C0


def sh_dc_to_rgb(sh_dc: torch.Tensor) -> torch.Tensor:
    """View-independent colour of a band-0 coefficient."""
    return sh_dc * SH_C0 + 0.5


def inverse_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """logit(x) = log(x / (1 - x))."""
    return torch.log(x / (1.0 - x))


@dataclass
class Gaussians:
    """Raw Gaussian parameters; see the module docstring for shapes and conventions."""

    means: torch.Tensor
    sh_dc: torch.Tensor
    sh_rest: torch.Tensor
    opacity_logits: torch.Tensor
    log_scales: torch.Tensor
    quaternions: torch.Tensor

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        expected = {
            "means": (n, 3), "sh_dc": (n, 1, 3), "opacity_logits": (n,),
            "log_scales": (n, 3), "quaternions": (n, 4),
        }
        for name, shape in expected.items():
            actual = tuple(getattr(self, name).shape)
            if actual != shape:
                raise ValueError(f"Gaussians.{name} must have shape {shape}, got {actual}")
        rest = tuple(self.sh_rest.shape)
        if len(rest) != 3 or rest[0] != n or rest[2] != 3:
            raise ValueError(f"Gaussians.sh_rest must have shape ({n}, K-1, 3), got {rest}")
        sh_degree_from_coefficients(rest[1] + 1)  # validates K

    # ----- size and SH --------------------------------------------------------
    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        """Highest SH degree stored (0-3)."""
        return sh_degree_from_coefficients(self.sh_rest.shape[1] + 1)

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    # ----- activations --------------------------------------------------------
    @property
    def sh(self) -> torch.Tensor:
        """All SH coefficients [N, K, 3] (DC first)."""
        return torch.cat([self.sh_dc, self.sh_rest], dim=1)

    @property
    def opacities(self) -> torch.Tensor:
        """Opacity in [0, 1], [N]."""
        return torch.sigmoid(self.opacity_logits)

    @property
    def scales(self) -> torch.Tensor:
        """Per-axis standard deviations in world units, [N, 3]."""
        return torch.exp(self.log_scales)

    @property
    def rotations(self) -> torch.Tensor:
        """Unit quaternions (w, x, y, z), [N, 4]."""
        return torch.nn.functional.normalize(self.quaternions, dim=-1)

    # ----- construction and conversion ---------------------------------------
    @classmethod
    def empty(cls, sh_degree: int = 3, device: torch.device | str = "cpu") -> "Gaussians":
        """Zero Gaussians of the given SH degree."""
        k = num_sh_coefficients(sh_degree)
        z = lambda *shape: torch.zeros(*shape, device=device)  # noqa: E731
        return cls(z(0, 3), z(0, 1, 3), z(0, k - 1, 3), z(0), z(0, 3), z(0, 4))

    @classmethod
    def from_points(cls, xyz, rgb, sh_degree: int = 3, initial_opacity: float = 0.1,
                    device: torch.device | str = "cpu") -> "Gaussians":
        """Initial Gaussians from a coloured point cloud, as the reference initialises training.

        ``xyz`` [N, 3] positions, ``rgb`` [N, 3] colours in [0, 1]. Each Gaussian is isotropic with
        a scale equal to the root of the mean squared distance to its 3 nearest neighbours
        (exact k-NN; the reference's simple-knn is approximate), identity rotation and opacity
        ``initial_opacity``; higher SH coefficients are zero.
        """
        xyz_np = np.asarray(xyz, dtype=np.float64)
        mean_sq_dist = mean_squared_knn_distance(xyz_np, k=3)
        xyz_t = torch.as_tensor(xyz_np, dtype=torch.float32)
        rgb_t = torch.as_tensor(np.asarray(rgb, dtype=np.float32))
        n = xyz_t.shape[0]
        k = num_sh_coefficients(sh_degree)
        log_scales = torch.log(torch.sqrt(torch.as_tensor(mean_sq_dist, dtype=torch.float32)))
        quaternions = torch.zeros(n, 4)
        quaternions[:, 0] = 1.0
        opacity = inverse_sigmoid(torch.full((n,), initial_opacity, dtype=torch.float32))
        gaussians = cls(
            means=xyz_t,
            sh_dc=rgb_to_sh_dc(rgb_t).reshape(n, 1, 3),
            sh_rest=torch.zeros(n, k - 1, 3),
            opacity_logits=opacity,
            log_scales=log_scales[:, None].repeat(1, 3),
            quaternions=quaternions,
        )
        return gaussians.to(device)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Gaussians":
        """A copy on another device and/or floating dtype (no grad tracking is kept)."""
        return Gaussians(**{f.name: getattr(self, f.name).detach().to(device=device, dtype=dtype)
                            for f in fields(self)})

    def detach(self) -> "Gaussians":
        return Gaussians(**{f.name: getattr(self, f.name).detach() for f in fields(self)})

    def clone(self) -> "Gaussians":
        return Gaussians(**{f.name: getattr(self, f.name).detach().clone() for f in fields(self)})

    def index(self, selection: torch.Tensor) -> "Gaussians":
        """The Gaussians picked by a boolean mask or an index tensor."""
        return Gaussians(**{f.name: getattr(self, f.name)[selection] for f in fields(self)})

    def with_sh_degree(self, sh_degree: int) -> "Gaussians":
        """Truncate or zero-pad the SH coefficients to ``sh_degree``."""
        k = num_sh_coefficients(sh_degree)
        rest = self.sh_rest
        if rest.shape[1] >= k - 1:
            rest = rest[:, : k - 1]
        else:
            pad = rest.new_zeros(len(self), k - 1 - rest.shape[1], 3)
            rest = torch.cat([rest, pad], dim=1)
        return Gaussians(self.means, self.sh_dc, rest, self.opacity_logits, self.log_scales,
                         self.quaternions)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Name -> tensor, in declaration order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def mean_squared_knn_distance(points: np.ndarray, k: int = 3, floor: float = 1e-7) -> np.ndarray:
    """Mean squared distance from each point to its ``k`` nearest other points, at least ``floor``.

    Exact, using scipy's KD-tree (about a second for a million points). Duplicate points give
    distance 0 and are lifted to ``floor`` as in the reference.
    """
    from scipy.spatial import cKDTree

    n = points.shape[0]
    if n == 0:
        return np.zeros(0)
    if n == 1:
        return np.full(1, floor)
    neighbours = min(k, n - 1)
    tree = cKDTree(points)
    distances, _ = tree.query(points, k=neighbours + 1, workers=-1)
    mean_sq = np.mean(distances[:, 1:] ** 2, axis=1)
    return np.maximum(mean_sq, floor)
