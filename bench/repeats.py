"""What the benches report over runs with several seeds."""

from __future__ import annotations

import statistics
from typing import Iterable

__all__ = ["mean_and_sd"]


def mean_and_sd(values: Iterable[float]) -> tuple[float, float]:
    """The mean of ``values`` and their sample standard deviation (0 for a single value)."""
    values = list(values)
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0
