"""The progress bar's running loss and PSNR, kept without making training steps wait for the GPU.

The reference updates ``ema = 0.4 * value + 0.6 * ema`` every iteration on the GPU and prints it
every 10. Here each step's ``(loss, MSE)`` pair is written into a small device buffer (one copy,
no wait); every ``rows`` steps the buffer goes to pinned host memory asynchronously and is folded
into the running values the next time round, when the copy has long finished. Reading
:meth:`RunningStats.current` folds everything up to the last recorded step (and waits for it):
hooks and checkpoints see exactly the reference's values; the progress bar reads
:meth:`RunningStats.lagged`, at most ``2 * rows`` steps old, which costs nothing.
"""

from __future__ import annotations

import math

import torch

__all__ = ["RunningStats", "EMA_WEIGHT"]

EMA_WEIGHT = 0.4            # the reference's progress-bar EMA weight


class RunningStats:
    """EMA of the per-step loss and PSNR (PSNR from the step's MSE, for a peak of 1).

    ``record`` takes a 2-element tensor ``(loss, mse)`` on ``device``. A step whose MSE is 0
    (PSNR +inf) leaves the running PSNR as it was, as the trainer always did.
    """

    def __init__(self, device: torch.device, rows: int = 10):
        self.device = torch.device(device)
        self.values = {"loss": 0.0, "psnr": 0.0}      # folded up to the last copied row
        self._rows = torch.zeros(rows, 2, device=self.device)
        self._written = 0                               # rows recorded since the last copy
        pinned = self.device.type == "cuda"
        self._host = torch.zeros(rows, 2, pin_memory=pinned)
        self._event = torch.cuda.Event() if pinned else None
        self._in_flight = 0                             # rows copied to the host, not folded yet

    def record(self, loss_and_mse: torch.Tensor) -> None:
        """Add one step's ``(loss, mse)``; never waits for the GPU (except on the CPU)."""
        self._rows[self._written].copy_(loss_and_mse, non_blocking=True)
        self._written += 1
        if self._written == len(self._rows):
            self._copy_to_host()

    def lagged(self) -> dict[str, float]:
        """The running values as far as they are known without waiting (for display)."""
        if self._in_flight and (self._event is None or self._event.query()):
            self._fold()
        return dict(self.values)

    def current(self) -> dict[str, float]:
        """The running values up to the last recorded step (waits for the GPU to get there)."""
        self._copy_to_host()
        self._fold()
        return dict(self.values)

    def load(self, values: dict[str, float]) -> None:
        """Start from saved running values (a resumed run); pending rows are dropped."""
        self._written = self._in_flight = 0
        self.values.update({key: float(value) for key, value in values.items() if key in self.values})

    # ----- internals ---------------------------------------------------------------
    def _copy_to_host(self) -> None:
        self._fold()    # the previous copy (finished long ago in steady state)
        count = self._written
        if count == 0:
            return
        self._host[:count].copy_(self._rows[:count], non_blocking=True)
        if self._event is not None:
            self._event.record()
        self._in_flight, self._written = count, 0

    def _fold(self) -> None:
        if not self._in_flight:
            return
        if self._event is not None:
            self._event.synchronize()
        for loss, mse in self._host[:self._in_flight].tolist():
            self.values["loss"] = EMA_WEIGHT * loss + (1.0 - EMA_WEIGHT) * self.values["loss"]
            if mse > 0.0:
                step_psnr = 20.0 * math.log10(1.0 / math.sqrt(mse))
                self.values["psnr"] = EMA_WEIGHT * step_psnr + (1.0 - EMA_WEIGHT) * self.values["psnr"]
        self._in_flight = 0
