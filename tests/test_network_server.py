"""``splat-train``'s network viewer port on loopback, against a client written here from the spec
(graphdeco-spec.md §1) with raw sockets, struct and json: it does not use trainer.network.

The trainer runs in a thread on a tiny synthetic scene whose initial points are four coloured
points (red left, blue right, green top, white bottom), so the image orientation can be checked
without trusting any of our camera code.
"""

from __future__ import annotations

import json
import math
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rasterizer import Camera, render
from rasterizer.ply import PointCloud, write_point_cloud
from test_train_support import tiny_config, write_tiny_scene
from trainer.train import Trainer

W, H = 48, 32                       # non-square, so a width/height swap shows
FOV_Y = 0.9
FOV_X = 2.0 * math.atan(math.tan(FOV_Y / 2.0) * W / H)   # as SIBR derives it
EYE = (0.0, 0.0, 3.0)               # on +z, looking at the origin, world +y up
# The first reply comes after the trainer's first step, which on a fresh GPU machine compiles
# the CUDA kernels (NVRTC): over 10 s with thirteen other test processes beside it (on an H200).
REPLY_TIMEOUT = 60.0


# ----- the spec's client ----------------------------------------------------------------------------
def gl_view_matrix() -> np.ndarray:
    """SIBR's eye.view(): OpenGL world->eye (camera at EYE looking down -z, y up)."""
    view = np.eye(4)
    view[:3, 3] = -np.asarray(EYE)
    return view


def gl_projection(near: float = 0.009, far: float = 1100.0) -> np.ndarray:
    return np.array([[1 / math.tan(FOV_X / 2), 0, 0, 0], [0, 1 / math.tan(FOV_Y / 2), 0, 0],
                     [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)], [0, 0, -1, 0]])


def request_bytes(width: int = W, height: int = H, train: int = 0, keep_alive: int = 0, **extra) -> bytes:
    """A request as SIBR writes it: u32 LE length + JSON; matrices column-major (Eigen order)."""
    view = gl_view_matrix()
    message = {"resolution_x": width, "resolution_y": height, "train": train, "fov_y": FOV_Y, "fov_x": FOV_X,
               "z_near": 0.009, "z_far": 1100.0, "shs_python": 0, "rot_scale_python": 0,
               "keep_alive": keep_alive, "scaling_modifier": 1.0,
               "view_matrix": [float(v) for v in view.T.flatten()],
               "view_projection_matrix": [float(v) for v in (gl_projection() @ view).T.flatten()], **extra}
    body = json.dumps(message).encode()
    return struct.pack("<I", len(body)) + body


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def reply(sock: socket.socket, width: int = W, height: int = H) -> tuple[bytes, bytes]:
    """(image bytes or b"", path bytes) of one reply."""
    image = recv_exact(sock, width * height * 3) if width and height else b""
    (length,) = struct.unpack("<I", recv_exact(sock, 4))
    return image, recv_exact(sock, length)


def nothing_more(sock: socket.socket, seconds: float = 0.3) -> bool:
    """True when no byte (and no end of stream) arrives within ``seconds``."""
    sock.settimeout(seconds)
    try:
        sock.recv(1)
        return False
    except socket.timeout:
        return True
    finally:
        sock.settimeout(REPLY_TIMEOUT)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT)
    return sock


# ----- the trainer ----------------------------------------------------------------------------------
COLOURED = {"red": ((-0.6, 0.0, 0.0), (1.0, 0.0, 0.0)), "blue": ((0.6, 0.0, 0.0), (0.0, 0.0, 1.0)),
            "green": ((0.0, 0.6, 0.0), (0.0, 1.0, 0.0)), "white": ((0.0, -0.6, 0.0), (1.0, 1.0, 1.0))}


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """The tiny scene in a folder with a non-ASCII name, its points replaced by COLOURED."""
    root = write_tiny_scene(tmp_path_factory.mktemp("net") / "scène-日本")
    xyz = np.array([p for p, _ in COLOURED.values()])
    rgb = np.array([c for _, c in COLOURED.values()])
    write_point_cloud(root / "points3d.ply", PointCloud(xyz, rgb))
    return root


