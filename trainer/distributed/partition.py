"""The Gaussians of a multi-process run, split across the ranks.

Every rank holds a :class:`PartitionedGaussianModel`: an ordinary :class:`GaussianModel` of its
part of the Gaussians (parameters, Adam moments, densification statistics), so that the model
that fits grows with the number of ranks.

The parts are contiguous runs of the order one process would hold the Gaussians in: rank r
holds rows ``part_range(N, R, r)`` of it (each Gaussian knows its row, its **key**). That makes
a run on R processes compute what one process computes, float for float on the CPU:

* every rank's tensors are slices of one process's, starting at multiples of ``ALIGNMENT``
  rows, so PyTorch's vectorised kernels treat each Gaussian exactly as they would in the
  whole tensor (a kernel's scalar tail loop rounds transcendental functions differently);
* rank-major order is the single-process order, so renders, which receive each rank's
  projected Gaussians in rank order, break depth ties the same way;
* saving gathers the parts in rank order: the PLY and the checkpoint are the files one
  process writes.

Densification decides Gaussian by Gaussian, on each part; what needs the whole model is done on
the whole model: the ``--max_gaussians`` cap ranks the candidates of every part together, and
the split children are computed (random offsets included) for every split parent by every
rank, each keeping its rows. New Gaussians get keys in the single-process order (clones after
every existing Gaussian, then first children, then second children, each in their parents'
order); after pruning the keys are made dense, and the parts are rebalanced to the even,
aligned split, moving rows with their Adam moments and statistics. These collectives (a few
dense [N] vectors, 4 bytes a Gaussian, and the rows that move) happen only when densifying.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from trainer.model import ADAM_MOMENTS, PARAM_NAMES, SPLIT_CHILDREN, GaussianModel, _cap_candidates, split_children

from .comm import Communicator

__all__ = ["PartitionedGaussianModel", "part_range", "slice_state", "ALIGNMENT"]

# Part boundaries are multiples of this many rows: PyTorch's CPU kernels process 16 or 32
# floats per vectorised iteration (AVX2, AVX-512); 64 covers both for every row width.
ALIGNMENT = 64
_STATISTICS = ("grad_accum", "denom", "max_radii")


def part_range(total: int, world: int, rank: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of rank ``rank``'s part of ``total`` Gaussians: an even split with
    boundaries rounded to multiples of ALIGNMENT (the last part takes the rest)."""
    def boundary(part: int) -> int:
        if part >= world:
            return total
        return min(total, round(total * part / world / ALIGNMENT) * ALIGNMENT)

    return boundary(rank), boundary(rank + 1)


