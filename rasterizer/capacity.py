"""A capacity guessed ahead of a count that only the GPU knows.

The CUDA paths size some buffers before the GPU has counted what goes in them, so that the host
never waits: the tile sort's (tile, Gaussian) pairs (:class:`rasterizer.cuda.PairBudget`) and
the rows a rank sends per view in the multi-GPU exchange
(:class:`trainer.distributed.exchange.RowBudget`). Both use this rule: the capacity only grows,
to ``headroom`` times the largest count seen (at least ``minimum``), and a use whose count
outgrew it is done again by the caller.
"""

from __future__ import annotations

import math

__all__ = ["GrowingCapacity"]


class GrowingCapacity:
    """``capacity`` (0 until a count is known) and ``largest``, the largest count seen."""

    def __init__(self, headroom: float, minimum: int):
        if headroom < 1.0:
            raise ValueError(f"{type(self).__name__} headroom must be at least 1")
        self.headroom, self.minimum = float(headroom), int(minimum)
        self.capacity = 0
        self.largest = 0

    def grow(self, count: int) -> None:
        """Take a count that was read back (it may exceed the capacity it was given)."""
        self.largest = max(self.largest, int(count))
        self.capacity = max(self.capacity, self.minimum, math.ceil(self.largest * self.headroom))
