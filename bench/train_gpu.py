"""GPU training benchmark: splatview's trainer (CUDA backend) next to gsplat 1.5.3 on one scene.

    python bench/train_gpu.py [--source ../shared/data/shapes] [-w] [-r N] [--iterations 30000]
                              [--snapshot 7000] [--skip_gsplat] [--train_args "FLAGS"]
                              [--gsplat_opacity_reset] [--gsplat_white_reset] [--repeats K]
                              [--first_seed S]

Both train the same scene (default ``shapes``, NeRF-synthetic, 400x400; ``-w`` for a white
background, as NeRF-synthetic scenes are evaluated; ``-r`` as splat-train's) with ``--eval``
and the same schedule: the reference's learning rates and exponential position schedule scaled
by the scene extent, SH degree +1 every 1000 steps, loss 0.8 L1 + 0.2 (1 - SSIM) on the
clamped render, one random training view per step without replacement, and the reference's
densification (ours: ``splat-train``'s; gsplat: ``DefaultStrategy`` with the same thresholds
and intervals). Both start from the same initial points. At ``--snapshot`` and at the end it
records the wall time (evaluation excluded), the number of Gaussians and the test PSNR/SSIM
(measured the same way for both, with our metrics). Both are evaluated where the reference's
``training_report`` evaluates iteration N: after N - 1 optimiser steps, before step N's
densification and update (ours with ``trainer.train.at_report_points``: the model that
``splat-train --test_iterations N`` reports on). Evaluated after step N's densification, ours
read 1.6 dB below gsplat at 3500 steps on shapes (2026-12-01); at the report point it reads
0.13 dB above (bench/RESULTS.md). The time of the last step is left out of both. Peak GPU
memory is training's, as the time is: the training images on the GPU included, evaluation left
out (its PyTorch SSIM on full-size images needs more than our training step, and splat-train's
test reports compute no SSIM), and only what the run allocated: each run starts after a garbage
collection and counts from the memory still allocated then (``TrainingMeter``); cuBLAS's
process-wide workspace is made before the first run (``allocate_process_buffers``).
The last lines give the speed ratio (gsplat's wall time over ours) at each row.

gsplat's loop here computes SSIM with ``trainer.metrics.ssim`` (PyTorch convolutions), as the
anchor figures were measured; gsplat's own example trainer can use the separate fused-ssim
package instead, which this bench does not install.

gsplat 1.5.3's ``DefaultStrategy`` never resets opacities: its test
``step % self.reset_every == 0 & step > 0`` parses as ``step % reset_every == (0 & step) > 0``,
which is never true. The reference resets them every 3000 steps until densification stops, so
at 7k its model is 1000 steps past a reset and gsplat's is not. ``--gsplat_opacity_reset`` does
the reset that the strategy means to do (``gsplat.strategy.ops.reset_opa`` to twice
``prune_opa``, every ``reset_every`` steps before ``refine_stop_iter``) for a like-for-like
comparison. With a white background (``-w``) the reference also resets opacities once when
densification starts (iteration ``densify_from_iter``, 500), which neither the strategy nor
``--gsplat_opacity_reset`` does: ``--gsplat_white_reset`` adds that reset to gsplat's loop (at
step ``refine_start_iter``), so that both follow the reference's reset schedule. ``--train_args`` passes more ``splat-train`` flags to ours (e.g.
``--opacity_reset_interval 100000`` for no reset; the rows then name them).

``--repeats K`` trains each system K times, alternating, with seeds S .. S+K-1 (``--first_seed
S``, 0 by default; ours: ``--seed``; gsplat: Python, NumPy and torch), and ends with each
snapshot's medians and mean test PSNR with its standard deviation: a single run's PSNR moves by
up to a dB on real scenes. ``--first_seed`` lets runs too long for one sitting (beer to 30k:
about five minutes a seed for both systems) be split, seed by seed.
"""

from __future__ import annotations

import argparse
import gc
import math
import platform
import random
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.repeats import mean_and_sd  # noqa: E402
from rasterizer import Gaussians  # noqa: E402
from trainer.config import parse_args  # noqa: E402
from trainer.metrics import l1_loss, psnr, ssim  # noqa: E402
from trainer.scene import load_scene, view_image_float  # noqa: E402
from trainer.train import Trainer, at_report_points, evaluate_views  # noqa: E402


