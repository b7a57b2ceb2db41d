"""Gaussian model files in the formats other tools use, detected by their content.

==================  ==================================  ==========  ===========================
format name         what                                lossless?   read / written by
==================  ==================================  ==========  ===========================
``ply``             the 3DGS PLY (graphdeco, SIBR)      yes         ``rasterizer/ply.py``
``compressed-ply``  SuperSplat/PlayCanvas compressed    no          gsply (``compressed_ply.py``)
``splat``           antimatter15's ``.splat``           no, SH 0    ours (``splat.py``)
``spz``             Niantic's ``.spz``                  no          gsply (``spz.py``)
==================  ==================================  ==========  ===========================

:func:`read_gaussians` looks at the bytes, not the name: ``ply`` starts with a ``ply`` header
(compressed when it has a ``chunk`` element of packed vertices), ``spz`` with gzip holding
``NGSP`` (or ``NGSP`` itself), and ``splat``, which has no header, is a whole number of
32-byte records with finite positions and positive scales. :func:`write_gaussians` writes
atomically (a temporary file renamed over the target). Each module states its precision.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..files import FileFormatError
from ..gaussians import Gaussians
from ..ply import check_finite, read_ply, read_ply_dropping_non_finite, write_ply
from .compressed_ply import is_compressed_ply_header, ply_header, read_compressed_ply, write_compressed_ply
from .splat import looks_like_splat, read_splat, write_splat
from .spz import is_spz, read_spz, write_spz

__all__ = ["FORMATS", "SUFFIXES", "detect_format", "format_from_suffix", "read_gaussians",
           "read_gaussians_dropping_non_finite",
           "write_gaussians"]

FORMATS = ("ply", "compressed-ply", "splat", "spz")
# The usual file name endings (SuperSplat names its compressed files *.compressed.ply).
SUFFIXES = {"ply": ".ply", "compressed-ply": ".compressed.ply", "splat": ".splat", "spz": ".spz"}

_READERS = {"ply": read_ply, "compressed-ply": read_compressed_ply, "splat": read_splat, "spz": read_spz}
_WRITERS = {"ply": write_ply, "compressed-ply": write_compressed_ply, "splat": write_splat, "spz": write_spz}


def detect_format(path: str | os.PathLike) -> str:
    """The format of the file at ``path`` (one of ``FORMATS``), from its content.

    Raises ``FileNotFoundError``, or ``FileFormatError`` naming the file when it is none of them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as stream:
        head = stream.read(16)
    if not head:
        raise FileFormatError(path, "the file is empty")
    if head.startswith(b"ply"):
        header = ply_header(path)
        if header is None:
            raise FileFormatError(path, "a PLY header without end_header in its first 64 KiB")
        return "compressed-ply" if is_compressed_ply_header(header[0]) else "ply"
    if is_spz(head, path):
        return "spz"
    if path.suffix.lower() == ".splat" or looks_like_splat(path):
        return "splat"   # no magic number: read_splat checks every record
    raise FileFormatError(path, "not a Gaussian model: expected a PLY, a compressed PLY, an SPZ "
                                "or a .splat file")


def format_from_suffix(path: str | os.PathLike) -> str | None:
    """The format a file name asks for (``x.compressed.ply`` -> ``compressed-ply``), or None."""
    name = Path(path).name.lower()
    for format_name in ("compressed-ply", "ply", "splat", "spz"):   # the longer ending first
        if name.endswith(SUFFIXES[format_name]):
            return format_name
    return None


def read_gaussians(path: str | os.PathLike) -> Gaussians:
    """Gaussians from a file in any of ``FORMATS`` (detected by content); a plain point-cloud PLY
    gives initial Gaussians as :func:`rasterizer.read_ply` does. A NaN or infinite value in any
    Gaussian is a ``FileFormatError`` (see :func:`read_gaussians_dropping_non_finite`)."""
    path = Path(path)
    kind = detect_format(path)
    gaussians = _READERS[kind](path)
    return gaussians if kind == "ply" else check_finite(path, gaussians, drop=False)[0]


def read_gaussians_dropping_non_finite(path: str | os.PathLike) -> tuple[Gaussians, str | None]:
    """:func:`read_gaussians` for viewers and renderers: Gaussians holding a NaN or infinite value
    are left out (they would draw as garbage); the second value is a one-line note naming the
    file and how many went, or None."""
    path = Path(path)
    kind = detect_format(path)
    if kind == "ply":
        return read_ply_dropping_non_finite(path)
    return check_finite(path, _READERS[kind](path), drop=True)


def write_gaussians(path: str | os.PathLike, gaussians: Gaussians, format: str = "ply") -> None:
    """Write ``gaussians`` to ``path`` in ``format`` (one of ``FORMATS``), atomically."""
    if format not in _WRITERS:
        raise ValueError(f"unknown format {format!r}: expected one of {', '.join(FORMATS)}")
    _WRITERS[format](path, gaussians)