def slice_state(state: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    """Rows ``start:stop`` of a :meth:`GaussianModel.state_dict` (parameters, statistics and
    Adam moments; everything else is shared)."""
    part = dict(state)
    part["params"] = {name: state["params"][name][start:stop] for name in PARAM_NAMES}
    for key in _STATISTICS:
        part[key] = state[key][start:stop]
    optimizer = state["optimizer"]
    part["optimizer"] = {
        "state": {index: {key: (value[start:stop] if key in ADAM_MOMENTS else value) for key, value in entry.items()}
                  for index, entry in optimizer["state"].items()},
        "param_groups": optimizer["param_groups"]}
    return part


def pack_rows(tensors: list[Tensor]) -> Tensor:
    """Tensors with the same rows (and dtype) side by side as one ``[rows, columns]`` tensor, so
    that one collective moves them all; :func:`unpack_rows` takes them apart again."""
    rows = tensors[0].shape[0]
    return torch.cat([tensor.reshape(rows, math.prod(tensor.shape[1:])) for tensor in tensors], dim=1)


def unpack_rows(packed: Tensor, like: list[Tensor]) -> list[Tensor]:
    """:func:`pack_rows`'s inverse for the rows of ``packed``: views shaped as ``like``'s rows."""
    widths = [math.prod(tensor.shape[1:]) for tensor in like]
    pieces = torch.split(packed, widths, dim=1)
    return [piece.reshape(packed.shape[0], *tensor.shape[1:]) for piece, tensor in zip(pieces, like)]


class PartitionedGaussianModel(GaussianModel):
    """This rank's part of the Gaussians (``len()`` counts the part; :attr:`total` the model).

    ``keys`` (int64 [len]) are the Gaussians' rows in the single-process order. Densification
    and pruning go through :class:`GaussianModel`'s methods; the overrides below make their
    global decisions collectively, so every rank must call them together (the trainer does:
    every rank runs the same schedule).
    """

    def __init__(self, params: dict[str, Tensor], max_sh_degree: int, active_sh_degree: int = 0,
                 comm: Communicator | None = None, keys: Tensor | None = None, total: int | None = None):
        super().__init__(params, max_sh_degree, active_sh_degree)
        self.comm = comm
        self.keys = (keys if keys is not None else torch.arange(len(self))).to(self.device)
        self.total = int(total) if total is not None else len(self)
        self._pending_keys: Tensor | None = None

    # ----- construction ---------------------------------------------------------------------
    @classmethod
    def part_of(cls, model: GaussianModel, comm: Communicator, device: torch.device) -> "PartitionedGaussianModel":
        """This rank's part of a whole (not yet set-up) ``model``, on ``device``."""
        start, stop = part_range(len(model), comm.world, comm.rank)
        params = {name: model.params[name].detach()[start:stop].to(device) for name in PARAM_NAMES}
        return cls(params, model.max_sh_degree, model.active_sh_degree, comm,
                   torch.arange(start, stop, dtype=torch.int64), len(model))

    @classmethod
    def part_of_state(cls, state: dict[str, Any], opt, device: torch.device, batch_size: int,
                      comm: Communicator) -> "PartitionedGaussianModel":
        """This rank's part of a saved whole model (a checkpoint from any number of ranks), with
        its optimiser (see :meth:`GaussianModel.from_state_dict`)."""
        total = state["params"]["xyz"].shape[0]
        start, stop = part_range(total, comm.world, comm.rank)
        part = cls.from_state_dict(slice_state(state, start, stop), opt, device, batch_size)
        part.comm, part.total = comm, total
        part.keys = torch.arange(start, stop, dtype=torch.int64, device=part.device)
        return part

    def largest_part(self) -> int:
        """The most Gaussians any rank holds: the parts are :func:`part_range`'s between
        densifications (each ends with a rebalance), so no rank needs to be asked."""
        world = self.comm.world
        return max(stop - start for start, stop in (part_range(self.total, world, r) for r in range(world)))

    # ----- the whole model ---------------------------------------------------------------------
    def _whole(self, values: Tensor, rows: Tensor, size: int) -> Tensor:
        """A [size, ...] tensor, identical on every rank, holding every rank's ``values`` at its
        ``rows``. The rows of the ranks do not overlap and the others hold -0.0, which adds to
        any float without changing it (+0.0 included), so the sum is exact."""
        fill = -0.0 if values.is_floating_point() else 0
        whole = torch.full((size, *values.shape[1:]), fill, dtype=values.dtype, device=values.device)
        whole[rows] = values
        return self.comm.all_reduce(whole)

    def gathered(self, tensors: dict[str, Tensor]) -> dict[str, Tensor] | None:
        """Each of this part's ``tensors`` (one row per Gaussian) gathered for the whole model on
        rank 0 (CPU, single-process order); None on the other ranks. A collective."""
        keys = self.comm.gather_rows(self.keys)
        whole = {name: self.comm.gather_rows(tensor.detach()) for name, tensor in tensors.items()}
        if self.comm.rank != 0:
            return None
        order = torch.argsort(keys)  # rank order is key order already between densifications
        return {name: rows[order] for name, rows in whole.items()}

    def gathered_params(self) -> dict[str, Tensor] | None:
        """The whole model's parameters on rank 0 (see :meth:`gathered`)."""
        return self.gathered({name: self.params[name] for name in PARAM_NAMES})

    def gathered_state(self) -> dict[str, Any] | None:
        """The whole model's :meth:`state_dict` on rank 0 (CPU): what one process would save;
        None on the other ranks. A collective."""
        local = self.state_dict()
        params = self.gathered(local["params"])
        statistics = self.gathered({key: local[key] for key in _STATISTICS})
        optimizer_state = {}
        for index, entry in local["optimizer"]["state"].items():
            moments = self.gathered({key: entry[key] for key in ADAM_MOMENTS if key in entry})
            if moments is not None:
                optimizer_state[index] = {**{key: value for key, value in entry.items() if key not in ADAM_MOMENTS},
                                          **moments}
        if self.comm.rank != 0:
            return None
        return {**local, "params": params, **statistics,
                "optimizer": {"state": optimizer_state, "param_groups": local["optimizer"]["param_groups"]}}

    # ----- densification: the global decisions ---------------------------------------------------
    @torch.no_grad()
    def densify_and_prune(self, *args, **kwargs):
        """:meth:`GaussianModel.densify_and_prune` on the whole model; afterwards the keys are
        dense and the parts even again. A collective."""
        report = super().densify_and_prune(*args, **kwargs)
        self._renumber()
        self.rebalance()
        return report

    def _cap(self, grads: Tensor, clone_mask: Tensor, split_mask: Tensor,
             max_gaussians: int) -> tuple[Tensor, Tensor, bool]:
        """The cap over the whole model: the single-process function on the whole model's
        vectors (identical on every rank), then this part's entries."""
        whole_grads = self._whole(grads, self.keys, self.total)
        whole_clone = self._whole(clone_mask.to(torch.int32), self.keys, self.total).bool()
        whole_split = self._whole(split_mask.to(torch.int32), self.keys, self.total).bool()
        clone, split, capped = _cap_candidates(whole_grads, whole_clone, whole_split, max_gaussians - self.total)
        return clone[self.keys], split[self.keys], capped

    def _ranks_among(self, mask: Tensor) -> tuple[Tensor, int]:
        """For this part's rows selected by ``mask``: their rank among the selected rows of the
        whole model, in key order; and how many rows the whole model selects."""
        marks = torch.zeros(self.total, dtype=torch.int32, device=self.device)
        marks[self.keys[mask]] = 1
        whole = self.comm.all_reduce(marks)
        before = torch.cumsum(whole, 0) - whole
        return before[self.keys[mask]], int(whole.sum().item())

    @torch.no_grad()
    def densify_and_clone(self, mask: Tensor) -> None:
        """Clones are keyed after every existing Gaussian, in their parents' key order."""
        ranks, count = self._ranks_among(mask)
        self._pending_keys = self.total + ranks
        super().densify_and_clone(mask)
        self.total += count  # keys are dense in [0, total) again

    def _split_children(self, selected: Tensor) -> dict[str, Tensor]:
        """Every rank computes the children of every split parent of the whole model (the same
        random draw as one process), and keeps its own parents' children. They are keyed after
        the clones: first children in key order, then second children."""
        ranks, count = self._ranks_among(selected)
        mine = [self.params[name].detach()[selected] for name in PARAM_NAMES] + [self.scales[selected]]
        *values, scales = unpack_rows(self._whole(pack_rows(mine), ranks, count), mine)  # one all-reduce
        children = split_children(dict(zip(PARAM_NAMES, values)), scales)
        rows = torch.cat([ranks + copy * count for copy in range(SPLIT_CHILDREN)])
        self._pending_keys = self.total + rows
        self.total += SPLIT_CHILDREN * count  # a bound on the keys until _renumber
        return {name: value[rows] for name, value in children.items()}

    def _append(self, new: dict[str, Tensor]) -> None:
        super()._append(new)
        self.keys = torch.cat([self.keys, self._pending_keys])
        self._pending_keys = None

    def _keep(self, mask: Tensor) -> None:
        self.keys = self.keys[mask]  # first: a failure in the parent leaves the model as after
        super()._keep(mask)

    def _renumber(self) -> None:
        """Dense keys again (0 .. total-1) after densification and pruning, in the same order."""
        present = torch.zeros(self.total, dtype=torch.int32, device=self.device)
        present[self.keys] = 1
        present = self.comm.all_reduce(present)
        self.keys = (torch.cumsum(present, 0) - 1)[self.keys]
        self.total = int(present.sum().item())

    # ----- balance ----------------------------------------------------------------------------------
    @torch.no_grad()
    def rebalance(self) -> int:
        """Move rows so that every rank holds its :func:`part_range` of the keys, in key order,
        with their Adam moments and statistics. Returns how many rows this rank sent away. A
        collective.

        Only the rows that change rank travel, a parameter with its two Adam moments in one
        ``all_to_all`` (eight in all, with the keys and the statistics; one per tensor over the
        whole part had been 22, each a point where the ranks wait for one another). The memory
        this takes is the travelling rows of one parameter group and then one new tensor at a
        time (:meth:`GaussianModel._rebuild`), not a copy of the part: moving every value of the
        part as one [rows, 180] tensor once needed five copies of the part, and a two-GPU run
        near its memory limit ran out here, below one GPU's largest model."""
        world, rank = self.comm.world, self.comm.rank
        bounds = torch.tensor([part_range(self.total, world, r)[0] for r in range(1, world)],
                              dtype=torch.int64, device=self.device)
        destination = torch.bucketize(self.keys, bounds, right=True)
        staying = torch.nonzero(destination == rank).squeeze(1)
        leaving = torch.nonzero(destination != rank).squeeze(1)
        leaving = leaving[torch.argsort(destination[leaving], stable=True)]  # by rank, in key order
        send = torch.bincount(destination[leaving], minlength=world).cpu()
        counts = self.comm.gather_counts(send)  # [from, to], the same on every rank
        if not counts.any():
            return 0  # every part holds its range already, in key order
        receive = counts[:, rank].tolist()
        send = send.tolist()

        def travel(tensors: list[Tensor]) -> list[Tensor]:
            """The rows of ``tensors`` that arrive here (one ``all_to_all``)."""
            return unpack_rows(self.comm.all_to_all(pack_rows([t[leaving] for t in tensors]), send, receive), tensors)

        arrived_keys = self.comm.all_to_all(self.keys[leaving], send, receive)
        order = torch.argsort(torch.cat([self.keys[staying], arrived_keys]))
        arrived = {}
        for group in self.optimizer.param_groups:
            slots = ["param", *(key for key in ADAM_MOMENTS if key in self._state_of(group))]
            tensors = [self._slot(group, slot) for slot in slots]
            arrived.update(zip(((group["name"], slot) for slot in slots), travel(tensors)))
        statistics = travel([getattr(self, key) for key in _STATISTICS])

        def placed(tensor: Tensor, arriving: Tensor) -> Tensor:
            return torch.cat([tensor[staying], arriving])[order]

        # A collective cannot be settled half way: a failure here ends the run (torchrun stops
        # every rank), and the files saved last stay as they were.
        self._rebuild(lambda name, key, tensor: placed(tensor, arrived.pop((name, key))),
                      lambda name, key, tensor, rebuilt: tensor)
        for key, arriving in zip(_STATISTICS, statistics):
            setattr(self, key, placed(getattr(self, key), arriving))
        self.keys = placed(self.keys, arrived_keys)
        return len(leaving)
