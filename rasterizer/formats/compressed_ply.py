"""SuperSplat's (PlayCanvas's) compressed PLY, read and written with gsply.

Layout (binary little-endian PLY, about 16 bytes per Gaussian plus the SH bytes)::

    element chunk C      18 float: min/max x y z, min/max scale_0..2 (log), min/max r g b
    element vertex N     uint packed_position (11-10-11 bits of the chunk's box),
                         uint packed_rotation (2-bit index of the largest component + 3 x 10 bits),
                         uint packed_scale (11-10-11 bits), uint packed_color (8-8-8-8: r g b opacity)
    element sh N         uchar f_rest_0.. (channel-major as in the 3DGS PLY; byte = (v/8 + 0.5) * 256)

Gaussians are grouped in chunks of 256, each with its own bounds. Precision (the format's, what
gsply decodes): position within 1/2046 (x, z) or 1/1022 (y) of the chunk's extent, log-scale
likewise of the chunk's log-scale range, colour within 1/510 of the chunk's colour range,
opacity within 1/510, quaternion components within about 0.0007, higher SH within 1/64.
Files written by gsplat 1.5.3's ``export_splats(format="ply_compressed")`` read back to those
precisions (gsplat drops Gaussians with opacity below 1/255 and sorts them in Morton order).

We check the header here (so that a bad file gets a one-line error that says what is wrong);
gsply decodes and encodes.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from ..files import FileFormatError, atomic_write_bytes
from ..gaussians import Gaussians
from .gsply_bridge import from_gsdata, to_gsdata, without_zero_bands

__all__ = ["read_compressed_ply", "write_compressed_ply", "is_compressed_ply_header", "ply_header"]

CHUNK_SIZE = 256
_VERTEX_PROPERTIES = ["packed_position", "packed_rotation", "packed_scale", "packed_color"]
_SH_COUNTS = (0, 9, 24, 45)


def ply_header(path: str | os.PathLike, limit: int = 65536) -> tuple[list[str], int] | None:
    """(header lines without ``end_header``, byte offset of the data), or None when ``path``
    does not start with a PLY header."""
    with open(path, "rb") as stream:
        head = stream.read(limit)
    if not head.startswith(b"ply"):
        return None
    end = head.find(b"end_header")
    if end < 0:
        return None
    newline = head.find(b"\n", end)
    if newline < 0:
        return None
    lines = head[:end].decode("ascii", errors="replace").splitlines()
    return [line.strip() for line in lines if line.strip()], newline + 1


def _elements(lines: list[str]) -> list[tuple[str, int, list[tuple[str, str]]]]:
    """``(name, count, [(type, property name)])`` of each element, in file order."""
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    for line in lines:
        words = line.split()
        if words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            elements[-1][2].append((words[1], words[-1]))
    return elements


def is_compressed_ply_header(lines: list[str]) -> bool:
    """Whether PLY header ``lines`` describe a compressed PLY (a ``chunk`` element and packed
    vertex properties)."""
    elements = {name: properties for name, _, properties in _elements(lines)}
    return "chunk" in elements and any(name == "packed_position" for _, name in elements.get("vertex", []))


def _check(path: Path, lines: list[str], offset: int) -> None:
    """Raise ``FileFormatError`` unless the header is one gsply can decode and the data is complete."""
    if "format binary_little_endian 1.0" not in lines:
        raise FileFormatError(path, "compressed PLY is not binary little-endian")
    elements = _elements(lines)
    names = [name for name, _, _ in elements]
    if names not in (["chunk", "vertex"], ["chunk", "vertex", "sh"]):
        raise FileFormatError(path, f"compressed PLY elements are {names}, expected chunk, vertex[, sh]")
    (_, chunks, chunk_properties), (_, count, vertex_properties) = elements[:2]
    if len(chunk_properties) == 12:
        raise FileFormatError(path, "compressed PLY without colour bounds (12 chunk properties, an early "
                                    "SuperSplat version) is not supported; re-save it with SuperSplat")
    if len(chunk_properties) != 18 or any(kind not in ("float", "float32") for kind, _ in chunk_properties):
        raise FileFormatError(path, f"compressed PLY chunk has {len(chunk_properties)} properties, expected 18 floats")
    if [name for _, name in vertex_properties] != _VERTEX_PROPERTIES:
        raise FileFormatError(path, f"compressed PLY vertex properties are {[n for _, n in vertex_properties]}, "
                                    f"expected {_VERTEX_PROPERTIES}")
    if chunks != math.ceil(count / CHUNK_SIZE):
        raise FileFormatError(path, f"compressed PLY has {chunks} chunks for {count} Gaussians "
                                    f"(expected {math.ceil(count / CHUNK_SIZE)}, {CHUNK_SIZE} per chunk)")
    sh_bytes = 0
    if len(elements) == 3:
        _, sh_count, sh_properties = elements[2]
        if sh_count != count or len(sh_properties) not in _SH_COUNTS:
            raise FileFormatError(path, f"compressed PLY sh element has {sh_count} rows of {len(sh_properties)} "
                                        f"values (expected {count} rows of 9, 24 or 45)")
        sh_bytes = count * len(sh_properties)
    needed = offset + chunks * 18 * 4 + count * 16 + sh_bytes
    size = path.stat().st_size
    if size < needed:
        raise FileFormatError(path, f"truncated: the header announces {needed - offset} bytes of data "
                                    f"but only {size - offset} follow")


def read_compressed_ply(path: str | os.PathLike) -> Gaussians:
    """Gaussians from a compressed PLY; ``FileFormatError`` naming the file otherwise."""
    path = Path(path)
    header = ply_header(path)
    if header is None or not is_compressed_ply_header(header[0]):
        raise FileFormatError(path, "not a compressed PLY (no chunk element with packed vertices)")
    _check(path, *header)
    from gsply.reader import read_compressed  # noqa: PLC0415 - Numba only when needed

    data = read_compressed(path)
    if data is None:
        raise FileFormatError(path, "gsply could not decode this compressed PLY")
    return from_gsdata(data)


def morton_order(means: torch.Tensor, bits: int = 10) -> torch.Tensor:
    """Indices that sort ``means`` [N, 3] along a Z-order (Morton) curve over their bounding box,
    ``bits`` per axis: neighbours in space become neighbours in the file."""
    low, high = means.min(dim=0).values, means.max(dim=0).values
    cells = ((means - low) / (high - low).clamp_min(1e-12) * ((1 << bits) - 1)).round().long()
    code = torch.zeros(len(means), dtype=torch.long)
    for bit in range(bits):
        for axis in range(3):
            code |= ((cells[:, axis] >> bit) & 1) << (3 * bit + axis)
    return torch.argsort(code, stable=True)


def write_compressed_ply(path: str | os.PathLike, gaussians: Gaussians) -> None:
    """Write ``gaussians`` as a compressed PLY, atomically, with gsply's encoder.

    The Gaussians are first put in Morton order (as SuperSplat and gsplat do): each chunk of
    256 then covers a small box, and positions, quantised relative to it, come out much finer.
    """
    from gsply import compress_to_bytes  # noqa: PLC0415

    g = without_zero_bands(gaussians.detach().to("cpu", torch.float32))
    if len(g):
        g = g.index(morton_order(g.means))
    atomic_write_bytes(path, compress_to_bytes(to_gsdata(g)))
