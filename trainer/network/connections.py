"""The network viewer's sockets, served by one background thread so that training never waits
on the network.

The thread owns the listening socket and every connection: it accepts, reads requests into
per-connection buffers without blocking, decodes them, sends the replies the training loop
hands back, and enforces the limits below. The training loop
(:class:`trainer.network.server.NetworkViewer`) makes no socket call: it takes a decoded request
when one is waiting (:meth:`Connections.take_request`, a lock and a look-up) and hands back the
reply bytes (:meth:`Connections.send_reply`). A client that says nothing, stops mid-message or
reads nothing costs the loop nothing.

Limits (this module's constants are the defaults):

* ``max_connections`` open at once. A newcomer past that closes the oldest connection that has
  not sent a complete request yet and is older than ``EVICT_AFTER_S``; when there is none, the
  newcomer is refused (closed at once).
* One client is served at a time, as in the reference: the first whose request is complete.
  Others keep their complete request until it is their turn.
* A new connection must send a complete first request within ``handshake_timeout``.
* The served client must read its reply, and send its next request, within ``idle_timeout``;
  after a reply to a request that paused training, within ``paused_timeout`` (viewers send
  continuously, and a paused one that went silent must not hold training).
* Requests are at most ``MAX_REQUEST_BYTES``; images at most ``MAX_IMAGE_PIXELS`` (see
  ``protocol``): larger ones drop the client before anything is allocated.
* Log lines go through a :class:`LogLimiter`: ``LOG_BURST`` lines per ``LOG_WINDOW_S``, then one
  line per window saying how many were left out.
"""

from __future__ import annotations

import collections
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .protocol import MAX_REQUEST_BYTES, ProtocolError, ViewRequest, decode_request, take_message

__all__ = ["Connections", "LogLimiter", "MAX_CONNECTIONS", "HANDSHAKE_TIMEOUT_S", "IDLE_TIMEOUT_S",
           "PAUSED_TIMEOUT_S", "EVICT_AFTER_S", "LOG_BURST", "LOG_WINDOW_S"]

MAX_CONNECTIONS = 8          # open at once: one served viewer, a few waiting or connecting
HANDSHAKE_TIMEOUT_S = 2.0    # a new connection's first complete request, from its accept
IDLE_TIMEOUT_S = 30.0        # the served viewer: to read a reply, and to send its next request
PAUSED_TIMEOUT_S = 2.0       # ... its next request after one that paused training
EVICT_AFTER_S = 0.2          # a silent connection this old may be closed to make room
ACCEPT_BATCH = 64            # accepts per wake-up, so a flood cannot starve the served client
RECV_BYTES = 1 << 16
LOG_BURST, LOG_WINDOW_S = 5, 10.0
_TICK_S = 0.25               # the thread's longest sleep (deadlines are checked at least this often)


class LogLimiter:
    """Collects log lines from the network thread for the training loop to print; at most
    ``burst`` lines per ``window`` seconds, then one line per window counting the rest."""

    def __init__(self, burst: int = LOG_BURST, window: float = LOG_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic):
        self.burst, self.window, self.clock = burst, window, clock
        self._lock = threading.Lock()
        self._lines: list[str] = []
        self._window_start = float("-inf")
        self._shown = 0
        self._left_out = 0

    def add(self, line: str) -> None:
        with self._lock:
            self._roll()
            if self._shown < self.burst:
                self._shown += 1
                self._lines.append(line)
            else:
                self._left_out += 1

    def drain(self) -> list[str]:
        """The lines to print now (and the count of those left out, once their window is over)."""
        with self._lock:
            self._roll()
            lines, self._lines = self._lines, []
            return lines

    def _roll(self) -> None:
        now = self.clock()
        if now - self._window_start < self.window:
            return
        if self._left_out:
            self._lines.append(f"Network viewer: {self._left_out} more messages in the last "
                               f"{self.window:g} s not shown")
        self._window_start, self._shown, self._left_out = now, 0, 0


@dataclass(eq=False)
class _Client:
    number: int
    sock: socket.socket
    peer: tuple
    opened: float
    deadline: float | None                      # dropped at this time unless something happens
    buffer: bytearray = field(default_factory=bytearray)
    request: ViewRequest | None = None          # complete, waiting for the training loop
    serving: bool = False                       # the loop took the request, no reply yet
    outbox: memoryview | None = None            # reply bytes still to send
    paused: bool = False                        # the last request served paused training
    greeted: bool = False                       # a complete request arrived at least once
    interest: int = 0                           # selector events registered


