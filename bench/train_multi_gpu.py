"""Multi-GPU training benchmark: views per second and test PSNR at equal views seen, for one GPU
with batches of 1, 2 and 4 views and for two GPUs (issue 13).

    python bench/train_multi_gpu.py [--data ../shared/data] [--scenes beer statuette] [-r 2]
                                    [--views 7000] [--configs 1x1 1x2 1x4 2x2]
                                    [--repeats K] [--capacity [--max_gaussians N] [--time_limit S]]
                                    [--memory_fraction 0.04] [--out results.json]
                                    [--profile STEPS [--profile_from VIEW] [--profiler python|sync]]

A configuration ``GxB`` trains on G GPUs with ``--batch_size B`` (G > 1: G processes under
torchrun, the Gaussians split across them, as ``splat-train --gpus G`` does). Every run trains
``--views`` views with the CUDA backend (``--eval``, the images on the GPU) and measures the
test PSNR at the start of the step that holds the last view (the model the reference's test
report sees there, before that step's densification: ``trainer.train.at_report_points``); the
speed counts the training steps after a warm-up (kernel compilation and the first
densifications excluded) up to that point, evaluation and saving excluded. ``beer`` is
undistorted first (``splat-convert --undistort_only``, cached under ``--work``); a NeRF-synthetic scene
(``transforms_train.json``, e.g. ``shapes``) trains on white (``-w``), as its photos are meant to
be composited. Synthetic scenes vary less between runs than the photographed ones: ``shapes``
with ``--repeats`` is where a PSNR difference of 0.1 dB has a chance of being resolved.

The table gives, per scene: views/s, the speed-up against one GPU at the same batch, the test
PSNR and its difference from one GPU at the same batch, the final Gaussian count and the peak
GPU memory of the busiest process. The goals are checked below it: two GPUs at least 1.8x the
views/s of one GPU at the same batch with the PSNR within 0.1 dB, and batches of 2 and 4 on one
GPU at least as fast per view as a batch of 1. The test PSNR of one 7000-view run moves by up to
2 dB between runs on these scenes, so checking "within 0.1 dB" needs ``--repeats K``: each
configuration runs K times with seeds 0 .. K-1, and the table gives the median views/s and the
mean PSNR with its standard deviation.

``--capacity``: each process may use only ``--memory_fraction`` of its GPU
(``torch.cuda.set_per_process_memory_fraction``) and densification is made aggressive (low
gradient threshold, no stop), so the model grows until memory runs out; one GPU and two GPUs
(B = 2) report the largest Gaussian count they trained, whether the run completed, the view it
reached and its training time. ``--time_limit S`` stops each run after S seconds of training
(status ``stopped``): a run near its memory limit is slow, as the allocator frees and retries.
``--max_gaussians N`` caps the model at N Gaussians (the trainer's flag): with N between the
largest model of one GPU and that of two, the one-GPU run runs out of memory and the two-GPU
run completes.

``--profile STEPS``: rank 0 of each configuration runs STEPS steps under torch.profiler after the
warm-up (or from view ``--profile_from``) and writes where the step's GPU and host time go next to ``--out`` (the views/s of a
profiled run are not comparable). ``--profiler python`` uses cProfile instead: host time by Python
function (cumulative and own), which shows which of our functions a host-bound step is spent in.
``--profiler sync`` lists the operations that made the host wait for the GPU in the window
(``torch.cuda.set_sync_debug_mode``), by source line: a steady-state step should have none
besides the trainer's one wait per step (an event, which that mode does not report).

Each configuration runs in its own processes (``--worker`` is this file's worker mode).
``--backend reference`` runs everything on the CPU (gloo), a smoke test of the bench itself.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import json
import math
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.repeats import mean_and_sd  # noqa: E402

DEFAULT_CONFIGS = ("1x1", "1x2", "1x4", "2x2")
CAPACITY_FLAGS = ["--densify_grad_threshold", "0.00004", "--densify_from_iter", "100",
                  "--densification_interval", "50"]
SPEEDUP_GOAL, PSNR_GOAL_DB = 1.8, 0.1


# ----- worker: one configuration, inside its process(es) -----------------------------------------
def trainer_flags(args: argparse.Namespace) -> list[str]:
    """The ``splat-train`` flags of a worker's run."""
    gpu = args.backend == "cuda"
    flags = ["-s", args.source, "-m", args.model, "--eval", "-r", str(args.resolution), "--iterations", str(args.views),
             "--batch_size", str(args.batch), "--test_iterations", "-1", "--backend", args.backend,
             "--data_device", "cuda" if gpu else "cpu", "--seed", str(args.seed), "--quiet", "--disable_viewer"]
    if (Path(args.source) / "transforms_train.json").is_file():
        flags.append("-w")   # NeRF-synthetic photos are composited on white
    if args.capacity:
        flags += CAPACITY_FLAGS + ["--densify_until_iter", str(args.views + 1)]
        if args.max_gaussians:
            flags += ["--max_gaussians", str(args.max_gaussians)]
    return flags


