"""Training one model with several processes (one per GPU) through ``torch.distributed``.

* ``comm.py``: the process group (NCCL on GPUs, gloo on the CPU) and a gloo control group;
* ``partition.py``: the Gaussians split across the ranks, with the global decisions of
  densification and the rebalancing of the parts;
* ``exchange.py``: rendering a batch whose Gaussians live on every rank (all-to-all of the
  projected Gaussians and of their gradients);
* ``trainer.py``: one rank's training loop, saving and stopping;
* ``launch.py``: ``splat-train --gpus N`` and a worker's start under torchrun.

The README's "Several GPUs" section is the user's guide.
"""

from .comm import Communicator, DistributedFailure, launched_by_torchrun
from .launch import check_gpus, launch_on_gpus, run_torchrun, start_worker
from .trainer import DistributedTrainer, train_distributed

__all__ = ["Communicator", "DistributedFailure", "launched_by_torchrun", "check_gpus", "launch_on_gpus", "run_torchrun",
           "start_worker", "DistributedTrainer", "train_distributed"]
