"""Rendering a batch of views whose Gaussians are spread over the ranks (Grendel's scheme).

A step's B views are dealt out to the ranks (``trainer.batching.view_shares``: contiguous
runs, rank 0 first). Then, on every rank:

1. **project** its own Gaussians into every view of the batch (the backend's projection stage);
2. **exchange**: the Gaussians it projected inside a view go to the rank that renders that
   view, with ``all_to_all``;
3. **render** each of its views from the projected Gaussians received from every rank (rank 0's
   first: with even parts that is the single-process order, so ties in depth break the same);
4. **backward**: the gradients of the received features go back to their owners by the reverse
   ``all_to_all``, and each rank back-propagates them through its own projection. With the
   reference backend this is autograd through the exchange (:class:`AllToAll`); with the CUDA
   backend the stage functions' backward is called explicitly, as the one-GPU fast path does.

Only Gaussians inside a view travel, so the traffic per view is its visible Gaussians, whatever
the number of ranks. The owner keeps each view's screen-space gradient and radii of its own
Gaussians, which is all densification needs: its statistics come out as one process's.

The two exchanges differ in how the split sizes of the ``all_to_all`` become known:

* :class:`ReferenceExchange` (the CPU, gloo) counts each view's visible Gaussians, gathers the
  counts on the host (:class:`ExchangePlan`) and sends exactly those rows: floats and integers
  in two calls, with autograd through the exchange;
* :class:`CudaExchange` must not wait for the GPU in a step (the host would stop queueing
  work): each rank sends a fixed number of rows per view, the room of a :class:`RowBudget`
  that every rank agrees on, the visible Gaussians first and zero rows after them, integers as
  float bits in the same rows: one ``all_to_all`` forward, one back. A step whose visible
  Gaussians outgrew the room is done again (as a step that outgrew the sort's pair budget).

Column layouts of the exchanged rows (the first ``*_GRAD_COLUMNS`` floats carry gradients):

* reference: means2d (2), conic (3), opacity (1), colour (3), depth (1); ints: radius,
  tile_min (2), tile_max (2);
* CUDA (``PACKED_COLUMNS``): means2d (2), conic + opacity (4), colour (3), inverse depth (1),
  then depth (1, no gradient), tile rectangle (4, int32 bits), tiles touched (1, int32 bits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from rasterizer.camera import Camera, canvas_size
from rasterizer.capacity import GrowingCapacity
from rasterizer.gaussians import Gaussians
from trainer.batching import ScreenStatistics, screen_statistics, view_shares

from .comm import Communicator

__all__ = ["ExchangePlan", "AllToAll", "ReferenceExchange", "CudaExchange", "RowBudget", "owner_of_views",
           "compaction_slots", "REFERENCE_GRAD_COLUMNS", "CUDA_GRAD_COLUMNS", "PACKED_COLUMNS"]

REFERENCE_GRAD_COLUMNS = 10
CUDA_GRAD_COLUMNS = 10
PACKED_COLUMNS = 16


def owner_of_views(count: int, world: int) -> list[int]:
    """The rank that renders each of ``count`` views (contiguous shares, rank 0 first)."""
    owners = [0] * count
    for rank, share in enumerate(view_shares(count, world)):
        for position in share:
            owners[position] = rank
    return owners


class ExchangePlan:
    """Who sends how many projected Gaussians of which view to whom, for one batch.

    ``counts`` is this rank's number of Gaussians visible in each view ([B] int64, CPU); the
    plan gathers every rank's counts (one small collective) and then knows the split sizes of
    the ``all_to_all`` calls and where each view's rows land.
    """

    def __init__(self, comm: Communicator, counts: Tensor, owners: Sequence[int]):
        self.comm = comm
        self.owners = list(owners)
        self.matrix = comm.gather_counts(counts.to(torch.int64))       # [world, B]
        self.mine = [b for b, owner in enumerate(self.owners) if owner == comm.rank]
        rows = self.matrix.tolist()
        self.send = [sum(rows[comm.rank][b] for b in range(len(owners)) if owners[b] == r) for r in range(comm.world)]
        self.receive = [sum(rows[source][b] for b in self.mine) for source in range(comm.world)]
        self._rows_of_view = self._receive_layout(rows)

    def _receive_layout(self, rows: list[list[int]]) -> dict[int, list[tuple[int, int]]]:
        """For each view rendered here, its (start, count) runs in the received rows: from
        every source rank (rank 0's first), whose block holds our views in view order."""
        layout: dict[int, list[tuple[int, int]]] = {b: [] for b in self.mine}
        start = 0
        for source in range(self.comm.world):
            for b in self.mine:
                layout[b].append((start, rows[source][b]))
                start += rows[source][b]
        return layout

    def rows_of(self, view: int, device: torch.device) -> Tensor:
        """Indices, into the received rows, of view ``view``'s Gaussians (rank 0's first)."""
        runs = [torch.arange(start, start + count) for start, count in self._rows_of_view[view] if count]
        index = torch.cat(runs) if runs else torch.zeros(0, dtype=torch.int64)
        return index.to(device)

    def forward(self, tensor: Tensor) -> Tensor:
        return self.comm.all_to_all(tensor, self.send, self.receive)

    def backward(self, tensor: Tensor) -> Tensor:
        return self.comm.all_to_all(tensor, self.receive, self.send)


class AllToAll(torch.autograd.Function):
    """The plan's exchange with autograd: the backward sends the gradients back to the owners."""

    @staticmethod
    def forward(ctx, tensor: Tensor, plan: ExchangePlan) -> Tensor:
        ctx.plan = plan
        return plan.forward(tensor)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return ctx.plan.backward(grad.contiguous()), None


@dataclass
class RenderedViews:
    """This rank's renders of a batch: ``images[b]`` ([3, H, W]) for its views, keyed by their
    position in the batch, and ``backward``, to call once on every rank (also one without
    views: the exchange is collective). The CUDA exchange draws its views on one ``canvas``
    [V, 3, H, W] (as ``rasterizer.cuda.render_for_training``): ``canvas[j]`` holds the view of the j-th key
    of ``images`` (in the batch's order), which is its top-left corner; its backward takes
    d loss / d canvas. ``radii`` [B, n] are this rank's Gaussians' radii in
    every view of the batch, and ``means2d_grads()`` their screen-space gradients [B, n, 2]
    once the backward has run."""

    images: dict[int, Tensor]
    backward: Callable
    radii: Tensor
    means2d_grads: Callable[[], Tensor]
    canvas: Tensor | None = None

    def statistics(self, cameras: Sequence[Camera]) -> list[ScreenStatistics]:
        """What densification reads, one entry per image size (after the backward)."""
        return screen_statistics(self.means2d_grads(), self.radii, cameras)


def _visible_rows(radii: Tensor) -> tuple[Tensor, Tensor]:
    """(view, row) pairs of the Gaussians with radius > 0 ([B, n] radii), view-major, and the
    per-view counts (CPU int64)."""
    visible = radii > 0
    counts = visible.sum(dim=1).cpu()
    pairs = torch.nonzero(visible)
    return pairs, counts


class ReferenceExchange:
    """The exchange with the reference backend's stages (``rasterizer.reference.project`` and
    ``rasterize``), differentiable through autograd."""

    def __init__(self, comm: Communicator, antialiasing: bool):
        self.comm, self.antialiasing = comm, antialiasing

    @staticmethod
    def settle(pairs_overflowed: bool) -> tuple[bool, list[int] | None]:
        """Nothing to agree on: the reference exchange and rasterizer use exact counts, and
        ``control`` is not carried (None: the caller agrees on it by itself)."""
        return pairs_overflowed, None

    def render(self, gaussians: Gaussians, cameras: Sequence[Camera], background: Tensor, sh_degree: int,
               differentiable: bool = True, largest_part: int | None = None,
               pair_budget=None, control: Sequence[int] = ()) -> RenderedViews:
        """Render this rank's share of ``cameras`` from every rank's Gaussians (a collective);
        ``largest_part``, ``pair_budget`` and ``control`` are the CUDA exchange's and are not
        used here."""
        from rasterizer.reference import Projection, project, rasterize  # noqa: PLC0415

        owners = owner_of_views(len(cameras), self.comm.world)
        projections = [project(gaussians, camera, sh_degree, 1.0, self.antialiasing) for camera in cameras]
        if differentiable:
            for projection in projections:
                projection.means2d.retain_grad()
        radii = torch.stack([p.radii for p in projections]) if projections else torch.zeros(0, len(gaussians))
        pairs, counts = _visible_rows(radii)
        plan = ExchangePlan(self.comm, counts, owners)
        floats = torch.stack([torch.cat([p.means2d, p.conics, p.opacities[:, None], p.colors, p.depths[:, None]], dim=1)
                              for p in projections])[pairs[:, 0], pairs[:, 1]]
        ints = torch.stack([torch.cat([p.radii[:, None].long(), p.tile_min, p.tile_max], dim=1)
                            for p in projections])[pairs[:, 0], pairs[:, 1]]
        received = AllToAll.apply(floats, plan) if differentiable else plan.forward(floats.detach())
        received_ints = plan.forward(ints)
        images = {}
        for b in plan.mine:
            rows = plan.rows_of(b, received.device)
            f, i = received[rows], received_ints[rows]
            projection = Projection(f[:, 0:2], f[:, 9], f[:, 2:5], f[:, 5], f[:, 6:9], i[:, 0].to(torch.int32),
                                    i[:, 1:3], i[:, 3:5])
            images[b] = rasterize(projection, projection.means2d, cameras[b], background)[0]

        def backward(loss: Tensor | None) -> None:
            """``loss``: the sum of this rank's views' losses (None without views)."""
            if loss is None:
                received.backward(torch.zeros_like(received))
            else:
                loss.backward()

        def means2d_grads() -> Tensor:
            return torch.stack([p.means2d.grad if p.means2d.grad is not None else torch.zeros_like(p.means2d)
                                for p in projections])

        return RenderedViews(images, backward, radii, means2d_grads)


class RowBudget(GrowingCapacity):
    """Room for the projected Gaussians that one rank sends for one view in the CUDA exchange.

    The room is the ``all_to_all``'s split size, so it must be the same on every rank and known
    to the host before the GPU has projected anything. As :class:`rasterizer.cuda.PairBudget`
    does for the tile sort, the room is a guess that only grows (the rule of
    :class:`rasterizer.capacity.GrowingCapacity`): each step's agreement (see
    :class:`CudaExchange`) tells every rank the most rows any rank had for one view, the same
    value on every rank, which :meth:`grow` takes. A step whose rows outgrew the room is done
    again. Until the first count is known the room is the largest part: every Gaussian fits.
    """

    def __init__(self, headroom: float = 1.25, minimum: int = 1024):
        super().__init__(headroom, minimum)

    def room(self, largest_part: int) -> int:
        """Rows per view for an exchange from ranks holding at most ``largest_part`` Gaussians."""
        return largest_part if self.capacity == 0 else min(self.capacity, largest_part)


def compaction_slots(sent: Tensor, room: int) -> Tensor:
    """Where each projected Gaussian goes in the send buffer: ``sent`` [B, n] bool marks the rows
    to send; row i of view b goes to slot ``b * room + (its rank among view b's sent rows)``, in
    row order, and every other row (not sent, or past the room) to the spare slot ``B * room``.
    Returns int64 [B, n]. Pure tensor code: no host wait."""
    views = sent.shape[0]
    position = torch.cumsum(sent, dim=1, dtype=torch.int64) - 1
    first = torch.arange(views, device=sent.device, dtype=torch.int64)[:, None] * room
    return torch.where(sent & (position < room), first + position, views * room)


def _packed_rows(outputs: tuple) -> Tensor:
    """The projection's outputs for V views ([V, n, ...]) as rows of PACKED_COLUMNS floats (the
    integer columns keep their bits: they are only copied, never computed with)."""
    means2d, conic_opacity, colors, inv_depths, depths, _radii, rects, touched = outputs
    return torch.cat([means2d, conic_opacity, colors, inv_depths[..., None], depths[..., None],
                      rects.view(torch.float32), touched[..., None].view(torch.float32)], dim=-1)


def _unpacked(rows: Tensor) -> tuple:
    """Packed rows ([V, R, PACKED_COLUMNS]) -> the rasterizer's inputs (means2d, conic_opacity,
    colours, inverse depths, depths, tile rectangles, tiles touched), each contiguous."""
    columns = [rows[..., 0:2], rows[..., 2:6], rows[..., 6:9], rows[..., 9], rows[..., 10]]
    inputs = [column.contiguous() for column in columns]
    inputs.append(rows[..., 11:15].contiguous().view(torch.int32))
    inputs.append(rows[..., 15].contiguous().view(torch.int32))
    return tuple(inputs)


class CudaExchange:
    """The exchange with the CUDA backend's stage functions, without autograd (the one-GPU fast
    path's structure: each stage's backward is called explicitly) and without waiting for the
    GPU: every rank sends, for every view, a fixed number of rows (its :class:`RowBudget` room),
    its visible Gaussians first and zero rows after them (a zero row touches no tile). The
    exchange is one ``all_to_all`` each way.

    **The step's agreement.** Whether any rank's rows outgrew the room or its tile pairs their
    :class:`rasterizer.cuda.PairBudget` (the step must then be done again on every rank), the
    most rows any rank had for a view (the next room), and the caller's ``control`` values are
    agreed on by one small ``all_reduce`` (maximum) on the GPUs, queued at the end of the
    forward; :meth:`settle` reads its result. The host thus waits once a step for its own GPU
    to reach that point (the forward's counting, not the step's end), and holds no host
    rendezvous with the other ranks. (The gloo rendezvous this replaced measured as fast: its
    0.5-0.7 ms a step were mostly the wait for the other process's host, which still sets the
    pace through the NCCL collectives.)
    """

    def __init__(self, comm: Communicator, antialiasing: bool):
        self.comm, self.antialiasing = comm, antialiasing
        self.budget = RowBudget()
        self._agreement: tuple[Tensor, torch.cuda.Event] | None = None

    def _queue_agreement(self, rows_largest: Tensor, room: int, pair_budget, control: Sequence[int]) -> None:
        """Queue the step's agreement (see the class docstring): [overflow, most rows, *control],
        the maximum over the ranks, copied to pinned host memory behind an event."""
        rows_largest = rows_largest.reshape(1).to(torch.int64)
        overflow = rows_largest > room
        pairs = pair_budget.pending_overflow() if pair_budget is not None else None
        if pairs is not None:
            overflow = overflow | pairs
        # From pinned memory: a copy from pageable memory may wait for the GPU.
        control = torch.tensor(list(control), dtype=torch.int64).pin_memory()
        values = torch.cat([overflow.to(torch.int64), rows_largest, control.to(rows_largest.device, non_blocking=True)])
        self.comm.max_on_device(values)
        host = torch.empty(values.shape, dtype=torch.int64, pin_memory=True)
        host.copy_(values, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._agreement = (host, event)

    def settle(self, pairs_overflowed: bool) -> tuple[bool, list[int]]:
        """Once a step, on every rank, after the backward was queued: whether any rank's render
        outgrew its room in the exchange or its pair budget (``pairs_overflowed``, this rank's
        answer, is already in the agreement: only the agreed answer is used, so that every rank
        decides alike); the step must then be done again on every rank.
        Returns that and the maxima over the ranks of the ``control`` values given to
        :meth:`render`. Waits until this GPU has reached the agreement queued by the render."""
        if self._agreement is None:
            raise RuntimeError("CudaExchange.settle: no differentiable render to settle")
        host, event = self._agreement
        self._agreement = None
        event.synchronize()
        overflow, largest, *agreed = host.tolist()
        self.budget.grow(largest)
        return bool(overflow), agreed

    def render(self, gaussians: Gaussians, cameras: Sequence[Camera], background: Tensor, sh_degree: int,
               differentiable: bool = True, largest_part: int | None = None,
               pair_budget=None, control: Sequence[int] = ()) -> RenderedViews:
        """Render this rank's share of ``cameras`` from every rank's Gaussians (a collective).
        ``largest_part``: the most Gaussians a rank holds (asked of the ranks when None);
        ``pair_budget``: a :class:`rasterizer.cuda.PairBudget` for this rank's renders;
        ``control``: small non-negative ints to agree on (see :meth:`settle`). Without
        ``differentiable`` (evaluation) every rank sends whole parts and no :meth:`settle` is
        due."""
        from rasterizer.cuda import (_project_backward, _project_forward, _rasterize_backward,  # noqa: PLC0415
                                     _rasterize_forward, _raw_parameters, _settings, camera_blocks)

        params = _raw_parameters(gaussians)
        device, n, views, world = gaussians.device, len(gaussians), len(cameras), self.comm.world
        if largest_part is None:
            largest_part = self.comm.max_ints([n])[0]
        if n > largest_part:
            raise ValueError(f"this rank holds {n} Gaussians, more than the largest part ({largest_part})")
        background = background.to(device=device, dtype=torch.float32).contiguous()
        shares = view_shares(views, world)
        mine = list(shares[self.comm.rank])
        # 1. This rank's Gaussians projected into every view: one launch, whatever the sizes.
        camera_data = camera_blocks(list(cameras), device)
        settings = _settings(sh_degree, 1.0, self.antialiasing)
        projection = _project_forward(params, camera_data, settings)
        packed = _packed_rows(projection)                                             # [B, n, 16]
        radii = projection[5]                                                         # [B, n]
        sent = projection[7] > 0                                                      # touches a tile
        # 2. Those rows, compacted view by view into `room` rows each.
        room = self.budget.room(largest_part) if differentiable else largest_part
        slots = compaction_slots(sent, room).reshape(-1)
        send = packed.new_zeros(views * room + 1, PACKED_COLUMNS)
        send.index_copy_(0, slots, packed.reshape(-1, PACKED_COLUMNS))   # the spare last row takes the rest
        send_splits = [len(share) * room for share in shares]
        receive_splits = [len(mine) * room] * world
        received = self.comm.all_to_all(send[:views * room], send_splits, receive_splits)
        received = received.view(world, len(mine), room, PACKED_COLUMNS)
        # 3. This rank's views in one render, on the canvas of their sizes; rows of rank 0 first.
        images, canvas, render = {}, None, None
        if mine:
            inputs = [column.reshape(len(mine), world * room, *column.shape[3:])
                      for column in _unpacked(received.transpose(0, 1))]
            size = canvas_size([cameras[b] for b in mine])
            canvas, _, _, state, _ = _rasterize_forward(*inputs[:4], background, *inputs[4:], size, pair_budget)
            for j, b in enumerate(mine):
                images[b] = canvas[j, :, :cameras[b].height, :cameras[b].width]
            render = (inputs[:4], state, size)
        if differentiable:
            self._queue_agreement(sent.sum(dim=1).max(), room, pair_budget, control)
        means2d_grads = []

        def backward(grad_canvas: Tensor | None) -> list[Tensor]:
            """d loss / d canvas of the views rendered here ([len(mine), 3, H, W], zero outside the
            views; None on a rank without views) -> the gradients of this rank's six raw
            parameters (also keeps the screen-space gradients for densification)."""
            if render is None:
                back = received.new_empty(0, CUDA_GRAD_COLUMNS)
            else:
                inputs, state, size = render
                grads = _rasterize_backward(*inputs, background, state, size, grad_canvas)
                rows = torch.cat([grads[0], grads[1], grads[2], grads[3][..., None]], dim=-1)
                back = rows.view(len(mine), world, room, CUDA_GRAD_COLUMNS).transpose(0, 1)
                back = back.reshape(-1, CUDA_GRAD_COLUMNS)  # [world, mine, room]: each source's rows together
            returned = self.comm.all_to_all(back, receive_splits, send_splits)
            # Each row's gradient back at its Gaussian (the spare slot: a zero row).
            returned = torch.cat([returned, returned.new_zeros(1, CUDA_GRAD_COLUMNS)])
            incoming = returned.index_select(0, slots).view(views, n, CUDA_GRAD_COLUMNS)
            means2d_grads.append(incoming[..., 0:2].contiguous())
            parts = [incoming[..., 0:2], incoming[..., 2:6], incoming[..., 6:9], incoming[..., 9]]
            return _project_backward(params, camera_data, radii, settings, [p.contiguous() for p in parts])

        return RenderedViews(images, backward, radii, lambda: means2d_grads[-1], canvas)