class Connections:
    """The network thread; see the module docstring. ``log`` receives the thread's lines through
    ``limiter``; call :meth:`start` once and :meth:`close` at the end."""

    def __init__(self, listener: socket.socket, idle_timeout: float = IDLE_TIMEOUT_S,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT_S, paused_timeout: float = PAUSED_TIMEOUT_S,
                 max_connections: int = MAX_CONNECTIONS, limiter: LogLimiter | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.listener = listener
        self.idle_timeout, self.handshake_timeout = idle_timeout, handshake_timeout
        self.paused_timeout, self.max_connections = paused_timeout, max_connections
        self.limiter = limiter or LogLimiter()
        self.clock = clock
        self.accepted = 0          # connections accepted
        self.dropped = 0           # connections closed for an error, a timeout, or to make room
        self.refused = 0           # connections closed at once: no room
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._clients: dict[int, _Client] = {}
        self._active: _Client | None = None
        self._to_drop: collections.deque[tuple[int, str]] = collections.deque()
        self._closed = False
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="splatview-network", daemon=True)

    # ----- the training loop's side ---------------------------------------------------------------------
    def start(self) -> "Connections":
        self.listener.setblocking(False)
        self._selector.register(self.listener, selectors.EVENT_READ, "listener")
        self._selector.register(self._wake_read, selectors.EVENT_READ, "wake")
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread and close every socket (the listener too)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._changed.notify_all()
        self._wake()
        if self._thread.is_alive():
            self._thread.join(5.0)
        for client in list(self._clients.values()):
            client.sock.close()
        self._clients.clear()
        self._selector.close()
        self.listener.close()
        self._wake_read.close()
        self._wake_write.close()

    def take_request(self) -> tuple[int, ViewRequest, tuple] | None:
        """(client number, request, peer) when the served client has a request waiting, else
        None. Non-blocking; the caller must answer with :meth:`send_reply` or :meth:`drop`."""
        with self._lock:
            client = self._active
            if client is None or client.request is None:
                return None
            request, client.request, client.serving = client.request, None, True
            return client.number, request, client.peer

    def wait_request(self, timeout: float) -> tuple[int, ViewRequest, tuple] | None:
        """:meth:`take_request`, waiting up to ``timeout`` seconds for one (returns early, with
        None, when no client is being served)."""
        with self._changed:
            self._changed.wait_for(lambda: self._closed or self._active is None
                                   or self._active.request is not None, timeout)
        return self.take_request()

    def serving_a_client(self) -> bool:
        """True while a client is being served (connected and not dropped)."""
        with self._lock:
            return self._active is not None

    def send_reply(self, number: int, data: bytes, paused: bool) -> None:
        """Queue ``data`` for client ``number`` (the thread sends it); ``paused``: that request
        paused training, so its next one is due within ``paused_timeout``."""
        with self._lock:
            client = self._clients.get(number)
            if client is None:
                return
            client.serving, client.paused = False, paused
            client.outbox = memoryview(data)
            client.deadline = self.clock() + self.idle_timeout
        self._wake()

    def drop(self, number: int, reason: str) -> None:
        """Close client ``number`` (from the loop: e.g. its view could not be rendered)."""
        with self._lock:
            self._to_drop.append((number, reason))
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_write.send(b"\0")
        except OSError:   # buffer full (a wake-up is pending anyway) or closed
            pass

    # ----- the thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._serve_forever()
        except Exception as error:  # noqa: BLE001 - a bug here must not end training: say it, stop serving
            self.limiter.add(f"Network viewer: stopped serving ({type(error).__name__}: {error})")

    def _serve_forever(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
            for key, events in self._selector.select(self._sleep_time()):
                if key.data == "listener":
                    self._accept_batch()
                elif key.data == "wake":
                    self._drain_wake()
                else:
                    client = key.data
                    if events & selectors.EVENT_WRITE:
                        self._send(client)
                    if events & selectors.EVENT_READ and client.number in self._clients:
                        self._receive(client)
            self._apply_loop_changes()
            self._expire()

    def _sleep_time(self) -> float:
        now = self.clock()
        deadlines = [c.deadline for c in list(self._clients.values()) if c.deadline is not None]
        return max(0.0, min([_TICK_S] + [d - now for d in deadlines]))

    def _drain_wake(self) -> None:
        try:
            while self._wake_read.recv(4096):
                pass
        except OSError:
            pass

    def _accept_batch(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:   # e.g. too many open files: try again on the next wake-up
                self.limiter.add(f"Network viewer: accept failed ({error.strerror or error})")
                return
            self.accepted += 1
            if not self._make_room(peer):
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one small reply per step
            now = self.clock()
            client = _Client(self.accepted, sock, peer, now, now + self.handshake_timeout)
            with self._lock:
                self._clients[client.number] = client
            self.limiter.add(f"Connected by {peer}")
            self._receive(client)   # its request (or its end) may be here already
            self._set_interest(client)

    def _make_room(self, peer: tuple) -> bool:
        """Room for one more connection: evict the oldest silent one, or refuse ``peer``."""
        if len(self._clients) < self.max_connections:
            return True
        now = self.clock()
        silent = [c for c in self._clients.values()
                  if not c.greeted and c is not self._active and now - c.opened >= EVICT_AFTER_S]
        if silent:
            oldest = min(silent, key=lambda c: c.opened)
            self._close(oldest, f"closed to make room (no request after {now - oldest.opened:.1f} s)")
            return True
        self.refused += 1
        self.limiter.add(f"Network viewer: refused {peer}: {self.max_connections} connections are open")
        return False

    def _receive(self, client: _Client) -> None:
        if client.request is not None or client.serving or client.outbox is not None:
            return   # one request at a time: the next is read once the reply is sent
        try:
            data = client.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._close(client, error.strerror or str(error))
            return
        if not data:
            pending = len(client.buffer)
            self._close(client, "connection closed" + (f" in the middle of a message ({pending} bytes)"
                                                       if pending else ""))
            return
        client.buffer += data
        self._parse(client)

    def _parse(self, client: _Client) -> None:
        """Decode a complete request from the buffer, if there is one."""
        try:
            payload = take_message(client.buffer, MAX_REQUEST_BYTES)
            if payload is None:
                return
            request = decode_request(payload)
        except ProtocolError as error:
            self._close(client, str(error))
            return
        with self._changed:
            client.request, client.greeted = request, True
            client.deadline = None   # waiting for the loop (or for its turn)
            if self._active is None:
                self._active = client
            self._changed.notify_all()
        self._set_interest(client)

    def _send(self, client: _Client) -> None:
        with self._lock:
            outbox = client.outbox
        if outbox is None:
            return
        try:
            sent = client.sock.send(outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._close(client, error.strerror or str(error))
            return
        with self._lock:
            client.outbox = outbox[sent:] if sent < len(outbox) else None
            if client.outbox is None:
                client.deadline = self.clock() + (self.paused_timeout if client.paused else self.idle_timeout)
        if client.outbox is None:
            self._set_interest(client)
            self._parse(client)   # the next request may be buffered already

    def _set_interest(self, client: _Client) -> None:
        if client.number not in self._clients:
            return
        if client.outbox is not None:
            wanted = selectors.EVENT_WRITE
        elif client.request is None and not client.serving:
            wanted = selectors.EVENT_READ
        else:
            wanted = 0
        if wanted == client.interest:
            return
        if client.interest:
            self._selector.unregister(client.sock)
        if wanted:
            self._selector.register(client.sock, wanted, client)
        client.interest = wanted

    def _apply_loop_changes(self) -> None:
        """Replies queued and drops asked for by the training loop."""
        with self._lock:
            drops, self._to_drop = list(self._to_drop), collections.deque()
            clients = list(self._clients.values())
        for number, reason in drops:
            if number in self._clients:
                self._close(self._clients[number], reason)
        for client in clients:
            if client.number in self._clients:
                self._set_interest(client)
                if client.outbox is not None:
                    self._send(client)

    def _expire(self) -> None:
        now = self.clock()
        for client in list(self._clients.values()):
            if client.deadline is None or now < client.deadline:
                continue
            if not client.greeted:
                reason = f"no complete request within {self.handshake_timeout:g} s"
            elif client.outbox is not None:
                reason = f"did not read its reply within {self.idle_timeout:g} s"
            else:
                limit = self.paused_timeout if client.paused else self.idle_timeout
                reason = f"silent for {limit:g} s" + (" while training was paused" if client.paused else "")
            self._close(client, reason)

    def _close(self, client: _Client, reason: str) -> None:
        if client.interest:
            try:
                self._selector.unregister(client.sock)
            except (KeyError, ValueError):
                pass
        try:
            client.sock.close()
        except OSError:
            pass
        with self._changed:
            self._clients.pop(client.number, None)
            if self._active is client:
                waiting = [c for c in self._clients.values() if c.request is not None]
                self._active = min(waiting, key=lambda c: c.number) if waiting else None
            self.dropped += 1
            self._changed.notify_all()
        self.limiter.add(f"Network viewer: dropped {client.peer}: {reason}")

