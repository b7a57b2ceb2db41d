"""``splat-render``: render a trained model's train/test views, as graphdeco-inria's ``render.py``.

Output layout (identical to the reference)::

    <model>/<train|test>/ours_<N>/renders/00000.png
    <model>/<train|test>/ours_<N>/gt/00000.png

Files are numbered in camera order (COLMAP: sorted by image name; NeRF-synthetic: file order).
Views are rendered ``--batch_size`` at a time (one render per image size in a batch: the CUDA
backend draws them with one set of kernel launches); the images are those of one view at a time.
Loading parameters default to the values recorded in ``<model>/cfg_args``; flags given on the
command line override them (the reference's ``get_combined_args``).

With ``--camera-path FILE.json|orbit|spiral|interp`` it renders a camera path instead (a
nerfstudio camera_path.json, or one generated from the scene's cameras; see
``rasterizer/camera_paths.py``) to ``--video FILE.mp4``, or as PNG frames in
``<model>/path_<name>/ours_<N>/renders/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from rasterizer import read_gaussians_dropping_non_finite, render
from rasterizer.camera_paths import PATH_KINDS, CameraPath, generate_path, load_camera_path
from rasterizer.model_folder import latest_iteration, point_cloud_path, read_cameras_json, read_cfg_args
from trainer.arg_types import float_range, int_range
from trainer.batching import same_size_groups
from trainer.config import add_model_params, model_param_defaults
from trainer.image_io import save_png
from trainer.scene import ResolutionRule, Scene, View, load_cameras, load_scene

GENERATED_PATH_SECONDS = 8.0
DEFAULT_FPS = 30.0
DEFAULT_BATCH = 8


def read_model_gaussians(path: Path):
    """The model file's Gaussians (any format, by content), without those holding NaN or
    infinity; a one-line warning says how many went."""
    gaussians, dropped = read_gaussians_dropping_non_finite(path)
    if dropped:
        print(f"splat-render: warning: {dropped}", file=sys.stderr)
    return gaussians


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="splat-render", description=__doc__.split("\n")[0])
    # Loading flags default to None ("not given") so that cfg_args can fill them in.
    add_model_params(parser, sentinel=True)
    parser.add_argument("--iteration", type=int_range(-1), default=-1, help="-1: the largest saved iteration")
    parser.add_argument("--skip_train", action="store_true")
    parser.add_argument("--skip_test", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--antialiasing", action="store_true")
    parser.add_argument("--backend", choices=("auto", "reference", "cuda"), default="auto")
    parser.add_argument("--batch_size", type=int_range(1), default=DEFAULT_BATCH, metavar="B",
                        help=f"views rendered together (default {DEFAULT_BATCH}; the images do not depend on it)")
    paths = parser.add_argument_group("Camera paths (rendered instead of the train/test views)")
    paths.add_argument("--camera-path", "--camera_path", dest="camera_path", metavar="FILE.json|" + "|".join(PATH_KINDS),
                       help="a nerfstudio camera_path.json (e.g. saved by splat-view), or a path generated from the "
                            "scene's cameras: orbit (an ellipse around what they look at), spiral (LLFF's) or interp "
                            "(through the input cameras)")
    paths.add_argument("--video", metavar="FILE.mp4",
                       help="write an H.264 MP4 here (default: PNG frames in <model>/path_<name>/ours_<N>/renders)")
    paths.add_argument("--fps", type=float_range(0.0, open_low=True), help=f"frames per second (default: the file's, else {DEFAULT_FPS:g})")
    paths.add_argument("--seconds", type=float_range(0.0, open_low=True),
                       help=f"duration (default: the file's, else {GENERATED_PATH_SECONDS:g} s)")
    paths.add_argument("--video_size", dest="video_size", type=int_range(1), nargs=2,
                       metavar=("W", "H"), help="frame size in pixels (default: the file's render size, else the "
                                                "first camera's at -r; an MP4 rounds it down to even numbers)")
    return parser


def combined_settings(args: argparse.Namespace, require_source: bool = True) -> dict:
    """Loading parameters: command line, else cfg_args, else the reference's defaults."""
    recorded = read_cfg_args(Path(args.model_path))
    settings = {}
    for key, default in model_param_defaults().items():
        given = getattr(args, key)
        settings[key] = given if given is not None else recorded.get(key, default)
    if require_source and not settings["source_path"]:
        raise ValueError(f"{args.model_path}/cfg_args names no source_path; pass -s SOURCE")
    if settings["train_test_exp"]:
        raise ValueError("--train_test_exp (exposure compensation) is not supported yet")
    return settings


def render_split(name: str, views: list[View], scene: Scene, gaussians, iteration: int,
                 model_path: Path, settings: dict, args: argparse.Namespace) -> None:
    """Render ``views`` into ``<model>/<name>/ours_<iteration>/{renders,gt}``."""
    folder = model_path / name / f"ours_{iteration}"
    background = torch.tensor(scene.background, device=gaussians.device)
    degree = min(settings["sh_degree"], gaussians.sh_degree)
    with tqdm(total=len(views), desc=f"Rendering {name}", disable=args.quiet) as progress:
        for start in range(0, len(views), args.batch_size):
            batch = views[start:start + args.batch_size]
            for group in same_size_groups([view.camera for view in batch]):
                with torch.no_grad():
                    output = render(gaussians, [batch[i].camera for i in group], background=background,
                                    sh_degree=degree, antialiasing=args.antialiasing, backend=args.backend)
                for position, image in zip(group, output.image):
                    index = start + position
                    save_png(folder / "renders" / f"{index:05d}.png", image.clamp(0, 1))
                    save_png(folder / "gt" / f"{index:05d}.png", scene.images.get(batch[position].index))
                progress.update(len(group))


