"""``splat-view --connect HOST:PORT``: the network viewer client, for ``splat-train`` or the
reference's ``train.py`` (protocol: ``trainer/network/protocol.py``, spec §1).

A network thread does what SIBR's remote viewer does: connect every ``retry_interval`` (0.1 s)
until it succeeds, then send the latest view and controls, read the reply, and repeat as fast as
replies come; any error logs "Connection dropped" and goes back to connecting (so a restarted
trainer is picked up). The render loop sets the view with :meth:`RemoteClient.set_view` /
:meth:`set_controls` and picks up the latest results with :meth:`RemoteClient.latest`, never
waiting on the network.

Differences from SIBR, all on our side of the wire:

* The first request of a connection is a 0x0 handshake carrying the extension key; a trainer
  that speaks the extension answers with its section right after the path, the reference sends
  nothing more (it waits for the next request). The client waits ``probe_timeout`` seconds for
  that section to tell them apart, once per connection.
* With the extension and ``local_rendering`` on, requests are 0x0 (no image to render on the
  trainer) and ask for statistics and snapshots; the viewer renders the snapshot itself at its
  own frame rate. Otherwise the trainer renders the requested view, as with SIBR.
* While paused (``train = 0``) requests are spaced ``paused_interval`` (1/60 s) apart instead of
  spinning the trainer's serving loop; while training, one request per step, as SIBR.
* A view larger than the trainer serves (``MAX_IMAGE_PIXELS``, ``MAX_IMAGE_SIDE``: splat-train
  drops a client asking for more) is asked for at a smaller size with the same field of view,
  and the status line says so; the window stretches it.
"""

from __future__ import annotations

import math
import select
import socket
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from rasterizer.camera import Camera
from rasterizer.gaussians import Gaussians
from trainer.network.protocol import (MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, MAX_TEXT_BYTES, ExtensionRequest, ProtocolError,
                                      ViewRequest, decode_snapshot, encode_request, read_exact,
                                      read_extension, read_message, request_matrices)

__all__ = ["RemoteClient", "RemoteFrame", "RemoteState", "parse_address", "source_cameras", "within_image_limit"]

