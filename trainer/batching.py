"""Batches of training views: how a step of B views maps onto the reference's per-view schedule.

The reference trains on one view per iteration, and every schedule counts iterations. With
``--batch_size B`` a step renders B views and takes one optimiser step, and every schedule
keeps counting **views** (as Grendel does): ``--iterations 30000`` is 30000 views, in
``ceil(30000 / B)`` steps, the last one shorter when B does not divide it. A step covers the
views ``first .. last`` (1-based, inclusive), and an event of the reference that fires at view
``v`` fires in the step whose range holds ``v``:

* the position learning rate is the schedule's value at the step's first view;
* the SH degree rises once for every multiple of 1000 in the range (before the render);
* test/train evaluation and PLY saves at ``--test_iterations`` / ``--save_iterations`` inside
  the range (the Gaussians as they were at the start of the step, named by the view asked for);
* densification statistics accumulate over every view of a step that starts before
  ``densify_until_iter``, each view with the reference's per-view normalisation;
  densify-and-prune and opacity reset fire when one of their views is in the range;
* the optimiser steps unless the range holds the last view (the reference's last iteration
  takes no step);
* a checkpoint asked for at a view inside the range is written after the step and is named
  by the step's last view (the state after that many views; with B dividing the number asked
  for, the same name).

With B = 1 every rule above is the reference's. Learning rates and Adam's betas follow the
batch as Grendel proposes ("On Scaling Up 3D Gaussian Splatting Training", 2024) and gsplat's
``batch_size`` option approximates: learning rate x sqrt(B) and betas ``beta ** B``. A step sums
the B views' losses; under the hypothesis that views give independent gradients, the summed
gradient's spread grows as sqrt(B) and Adam, which divides by the gradient's root mean square,
then needs a sqrt(B) larger rate to move as far as B single-view steps would, and ``beta ** B``
keeps the moments' memory the same number of *views* long. Summing (not averaging) also keeps
each view's screen-space gradient, and so the densification threshold, as in the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Container, Iterator, NamedTuple, Sequence

import torch

__all__ = ["Step", "batch_steps", "learning_rate_scale", "batch_betas", "view_shares", "same_size_groups",
           "in_view_order", "ScreenStatistics", "screen_statistics"]


class Step(NamedTuple):
    """One training step: the views ``first .. last`` (1-based view counts, inclusive). (A named
    tuple: one is made per step, and the training loop's host time matters.)"""

    first: int
    last: int

    @property
    def size(self) -> int:
        """Number of views rendered in the step."""
        return self.last - self.first + 1

    def holds(self, view: int) -> bool:
        """Whether view number ``view`` is in this step."""
        return self.first <= view <= self.last

    def hits(self, views: Container[int]) -> list[int]:
        """The views of this step that are in ``views`` (e.g. a set of --save_iterations), in order."""
        if self.first == self.last:
            return [self.first] if self.first in views else []
        return [v for v in range(self.first, self.last + 1) if v in views]

    def multiples(self, interval: int) -> int:
        """How many multiples of ``interval`` (> 0) the range holds."""
        return self.last // interval - (self.first - 1) // interval

    def views(self) -> range:
        return range(self.first, self.last + 1)


def batch_steps(first_view: int, iterations: int, batch_size: int) -> Iterator[Step]:
    """The steps from view ``first_view`` to view ``iterations``, ``batch_size`` views each (the
    last one shorter when needed)."""
    if batch_size < 1:
        raise ValueError("the batch size must be at least 1")
    for first in range(first_view, iterations + 1, batch_size):
        yield Step(first, min(first + batch_size - 1, iterations))


def learning_rate_scale(batch_size: int) -> float:
    """Factor on every learning rate for ``batch_size`` views per step: sqrt(B)."""
    return math.sqrt(batch_size)


def batch_betas(betas: tuple[float, float], batch_size: int) -> tuple[float, float]:
    """Adam's betas for ``batch_size`` views per step: ``beta ** B`` (the same memory in views)."""
    return (betas[0] ** batch_size, betas[1] ** batch_size)


def view_shares(count: int, parts: int) -> list[range]:
    """``count`` items split into ``parts`` contiguous ranges, sizes differing by at most one
    (the first ranges get the extra items). Used to give each rank its views of a step."""
    base, extra = divmod(count, parts)
    shares, start = [], 0
    for part in range(parts):
        size = base + (1 if part < extra else 0)
        shares.append(range(start, start + size))
        start += size
    return shares


@dataclass
class ScreenStatistics:
    """What densification reads from the renders of a step (``GaussianModel.add_render_statistics``).

    ``means2d_grad`` is dLoss/d(projected mean) in pixels, ``[N, 2]`` for one view or ``[V, N, 2]``
    for V views of one image size (None when nothing reached the image); ``radii`` ``[N]`` or
    ``[V, N]`` int32 screen radii (0: not visible); ``width`` x ``height`` the image size.
    """

    means2d_grad: torch.Tensor | None
    radii: torch.Tensor
    width: int
    height: int

    def visible(self) -> torch.Tensor:
        """[N] bool: seen by at least one of the views."""
        seen = self.radii > 0
        return seen if seen.dim() == 1 else seen.any(dim=0)


def same_size_groups(cameras: Sequence) -> list[list[int]]:
    """Positions of ``cameras`` grouped by image size (a batched render needs one size), in
    order of first appearance."""
    groups: dict[tuple[int, int], list[int]] = {}
    for position, camera in enumerate(cameras):
        groups.setdefault((camera.width, camera.height), []).append(position)
    return list(groups.values())


def ints_on(values: Sequence, device: torch.device) -> torch.Tensor:
    """``values`` (ints, or rows of ints) as an int64 tensor on ``device``, copied without
    waiting for the GPU. (Indexing a CUDA tensor with a Python list, or ``torch.tensor(list,
    device="cuda")``, copies from pageable memory and then waits for the whole stream: a step
    would stop the host queueing work each time.)"""
    host = torch.tensor(list(values), dtype=torch.int64)
    if torch.device(device).type != "cuda":
        return host
    return host.pin_memory().to(device, non_blocking=True)


def _run_start(positions: Sequence[int]) -> int | None:
    """The first of ``positions`` if they are a contiguous increasing run, else None."""
    first = positions[0]
    return first if list(positions) == list(range(first, first + len(positions))) else None


def select_views(tensor: torch.Tensor, positions: Sequence[int], dim: int = 0) -> torch.Tensor:
    """``tensor``'s entries at ``positions`` along ``dim``: a view of it when they are a contiguous
    run (the usual case: no copy, no index), else a copy gathered with a non-blocking index."""
    first = _run_start(positions)
    if first is not None:
        return tensor.narrow(dim, first, len(positions))
    return tensor.index_select(dim, ints_on(positions, tensor.device))


def put_views(target: torch.Tensor, positions: Sequence[int], values: torch.Tensor, dim: int = 0) -> None:
    """``target``'s entries at ``positions`` along ``dim`` set to ``values`` (in place)."""
    first = _run_start(positions)
    if first is not None:
        target.narrow(dim, first, len(positions)).copy_(values)
    else:
        target.index_copy_(dim, ints_on(positions, target.device), values)


def screen_statistics(means2d_grad: torch.Tensor, radii: torch.Tensor, cameras: Sequence) -> list[ScreenStatistics]:
    """What densification reads from a batch render: ``means2d_grad`` [B, N, 2] and ``radii``
    [B, N] of the views of ``cameras``, one entry per image size (the statistics normalise by
    it)."""
    return [ScreenStatistics(select_views(means2d_grad, group), select_views(radii, group),
                             cameras[group[0]].width, cameras[group[0]].height)
            for group in same_size_groups(cameras)]


def in_view_order(rows: Sequence[torch.Tensor], groups: Sequence[Sequence[int]]) -> torch.Tensor:
    """Per-view rows computed group by group, back in the views' order."""
    stacked = rows[0] if len(rows) == 1 else torch.cat(list(rows))
    order = [position for group in groups for position in group]
    if order == sorted(order):
        return stacked
    inverse = [0] * len(order)
    for row, position in enumerate(order):
        inverse[position] = row
    return stacked.index_select(0, ints_on(inverse, stacked.device))
