"""Starting a multi-process run: ``splat-train --gpus N`` (torchrun's launcher, in-process), and
a worker's start-up under torchrun (``torchrun --nproc_per_node N -m trainer.cli.train ...``).

``--gpus N`` runs ``torch.distributed.run`` with ``--standalone --nproc_per_node N -m
trainer.cli.train`` and the same arguments (the output folder fixed first, so that every
process writes to one), and turns its outcome into splat-train's exit status and a one-line
message: 0 when training completed, 130 after Ctrl-C (every rank stopped at the same
iteration and rank 0 saved), 1 when a rank failed (torchrun stops the others; the files saved
last are intact, as every write is atomic). Workers get up to ``SHUTDOWN_TIMEOUT_S`` seconds to
save after Ctrl-C before torchrun kills them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from typing import Iterator, Sequence

import torch
import torch.distributed as dist

from trainer.config import ConfigError, TrainConfig

from .comm import Communicator

__all__ = ["check_gpus", "launch_on_gpus", "run_torchrun", "start_worker", "SHUTDOWN_TIMEOUT_S"]

SHUTDOWN_TIMEOUT_S = 600   # a big model takes a while to gather and write
EXIT_INTERRUPTED = 130


def start_worker(config: TrainConfig) -> Communicator:
    """Join the run of a process started by torchrun (one GPU and NCCL each when CUDA is
    available, the CPU and gloo otherwise); agree on rank 0's output folder."""
    comm = Communicator.from_environment(use_cuda=torch.cuda.is_available())
    if config.script.gpus is not None and config.script.gpus != comm.world:
        comm.close()
        raise ConfigError(f"--gpus {config.script.gpus}, but torchrun started {comm.world} processes")
    # Without -m every process made up its own folder name: rank 0's wins.
    config.model.model_path = comm.broadcast_object(config.model.model_path)
    return comm


def check_gpus(gpus: int) -> None:
    """Raise :class:`ConfigError` (one line) unless this machine has ``gpus`` CUDA GPUs, and NCCL
    when there are several."""
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available == 0:
        raise ConfigError(f"--gpus {gpus}: this machine has no CUDA GPU (several CPU processes train with "
                          "torchrun --nproc_per_node N -m trainer.cli.train ... --backend reference)")
    if gpus > available:
        raise ConfigError(f"--gpus {gpus}: this machine has only {available} CUDA GPU{'s' if available != 1 else ''}")
    if gpus > 1 and not dist.is_nccl_available():
        raise ConfigError(f"--gpus {gpus}: training on several GPUs needs NCCL, and this PyTorch was built without "
                          "it (install a CUDA build of PyTorch from pytorch.org)")


def launch_on_gpus(config: TrainConfig, argv: Sequence[str]) -> int:
    """``splat-train --gpus N`` with N > 1: :func:`check_gpus`, then :func:`run_torchrun`."""
    check_gpus(config.script.gpus)
    return run_torchrun(config.script.gpus, list(argv) + ["--model_path", config.model.model_path],
                        config.model.model_path)


@contextlib.contextmanager
def _quiet_launcher() -> Iterator[None]:
    """torchrun's own log lines (thread settings, closing signals, tracebacks of failures) are
    replaced by splat-train's messages."""
    loggers = [logging.getLogger(name) for name in ("torch.distributed.run", "torch.distributed.elastic",
                                                    "torch.distributed.launcher")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def run_torchrun(processes: int, worker_argv: Sequence[str], model_path: str) -> int:
    """Run ``processes`` copies of ``python -m trainer.cli.train worker_argv`` under torchrun's
    elastic agent on this machine; returns splat-train's exit status (see the module docstring)."""
    from torch.distributed import run as torchrun  # noqa: PLC0415
    from torch.distributed.elastic.multiprocessing.api import SignalException  # noqa: PLC0415
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError  # noqa: PLC0415

    os.environ.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(SHUTDOWN_TIMEOUT_S))
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default for several processes, without its notice
    args = torchrun.parse_args(["--standalone", "--nproc_per_node", str(processes), "--max_restarts", "0",
                                "-m", "trainer.cli.train", *worker_argv])
    with _quiet_launcher():
        try:
            torchrun.run(args)
        except SignalException:  # Ctrl-C (or a termination signal) reached the launcher
            print(f"splat-train: stopped; the processes saved {model_path} before exiting", file=sys.stderr)
            return EXIT_INTERRUPTED
        except ChildFailedError as error:
            return _report_failure(error, model_path)
    return 0


def _report_failure(error, model_path: str) -> int:
    """One line naming the rank that failed first, as far as torchrun's record tells: a rank
    killed by a signal other than torchrun's own SIGTERM, else one that exited with an error of
    its own (status other than 1, which the survivors of a lost rank use), else the lowest."""
    failures = error.failures
    if failures and all(failure.exitcode == EXIT_INTERRUPTED for failure in failures.values()):
        return EXIT_INTERRUPTED
    if not failures:
        print(f"splat-train: error: the training processes failed; the files last saved in {model_path} are intact",
              file=sys.stderr)
        return 1
    rank, failure = min(failures.items(), key=lambda item: (item[1].exitcode == -signal.SIGTERM,
                                                            item[1].exitcode == 1, item[0]))
    how = (f"was killed by {failure.signal_name()}" if failure.exitcode < 0
           else f"exited with status {failure.exitcode} (see its messages above)")
    print(f"splat-train: error: rank {rank} {how}; the other processes were stopped; the files last saved in "
          f"{model_path} are intact", file=sys.stderr)
    return 1