RETRY_INTERVAL_S = 0.1
PROBE_TIMEOUT_S = 1.0
PAUSED_INTERVAL_S = 1.0 / 60.0


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``PORT`` alone, host 127.0.0.1) -> (host, port); ValueError if not."""
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"--connect {text!r}: expected HOST:PORT, e.g. 127.0.0.1:6009") from None
    if not 0 < number < 65536:
        raise ValueError(f"--connect {text!r}: port must be 1..65535")
    return host or "127.0.0.1", number


def within_image_limit(camera: Camera) -> Camera:
    """``camera``, or the same view at the largest size the trainer serves (same aspect and
    field of view) when its image is over ``MAX_IMAGE_PIXELS`` or ``MAX_IMAGE_SIDE``."""
    width, height = camera.width, camera.height
    scale = min(1.0, math.sqrt(MAX_IMAGE_PIXELS / (width * height)), MAX_IMAGE_SIDE / max(width, height))
    if scale >= 1.0:
        return camera
    return camera.resized(max(1, int(width * scale)), max(1, int(height * scale)))


@dataclass(frozen=True)
class RemoteFrame:
    """An image rendered by the trainer: ``pixels`` [H, W, 3] uint8 RGB, row 0 = top, for
    ``camera``; ``sequence`` grows with every frame."""

    pixels: np.ndarray
    camera: Camera
    sequence: int


@dataclass
class RemoteState:
    """What the network thread last learned (a copy is handed to the render loop).

    ``status``: one line for the panel; ``extension``: the trainer's extension version (None:
    the reference trainer, or not connected yet); ``snapshot_sequence`` grows with every new
    snapshot in ``gaussians``.
    """

    status: str = "Trying to connect..."
    connected: bool = False
    source_path: str | None = None
    extension: int | None = None
    frame: RemoteFrame | None = None
    stats: dict[str, Any] | None = None
    gaussians: Gaussians | None = None
    snapshot_sequence: int = 0
    snapshot_iteration: int | None = None
    cameras: list[Camera] = field(default_factory=list)   # the source's cameras, when readable here
    connections: int = 0


@dataclass
class _Controls:
    camera: Camera | None = None
    train: bool = True
    keep_alive: bool = True
    scaling_modifier: float = 1.0
    local_rendering: bool = True


class RemoteClient:
    """The network thread and its latest results; see the module docstring."""

    def __init__(self, host: str, port: int, use_extension: bool = True,
                 retry_interval: float = RETRY_INTERVAL_S, probe_timeout: float = PROBE_TIMEOUT_S,
                 paused_interval: float = PAUSED_INTERVAL_S, load_cameras: bool = True):
        self.host, self.port = host, port
        self.use_extension = use_extension
        self.retry_interval = retry_interval
        self.probe_timeout = probe_timeout
        self.paused_interval = paused_interval
        self.load_cameras = load_cameras
        self._lock = threading.Lock()
        self._controls = _Controls()
        self._state = RemoteState()
        self._stop = threading.Event()
        self._socket: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="splatview-remote", daemon=True)
        self._frames = 0
        self._camera_path: str | None = None

    # ----- the render loop's side ----------------------------------------------------------------
    def start(self) -> "RemoteClient":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread (closing the connection; a trainer just sees a disconnect)."""
        self._stop.set()
        with self._lock:
            sock = self._socket
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocking recv
            except OSError:
                pass
        self._thread.join(5.0)

    def set_view(self, camera: Camera | None) -> None:
        """The view to request (None: no image, 0x0 requests)."""
        with self._lock:
            self._controls.camera = camera

    def set_controls(self, **changes: Any) -> None:
        """``train``, ``keep_alive``, ``scaling_modifier``, ``local_rendering``."""
        with self._lock:
            self._controls = replace(self._controls, **changes)

    def controls(self) -> _Controls:
        with self._lock:
            return replace(self._controls)

    def latest(self) -> RemoteState:
        """A copy of the latest state (cheap: images and snapshots are shared, not copied)."""
        with self._lock:
            return replace(self._state, cameras=list(self._state.cameras))

    def _update(self, **changes: Any) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(self._state, name, value)

    # ----- the network thread ---------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sock = socket.create_connection((self.host, self.port), timeout=max(self.retry_interval, 0.5))
            except OSError:
                self._update(status="Trying to connect...", connected=False)
                self._stop.wait(self.retry_interval)
                continue
            with self._lock:
                self._socket = sock
            try:
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._session(sock)
            except (OSError, ProtocolError) as error:
                if not self._stop.is_set():
                    self._update(status=f"Connection dropped ({error})")
            finally:
                with self._lock:
                    self._socket = None
                sock.close()
                self._update(connected=False, extension=None)
            self._stop.wait(self.retry_interval)

    def _session(self, sock: socket.socket) -> None:
        controls = self.controls()
        extension = ExtensionRequest(want=frozenset({"stats"})) if self.use_extension else None
        sock.sendall(encode_request(self._request(controls, None, extension)))
        self._read_reply(sock, 0, 0, None)
        version = None
        if extension is not None and select.select([sock], [], [], self.probe_timeout)[0]:
            header, _ = read_extension(sock)
            version = int(header["version"])
            self._update(stats=header.get("stats"))
        with self._lock:
            self._state.connections += 1
        self._update(connected=True, extension=version,
                     status=f"Connected to {self.host}:{self.port} "
                            f"({'splatview extension v%d' % version if version else 'reference protocol'})")
        while not self._stop.is_set():
            controls = self.controls()
            local = version is not None and controls.local_rendering
            camera = None if local else controls.camera
            if camera is not None:
                limited = within_image_limit(camera)
                if limited is not camera:
                    self._update(status=f"Connected to {self.host}:{self.port}: the view is {camera.width}x"
                                        f"{camera.height}, over the trainer's limit ({MAX_IMAGE_PIXELS} pixels, "
                                        f"{MAX_IMAGE_SIDE} per side): asking for {limited.width}x{limited.height}")
                    camera = limited
            want = frozenset({"stats", "snapshot"} if local else {"stats"})
            request = self._request(controls, camera, ExtensionRequest(want=want) if version else None)
            sock.sendall(encode_request(request))
            self._read_reply(sock, request.width, request.height, camera)
            if version is not None:
                self._read_extension(sock)
            if not request.train or (not request.width and version is None):
                self._stop.wait(self.paused_interval)  # nothing to wait for: don't spin the trainer

    @staticmethod
    def _request(controls: _Controls, camera: Camera | None, extension: ExtensionRequest | None) -> ViewRequest:
        if camera is None:
            return ViewRequest(0, 0, train=controls.train, keep_alive=controls.keep_alive,
                               scaling_modifier=controls.scaling_modifier, extension=extension)
        view, view_projection = request_matrices(camera)
        return ViewRequest(camera.width, camera.height, train=controls.train, fov_x=camera.fov_x,
                           fov_y=camera.fov_y, keep_alive=controls.keep_alive,
                           scaling_modifier=controls.scaling_modifier, view_matrix=view,
                           view_projection_matrix=view_projection, extension=extension)

    def _read_reply(self, sock: socket.socket, width: int, height: int, camera: Camera | None) -> None:
        pixels = read_exact(sock, width * height * 3) if width and height else None
        path = read_message(sock, MAX_TEXT_BYTES).decode("utf-8", errors="replace")
        if pixels is not None:
            self._frames += 1
            frame = RemoteFrame(np.frombuffer(pixels, np.uint8).reshape(height, width, 3), camera, self._frames)
            self._update(frame=frame)
        if path != self._camera_path:
            self._camera_path = path
            self._update(source_path=path, cameras=source_cameras(path) if self.load_cameras else [])

    def _read_extension(self, sock: socket.socket) -> None:
        header, snapshot = read_extension(sock)
        changes: dict[str, Any] = {"stats": header.get("stats")}
        if snapshot is not None:
            with self._lock:
                sequence = self._state.snapshot_sequence + 1
            changes.update(gaussians=decode_snapshot(snapshot), snapshot_sequence=sequence,
                           snapshot_iteration=snapshot.iteration)
        self._update(**changes)


