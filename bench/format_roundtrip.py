"""Round trips through every model format, measured by rendering: export -> import -> render.

For a trained model folder it writes the Gaussians in each format (``rasterizer/formats``), reads
them back, renders the model's cameras (``cameras.json``, at most ``--views`` of them, scaled to
``--width``) with the reference rasterizer before and after, and prints per format: file size,
write and read time, PSNR of after against before (inf: bit-exact) and the largest per-pixel
difference.

    python bench/format_roundtrip.py MODEL [--iteration N] [--views 8] [--width 200]
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rasterizer import render  # noqa: E402
from rasterizer.formats import FORMATS, SUFFIXES, read_gaussians, write_gaussians  # noqa: E402
from rasterizer.model_folder import read_cfg_args  # noqa: E402
from trainer.edit import open_model  # noqa: E402


def images(gaussians, cameras, background) -> list[torch.Tensor]:
    with torch.no_grad():
        return [render(gaussians, camera, background=background, backend="reference",
                       sh_degree=gaussians.sh_degree).image.clamp(0, 1) for camera in cameras]


def psnr(before: list[torch.Tensor], after: list[torch.Tensor]) -> float:
    mse = sum(float(((a - b) ** 2).mean()) for a, b in zip(before, after)) / len(before)
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a trained model folder (with cameras.json)")
    parser.add_argument("--iteration", type=int, default=-1)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--width", type=int, default=200)
    args = parser.parse_args()
    source = open_model(args.model, args.iteration)
    if not source.cameras:
        parser.error(f"{args.model}: no cameras.json to render from")
    step = max(1, len(source.cameras) // args.views)
    cameras = [c.resized(args.width, round(args.width * c.height / c.width)) for c in source.cameras[::step]][: args.views]
    white = read_cfg_args(args.model).get("white_background", False) if (Path(args.model) / "cfg_args").is_file() else False
    background = torch.ones(3) if white else torch.zeros(3)
    g = source.gaussians
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"model: {source.file} ({len(g):,} Gaussians, SH degree {g.sh_degree}); "
          f"{len(cameras)} views at {cameras[0].width}x{cameras[0].height}, reference rasterizer")
    before = images(g, cameras, background)
    print("| format | bytes | bytes/Gaussian | write s | read s | Gaussians back | PSNR dB (vs original) | max abs diff |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as folder:
        for format_name in FORMATS:
            path = Path(folder) / f"model{SUFFIXES[format_name]}"
            start = time.perf_counter()
            write_gaussians(path, g, format_name)
            written = time.perf_counter()
            back = read_gaussians(path)
            read = time.perf_counter()
            after = images(back, cameras, background)
            difference = max(float((a - b).abs().max()) for a, b in zip(before, after))
            size = path.stat().st_size
            print(f"| {format_name} | {size:,} | {size / len(g):.1f} | {written - start:.2f} | {read - written:.2f} | "
                  f"{len(back):,} | {psnr(before, after):.2f} | {difference:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
