"""``transforms*.json`` scenes: NeRF-synthetic ("Blender") and the instant-ngp/nerfstudio flavour.

Both store camera-to-world matrices in OpenGL/Blender camera axes (x right, y up, looking down
-z). They are converted to OpenCV axes by negating columns 1 and 2; ``world_to_camera`` is the
inverse.

* NeRF-synthetic: ``transforms_train.json`` / ``transforms_test.json``, ``camera_angle_x``
  (radians) for every frame, ``file_path`` without extension (``.png`` appended). As the
  reference: fx = fy = W / (2 tan(camera_angle_x / 2)), principal point at the image centre,
  even when ``fl_x``/``cx``... keys are also present.
* instant-ngp/nerfstudio: one ``transforms.json`` with ``fl_x fl_y cx cy w h`` (top level and/or
  per frame, per-frame keys win) and optional ``k1 k2 p1 p2 k3``; ``file_path`` with extension.
  When an image's size differs from ``w x h`` the intrinsics are scaled to it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from rasterizer.camera import fov_to_focal
from rasterizer.files import FileFormatError

from .undistort import Distortion

__all__ = ["Frame", "read_nerf_synthetic", "read_transforms", "opengl_to_world_to_camera",
           "image_size"]

_SUPPORTED_NGP_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE")


@dataclass(frozen=True)
class Frame:
    """One view of a transforms file: intrinsics in pixels at the image file's size."""

    path: Path
    image_name: str
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    world_to_camera: np.ndarray
    distortion: Distortion | None = None


def opengl_to_world_to_camera(transform, path: Path, where: str) -> np.ndarray:
    """4x4 world-to-camera (OpenCV axes) from a camera-to-world ``transform_matrix`` in
    OpenGL/Blender axes (3x4 or 4x4)."""
    try:
        matrix = np.asarray(transform, dtype=np.float64)
    except (TypeError, ValueError):
        raise FileFormatError(path, f"{where}: transform_matrix is not a numeric matrix") from None
    if matrix.shape not in ((4, 4), (3, 4)) or not np.isfinite(matrix).all():
        raise FileFormatError(path, f"{where}: transform_matrix must be a finite 4x4 or 3x4 "
                                    f"matrix, got shape {matrix.shape}")
    camera_to_world = np.eye(4)
    camera_to_world[:3, :] = matrix[:3, :]
    camera_to_world[:3, 1:3] *= -1
    try:
        return np.linalg.inv(camera_to_world)
    except np.linalg.LinAlgError:
        raise FileFormatError(path, f"{where}: transform_matrix is singular") from None


def image_size(path: Path, listed_in: Path) -> tuple[int, int]:
    """(width, height) from the image header; clear errors for missing/unreadable files."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found (listed in {listed_in})")
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError) as error:
        raise FileFormatError(path, f"cannot read the image ({error})") from None


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FileFormatError(path, f"not valid JSON ({error})") from None
    if not isinstance(content, dict) or not isinstance(content.get("frames"), list):
        raise FileFormatError(path, "expected a JSON object with a 'frames' list")
    return content


def _frame_path(folder: Path, frame: dict, json_path: Path, where: str, extension: str) -> Path:
    file_path = frame.get("file_path")
    if not isinstance(file_path, str) or not file_path:
        raise FileFormatError(json_path, f"{where}: missing or empty 'file_path'")
    path = folder / (file_path + extension)
    if extension and not path.is_file() and (folder / file_path).is_file():
        path = folder / file_path  # tolerate a file_path that already has its extension
    return path


def read_nerf_synthetic(folder: str | os.PathLike, json_name: str) -> list[Frame]:
    """Frames of ``folder/json_name`` (NeRF-synthetic), in file order."""
    folder = Path(folder)
    json_path = folder / json_name
    content = _load_json(json_path)
    try:
        fov_x = float(content["camera_angle_x"])
    except (KeyError, TypeError, ValueError):
        raise FileFormatError(json_path, "missing or non-numeric 'camera_angle_x'") from None
    frames = []
    for i, frame in enumerate(content["frames"]):
        where = f"frame {i}"
        if not isinstance(frame, dict):
            raise FileFormatError(json_path, f"{where} is not an object")
        path = _frame_path(folder, frame, json_path, where, ".png")
        width, height = image_size(path, json_path)
        focal = fov_to_focal(fov_x, width)
        frames.append(Frame(path, Path(frame["file_path"]).stem, width, height, focal, focal,
                            width / 2.0, height / 2.0,
                            opengl_to_world_to_camera(frame.get("transform_matrix"), json_path, where)))
    return frames


def _number(values: dict, key: str, json_path: Path, where: str) -> float | None:
    value = values.get(key)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise FileFormatError(json_path, f"{where}: '{key}' is not a number ({value!r})") from None


def read_transforms(folder: str | os.PathLike, json_name: str = "transforms.json") -> list[Frame]:
    """Frames of an instant-ngp/nerfstudio ``transforms.json``, in file order."""
    folder = Path(folder)
    json_path = folder / json_name
    content = _load_json(json_path)
    frames = []
    for i, frame in enumerate(content["frames"]):
        where = f"frame {i}"
        if not isinstance(frame, dict):
            raise FileFormatError(json_path, f"{where} is not an object")
        values = {**content, **frame}  # per-frame intrinsics override the shared ones
        model = values.get("camera_model", "OPENCV")
        if model not in _SUPPORTED_NGP_MODELS:
            raise FileFormatError(json_path, f"{where}: camera_model {model!r} is not supported "
                                             f"(only {', '.join(_SUPPORTED_NGP_MODELS)})")
        path = _frame_path(folder, frame, json_path, where, "")
        width, height = image_size(path, json_path)
        get = lambda key: _number(values, key, json_path, where)  # noqa: E731
        w = get("w") or width
        h = get("h") or height
        fx, fy = get("fl_x"), get("fl_y")
        if fx is None and get("camera_angle_x") is not None:
            fx = fov_to_focal(get("camera_angle_x"), w)
        if fy is None and get("camera_angle_y") is not None:
            fy = fov_to_focal(get("camera_angle_y"), h)
        if fx is None and fy is None:
            raise FileFormatError(json_path, f"{where}: no focal length ('fl_x' or 'camera_angle_x')")
        fx = fy if fx is None else fx
        fy = fx if fy is None else fy
        cx = get("cx") if get("cx") is not None else w / 2.0
        cy = get("cy") if get("cy") is not None else h / 2.0
        sx, sy = width / w, height / h  # the image may be stored at another size than w x h
        distortion = Distortion(*(get(k) or 0.0 for k in ("k1", "k2", "p1", "p2", "k3")))
        relative = Path(os.path.normpath(frame["file_path"])).as_posix()
        frames.append(Frame(path, relative, width, height, fx * sx, fy * sy, cx * sx, cy * sy,
                            opengl_to_world_to_camera(frame.get("transform_matrix"), json_path, where),
                            None if distortion.is_identity else distortion))
    return frames

