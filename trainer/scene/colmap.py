"""COLMAP sparse models: ``cameras``, ``images`` and ``points3D`` in binary or text form.

Pure readers returning plain data classes; no image I/O and no pose conventions beyond
COLMAP's own (``R_w2c = quat(qw, qx, qy, qz)``, ``p_cam = R_w2c @ p_world + t``, OpenCV axes,
pixel corner at 0). Binary files are little-endian, as COLMAP writes them::

    cameras.bin   u64 count; per camera: i32 id, i32 model_id, u64 width, u64 height, f64[params]
    images.bin    u64 count; per image: i32 id, f64 qw qx qy qz, f64 tx ty tz, i32 camera_id,
                  NUL-terminated name, u64 n2d, n2d x (f64 x, f64 y, i64 point3D_id)
    points3D.bin  u64 count; per point: u64 id, f64 xyz[3], u8 rgb[3], f64 error, u64 track_len,
                  track_len x (i32 image_id, i32 point2D_idx)

Malformed files raise :class:`rasterizer.files.FileFormatError` naming the file; missing
ones raise :class:`FileNotFoundError` with the path.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rasterizer.files import FileFormatError
from rasterizer.ply import PointCloud

__all__ = ["CAMERA_MODELS", "ColmapCamera", "ColmapImage", "UnsupportedCameraModelError",
           "find_model_folder", "read_cameras", "read_images", "read_points3d",
           "read_cameras_binary", "read_cameras_text", "read_images_binary", "read_images_text",
           "read_points3d_binary", "read_points3d_text", "quaternion_to_rotation"]

# model id -> (name, number of parameters), as in COLMAP's src/colmap/sensor/models.h.
CAMERA_MODELS: dict[int, tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}
_MODEL_BY_NAME = {name: (model_id, count) for model_id, (name, count) in CAMERA_MODELS.items()}
PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")


class UnsupportedCameraModelError(FileFormatError):
    """A valid camera whose model has lens distortion (or is otherwise not a pinhole)."""


@dataclass(frozen=True)
class ColmapCamera:
    """One COLMAP camera: ``params`` in the model's own order (pixels)."""

    camera_id: int
    model: str
    width: int
    height: int
    params: tuple[float, ...]

    def pinhole(self, source: str | os.PathLike) -> tuple[float, float, float, float]:
        """``(fx, fy, cx, cy)`` in pixels; raises :class:`UnsupportedCameraModelError` naming
        ``source`` (the cameras file) for models with distortion."""
        if self.model == "SIMPLE_PINHOLE":
            f, cx, cy = self.params
            return f, f, cx, cy
        if self.model == "PINHOLE":
            fx, fy, cx, cy = self.params
            return fx, fy, cx, cy
        raise UnsupportedCameraModelError(
            source,
            f"camera {self.camera_id} uses the {self.model} camera model, which has lens "
            f"distortion; splatview needs undistorted pinhole images (PINHOLE or SIMPLE_PINHOLE). "
            f"Run `splat-convert` on the scene to undistort the images first.")


@dataclass(frozen=True)
class ColmapImage:
    """One registered image: world-to-camera rotation as a quaternion (w, x, y, z) and
    translation, the camera it was taken with and its file name relative to the image folder."""

    image_id: int
    qvec: tuple[float, float, float, float]
    tvec: tuple[float, float, float]
    camera_id: int
    name: str

    def world_to_camera(self) -> np.ndarray:
        """4x4 float64 ``[R_w2c | t]`` (column-vector convention, OpenCV axes)."""
        matrix = np.eye(4)
        matrix[:3, :3] = quaternion_to_rotation(self.qvec)
        matrix[:3, 3] = self.tvec
        return matrix


def quaternion_to_rotation(qvec) -> np.ndarray:
    """3x3 rotation of the unit quaternion ``(w, x, y, z)`` (normalised first)."""
    w, x, y, z = np.asarray(qvec, dtype=np.float64) / np.linalg.norm(qvec)
    return np.array([
        [1 - 2 * y * y - 2 * z * z, 2 * x * y - 2 * w * z, 2 * z * x + 2 * w * y],
        [2 * x * y + 2 * w * z, 1 - 2 * x * x - 2 * z * z, 2 * y * z - 2 * w * x],
        [2 * z * x - 2 * w * y, 2 * y * z + 2 * w * x, 1 - 2 * x * x - 2 * y * y],
    ])


