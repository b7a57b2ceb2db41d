"""Photos to a trainable scene with pycolmap alone: the reference's ``convert.py`` without a
COLMAP install or ImageMagick.

Folder layout (the reference's, so its users' folders work)::

    LOCATION/input/                 the photos (only read)
    LOCATION/distorted/database.db  SIFT features and matches
    LOCATION/distorted/sparse/0/    the SfM model, distorted camera (the largest model found),
                                    aligned to the principal plane of its points
    LOCATION/images/                the undistorted photos (PINHOLE)
    LOCATION/sparse/0/              the undistorted model (cameras, images, points3D; COLMAP 4
                                    also writes rigs and frames)
    LOCATION/images_2, _4, _8/      with ``resize``: 50 %, 25 % and 12.5 % of images/

Safety rules: the photos in ``input/`` are never written; ``images/`` is only overwritten when it
is the output of an earlier conversion (a model exists in ``sparse/``); every file is first
written into a staging folder beside its destination and moved into place with one rename, so an
interrupted run leaves whole files only; files we do not produce are never deleted, except the
trainer's ``points3D.ply`` cache of an older ``points3D.bin`` (it would shadow the new points).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from rasterizer.files import atomic_write

from .scene import colmap

__all__ = ["ConvertError", "ConvertOptions", "ConvertResult", "convert", "undistort_scene",
           "list_photos", "resize_images", "principal_plane_transform", "RESIZE_FACTORS",
           "camera_model_names"]

# Downscaled copies written by --resize: folder suffix -> scale, as the reference's ImageMagick
# "-resize 50%/25%/12.5%".
RESIZE_FACTORS = (2, 4, 8)
# What COLMAP's image reader decodes; anything else in input/ (notes, sidecars) is not a photo.
PHOTO_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp",
                              ".ppm", ".pgm", ".jp2", ".exr", ".hdr", ".tga"})
MODEL_STEMS = ("cameras", "images", "points3D")
# The reference's mapper setting: a looser global bundle-adjustment tolerance than COLMAP's
# default (0: iterate to the limit) speeds mapping up without visible loss.
BA_GLOBAL_FUNCTION_TOLERANCE = 1e-6
# Longest list of image names an error message spells out before summarising the rest.
MAX_NAMES_LISTED = 30

Log = Callable[[str], None]


class ConvertError(Exception):
    """A conversion cannot go on; the message is one line naming the file or folder at fault."""


@dataclass
class ConvertOptions:
    """Settings of :func:`convert` (the command line's flags).

    Attributes:
        source: LOCATION, the folder holding ``input/``.
        camera: COLMAP camera model for the SfM (reference default ``OPENCV``).
        single_camera: one camera shared by every photo (the reference's ``single_camera 1``);
            False gives each photo its own intrinsics (photos of different sizes need this).
        skip_matching: undistort an existing ``distorted/sparse/0`` instead of running SfM.
        resize: also write ``images_2``, ``images_4`` and ``images_8``.
        use_gpu: let COLMAP use CUDA when its build has it (pip wheels: CPU only).
        matcher: ``"exhaustive"`` (every pair; the reference) or ``"sequential"`` (video frames:
            each photo with its neighbours in name order; much faster for long sequences).
        min_registered: the smallest acceptable fraction (0..1) of photos in the kept model;
            fewer is an error naming the photos left out.
        align: turn the model so that the principal plane of its points is z = 0 with the
            cameras above it (the reference's ``model_aligner`` step; ``--skip_alignment``).
        seed: random seed for COLMAP's RANSAC and mapper (reproducible runs); None: random.
        verbose: show COLMAP's own log.
    """

    source: Path
    camera: str = "OPENCV"
    single_camera: bool = True
    skip_matching: bool = False
    resize: bool = False
    use_gpu: bool = True
    matcher: str = "exhaustive"
    min_registered: float = 0.5
    align: bool = True
    seed: int | None = 0
    verbose: bool = False


@dataclass
class ConvertResult:
    """What a conversion produced: registered and left-out photo names, point count, folders."""

    registered: list[str]
    left_out: list[str] = field(default_factory=list)
    points: int = 0
    model_folder: Path | None = None
    image_folder: Path | None = None


# ----- helpers ---------------------------------------------------------------------------------
def _pycolmap():
    """The pycolmap module, or a clear error when the wheel is missing."""
    try:
        import pycolmap
    except ImportError as error:
        raise ConvertError(f"pycolmap is not installed ({error}); install it with "
                           "`pip install pycolmap`") from None
    return pycolmap


def camera_model_names() -> list[str]:
    """The camera model names this pycolmap knows (``OPENCV``, ``SIMPLE_RADIAL``, ...)."""
    return [name for name in _pycolmap().CameraModelId.__members__ if name != "INVALID"]


def _names_text(names: Sequence[str]) -> str:
    """``a.jpg, b.jpg`` (at most MAX_NAMES_LISTED names, then ``and N more``)."""
    shown = ", ".join(names[:MAX_NAMES_LISTED])
    rest = len(names) - MAX_NAMES_LISTED
    return shown + (f" and {rest} more" if rest > 0 else "")


@contextlib.contextmanager
def _colmap_log(verbose: bool) -> Iterator[None]:
    """Silence COLMAP's glog output (below FATAL) unless ``verbose``; restores the level after."""
    logging = _pycolmap().logging
    previous = logging.minloglevel
    logging.minloglevel = 0 if verbose else 3
    try:
        yield
    finally:
        logging.minloglevel = previous


class _Progress:
    """Numbered stages: ``[2/4] matching: 66 pairs, 3.1 s`` (the body sets the summary)."""

    def __init__(self, total: int, log: Log):
        self.total, self.log, self.number = total, log, 0

    @contextlib.contextmanager
    def stage(self, name: str, starting: str) -> Iterator[list[str]]:
        """Print ``starting``, run the body, then print the summary it appended and the time."""
        self.number += 1
        prefix = f"[{self.number}/{self.total}] {name}"
        self.log(f"{prefix}: {starting} ...")
        summary: list[str] = []
        start = time.perf_counter()
        yield summary
        self.log(f"{prefix}: {', '.join(summary)}, {time.perf_counter() - start:.1f} s")


def _colmap_call(what: str, function, *args, **kwargs):
    """Run a pycolmap function; its exceptions become one-line :class:`ConvertError`s."""
    try:
        return function(*args, **kwargs)
    except (RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConvertError(f"{what} failed: {first}") from None


def list_photos(folder: Path) -> list[str]:
    """Photo files under ``folder`` (recursively, hidden files skipped) as sorted POSIX paths
    relative to it: the names COLMAP gives the images."""
    names = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_file() and path.suffix.lower() in PHOTO_EXTENSIONS:
            names.append(relative.as_posix())
    return sorted(names)


def _has_model(sparse: Path) -> bool:
    try:
        colmap.find_model_folder(sparse)
    except FileNotFoundError:
        return False
    return True


def _check_output_folder(out: Path, photo_folder: Path) -> None:
    """Refuse to write ``out/images`` over photos that are not an earlier conversion's output."""
    images = out / "images"
    if images.exists() and not images.is_dir():
        raise ConvertError(f"{images}: exists and is not a folder")
    if images.exists() and images.resolve() == photo_folder.resolve():
        raise ConvertError(f"{images}: is the folder of the distorted photos; the undistorted "
                           "ones must go elsewhere (choose another output folder)")
    if images.is_dir() and any(images.iterdir()) and not _has_model(out / "sparse"):
        raise ConvertError(f"{images}: already holds files that are not the output of an earlier "
                           f"conversion (no model in {out / 'sparse' / '0'}); splat-convert "
                           "would overwrite them, so move the folder away first (photos belong "
                           "in input/)")


def _move_tree(staging: Path, destination: Path) -> int:
    """Move every file under ``staging`` to the same relative path under ``destination`` (one
    rename each; existing files of those names are replaced). Returns the number moved."""
    count = 0
    for path in sorted(staging.rglob("*")):
        if path.is_file():
            target = destination / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            count += 1
    return count


# ----- SfM stages ------------------------------------------------------------------------------
def _device(use_gpu: bool):
    device = _pycolmap().Device
    return device.auto if use_gpu else device.cpu


def _extract(database: Path, photos: Path, names: list[str], options: ConvertOptions) -> tuple[int, int]:
    """SIFT features of ``names`` into ``database``; returns (images read, keypoints)."""
    pycolmap = _pycolmap()
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = options.camera
    mode = pycolmap.CameraMode.SINGLE if options.single_camera else pycolmap.CameraMode.PER_IMAGE
    _colmap_call("feature extraction", pycolmap.extract_features, database, photos,
                 image_names=names, camera_mode=mode, reader_options=reader,
                 device=_device(options.use_gpu))
    with contextlib.closing(pycolmap.Database.open(database)) as db:
        return db.num_images(), db.num_keypoints()


def _read_names(database: Path) -> list[str]:
    with contextlib.closing(_pycolmap().Database.open(database)) as db:
        return sorted(image.name for image in db.read_all_images())


def _match(database: Path, options: ConvertOptions) -> tuple[int, int, int]:
    """Match features; returns (pairs matched, pairs geometrically verified, inlier matches)."""
    pycolmap = _pycolmap()
    function = pycolmap.match_sequential if options.matcher == "sequential" else pycolmap.match_exhaustive
    _colmap_call(f"{options.matcher} matching", function, database, device=_device(options.use_gpu))
    with contextlib.closing(pycolmap.Database.open(database)) as db:
        return db.num_matched_image_pairs(), db.num_verified_image_pairs(), db.num_inlier_matches()


def _map(database: Path, photos: Path, distorted: Path, options: ConvertOptions) -> tuple[object, int]:
    """Incremental mapping; returns (the model with the most registered images, models found).
    COLMAP's scratch output goes to a staging folder that is removed afterwards."""
    pycolmap = _pycolmap()
    mapper = pycolmap.IncrementalPipelineOptions()
    mapper.ba_global_function_tolerance = BA_GLOBAL_FUNCTION_TOLERANCE
    if options.seed is not None:
        pycolmap.set_random_seed(options.seed)
        mapper.random_seed = options.seed
    scratch = Path(tempfile.mkdtemp(prefix=".mapping-", dir=distorted))
    try:
        models = _colmap_call("incremental mapping", pycolmap.incremental_mapping, database, photos,
                              scratch, mapper)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not models:
        return None, 0
    # The mapper's model 0 is not always the largest (it may restart after a weak start).
    largest = max(models.values(), key=lambda m: (m.num_reg_images(), m.num_points3D()))
    return largest, len(models)


def principal_plane_transform(points: np.ndarray, camera_centres: np.ndarray) -> np.ndarray:
    """3x4 rigid ``[R | t]`` (new-from-old world) that aligns a model to the principal plane of
    its points, as COLMAP's ``model_aligner --alignment_type plane`` (the reference's step):
    the point centroid moves to the origin, the first and second principal axes become x and y,
    and z, the plane normal, points to the side of the mean camera centre (so "up" is where
    the photos were taken from). Scale is unchanged. ``points`` and ``camera_centres``: [N, 3]."""
    centroid = points.mean(axis=0)
    _, _, axes = np.linalg.svd(points - centroid, full_matrices=False)  # rows: principal axes
    x_axis, normal = axes[0], axes[2]
    if normal @ (camera_centres.mean(axis=0) - centroid) < 0:
        normal = -normal
    rotation = np.stack([x_axis, np.cross(normal, x_axis), normal])  # right-handed: y = z x x
    return np.concatenate([rotation, (-rotation @ centroid)[:, None]], axis=1)


def _align_to_plane(reconstruction) -> None:
    """Apply :func:`principal_plane_transform` to ``reconstruction`` in place (needs 3 points)."""
    if reconstruction.num_points3D() < 3:
        return
    points = np.array([p.xyz for p in reconstruction.points3D.values()])
    centres = np.array([reconstruction.images[i].projection_center()
                        for i in reconstruction.reg_image_ids()])
    reconstruction.transform(_pycolmap().Sim3d(principal_plane_transform(points, centres)))


def _write_model(reconstruction, folder: Path) -> None:
    """Write ``reconstruction`` (binary) into ``folder`` through a staging folder beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".model-", dir=folder.parent))
    try:
        reconstruction.write(staging)
        _move_tree(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_registration(registered: Sequence[str], photos: Sequence[str], model: Path,
                        min_fraction: float, matcher: str = "exhaustive") -> list[str]:
    """Photo names missing from the model; raises when fewer than ``min_fraction`` (and fewer
    than two) of the photos registered, naming those left out."""
    left_out = sorted(set(photos) - set(registered))
    needed = max(2, math.ceil(min_fraction * len(photos)))
    if len(registered) < needed:
        if registered:
            where = (f"; the partial model is in {model} (--skip_matching undistorts it as it is)")
        else:
            where = ""
        raise ConvertError(
            f"only {len(registered)} of {len(photos)} photos registered (need {needed}){where}; "
            f"left out: {_names_text(left_out)}. The photos need more overlap and texture"
            + (" (or try --matcher exhaustive)" if matcher != "exhaustive" else ""))
    return left_out


# ----- undistortion and resizing ---------------------------------------------------------------
def _model_image_names(model: Path) -> list[str]:
    """Names of the registered images of the COLMAP model in ``model`` (clear errors)."""
    colmap.read_cameras(model)  # validates the file with a message naming it
    images, _ = colmap.read_images(model)
    return sorted(image.name for image in images.values())


def _undistort(model: Path, photos: Path, out: Path) -> int:
    """Undistort the images of ``model`` (taken from ``photos``) to PINHOLE into ``out/images``
    and ``out/sparse/0``. Returns the number of images written."""
    names = _model_image_names(model)
    missing = [name for name in names if not (photos / name).is_file()]
    if missing:
        raise ConvertError(f"{photos}: {len(missing)} image(s) of the model in {model} are "
                           f"missing: {_names_text(missing)}")
    pycolmap = _pycolmap()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".undistort-", dir=out))
    try:
        _colmap_call("undistortion", pycolmap.undistort_images, staging, model, photos,
                     output_type="COLMAP")
        written = sorted(p.relative_to(staging / "images").as_posix()
                         for p in (staging / "images").rglob("*") if p.is_file())
        if written != names:
            lost = sorted(set(names) - set(written))
            raise ConvertError(f"undistortion failed for {len(lost)} image(s) in {photos}: "
                               f"{_names_text(lost)} (unreadable?)")
        # Images first, the model last: a model is only ever installed beside its images.
        _move_tree(staging / "images", out / "images")
        sparse = out / "sparse" / "0"
        stale_cache = sparse / "points3D.ply"
        if stale_cache.is_file():  # the trainer's cache of the old points3D.bin; it would win
            stale_cache.unlink()
        _move_tree(staging / "sparse", sparse)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return len(names)


def _resized_size(width: int, height: int, factor: int) -> tuple[int, int]:
    """ImageMagick's ``-resize P%`` size: each side times 1/factor, rounded half up, at least 1."""
    return max(1, int(width / factor + 0.5)), max(1, int(height / factor + 0.5))


def _save_like(image: Image.Image, path: Path) -> None:
    """Save atomically in the format of ``path``'s extension (JPEG at quality 95)."""
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise ConvertError(f"{path}: cannot write images with this extension")
    extra = {"quality": 95} if image_format == "JPEG" else {}
    with atomic_write(path) as stream:
        image.save(stream, format=image_format, **extra)


def resize_images(root: Path, names: Sequence[str], factors: Sequence[int] = RESIZE_FACTORS) -> int:
    """Write ``root/images_<f>/<name>``: ``root/images/<name>`` shrunk by each factor ``f`` (Lanczos,
    ImageMagick's default filter for shrinking). Returns the number of files written."""

    def one(name: str) -> int:
        with Image.open(root / "images" / name) as source:
            source.load()
            for factor in factors:
                target = root / f"images_{factor}" / name
                target.parent.mkdir(parents=True, exist_ok=True)
                _save_like(source.resize(_resized_size(*source.size, factor), Image.LANCZOS), target)
        return len(factors)

    # Pillow releases the GIL while resizing and encoding, so threads use every core.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return sum(pool.map(one, names))


def _unread_problem(folder: Path, unread: Sequence[str], read: Sequence[str],
                    single_camera: bool) -> str:
    """Why COLMAP skipped ``unread``: with one shared camera, photos of another size than the
    first one read are skipped; otherwise the files could not be decoded."""
    def size(name: str) -> tuple[int, int] | None:
        try:
            with Image.open(folder / name) as image:
                return image.size
        except OSError:
            return None

    reference = size(read[0]) if read else None
    if single_camera and reference is not None and all(size(n) not in (None, reference) for n in unread):
        return (f"{len(unread)} photo(s) are not {reference[0]}x{reference[1]} like {read[0]}, "
                f"and one shared camera needs one size (use --camera_per_image): "
                f"{_names_text(unread)}")
    return f"COLMAP could not read {len(unread)} photo(s): {_names_text(unread)}"


# ----- front doors -----------------------------------------------------------------------------
def _sfm(options: ConvertOptions, photos_dir: Path, names: list[str], progress: _Progress,
         log: Log) -> ConvertResult:
    """Features, matching and mapping into ``distorted/``; the kept model goes to sparse/0."""
    distorted = options.source / "distorted"
    model = distorted / "sparse" / "0"
    database = distorted / "database.db"
    (distorted / "sparse").mkdir(parents=True, exist_ok=True)
    for stale in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        if stale.is_file():  # our own earlier output; reusing it would keep the old camera
            log(f"replacing {stale} from an earlier run")
            stale.unlink()
    shared = "one shared camera" if options.single_camera else "one camera per photo"
    with progress.stage("features", f"{len(names)} photos, {options.camera}, {shared}") as summary:
        read, keypoints = _extract(database, photos_dir, names, options)
        summary.append(f"{read} images, {keypoints} keypoints")
    read_names = _read_names(database)
    unread = sorted(set(names) - set(read_names))
    if unread:
        problem = _unread_problem(photos_dir, unread, read_names, options.single_camera)
        if len(read_names) < 2:
            raise ConvertError(f"{photos_dir}: {problem}")
        log(f"warning: {problem}")
    with progress.stage("matching", f"{options.matcher}") as summary:
        pairs, verified, inliers = _match(database, options)
        summary.append(f"{pairs} pairs, {verified} verified, {inliers} inlier matches")
    with progress.stage("mapping", "incremental") as summary:
        reconstruction, count = _map(database, photos_dir, distorted, options)
        registered = sorted(reconstruction.images[i].name for i in reconstruction.reg_image_ids()) \
            if reconstruction is not None else []
        points = reconstruction.num_points3D() if reconstruction is not None else 0
        if reconstruction is not None:
            if options.align:
                _align_to_plane(reconstruction)
            _write_model(reconstruction, model)
        kept = f" ({count} models, kept the largest)" if count > 1 else ""
        aligned = ", aligned to the principal plane" if options.align and reconstruction is not None else ""
        summary.append(f"{len(registered)} of {len(names)} images registered{kept}, {points} points{aligned}")
    left_out = _check_registration(registered, names, model, options.min_registered, options.matcher)
    if left_out:
        log(f"warning: {len(left_out)} photo(s) left out of the model: {_names_text(left_out)}")
    return ConvertResult(registered, left_out, points, model)


def convert(options: ConvertOptions, log: Log = print) -> ConvertResult:
    """Run the pipeline on ``options.source`` (see the module docstring for the layout).

    Raises :class:`ConvertError` (or ``FileNotFoundError``/``FileFormatError`` naming the file)
    for bad input, before writing anything where the input allows it to be checked up front.
    """
    root = options.source
    photos_dir = root / "input"
    if not root.is_dir():
        raise ConvertError(f"{root}: source folder not found")
    if not photos_dir.is_dir():
        raise ConvertError(f"{photos_dir}: folder not found; put the photos in LOCATION/input "
                           "(images/ is where splat-convert writes the undistorted ones)")
    _check_output_folder(root, photos_dir)
    total = (1 if options.skip_matching else 4) + (1 if options.resize else 0)
    progress = _Progress(total, log)
    with _colmap_log(options.verbose):
        if options.skip_matching:
            model = root / "distorted" / "sparse" / "0"
            if not _has_model(model):
                raise ConvertError(f"{model}: no COLMAP model (cameras.bin or cameras.txt) to "
                                   "undistort; run without --skip_matching first")
            result = ConvertResult(_model_image_names(model), model_folder=model)
        else:
            names = list_photos(photos_dir)
            if len(names) < 2:
                raise ConvertError(f"{photos_dir}: {len(names)} photo(s) found; structure from "
                                   "motion needs at least 2 (jpg, png, tif, ...)")
            result = _sfm(options, photos_dir, names, progress, log)
        _undistort_stage(result.model_folder, photos_dir, root, progress)
    result.image_folder = root / "images"
    if options.resize:
        _resize_stage(root, result.registered, progress)
    return result


def _undistort_stage(model: Path, photos: Path, out: Path, progress: _Progress) -> int:
    with progress.stage("undistortion", f"{model} -> {out / 'sparse' / '0'}") as summary:
        count = _undistort(model, photos, out)
        summary.append(f"{count} images -> PINHOLE in {out / 'images'}")
    return count


def _resize_stage(root: Path, names: Sequence[str], progress: _Progress) -> None:
    with progress.stage("resize", "images_2, images_4, images_8") as summary:
        written = resize_images(root, names)
        summary.append(f"{written} files")


def undistort_scene(scene: Path, out: Path, images: str = "images", resize: bool = False,
                    verbose: bool = False, log: Log = print) -> int:
    """Turn the COLMAP scene ``scene`` (model in ``sparse/0`` or ``sparse``, photos in
    ``scene/<images>``, any camera model) into a PINHOLE scene folder ``out`` with the
    same poses and points, without SfM. Returns the number of images written."""
    if not scene.is_dir():
        raise ConvertError(f"{scene}: scene folder not found")
    model = colmap.find_model_folder(scene / "sparse")
    photos = scene / images
    if not photos.is_dir():
        raise ConvertError(f"{photos}: image folder not found (choose it with --images)")
    if out.resolve() == scene.resolve():
        raise ConvertError(f"{out}: the output folder is the scene itself; undistorted images "
                           "would overwrite the originals, choose another -o")
    _check_output_folder(out, photos)
    progress = _Progress(2 if resize else 1, log)
    with _colmap_log(verbose):
        count = _undistort_stage(model, photos, out, progress)
    if resize:
        _resize_stage(out, _model_image_names(out / "sparse" / "0"), progress)
    return count
