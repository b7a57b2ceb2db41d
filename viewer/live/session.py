"""In-viewer training: :class:`trainer.train.Trainer` in a background thread of the viewer.

Two threads share one :class:`TrainingSession`:

* the **training thread** (a daemon) runs ``Trainer.run()``. The session's hook runs at the
  start of every iteration, i.e. at an iteration boundary where the model is consistent (no
  densification or optimiser step under way). There it publishes snapshots and statistics,
  performs "save now" requests, and blocks while training is paused;
* the **render thread** (the viewer's main thread) reads :meth:`TrainingSession.snapshot` and
  :meth:`TrainingSession.stats` and sends commands (:meth:`pause`, :meth:`resume`,
  :meth:`step`, :meth:`save_now`, :meth:`stop`).

No tearing: a :class:`Snapshot` holds CPU copies of the Gaussians taken at a boundary and is
never modified after publication; the render thread swaps in whole snapshots (by ``version``),
so it never sees a model that densification is half-way through changing.

Conventions: "iteration" in the statistics is the last *completed* iteration (the trainer's
``completed``). A PLY saved at the boundary before iteration ``k`` is
``point_cloud/iteration_k``, splat-train's naming (``iteration_N`` holds the Gaussians as they
were at the start of iteration N); closing or stopping saves as Ctrl-C does in splat-train
(``iteration_<k>`` for the iteration under way and ``chkpnt<k-1>.pth``).

The hook consumes no random numbers, so a session reaches bit for bit the Gaussians that
``splat-train`` reaches with the same flags and seed. Nothing here touches GL or Dear PyGui.
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import torch

from rasterizer.gaussians import Gaussians
from rasterizer.model_folder import read_cameras_json
from trainer.config import TrainConfig, parse_args
from trainer.train import Trainer, TrainResult

__all__ = ["TrainingSession", "Snapshot", "TrainingStats", "one_line"]

SNAPSHOT_INTERVAL_S = 0.25   # at most ~4 model copies per second while training runs
STATS_INTERVAL_S = 0.1       # reading the loss waits for the GPU: at most ~10 times a second


@dataclass(frozen=True)
class Snapshot:
    """The Gaussians as they were at an iteration boundary.

    Attributes:
        gaussians: CPU float32 copies (never modified after publication; safe to read from
            any thread).
        iteration: completed iterations when the copy was taken.
        version: increases by one with every publication (renderers re-upload on change).
    """

    gaussians: Gaussians
    iteration: int
    version: int


@dataclass(frozen=True)
class TrainingStats:
    """What the training panel shows.

    Attributes:
        status: ``"ready"`` (set up, not started), ``"running"``, ``"paused"``, or how it ended:
            ``"completed"``, ``"interrupted"``, ``"out_of_memory"``, ``"error"``.
        iteration: last completed iteration; total: ``--iterations``.
        loss, psnr: the progress bar's running values (EMA weight 0.4; PSNR in dB).
        gaussians: current number of Gaussians.
        steps_per_second: iterations per second of training time (pauses and saves excluded).
        message: the last save, end or error message (one line; empty when none).
    """

    status: str
    iteration: int
    total: int
    loss: float = 0.0
    psnr: float = 0.0
    gaussians: int = 0
    steps_per_second: float = 0.0
    message: str = ""


def one_line(error: BaseException) -> str:
    """``Type: first line of the message`` (for the panel and the console)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _cpu_copy(gaussians: Gaussians) -> Gaussians:
    """Detached CPU float32 copies (a real copy even when the model already lives on the CPU)."""
    return Gaussians(**{name: tensor.detach().to("cpu", torch.float32, copy=True)
                        for name, tensor in gaussians.tensors().items()})


