"""``splat-train``: graphdeco-inria's ``train.py`` command line (every flag, same defaults).

Exit status: 0 when training completes, 130 after Ctrl-C and 143 after SIGTERM (checkpoint and
PLY saved), 1 when memory ran out (what could be saved was), on a file/scene/output-folder error,
or when the final save had to go to a rescue folder (or nowhere), 2 for a flag that cannot be
used (argparse's convention).

Several processes: ``splat-train --gpus N ...`` starts N of them through torch.distributed.run,
and a process started by ``torchrun ... -m trainer.cli.train ...`` joins its run
(``trainer/distributed/``); rank 0 prints, serves the network viewer and writes the files.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Sequence

from rasterizer.files import FileFormatError
from trainer.config import ConfigError, parse_args
from trainer.train import TrainingHook, TrainResult, is_out_of_memory, train

EXIT_CODES = {"completed": 0, "interrupted": 130, "out_of_memory": 1}


def exit_code(result: TrainResult) -> int:
    """:data:`EXIT_CODES`, except 128 + N after signal N other than Ctrl-C (143: SIGTERM), and 1
    when a save could not be written into the model folder."""
    if result.status == "interrupted" and result.stop_signal not in (None, signal.SIGINT):
        return 128 + int(result.stop_signal)
    if result.status == "completed" and (result.rescued_to is not None or result.lost_saves):
        return 1
    return EXIT_CODES[result.status]


def viewer_hooks(config) -> list[TrainingHook]:
    """The network viewer port (``--ip``, ``--port``; none with ``--disable_viewer``), listening
    from now on; see ``trainer/network/server.py``. A port already in use (a second training
    run) gives a warning and training without a viewer port, rather than no training."""
    if config.script.disable_viewer:
        return []
    from trainer.network.server import NetworkViewer  # noqa: PLC0415

    try:
        return [NetworkViewer(config.script.ip, config.script.port).listen()]
    except ConfigError as error:
        print(f"splat-train: warning: {error}; training without it", file=sys.stderr)
        return []


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    config = parse_args(argv)
    from trainer.distributed.comm import DistributedFailure, launched_by_torchrun  # noqa: PLC0415

    comm = None
    hooks: list[TrainingHook] = []
    try:
        if launched_by_torchrun():
            from trainer.distributed import start_worker  # noqa: PLC0415

            comm = start_worker(config)
        elif config.script.gpus is not None:
            from trainer.distributed import check_gpus, launch_on_gpus  # noqa: PLC0415

            check_gpus(config.script.gpus)
            if config.script.gpus > 1:
                return launch_on_gpus(config, argv)  # --gpus 1 trains here, as without the flag
        rank_zero = comm is None or comm.rank == 0
        if not config.script.quiet and rank_zero:
            print("Optimizing " + config.model.model_path)
        if rank_zero:
            hooks = viewer_hooks(config)
        if comm is None:
            result = train(config, hooks=hooks)
        else:
            from trainer.distributed import train_distributed  # noqa: PLC0415

            result = train_distributed(config, comm, hooks=hooks)
    except DistributedFailure as error:
        print(f"splat-train: error: {error}", file=sys.stderr)
        if comm is not None:
            # A worker that lost its peers leaves at once: tearing down a broken gloo group can
            # abort the process (SIGABRT), which would hide the rank that failed first.
            sys.stdout.flush(), sys.stderr.flush()
            os._exit(1)
        return 1
    except ConfigError as error:
        print(f"splat-train: error: {error}", file=sys.stderr)
        return 2
    except (OSError, FileFormatError) as error:  # missing/unreadable inputs, unusable output folder
        print(f"splat-train: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before training started: nothing worth saving yet
        print("splat-train: interrupted before training started", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - memory errors only; anything else propagates
        if not is_out_of_memory(error):
            raise
        print(f"splat-train: error: out of memory while loading the scene ({str(error).splitlines()[0]}); "
              "try --data_device cpu, a lower --resolution or a smaller --cache_budget", file=sys.stderr)
        return 1
    finally:
        for hook in hooks:
            if hasattr(hook, "close"):
                hook.close()
        if comm is not None:
            comm.close()
    return exit_code(result)


if __name__ == "__main__":
    sys.exit(main())
