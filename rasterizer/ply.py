"""PLY files: trained Gaussians (``point_cloud.ply``) and coloured point clouds (``input.ply``).

Writing is byte-compatible with the reference trainer and the SIBR viewer:

    ply
    format binary_little_endian 1.0
    element vertex N                      <- line 3, no comment lines (SIBR reads it positionally)
    property float x / y / z / nx / ny / nz / f_dc_0..2 / f_rest_0..3(K-1)-1 /
                   opacity / scale_0..2 / rot_0..3
    end_header

All float32, raw (pre-activation) values, normals zero, ``f_rest`` channel-major: property
``f_rest_{c*(K-1) + (k-1)}`` holds SH coefficient k of colour channel c.

Reading accepts any property order and type, SH degree 0-3 (inferred from the number of
``f_rest`` properties) and plain point clouds (x, y, z and optional red, green, blue), which are
turned into initial Gaussians as training would.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from .files import FileFormatError, atomic_write
from .gaussians import Gaussians
from .sh import sh_degree_from_coefficients

__all__ = ["read_ply", "read_ply_dropping_non_finite", "write_ply", "gaussian_ply_header", "read_point_cloud",
           "write_point_cloud", "PointCloud", "check_finite"]

_GAUSSIAN_KEYS = ("f_dc_0", "opacity", "scale_0", "rot_0")


def gaussian_property_names(sh_degree: int) -> list[str]:
    """Property names in the reference's order for a given SH degree."""
    rest_count = 3 * ((sh_degree + 1) ** 2 - 1)
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(rest_count)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def gaussian_ply_header(count: int, sh_degree: int) -> bytes:
    """The exact header the reference (via plyfile) writes."""
    lines = ["ply", "format binary_little_endian 1.0", f"element vertex {count}"]
    lines += [f"property float {name}" for name in gaussian_property_names(sh_degree)]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def write_ply(path: str | os.PathLike, gaussians: Gaussians) -> None:
    """Write ``gaussians`` as a reference-compatible PLY, atomically (write then rename)."""
    g = gaussians.detach()
    n = len(g)
    columns = [
        g.means.reshape(n, 3),
        torch.zeros(n, 3, dtype=g.means.dtype, device=g.device),
        g.sh_dc.reshape(n, 3),
        # [N, K-1, 3] -> [N, 3, K-1]: channel-major, as the reference flattens it.
        g.sh_rest.transpose(1, 2).reshape(n, 3 * g.sh_rest.shape[1]),  # explicit: n may be 0
        g.opacity_logits.reshape(n, 1),
        g.log_scales.reshape(n, 3),
        g.quaternions.reshape(n, 4),
    ]
    data = torch.cat([c.to(device="cpu", dtype=torch.float32) for c in columns], dim=1)
    payload = np.ascontiguousarray(data.numpy().astype("<f4", copy=False))
    with atomic_write(path) as stream:
        stream.write(gaussian_ply_header(n, g.sh_degree))
        stream.write(payload.tobytes())


_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


