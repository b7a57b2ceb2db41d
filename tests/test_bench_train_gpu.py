"""``bench/train_gpu.py``'s meter: training's peak GPU memory, evaluation left out, counted from
what was allocated when the run began (a fake allocator stands in for CUDA's)."""

from __future__ import annotations

import pytest
import torch

from bench.train_gpu import TrainingMeter


class FakeAllocator:
    """CUDA's allocated / peak-allocated counters, driven by hand."""

    def __init__(self, allocated: int):
        self.allocated = self.peak = allocated

    def set(self, allocated: int) -> None:
        self.allocated = allocated
        self.peak = max(self.peak, allocated)

    def reset_peak(self) -> None:
        self.peak = self.allocated


@pytest.fixture
def allocator(monkeypatch):
    fake = FakeAllocator(allocated=100 * 2**20)  # left over from an earlier run
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", fake.reset_peak)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda: fake.allocated)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: fake.peak)
    return fake


def test_peak_is_training_from_the_runs_start_without_evaluation(allocator):
    meter = TrainingMeter()
    allocator.set(300 * 2**20)      # setup: images and model (counted)
    meter.start()
    allocator.set(450 * 2**20)      # a training step's peak
    allocator.set(320 * 2**20)
    meter.pause()                   # snapshot evaluation: a larger peak, not counted
    allocator.set(700 * 2**20)
    allocator.set(320 * 2**20)
    meter.resume()
    allocator.set(500 * 2**20)      # training grew past its earlier peak
    allocator.set(330 * 2**20)
    seconds = meter.pause()         # the final evaluation
    allocator.set(900 * 2**20)
    assert meter.peak_mib() == 400.0 and seconds >= 0.0


def test_time_leaves_out_what_runs_while_paused(allocator, monkeypatch):
    clock = iter([10.0, 11.0, 13.0, 20.0, 21.0])
    monkeypatch.setattr("bench.train_gpu.time.perf_counter", lambda: next(clock))
    meter = TrainingMeter()         # 10
    meter.start()                   # 11
    assert meter.pause() == 2.0     # 13
    meter.resume()                  # 20: 7 s of evaluation left out
    assert meter.pause() == 3.0     # 21


@pytest.mark.parametrize("flags, text", [
    (["--first_seed", "-1"], "--first_seed -1: takes a seed of 0 or more"),
    (["--repeats", "0"], "--repeats 0: takes a positive number of runs"),
])
def test_bad_flags_are_one_line_errors(flags, text, capsys):
    """Checked before anything starts (no GPU needed to be told)."""
    from bench.train_gpu import main

    with pytest.raises(SystemExit) as exit_info:
        main(flags)
    assert exit_info.value.code == 2
    assert text in capsys.readouterr().err
