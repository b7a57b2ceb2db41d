"""Misbehaving network viewer clients, run as a separate low-priority process by
test_network_robustness.py (so that neither their CPU time nor the GIL is the trainer's).
Loopback only:

    python tests/network_attacks.py KIND PORT

It reads ``on``/``off`` lines on stdin (attack, or close everything and rest) until ``quit`` or
the end of stdin, then prints the number of connections it made (``made`` prints it at once,
and the attack goes on). KIND:

* ``silent``: 20 connections that never send a byte (re-opened when the trainer closes them);
* ``partial``: 20 connections that send half a request, then nothing;
* ``flood``: 1000 connections opened and closed as fast as possible, every second;
* ``huge``: a 16384 x 16384 image request on a new connection, every 50 ms;
* ``unread``: 3 connections sending valid image requests and never reading the replies.

Standard library only, like any client written from the spec (graphdeco-spec.md §1).
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import sys
import time

HOST = "127.0.0.1"


def request(width: int, height: int, train: int = 1) -> bytes:
    view = [1.0, 0, 0, 0, 0, 1.0, 0, 0, 0, 0, 1.0, 0, 0, 0, -3.0, 1.0]   # column-major, eye at +3z
    body = json.dumps({"resolution_x": width, "resolution_y": height, "train": train, "fov_y": 0.9,
                       "fov_x": 0.9, "z_near": 0.009, "z_far": 1100.0, "shs_python": 0, "rot_scale_python": 0,
                       "keep_alive": 1, "scaling_modifier": 1.0, "view_matrix": view,
                       "view_projection_matrix": view}).encode()
    return struct.pack("<I", len(body)) + body


class Attack:
    def __init__(self, port: int):
        self.port, self.made, self.held = port, 0, []

    def connect(self) -> socket.socket | None:
        try:
            sock = socket.create_connection((HOST, self.port), timeout=1.0)
        except OSError:
            return None
        self.made += 1
        return sock

    def step(self) -> None:
        """A little more attacking (returns within ~50 ms)."""

    def rest(self) -> None:
        for sock in self.held:
            sock.close()
        self.held = []


class Hold(Attack):
    """Keep ``count`` connections open that sent ``payload`` and then nothing."""

    def __init__(self, port: int, payload: bytes, count: int = 20):
        super().__init__(port)
        self.payload, self.count = payload, count

    def step(self) -> None:
        self.held = [s for s in self.held if _alive(s) or s.close()]
        while len(self.held) < self.count:
            sock = self.connect()
            if sock is None:
                break
            try:
                sock.sendall(self.payload)
            except OSError:
                pass
            self.held.append(sock)
        time.sleep(0.05)


class Flood(Attack):
    def __init__(self, port: int):
        super().__init__(port)
        self.next_burst = 0.0

    def step(self) -> None:
        if time.monotonic() < self.next_burst:
            time.sleep(0.02)
            return
        self.next_burst = time.monotonic() + 1.0
        for _ in range(1000):
            sock = self.connect()
            if sock is not None:
                sock.close()


class Huge(Attack):
    def step(self) -> None:
        sock = self.connect()
        if sock is not None:
            try:
                sock.sendall(request(16384, 16384))
                sock.recv(1)           # the trainer closes the connection
            except OSError:
                pass
            sock.close()
        time.sleep(0.05)


def _alive(sock: socket.socket) -> bool:
    """False once the trainer closed the connection (replies sent to it are discarded unread)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return True
    try:
        sock.setblocking(False)
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def make(kind: str, port: int) -> Attack:
    if kind == "none":   # calibration: the same process, switched on and off, attacking nothing
        return Attack(port)
    if kind == "silent":
        return Hold(port, b"")
    if kind == "partial":
        return Hold(port, request(64, 48)[:40])
    if kind == "flood":
        return Flood(port)
    if kind == "huge":
        return Huge(port)
    if kind == "unread":
        return Hold(port, request(64, 48) * 3, count=3)
    raise SystemExit(f"unknown attack {kind!r}")


def main(kind: str, port: int) -> int:
    os.nice(19)   # leave the CPU to the trainer: its speed is what the test measures
    attack, on = make(kind, port), False
    while True:
        readable, _, _ = select.select([sys.stdin], [], [], 0 if on else 0.05)
        if readable:
            line = sys.stdin.readline().strip()
            if line in ("", "quit"):
                break
            if line == "made":   # how many connections so far, without changing what it does
                print(attack.made, flush=True)
                continue
            on = line == "on"
            if not on:
                attack.rest()
        if on:
            attack.step()
    attack.rest()
    return attack.made


if __name__ == "__main__":
    print(main(sys.argv[1], int(sys.argv[2])), flush=True)
