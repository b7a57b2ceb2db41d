"""``load_scene``: views, train/test split, extent, initial points and the image cache.

Scene type detection follows the reference: ``<source>/sparse`` exists => COLMAP (model in
``sparse/0``, or directly in ``sparse``); else ``transforms_train.json`` => NeRF-synthetic;
else ``transforms.json`` => instant-ngp/nerfstudio.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from rasterizer.camera import Camera
from rasterizer.files import FileFormatError
from rasterizer.ply import PointCloud, read_point_cloud
from rasterizer.sh import SH_C0

from . import colmap, nerf
from .images import ImageCache, ImageSource
from .resolution import ResolutionRule
from .undistort import Distortion

__all__ = ["View", "Scene", "load_scene", "load_cameras", "detect_scene_kind", "scene_extent",
           "llff_test_mask", "random_point_cloud"]

LLFF_HOLD = 8
RANDOM_POINT_COUNT = 100_000


@dataclass(frozen=True)
class View:
    """One training or test view.

    Attributes:
        camera: the camera at the loading resolution (what the image from the cache matches).
        original_camera: the camera at the original size (COLMAP intrinsics size or the image
            file size); ``cameras.json`` is written from it.
        image_name: COLMAP: the name stored in images.bin (with extension and any sub-path);
            NeRF-synthetic: the file stem (``r_0``); transforms.json: the ``file_path``.
        index: index of the view's image in ``Scene.images``.
        image_path: the image file.
    """

    camera: Camera
    original_camera: Camera
    image_name: str
    index: int
    image_path: Path


@dataclass
class Scene:
    """A loaded scene; see :func:`load_scene`."""

    source_path: Path
    kind: str
    train_views: list[View]
    test_views: list[View]
    extent: float
    point_cloud: PointCloud
    background: tuple[float, float, float]
    images: ImageCache
    point_cloud_path: Path | None = None  # the PLY the points came from (None: .bin/.txt/random)

    @property
    def views(self) -> list[View]:
        """Train views then test views."""
        return self.train_views + self.test_views

    def close(self) -> None:
        """Stop the image cache's read-ahead threads."""
        self.images.close()


@dataclass(frozen=True)
class _Spec:
    """A view before resolution handling: camera at ``original`` size, image file size."""

    original: Camera
    path: Path
    file_size: tuple[int, int]
    distortion: Distortion | None = None


# ----- pieces -----------------------------------------------------------------------------
def detect_scene_kind(source: Path) -> str:
    """``"colmap"``, ``"nerf_synthetic"`` or ``"transforms"``; errors name the folder."""
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: source folder not found")
    if (source / "sparse").exists():
        return "colmap"
    if (source / "transforms_train.json").is_file():
        return "nerf_synthetic"
    if (source / "transforms.json").is_file():
        return "transforms"
    raise FileNotFoundError(f"{source}: not a recognised scene folder: expected sparse/ (COLMAP), "
                            "transforms_train.json (NeRF-synthetic) or transforms.json "
                            "(instant-ngp/nerfstudio)")


def llff_test_mask(count: int, hold: int = LLFF_HOLD) -> np.ndarray:
    """Boolean mask over views sorted by name: every ``hold``-th (index % hold == 0) is test."""
    return np.arange(count) % hold == 0


def scene_extent(cameras: list[Camera]) -> float:
    """The reference's radius: 1.1 x the largest distance of a camera centre from their mean."""
    if not cameras:
        return 1.0
    centres = np.stack([c.center.numpy() for c in cameras])
    radius = 1.1 * float(np.linalg.norm(centres - centres.mean(axis=0), axis=1).max())
    # One camera (or all at one spot) gives 0 in the reference, which would zero the position
    # learning rate and the densification thresholds; use a unit radius instead.
    return radius if radius > 1e-9 else 1.0


def random_point_cloud(count: int = RANDOM_POINT_COUNT, seed: int = 0) -> PointCloud:
    """The reference's synthetic initialisation: ``count`` points uniform in [-1.3, 1.3]^3 and
    near-grey colours (SH DC ~ U[0, 1/255] -> RGB = 0.5 + C0 * sh), quantised as the reference's
    uint8 ``points3d.ply`` round trip does (truncation -> 127/255). Deterministic for a seed;
    seed 0 reproduces the reference's points (numpy's legacy generator seeded 0)."""
    rng = np.random.RandomState(seed)
    xyz = rng.random_sample((count, 3)) * 2.6 - 1.3
    sh = rng.random_sample((count, 3)) / 255.0
    rgb = np.floor((sh * SH_C0 + 0.5) * 255.0) / 255.0
    return PointCloud(xyz, rgb)