class Run:
    """A Trainer in a thread with the network viewer hook (and a hook recording the iterations
    that went past it)."""

    def __init__(self, scene: Path, model: Path, iterations: int, idle_timeout: float = 10.0):
        from trainer.network.server import NetworkViewer  # the server under test

        self.server = NetworkViewer("127.0.0.1", 0, idle_timeout=idle_timeout).listen()
        self.started: list[int] = []
        config = tiny_config(scene, model, "--iterations", str(iterations), "--test_iterations", "-1")
        self.trainer = Trainer(config, hooks=[self.server, lambda trainer, it: self.started.append(it)])
        self.result = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self.trainer.run()
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error
        finally:
            self.server.close()

    def wait(self, condition, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.thread.is_alive() or condition(), f"training ended early ({self.error!r})"
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.005)

    def finish(self, timeout: float = 60.0):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "training did not finish"
        assert self.error is None, repr(self.error)
        return self.result

    def stop(self) -> None:
        self.trainer.request_stop()
        self.thread.join(30)


@pytest.fixture
def runs():
    started: list[Run] = []
    yield lambda *args, **kwargs: started.append(Run(*args, **kwargs)) or started[-1]
    for run in started:
        if run.thread.is_alive():
            run.stop()


# ----- tests ------------------------------------------------------------------------------------------
def test_handshake_path_image_layout_and_pause(scene, tmp_path, runs):
    run = runs(scene, tmp_path / "m", iterations=60)
    with connect(run.server.port) as sock:
        sock.sendall(request_bytes(0, 0))
        image, path = reply(sock, 0, 0)
        assert image == b"" and path == str(scene).encode("utf-8")  # non-ASCII: UTF-8
        assert nothing_more(sock)  # no extension section for a reference peer
        run.wait(lambda: run.trainer.model is not None and run.server.served >= 1)
        first = len(run.started)

        sock.sendall(request_bytes(train=0))
        image, path = reply(sock)
        assert len(image) == W * H * 3 and path == str(scene).encode("utf-8")
        # Byte-exact: the trainer's Gaussians at the camera the spec defines, truncated.
        camera = Camera.from_fov(W, H, FOV_X, FOV_Y, np.diag([1.0, -1.0, -1.0, 1.0]) @ gl_view_matrix())
        with torch.no_grad():
            expected = render(run.trainer.model.gaussians(), camera, (0.0, 0.0, 0.0), backend=run.trainer.backend,
                              sh_degree=run.trainer.model.active_sh_degree).image
        expected = (expected.clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        pixels = np.frombuffer(image, np.uint8).reshape(H, W, 3)
        assert np.array_equal(pixels, expected)
        # Orientation without our camera code: red left, blue right, green top, white bottom.
        rgb = pixels.astype(float)
        left, right, top, bottom = rgb[:, : W // 3], rgb[:, -W // 3:], rgb[: H // 3], rgb[-H // 3:]
        print("orientation", [part.mean(axis=(0, 1)).round(1).tolist() for part in (left, right, top, bottom)])
        assert left[..., 0].mean() > left[..., 2].mean() + 5 and right[..., 2].mean() > right[..., 0].mean() + 5
        green_excess = [(part[..., 1] - part[..., 0]).mean() for part in (top, bottom)]  # white has G = R
        assert green_excess[0] > green_excess[1] + 5

        for _ in range(5):  # paused: served, no step
            sock.sendall(request_bytes(train=0))
            assert len(reply(sock)[0]) == W * H * 3
        time.sleep(0.2)
        assert len(run.started) == first

        # Training: the steps do not wait for the viewer (the reference waits for a request
        # before every step; here a silent viewer holds nothing).
        sock.sendall(request_bytes(train=1))
        reply(sock)
        run.wait(lambda: len(run.started) >= first + 5)
        sock.sendall(request_bytes(train=0))   # paused again: no step until the next request
        reply(sock)
        paused_at = len(run.started)
        time.sleep(0.3)
        assert len(run.started) == paused_at
    result = run.finish()   # the viewer left: training resumes and completes
    assert result.status == "completed" and result.iteration == 60


def test_keep_alive_saves_then_keeps_serving(scene, tmp_path, runs):
    run = runs(scene, tmp_path / "m", iterations=6)
    final_ply = tmp_path / "m" / "point_cloud" / "iteration_6" / "point_cloud.ply"
    with connect(run.server.port) as sock:
        for _ in range(12):  # more requests than iterations: the last ones are served after the save
            sock.sendall(request_bytes(train=1, keep_alive=1))
            assert len(reply(sock)[0]) == W * H * 3
        assert final_ply.is_file() and run.thread.is_alive() and run.trainer.completed == 6
        sock.sendall(request_bytes(train=0, keep_alive=0))  # uncheck keep-alive: the trainer exits
        reply(sock)
        result = run.finish()
    assert result.status == "completed" and run.started == list(range(1, 7))


def _bad_clients(port: int) -> list:
    """200 ways to misbehave: (bytes to send, how to end)."""
    valid = request_bytes()
    cases = [
        (b"", "close"), (b"\x05", "close"), (struct.pack("<I", 0xFFFFFFFF), "close"),
        (struct.pack("<I", 100) + b'{"resolution_x"', "close"), (valid[:-5], "close"), (valid[:3], "close"),
        (struct.pack("<I", 4) + b"\xff\xfe\x00\x01", "close"), (struct.pack("<I", 2) + b"[]", "close"),
        (struct.pack("<I", 4) + b"null", "close"), (struct.pack("<I", 5) + b"nope!", "close"),
        (request_bytes(resolution_x=-1), "close"), (request_bytes(resolution_x=10 ** 9), "close"),
        (request_bytes(resolution_x="48"), "close"), (request_bytes(fov_x="wide"), "close"),
        (request_bytes(fov_y=float("nan")), "close"), (request_bytes(fov_x=4.0), "close"),
        (request_bytes(view_matrix=[1.0] * 15), "close"), (request_bytes(view_projection_matrix="x"), "close"),
        (request_bytes(view_matrix=[0.0] * 16), "close"), (request_bytes(splatview="v1"), "close"),
        (valid, "reset"), (valid[:10], "reset"), (valid, "close"),
    ]
    for key in ("train", "fov_y", "keep_alive", "view_matrix", "scaling_modifier"):
        body = json.loads(valid[4:])
        del body[key]
        data = json.dumps(body).encode()
        cases.append((struct.pack("<I", len(data)) + data, "close"))
    rng = np.random.default_rng(0)
    while len(cases) < 200:
        data = bytearray(valid)
        for index in rng.integers(0, len(data), size=3):
            data[index] = int(rng.integers(0, 256))
        cut = int(rng.integers(1, len(data)))
        cases.append((bytes(data[:cut]), "reset" if len(cases) % 2 else "close"))
    return cases


def test_malformed_clients_are_dropped_and_training_goes_on(scene, tmp_path, runs):
    run = runs(scene, tmp_path / "m", iterations=400, idle_timeout=0.5)
    cases = _bad_clients(run.server.port)
    assert len(cases) == 200
    for data, ending in cases:
        dropped = run.server.dropped
        sock = connect(run.server.port)
        if data:
            sock.sendall(data)
        if ending == "reset":  # abrupt: RST instead of FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # A valid request before the end is answered; read nothing, the drop comes from the end.
        sock.close()
        run.wait(lambda: run.server.dropped > dropped)
    hung = connect(run.server.port)  # sends half a message and stays silent: idle timeout
    hung.sendall(request_bytes()[:20])
    dropped = run.server.dropped
    run.wait(lambda: run.server.dropped > dropped)
    hung.close()
    assert run.server.dropped == 201 and run.thread.is_alive()
    with connect(run.server.port) as sock:  # a valid client is served to the end of training
        while True:
            try:
                sock.sendall(request_bytes(train=1))
                assert len(reply(sock)[0]) == W * H * 3
            except (ConnectionError, OSError):
                break
    result = run.finish()
    assert result.status == "completed" and result.iteration == 400


def test_extension_stats_and_snapshot(scene, tmp_path, runs):
    from trainer.network.protocol import Snapshot, decode_snapshot

    run = runs(scene, tmp_path / "m", iterations=30)
    ask = {"splatview": {"version": 1, "want": ["stats", "snapshot"]}}
    with connect(run.server.port) as sock:
        sock.sendall(request_bytes(0, 0, train=0, **ask))
        _, path = reply(sock, 0, 0)
        (size,) = struct.unpack("<I", recv_exact(sock, 4))
        header = json.loads(recv_exact(sock, size))
        (blob_size,) = struct.unpack("<I", recv_exact(sock, 4))
        blob = recv_exact(sock, blob_size)
        assert header["version"] == 1 and header["stats"]["iteration"] == 0
        assert header["stats"]["gaussians"] == 4 and header["stats"]["iterations"] == 30
        described = header["snapshot"]
        assert described == {"count": 4, "sh_degree": 0, "iteration": 0}
        gaussians = decode_snapshot(Snapshot(4, 0, 0, blob))
        model = run.trainer.model.gaussians().to("cpu")   # the trainer may run on a GPU
        assert torch.equal(gaussians.means, model.means)
        assert torch.allclose(gaussians.sh_dc, model.sh_dc.detach(), atol=2e-3)
        assert torch.allclose(gaussians.log_scales, model.log_scales.detach(), rtol=1e-3)

        sock.sendall(request_bytes(0, 0, train=1, **ask))   # a 0x0 extension request still trains
        reply(sock, 0, 0)
        (size,) = struct.unpack("<I", recv_exact(sock, 4))
        header = json.loads(recv_exact(sock, size))
        assert header["snapshot"] is None and recv_exact(sock, 4) == b"\0\0\0\0"  # model unchanged
        run.wait(lambda: len(run.started) >= 1)
        sock.sendall(request_bytes(train=0))  # the same server answers a reference request as before
        image, _ = reply(sock)
        assert len(image) == W * H * 3 and nothing_more(sock)
    assert run.finish().status == "completed"


def test_non_loopback_warns_and_busy_port_is_one_line(tmp_path):
    from trainer.config import ConfigError
    from trainer.network.server import NetworkViewer

    warnings: list[str] = []
    server = NetworkViewer("0.0.0.0", 0, warn=warnings.append).listen()
    try:
        assert len(warnings) == 1 and "no authentication" in warnings[0]
        with pytest.raises(ConfigError, match="cannot listen on") as caught:
            NetworkViewer("0.0.0.0", server.port).listen()
        assert "\n" not in str(caught.value)
    finally:
        server.close()
    quiet: list[str] = []
    NetworkViewer("127.0.0.1", 0, warn=quiet.append).listen().close()
    assert quiet == []


def test_snapshot_pacing_keeps_overhead_under_five_percent():
    from trainer.network.pacing import SnapshotPacer

    now = [0.0]
    pacer = SnapshotPacer(clock=lambda: now[0])
    rng = np.random.default_rng(1)
    spent = 0.0
    for _ in range(20000):  # a training loop asking for a snapshot before every step
        if pacer.ready():
            cost = float(rng.uniform(0.001, 0.2))   # big and varying snapshot costs
            start = now[0]
            now[0] += cost
            pacer.record(start, now[0])
            spent += cost
        now[0] += float(rng.uniform(0.001, 0.05))     # one training step
    assert pacer.count > 100
    assert spent / now[0] <= 0.05
    # Cheap snapshots are still capped at 10 per second.
    now[0], cheap = 0.0, SnapshotPacer(clock=lambda: now[0])
    for _ in range(100):  # one second of 10 ms steps
        if cheap.ready():
            cheap.record(now[0], now[0] + 1e-6)
        now[0] += 0.01
    assert cheap.count <= 11