def scene_cameras(settings: dict, model_path: Path) -> list:
    """The scene's cameras at the ``-r`` loading size: from the source dataset, else the model's
    cameras.json."""
    try:
        if not settings["source_path"]:
            raise ValueError("cfg_args names no source_path")
        cameras = load_cameras(settings["source_path"], settings["images"])
    except (OSError, ValueError) as error:
        if not (model_path / "cameras.json").is_file():
            raise ValueError(f"no cameras for the path: the dataset cannot be read ({error}) and "
                             f"{model_path / 'cameras.json'} does not exist") from None
        cameras = read_cameras_json(model_path)
    rule = ResolutionRule(settings["resolution"])
    return [camera.resized(*rule.size(camera.width, camera.height)) for camera in cameras]


def path_frames(args: argparse.Namespace, settings: dict, model_path: Path):
    """(name, frames, fps, size) of ``--camera-path`` with ``--fps/--seconds/--video_size``."""
    from trainer.video import even_size  # noqa: PLC0415

    cameras = None
    if args.camera_path in PATH_KINDS:
        name = args.camera_path
        cameras = scene_cameras(settings, model_path)
        path = generate_path(name, cameras, args.seconds or GENERATED_PATH_SECONDS, args.fps or DEFAULT_FPS)
        frames = path.sample()
    else:
        name = Path(args.camera_path).stem
        loaded = load_camera_path(args.camera_path)
        path = CameraPath(loaded.keyframes, args.seconds or loaded.seconds, args.fps or loaded.fps,
                          loaded.loop, loaded.size)
        retimed = args.seconds is not None or args.fps is not None
        frames = loaded.recorded_frames if loaded.recorded_frames and not retimed else path.sample()
    size = tuple(args.video_size) if args.video_size else path.size
    if size is None:
        cameras = cameras or scene_cameras(settings, model_path)
        size = (cameras[0].width, cameras[0].height)
    if args.video:
        size = even_size(*size)
    return name, frames, path.fps, size


def render_path_main(args: argparse.Namespace) -> int:
    """``splat-render -m MODEL --camera-path ...``; returns the exit code."""
    from trainer.video import render_frames  # noqa: PLC0415

    model_path = Path(args.model_path)
    try:
        settings = combined_settings(args, require_source=False)
        iteration = latest_iteration(model_path) if args.iteration == -1 else args.iteration
        device = "cuda" if torch.cuda.is_available() else "cpu"
        gaussians = read_model_gaussians(point_cloud_path(model_path, iteration)).to(device)   # any format
        name, frames, fps, size = path_frames(args, settings, model_path)
        background = torch.tensor([1.0, 1.0, 1.0] if settings["white_background"] else [0.0, 0.0, 0.0],
                                  device=device)
        video = Path(args.video) if args.video else None
        frames_dir = None if video else model_path / f"path_{name}" / f"ours_{iteration}" / "renders"
        if not args.quiet:
            print(f"Rendering {model_path} at iteration {iteration}: {len(frames)} frames of {name} "
                  f"at {size[0]}x{size[1]}, {fps:g} fps")
        count = render_frames(gaussians, frames, size, fps, background, min(settings["sh_degree"], gaussians.sh_degree),
                              video=video, frames_dir=frames_dir, antialiasing=args.antialiasing,
                              backend=args.backend, quiet=args.quiet)
    except (OSError, ValueError, RuntimeError) as error:   # FileFormatError is a ValueError
        print(f"splat-render: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("splat-render: interrupted (no partial video was left)", file=sys.stderr)
        return 130
    if not args.quiet:
        print(f"Wrote {count} frames to {video or frames_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.model_path:
        parser.error("-m/--model_path MODEL is required")
    given = [flag for flag, value in (("--video", args.video), ("--fps", args.fps), ("--seconds", args.seconds),
                                      ("--video_size", args.video_size)) if value is not None]
    if given and not args.camera_path:
        parser.error(f"{given[0]} needs --camera-path")
    if args.video is not None and Path(args.video).suffix.lower() != ".mp4":
        parser.error(f"--video {args.video}: the file name must end in .mp4")
    if args.camera_path:
        if args.camera_path not in PATH_KINDS and Path(args.camera_path).suffix.lower() != ".json":
            parser.error(f"--camera-path {args.camera_path}: give a .json file or one of {', '.join(PATH_KINDS)}")
        return render_path_main(args)
    model_path = Path(args.model_path)
    try:
        settings = combined_settings(args)
        iteration = latest_iteration(model_path) if args.iteration == -1 else args.iteration
        ply = point_cloud_path(model_path, iteration)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        data_device = settings["data_device"] if torch.cuda.is_available() else "cpu"
        gaussians = read_model_gaussians(ply).to(device)   # any format, by content
        scene = load_scene(settings["source_path"], images=settings["images"],
                           resolution=settings["resolution"],
                           white_background=settings["white_background"], eval=settings["eval"],
                           data_device=data_device, quiet=args.quiet)
    except (OSError, ValueError, RuntimeError) as error:
        print(f"splat-render: error: {error}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"Rendering {model_path} at iteration {iteration} ({len(gaussians)} Gaussians)")
    with scene.images:
        if not args.skip_train:
            render_split("train", scene.train_views, scene, gaussians, iteration, model_path, settings, args)
        if not args.skip_test and scene.test_views:
            render_split("test", scene.test_views, scene, gaussians, iteration, model_path, settings, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
