"""Real spherical harmonics up to degree 3, with the reference's constants and sign conventions.

Coefficients are stored [..., K, 3]: K = (degree+1)^2 basis functions, RGB last. The basis is
evaluated at the unit view direction from the camera centre to the Gaussian (world frame).
"""

from __future__ import annotations

import torch

__all__ = ["SH_C0", "SH_C1", "SH_C2", "SH_C3", "num_sh_coefficients",
           "sh_degree_from_coefficients", "sh_basis", "eval_sh", "sh_to_rgb"]

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005,
         -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def num_sh_coefficients(degree: int) -> int:
    """K = (degree + 1)^2 for degree 0-3."""
    if degree not in (0, 1, 2, 3):
        raise ValueError(f"SH degree must be 0, 1, 2 or 3, got {degree}")
    return (degree + 1) ** 2


def sh_degree_from_coefficients(count: int) -> int:
    """The degree whose (degree+1)^2 equals ``count``."""
    for degree in range(4):
        if (degree + 1) ** 2 == count:
            return degree
    raise ValueError(f"{count} SH coefficients per channel is not (d+1)^2 for a degree d in 0..3")


def sh_basis(directions: torch.Tensor, degree: int) -> torch.Tensor:
    """Basis values [..., (degree+1)^2] at unit ``directions`` [..., 3]."""
    x, y, z = directions.unbind(-1)
    terms = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        terms += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        terms += [SH_C2[0] * xy, SH_C2[1] * yz, SH_C2[2] * (2.0 * zz - xx - yy),
                  SH_C2[3] * xz, SH_C2[4] * (xx - yy)]
    if degree >= 3:
        terms += [SH_C3[0] * y * (3.0 * xx - yy), SH_C3[1] * xy * z,
                  SH_C3[2] * y * (4.0 * zz - xx - yy), SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
                  SH_C3[4] * x * (4.0 * zz - xx - yy), SH_C3[5] * z * (xx - yy),
                  SH_C3[6] * x * (xx - 3.0 * yy)]
    return torch.stack(terms, dim=-1)


def eval_sh(coefficients: torch.Tensor, directions: torch.Tensor, degree: int) -> torch.Tensor:
    """Sum of the first (degree+1)^2 coefficients [..., K, 3] against the basis; returns [..., 3]."""
    k = num_sh_coefficients(degree)
    basis = sh_basis(directions, degree)
    return torch.einsum("...k,...kc->...c", basis, coefficients[..., :k, :])


def sh_to_rgb(coefficients: torch.Tensor, directions: torch.Tensor, degree: int) -> torch.Tensor:
    """Colour as the reference computes it: max(0, SH(dir) + 0.5), no upper clamp."""
    return torch.clamp_min(eval_sh(coefficients, directions, degree) + 0.5, 0.0)
