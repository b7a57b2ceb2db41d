"""Where a training step's time goes: ms per step for each phase, on the real ``Trainer``.

    python bench/profile_train.py [--source ../shared/data/shapes] [-w] [-r 1] [--warmup 3500]
                                  [--steps 200] [--paths fast,eager,torch] [--code DIR] [--train_args "FLAGS"]
                                  [--memory]

It trains the scene with ``splat-train``'s defaults (CUDA backend) for ``--warmup`` iterations,
then measures, for each path, two windows of ``--steps`` iterations in steady state:

* unprofiled: wall ms per step, and the host (CPU) ms spent in each phase;
* under ``torch.profiler``: the GPU time of the kernels, copies and fills launched from each
  phase (a kernel is credited to the phase whose host time range contains its launch, so the
  backward's kernels, launched from autograd's thread, count under ``backward``).

Phases: data (view and ground truth), render (forward), loss, backward, wait (the host waiting
for the pair count of a budgeted sort), densify (statistics and densification), optimizer, and
other (hooks, progress bar, evaluation). GPU idle = wall - GPU busy.

Paths: ``fast`` is the trainer as configured (fused loss and statistics, budgeted sort, the
step replayed from a CUDA graph); ``eager`` is the same without the graph (each kernel launched
from Python); ``torch`` turns all of them off (the PyTorch loss and statistics, a host wait for
every sort). With the graph, the render phase holds the whole replay: render, loss and their
backward, host and GPU time alike (a graph's kernels count under the phase that launched it).
``--code DIR`` imports the trainer from another checkout (e.g. an older commit, for a
before/after table); a trainer without phases reports wall, GPU busy and idle only.
``--train_args "--iterations N"`` sets the run's length (what its schedules scale to, e.g.
``--fast``'s resolution schedule) without measuring more: the run stops after the last window.
``--memory`` adds the most GPU memory allocated while in each phase over the whole run
(warm-up included), with the model's size then: where a run's memory peak comes from; and
the pair budget's largest count and capacity (the tile sort's buffers are sized by it).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
PHASES = ("data", "render", "loss", "backward", "wait", "densify", "optimizer")


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default=str(REPO.parent / "shared" / "data" / "shapes"))
    parser.add_argument("-w", "--white_background", action="store_true")
    parser.add_argument("-r", "--resolution", default="-1")
    parser.add_argument("--eval", action="store_true")
    parser.add_argument("--warmup", type=int, default=3500, help="iterations before measuring")
    parser.add_argument("--steps", type=int, default=200, help="iterations per measured window")
    parser.add_argument("--paths", default="fast,torch", help="comma-separated: fast, eager, torch")
    parser.add_argument("--code", default=str(REPO), help="checkout whose trainer is measured")
    parser.add_argument("--label", default="", help="name of this run in the table")
    parser.add_argument("--memory", action="store_true",
                        help="also report the peak GPU memory reached in each phase over the whole run")
    parser.add_argument("--kernels", type=int, default=14, help="kernels listed per path, by GPU time")
    parser.add_argument("--train_args", default="",
                        help="more splat-train flags, one string (e.g. '--densify_grad_threshold 0.0001' to "
                             "measure a larger model)")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be positive")
    args.paths = [p for p in args.paths.split(",") if p]
    if not set(args.paths) <= {"fast", "eager", "torch"}:
        parser.error("--paths takes fast, eager and/or torch")
    return args


class PhaseClock:
    """``trainer.phase`` replacement: host seconds per phase, and (when profiling) a
    ``record_function`` range per phase so that kernels can be credited to it. With
    ``count_gaussians`` set, it also keeps, for each phase, the most GPU memory allocated while
    in it over the whole run, with the model's size then (``peaks``: name -> (bytes, Gaussians)).
    The allocator's peak is reset on entering a phase (host bookkeeping, no GPU wait)."""

    def __init__(self, torch) -> None:
        self.torch = torch
        self.host = collections.Counter()
        self.annotate = False
        self.count_gaussians: Callable[[], int] | None = None
        self.peaks: dict[str, tuple[int, int]] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        if self.count_gaussians is not None:
            self.torch.cuda.reset_peak_memory_stats()
        if self.annotate:
            with self.torch.profiler.record_function(f"phase::{name}"):
                yield
        else:
            yield
        self.host[name] += time.perf_counter() - started
        if self.count_gaussians is not None:
            peak = self.torch.cuda.max_memory_allocated()
            if peak > self.peaks.get(name, (0, 0))[0]:
                self.peaks[name] = (peak, self.count_gaussians())


