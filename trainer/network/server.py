"""The trainer's network viewer port: graphdeco's ``network_gui`` as a training hook.

Loop semantics (spec §1.5, in this order at the start of every iteration ``it``):

1. no client: poll ``accept`` once (non-blocking listener);
2. while a client is connected: read a request, render it if it asks for an image, send the
   image and the source path (and the extension section when asked, see ``protocol``); then
   ``train = 1`` ends the loop and iteration ``it`` runs (one step per reply), ``train = 0``
   keeps serving (pause).

Where we do better than the reference, without changing a byte on the wire:

* messages are read in a loop until complete; lengths are bounded before any allocation;
* a bad message, a render error, a disconnect or a client silent for ``idle_timeout`` seconds
  drops that client (its socket is closed) and training goes on; accept is polled again;
* non-ASCII source paths are sent as UTF-8 (the reference drops every request);
* ``keep_alive`` does not hold back the last iteration and its save: training finishes and
  saves, then :meth:`NetworkViewer.on_finish` keeps serving until the client disconnects or
  unchecks keep-alive (the reference blocks *before* the last step while a viewer is on);
* Ctrl-C is honoured while paused (the pause loop stops when the trainer is asked to stop);
* binding to a non-loopback address prints a warning: the protocol has no authentication.

The rendered background is the training background, also with ``--random_background``.
``shs_python`` and ``rot_scale_python`` are accepted and ignored: splatview's rasterizer has a
single code path (in the reference they only switch between equivalent implementations).
"""

from __future__ import annotations

import collections
import ipaddress
import socket
import sys
import time
from typing import TYPE_CHECKING, Any, Callable

import torch

from rasterizer.render import render
from trainer.config import ConfigError

from .pacing import SnapshotPacer
from .protocol import (MAX_REQUEST_BYTES, ProtocolError, Snapshot, ViewRequest, decode_request, encode_extension,
                       encode_image, encode_path, encode_snapshot, read_message, request_camera)

if TYPE_CHECKING:
    from trainer.train import Trainer

__all__ = ["NetworkViewer", "IDLE_TIMEOUT_S", "STATS_INTERVAL_S"]

IDLE_TIMEOUT_S = 30.0      # a connected viewer sends continuously; this much silence means it is gone
STATS_INTERVAL_S = 0.1     # statistics are re-read (a GPU sync) at most this often
RATE_WINDOW_S = 2.0        # steps/s is measured over this much recent time


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def is_loopback(host: str) -> bool:
    """True when ``host`` (a name or an IPv4 address) resolves to a loopback address."""
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


