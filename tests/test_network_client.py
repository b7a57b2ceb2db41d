"""The viewer's network client (viewer/network/client.py) against fake trainers written here from the
spec (graphdeco-spec.md §1 and the extension documented in trainer/network/protocol.py), with
raw sockets: a reference trainer (no extension) and a splatview one (stats and snapshots)."""

from __future__ import annotations

import json
import math
import socket
import struct
import threading
import time

import numpy as np
import pytest

from rasterizer import Camera, look_at
from viewer.network.client import RemoteClient, _Controls, parse_address, within_image_limit

PATH = "/data/scène"


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def framed(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data


def pattern(width: int, height: int) -> bytes:
    """R = column, G = row, B = 7: the image a fake trainer sends (row 0 first = top)."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([cols, rows, np.full_like(rows, 7)], axis=-1).astype(np.uint8).tobytes()


def snapshot_blob(count: int) -> tuple[bytes, dict]:
    """A degree-0 snapshot in the documented layout, and the arrays it holds."""
    rng = np.random.default_rng(0)
    arrays = {"means": rng.normal(size=(count, 3)).astype("<f4"),
              "sh_dc": rng.normal(size=(count, 1, 3)).astype("<f2"),
              "sh_rest": np.zeros((count, 0, 3), "<f2"),
              "opacity_logits": rng.normal(size=count).astype("<f2"),
              "log_scales": rng.normal(size=(count, 3)).astype("<f2"),
              "quaternions": np.tile(np.array([1, 0, 0, 0], "<f2"), (count, 1))}
    return b"".join(a.tobytes() for a in arrays.values()), arrays


class FakeTrainer:
    """A trainer's side of the protocol on a listening socket: answers every request, records
    them; ``extension`` adds the splatview section when a request carries the key."""

    def __init__(self, port: int = 0, extension: bool = False, snapshot_count: int = 5):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        self.extension = extension
        self.snapshot_count = snapshot_count
        self.requests: list[dict] = []
        self.connections = 0
        self.drop_after: int | None = None   # close the connection after this many requests
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                served = 0
                try:
                    while self.drop_after is None or served < self.drop_after:
                        (size,) = struct.unpack("<I", recv_exact(conn, 4))
                        message = json.loads(recv_exact(conn, size))
                        self.requests.append(message)
                        conn.sendall(self._reply(message))
                        served += 1
                except (ConnectionError, OSError):
                    pass

    def _reply(self, message: dict) -> bytes:
        width, height = message["resolution_x"], message["resolution_y"]
        data = pattern(width, height) if width and height else b""
        data += framed(PATH.encode("utf-8"))
        if self.extension and "splatview" in message:
            want = message["splatview"]["want"]
            stats = {"iteration": len(self.requests), "iterations": 100, "loss": 0.5, "psnr": 20.0,
                     "gaussians": self.snapshot_count, "steps_per_second": 10.0, "sh_degree": 0,
                     "finished": False} if "stats" in want else None
            blob = b""
            snapshot = None
            if "snapshot" in want:
                blob, _ = snapshot_blob(self.snapshot_count)
                snapshot = {"count": self.snapshot_count, "sh_degree": 0, "iteration": len(self.requests)}
            header = json.dumps({"version": 1, "stats": stats, "snapshot": snapshot}).encode()
            data += framed(header) + framed(blob)
        return data

    def close(self) -> None:
        self.closed.set()
        self.listener.close()


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def client_factory():
    made: list[RemoteClient] = []

    def make(port: int, **kwargs) -> RemoteClient:
        kwargs.setdefault("probe_timeout", 0.3)
        made.append(RemoteClient("127.0.0.1", port, load_cameras=False, **kwargs).start())
        return made[-1]

    yield make
    for client in made:
        client.stop()


def test_against_the_reference_protocol(client_factory):
    fake = FakeTrainer()
    try:
        client = client_factory(fake.port)
        wait_for(lambda: client.latest().connected)
        state = client.latest()
        assert state.extension is None and state.source_path == PATH and "reference" in state.status
        handshake = fake.requests[0]
        assert (handshake["resolution_x"], handshake["resolution_y"]) == (0, 0)

        camera = Camera.from_fov(40, 30, 1.0, 2 * math.atan(math.tan(0.5) * 30 / 40), look_at((1.0, 2.0, 3.0), (0, 0, 0)))
        client.set_controls(train=False, keep_alive=False, scaling_modifier=0.5)
        client.set_view(camera)
        wait_for(lambda: client.latest().frame is not None)
        frame = client.latest().frame
        assert frame.pixels.shape == (30, 40, 3) and frame.pixels.tobytes() == pattern(40, 30)
        request = fake.requests[-1]
        assert "splatview" not in request  # a reference peer never sees the extension's key
        assert {k: request[k] for k in ("resolution_x", "resolution_y", "train", "keep_alive", "scaling_modifier")} \
            == {"resolution_x": 40, "resolution_y": 30, "train": 0, "keep_alive": 0, "scaling_modifier": 0.5}
        assert all(isinstance(v, float) for v in request["view_matrix"] + request["view_projection_matrix"])
        assert request["fov_x"] == pytest.approx(1.0) and request["fov_y"] == pytest.approx(camera.fov_y)
        # Spec §1.4: column-major OpenGL world->eye; the trainer's flips give back our pose.
        view_gl = np.array(request["view_matrix"]).reshape(4, 4).T
        assert np.allclose(np.diag([1, -1, -1, 1]) @ view_gl, camera.world_to_camera.numpy())
        eye = -view_gl[:3, :3].T @ view_gl[:3, 3]
        assert np.allclose(eye, [1.0, 2.0, 3.0])
        # view_projection = P V with a symmetric perspective: the camera looks at the origin.
        origin = np.array(request["view_projection_matrix"]).reshape(4, 4).T @ [0, 0, 0, 1]
        assert np.allclose(origin[:2] / origin[3], 0.0, atol=1e-9) and origin[3] > 0

        paused = len(fake.requests)  # paused: about 60 requests per second, not a busy loop
        time.sleep(0.5)
        assert len(fake.requests) - paused < 60
    finally:
        fake.close()


def test_reconnects_after_a_drop_and_a_restart(client_factory):
    fake = FakeTrainer()
    fake.drop_after = 3
    client = client_factory(fake.port)
    wait_for(lambda: fake.connections >= 2 and client.latest().connected)  # dropped, then back
    port = fake.port
    fake.close()
    wait_for(lambda: not client.latest().connected)
    restarted = FakeTrainer(port)  # the trainer restarts on the same port
    try:
        wait_for(lambda: restarted.connections >= 1 and client.latest().connected)
        assert client.latest().connections >= 3
    finally:
        restarted.close()


def test_extension_stats_and_snapshots(client_factory):
    fake = FakeTrainer(extension=True, snapshot_count=5)
    try:
        client = client_factory(fake.port)
        client.set_controls(local_rendering=True)
        client.set_view(Camera.from_fov(16, 16, 1.0, 1.0, look_at((0.0, 0.0, 3.0), (0, 0, 0))))
        wait_for(lambda: client.latest().gaussians is not None)
        state = client.latest()
        assert state.extension == 1 and state.stats["gaussians"] == 5
        _, arrays = snapshot_blob(5)
        assert np.array_equal(state.gaussians.means.numpy(), arrays["means"])
        assert np.array_equal(state.gaussians.log_scales.numpy(), arrays["log_scales"].astype(np.float32))
        request = fake.requests[-1]
        assert request["splatview"]["version"] == 1 and set(request["splatview"]["want"]) == {"stats", "snapshot"}
        assert (request["resolution_x"], request["resolution_y"]) == (0, 0)  # rendered locally
        client.set_controls(local_rendering=False)  # the trainer renders again
        wait_for(lambda: client.latest().frame is not None)
        assert client.latest().frame.pixels.tobytes() == pattern(16, 16)
    finally:
        fake.close()


def test_parse_address():
    assert parse_address("10.0.0.2:6010") == ("10.0.0.2", 6010)
    assert parse_address("6009") == ("127.0.0.1", 6009)
    for bad in ("host", "host:0", "host:x"):
        with pytest.raises(ValueError, match="--connect"):
            parse_address(bad)


def test_views_over_the_trainer_limit_are_asked_for_smaller():
    from trainer.network.protocol import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, decode_request, encode_request

    pose = look_at((0.0, 0.0, 3.0), (0.0, 0.0, 0.0))
    small = Camera.from_fov(1920, 1080, 1.0, None, pose)
    assert within_image_limit(small) is small
    for width, height in ((16384, 16384), (7680, 4320), (12000, 100)):
        camera = Camera.from_fov(width, height, 1.0, None, pose)
        limited = within_image_limit(camera)
        assert limited.width * limited.height <= MAX_IMAGE_PIXELS and max(limited.width, limited.height) <= MAX_IMAGE_SIDE
        assert abs(limited.fov_x - camera.fov_x) < 1e-3 and abs((limited.width / limited.height) / (width / height) - 1) < 0.02
        request = RemoteClient._request(_Controls(), limited, None)
        decode_request(encode_request(request)[4:])   # the trainer accepts it
