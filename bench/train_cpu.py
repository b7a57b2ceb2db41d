"""CPU training benchmark: ``shapes`` (NeRF-synthetic, 50 train / 10 test views) at ``-r 4``
(100x100 px) with ``--eval -w`` on the reference rasterizer, for a fixed number of iterations.

Prints the machine, steps/s, the test L1/PSNR/SSIM of the last iteration's test report (the model
before that iteration's densification, as the reference's report) and the number of Gaussians.

    python bench/train_cpu.py                                # defaults below
    python bench/train_cpu.py --iterations 10 --random_init_points 100000    # the reference's init (slow)
    python bench/train_cpu.py -- --densify_grad_threshold 0.0004             # extra splat-train flags

The scene has no point cloud, so training starts from random points as the reference does
(100000 of them); ``--random_init_points`` (default here 3000) keeps CPU runs short:
the reference rasterizer's CPU cost grows steeply with the number of overlapping Gaussians.
Iterations default to 1000: densification starts at 500, as in the reference schedule.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from trainer.config import parse_args  # noqa: E402
from trainer.train import Trainer, at_report_points, evaluate_views  # noqa: E402


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as stream:
            for line in stream:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, Python {platform.python_version()}, {platform.system()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(REPO.parent / "shared" / "data" / "shapes"),
                        help="scene folder (default ../shared/data/shapes)")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--resolution", type=int, default=4)
    parser.add_argument("--random_init_points", type=int, default=3000)
    parser.add_argument("--model", default=None, help="output folder (default: a temporary one)")
    parser.add_argument("--progress", action="store_true", help="show the progress bar and logs")
    parser.add_argument("extra", nargs="*", help="further splat-train flags (after --)")
    args = parser.parse_args(argv)
    if not Path(args.source).is_dir():
        print(f"train_cpu: {args.source}: scene not found", file=sys.stderr)
        return 1

    with tempfile.TemporaryDirectory(prefix="splat-bench-") as scratch:
        model = args.model or str(Path(scratch) / "model")
        config = parse_args([
            "-s", args.source, "-m", model, "-r", str(args.resolution), "--eval", "-w",
            "--iterations", str(args.iterations), "--test_iterations", "-1", "--save_iterations",
            str(args.iterations), "--random_init_points", str(args.random_init_points),
            "--data_device", "cpu", "--backend", "reference", *([] if args.progress else ["--quiet"]),
            *args.extra])
        trainer = Trainer(config)
        started = time.perf_counter()
        trainer.setup()
        setup_s = time.perf_counter() - started
        initial = len(trainer.model)
        final: dict[str, float] = {}

        def evaluate(trainer: Trainer, _iteration: int) -> None:
            began = time.perf_counter()
            final.update(evaluate_views(trainer.model, trainer.scene, trainer.scene.test_views, trainer.background,
                                        "reference", with_ssim=True), seconds=time.perf_counter() - began,
                         gaussians=len(trainer.model))

        # The model of the last iteration's test report (see at_report_points), not the one
        # after that iteration's densification.
        trainer.hooks.append(at_report_points([args.iterations], evaluate))
        result = trainer.run()
        trainer.scene.close()

    view = trainer.scene.train_views[0].camera
    print(f"machine        : {machine()}")
    print(f"scene          : {args.source} at -r {args.resolution} ({view.width}x{view.height} px), "
          f"{len(trainer.scene.train_views)} train / {len(trainer.scene.test_views)} test views, white background")
    print(f"initial points : {initial} (random)  setup {setup_s:.1f} s")
    train_s = result.elapsed_s - final.get("seconds", 0.0)  # evaluation left out
    print(f"iterations     : {result.steps} in {train_s:.1f} s -> {result.steps / max(train_s, 1e-9):.2f} steps/s "
          f"({result.status})")
    if result.status != "completed" or "psnr" not in final:
        return 1
    print(f"final test     : L1 {final['l1']:.5f}  PSNR {final['psnr']:.3f} dB  SSIM {final['ssim']:.4f} "
          f"(at the start of iteration {args.iterations}, as the reference's test report)")
    print(f"gaussians      : {final['gaussians']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
