"""The trainer's network viewer port: graphdeco's ``network_gui`` as a training hook.

The sockets belong to a background thread (``connections.Connections``): it accepts, reads and
decodes requests, sends replies and enforces the limits (connections, handshake and idle
timeouts, request and image sizes, log rate). The hook that runs at the start of every
iteration ``it`` never touches a socket:

1. it prints the network thread's (rate-limited) log lines;
2. when the served client has a complete request waiting, it answers it: renders the image if
   one is asked for (at most ``protocol.MAX_IMAGE_PIXELS``), adds the source path (and the
   extension section when asked, see ``protocol``) and hands the bytes to the thread; at most one
   request per iteration;
3. ``train = 0`` pauses training: the hook answers that client's requests until one says
   ``train = 1``, the client goes (silent for ``PAUSED_TIMEOUT_S`` after a reply, or
   disconnected), or a stop is asked for (Ctrl-C). ``train = 1`` lets iteration ``it`` run.

Departure from the reference, forced by "training must not wait on the network": the reference
waits for the viewer's next request before every step (one step per reply, so a slow or stuck
viewer slows or stalls training); here training never waits for a request unless the viewer has
paused it. A viewer that sends requests as fast as replies come (SIBR's remote viewer, ``splat-view
--connect``) still gets a reply per step. Without a request waiting, the hook costs a lock and a
look-up (microseconds); with one, it costs the requested render.

Other differences, without changing a byte on the wire:

* messages are read until complete; lengths are bounded before any allocation;
* a bad message, a render error, a disconnect or a timeout drops that client (its socket is
  closed) and training goes on; other connected clients wait their turn, as in the reference;
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

from .connections import (HANDSHAKE_TIMEOUT_S, IDLE_TIMEOUT_S, MAX_CONNECTIONS, PAUSED_TIMEOUT_S, Connections,
                          LogLimiter)
from .pacing import SnapshotPacer
from .protocol import (ProtocolError, Snapshot, ViewRequest, encode_extension, encode_image, encode_path,
                       encode_snapshot, request_camera)

if TYPE_CHECKING:
    from trainer.train import Trainer

__all__ = ["NetworkViewer", "IDLE_TIMEOUT_S", "STATS_INTERVAL_S"]

STATS_INTERVAL_S = 0.1     # statistics are re-read (a GPU sync) at most this often
RATE_WINDOW_S = 2.0        # steps/s is measured over this much recent time
PAUSE_POLL_S = 0.1         # while paused: how often a stop request is checked


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

    Use :meth:`listen` (binds and starts the network thread; ``port = 0`` picks a free port, see
    :attr:`port`), pass the object in the trainer's hooks, and :meth:`close` at the end. Timeouts
    are in seconds (see ``connections``).
    """

    def __init__(self, ip: str, port: int, idle_timeout: float = IDLE_TIMEOUT_S,
                 pacer: SnapshotPacer | None = None, clock: Callable[[], float] = time.perf_counter,
                 warn: Callable[[str], None] = _warn, handshake_timeout: float = HANDSHAKE_TIMEOUT_S,
                 paused_timeout: float = PAUSED_TIMEOUT_S, max_connections: int = MAX_CONNECTIONS,
                 limiter: LogLimiter | None = None):
        self.ip, self.port = ip, port
        self.idle_timeout, self.handshake_timeout, self.paused_timeout = idle_timeout, handshake_timeout, paused_timeout
        self.max_connections = max_connections
        self.limiter = limiter or LogLimiter()
        self.pacer = pacer or SnapshotPacer(clock=clock)
        self.clock = clock
        self.warn = warn
        self.connections: Connections | None = None
        self.finished = False
        self.served = 0               # replies handed to the network thread (all clients)
        self._client: int | None = None               # the client answered last
        self._paused = False                          # its last request paused training
        self._progress: collections.deque[tuple[float, int]] = collections.deque()
        self._stats: dict[str, Any] | None = None
        self._stats_time = float("-inf")
        self._snapshot_iteration: int | None = None   # last snapshot sent to this client

    @property
    def dropped(self) -> int:
        """Connections closed for an error, a timeout or to make room (all clients)."""
        return self.connections.dropped if self.connections is not None else 0

    @property
    def refused(self) -> int:
        """Connections refused at once because ``max_connections`` were open."""
        return self.connections.refused if self.connections is not None else 0

    # ----- socket life ---------------------------------------------------------------------------
    def listen(self) -> "NetworkViewer":
        """Bind and listen (IPv4), start the network thread; one-line ConfigError if not."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart without TIME_WAIT
        try:
            listener.bind((self.ip, self.port))
            listener.listen()
        except OSError as error:
            listener.close()
            raise ConfigError(f"network viewer: cannot listen on {self.ip}:{self.port} ({error.strerror or error}); "
                              "pick another --port") from None
        self.port = listener.getsockname()[1]
        self.connections = Connections(listener, self.idle_timeout, self.handshake_timeout, self.paused_timeout,
                                       self.max_connections, self.limiter).start()
        if not is_loopback(self.ip):
            self.warn(f"warning: the network viewer listens on {self.ip}:{self.port}, reachable from other "
                      "machines; its protocol has no authentication: anyone who can connect can see the "
                      "model and pause the training")
        return self

    def close(self) -> None:
        if self.connections is not None:
            self.connections.close()
            self.connections = None

    # ----- the hook --------------------------------------------------------------------------------
    def __call__(self, trainer: "Trainer", iteration: int) -> None:
        """Start of iteration ``iteration``: answer the served client's waiting request, if any;
        while it has paused training, keep answering it (see the module docstring)."""
        self._note_progress(iteration)
        if self.connections is None:
            return
        self._print_log(trainer)
        taken = self.connections.take_request()
        while True:
            if taken is not None:
                request = self._answer(trainer, *taken)
                self._paused = request is not None and not request.train
            if not self._paused or trainer.stop_requested or not self.connections.serving_a_client():
                self._paused = False
                return
            taken = self.connections.wait_request(PAUSE_POLL_S)
            self._print_log(trainer)

    def wants_model(self, trainer: "Trainer") -> bool:
        """Whether the next call may read the model: a client is being served. A multi-process
        run gathers the whole model to rank 0 only then."""
        return self.connections is not None and self.connections.serving_a_client()

    def on_finish(self, trainer: "Trainer") -> None:
        """After the last iteration and its save: keep serving while the client keeps the
        model alive (until it disconnects, unchecks keep-alive, or Ctrl-C)."""
        self.finished = True
        told = False
        while self.connections is not None and self.connections.serving_a_client() and not trainer.stop_requested:
            taken = self.connections.wait_request(PAUSE_POLL_S)
            self._print_log(trainer)
            if taken is None:
                continue
            request = self._answer(trainer, *taken)
            if request is None or not request.keep_alive:
                break
            if not told:
                told = True
                trainer.log("Training complete; serving the model to the network viewer until it "
                            "disconnects or unchecks keep-alive")

    def _print_log(self, trainer: "Trainer") -> None:
        for line in self.limiter.drain():
            trainer.log("\n" + line)

    def _answer(self, trainer: "Trainer", number: int, request: ViewRequest, peer: tuple) -> ViewRequest | None:
        """Reply to one request (the network thread sends it); None when the client was dropped."""
        if number != self._client:
            self._client, self._snapshot_iteration = number, None   # a new client: send it a snapshot
        try:
            reply, snapshot_started = self._reply(trainer, request)
        except ProtocolError as error:
            self.connections.drop(number, str(error))
            return None
        except _RenderFailed as error:
            self.connections.drop(number, f"render failed ({error})")
            return None
        if snapshot_started is not None:
            self.pacer.record(snapshot_started, self.clock())  # copy and encode
        self.connections.send_reply(number, reply, paused=not request.train)
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
