"""CPU timings of the reference rasterizer backend.

    python bench/reference_cpu.py [--repeats N] [--threads T]

For 10k and 100k random Gaussians at 100x100 and 400x400 it prints the median wall time of
a forward render (no grad: the viewer's path) and of forward + backward (the training
path), after one warm-up of each, with the peak resident memory each needs. Every
configuration runs in its own subprocess so that the peak RSS figures do not mix.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time

# The repository first: the script's own folder holds bench/rasterizer.py, which would
# otherwise shadow the rasterizer package.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

CONFIGS = [(10_000, 100), (10_000, 400), (100_000, 100), (100_000, 400)]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def random_scene(count: int, size: int, seed: int = 0):
    """Means ~ N(0, 0.8^2) seen from distance 4, scales shrinking with the count so that
    coverage stays realistic, random rotations, SH degree 3 with small higher bands."""
    import torch

    from rasterizer import Camera, Gaussians, look_at

    gen = torch.Generator().manual_seed(seed)
    scale = 0.03 * (1e4 / count) ** (1.0 / 3.0)
    gaussians = Gaussians(
        means=torch.randn(count, 3, generator=gen) * 0.8,
        sh_dc=torch.randn(count, 1, 3, generator=gen) * 0.5,
        sh_rest=torch.randn(count, 15, 3, generator=gen) * 0.05,
        opacity_logits=torch.randn(count, generator=gen),
        log_scales=math.log(scale) + 0.3 * torch.randn(count, 3, generator=gen),
        quaternions=torch.randn(count, 4, generator=gen),
    )
    camera = Camera.from_fov(size, size, math.radians(50.0), None, look_at([0.0, 0.0, -4.0], [0, 0, 0]))
    return gaussians, camera


def worker(count: int, size: int, repeats: int, threads: int | None) -> dict:
    import torch

    from rasterizer import render

    if threads:
        torch.set_num_threads(threads)
    gaussians, camera = random_scene(count, size)
    baseline = peak_rss_mib()

    def forward():
        with torch.no_grad():
            return render(gaussians, camera, backend="reference")

    def forward_backward():
        for tensor in gaussians.tensors().values():
            tensor.requires_grad_(True)
            tensor.grad = None
        out = render(gaussians, camera, backend="reference")
        (out.image.sum() + out.inv_depth.sum()).backward()
        return out

    def median_time(function) -> float:
        function()  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            function()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    out = forward()
    visible = int((out.radii > 0).sum())
    coverage = float(out.alpha.mean())
    forward_s = median_time(forward)
    forward_peak = peak_rss_mib()
    training_s = median_time(forward_backward)
    training_peak = peak_rss_mib()
    return {"count": count, "size": size, "visible": visible, "coverage": coverage,
            "forward_s": forward_s, "training_s": training_s, "baseline_mib": baseline,
            "forward_peak_mib": forward_peak - baseline, "training_peak_mib": training_peak - baseline,
            "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--worker", nargs=2, type=int, metavar=("COUNT", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    if args.worker:
        print(json.dumps(worker(*args.worker, args.repeats, args.threads)))
        return 0

    import torch

    print("$ " + shlex.join(["python", *sys.argv]))
    threads = args.threads or torch.get_num_threads()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}, "
          f"{threads} thread{'s' if threads != 1 else ''}; backend 'reference', float32")
    print(f"median of {args.repeats} after 1 warm-up; peak RSS = growth of the process's peak "
          f"resident memory over the loaded scene")
    if hasattr(os, "getloadavg"):  # timings on a busy machine mean little: say so
        print("load average at start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    print()
    header = (f"{'gaussians':>9} {'image':>7} {'visible':>7} {'cover':>5} | {'forward':>9} "
              f"{'peak RSS':>9} | {'fwd+bwd':>9} {'peak RSS':>9}")
    print(header)
    print("-" * len(header))
    for count, size in CONFIGS:
        command = [sys.executable, os.path.abspath(__file__), "--worker", str(count), str(size),
                   "--repeats", str(args.repeats)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        if result.returncode != 0:
            print(f"\n{count} Gaussians at {size}x{size} failed:\n{result.stderr}", file=sys.stderr)
            return 1
        r = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{count:>9} {f'{size}x{size}':>7} {r['visible']:>7} {r['coverage']:>5.2f} | "
              f"{r['forward_s'] * 1e3:>7.0f}ms {r['forward_peak_mib']:>6.0f}MiB | "
              f"{r['training_s'] * 1e3:>7.0f}ms {r['training_peak_mib']:>6.0f}MiB")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
