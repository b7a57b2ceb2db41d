"""Rendering a batch of views whose Gaussians are spread over the ranks (Grendel's scheme).

A step's B views are dealt out to the ranks (``trainer.batching.view_shares``: contiguous
runs, rank 0 first). Then, on every rank:

1. **project** its own Gaussians into every view of the batch (the backend's projection stage);
2. **exchange**: the Gaussians it projected inside a view (screen radius > 0) go to the rank
   that renders that view, with one ``all_to_all`` of their projected features (floats) and
   one of their integer data (tile rectangles); the per-view counts travel first;
3. **render** each of its views from the projected Gaussians received from every rank (rank 0's
   first: with even parts that is the single-process order, so ties in depth break the same);
4. **backward**: the gradients of the received features go back to their owners by the reverse
   ``all_to_all``, and each rank back-propagates them through its own projection. With the
   reference backend this is autograd through the exchange (:class:`AllToAll`); with the CUDA
   backend the stage functions' backward is called explicitly, as the one-GPU fast path does.

Only Gaussians inside a view travel, so the traffic per view is its visible Gaussians, whatever
the number of ranks. The owner keeps each view's screen-space gradient and radii of its own
Gaussians, which is all densification needs: its statistics come out as one process's.

Column layouts of the exchanged rows (the first ``*_GRAD_COLUMNS`` floats carry gradients):

* reference: means2d (2), conic (3), opacity (1), colour (3), depth (1); ints: radius,
  tile_min (2), tile_max (2);
* CUDA: means2d (2), conic + opacity (4), colour (3), inverse depth (1), then depth (1, no
  gradient); ints: tile rectangle (4), tiles touched (1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from rasterizer.camera import Camera
from rasterizer.gaussians import Gaussians
from trainer.batching import ScreenStatistics, same_size_groups, view_shares

from .comm import Communicator

__all__ = ["ExchangePlan", "AllToAll", "ReferenceExchange", "CudaExchange", "owner_of_views",
           "REFERENCE_GRAD_COLUMNS", "CUDA_GRAD_COLUMNS"]

REFERENCE_GRAD_COLUMNS = 10
CUDA_GRAD_COLUMNS = 10


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
    views: the exchange is collective). ``radii`` [B, n] are this rank's Gaussians' radii in
    every view of the batch, and ``means2d_grads()`` their screen-space gradients [B, n, 2]
    once the backward has run."""

    images: dict[int, Tensor]
    backward: Callable
    radii: Tensor
    means2d_grads: Callable[[], Tensor]

    def statistics(self, cameras: Sequence[Camera]) -> list[ScreenStatistics]:
        """What densification reads, one entry per image size (after the backward)."""
        grads = self.means2d_grads()
        result = []
        for group in same_size_groups(cameras):
            index = torch.tensor(group, device=self.radii.device)
            result.append(ScreenStatistics(grads.index_select(0, index), self.radii.index_select(0, index),
                                           cameras[group[0]].width, cameras[group[0]].height))
        return result


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

    def render(self, gaussians: Gaussians, cameras: Sequence[Camera], background: Tensor, sh_degree: int,
               differentiable: bool = True) -> RenderedViews:
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


class CudaExchange:
    """The exchange with the CUDA backend's stage functions, without autograd (the one-GPU fast
    path's structure: each stage's backward is called explicitly)."""

    def __init__(self, comm: Communicator, antialiasing: bool):
        self.comm, self.antialiasing = comm, antialiasing

    def render(self, gaussians: Gaussians, cameras: Sequence[Camera], background: Tensor, sh_degree: int,
               differentiable: bool = True) -> RenderedViews:
        from rasterizer.cuda import (_project_backward, _project_forward, _rasterize_backward,  # noqa: PLC0415
                                     _rasterize_forward, _raw_parameters, _settings, camera_blocks)

        params = _raw_parameters(gaussians)
        device = gaussians.device
        background = background.to(device=device, dtype=torch.float32).contiguous()
        n = len(gaussians)
        owners = owner_of_views(len(cameras), self.comm.world)
        groups = same_size_groups(cameras)
        # Projection of this rank's Gaussians, one batched launch per image size.
        projected = [None] * len(cameras)
        group_data = []
        for group in groups:
            camera_data = camera_blocks([cameras[b] for b in group], device)
            settings = _settings(cameras[group[0]], sh_degree, 1.0, self.antialiasing)
            outputs = _project_forward(params, camera_data, settings)
            group_data.append((group, camera_data, settings, outputs))
            for position, b in enumerate(group):
                projected[b] = [t[position] for t in outputs]
        radii = torch.stack([p[5] for p in projected]) if projected else torch.zeros(0, n, dtype=torch.int32, device=device)
        pairs, counts = _visible_rows(radii)
        plan = ExchangePlan(self.comm, counts, owners)
        # means2d (2), conic_opacity (4), colours (3), inverse depth (1), depth (1)
        floats = torch.stack([torch.cat([p[0], p[1], p[2], p[3][:, None], p[4][:, None]], dim=1)
                              for p in projected])[pairs[:, 0], pairs[:, 1]]
        ints = torch.stack([torch.cat([p[6], p[7][:, None]], dim=1) for p in projected])[pairs[:, 0], pairs[:, 1]]
        received, received_ints = plan.forward(floats), plan.forward(ints)
        images, states = {}, {}
        for b in plan.mine:
            rows = plan.rows_of(b, device)
            f, i = received[rows], received_ints[rows]
            inputs = (f[:, 0:2].contiguous(), f[:, 2:6].contiguous(), f[:, 6:9].contiguous(), f[:, 9].contiguous())
            size = (cameras[b].width, cameras[b].height)
            image, _, _, state = _rasterize_forward(*inputs, background, f[:, 10].contiguous(), i[:, 0:4].contiguous(),
                                                    i[:, 4].contiguous(), size, None)
            images[b] = image
            states[b] = (rows, inputs, state, size)
        incoming_means2d = torch.zeros(len(cameras), n, 2, device=device)

        def backward(grad_images: dict[int, Tensor]) -> list[Tensor]:
            """d loss / d image of each view rendered here -> the gradients of this rank's six
            raw parameters (also fills the screen-space gradients for densification)."""
            grads_received = received.new_zeros(received.shape[0], CUDA_GRAD_COLUMNS)
            for b, (rows, inputs, state, size) in states.items():
                grads = _rasterize_backward(*inputs, background, state, size, grad_images[b])
                grads_received[rows] = torch.cat([grads[0], grads[1], grads[2], grads[3][:, None]], dim=1)
            grads_sent = plan.backward(grads_received)
            incoming = torch.zeros(len(cameras), n, CUDA_GRAD_COLUMNS, device=device)
            incoming[pairs[:, 0], pairs[:, 1]] = grads_sent
            incoming_means2d.copy_(incoming[..., 0:2])
            total = None
            for group, camera_data, settings, outputs in group_data:
                index = torch.tensor(group, device=device)
                rows = incoming.index_select(0, index)
                parts = [rows[..., 0:2].contiguous(), rows[..., 2:6].contiguous(), rows[..., 6:9].contiguous(),
                         rows[..., 9].contiguous()]
                grads = _project_backward(params, camera_data, outputs[5].contiguous(), settings, parts)
                total = grads if total is None else [a + b for a, b in zip(total, grads)]
            return total if total is not None else [torch.zeros_like(t) for t in params]

        return RenderedViews(images, backward, radii, lambda: incoming_means2d)