# ----- per-kind readers -> specs -------------------------------------------------------------
def _colmap_specs(source: Path, images: str, log) -> tuple[list[_Spec], PointCloud, Path | None]:
    specs, model = _colmap_view_specs(source, images, log)
    points, points_file = colmap.read_points3d(model, log)
    return specs, points, points_file


def _colmap_view_specs(source: Path, images: str, log) -> tuple[list[_Spec], Path]:
    """The registered views of a COLMAP scene, and the model folder they came from."""
    model = colmap.find_model_folder(source / "sparse")
    cameras, cameras_file = colmap.read_cameras(model, log)
    registered, images_file = colmap.read_images(model, log)
    image_dir = source / images
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{image_dir}: image folder not found (choose it with --images)")
    specs = []
    for image in registered.values():
        if image.camera_id not in cameras:
            raise FileFormatError(images_file, f"image {image.name!r} refers to camera "
                                               f"{image.camera_id}, which {cameras_file.name} lacks")
        intrinsics = cameras[image.camera_id]
        fx, fy, cx, cy = intrinsics.pinhole(cameras_file)
        path = image_dir / image.name
        camera = Camera(intrinsics.width, intrinsics.height, fx, fy, cx, cy,
                        image.world_to_camera(), image_name=image.name)
        specs.append(_Spec(camera, path, nerf.image_size(path, images_file)))
    return specs, model


def _frame_spec(frame: nerf.Frame) -> _Spec:
    camera = Camera(frame.width, frame.height, frame.fx, frame.fy, frame.cx, frame.cy,
                    frame.world_to_camera, image_name=frame.image_name)
    return _Spec(camera, frame.path, (frame.width, frame.height), frame.distortion)


def _synthetic_points(source: Path, extra: Path | None = None) -> tuple[PointCloud, Path | None]:
    for candidate in (extra, source / "points3d.ply"):
        if candidate is not None and candidate.is_file():
            return read_point_cloud(candidate), candidate
    return random_point_cloud(), None


def _ngp_point_file(source: Path) -> Path | None:
    """nerfstudio's optional ``ply_file_path`` key (e.g. ``sparse_pc.ply``)."""
    try:
        name = json.loads((source / "transforms.json").read_text(encoding="utf-8")).get("ply_file_path")
    except (OSError, ValueError, AttributeError):
        return None
    return source / name if isinstance(name, str) and name else None


def _file_camera(spec: _Spec) -> Camera:
    """The view's camera at its image file's size (e.g. ``-i images_4`` with full-size K)."""
    if (spec.original.width, spec.original.height) == spec.file_size:
        return spec.original
    return spec.original.resized(*spec.file_size)


def _by_name(specs: list[_Spec]) -> list[_Spec]:
    return sorted(specs, key=lambda s: s.original.image_name)  # stable: ties keep file order


def _llff_split(specs: list[_Spec], eval: bool) -> tuple[list[_Spec], list[_Spec]]:
    """(train, test) of the views sorted by name; test = every 8th under ``eval``, else none."""
    specs = _by_name(specs)
    if not eval:
        return specs, []
    test_mask = llff_test_mask(len(specs))
    return ([s for s, t in zip(specs, test_mask) if not t],
            [s for s, t in zip(specs, test_mask) if t])


# ----- front doors ---------------------------------------------------------------------------
def load_cameras(source_path: str | os.PathLike, images: str = "images") -> list[Camera]:
    """Every camera of a scene (train and test), without decoding images or reading points:
    what a viewer snaps to. Sizes are the image files' (intrinsics scaled to them); COLMAP and
    transforms.json views are sorted by name, NeRF-synthetic ones keep the train-then-test file
    order. Errors name the file, as :func:`load_scene`'s."""
    source = Path(source_path).expanduser().resolve()
    kind = detect_scene_kind(source)
    if kind == "colmap":
        specs = _by_name(_colmap_view_specs(source, images, None)[0])
    elif kind == "nerf_synthetic":
        specs = [_frame_spec(f) for name in ("transforms_train.json", "transforms_test.json")
                 if (source / name).is_file() for f in nerf.read_nerf_synthetic(source, name)]
    else:
        specs = _by_name([_frame_spec(f) for f in nerf.read_transforms(source)])
    if not specs:
        raise FileFormatError(source, "the scene has no views")
    return [_file_camera(spec) for spec in specs]


