"""What the viewer opens: a trained model folder (as SIBR does) or a bare model file (SIBR cannot):
a 3DGS PLY, a compressed PLY, a ``.splat`` or an ``.spz``, recognised by content
(``rasterizer/formats``).

A model folder gives ``point_cloud/iteration_<N>/point_cloud.ply`` (default: the largest N) and
the background and SH degree from ``cfg_args``. Input cameras come, as in SIBR, from the source
dataset (``-s``, else ``cfg_args``' ``source_path``) when it can be read, else from the model's
``cameras.json``, with a notice. A bare PLY gets a black background and the cameras of ``-s``
when given, else one camera placed to frame the model.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from rasterizer import Camera, Gaussians, PointCloud, look_at, read_gaussians_dropping_non_finite, read_point_cloud
from rasterizer.camera_paths import focus_point, scene_up
from rasterizer.files import FileFormatError
from rasterizer.model_folder import latest_iteration, point_cloud_path, read_cameras_json, read_cfg_args
from trainer.scene import load_cameras

__all__ = ["ViewerInput", "load_viewer_input", "framing_camera", "bulk_points", "scene_frame"]


@dataclass
class ViewerInput:
    """A model to show: Gaussians, the cameras to start from and snap to, the background."""

    gaussians: Gaussians
    cameras: list[Camera]
    background: tuple[float, float, float]
    title: str
    initial_points: PointCloud | None = None  # the model folder's input.ply, when present
    framing_only: bool = False  # ``cameras`` is only framing_camera()'s: no input cameras were found


def bulk_points(gaussians: Gaussians, limit: int = 200_000) -> torch.Tensor:
    """At most ``limit`` of the means (float64, an even stride through the file order): enough
    for medians and quantiles, and fast to take on millions of Gaussians at start-up."""
    means = gaussians.means.detach()
    step = max(1, len(means) // limit)
    return means[::step].double().cpu()


def framing_camera(gaussians: Gaussians, width: int = 1200, height: int = 800,
                   fov_y: float = math.radians(60.0)) -> Camera:
    """A camera outside the bulk of the model (around its median point, 90% quantile extent),
    looking at that point, with vertical field of view ``fov_y`` (radians)."""
    means = bulk_points(gaussians)
    if len(means) == 0:
        return Camera.from_fov(width, height, fov_y * width / height, fov_y, look_at([0.0, 0.0, -3.0], [0.0, 0.0, 0.0]))
    centre = means.median(dim=0).values
    spread = max(float((means - centre).abs().quantile(0.9, dim=0).max()), 1e-6)
    eye = centre + torch.tensor([0.0, -0.3, -2.5], dtype=torch.float64) * spread
    fy = height / (2.0 * math.tan(fov_y / 2.0))
    return Camera(width, height, fy, fy, width / 2.0, height / 2.0,
                  look_at(eye.tolist(), centre.tolist(), up=(0.0, -1.0, 0.0)))


def scene_frame(gaussians: Gaussians, cameras: list[Camera]) -> tuple[list[float], float, list[float]]:
    """(pivot, scale, up) for navigation: the point the input cameras look at (else the model's
    median point), the median distance from the cameras to it (world units), and their up
    direction (world -y, graphdeco's convention, with fewer than two cameras)."""
    median = bulk_points(gaussians).median(dim=0).values.numpy() if len(gaussians) else None
    if len(cameras) >= 2:
        pivot = focus_point(cameras, median)
        up = scene_up(cameras)
    else:
        pivot = median if median is not None else (
            cameras[0].center.numpy() + cameras[0].world_to_camera[2, :3].numpy() if cameras else [0.0, 0.0, 0.0])
        up = [0.0, -1.0, 0.0]
    pivot_t = torch.as_tensor(pivot, dtype=torch.float64)
    distances = [float((camera.center - pivot_t).norm()) for camera in cameras]
    scale = float(torch.tensor(distances).median()) if distances else 1.0
    return [float(v) for v in pivot], max(scale, 1e-6), [float(v) for v in up]


def _notice(message: str) -> None:
    print(f"splat-view: notice: {message}", file=sys.stderr, flush=True)


def dataset_cameras(source: str | os.PathLike | None, images: str = "images",
                    notice: Callable[[str], None] = _notice) -> list[Camera]:
    """The source dataset's cameras, or [] (after a notice saying why) when it cannot be read."""
    if not source:
        return []
    try:
        return load_cameras(source, images)
    except (OSError, FileFormatError, ValueError) as error:
        notice(f"cameras not read from the dataset ({error}); using the model's cameras.json")
        return []


def _read_gaussians(path: Path, notice: Callable[[str], None]) -> Gaussians:
    """The model file's Gaussians (any format), without those holding NaN or infinity (one
    notice says how many)."""
    gaussians, dropped = read_gaussians_dropping_non_finite(path)
    if dropped:
        notice(dropped)
    return gaussians


def load_viewer_input(path: str | os.PathLike, iteration: int = -1, source: str | os.PathLike | None = None,
                      notice: Callable[[str], None] = _notice) -> ViewerInput:
    """Open a model folder or a model file (see the module docstring); ``source`` is ``-s``.

    Raises ``FileNotFoundError``/``FileFormatError`` (a ``ValueError``) naming the file.
    """
    path = Path(path)
    if path.is_file():
        gaussians = _read_gaussians(path, notice)
        cameras = dataset_cameras(source, notice=notice)
        return ViewerInput(gaussians, cameras or [framing_camera(gaussians)], (0.0, 0.0, 0.0), path.name,
                           framing_only=not cameras)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such model folder or model file")
    iteration = latest_iteration(path) if iteration == -1 else iteration
    ply = point_cloud_path(path, iteration)
    if not ply.is_file():
        raise FileNotFoundError(f"{ply}: no such file (iteration {iteration} was not saved)")
    gaussians = _read_gaussians(ply, notice)
    settings = read_cfg_args(path) if (path / "cfg_args").is_file() else {}
    background = (1.0, 1.0, 1.0) if settings.get("white_background") else (0.0, 0.0, 0.0)
    cameras = dataset_cameras(source or settings.get("source_path"), settings.get("images") or "images", notice)
    if not cameras and (path / "cameras.json").is_file():
        cameras = read_cameras_json(path)
    initial = read_point_cloud(path / "input.ply") if (path / "input.ply").is_file() else None
    return ViewerInput(gaussians, cameras or [framing_camera(gaussians)], background,
                       f"{path.name} (iteration {iteration})", initial, framing_only=not cameras)
