"""``splat-metrics``: SSIM, PSNR and LPIPS of rendered test views, as graphdeco-inria's ``metrics.py``.

For each model folder and each method folder ``<model>/test/<method>/`` (e.g. ``ours_7000``,
``ours_30000``) it pairs ``renders/<name>`` with ``gt/<name>``, keeps the first 3 channels
in [0, 1], prints the mean of each metric and writes (atomically, ``json.dump(indent=True)``)::

    <model>/results.json    {"<method>": {"SSIM": f, "PSNR": f, "LPIPS": f}, ...}
    <model>/per_view.json   {"<method>": {"SSIM": {"<name>": f, ...}, "PSNR": {...}, "LPIPS": {...}}}

LPIPS is computed only when its weights are found locally (see ``trainer.metrics.load_lpips``);
otherwise one line says why and the ``LPIPS`` keys are left out.

``--batch_size B`` measures B image pairs of one size at a time (default 1, as the reference:
a convolution over a batch rounds differently from one image at a time, in the last digits).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from rasterizer.files import FileFormatError, atomic_write_text
from trainer.arg_types import int_range
from trainer.metrics import load_lpips, psnr, ssim

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def _natural_key(name: str) -> list:
    """Sort key comparing digit runs as numbers: ``ours_7000`` before ``ours_30000``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _read_image(path: Path, device: torch.device) -> torch.Tensor:
    """``[1, 3, H, W]`` float32 in [0, 1] (8-bit value / 255; alpha dropped)."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as error:
        raise FileFormatError(path, f"cannot read image ({error})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0).to(device, torch.float32) / 255


def _image_names(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: missing folder")
    return sorted((p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                  key=_natural_key)


def evaluate_method(method_dir: Path, lpips_model: Callable | None, device: torch.device,
                    quiet: bool = False, batch_size: int = 1) -> dict[str, dict[str, float]]:
    """Per-view metrics of one method folder: ``{"SSIM": {name: f}, "PSNR": {...}[, "LPIPS": {...}]}``,
    measured ``batch_size`` pairs (of one image size) at a time."""
    renders_dir, gt_dir = method_dir / "renders", method_dir / "gt"
    names, gt_names = _image_names(renders_dir), _image_names(gt_dir)
    if names != gt_names:
        unpaired = sorted(set(names) ^ set(gt_names), key=_natural_key)
        raise ValueError(f"{method_dir}: renders/ and gt/ do not hold the same images "
                         f"({len(names)} vs {len(gt_names)}; e.g. {unpaired[0]} has no partner)")
    if not names:
        raise ValueError(f"{method_dir}: no images in renders/")
    measures = {"SSIM": ssim, "PSNR": psnr, **({"LPIPS": lpips_model} if lpips_model is not None else {})}
    values: dict[str, dict[str, float]] = {metric: {} for metric in measures}
    with torch.no_grad(), tqdm(total=len(names), desc=f"Metric evaluation progress ({method_dir.name})",
                               disable=quiet) as progress:
        for start in range(0, len(names), batch_size):
            pairs: dict[tuple, list[tuple[str, torch.Tensor, torch.Tensor]]] = {}  # by image size
            for name in names[start:start + batch_size]:
                render, gt = _read_image(renders_dir / name, device), _read_image(gt_dir / name, device)
                if render.shape != gt.shape:
                    raise ValueError(f"{method_dir}: {name} is {render.shape[3]}×{render.shape[2]} in renders/ "
                                     f"but {gt.shape[3]}×{gt.shape[2]} in gt/")
                pairs.setdefault(tuple(render.shape), []).append((name, render, gt))
            for group in pairs.values():
                renders, gts = torch.cat([r for _, r, _ in group]), torch.cat([g for _, _, g in group])
                for metric, measure in measures.items():
                    for (name, _, _), value in zip(group, measure(renders, gts).float().cpu().tolist()):
                        values[metric][name] = value
                progress.update(len(group))
    return {metric: {name: per_name[name] for name in names} for metric, per_name in values.items()}


def evaluate_model(model: Path, lpips_model: Callable | None, device: torch.device,
                   quiet: bool = False, batch_size: int = 1) -> tuple[dict, dict]:
    """``(results, per_view)`` for every method folder under ``<model>/test/``; prints the means."""
    test_dir = model / "test"
    if not test_dir.is_dir():
        raise FileNotFoundError(f"{test_dir}: no test/ folder (run splat-render on a model trained with --eval)")
    methods = sorted((p for p in test_dir.iterdir() if p.is_dir()), key=lambda p: _natural_key(p.name))
    if not methods:
        raise FileNotFoundError(f"{test_dir}: no method folders (expected e.g. ours_30000/)")
    results, per_view = {}, {}
    for method_dir in methods:
        print("Method:", method_dir.name)
        views = evaluate_method(method_dir, lpips_model, device, quiet, batch_size)
        # Means in float32 of the float32 per-view values, as the reference's torch.tensor(list).mean().
        results[method_dir.name] = {m: torch.tensor(list(v.values())).mean().item() for m, v in views.items()}
        per_view[method_dir.name] = views
        for metric, mean in results[method_dir.name].items():
            print(f"  {metric:<5}: {mean:>12.7f}")  # the reference's "  SSIM : {:>12.7f}" lines
        print("")
    return results, per_view


@contextlib.contextmanager
def full_float32() -> Iterator[None]:
    """Turn off TF32 while measuring: on NVIDIA GPUs PyTorch lets cuDNN convolve in TF32, which
    moves LPIPS and SSIM by about 1e-3 relative and would make metrics depend on the machine."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="splat-metrics", description="SSIM, PSNR and LPIPS of <model>/test/<method>/renders against gt.")
    parser.add_argument("-m", "--model_paths", nargs="+", required=True, metavar="MODEL",
                        help="trained model folders (each with test/<method>/{renders,gt}/)")
    parser.add_argument("--device", default=None,
                        help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--batch_size", type=int_range(1), default=1, metavar="B",
                        help="image pairs measured together (default 1)")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    lpips_model, lpips_note = load_lpips(device)
    if lpips_model is None:
        print(f"LPIPS skipped: {lpips_note}")

    failed = False
    for model in args.model_paths:
        print("Scene:", model)
        try:
            with full_float32():
                results, per_view = evaluate_model(Path(model), lpips_model, device, args.quiet, args.batch_size)
        except (OSError, ValueError) as error:  # FileFormatError is a ValueError
            print(f"splat-metrics: error: {error}", file=sys.stderr)
            failed = True
            continue
        atomic_write_text(Path(model) / "results.json", json.dumps(results, indent=True))
        atomic_write_text(Path(model) / "per_view.json", json.dumps(per_view, indent=True))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