def allocate_process_buffers() -> None:
    """Make the process-wide buffers that the first run would otherwise allocate and count.

    The first matrix product of a process gives cuBLAS a workspace from PyTorch's allocator (32
    MiB on Hopper) that stays for the life of the process. Both systems use cuBLAS (the split of
    densification multiplies rotations), but only the first run would count its workspace, and
    gsplat always runs after ours. On 2026-12-01 the first of two runs of ours peaked 31 MiB
    above the second on shapes (their Gaussian counts 1% apart), about that workspace. Made
    here, before any run, it counts for neither system."""
    a = torch.ones((2, 8, 8), device="cuda")
    torch.bmm(a, a)
    torch.mm(a[0], a[0])
    torch.addmm(a[0, 0], a[0], a[0])
    torch.cuda.synchronize()


class TrainingMeter:
    """Wall time and peak GPU memory of one run's training; evaluation runs between ``pause()``
    and ``resume()`` and counts in neither.

    Made before the run sets up: it collects garbage first (reference cycles keep earlier runs'
    CUDA tensors until a collection: a second run measured up to 290 MB more than the first) and
    counts memory from what is still allocated then. ``start()`` starts the clock once setup is
    done (setup's memory counts, its time does not)."""

    def __init__(self) -> None:
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        self.baseline = self.peak = torch.cuda.memory_allocated()
        self.elapsed = 0.0
        self.started = time.perf_counter()

    def start(self) -> None:
        torch.cuda.synchronize()
        self.started = time.perf_counter()

    def pause(self) -> float:
        """Seconds of training so far."""
        torch.cuda.synchronize()
        self.elapsed += time.perf_counter() - self.started
        self.peak = max(self.peak, torch.cuda.max_memory_allocated())
        return self.elapsed

    def resume(self) -> None:
        torch.cuda.reset_peak_memory_stats()
        self.started = time.perf_counter()

    def peak_mib(self) -> float:
        """The most memory training allocated up to the last ``pause()``, in MiB."""
        return (self.peak - self.baseline) / 2**20


def ours(source: str, white: bool, resolution: int, iterations: int, snapshot: int,
         train_args: str = "", seed: int = 0) -> list[dict]:
    rows = []
    system = f"splatview {train_args}".strip()
    meter = TrainingMeter()
    with tempfile.TemporaryDirectory() as model:
        config = parse_args(["-s", source, "-m", model, "--eval", *(["-w"] if white else []), "-r", str(resolution),
                             "--iterations", str(iterations),
                             "--test_iterations", "-1", "--save_iterations", str(iterations),
                             "--backend", "cuda", "--data_device", "cuda", "--quiet", "--disable_viewer",
                             "--seed", str(seed), *shlex.split(train_args)])
        trainer = Trainer(config)
        trainer.setup()
        meter.start()

        def record(step: int) -> None:
            seconds = meter.pause()
            metrics = evaluate_views(trainer.model, trainer.scene, trainer.scene.test_views,
                                     trainer.background, "cuda", with_ssim=True)
            rows.append({"system": system, "steps": step, "seconds": seconds,
                         "gaussians": len(trainer.model), "psnr": metrics["psnr"], "ssim": metrics["ssim"]})
            meter.resume()

        trainer.hooks.append(at_report_points((snapshot, iterations), lambda _trainer, step: record(step)))
        result = trainer.run()
        if result.status != "completed":
            raise RuntimeError(f"our training ended with {result.status}: {result.message}")
        meter.pause()  # the last iteration's memory counts too
        peak = meter.peak_mib()
        trainer.scene.close()
    for row in rows:
        row["peak_mb"] = peak
    return rows