def _read_binary_vertices(path: Path) -> dict[str, np.ndarray] | None:
    """Fast path: the vertex table of a binary little-endian PLY whose first element is
    ``vertex`` with scalar properties, read with one ``np.frombuffer``. ``None`` when the file
    is of another kind (plyfile handles it then)."""
    with open(path, "rb") as stream:
        head = stream.read(65536)
    end = head.find(b"end_header\n")
    if not head.startswith(b"ply\n") or end < 0:
        return None
    lines = head[:end].decode("ascii", errors="replace").splitlines()
    if len(lines) < 2 or lines[1].strip() != "format binary_little_endian 1.0":
        return None
    fields: list[tuple[str, str]] = []
    count = None
    for line in lines[2:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "element":
            if count is not None:
                break  # later elements are not needed
            if words[1] != "vertex" or len(words) != 3:
                return None
            count = int(words[2])
        elif words[0] == "property" and count is not None:
            if len(words) != 3 or words[1] not in _PLY_TYPES:
                return None  # list properties: leave to plyfile
            fields.append((words[2], "<" + _PLY_TYPES[words[1]]))
    if count is None or not fields:
        return None
    dtype = np.dtype(fields)
    offset = end + len(b"end_header\n")
    available = path.stat().st_size - offset
    if available < count * dtype.itemsize:
        raise FileFormatError(path, f"truncated: the header announces {count} vertices "
                                    f"({count * dtype.itemsize} bytes) but only {available} bytes follow")
    with open(path, "rb") as stream:
        stream.seek(offset)
        raw = bytearray(count * dtype.itemsize)  # writable, so torch can wrap it without a copy
        stream.readinto(raw)
    if all(kind == "<f4" for _, kind in fields):
        # All-float32 (every Gaussian PLY): one [N, P] matrix; columns are views into it.
        matrix = np.frombuffer(raw, dtype="<f4").reshape(count, len(fields))
        return _MatrixTable(matrix, [name for name, _ in fields])
    records = np.frombuffer(raw, dtype=dtype, count=count)
    return {name: records[name] for name in dtype.names}


class _MatrixTable(dict):
    """Column dict over one float32 matrix, so that many columns are gathered in one pass."""

    def __init__(self, matrix: np.ndarray, names: list[str]):
        super().__init__((name, matrix[:, i]) for i, name in enumerate(names))
        self.matrix = matrix
        self.position = {name: i for i, name in enumerate(names)}


def _load_vertex_table(path: Path) -> dict[str, np.ndarray]:
    """Property name -> column array of the ``vertex`` element; clear errors for bad files."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such PLY file")
    try:
        table = _read_binary_vertices(path)
    except (ValueError, UnicodeDecodeError) as error:
        if isinstance(error, FileFormatError):
            raise
        table = None
    if table is not None:
        return table
    from plyfile import PlyData  # only for ASCII, big-endian and unusual layouts

    try:
        ply = PlyData.read(str(path))
    except Exception as error:  # plyfile raises several types for malformed data
        raise FileFormatError(path, f"not a readable PLY file ({error})") from error
    try:
        vertex = ply["vertex"]
    except KeyError:
        raise FileFormatError(path, "the PLY file has no 'vertex' element") from None
    data = vertex.data
    if data.dtype.names is None:
        raise FileFormatError(path, "the 'vertex' element has no scalar properties")
    return {name: np.asarray(data[name]) for name in data.dtype.names}


def _numbered(table: dict[str, np.ndarray], prefix: str) -> list[str]:
    """Names ``prefix<N>`` present in the table, sorted by N (any order in the file)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)$")
    found = [(int(m.group(1)), name) for name in table if (m := pattern.match(name))]
    return [name for _, name in sorted(found)]


def _stack(table: dict[str, np.ndarray], names: list[str], count: int) -> torch.Tensor:
    """float32 [count, len(names)] of the named columns."""
    if not names:
        return torch.zeros(count, 0)
    if isinstance(table, _MatrixTable):
        matrix = torch.from_numpy(table.matrix)
        columns = [table.position[n] for n in names]
        if columns == list(range(columns[0], columns[0] + len(columns))):
            return matrix[:, columns[0]: columns[0] + len(columns)].clone()  # the usual layout
        return matrix[:, columns]
    return torch.from_numpy(np.stack([table[n].astype(np.float32) for n in names], axis=1))


def read_ply(path: str | os.PathLike) -> Gaussians:
    """Read Gaussians from a PLY (reference layout, any property order, SH degree 0-3).

    A plain point cloud (no opacity/scale/rotation/SH properties) becomes initial Gaussians,
    as training would initialise them. Raises ``FileFormatError`` naming the file otherwise,
    also when a Gaussian has a NaN or infinite value in any property (viewers and renderers use
    :func:`read_ply_dropping_non_finite` instead).
    """
    path = Path(path)
    return check_finite(path, _read_gaussians(path), drop=False)[0]


def read_ply_dropping_non_finite(path: str | os.PathLike) -> tuple[Gaussians, str | None]:
    """:func:`read_ply` for viewers and renderers: Gaussians with a NaN or infinite value are
    left out (they would draw as garbage); the second value is a one-line note naming the file
    and how many went, or None. Still a ``FileFormatError`` when no Gaussian would be left."""
    path = Path(path)
    return check_finite(path, _read_gaussians(path), drop=True)