def worker(args: argparse.Namespace) -> int:
    import torch  # noqa: PLC0415

    from trainer.config import parse_args  # noqa: PLC0415
    from trainer.distributed import DistributedFailure, DistributedTrainer, launched_by_torchrun, start_worker  # noqa: PLC0415
    from trainer.train import Trainer, at_report_points  # noqa: PLC0415

    gpu = args.backend == "cuda"
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    config = parse_args(trainer_flags(args))
    config.script.save_iterations = []  # no PLY: saving is not training
    comm = start_worker(config) if launched_by_torchrun() else None
    rank = comm.rank if comm is not None else 0
    if args.memory_fraction and gpu:
        torch.cuda.set_per_process_memory_fraction(args.memory_fraction, torch.cuda.current_device())
    trainer = DistributedTrainer(config, comm) if comm is not None else Trainer(config)
    warmup = min(500, args.views // 10) + 1
    clock = {"largest": 0}

    def hook(trainer, iteration: int) -> None:
        clock["largest"] = max(clock["largest"], trainer.gaussian_count())
        clock["view"] = iteration
        if args.time_limit and rank == 0 and time.perf_counter() - clock["began"] > args.time_limit:
            trainer.request_stop()  # every rank stops at the next step (the stop is agreed)
        if "start" not in clock and iteration >= warmup:
            sync()
            clock["start"], clock["first_view"] = time.perf_counter(), iteration
        if args.profile and rank == 0:
            profile_window(trainer, iteration, args.profile_from or warmup, args, clock)

    def evaluate(trainer, _view: int) -> None:
        """At the start of the step that holds the last view, on every rank (a collective with
        several): the clock stops, then the test PSNR of the model the reference's test report
        sees there (``at_report_points``), the same point for every configuration."""
        sync()
        clock["end"], clock["end_view"] = time.perf_counter(), clock["view"]
        # The trainer's own test evaluation: a collective that splits the views across the ranks
        # of a DistributedTrainer, evaluate_views on one process.
        clock["psnr"] = trainer._evaluate(trainer.scene.test_views)["psnr"]

    row = {"rank": rank, "gpus": comm.world if comm is not None else 1, "batch": args.batch}
    try:
        trainer.setup()
        trainer.hooks.append(hook)   # first: it sets clock["view"], which evaluate reads
        trainer.hooks.append(at_report_points([args.views], evaluate))
        clock["began"] = time.perf_counter()
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        result = trainer.run()
        sync()
        row.update(status="stopped" if result.status == "interrupted" else result.status,
                   gaussians=trainer.gaussian_count(), largest=max(clock["largest"], trainer.gaussian_count()))
        if "end" in clock:      # the views trained between the warm-up and the last step
            row.update(views=clock["end_view"] - clock["first_view"], seconds=clock["end"] - clock["start"])
        elif "start" in clock:
            row.update(views=args.views - clock["first_view"] + 1, seconds=time.perf_counter() - clock["start"])
        if result.status == "completed":
            row["psnr"] = clock["psnr"]
    except DistributedFailure as error:
        row.update(status="out_of_memory" if "out of memory" in str(error) else "failed", largest=clock["largest"],
                   message=str(error))
    row.update(last_view=clock.get("view", 0), train_s=time.perf_counter() - clock.get("began", time.perf_counter()))
    row["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20 if gpu else 0.0
    Path(f"{args.out}.rank{rank}").write_text(json.dumps(row))
    if comm is not None and row["status"] in ("out_of_memory", "failed"):
        # The other ranks wait in a collective this rank left: closing the group would wait for
        # them forever. Exiting makes torchrun stop them (as splat-train's launcher does).
        os._exit(1)
    if trainer.scene is not None:
        trainer.scene.close()
    if comm is not None:
        comm.close()
    return 0 if row["status"] == "completed" else 1


def profile_window(trainer, iteration: int, warmup: int, args: argparse.Namespace, clock: dict) -> None:
    """``--profile S``: rank 0's steps after the warm-up under torch.profiler, S steps; writes to
    ``OUT.profile.txt`` the wall time per step (profiled, so slower), then two tables: phases and
    kernels by GPU time, and phases and operators by host time (where a host-bound step goes)."""
    import torch  # noqa: PLC0415

    if "profiler" not in clock and iteration >= warmup:
        if args.profiler == "sync":
            clock["profiler"] = warnings.catch_warnings(record=True)
            clock["sync_warnings"] = clock["profiler"].__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        elif args.profiler == "python":
            clock["profiler"] = cProfile.Profile()
            clock["profiler"].enable()
        else:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            clock["profiler"] = torch.profiler.profile(activities=activities)
            clock["profiler"].__enter__()
            trainer.phase = torch.profiler.record_function
        clock["profiled_from"], clock["profile_start"] = iteration, time.perf_counter()
    elif "profiler" in clock and "profiled" not in clock and iteration >= clock["profiled_from"] + args.profile * args.batch:
        if args.profiler == "sync":
            torch.cuda.set_sync_debug_mode(0)
            clock["profiler"].__exit__(None, None, None)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        clock["profiled"] = time.perf_counter()
        wall = (clock["profiled"] - clock["profile_start"]) / args.profile * 1e3
        header = f"{args.profile} steps from view {clock['profiled_from']}: {wall:.2f} ms a step (profiled)\n\n"
        if args.profiler == "sync":
            Path(f"{args.out}.profile.txt").write_text(header + synchronisations_table(clock["sync_warnings"],
                                                                                      args.profile))
            return
        if args.profiler == "python":
            clock["profiler"].disable()
            text = io.StringIO()
            stats = pstats.Stats(clock["profiler"], stream=text)
            for key in ("cumulative", "tottime"):
                text.write(f"By {key} host time ({args.profile} steps):\n")
                stats.sort_stats(key).print_stats(45)
            Path(f"{args.out}.profile.txt").write_text(header + text.getvalue())
            return
        clock["profiler"].__exit__(None, None, None)
        events = clock["profiler"].key_averages()
        tables = [events.table(sort_by=key, row_limit=30, max_name_column_width=48)
                  for key in ("self_cuda_time_total", "cpu_time_total")]
        Path(f"{args.out}.profile.txt").write_text(
            header + f"By GPU time:\n{tables[0]}\nBy host time:\n{tables[1]}")


def synchronisations_table(caught: list, steps: int) -> str:
    """The synchronisation warnings of ``torch.cuda.set_sync_debug_mode("warn")`` (``caught``,
    from ``warnings.catch_warnings(record=True)``) counted by source line, most frequent first."""
    counts = collections.Counter((f"{w.filename}:{w.lineno}", str(w.message).splitlines()[0])
                                 for w in caught if "synchroniz" in str(w.message))
    lines = [f"{sum(counts.values())} synchronising operations in {steps} steps"]
    lines += [f"{count:6d}  {place}  {message}" for (place, message), count in counts.most_common()]
    return "\n".join(lines) + "\n"


# ----- driver -------------------------------------------------------------------------------------
def prepare_scene(data: Path, name: str, work: Path) -> Path:
    """The scene folder to train: ``beer`` is undistorted once (its camera is SIMPLE_RADIAL)."""
    source = data / name
    if name != "beer":
        return source
    target = work / "beer_undistorted"
    if not (target / "sparse").is_dir():
        subprocess.run([sys.executable, "-m", "trainer.cli.convert", "--undistort_only", "-s", str(source),
                        "-o", str(target)], cwd=REPO, check=True)
    return target


def run_configuration(source: Path, gpus: int, batch: int, args: argparse.Namespace, capacity: bool = False,
                      seed: int = 0) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "row.json"
        common = [str(Path(__file__).resolve()), "--worker", "--source", str(source), "--model", str(Path(folder) / "m"),
                  "--views", str(args.views), "--batch", str(batch), "-r", str(args.resolution), "--out", str(out),
                  "--backend", args.backend, "--seed", str(seed)]
        if capacity:
            common += ["--capacity", "--memory_fraction", str(args.memory_fraction), "--time_limit", str(args.time_limit),
                       "--max_gaussians", str(args.max_gaussians)]
        if args.profile:
            common += ["--profile", str(args.profile), "--profile_from", str(args.profile_from),
                       "--profiler", args.profiler]
        if gpus == 1:
            command = [sys.executable, *common]
        else:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus),
                       *common]
        started = time.perf_counter()
        completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        rows = [json.loads(p.read_text()) for p in sorted(Path(folder).glob("row.json.rank*"))]
        profile = out.with_name("row.json.profile.txt")
        if profile.is_file() and args.out:
            Path(f"{args.out}.{source.name}.{gpus}x{batch}.profile.txt").write_text(profile.read_text())
    if not rows:
        raise RuntimeError(f"{gpus}x{batch} on {source.name} produced no result:\n{completed.stderr[-3000:]}")
    merged = dict(next((r for r in rows if r["rank"] == 0), rows[0]))
    merged["peak_mb"] = max(r["peak_mb"] for r in rows)
    merged["largest"] = max(r.get("largest", 0) for r in rows)
    merged["status"] = next((r["status"] for r in rows if r["status"] != "completed"), merged["status"])
    merged.update(scene=source.name, gpus=gpus, batch=batch, seed=seed, wall_s=time.perf_counter() - started)
    if "seconds" in merged:
        merged["views_per_s"] = merged["views"] / merged["seconds"]
    return merged


