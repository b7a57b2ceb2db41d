"""Niantic's SPZ, read and written with gsply.

An SPZ file is a gzip stream (versions 1-3) or an ``NGSP`` container of zstd streams (version 4)
holding a 16-byte header (magic ``NGSP``, version, count, SH degree, fractional bits, flags) and
one section per attribute. We write version 3, the one every SPZ reader accepts, and read 1-4.

Precision (the format's): positions are 24-bit fixed point with ``fractional_bits`` bits after
the point (we use 12, 1/4096 world units, lowering it only when a position would not fit in
+-2^23 steps, which gsply would otherwise clip); log-scales within 1/32; colour (band 0) within
0.5 / (0.15 * 255) of the coefficient; opacity within 0.5/255; quaternions as smallest-three
with 9 bits plus sign; higher SH coefficients within 1/256 (gsply keeps 8 bits where Niantic's
encoder drops to 5 and 4), clipped to [-1, 1).

Coordinates are stored as given, without turning our (OpenCV, RDF) axes into SPZ's nominal RUB:
Niantic's own ``ply_to_spz``, gsply and GaussForge do the same, so a 3DGS PLY keeps its
orientation through any of them.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import torch

from ..files import FileFormatError, atomic_path
from ..gaussians import Gaussians
from .gsply_bridge import from_gsdata, to_gsdata, without_zero_bands

__all__ = ["read_spz", "write_spz", "is_spz", "fractional_bits_for"]

MAGIC = b"NGSP"
VERSION = 3
FRACTIONAL_BITS = 12
_POSITION_STEPS = (1 << 23) - 1      # 24-bit signed fixed point


def is_spz(head: bytes, path: str | os.PathLike) -> bool:
    """Whether a file starting with ``head`` is an SPZ (an NGSP container, or gzip holding one)."""
    if head[:4] == MAGIC:
        return True
    if head[:2] != b"\x1f\x8b":
        return False
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read(4) == MAGIC
    except (OSError, EOFError, zlib.error):
        return False


def fractional_bits_for(means: torch.Tensor) -> int:
    """The most fractional bits (at most 12) with which every position fits in SPZ's 24 bits."""
    largest = float(means.abs().max()) if len(means) else 0.0
    bits = FRACTIONAL_BITS
    while bits > 1 and largest * (1 << bits) > _POSITION_STEPS:
        bits -= 1
    if largest * (1 << bits) > _POSITION_STEPS:
        raise ValueError(f"positions up to {largest:g} do not fit SPZ's 24-bit fixed point")
    return bits


def read_spz(path: str | os.PathLike) -> Gaussians:
    """Gaussians from an SPZ file (versions 1-4); ``FileFormatError`` naming the file otherwise."""
    path = Path(path)
    from gsply import read_spz as gsply_read_spz  # noqa: PLC0415 - Numba only when needed

    try:
        data = gsply_read_spz(path)
    except (ValueError, OSError, EOFError, zlib.error, struct.error, IndexError) as error:
        problem = str(error).replace(f": {path}", "") or type(error).__name__
        raise FileFormatError(path, f"not a readable SPZ file ({problem})") from None
    return from_gsdata(data)


def write_spz(path: str | os.PathLike, gaussians: Gaussians) -> None:
    """Write ``gaussians`` as an SPZ (version 3), atomically."""
    from gsply import write_spz as gsply_write_spz  # noqa: PLC0415

    g = without_zero_bands(gaussians.detach().to("cpu", torch.float32))
    bits = fractional_bits_for(g.means)
    with atomic_path(path) as temporary:
        gsply_write_spz(temporary, to_gsdata(g), version=VERSION, fractional_bits=bits)