class TrainingSession:
    """One training run driven from the viewer; see the module docstring for the threads.

    Typical use::

        session = TrainingSession.from_args(["-s", "scene", "-m", "out", "--iterations", "7000"])
        session.setup()          # main thread: loads the scene, writes cfg_args/cameras.json/input.ply
        session.start()          # training thread
        ... session.snapshot(), session.stats(), session.pause(), session.step(), session.save_now() ...
        session.stop()           # saves like Ctrl-C when unfinished, joins the thread

    Args:
        config: splat-train's settings (:func:`trainer.config.parse_args`).
        start_paused: block before the first iteration until :meth:`resume` or :meth:`step`.
        snapshot_interval_s, stats_interval_s: minimum seconds between publications while
            training runs (a pause, a single step and the end always publish).
        log: the trainer's log function (default ``print``).
    """

    def __init__(self, config: TrainConfig, start_paused: bool = False,
                 snapshot_interval_s: float = SNAPSHOT_INTERVAL_S, stats_interval_s: float = STATS_INTERVAL_S,
                 log: Callable[[str], None] | None = None):
        self.config = config
        self.trainer = Trainer(config, hooks=[self._hook], log=log)
        self.snapshot_interval_s = snapshot_interval_s
        self.stats_interval_s = stats_interval_s
        self.result: TrainResult | None = None
        self.error: str | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        # commands (guarded by _cond)
        self._paused = start_paused
        self._step_budget = 0
        self._stop_requested = False
        self._save_requests: list[Future] = []
        self._hook_serves_saves = False          # the training thread will still take save requests
        self._waiting_at: int | None = None      # iteration the hook is blocked before
        # published values (guarded by _cond; replaced whole, never mutated)
        self._snapshot: Snapshot | None = None
        self._stats = TrainingStats("ready", 0, config.optimization.iterations)
        # training-thread bookkeeping
        self._last_snapshot_time = -float("inf")
        self._last_stats_time = -float("inf")
        self._last_entry: float | None = None
        self._idle_s = 0.0
        self._window = [0, 0.0]                  # steps, seconds since the last stats publication

    @classmethod
    def from_args(cls, argv: Sequence[str], **options) -> "TrainingSession":
        """A session from splat-train's command line (same flags, same defaults)."""
        return cls(parse_args(list(argv)), **options)

    # ----- set-up and thread --------------------------------------------------------------------
    def setup(self) -> None:
        """Check flags, load the scene, write the model folder's first files (as splat-train)
        and publish the initial model. Raises what ``Trainer.setup`` raises (ConfigError,
        FileNotFoundError, FileFormatError, ...)."""
        self.trainer.setup()
        self._publish_snapshot(force=True)
        self._publish_stats(force=True, status="paused" if self._paused else "ready")

    def start(self) -> None:
        """Start the training thread (calls :meth:`setup` first if needed)."""
        if self._thread is not None:
            raise RuntimeError("the training session was already started")
        if self.trainer.model is None:
            self.setup()
        with self._cond:
            self._hook_serves_saves = True
            self._stats = replace(self._stats, status="paused" if self._paused else "running")
        self._thread = threading.Thread(target=self._run, name="splatview-training", daemon=True)
        self._thread.start()

    @property
    def model_path(self) -> Path:
        return self.trainer.model_path

    def is_alive(self) -> bool:
        """True while the training thread runs (paused included)."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        trainer = self.trainer
        status, message = "error", ""
        try:
            self.result = trainer.run()
            status, message = self.result.status, self.result.message
            if status == "completed":
                message = f"training complete: {self.result.iteration} iterations"
        except Exception as error:  # noqa: BLE001 - reported (one line), never lost in the thread
            self.error = message = one_line(error)
            print(f"splat-view: training error: {message}", file=sys.stderr, flush=True)
        finally:
            if trainer.scene is not None:
                trainer.scene.close()
        if status == "completed":
            # (After an error or running out of memory the model may be half-way through an
            # update: the screen keeps the last consistent snapshot.)
            self._publish_snapshot(force=True)
        self._publish_stats(force=True, status=status, message=message)
        # A save asked for while the last iteration ran: the thread is done, the model is still.
        with self._cond:
            self._hook_serves_saves = False
            pending, self._save_requests = self._save_requests, []
        if pending:
            self._save(self._ply_iteration(), pending)

    # ----- commands (any thread) ----------------------------------------------------------------
    def pause(self) -> None:
        """Stop before the next iteration until :meth:`resume` (or :meth:`step`)."""
        with self._cond:
            self._paused = True
            self._step_budget = 0
            self._cond.notify_all()

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    @property
    def paused(self) -> bool:
        with self._cond:
            return self._paused

    def step(self, count: int = 1) -> None:
        """While paused: run exactly ``count`` more iterations, then pause again. Pauses
        first if training was running (the step then counts from the next boundary)."""
        with self._cond:
            self._paused = True
            self._step_budget += int(count)
            self._cond.notify_all()

    def save_now(self) -> "Future[Path]":
        """Save ``point_cloud/iteration_<k>/point_cloud.ply`` (atomically) at the next
        iteration boundary ``k``, or at once when the thread is not running. The future gives
        the path (or the error)."""
        future: Future = Future()
        with self._cond:
            if self._hook_serves_saves:
                self._save_requests.append(future)
                self._cond.notify_all()
                return future
        self._save(self._ply_iteration(), [future])
        return future

    def stop(self, timeout: float | None = None) -> TrainResult | None:
        """Stop at the next iteration boundary, saving the PLY of the iteration under way and
        the checkpoint of the last completed one (splat-train's Ctrl-C), and join the thread.
        Does nothing to a run that has already ended. Returns the trainer's result."""
        with self._cond:
            self._stop_requested = True
            self._cond.notify_all()
        self.trainer.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
        elif self.trainer.scene is not None:
            self.trainer.scene.close()   # never started: only the read-ahead threads to stop
        return self.result

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until the hook blocks (paused) or the thread has ended; False on timeout.
        (For scripts and tests: after :meth:`pause` or :meth:`step`.)"""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._waiting_at is None or self._step_budget > 0 or not self._paused \
                    or self._save_requests:
                if not self.is_alive():
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return True

    # ----- published values (any thread) --------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The latest published model (never ``None`` after :meth:`setup`)."""
        with self._cond:
            return self._snapshot

    def stats(self) -> TrainingStats:
        with self._cond:
            return self._stats

    # ----- the hook (training thread) -----------------------------------------------------------
    def _hook(self, trainer: Trainer, iteration: int) -> None:
        """Runs at the start of ``iteration``: publish, serve saves, wait while paused."""
        self._account_step()
        self._publish_snapshot()
        self._publish_stats()
        while True:
            with self._cond:
                pending, self._save_requests = self._save_requests, []
                run = self._stop_requested or not self._paused or self._step_budget > 0
                if not pending and run and not self._stop_requested and self._paused:
                    self._step_budget -= 1
            if pending:
                self._idle(lambda: self._save(iteration, pending))
                continue
            if run:
                return
            self._idle(lambda: self._wait_paused(iteration))

    def _wait_paused(self, iteration: int) -> None:
        # The picture and numbers on screen are exact while paused.
        self._publish_snapshot(force=True)
        self._publish_stats(force=True, status="paused")
        with self._cond:
            self._waiting_at = iteration
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._save_requests or self._stop_requested
                                or not self._paused or self._step_budget > 0)
            self._waiting_at = None
            if not self._paused or self._stop_requested:
                self._stats = replace(self._stats, status="running")

    def _idle(self, action: Callable[[], None]) -> None:
        """Run ``action`` without counting its time as training time (for steps/s)."""
        start = time.perf_counter()
        try:
            action()
        finally:
            self._idle_s += time.perf_counter() - start

    def _account_step(self) -> None:
        """Add the iteration that just ended (wall time minus pauses and saves) to steps/s."""
        now = time.perf_counter()
        if self._last_entry is not None:
            self._window[0] += 1
            self._window[1] += max(now - self._last_entry - self._idle_s, 0.0)
        self._last_entry, self._idle_s = now, 0.0

    def _publish_snapshot(self, force: bool = False) -> None:
        """Copy the model for the render thread (rate-limited unless ``force``). Called only
        from the thread that owns the model, at a boundary: the copy is consistent."""
        now = time.monotonic()
        current = self._snapshot
        completed = self.trainer.completed
        if current is not None and current.iteration == completed:
            return      # the model has not changed since
        if not force and now - self._last_snapshot_time < self.snapshot_interval_s:
            return
        self._last_snapshot_time = now
        snapshot = Snapshot(_cpu_copy(self.trainer.model.gaussians()), completed,
                            (current.version + 1) if current is not None else 0)
        with self._cond:
            self._snapshot = snapshot

    def _publish_stats(self, force: bool = False, status: str | None = None, message: str | None = None) -> None:
        now = time.monotonic()
        if not force and now - self._last_stats_time < self.stats_interval_s:
            return
        self._last_stats_time = now
        trainer = self.trainer
        steps, seconds = self._window
        previous = self._stats
        rate = steps / seconds if seconds > 0 else previous.steps_per_second
        self._window = [0, 0.0]
        ema = trainer.ema   # waits for the GPU: the reason for the rate limit
        stats = TrainingStats(status or ("running" if previous.status in ("ready", "paused") else previous.status),
                              trainer.completed, self.config.optimization.iterations, ema["loss"], ema["psnr"],
                              len(trainer.model), rate, previous.message if message is None else message)
        with self._cond:
            self._stats = stats

    # ----- saving ----------------------------------------------------------------------------------
    def _ply_iteration(self) -> int:
        """The PLY name of the current state: the iteration about to run (splat-train's naming);
        after a completed run, the last one (its final state, as splat-train saves it)."""
        trainer = self.trainer
        finished = self.result is not None and self.result.status == "completed"
        return trainer.completed if finished else trainer.completed + 1

    def _save(self, iteration: int, futures: Sequence[Future]) -> None:
        try:
            path = self.trainer.save_ply(iteration)
        except Exception as error:  # noqa: BLE001 - reported on the panel, training goes on
            message = f"save failed: {one_line(error)}"
            print(f"splat-view: {message}", file=sys.stderr, flush=True)
            for future in futures:
                future.set_exception(error)
        else:
            message = f"saved iteration {iteration}: {path}"
            self.trainer.log(f"\n[ITER {iteration}] saved {path}")
            for future in futures:
                future.set_result(path)
        with self._cond:
            self._stats = replace(self._stats, message=message)
            self._cond.notify_all()

    # ----- what the viewer opens -------------------------------------------------------------------
    def cameras(self):
        """The input cameras as ``splat-view -m MODEL`` reads them (the run's cameras.json)."""
        return read_cameras_json(self.model_path)