# ----- binary helpers -------------------------------------------------------------------
class _Reader:
    """Bounds-checked little-endian reader over a file's bytes."""

    def __init__(self, path: Path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        self.path = path
        self.data = path.read_bytes()
        self.pos = 0

    def need(self, size: int, what: str) -> None:
        if self.pos + size > len(self.data):
            raise FileFormatError(self.path, f"truncated: {what} needs {size} bytes at offset "
                                             f"{self.pos} but the file has {len(self.data)} bytes")

    def unpack(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize(fmt)
        self.need(size, what)
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise FileFormatError(self.path, f"{len(self.data) - self.pos} unexpected bytes after "
                                             f"the last record (offset {self.pos})")


def read_cameras_binary(path: str | os.PathLike) -> dict[int, ColmapCamera]:
    """``cameras.bin`` -> camera id -> :class:`ColmapCamera`."""
    reader = _Reader(Path(path))
    (count,) = reader.unpack("<Q", "the camera count")
    cameras = {}
    for i in range(count):
        camera_id, model_id, width, height = reader.unpack("<iiQQ", f"camera record {i}")
        if model_id not in CAMERA_MODELS:
            raise FileFormatError(path, f"camera {camera_id} has unknown camera model id {model_id} "
                                        f"(known ids: 0-{max(CAMERA_MODELS)})")
        model, param_count = CAMERA_MODELS[model_id]
        params = reader.unpack(f"<{param_count}d", f"the parameters of camera {camera_id}")
        cameras[camera_id] = ColmapCamera(camera_id, model, width, height, params)
    reader.finish()
    return cameras


def read_images_binary(path: str | os.PathLike) -> dict[int, ColmapImage]:
    """``images.bin`` -> image id -> :class:`ColmapImage`; the 2D point arrays are skipped."""
    reader = _Reader(Path(path))
    (count,) = reader.unpack("<Q", "the image count")
    images = {}
    for i in range(count):
        values = reader.unpack("<i7di", f"image record {i}")
        end = reader.data.find(b"\0", reader.pos)
        if end < 0:
            raise FileFormatError(path, f"truncated: the name of image record {i} has no terminating NUL")
        try:
            name = reader.data[reader.pos:end].decode("utf-8")
        except UnicodeDecodeError:
            raise FileFormatError(path, f"the name of image record {i} is not UTF-8") from None
        reader.pos = end + 1
        (point_count,) = reader.unpack("<Q", f"the 2D point count of image {name!r}")
        reader.need(24 * point_count, f"the {point_count} 2D points of image {name!r}")
        reader.pos += 24 * point_count  # x, y (f64) and point3D id (i64) per point: skipped
        images[values[0]] = ColmapImage(values[0], tuple(values[1:5]), tuple(values[5:8]),
                                        values[8], name)
    reader.finish()
    return images


def read_points3d_binary(path: str | os.PathLike) -> PointCloud:
    """``points3D.bin`` -> positions and colours (rgb / 255).

    The loop only walks record offsets (track lengths vary); positions and colours are then
    gathered with numpy in one pass.
    """
    reader = _Reader(Path(path))
    (count,) = reader.unpack("<Q", "the point count")
    data = reader.data
    offsets = np.empty(count, dtype=np.int64)
    pos = reader.pos
    size = len(data)
    track_length = struct.Struct("<Q")
    for i in range(count):
        if pos + 51 > size:
            raise FileFormatError(path, f"truncated: point record {i} needs 51 bytes at offset "
                                        f"{pos} but the file has {size} bytes")
        offsets[i] = pos
        pos += 51 + 8 * track_length.unpack_from(data, pos + 43)[0]
    if pos > size:
        raise FileFormatError(path, f"truncated: the track of the last point ends at offset {pos} "
                                    f"but the file has {size} bytes")
    if pos != size:
        raise FileFormatError(path, f"{size - pos} unexpected bytes after the last point record")
    raw = np.frombuffer(data, dtype=np.uint8)
    fields = np.empty((count, 27), dtype=np.uint8)  # bytes 8..34 of each record: xyz, rgb
    for column in range(27):
        fields[:, column] = raw[offsets + 8 + column]
    xyz = fields[:, :24].copy().view("<f8").reshape(count, 3)
    rgb = fields[:, 24:].astype(np.float32) / 255.0
    return PointCloud(xyz, rgb)


# ----- text -----------------------------------------------------------------------------
def _text_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise FileFormatError(path, "not a UTF-8 text file") from None


def read_cameras_text(path: str | os.PathLike) -> dict[int, ColmapCamera]:
    """``cameras.txt``: ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS...`` per line, ``#`` comments."""
    path = Path(path)
    cameras = {}
    for number, line in enumerate(_text_lines(path), start=1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        try:
            camera_id, model, width, height = int(words[0]), words[1], int(words[2]), int(words[3])
            params = tuple(float(w) for w in words[4:])
        except (IndexError, ValueError):
            raise FileFormatError(path, f"line {number}: expected CAMERA_ID MODEL WIDTH HEIGHT "
                                        f"PARAMS..., got {line.strip()!r}") from None
        if model not in _MODEL_BY_NAME:
            raise FileFormatError(path, f"line {number}: unknown camera model {model!r}")
        expected = _MODEL_BY_NAME[model][1]
        if len(params) != expected:
            raise FileFormatError(path, f"line {number}: the {model} model has {expected} "
                                        f"parameters, got {len(params)}")
        cameras[camera_id] = ColmapCamera(camera_id, model, width, height, params)
    return cameras


def read_images_text(path: str | os.PathLike) -> dict[int, ColmapImage]:
    """``images.txt``: per image a line ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` and
    a line of 2D points (possibly empty, skipped)."""
    path = Path(path)
    lines = _text_lines(path)
    images = {}
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if not line or line.startswith("#"):
            i += 1
            continue
        words = line.split(maxsplit=9)
        try:
            if len(words) != 10:
                raise ValueError
            image_id = int(words[0])
            numbers = tuple(float(w) for w in words[1:8])
            camera_id = int(words[8])
        except ValueError:
            raise FileFormatError(path, f"line {i + 1}: expected IMAGE_ID QW QX QY QZ TX TY TZ "
                                        f"CAMERA_ID NAME, got {line!r}") from None
        images[image_id] = ColmapImage(image_id, numbers[:4], numbers[4:], camera_id, words[9])
        i += 2  # the next line holds the 2D points
    return images


def read_points3d_text(path: str | os.PathLike) -> PointCloud:
    """``points3D.txt``: ``POINT3D_ID X Y Z R G B ERROR TRACK...`` per line."""
    path = Path(path)
    xyz, rgb = [], []
    for number, line in enumerate(_text_lines(path), start=1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        try:
            xyz.append([float(w) for w in words[1:4]])
            rgb.append([int(w) for w in words[4:7]])
            if len(xyz[-1]) != 3 or len(rgb[-1]) != 3:
                raise ValueError
        except ValueError:
            raise FileFormatError(path, f"line {number}: expected POINT3D_ID X Y Z R G B ERROR "
                                        f"TRACK..., got {line.strip()!r}") from None
    return PointCloud(np.array(xyz, dtype=np.float64).reshape(-1, 3),
                      np.array(rgb, dtype=np.float32).reshape(-1, 3) / 255.0)


# ----- model folder -----------------------------------------------------------------------
def find_model_folder(sparse: str | os.PathLike) -> Path:
    """``sparse/0`` if it holds a model, else ``sparse`` itself if the files are directly there."""
    sparse = Path(sparse)
    for folder in (sparse / "0", sparse):
        if any((folder / f"cameras{ext}").is_file() for ext in (".bin", ".txt")):
            return folder
    raise FileNotFoundError(f"{sparse / '0' / 'cameras.bin'}: no COLMAP model found (looked for "
                            f"cameras.bin/.txt in {sparse / '0'} and in {sparse})")


def _read_either(folder: Path, stem: str, binary, text, log=None):
    """Read ``<stem>.bin`` (preferred) or ``<stem>.txt``; a malformed .bin falls back to the .txt
    when one exists (as the reference does), otherwise its error propagates."""
    binary_path, text_path = folder / f"{stem}.bin", folder / f"{stem}.txt"
    if binary_path.is_file():
        try:
            return binary(binary_path), binary_path
        except UnsupportedCameraModelError:
            raise
        except FileFormatError as error:
            if not text_path.is_file():
                raise
            if log is not None:
                log(f"{error}; reading {text_path.name} instead")
    if text_path.is_file():
        return text(text_path), text_path
    raise FileNotFoundError(f"{binary_path}: no such file (nor {text_path.name})")


def read_cameras(folder: str | os.PathLike, log=None) -> tuple[dict[int, ColmapCamera], Path]:
    """Cameras of the model in ``folder`` and the file they came from."""
    return _read_either(Path(folder), "cameras", read_cameras_binary, read_cameras_text, log)


def read_images(folder: str | os.PathLike, log=None) -> tuple[dict[int, ColmapImage], Path]:
    """Images of the model in ``folder`` and the file they came from."""
    return _read_either(Path(folder), "images", read_images_binary, read_images_text, log)


def read_points3d(folder: str | os.PathLike, log=None) -> tuple[PointCloud, Path]:
    """Points of the model in ``folder``: ``points3D.ply`` if present (as the reference, which
    caches the converted points there), else ``points3D.bin``/``.txt``."""
    from rasterizer.ply import read_point_cloud

    folder = Path(folder)
    ply = folder / "points3D.ply"
    if ply.is_file():
        return read_point_cloud(ply), ply
    return _read_either(folder, "points3D", read_points3d_binary, read_points3d_text, log)
