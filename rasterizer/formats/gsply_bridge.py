"""Conversion between :class:`Gaussians` and gsply's ``GSData``.

gsply (MIT, https://github.com/OpsiClear/gsply) reads and writes SuperSplat's compressed PLY and
Niantic's SPZ for us. Its "PLY format" ``GSData`` holds exactly our raw parameters: means,
log-scales, (w, x, y, z) quaternions, opacity logits, ``sh0`` [N, 3] and ``shN`` [N, K-1, 3]
(coefficient-major, RGB last). gsply is imported only when one of those formats is used (its
import brings Numba, about a second).
"""

from __future__ import annotations

import numpy as np
import torch

from ..gaussians import Gaussians

__all__ = ["to_gsdata", "from_gsdata", "without_zero_bands"]

# Quantised opacities of exactly 0 or 1 decode to infinite logits in some readers; a finite
# logit whose sigmoid is within float32 rounding of 0 or 1 renders the same.
_LOGIT_LIMIT = 20.0


def without_zero_bands(gaussians: Gaussians) -> Gaussians:
    """``gaussians`` without their highest SH bands when those are exactly zero (a model saved
    before training raised its SH degree). Omitted bands decode as zero, while the quantised
    formats cannot store zero exactly (compressed PLY's nearest value is 1/64), so this is
    lossless and strictly more faithful."""
    degree = gaussians.sh_degree
    while degree > 0 and not bool(gaussians.sh_rest[:, degree * degree - 1:].any()):
        degree -= 1
    return gaussians if degree == gaussians.sh_degree else gaussians.with_sh_degree(degree)


def to_gsdata(gaussians: Gaussians):
    """A gsply ``GSData`` (PLY format, float32, on the CPU) of ``gaussians``."""
    from gsply import GSData  # noqa: PLC0415 - Numba only when a compressed format is used

    g = gaussians.detach().to("cpu", torch.float32)
    rest = g.sh_rest.numpy() if g.sh_rest.shape[1] else None
    return GSData.from_arrays(g.means.numpy(), g.log_scales.numpy(), g.quaternions.numpy(),
                              g.opacity_logits.numpy(), g.sh_dc[:, 0].numpy(), rest, format="ply")


def from_gsdata(data) -> Gaussians:
    """:class:`Gaussians` (float32, CPU) of a gsply ``GSData`` in PLY format."""
    n = len(data.means)

    def tensor(array, *shape: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32).reshape(*shape).copy())

    rest = data.shN
    rest = tensor(rest, n, -1, 3) if rest is not None and np.asarray(rest).size else torch.zeros(n, 0, 3)
    opacity = tensor(data.opacities, n)
    return Gaussians(
        means=tensor(data.means, n, 3),
        sh_dc=tensor(data.sh0, n, 1, 3),
        sh_rest=rest,
        opacity_logits=torch.nan_to_num(opacity, posinf=_LOGIT_LIMIT, neginf=-_LOGIT_LIMIT),
        log_scales=tensor(data.scales, n, 3),
        quaternions=tensor(data.quats, n, 4),
    )