def memory_lines(setup_bytes: int, peaks: dict[str, tuple[int, int]]) -> list[str]:
    """The ``--memory`` report: what setup left allocated (the training images and the initial
    model), then each phase's peak, largest first."""
    lines = [f"GPU memory after setup (images, initial model): {setup_bytes / 2**20:.0f} MiB; "
             "most allocated while in each phase over the run:"]
    for name, (peak, gaussians) in sorted(peaks.items(), key=lambda item: -item[1][0]):
        lines.append(f"  {name:9s} {peak / 2**20:8.0f} MiB at {gaussians} Gaussians "
                     f"({(peak - setup_bytes) / max(gaussians, 1):.0f} B per Gaussian above setup)")
    return lines


def gpu_time_by_phase(trace_path: str) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds of GPU activity (kernels, copies, fills) per phase, and per kernel name, from a
    chrome trace."""
    with open(trace_path, encoding="utf-8") as stream:
        events = json.load(stream)["traceEvents"]
    launches, phases, device = {}, [], []
    for event in events:
        category, args = event.get("cat", ""), event.get("args", {})
        if category in ("cuda_runtime", "cuda_driver") and "correlation" in args:
            launches[args["correlation"]] = event["ts"]
        elif category == "user_annotation" and event.get("name", "").startswith("phase::"):
            phases.append((event["ts"], event["ts"] + event.get("dur", 0), event["name"][7:]))
        elif category in ("kernel", "gpu_memcpy", "gpu_memset"):
            device.append((args.get("correlation"), event.get("dur", 0), event.get("name", "?")))
    phases.sort()
    totals, kernels = collections.Counter(), collections.Counter()
    for correlation, duration, name in device:
        kernels[name[:60]] += duration * 1e-6
        launched = launches.get(correlation)
        owner = "other"
        if launched is not None:
            # the innermost (latest-starting) phase containing the launch
            for start, end, name in phases:
                if start > launched:
                    break
                if launched <= end:
                    owner = name
        totals[owner] += duration * 1e-6
    return dict(totals), dict(kernels)


def main(argv=None) -> int:
    args = parse(argv)
    sys.path.insert(0, str(Path(args.code).resolve()))
    import torch  # noqa: PLC0415
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    from trainer.config import parse_args  # noqa: PLC0415
    from trainer.train import Trainer  # noqa: PLC0415

    if not torch.cuda.is_available():
        print("bench/profile_train.py needs a CUDA GPU", file=sys.stderr)
        return 2
    windows = [(path, kind) for path in args.paths for kind in ("timed", "profiled")]
    total = args.warmup + args.steps * len(windows) + 1
    results: dict[str, dict] = {}
    clock = PhaseClock(torch)
    state: dict = {"window": -1, "start": 0.0, "profiler": None, "trace": None}
    trace_dir = tempfile.mkdtemp(prefix="profile_train-")

    def set_path(trainer, path: str) -> None:
        if not hasattr(trainer, "phase"):
            return  # an older trainer: one path only
        trainer.fused_kernels, trainer.pair_budget = state["fast"]
        if hasattr(trainer, "cuda_graphs"):
            trainer.cuda_graphs = path == "fast" and state["graphs"]
        if path == "torch":
            trainer.fused_kernels, trainer.pair_budget = False, None

    def close_window(trainer, index: int) -> None:
        torch.cuda.synchronize()
        path, kind = windows[index]
        row = results.setdefault(path, {"gaussians": len(trainer.model)})
        if kind == "timed":
            row["wall_ms"] = (time.perf_counter() - state["start"]) * 1e3 / args.steps
            row["host_ms"] = {name: seconds * 1e3 / args.steps for name, seconds in clock.host.items()}
        else:
            state["profiler"].stop()
            trace = os.path.join(trace_dir, f"{path}.json")
            state["profiler"].export_chrome_trace(trace)
            phases, kernels = gpu_time_by_phase(trace)
            row["gpu_ms"] = {name: seconds * 1e3 / args.steps for name, seconds in phases.items()}
            row["kernel_ms"] = {name: seconds * 1e3 / args.steps for name, seconds in kernels.items()}
            row["busy_ms"] = sum(phases.values()) * 1e3 / args.steps
            clock.annotate = False

    def open_window(trainer, index: int) -> None:
        path, kind = windows[index]
        set_path(trainer, path)
        clock.host.clear()
        if kind == "profiled":
            clock.annotate = True
            state["profiler"] = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
            state["profiler"].start()
        torch.cuda.synchronize()
        state["start"] = time.perf_counter()

    def hook(trainer, iteration: int) -> None:
        if iteration <= args.warmup:
            return
        index = (iteration - args.warmup - 1) // args.steps
        if (iteration - args.warmup - 1) % args.steps:
            return
        if state["window"] >= 0:
            close_window(trainer, state["window"])
        if index < len(windows):
            open_window(trainer, index)
            state["window"] = index
        elif trainer.config.optimization.iterations > total:
            trainer.request_stop()   # a longer run (--train_args "--iterations N"): the rest is not measured

    with tempfile.TemporaryDirectory() as model:
        flags = ["-s", args.source, "-m", model, "-r", args.resolution, "--iterations", str(total),
                 "--test_iterations", "-1", "--save_iterations", "-1", "--quiet", "--disable_viewer",
                 "--backend", "cuda", "--data_device", "cuda"]
        flags += ["-w"] if args.white_background else []
        flags += ["--eval"] if args.eval else []
        flags += shlex.split(args.train_args)
        trainer = Trainer(parse_args(flags), hooks=[hook])
        trainer.setup()
        if hasattr(trainer, "phase"):
            trainer.phase = clock
            state["fast"] = (trainer.fused_kernels, trainer.pair_budget)
            state["graphs"] = getattr(trainer, "cuda_graphs", False)
            if args.memory:
                clock.count_gaussians = lambda: len(trainer.model)
        setup_bytes = torch.cuda.memory_allocated()
        started = time.perf_counter()
        trainer.run()
        trainer.scene.close()
        budget, final_count = state.get("fast", (None, None))[1], len(trainer.model)
    print(f"$ python {' '.join(sys.argv)}")
    print(f"machine: {torch.cuda.get_device_name()} | torch {torch.__version__} | Python {platform.python_version()}"
          f" | trainer from {args.code}")
    print(f"scene: {args.source} -r {args.resolution}; {args.warmup} warm-up iterations, then windows of "
          f"{args.steps}; whole run {time.perf_counter() - started:.1f} s")
    label = args.label or Path(args.code).name
    names = list(PHASES) + ["other"]
    header = "| path | Gaussians | wall ms/step | GPU busy ms/step | GPU idle | " + " | ".join(
        f"{name} host/GPU" for name in names) + " |"
    print(header)
    print("|" + " --- |" * (5 + len(names)))
    for path, row in results.items():
        wall, busy = row.get("wall_ms", float("nan")), row.get("busy_ms", float("nan"))
        host, gpu = row.get("host_ms", {}), row.get("gpu_ms", {})
        host = dict(host)
        host["other"] = wall - sum(host.values())
        cells = [f"{host.get(name, 0.0):.3f}/{gpu.get(name, 0.0):.3f}" for name in names]
        print(f"| {label} {path} | {row['gaussians']} | {wall:.3f} | {busy:.3f} | {100 * (1 - busy / wall):.0f}% | "
              + " | ".join(cells) + " |", flush=True)
    if clock.peaks:
        print("\n".join(memory_lines(setup_bytes, clock.peaks)))
        if budget is not None:  # the sort's buffers are sized by its capacity
            print(f"pair budget: largest render {budget.largest} (tile, Gaussian) pairs, capacity {budget.capacity} "
                  f"({budget.capacity / max(final_count, 1):.1f} a Gaussian at the end, {final_count})")
    for path, row in results.items():
        top = sorted(row.get("kernel_ms", {}).items(), key=lambda item: -item[1])[:args.kernels]
        if top:
            print(f"{label} {path}, GPU ms/step by kernel: " + "; ".join(f"{name} {ms:.3f}" for name, ms in top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
