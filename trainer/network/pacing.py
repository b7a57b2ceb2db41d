"""Rate limits for the network viewer's extension: snapshots and statistics.

Why: a snapshot copies every Gaussian to the CPU and sends it, which would slow training if it
happened every iteration. :class:`SnapshotPacer` spaces snapshots so that their measured cost
is at most ``fraction`` of the wall time.

The rule: after a snapshot that cost ``c`` seconds (measured from the start of the copy to the
end of the send), the next one may start only once ``c * (1 - fraction) / fraction`` seconds
have passed since that snapshot ended (and at least ``min_interval``). Over any run of
snapshots, each costs ``c_i`` and is followed by at least ``c_i (1 - f) / f`` seconds of other
work, so snapshot time / total time <= c_i / (c_i + c_i (1 - f) / f) = f. With the default
``fraction = 0.04`` that is 4%, under the 5% the issue allows even when the cost of one
snapshot fluctuates a little; ``min_interval`` (0.1 s, 10 per second) keeps tiny models from
being re-sent on every step for no visible gain.
"""

from __future__ import annotations

import time
from typing import Callable

__all__ = ["SnapshotPacer", "DEFAULT_FRACTION", "DEFAULT_MIN_INTERVAL"]

DEFAULT_FRACTION = 0.04
DEFAULT_MIN_INTERVAL = 0.1


class SnapshotPacer:
    """Decides when the next snapshot may be taken; the clock returns seconds."""

    def __init__(self, fraction: float = DEFAULT_FRACTION, min_interval: float = DEFAULT_MIN_INTERVAL,
                 clock: Callable[[], float] = time.perf_counter):
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        self.fraction = fraction
        self.min_interval = min_interval
        self.clock = clock
        self.next_allowed = float("-inf")
        self.total_cost = 0.0   # seconds spent on snapshots so far
        self.count = 0

    def ready(self) -> bool:
        """True when a snapshot may be taken now."""
        return self.clock() >= self.next_allowed

    def record(self, started: float, ended: float) -> None:
        """Account for a snapshot that ran from ``started`` to ``ended`` (clock seconds)."""
        cost = max(ended - started, 0.0)
        self.total_cost += cost
        self.count += 1
        self.next_allowed = ended + max(cost * (1.0 - self.fraction) / self.fraction, self.min_interval)

    def run(self, action: Callable[[], object]) -> object:
        """Run ``action`` (the snapshot), timing it with the clock; returns its result."""
        started = self.clock()
        try:
            return action()
        finally:
            self.record(started, self.clock())