class NetworkViewer:
    """A :data:`trainer.train.TrainingHook` serving one network viewer client at a time.

    Use :meth:`listen` (binds; ``port = 0`` picks a free port, see :attr:`port`), pass the
    object in the trainer's hooks, and :meth:`close` at the end.
    """

    def __init__(self, ip: str, port: int, idle_timeout: float = IDLE_TIMEOUT_S,
                 pacer: SnapshotPacer | None = None, clock: Callable[[], float] = time.perf_counter,
                 warn: Callable[[str], None] = _warn):
        self.ip, self.port = ip, port
        self.idle_timeout = idle_timeout
        self.pacer = pacer or SnapshotPacer(clock=clock)
        self.clock = clock
        self.warn = warn
        self.listener: socket.socket | None = None
        self.conn: socket.socket | None = None
        self.peer: Any = None
        self.finished = False
        self.served = 0               # replies sent (all clients)
        self.dropped = 0              # clients dropped on an error
        self._progress: collections.deque[tuple[float, int]] = collections.deque()
        self._stats: dict[str, Any] | None = None
        self._stats_time = float("-inf")
        self._snapshot_iteration: int | None = None   # last snapshot sent to this client

    # ----- socket life ---------------------------------------------------------------------------
    def listen(self) -> "NetworkViewer":
        """Bind and listen (IPv4, non-blocking, as the reference); one-line ConfigError if not."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart without TIME_WAIT
        try:
            listener.bind((self.ip, self.port))
            listener.listen()
        except OSError as error:
            listener.close()
            raise ConfigError(f"network viewer: cannot listen on {self.ip}:{self.port} ({error.strerror or error}); "
                              "pick another --port") from None
        listener.setblocking(False)
        self.listener, self.port = listener, listener.getsockname()[1]
        if not is_loopback(self.ip):
            self.warn(f"warning: the network viewer listens on {self.ip}:{self.port}, reachable from other "
                      "machines; its protocol has no authentication: anyone who can connect can see the "
                      "model and pause the training")
        return self

    def close(self) -> None:
        self._drop(None)
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    def _accept(self, trainer: "Trainer") -> None:
        try:
            conn, peer = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:  # e.g. too many open files: try again next iteration
            trainer.log(f"\nNetwork viewer: accept failed ({error})")
            return
        conn.setblocking(True)
        conn.settimeout(self.idle_timeout)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one small reply per step
        self.conn, self.peer, self._snapshot_iteration = conn, peer, None
        trainer.log(f"\nConnected by {peer}")

    def _drop(self, reason: str | None, trainer: "Trainer | None" = None) -> None:
        if self.conn is None:
            return
        try:
            self.conn.close()
        except OSError:
            pass
        if reason is not None:
            self.dropped += 1
            if trainer is not None:
                trainer.log(f"\nNetwork viewer: dropped {self.peer}: {reason}")
        self.conn, self.peer = None, None

    # ----- the hook --------------------------------------------------------------------------------
    def __call__(self, trainer: "Trainer", iteration: int) -> None:
        """Start of iteration ``iteration``: serve until the client asks for a training step."""
        self._note_progress(iteration)
        if self.listener is None:
            return
        if self.conn is None:
            self._accept(trainer)
        while self.conn is not None and not trainer.stop_requested:
            request = self._serve_one(trainer)
            if request is not None and request.train:
                break

    def wants_model(self, trainer: "Trainer") -> bool:
        """Whether the next call will read the model: a client is connected (one waiting is
        accepted now). A multi-process run gathers the model for rank 0 only then."""
        if self.listener is not None and self.conn is None:
            self._accept(trainer)
        return self.conn is not None

    def on_finish(self, trainer: "Trainer") -> None:
        """After the last iteration and its save: keep serving while the client keeps the
        model alive (until it disconnects, unchecks keep-alive, or Ctrl-C)."""
        self.finished = True
        told = False
        while self.conn is not None and not trainer.stop_requested:
            request = self._serve_one(trainer)
            if request is None or not request.keep_alive:
                break
            if not told:
                told = True
                trainer.log("Training complete; serving the model to the network viewer until it "
                            "disconnects or unchecks keep-alive")

    def _serve_one(self, trainer: "Trainer") -> ViewRequest | None:
        """One request and its reply; None when the client was dropped."""
        try:
            request = decode_request(read_message(self.conn, MAX_REQUEST_BYTES))
            reply, snapshot_started = self._reply(trainer, request)
            self.conn.sendall(reply)
        except socket.timeout:
            self._drop(f"silent for {self.idle_timeout:g} s", trainer)
            return None
        except (OSError, ProtocolError) as error:
            self._drop(str(error) or type(error).__name__, trainer)
            return None
        except _RenderFailed as error:
            self._drop(f"render failed ({error})", trainer)
            return None
        if snapshot_started is not None:
            self.pacer.record(snapshot_started, self.clock())  # copy, encode and send
        self.served += 1
        return request

    # ----- replies --------------------------------------------------------------------------------
    def _reply(self, trainer: "Trainer", request: ViewRequest) -> tuple[bytes, float | None]:
        parts = []
        if request.has_image:
            parts.append(self._render(trainer, request))
        parts.append(encode_path(str(trainer.config.model.source_path)))
        snapshot_started = None
        if request.extension is not None:
            want = request.extension.want
            stats = self._statistics(trainer) if "stats" in want else None
            snapshot = None
            if "snapshot" in want and self._snapshot_iteration != trainer.completed and self.pacer.ready():
                snapshot_started = self.clock()
                snapshot = self._snapshot(trainer)
            parts.append(encode_extension(stats, snapshot))
        return b"".join(parts), snapshot_started

    def _render(self, trainer: "Trainer", request: ViewRequest) -> bytes:
        camera = request_camera(request)
        model = trainer.model
        try:
            with torch.no_grad():
                image = render(model.gaussians(), camera, trainer.background, sh_degree=model.active_sh_degree,
                               scaling_modifier=request.scaling_modifier,
                               antialiasing=trainer.config.pipeline.antialiasing, backend=trainer.backend).image
                return encode_image(image)
        except Exception as error:  # noqa: BLE001 - any render failure drops the client, not training
            if trainer.device.type == "cuda":
                torch.cuda.empty_cache()
            text = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise _RenderFailed(text) from None

    def _snapshot(self, trainer: "Trainer") -> Snapshot:
        model = trainer.model
        snapshot = encode_snapshot(model.gaussians(), model.active_sh_degree, trainer.completed)
        self._snapshot_iteration = trainer.completed
        return snapshot

    def _note_progress(self, iteration: int) -> None:
        now = self.clock()
        self._progress.append((now, iteration))
        while len(self._progress) > 2 and now - self._progress[0][0] > RATE_WINDOW_S:
            self._progress.popleft()

    def _statistics(self, trainer: "Trainer") -> dict[str, Any]:
        now = self.clock()
        if self._stats is None or now - self._stats_time >= STATS_INTERVAL_S or self._stats["finished"] != self.finished:
            ema = trainer.ema  # reading the running values waits for the GPU: rate-limited
            (t0, i0), (_, i1) = (self._progress[0], self._progress[-1]) if self._progress else ((now, 0), (now, 0))
            rate = (i1 - i0) / (now - t0) if not self.finished and now > t0 and i1 > i0 else 0.0
            self._stats = {"iteration": trainer.completed, "iterations": trainer.config.optimization.iterations,
                           "loss": ema["loss"], "psnr": ema["psnr"], "gaussians": len(trainer.model),
                           "steps_per_second": rate, "sh_degree": trainer.model.active_sh_degree,
                           "finished": self.finished, "background": [float(v) for v in trainer.background.tolist()]}
            self._stats_time = now
        return self._stats


class _RenderFailed(Exception):
    """The preview render raised (message: its first line)."""