def _read_gaussians(path: Path) -> Gaussians:
    table = _load_vertex_table(path)
    if not all(key in table for key in ("x", "y", "z")):
        raise FileFormatError(path, "the vertex element lacks x, y, z properties")
    if not any(key in table for key in _GAUSSIAN_KEYS):
        cloud = _point_cloud_from_table(table)
        return Gaussians.from_points(cloud.xyz, cloud.rgb)
    missing = [k for k in ("f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1",
                           "scale_2", "rot_0", "rot_1", "rot_2", "rot_3") if k not in table]
    if missing:
        raise FileFormatError(path, f"Gaussian PLY lacks properties: {', '.join(missing)}")
    n = len(table["x"])
    rest_names = _numbered(table, "f_rest_")
    if len(rest_names) % 3 != 0:
        raise FileFormatError(path, f"{len(rest_names)} f_rest properties is not a multiple of 3")
    try:
        sh_degree_from_coefficients(len(rest_names) // 3 + 1)
    except ValueError:
        raise FileFormatError(path, f"{len(rest_names)} f_rest properties matches no SH degree 0-3 "
                                    "(expected 0, 9, 24 or 45)") from None
    rest = (_stack(table, rest_names, n).reshape(n, 3, len(rest_names) // 3)
            .transpose(1, 2).contiguous())
    gaussians = Gaussians(
        means=_stack(table, ["x", "y", "z"], n),
        sh_dc=_stack(table, ["f_dc_0", "f_dc_1", "f_dc_2"], n).reshape(n, 1, 3),
        sh_rest=rest,
        opacity_logits=_stack(table, ["opacity"], n).reshape(n),
        log_scales=_stack(table, _numbered(table, "scale_"), n),
        quaternions=_stack(table, _numbered(table, "rot_"), n),
    )
    return gaussians


_CHECKED = (("position", "means"), ("SH colour", "sh_dc"), ("SH", "sh_rest"), ("opacity", "opacity_logits"),
            ("scale", "log_scales"), ("rotation", "quaternions"))


def check_finite(path: Path, gaussians: Gaussians, drop: bool) -> tuple[Gaussians, str | None]:
    """(the Gaussians without those holding NaN/inf, a note saying how many went and where);
    raises FileFormatError unless ``drop`` (or when none would be left)."""
    n = len(gaussians)
    if n == 0:
        return gaussians, None
    bad = torch.zeros(n, dtype=torch.bool)
    counts = []
    for label, name in _CHECKED:
        values = getattr(gaussians, name).reshape(n, -1)
        rows = ~torch.isfinite(values).all(dim=1) if values.shape[1] else torch.zeros(n, dtype=torch.bool)
        if rows.any():
            counts.append(f"{label}: {int(rows.sum())}")
            bad |= rows
    if not bad.any():
        return gaussians, None
    problem = f"{int(bad.sum())} of {n} Gaussians with NaN or infinite values ({', '.join(counts)})"
    if not drop or bool(bad.all()):
        raise FileFormatError(path, problem)
    return gaussians.index(~bad), f"{path}: dropped {problem}"


class PointCloud:
    """A coloured point cloud: ``xyz`` [N, 3] float32 positions, ``rgb`` [N, 3] float32 in [0, 1]."""

    def __init__(self, xyz: np.ndarray, rgb: np.ndarray):
        self.xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
        self.rgb = np.asarray(rgb, dtype=np.float32).reshape(-1, 3)
        if len(self.xyz) != len(self.rgb):
            raise ValueError("PointCloud: xyz and rgb must have the same length")

    def __len__(self) -> int:
        return len(self.xyz)


def _point_cloud_from_table(table: dict[str, np.ndarray]) -> PointCloud:
    xyz = np.stack([table[k] for k in ("x", "y", "z")], axis=1).astype(np.float32)
    if all(k in table for k in ("red", "green", "blue")):
        rgb = np.stack([table[k] for k in ("red", "green", "blue")], axis=1).astype(np.float32)
        if np.issubdtype(table["red"].dtype, np.integer):
            rgb /= float(np.iinfo(table["red"].dtype).max)
    else:
        rgb = np.full_like(xyz, 0.5)
    return PointCloud(xyz, rgb)


def read_point_cloud(path: str | os.PathLike) -> PointCloud:
    """Positions and colours of any PLY with x, y, z (and optionally red, green, blue)."""
    path = Path(path)
    table = _load_vertex_table(path)
    if not all(key in table for key in ("x", "y", "z")):
        raise FileFormatError(path, "the vertex element lacks x, y, z properties")
    return _point_cloud_from_table(table)


def write_point_cloud(path: str | os.PathLike, cloud: PointCloud) -> None:
    """Write the reference's ``points3D.ply``/``input.ply`` layout: xyz, zero normals (float),
    red/green/blue (uchar), binary little-endian; atomically."""
    n = len(cloud)
    dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("nx", "<f4"), ("ny", "<f4"),
                      ("nz", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    records = np.zeros(n, dtype=dtype)
    for i, axis in enumerate("xyz"):
        records[axis] = cloud.xyz[:, i]
    colours = np.clip(np.round(cloud.rgb * 255.0), 0, 255).astype(np.uint8)
    for i, channel in enumerate(("red", "green", "blue")):
        records[channel] = colours[:, i]
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {a}" for a in ("x", "y", "z", "nx", "ny", "nz")]
    header += [f"property uchar {c}" for c in ("red", "green", "blue")]
    header.append("end_header")
    with atomic_write(path) as stream:
        stream.write(("\n".join(header) + "\n").encode("ascii"))
        stream.write(records.tobytes())
