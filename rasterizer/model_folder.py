"""The reference's trained-model folder: ``cfg_args``, ``cameras.json``, ``input.ply`` and
``point_cloud/iteration_<N>/point_cloud.ply``.

Layout (identical to graphdeco-inria's ``train.py`` output, so SIBR and users' scripts work)::

    <model>/cfg_args                  one-line ``Namespace(...)`` of the loading parameters
    <model>/cameras.json              test cameras then train cameras, each sorted by name
    <model>/input.ply                 the initial point cloud
    <model>/point_cloud/iteration_<N>/point_cloud.ply
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

import torch

from .camera import Camera
from .files import FileFormatError, atomic_write_text, read_json

__all__ = ["write_cfg_args", "read_cfg_args", "camera_to_json", "write_cameras_json",
           "read_cameras_json", "iteration_folders", "latest_iteration", "point_cloud_path"]


# ----- cfg_args ----------------------------------------------------------------
def write_cfg_args(model_path: str | os.PathLike, values: dict[str, Any]) -> None:
    """Write ``str(Namespace(**values))`` on one line, as the reference does (no newline)."""
    atomic_write_text(Path(model_path) / "cfg_args", str(argparse.Namespace(**values)))


def read_cfg_args(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a ``cfg_args`` file (or a model folder containing one) without ``eval``.

    Keys may come in any order (the reference's Python 3.7 wrote them alphabetically).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "cfg_args"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no cfg_args file (is this a model folder?)")
    try:
        text = path.read_text(encoding="utf-8").strip()  # UnicodeDecodeError is a ValueError
        call = ast.parse(text, mode="eval").body
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                and call.func.id == "Namespace" and not call.args):
            raise ValueError("expected Namespace(key=value, ...)")
        return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    except (SyntaxError, ValueError) as error:
        raise FileFormatError(path, f"not a Namespace(...) line ({error})") from None


# ----- cameras.json ------------------------------------------------------------
def camera_to_json(index: int, camera: Camera) -> dict[str, Any]:
    """One ``cameras.json`` entry: the camera-to-world rotation (OpenCV axes, rows) and centre.

    The reference writes no principal point; we add ``cx``/``cy`` (SIBR ignores extra keys)
    so that our viewer restores off-centre cameras exactly.
    """
    camera_to_world = camera.camera_to_world
    return {
        "id": index,
        "img_name": camera.image_name,
        "width": camera.width,
        "height": camera.height,
        "position": camera_to_world[:3, 3].tolist(),
        "rotation": camera_to_world[:3, :3].tolist(),
        "fy": camera.fy,
        "fx": camera.fx,
        "cx": camera.cx,
        "cy": camera.cy,
    }


def write_cameras_json(model_path: str | os.PathLike, test_cameras: Iterable[Camera],
                       train_cameras: Iterable[Camera]) -> None:
    """Write test cameras then train cameras (callers pass each list sorted by name)."""
    cameras = list(test_cameras) + list(train_cameras)
    entries = [camera_to_json(i, cam) for i, cam in enumerate(cameras)]
    atomic_write_text(Path(model_path) / "cameras.json", json.dumps(entries))


def read_cameras_json(path: str | os.PathLike) -> list[Camera]:
    """Cameras from a ``cameras.json`` file (or a model folder containing one), in file order."""
    path = Path(path)
    if path.is_dir():
        path = path / "cameras.json"
    entries = read_json(path, "no cameras.json file")
    if not isinstance(entries, list):
        raise FileFormatError(path, "expected a JSON list of cameras")
    cameras = []
    for position, entry in enumerate(entries):
        try:
            width, height = int(entry["width"]), int(entry["height"])
            camera_to_world = torch.eye(4, dtype=torch.float64)
            camera_to_world[:3, :3] = torch.tensor(entry["rotation"], dtype=torch.float64)
            camera_to_world[:3, 3] = torch.tensor(entry["position"], dtype=torch.float64)
            cameras.append(Camera(
                width, height, float(entry["fx"]), float(entry["fy"]),
                float(entry.get("cx", width / 2.0)), float(entry.get("cy", height / 2.0)),
                torch.linalg.inv(camera_to_world), image_name=str(entry.get("img_name", ""))))
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise FileFormatError(path, f"camera entry {position} is malformed ({error!r})") from None
    return cameras


# ----- point_cloud/iteration_N -------------------------------------------------
_ITERATION = re.compile(r"^iteration_(\d+)$")


def iteration_folders(model_path: str | os.PathLike) -> dict[int, Path]:
    """Iteration number -> ``point_cloud/iteration_<N>`` folders that hold a point_cloud.ply."""
    root = Path(model_path) / "point_cloud"
    found = {}
    if root.is_dir():
        for child in root.iterdir():
            match = _ITERATION.match(child.name)
            if match and (child / "point_cloud.ply").is_file():
                found[int(match.group(1))] = child
    return found


def latest_iteration(model_path: str | os.PathLike) -> int:
    """The largest saved iteration (the reference's ``--iteration -1``)."""
    found = iteration_folders(model_path)
    if not found:
        raise FileNotFoundError(f"{Path(model_path) / 'point_cloud'}: no iteration_<N>/point_cloud.ply "
                                "found (is this a trained model folder?)")
    return max(found)


def point_cloud_path(model_path: str | os.PathLike, iteration: int) -> Path:
    """``<model>/point_cloud/iteration_<N>/point_cloud.ply``."""
    return Path(model_path) / "point_cloud" / f"iteration_{iteration}" / "point_cloud.ply"
