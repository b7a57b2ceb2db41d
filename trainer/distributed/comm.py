"""The process group of a multi-process training run, and the few collectives the trainer uses.

Processes are started by ``torchrun`` (or ``splat-train --gpus N``, which runs the same
launcher in-process), and find each other through its environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``). There are two groups:

* the main group, NCCL when training on GPUs and gloo on the CPU, carries the tensors: the
  projected Gaussians exchanged every step, their gradients, gathers for saving;
* a gloo group on the CPU carries small control values (stop requests, counts, "does the
  viewer need the model"), so that reading them never waits for a GPU.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from trainer.config import ConfigError

__all__ = ["Communicator", "launched_by_torchrun", "DistributedFailure", "CONTROL_TIMEOUT"]

# How long a rank waits in a collective before giving up. A paused network viewer holds every
# rank at the next step (the others wait for rank 0), so this is long; a rank that dies is
# noticed by torchrun, which stops the others, not by this timeout.
CONTROL_TIMEOUT = datetime.timedelta(hours=6)


class DistributedFailure(Exception):
    """This rank cannot go on with the others: another rank is gone (its connection closed, or
    a collective failed), or this rank ran out of memory mid-step. The message is one line.

    Not a RuntimeError: the trainer turns a RuntimeError that reads "out of memory" into a save
    (:func:`trainer.train.is_out_of_memory`), and in a multi-process run that save is a
    collective the other ranks, still inside the step, would never join: the run would hang.
    This error ends the process instead, and torchrun stops the others."""


def launched_by_torchrun() -> bool:
    """True in a process started by torchrun / torch.distributed.run (its environment)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ
                                                   and "MASTER_ADDR" in os.environ)


@dataclass
class Communicator:
    """This process's place in the run: ``rank`` of ``world`` processes, its ``device``, the main
    group's backend (``"nccl"`` or ``"gloo"``) and the gloo ``control`` group."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str
    control: object

    @classmethod
    def from_environment(cls, use_cuda: bool) -> "Communicator":
        """Join the run described by torchrun's environment. ``use_cuda``: one GPU per process
        (``LOCAL_RANK``) and NCCL; otherwise the CPU and gloo. Raises :class:`ConfigError` with
        a one-line reason when that cannot work."""
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        if use_cuda:
            if not dist.is_nccl_available():
                raise ConfigError("training on several GPUs needs NCCL, and this PyTorch was built without it "
                                  "(install a CUDA build of PyTorch from pytorch.org)")
            count = torch.cuda.device_count()
            if local_rank >= count:
                raise ConfigError(f"process {local_rank} of this machine has no GPU: the machine has {count} "
                                  f"CUDA GPU(s); start at most {count} processes per machine")
            torch.cuda.set_device(local_rank)
            device, backend = torch.device("cuda", local_rank), "nccl"
        else:
            if not dist.is_gloo_available():
                raise ConfigError("training on several CPU processes needs gloo, and this PyTorch has none")
            device, backend = torch.device("cpu"), "gloo"
        options = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend, timeout=CONTROL_TIMEOUT, **options)
        control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT) if backend != "gloo" else dist.group.WORLD
        return cls(rank, world, local_rank, device, backend, control)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    # ----- control values (CPU, gloo) ------------------------------------------------------
    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on at least one."""
        return bool(self.max_ints([int(bool(flag))])[0])

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's ``flag``, on every rank."""
        value = torch.tensor([1 if flag else 0], dtype=torch.int32)
        self._call(dist.broadcast, value, src=0, group=self.control)
        return bool(value.item())

    def broadcast_object(self, value):
        """Rank 0's picklable ``value``, on every rank."""
        box = [value]
        self._call(dist.broadcast_object_list, box, src=0, group=self.control)
        return box[0]

    def gather_counts(self, counts: torch.Tensor) -> torch.Tensor:
        """Every rank's int64 CPU vector ``counts`` (all the same length), stacked: [world, len]."""
        parts = [torch.empty_like(counts) for _ in range(self.world)]
        self._call(dist.all_gather, parts, counts.contiguous(), group=self.control)
        return torch.stack(parts)

    def max_ints(self, values: list[int]) -> list[int]:
        """The largest of each of ``values`` over the ranks (one small collective)."""
        tensor = torch.tensor(values, dtype=torch.int64)
        self._call(dist.all_reduce, tensor, op=dist.ReduceOp.MAX, group=self.control)
        return tensor.tolist()

    def sum_cpu(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over the ranks of a CPU tensor, in place."""
        self._call(dist.all_reduce, tensor, group=self.control)
        return tensor

    def sum_int(self, value: int) -> int:
        total = torch.tensor([int(value)], dtype=torch.int64)
        self._call(dist.all_reduce, total, group=self.control)
        return int(total.item())

    # ----- tensors (main group) ------------------------------------------------------------
    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of ``tensor`` over the ranks, in place (on the main group's device)."""
        self._call(dist.all_reduce, tensor)
        return tensor

    def max_on_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """The largest of each element over the ranks, in place, on the main group's device
        (with NCCL queued on the GPU like a kernel: the host does not wait)."""
        self._call(dist.all_reduce, tensor, op=dist.ReduceOp.MAX)
        return tensor

    def all_to_all(self, tensor: torch.Tensor, send: list[int], receive: list[int]) -> torch.Tensor:
        """Rows ``send[r]`` of ``tensor`` (in order) go to rank r; returns the ``sum(receive)``
        rows received, rank 0's first."""
        output = tensor.new_empty((sum(receive), *tensor.shape[1:]))
        if self.world == 1:
            return tensor.clone()
        self._call(dist.all_to_all_single, output, tensor.contiguous(), receive, send)
        return output

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor | None:
        """Every rank's rows of ``tensor`` (same trailing shape and dtype; any row counts),
        concatenated in rank order, on rank 0's CPU; None on the other ranks. Rank 0 receives
        one rank at a time, so that only its own part and one other are on its device at once."""
        counts = self.gather_counts(torch.tensor([tensor.shape[0]], dtype=torch.int64))[:, 0].tolist()
        tensor = tensor.contiguous()
        if self.rank != 0:
            if counts[self.rank]:
                self._call(dist.send, tensor, dst=0)
            return None
        parts = []
        for source, count in enumerate(counts):
            if source == 0:
                parts.append(tensor.detach().cpu())
            elif count:
                buffer = tensor.new_empty((count, *tensor.shape[1:]))
                self._call(dist.recv, buffer, src=source)
                parts.append(buffer.cpu())
        return torch.cat(parts) if parts else tensor.detach().cpu()

    def _call(self, function, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (RuntimeError, dist.DistBackendError) as error:
            text = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise DistributedFailure(f"rank {self.rank}: lost contact with the other ranks ({text})") from None