def gsplat_rows(source: str, white: bool, resolution: int, iterations: int, snapshot: int,
                opacity_reset: bool = False, seed: int = 0, white_reset: bool = False) -> list[dict] | None:
    try:
        from gsplat import DefaultStrategy, rasterization  # noqa: PLC0415
        from gsplat.strategy.ops import reset_opa  # noqa: PLC0415
    except ImportError:
        return None
    system = "gsplat 1.5.3" + (" + opacity reset" if opacity_reset else "") + (" + white reset" if white_reset else "")
    random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
    meter = TrainingMeter()
    scene = load_scene(source, resolution=resolution, white_background=white, eval=True, data_device="cuda",
                       quiet=True)
    device = torch.device("cuda")
    background = torch.full((3,), 1.0 if white else 0.0, device=device)
    extent = scene.extent
    start = Gaussians.from_points(scene.point_cloud.xyz, scene.point_cloud.rgb, sh_degree=3)
    params = torch.nn.ParameterDict({
        "means": start.means, "scales": start.log_scales, "quats": start.quaternions,
        "opacities": start.opacity_logits, "sh0": start.sh_dc, "shN": start.sh_rest,
    }).to(device)
    rates = {"means": 1.6e-4 * extent, "scales": 5e-3, "quats": 1e-3, "opacities": 0.025,
             "sh0": 2.5e-3, "shN": 2.5e-3 / 20}
    optimizers = {name: torch.optim.Adam([{"params": params[name], "lr": lr, "name": name}], eps=1e-15)
                  for name, lr in rates.items()}
    strategy = DefaultStrategy()  # its defaults are the reference's thresholds and intervals
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=extent)
    cameras = [v.camera for v in scene.train_views]
    images = [scene.images.get(v.index) for v in scene.train_views]
    order: list[int] = []
    rows = []

    def render(camera, degree):
        """[1, H, W, 3] image over the background, and gsplat's info for its strategy."""
        colors = torch.cat([params["sh0"], params["shN"]], dim=1)
        image, alpha, info = rasterization(
            params["means"], params["quats"], torch.exp(params["scales"]), torch.sigmoid(params["opacities"]),
            colors, camera.world_to_camera.float().to(device)[None], camera.intrinsics.float().to(device)[None],
            camera.width, camera.height, sh_degree=degree)
        # C + T * background, as both rasterizers define it (gsplat's packed mode rejects a
        # per-camera background argument in 1.5.3).
        return image + (1.0 - alpha) * background, alpha, info

    def evaluate(step: int, seconds: float) -> None:
        totals = {"psnr": 0.0, "ssim": 0.0}
        with torch.no_grad():
            for view in scene.test_views:
                image = render(view.camera, 3)[0][0].permute(2, 0, 1).clamp(0, 1)
                gt = view_image_float(scene.images.get(view.index), background)
                totals["psnr"] += float(psnr(image, gt))
                totals["ssim"] += float(ssim(image, gt))
        count = len(scene.test_views)
        rows.append({"system": system, "steps": step, "seconds": seconds,
                     "gaussians": len(params["means"]), "psnr": totals["psnr"] / count,
                     "ssim": totals["ssim"] / count})

    # gsplat compiles its CUDA extension on first use (over a minute): not training time.
    with torch.no_grad():
        render(cameras[0], 0)
    meter.start()
    for step in range(iterations):
        if step + 1 in (snapshot, iterations):  # as ours: before step N's densification and update
            evaluate(step + 1, meter.pause())
            meter.resume()
        progress = min(step / 30000, 1.0)  # the position schedule spans 30k steps, as the reference
        for group in optimizers["means"].param_groups:
            group["lr"] = math.exp((1 - progress) * math.log(1.6e-4 * extent) + progress * math.log(1.6e-6 * extent))
        if not order:
            order = list(range(len(cameras)))
            random.shuffle(order)
        index = order.pop()
        degree = min((step + 1) // 1000, 3)
        image, _, info = render(cameras[index], degree)
        strategy.step_pre_backward(params, optimizers, state, step, info)
        image = image[0].permute(2, 0, 1).clamp(0, 1)
        gt = view_image_float(images[index], background)
        loss = 0.8 * l1_loss(image, gt) + 0.2 * (1.0 - ssim(image, gt))
        loss.backward()
        strategy.step_post_backward(params, optimizers, state, step, info, packed=True)
        if (opacity_reset and 0 < step < strategy.refine_stop_iter and step % strategy.reset_every == 0
                or white_reset and step == strategy.refine_start_iter):
            reset_opa(params=params, optimizers=optimizers, state=state, value=strategy.prune_opa * 2.0)
        for optimizer in optimizers.values():
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    meter.pause()
    peak = meter.peak_mib()
    for row in rows:
        row["peak_mb"] = peak
    scene.close()
    return rows


def print_rows(rows: list[dict]) -> None:
    for row in rows:
        print(f"| {row['system']} | {row['steps']} | {row['seconds']:.1f} | {1e3 * row['seconds'] / row['steps']:.2f} | "
              f"{row['peak_mb']:.0f} | {row['gaussians']} | {row['psnr']:.2f} | {row['ssim']:.4f} |", flush=True)


def _medians(runs: list[list[dict]]) -> list[dict]:
    """Per snapshot over the runs: median seconds and peak memory, mean PSNR and its standard
    deviation (0 for one run)."""
    result = []
    for rows in zip(*runs):
        psnr, psnr_sd = mean_and_sd(row["psnr"] for row in rows)
        result.append({"steps": rows[0]["steps"], "seconds": statistics.median(row["seconds"] for row in rows),
                       "peak_mb": statistics.median(row["peak_mb"] for row in rows), "psnr": psnr, "psnr_sd": psnr_sd})
    return result


def print_summary(system: str, runs: list[list[dict]]) -> None:
    for row in _medians(runs):
        print(f"{system} {row['steps']} steps over {len(runs)} runs: median {row['seconds']:.1f} s, "
              f"test PSNR {row['psnr']:.2f} +- {row['psnr_sd']:.2f} dB (mean +- standard deviation)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default=str(REPO.parent / "shared" / "data" / "shapes"))
    parser.add_argument("-w", "--white_background", action="store_true")
    parser.add_argument("-r", "--resolution", type=int, default=-1)
    parser.add_argument("--iterations", type=int, default=30000)
    parser.add_argument("--snapshot", type=int, default=7000)
    parser.add_argument("--skip_gsplat", action="store_true")
    parser.add_argument("--train_args", default="", help="more splat-train flags for ours, one string")
    parser.add_argument("--gsplat_opacity_reset", action="store_true",
                        help="reset gsplat's opacities as DefaultStrategy means to (1.5.3 never does; see above)")
    parser.add_argument("--gsplat_white_reset", action="store_true",
                        help="with -w, also reset gsplat's opacities when densification starts, as the reference does")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each system, seeds S .. S+K-1")
    parser.add_argument("--first_seed", type=int, default=0, metavar="S",
                        help="the first run's seed (0): long runs can be split across calls")
    args = parser.parse_args(argv)
    if not 0 < args.snapshot < args.iterations:
        parser.error("--snapshot must be between 0 and --iterations")
    if args.gsplat_white_reset and not args.white_background:
        parser.error("--gsplat_white_reset: the reference resets at densify_from_iter only with -w")
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: takes a positive number of runs")
    if args.first_seed < 0:
        parser.error(f"--first_seed {args.first_seed}: takes a seed of 0 or more")
    if not torch.cuda.is_available():
        print("bench/train_gpu.py needs a CUDA GPU", file=sys.stderr)
        return 2
    print(f"$ python {' '.join(sys.argv)}")
    print(f"machine: {torch.cuda.get_device_name()} | torch {torch.__version__} | Python {platform.python_version()}")
    allocate_process_buffers()
    print(f"scene: {args.source} ({'white' if args.white_background else 'black'} background, -r {args.resolution})")
    print("| system | steps | train wall s | ms/step | peak GPU MB | Gaussians | test PSNR | test SSIM |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    mine, theirs = [], []   # one list of rows per run
    for seed in range(args.first_seed, args.first_seed + args.repeats):
        try:
            mine.append(ours(args.source, args.white_background, args.resolution, args.iterations, args.snapshot,
                             args.train_args, seed))
        except SystemExit:  # splat-train's parser rejected --train_args (its message is above)
            return 2
        print_rows(mine[-1])
        if not args.skip_gsplat:
            rows = gsplat_rows(args.source, args.white_background, args.resolution, args.iterations, args.snapshot,
                               args.gsplat_opacity_reset, seed, args.gsplat_white_reset)
            if rows is None:
                print("gsplat not importable: ours only")
                args.skip_gsplat = True
            else:
                theirs.append(rows)
                print_rows(rows)
    if args.repeats > 1:
        print_summary("splatview", mine)
        if theirs:
            print_summary("gsplat", theirs)
    for a, b in zip(_medians(mine), _medians(theirs) if theirs else []):
        print(f"{a['steps']} steps: splatview {b['seconds'] / a['seconds']:.2f}x faster than gsplat, "
              f"PSNR {a['psnr'] - b['psnr']:+.2f} dB, peak memory {a['peak_mb'] / b['peak_mb']:.2f}x gsplat's"
              + (f" (medians and mean PSNR of {args.repeats} runs each)" if args.repeats > 1 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