def load_scene(source_path: str | os.PathLike, images: str = "images", resolution: int = -1,
               white_background: bool = False, eval: bool = False, data_device: str = "cpu",
               cache_budget_bytes: int | None = None, quiet: bool = False,
               log: Callable[[str], None] | None = None, keep_alpha: bool = False) -> Scene:
    """Load a COLMAP, NeRF-synthetic or transforms.json scene as the reference trainer does.

    Args:
        source_path: the scene folder (``-s``).
        images: COLMAP image subfolder (``-i``), default ``images``.
        resolution: ``-r`` (1/2/4/8 divisor, -1 = cap width at 1600 px, other = target width).
        white_background: composite transparent pixels over white instead of black.
        eval: hold out test views (every 8th by name; NeRF-synthetic: the test json).
        data_device: where the uint8 images live, ``cpu`` or ``cuda``.
        cache_budget_bytes: decoded-image memory budget (default half the available memory);
            above it images stay encoded and are decoded on demand.
        quiet: no log lines.
        log: where log lines go (default ``print``).
        keep_alpha: hold images as premultiplied RGB + alpha instead of compositing them over
            the background when loading, for training with ``--random_background``
            (composite each step with ``view_image_float(image, background)``).
    """
    log = None if quiet else (log or print)
    source = Path(source_path).expanduser().resolve()
    rule = ResolutionRule(resolution, log)
    kind = detect_scene_kind(source)
    points_path: Path | None  # the file the initial points came from (None: random)
    if kind == "colmap":
        specs, points, points_path = _colmap_specs(source, images, log)
        train, test = _llff_split(specs, eval)
    elif kind == "nerf_synthetic":
        train = [_frame_spec(f) for f in nerf.read_nerf_synthetic(source, "transforms_train.json")]
        test_file = source / "transforms_test.json"
        test = ([_frame_spec(f) for f in nerf.read_nerf_synthetic(source, test_file.name)]
                if test_file.is_file() else [])
        if not eval:
            train, test = train + test, []
        # The reference keeps the JSON's frame order here (r_0, r_1, r_2, ...), and numbers
        # render outputs in that order, so no sort by name.
        points, points_path = _synthetic_points(source)
    else:
        train, test = _llff_split([_frame_spec(f) for f in nerf.read_transforms(source)], eval)
        points, points_path = _synthetic_points(source, _ngp_point_file(source))
    if not train and not test:
        raise FileFormatError(source, "the scene has no views")

    background = (1.0, 1.0, 1.0) if white_background else (0.0, 0.0, 0.0)
    views: list[View] = []
    sources: list[ImageSource] = []
    for spec in train + test:
        file_camera = _file_camera(spec)
        size = rule.size(*spec.file_size)
        camera = file_camera if size == spec.file_size else file_camera.resized(*size)
        views.append(View(camera, spec.original, spec.original.image_name, len(sources), spec.path))
        sources.append(ImageSource(spec.path, size, None if keep_alpha else background,
                                   (file_camera.fx, file_camera.fy, file_camera.cx, file_camera.cy),
                                   spec.distortion))
    train_views, test_views = views[:len(train)], views[len(train):]
    extent = scene_extent([v.original_camera for v in train_views])
    if log is not None:
        label = {"colmap": "COLMAP", "nerf_synthetic": "NeRF-synthetic",
                 "transforms": "transforms.json"}[kind]
        origin = str(points_path) if points_path is not None else "random"
        log(f"Loaded {label} scene {source}: {len(train_views)} train / {len(test_views)} test views, "
            f"extent {extent:.4g}, {len(points)} initial points ({origin})")
    cache = ImageCache(sources, data_device, cache_budget_bytes, log=log)
    ply = points_path if points_path is not None and points_path.suffix.lower() == ".ply" else None
    return Scene(source, kind, train_views, test_views, extent, points, background, cache, ply)
