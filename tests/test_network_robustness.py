"""The network viewer port never stalls or exhausts training (loopback only, bounded loops).

A real training run (tiny scene, a Trainer thread with the network hook) is attacked by a
separate process (``network_attacks.py``): silent connections, half requests, 1000-connection
floods, 16384 x 16384 image requests, unread replies. Training speed during each attack is
compared with the speed without a client just before and after it; a proper client is served
after every attack and throughout a flood; the log stays short.
"""

from __future__ import annotations

import math
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from test_network_server import W, H, connect, reply, request_bytes
from test_train_support import tiny_config, write_tiny_scene
from trainer.network.connections import LOG_BURST, LOG_WINDOW_S, LogLimiter
from trainer.network.protocol import MAX_IMAGE_PIXELS, ProtocolError, decode_request
from trainer.train import Trainer

ATTACKS = Path(__file__).with_name("network_attacks.py")
CYCLES, WINDOW_S, SETTLE_S = 6, 0.8, 0.2

# Training on the CPU everywhere: on a GPU shared with other tests, a step can wait behind their
# kernels for a whole window, which says nothing about the network thread.
pytestmark = pytest.mark.usefixtures("cpu_only_module")


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return write_tiny_scene(tmp_path_factory.mktemp("robust") / "scene", train=6, test=0, points=120)


class Training:
    """A long training run in a thread, with the network hook and a per-iteration clock."""

    def __init__(self, scene: Path, model: Path, **server_options):
        from trainer.network.server import NetworkViewer

        self.limiter = RecordingLimiter()
        self.lines = self.limiter.printed
        self.server = NetworkViewer("127.0.0.1", 0, limiter=self.limiter, **server_options).listen()
        self.times: list[float] = []
        self.hook_seconds: list[float] = []
        config = tiny_config(scene, model, "--iterations", "1000000", "--test_iterations", "-1",
                             "--save_iterations", "-1", "--densify_until_iter", "0")
        self.trainer = Trainer(config, hooks=[self._timed_server, lambda trainer, it: self.times.append(time.perf_counter())])
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while len(self.times) < 20:
            assert time.monotonic() < deadline and self.thread.is_alive(), f"training did not start ({self.error!r})"
            time.sleep(0.05)

    def _timed_server(self, trainer, iteration):
        started = time.perf_counter()
        self.server(trainer, iteration)
        self.hook_seconds.append(time.perf_counter() - started)

    def _run(self):
        try:
            self.trainer.run()
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error

    def steps_per_second(self, seconds: float) -> float:
        start = time.perf_counter()
        first = len(self.times)
        time.sleep(seconds)
        assert self.thread.is_alive(), repr(self.error)
        return (len(self.times) - first) / (time.perf_counter() - start)

    def stop(self):
        self.trainer.request_stop()
        self.thread.join(60)
        self.server.close()


class RecordingLimiter(LogLimiter):
    """The server's log limiter, keeping every line it hands to the trainer to print."""

    def __init__(self):
        super().__init__()
        self.printed: list[str] = []

    def drain(self) -> list[str]:
        lines = super().drain()
        self.printed.extend(lines)
        return lines


