"""antimatter15's ``.splat``: 32-byte records, no header, SH degree 0 only.

Each record, little-endian::

    float32 x, y, z           position (world units)
    float32 sx, sy, sz        per-axis standard deviation (linear, not log)
    uint8   r, g, b, a        colour 0.5 + C0 * f_dc and sigmoid(opacity), times 255
    uint8   q0, q1, q2, q3    unit quaternion (w, x, y, z) as q * 128 + 128

Written by antimatter15's ``convert.py``, gsplat's ``export_splats(format="splat")`` and most web
viewers. No Python library on PyPI reads it correctly (GaussForge 0.6.0 fails with
``std::bad_cast`` on every file), so it is done here with numpy.

Writing rounds to the nearest byte (``convert.py`` and gsplat truncate; rounding halves the error
and decodes with the same formula) and orders the records as ``convert.py`` does, largest
``volume * opacity`` first, so that progressive web loaders show the big splats first.
Precision: colour and opacity within 0.5/255, quaternion components within 0.5/128; positions
and scales are exact float32. Higher SH coefficients are dropped.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..files import FileFormatError, atomic_write
from ..gaussians import Gaussians, inverse_sigmoid, rgb_to_sh_dc, sh_dc_to_rgb

__all__ = ["RECORD", "read_splat", "write_splat", "looks_like_splat"]

RECORD = np.dtype([("position", "<f4", (3,)), ("scale", "<f4", (3,)), ("rgba", "u1", (4,)),
                   ("rotation", "u1", (4,))])
assert RECORD.itemsize == 32

# A decoded opacity byte of 0 or 255 would be a logit of -inf or +inf: use the middle of the
# byte's rounding interval instead.
_OPACITY_FLOOR = 0.5 / 255.0


def looks_like_splat(path: str | os.PathLike, records: int = 1024) -> bool:
    """Whether ``path`` is plausibly a ``.splat`` file (it has no magic number): a size that is a
    whole number of records, and finite positions and positive finite scales in its first
    ``records`` records."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0 or size % RECORD.itemsize:
        return False
    with open(path, "rb") as stream:
        head = np.frombuffer(stream.read(records * RECORD.itemsize), dtype=RECORD)
    return bool(np.isfinite(head["position"]).all() and np.isfinite(head["scale"]).all()
                and (head["scale"] > 0).all())


def read_splat(path: str | os.PathLike) -> Gaussians:
    """Gaussians (SH degree 0) from a ``.splat`` file; ``FileFormatError`` naming the file and
    the first bad record otherwise."""
    path = Path(path)
    size = path.stat().st_size
    if size % RECORD.itemsize:
        raise FileFormatError(path, f"not a .splat file: its size ({size} bytes) is not a multiple of "
                                    f"{RECORD.itemsize}-byte records")
    records = np.fromfile(path, dtype=RECORD)
    positions = records["position"]
    scales = records["scale"]
    bad = ~(np.isfinite(positions).all(axis=1) & np.isfinite(scales).all(axis=1) & (scales > 0).all(axis=1))
    if bad.any():
        index = int(np.argmax(bad))
        raise FileFormatError(path, f"not a .splat file: record {index} has position {positions[index].tolist()} "
                                    f"and scale {scales[index].tolist()} (need finite values, positive scales)")
    rgba = torch.from_numpy(records["rgba"].astype(np.float32) / 255.0)
    rotation = torch.from_numpy((records["rotation"].astype(np.float32) - 128.0) / 128.0)
    degenerate = rotation.norm(dim=1) == 0     # all four bytes 128: no rotation stored
    rotation[degenerate] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    n = len(records)
    return Gaussians(
        means=torch.from_numpy(positions.copy()),
        sh_dc=rgb_to_sh_dc(rgba[:, :3]).reshape(n, 1, 3),
        sh_rest=torch.zeros(n, 0, 3),
        opacity_logits=inverse_sigmoid(rgba[:, 3].clamp(_OPACITY_FLOOR, 1.0 - _OPACITY_FLOOR)),
        log_scales=torch.log(torch.from_numpy(scales.copy())),
        quaternions=torch.nn.functional.normalize(rotation, dim=1),
    )


def write_splat(path: str | os.PathLike, gaussians: Gaussians) -> None:
    """Write ``gaussians`` as a ``.splat`` file, atomically (SH above degree 0 is dropped)."""
    g = gaussians.detach().to("cpu", torch.float32)
    importance = torch.exp(g.log_scales.sum(dim=1)) * g.opacities
    order = torch.argsort(-importance, stable=True)
    g = g.index(order)
    records = np.zeros(len(g), dtype=RECORD)
    records["position"] = g.means.numpy()
    records["scale"] = g.scales.numpy()
    rgba = torch.cat([sh_dc_to_rgb(g.sh_dc[:, 0]), g.opacities[:, None]], dim=1)
    records["rgba"] = _to_bytes(rgba * 255.0)
    records["rotation"] = _to_bytes(g.rotations * 128.0 + 128.0)
    with atomic_write(path) as stream:
        stream.write(records.tobytes())


def _to_bytes(values: torch.Tensor) -> np.ndarray:
    return torch.round(values).clamp(0, 255).to(torch.uint8).numpy()