def source_cameras(path: str) -> list[Camera]:
    """The training cameras of a scene folder, when this machine can read it (as SIBR loads the
    dataset at the received path); [] otherwise. Reads camera files only, no images."""
    try:
        from trainer.scene import colmap, nerf  # noqa: PLC0415
        from trainer.scene.scene import detect_scene_kind  # noqa: PLC0415

        source = Path(path)
        kind = detect_scene_kind(source)
        if kind == "colmap":
            folder = colmap.find_model_folder(source / "sparse")
            intrinsics, where = colmap.read_cameras(folder)
            images, _ = colmap.read_images(folder)
            cameras = []
            for image in sorted(images.values(), key=lambda i: i.name):
                fx, fy, cx, cy = intrinsics[image.camera_id].pinhole(where)
                k = intrinsics[image.camera_id]
                cameras.append(Camera(k.width, k.height, fx, fy, cx, cy, image.world_to_camera(), image.name))
            return cameras
        frames = (nerf.read_nerf_synthetic(source, "transforms_train.json") if kind == "nerf_synthetic"
                  else nerf.read_transforms(source))
        return [Camera(f.width, f.height, f.fx, f.fy, f.cx, f.cy, f.world_to_camera, f.image_name) for f in frames]
    except Exception:  # noqa: BLE001 - best effort: the trainer's path may not exist here
        return []

