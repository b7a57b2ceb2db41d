"""Rasterizer speed on a CUDA GPU: splatview's CUDA backend next to gsplat 1.5.3 (when importable).

    python bench/rasterizer.py [--sizes 1000000 3000000] [--repeats 50] [--ply MODEL.ply]

For each case it prints the median forward and forward+backward time (CUDA events, after
warm-up) and the peak GPU memory, ours and gsplat's from the same process on the same scene,
and the ratio gsplat/ours (> 1: we are faster). Scenes: random Gaussians in front of a
1920x1080 camera (SH degree 3), and optionally a trained model (``--ply``) seen from a camera
placed to frame it.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from rasterizer import Camera, Gaussians, look_at, read_ply, render  # noqa: E402
from viewer.scene_source import framing_camera  # noqa: E402

WIDTH, HEIGHT = 1920, 1080
TRAINED_MODEL_FOV = 2 * math.atan(HEIGHT / 2 / 1100)  # focal 1100 px at 1080p


def random_scene(n: int, seed: int = 0) -> Gaussians:
    """n random Gaussians around the origin, sized so that coverage stays realistic as n grows."""
    generator = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=generator)  # noqa: E731
    scale = math.log(0.02 * (1e6 / n) ** (1 / 3))
    return Gaussians(means=rand(n, 3), sh_dc=rand(n, 1, 3) * 0.5, sh_rest=rand(n, 15, 3) * 0.1,
                     opacity_logits=rand(n), log_scales=rand(n, 3) * 0.3 + scale,
                     quaternions=rand(n, 4)).to("cuda")


def scene_and_camera(n: int):
    """Random scene with leaves requiring grad, and the 1080p camera looking at it."""
    gaussians = random_scene(n)
    for tensor in gaussians.tensors().values():
        tensor.requires_grad_(True)
    return gaussians, Camera(WIDTH, HEIGHT, 1200, 1200, WIDTH / 2, HEIGHT / 2, look_at([0, 0, -4], [0, 0, 0]))


def time_ms(step: Callable[[], None], repeats: int, warmup: int = 5) -> float:
    """Median milliseconds of ``step`` (CUDA events)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def peak_memory_mb(step: Callable[[], None]) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def ours(gaussians: Gaussians, camera: Camera, backward: bool) -> Callable[[], None]:
    def step():
        with torch.set_grad_enabled(backward):
            out = render(gaussians, camera, backend="cuda")
            if backward:
                out.image.sum().backward()
    return step


def gsplat_step(gaussians: Gaussians, camera: Camera, backward: bool) -> Callable[[], None] | None:
    try:
        from gsplat import rasterization  # noqa: PLC0415
    except ImportError:
        return None
    viewmat = camera.world_to_camera.float().cuda()[None]
    intrinsics = camera.intrinsics.float().cuda()[None]

    def step():
        with torch.set_grad_enabled(backward):
            image, _, _ = rasterization(
                gaussians.means, gaussians.rotations, gaussians.scales, gaussians.opacities, gaussians.sh,
                viewmat, intrinsics, camera.width, camera.height, sh_degree=3)
            if backward:
                image.sum().backward()
    return step


def run_case(label: str, gaussians: Gaussians, camera: Camera, repeats: int) -> list[str]:
    rows = []
    for mode, backward in (("forward", False), ("forward+backward", True)):
        ours_step = ours(gaussians, camera, backward)
        ours_ms, ours_mb = time_ms(ours_step, repeats), peak_memory_mb(ours_step)
        theirs = gsplat_step(gaussians, camera, backward)
        if theirs is None:
            rows.append(f"| {label} | {mode} | {ours_ms:.2f} | {ours_mb:.0f} | - | - | - |")
            continue
        their_ms, their_mb = time_ms(theirs, repeats), peak_memory_mb(theirs)
        rows.append(f"| {label} | {mode} | {ours_ms:.2f} | {ours_mb:.0f} | {their_ms:.2f} | {their_mb:.0f} "
                    f"| {their_ms / ours_ms:.2f} |")
    return rows


_LOAD_PROBE = """
import time, torch
torch.cuda.init(); torch.zeros(1, device="cuda")
from rasterizer.cuda.compiler import load_module
start = time.perf_counter()
load_module("splat.cu", torch.cuda.current_device())
print(time.perf_counter() - start)
"""


def kernel_load_seconds() -> tuple[float, float]:
    """(first load with NVRTC compile, load from the disk cache), each in a fresh process."""
    repo = str(Path(__file__).resolve().parent.parent)
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, SPLATVIEW_KERNEL_CACHE=cache, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
        times = [float(subprocess.run([sys.executable, "-c", _LOAD_PROBE], env=env, check=True,
                                      capture_output=True, text=True).stdout.strip()) for _ in range(2)]
    return times[0], times[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--ply", help="also time a trained model's point_cloud.ply")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/rasterizer.py needs a CUDA GPU", file=sys.stderr)
        return 2
    try:
        import gsplat  # noqa: PLC0415
        anchor = f"gsplat {gsplat.__version__}"
    except ImportError:
        anchor = "gsplat not importable: ours only"
    print(f"$ python {' '.join(sys.argv)}")
    print(f"machine: {torch.cuda.get_device_name()} | torch {torch.__version__} | {platform.python_version()} | {anchor}")
    compile_s, cached_s = kernel_load_seconds()
    print(f"kernels: first load (NVRTC compile) {compile_s:.2f} s, cached load {cached_s:.3f} s")
    print("| scene (1920x1080) | pass | ours ms | ours peak MB | gsplat ms | gsplat peak MB | gsplat/ours |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n in args.sizes:
        gaussians, camera = scene_and_camera(n)
        for row in run_case(f"random {n / 1e6:g}M", gaussians, camera, args.repeats):
            print(row, flush=True)
        del gaussians
        torch.cuda.empty_cache()
    if args.ply:
        gaussians = read_ply(args.ply).to("cuda")
        for tensor in gaussians.tensors().values():
            tensor.requires_grad_(True)
        for row in run_case(f"{Path(args.ply).name} ({len(gaussians) / 1e6:.2f}M)", gaussians,
                            framing_camera(gaussians, WIDTH, HEIGHT, TRAINED_MODEL_FOV), args.repeats):
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