def summarise_repeats(runs: list[dict]) -> list[dict]:
    """One row per (scene, GPUs, batch) from the runs of every seed: the median views/s,
    Gaussian count and peak memory, the mean test PSNR and its standard deviation over the
    seeds (``psnr_sd``, 0 for one run), ``runs`` the number of runs, and the first status that
    is not ``completed``. Rows keep the order in which their configuration first ran."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["scene"], run["gpus"], run["batch"]), []).append(run)
    rows = []
    for (scene, gpus, batch), group in groups.items():
        row = {"scene": scene, "gpus": gpus, "batch": batch, "runs": len(group),
               "status": next((r["status"] for r in group if r["status"] != "completed"), "completed"),
               "peak_mb": statistics.median(r["peak_mb"] for r in group),
               "gaussians": round(statistics.median(r.get("gaussians", 0) for r in group))}
        speeds = [r["views_per_s"] for r in group if "views_per_s" in r]
        if speeds:
            row["views_per_s"] = statistics.median(speeds)
        psnrs = [r["psnr"] for r in group if "psnr" in r]
        if psnrs:
            row["psnr"], row["psnr_sd"] = mean_and_sd(psnrs)
        rows.append(row)
    return rows


def _standard_error_text(row: dict, base: dict) -> str:
    """`` +- se``: the standard error of the difference of two mean PSNRs over several seeds
    (what a difference must clearly exceed to be more than the runs' spread); empty for single
    runs."""
    if row.get("runs", 1) < 2 or base.get("runs", 1) < 2:
        return ""
    error = math.sqrt(row.get("psnr_sd", 0.0) ** 2 / row["runs"] + base.get("psnr_sd", 0.0) ** 2 / base["runs"])
    return f" +- {error:.2f}"


def print_table(rows: list[dict]) -> list[str]:
    """The speed table and the goals; returns the goals' lines. ``rows`` are
    :func:`summarise_repeats`'s (one run each is a summary too)."""
    print(f"{'scene':<18}{'GPUs':>5}{'B':>4}{'views/s':>10}{'vs 1 GPU':>10}{'PSNR':>9}{'+-sd':>6}{'dPSNR':>8}"
          f"{'Gaussians':>11}{'peak MB':>10}{'runs':>6}  status")
    goals = []
    for row in rows:
        base = next((r for r in rows if r["scene"] == row["scene"] and r["gpus"] == 1 and r["batch"] == row["batch"]),
                    None)
        speedup = row.get("views_per_s", 0) / base["views_per_s"] if base and base.get("views_per_s") else float("nan")
        delta = row.get("psnr", float("nan")) - (base or {}).get("psnr", float("nan"))
        print(f"{row['scene']:<18}{row['gpus']:>5}{row['batch']:>4}{row.get('views_per_s', float('nan')):>10.1f}"
              f"{speedup:>10.2f}{row.get('psnr', float('nan')):>9.2f}{row.get('psnr_sd', float('nan')):>6.2f}"
              f"{delta:>8.2f}{row.get('gaussians', 0):>11}{row['peak_mb']:>10.0f}{row.get('runs', 1):>6}  "
              f"{row['status']}")
        if row["gpus"] > 1 and base is not None:
            ok = speedup >= SPEEDUP_GOAL and abs(delta) <= PSNR_GOAL_DB
            goals.append(f"{row['scene']}: {row['gpus']} GPUs B={row['batch']}: {speedup:.2f}x views/s, PSNR "
                         f"{delta:+.2f}{_standard_error_text(row, base)} dB (goal >= {SPEEDUP_GOAL}x, within "
                         f"{PSNR_GOAL_DB} dB): {'met' if ok else 'NOT met'}")
        if row["gpus"] == 1 and row["batch"] > 1:
            single = next((r for r in rows if r["scene"] == row["scene"] and r["gpus"] == 1 and r["batch"] == 1), None)
            if single and single.get("views_per_s") and row.get("views_per_s"):
                ratio = row["views_per_s"] / single["views_per_s"]
                goals.append(f"{row['scene']}: 1 GPU B={row['batch']}: {ratio:.2f}x the views/s of B=1 (goal >= 1): "
                             f"{'met' if ratio >= 1.0 else 'NOT met'}")
    return goals


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--scenes", nargs="+", default=["beer", "statuette"])
    parser.add_argument("--views", type=int, default=7000)
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), help="GPUSxBATCH, e.g. 2x2")
    parser.add_argument("-r", "--resolution", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, metavar="K",
                        help="run each configuration K times, with seeds 0 .. K-1 (interleaved); the table gives "
                             "median views/s and mean +- standard deviation of the test PSNR")
    parser.add_argument("--capacity", action="store_true", help="the memory-capacity runs (see the docstring)")
    parser.add_argument("--max_gaussians", type=int, default=0, metavar="N",
                        help="--capacity: cap the model at N Gaussians (0: no cap)")
    parser.add_argument("--memory_fraction", type=float, default=0.04)
    parser.add_argument("--time_limit", type=float, default=0.0, metavar="SECONDS",
                        help="--capacity: stop a run after this many seconds of training (0: no limit); it then "
                             "reports the largest model it reached, with status 'stopped'")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "splatview-bench"))
    parser.add_argument("--out", help="write every row as JSON here")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="profile STEPS steps of rank 0 after the warm-up (the speed is then not comparable); "
                             "the tables go next to --out")
    parser.add_argument("--profile_from", type=int, default=0, metavar="VIEW",
                        help="start the --profile window at this view (default: after the warm-up); past "
                             "densify_until_iter (15000) it shows the steady state without densification")
    parser.add_argument("--profiler", choices=("torch", "python", "sync"), default="torch",
                        help="--profile's tool: torch.profiler (kernels and operators), cProfile (host time by "
                             "Python function) or sync (the operations that waited for the GPU, by source line)")
    parser.add_argument("--backend", choices=("cuda", "reference"), default="cuda",
                        help="reference: the CPU and gloo (a smoke test of this script)")
    # worker mode (one configuration; started by the driver)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.profile < 0:
        parser.error("--profile takes a number of steps (0: no profile)")
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: takes a positive number of runs")
    if args.time_limit < 0:
        parser.error(f"--time_limit {args.time_limit:g}: takes seconds, 0 or more (0: no limit)")
    if args.time_limit and not args.capacity:
        parser.error("--time_limit stops the --capacity runs; the speed runs always train --views views")
    if args.max_gaussians < 0:
        parser.error(f"--max_gaussians {args.max_gaussians}: takes a number of Gaussians, 0 or more (0: no cap)")
    if args.max_gaussians and not args.capacity:
        parser.error("--max_gaussians caps the --capacity runs; the speed runs train the reference's model")
    if args.capacity and args.repeats != 1:
        parser.error("--repeats is for the speed table; a --capacity run reports one run per GPU count")
    if args.profiler == "sync" and args.backend != "cuda":
        parser.error("--profiler sync reports waits for a GPU: it needs --backend cuda")
    if args.profile_from < 0 or args.profile_from >= args.views:
        parser.error(f"--profile_from {args.profile_from}: takes a view before --views ({args.views}); 0: after the "
                     "warm-up")
    if args.worker:
        return worker(args)

    import torch  # noqa: PLC0415

    count = torch.cuda.device_count()
    configs = [tuple(int(v) for v in c.split("x")) for c in args.configs]
    if args.backend == "cuda" and any(gpus > count for gpus, _ in configs):
        print(f"train_multi_gpu: this machine has {count} GPU(s); configurations ask for up to "
              f"{max(g for g, _ in configs)}", file=sys.stderr)
        return 2
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    device = f"{torch.cuda.get_device_name(0)} x {count}" if args.backend == "cuda" else "CPU (reference backend)"
    print(f"{device}, torch {torch.__version__}; {args.views} views at -r {args.resolution}")
    rows = []
    for name in args.scenes:
        source = prepare_scene(Path(args.data), name, work)
        if args.capacity:
            for gpus in (1, 2):
                row = run_configuration(source, gpus, 2, args, capacity=True)
                rows.append(row)
                print(f"capacity {name}: {gpus} GPU(s), {args.memory_fraction:g} of each GPU's memory: largest "
                      f"{row['largest']} Gaussians, {row['status']} at view {row.get('last_view', 0)} after "
                      f"{row.get('train_s', 0):.0f} s", flush=True)
            continue
        for seed in range(args.repeats):  # every configuration once per seed: drift hits them alike
            for gpus, batch in configs:
                rows.append(run_configuration(source, gpus, batch, args, seed=seed))
                print(f"  done {name} {gpus}x{batch} seed {seed}: {rows[-1].get('views_per_s', float('nan')):.1f} "
                      f"views/s, {rows[-1].get('psnr', float('nan')):.2f} dB ({rows[-1]['status']})", flush=True)
    if not args.capacity:
        for line in print_table(summarise_repeats(rows)):
            print(line)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
