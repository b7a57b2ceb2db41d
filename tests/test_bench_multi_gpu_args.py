"""``bench/train_multi_gpu.py``: bad flags are a one-line error (exit 2) before anything starts,
and the runs of several seeds are summarised per configuration."""

from __future__ import annotations

import argparse
import warnings

import pytest

from bench.train_multi_gpu import main, print_table, summarise_repeats, synchronisations_table, trainer_flags
from trainer.config import parse_args


@pytest.mark.parametrize("flags, message", [
    (["--profile", "-1"], "--profile takes a number of steps"),
    (["--views", "100", "--profile_from", "100"], "--profile_from 100: takes a view before --views"),
    (["--time_limit", "-1"], "--time_limit -1: takes seconds"),
    (["--repeats", "0"], "--repeats 0: takes a positive number of runs"),
    (["--time_limit", "60"], "--time_limit stops the --capacity runs"),
    (["--capacity", "--repeats", "2"], "--repeats is for the speed table"),
    (["--profiler", "perf"], "invalid choice"),
    (["--backend", "reference", "--profile", "5", "--profiler", "sync"], "--profiler sync reports waits for a GPU"),
    (["--capacity", "--max_gaussians", "-5"], "--max_gaussians -5: takes a number of Gaussians"),
    (["--max_gaussians", "1000000"], "--max_gaussians caps the --capacity runs"),
])
def test_bad_flags_are_one_line_errors(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(flags)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert message in error[-1] and "Traceback" not in "\n".join(error)


def _run(gpus: int, seed: int, views_per_s: float, psnr: float, status: str = "completed") -> dict:
    return {"scene": "beer", "gpus": gpus, "batch": 2, "seed": seed, "views_per_s": views_per_s, "psnr": psnr,
            "gaussians": 1000 + seed, "peak_mb": 400.0 + seed, "status": status}


def test_repeats_are_summarised_per_configuration(capsys):
    runs = [_run(1, 0, 380.0, 21.0), _run(2, 0, 360.0, 22.0), _run(1, 1, 390.0, 22.0), _run(2, 1, 370.0, 21.0),
            _run(1, 2, 400.0, 23.0), _run(2, 2, 700.0, 22.5, "failed")]
    one, two = summarise_repeats(runs)
    assert (one["gpus"], two["gpus"]) == (1, 2) and one["runs"] == two["runs"] == 3
    assert one["views_per_s"] == 390.0 and two["views_per_s"] == 370.0  # medians
    assert one["psnr"] == pytest.approx(22.0) and one["psnr_sd"] == pytest.approx(1.0)
    assert two["psnr"] == pytest.approx(21.833333) and two["status"] == "failed"
    assert one["gaussians"] == 1001 and one["peak_mb"] == 401.0
    single = summarise_repeats([_run(1, 0, 380.0, 21.0)])[0]
    assert single["psnr_sd"] == 0.0 and single["runs"] == 1
    goals = print_table([one, two])
    # the standard error of the difference: sqrt(1.0^2 / 3 + 0.7638^2 / 3)
    assert goals == ["beer: 2 GPUs B=2: 0.95x views/s, PSNR -0.17 +- 0.73 dB (goal >= 1.8x, within 0.1 dB): NOT met"]
    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[:7] == ["beer", "1", "2", "390.0", "1.00", "22.00", "1.00"]
    single_runs = summarise_repeats([_run(1, 0, 380.0, 21.0), _run(2, 0, 684.0, 21.05)])
    assert print_table(single_runs) == [  # one run each: no spread to quote
        "beer: 2 GPUs B=2: 1.80x views/s, PSNR +0.05 dB (goal >= 1.8x, within 0.1 dB): met"]


def test_synchronisations_are_counted_by_source_line():
    def warn(message: str, line: int) -> warnings.WarningMessage:
        return warnings.WarningMessage(UserWarning(message), UserWarning, "exchange.py", line)

    caught = [warn("called a synchronizing CUDA operation", 40), warn("some other warning", 12),
              warn("called a synchronizing CUDA operation", 7), warn("called a synchronizing CUDA operation", 40)]
    lines = synchronisations_table(caught, 150).splitlines()
    assert lines[0] == "3 synchronising operations in 150 steps"
    assert lines[1].split() == ["2", "exchange.py:40", "called", "a", "synchronizing", "CUDA", "operation"]
    assert lines[2].split()[:2] == ["1", "exchange.py:7"] and len(lines) == 3


def test_capacity_runs_pass_the_model_cap_to_the_trainer():
    def config(**overrides):
        args = argparse.Namespace(source="scene", model="out", resolution=2, views=7000, batch=2, backend="cuda",
                                  seed=1, capacity=False, max_gaussians=0)
        vars(args).update(overrides)
        return parse_args(trainer_flags(args))

    speed = config()
    assert speed.script.max_gaussians is None and speed.optimization.densify_until_iter == 15000
    assert (speed.script.batch_size, speed.script.seed, speed.model.data_device) == (2, 1, "cuda")
    capped = config(capacity=True, max_gaussians=1_000_000)
    assert capped.script.max_gaussians == 1_000_000 and capped.optimization.densify_until_iter == 7001
    assert config(capacity=True).script.max_gaussians is None


def test_nerf_synthetic_scenes_train_on_white(tmp_path):
    """shapes (transforms_train.json) is composited on white, as its README says; COLMAP scenes
    keep their black background."""
    def config(source):
        args = argparse.Namespace(source=str(source), model="out", resolution=1, views=700, batch=1, backend="cuda",
                                  seed=0, capacity=False, max_gaussians=0)
        return parse_args(trainer_flags(args))

    (tmp_path / "synthetic").mkdir()
    (tmp_path / "synthetic" / "transforms_train.json").write_text("{}")
    (tmp_path / "colmap").mkdir()
    assert config(tmp_path / "synthetic").model.white_background is True
    assert config(tmp_path / "colmap").model.white_background is False
