"""``splat-render``: render a trained model's train/test views, as graphdeco-inria's ``render.py``.

Output layout (identical to the reference)::

    <model>/<train|test>/ours_<N>/renders/00000.png
    <model>/<train|test>/ours_<N>/gt/00000.png

Files are numbered in camera order (COLMAP: sorted by image name; NeRF-synthetic: file order).
Loading parameters default to the values recorded in ``<model>/cfg_args``; flags given on the
command line override them (the reference's ``get_combined_args``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from rasterizer import render
from rasterizer.ply import read_ply_dropping_non_finite
from rasterizer.model_folder import latest_iteration, point_cloud_path, read_cfg_args
from trainer.arg_types import int_range
from trainer.config import add_model_params, model_param_defaults
from trainer.image_io import save_png
from trainer.scene import Scene, View, load_scene

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
    return parser


def combined_settings(args: argparse.Namespace) -> dict:
    """Loading parameters: command line, else cfg_args, else the reference's defaults."""
    recorded = read_cfg_args(Path(args.model_path))
    settings = {}
    for key, default in model_param_defaults().items():
        given = getattr(args, key)
        settings[key] = given if given is not None else recorded.get(key, default)
    if not settings["source_path"]:
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
    for index, view in enumerate(tqdm(views, desc=f"Rendering {name}", disable=args.quiet)):
        with torch.no_grad():
            output = render(gaussians, view.camera,
                            background=background, sh_degree=degree,
                            antialiasing=args.antialiasing, backend=args.backend)
        save_png(folder / "renders" / f"{index:05d}.png", output.image.clamp(0, 1))
        save_png(folder / "gt" / f"{index:05d}.png", scene.images.get(view.index))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.model_path:
        parser.error("-m/--model_path MODEL is required")
    model_path = Path(args.model_path)
    try:
        settings = combined_settings(args)
        iteration = latest_iteration(model_path) if args.iteration == -1 else args.iteration
        ply = point_cloud_path(model_path, iteration)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        data_device = settings["data_device"] if torch.cuda.is_available() else "cpu"
        gaussians, dropped = read_ply_dropping_non_finite(ply)
        gaussians = gaussians.to(device)
        if dropped:
            print(f"splat-render: warning: {dropped}", file=sys.stderr)
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