class Attacker:
    """``network_attacks.py KIND`` in a child process, switched on and off."""

    def __init__(self, kind: str, port: int):
        self.process = subprocess.Popen([sys.executable, str(ATTACKS), kind, str(port)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def switch(self, on: bool) -> None:
        self.process.stdin.write("on\n" if on else "off\n")
        self.process.stdin.flush()

    def made(self) -> int:
        """The number of connections made so far."""
        self.process.stdin.write("made\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def finish(self) -> int:
        """Stop it; the number of connections it made."""
        return int(self.process.communicate("quit\n", timeout=60)[0])


def attacked_speed_ratio(training: "Training", kind: str, cycles: int = CYCLES) -> tuple[float, int]:
    """(median over ``cycles`` of steps/s under attack / steps/s without, connections made).

    Windows alternate (idle, attack, attack, idle, ...) so that the machine's own load, which
    drifts over seconds, weighs on both sides alike; each window starts SETTLE_S after the switch.
    """
    attacker = Attacker(kind, training.server.port)
    ratios = []
    try:
        for cycle in range(cycles):
            speeds = {}
            for on in ((False, True) if cycle % 2 == 0 else (True, False)):
                attacker.switch(on)
                time.sleep(SETTLE_S)
                speeds[on] = training.steps_per_second(WINDOW_S)
            ratios.append(speeds[True] / speeds[False])
    finally:
        made = attacker.finish()
    return statistics.median(ratios), made


def served_promptly(port: int, timeout: float = 5.0) -> float:
    """Seconds until a proper client's image request is answered (fails past ``timeout``)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request_bytes(train=1))
        image, _ = reply(sock)
        assert len(image) == W * H * 3
    return time.monotonic() - started


@pytest.fixture
def training(scene, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # one core trains, the other runs the attacker: a fair comparison on 2 cores
    run = Training(scene, tmp_path / "m", handshake_timeout=1.0)
    yield run
    run.stop()
    torch.set_num_threads(threads)


@pytest.mark.parametrize("kind", ["silent", "partial", "flood", "huge", "unread"])
def test_attacks_do_not_slow_training_and_a_proper_client_is_served_after(training, kind):
    # A shared machine's own load moves steps/s by about 10 % from one second to the next (an
    # attacker that attacks nothing measures 0.88-1.12 here): up to three measurements, the
    # best must be within 10 %. A server that stalls would fail all three.
    for attempt in range(3):
        ratio, made = attacked_speed_ratio(training, kind)
        print(f"{kind}: {made} connections; steps/s under attack / without: {ratio:.3f}; "
              f"hook: median {statistics.median(training.hook_seconds) * 1e6:.0f} us")
        assert made > (1000 if kind == "flood" else 2)
        if ratio >= 0.9:
            break
    assert ratio >= 0.9
    assert served_promptly(training.server.port) < 5.0
    assert training.thread.is_alive()
    # The network work inside the training loop stays small, whatever the clients do.
    assert statistics.median(training.hook_seconds) < 0.002


def test_a_flood_neither_locks_out_the_viewer_nor_floods_the_log(training):
    port = training.server.port
    replies, stop, errors = [], threading.Event(), []

    def viewer():   # a well-behaved client, connected before the flood, asking all along
        try:
            with connect(port) as sock:
                while not stop.is_set():
                    sock.sendall(request_bytes(train=1))
                    reply(sock)
                    replies.append(time.monotonic())
        except OSError as error:
            errors.append(error)

    client = threading.Thread(target=viewer, daemon=True)
    client.start()
    while not replies:
        time.sleep(0.01)
    lines_before = len(training.lines)
    attacker = Attacker("flood", port)
    flood_start = time.monotonic()
    attacker.switch(True)
    time.sleep(3.5)
    deadline = time.monotonic() + 30   # at nice 19 on a loaded machine the flood can be slower
    while attacker.made() < 1000 and time.monotonic() < deadline:
        time.sleep(0.5)
    attacker.switch(False)
    flood_end = time.monotonic()
    made = attacker.finish()
    stop.set()
    client.join(10)
    assert made >= 1000 and not errors
    during = [t for t in replies if flood_start < t < flood_end]
    gaps = [b - a for a, b in zip(during, during[1:])]
    print(f"flood: {made} connections, {len(during)} replies to the viewer, longest gap {max(gaps):.2f} s")
    assert len(during) >= 5 and max(gaps) < 2.0   # served all along (one reply per training step at most)
    time.sleep(0.5)
    logged = training.lines[lines_before:]
    print("\n".join(logged))
    # At most LOG_BURST lines and one count per log window that the flood (and the 0.5 s after
    # it) overlaps; a loaded machine can stretch the flood over several windows.
    windows = math.ceil((time.monotonic() - flood_start) / LOG_WINDOW_S) + 1
    assert len(logged) <= windows * (LOG_BURST + 1) < made / 10
    assert training.server.refused + training.server.dropped >= 1000 - 8
    assert any("more messages in the last" in line for line in logged) or len(logged) <= 5


def test_huge_images_are_refused_before_anything_is_rendered(training):
    port = training.server.port
    served = training.server.served
    with connect(port) as sock:
        sock.sendall(request_bytes(16384, 16384))
        assert sock.recv(1) == b""     # dropped, nothing sent
    time.sleep(0.3)
    assert training.server.served == served
    assert any("refused a 16384x16384 image: over the limit of 8294400 pixels" in line for line in training.lines)


def test_a_paused_viewer_that_goes_silent_releases_training(scene, tmp_path):
    run = Training(scene, tmp_path / "m", paused_timeout=0.5)
    try:
        with connect(run.server.port) as sock:
            sock.sendall(request_bytes(train=0))
            reply(sock)
            paused = len(run.times)
            time.sleep(0.3)
            assert len(run.times) == paused          # paused on the viewer's request
            deadline = time.monotonic() + 5.0        # silent past the limit: dropped, training resumes
            while len(run.times) <= paused + 3:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert any("silent for 0.5 s while training was paused" in line for line in run.lines)
    finally:
        run.stop()


def test_image_size_rule():
    assert MAX_IMAGE_PIXELS == 3840 * 2160
    decode_request(request_bytes(3840, 2160)[4:])
    decode_request(request_bytes(8192, 1012)[4:])
    for size in ((3841, 2160), (8193, 100), (16384, 16384)):
        with pytest.raises(ProtocolError, match="8192"):
            decode_request(request_bytes(*size)[4:])
