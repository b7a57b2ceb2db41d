"""``bench/profile_train.py --memory``: the per-phase memory peaks it keeps and reports."""

from __future__ import annotations

import torch

from bench.profile_train import PhaseClock, memory_lines


def test_memory_report_lists_phases_largest_first_with_bytes_per_gaussian():
    lines = memory_lines(100 * 2**20, {"render": (300 * 2**20, 1000), "densify": (500 * 2**20, 2**20)})
    assert lines[0].startswith("GPU memory after setup (images, initial model): 100 MiB")
    assert lines[1].split() == ["densify", "500", "MiB", "at", "1048576", "Gaussians", "(400", "B", "per",
                                "Gaussian", "above", "setup)"]
    assert lines[2].split()[:2] == ["render", "300"]


def test_phase_clock_without_memory_keeps_no_peaks():
    clock = PhaseClock(torch)
    with clock("render"):
        pass
    assert clock.peaks == {} and clock.host["render"] >= 0.0
