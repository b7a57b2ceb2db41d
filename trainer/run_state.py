"""What a run needs to continue exactly where it stopped: the reference's view sampler, every
random generator's state, and the checkpoint file that holds them with the model.

A splatview checkpoint (``chkpnt<it>.pth``) is a ``torch.save`` of a plain dict (loadable with
``weights_only=True``): ``format``, ``version``, ``iteration``, the model's ``state_dict``
(parameters and Adam moments), the :class:`CameraSampler`'s state, the random states and the
progress bar's running values. :func:`load_checkpoint` also reads graphdeco's
``(capture_tuple, iteration)`` checkpoints.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from rasterizer.files import FileFormatError, atomic_write

from .model import GaussianModel, convert_reference_capture

__all__ = ["CameraSampler", "seed_everything", "capture_rng", "restore_rng", "checkpoint_payload",
           "write_checkpoint", "save_checkpoint", "load_checkpoint", "cpu_copy", "CHECKPOINT_FORMAT",
           "CHECKPOINT_VERSION"]

CHECKPOINT_FORMAT = "splatview-checkpoint"
CHECKPOINT_VERSION = 1


# ----- camera sampling ---------------------------------------------------------------------
def _rng_state(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _set_rng_state(rng: random.Random, state: Sequence) -> None:
    rng.setstate((state[0], tuple(state[1]), state[2]))


class CameraSampler:
    """The reference's viewpoint stack: train views shuffled once at load, then every step pops
    ``randint(0, len - 1)`` from a copy, refilled when empty. A private ``random.Random(seed)``
    drives it; with seed 0 it draws what the reference's seeded global ``random`` draws (the
    reference also shuffles the test views, which we reproduce for the same sequence).

    Each epoch's picks are drawn when the stack is refilled (the same draws in the same order),
    so the next views are known in advance for image read-ahead.
    """

    def __init__(self, train_count: int, test_count: int = 0, seed: int = 0):
        if train_count <= 0:
            raise ValueError("the scene has no training views")
        self.rng = random.Random(seed)
        self.train_order = list(range(train_count))
        self.rng.shuffle(self.train_order)
        self.test_order = list(range(test_count))
        self.rng.shuffle(self.test_order)
        self.pending: list[int] = []   # this epoch's remaining picks, next first

    def next(self) -> int:
        """Index (into the scene's train views) of the next training view."""
        if not self.pending:
            stack = list(self.train_order)
            while stack:
                self.pending.append(stack.pop(self.rng.randint(0, len(stack) - 1)))
        return self.pending.pop(0)

    def upcoming(self, count: int) -> list[int]:
        """Up to ``count`` next picks (within the current epoch)."""
        return self.pending[:count]

    def state_dict(self) -> dict[str, Any]:
        return {"rng": _rng_state(self.rng), "train_order": list(self.train_order),
                "test_order": list(self.test_order), "pending": list(self.pending)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = (len(state["train_order"]), len(state["test_order"]))
        if saved != (len(self.train_order), len(self.test_order)):
            raise ValueError(f"the checkpoint was trained with {saved[0]} train / {saved[1]} test views, "
                             f"this scene has {len(self.train_order)} / {len(self.test_order)} "
                             "(same scene, same --eval?)")
        _set_rng_state(self.rng, state["rng"])
        self.train_order = [int(i) for i in state["train_order"]]
        self.test_order = [int(i) for i in state["test_order"]]
        self.pending = [int(i) for i in state["pending"]]


# ----- random state ------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy and torch (CPU and CUDA), as the reference's safe_state."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def capture_rng(device: torch.device) -> dict[str, Any]:
    """Every global random state, in plain types (loadable with ``weights_only=True``)."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    state = {"python": _rng_state(random), "numpy": [name, keys.tolist(), position, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    _set_rng_state(random, state["python"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


# ----- checkpoints -------------------------------------------------------------------------
def checkpoint_payload(iteration: int, model_state: dict[str, Any], sampler: CameraSampler,
                       progress: dict[str, float], device: torch.device) -> dict[str, Any]:
    """What a checkpoint holds: the model's ``state_dict``, the camera sampler, every random
    state (``device``'s CUDA generator included) and the progress bar's running values."""
    return {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "iteration": int(iteration),
        "model": model_state, "sampler": sampler.state_dict(),
        "rng": capture_rng(device), "progress": dict(progress),
    }


def write_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write a :func:`checkpoint_payload` atomically."""
    with atomic_write(path) as stream:
        torch.save(payload, stream)


def save_checkpoint(path: str | Path, iteration: int, model: GaussianModel, sampler: CameraSampler,
                    progress: dict[str, float]) -> None:
    """Write a splatview checkpoint atomically: everything needed to continue bit for bit."""
    write_checkpoint(path, checkpoint_payload(iteration, model.state_dict(), sampler, progress, model.device))


def cpu_copy(value: Any) -> Any:
    """``value`` with every tensor copied to the CPU (dicts and lists walked)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: cpu_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(cpu_copy(item) for item in value)
    return value


def load_checkpoint(path: str | Path, device: torch.device) -> dict[str, Any]:
    """Read a splatview checkpoint, or graphdeco's ``(capture_tuple, iteration)``; returns our
    dict (a reference checkpoint has no ``sampler``/``rng``/``progress`` entries)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling problem is a format problem
        raise FileFormatError(path, f"cannot read the checkpoint ({type(error).__name__}: "
                                    f"{str(error).splitlines()[0] if str(error) else ''})") from None
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        if payload.get("version") != CHECKPOINT_VERSION:
            raise FileFormatError(path, f"checkpoint version {payload.get('version')} is not supported")
        return payload
    if isinstance(payload, (tuple, list)) and len(payload) == 2 and isinstance(payload[0], (tuple, list)):
        try:
            model = convert_reference_capture(payload[0])
        except (ValueError, KeyError, AttributeError, TypeError) as error:
            raise FileFormatError(path, f"not a graphdeco checkpoint ({error})") from None
        return {"format": "graphdeco", "iteration": int(payload[1]), "model": model}
    raise FileFormatError(path, "neither a splatview checkpoint nor a graphdeco (capture, iteration) tuple")
