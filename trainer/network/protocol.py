"""The network viewer wire protocol: graphdeco-inria's (spec §1), plus splatview's extension.

Reference protocol (byte for byte what ``gaussian_renderer/network_gui.py`` and SIBR's remote
viewer speak; every integer is an unsigned 32-bit little-endian ``u32``):

* request (viewer -> trainer): ``u32 N`` then ``N`` bytes of UTF-8 JSON with the keys
  ``resolution_x, resolution_y, train, fov_y, fov_x, z_near, z_far, shs_python,
  rot_scale_python, keep_alive, scaling_modifier, view_matrix, view_projection_matrix``;
* reply (trainer -> viewer): when ``resolution_x`` and ``resolution_y`` are both non-zero,
  ``W*H*3`` bytes of RGB8 (HWC, row 0 = top, ``trunc(clamp(x, 0, 1) * 255)``, no prefix);
  then always ``u32 L`` and ``L`` bytes of the trainer's absolute source path. The reference
  encodes the path as ASCII (and drops every request when it is not); we send UTF-8, which is
  the same bytes for an ASCII path.
* ``view_matrix`` is SIBR's world->eye matrix in OpenGL axes (x right, y up, looking down -z),
  16 floats in column-major order; ``view_projection_matrix`` is ``P·V`` likewise.

Extension, version 1 (``EXTENSION_VERSION``), for splatview's own viewer. Reference peers never
send its key, so what they receive is unchanged:

* request: the extra JSON key ``"splatview": {"version": 1, "want": ["stats", "snapshot"]}``
  (``want`` may list either, both or neither). With it, a 0x0 request still honours ``train``,
  ``keep_alive`` and ``scaling_modifier`` (the reference pauses on 0x0 requests), so a viewer
  that renders locally from snapshots need not have the trainer render images.
* reply: the reference reply, then ``u32 H``, ``H`` bytes of UTF-8 JSON (the header), ``u32 B``
  and ``B`` bytes of snapshot (``B = 0``: no snapshot in this reply). The header is
  ``{"version": 1, "stats": {...} | null, "snapshot": {...} | null}`` with stats
  ``iteration`` (last started, 1-based), ``iterations`` (total), ``loss`` and ``psnr`` (the
  progress bar's running values), ``gaussians``, ``steps_per_second``, ``sh_degree``,
  ``finished`` (training done, the model kept alive), ``background`` (RGB in [0, 1], what the
  trainer renders behind the model) and snapshot
  ``{"count": N, "sh_degree": D, "iteration": it}``.
* snapshot bytes (little-endian, arrays one after another, row-major): ``means`` float32
  [N, 3]; then float16: ``sh_dc`` [N, 3], ``sh_rest`` [N, (D+1)^2 - 1, 3] (only the bands in
  use, coefficient-major), ``opacity_logits`` [N], ``log_scales`` [N, 3], ``quaternions`` [N, 4]
  (normalised, w x y z). About 60 bytes per Gaussian at degree 0 and 124 at degree 3, against
  236 in float32. Snapshots are sent only when asked for, when the model changed, and no more
  often than :class:`SnapshotPacer` allows (it keeps their cost under 4% of the training time).
* A client learns that the trainer speaks the extension when the section follows the path of
  its first (0x0) reply; a reference trainer sends nothing more and waits for the next request.

Size bounds (we allocate only after checking them): requests ``MAX_REQUEST_BYTES``; paths and
headers ``MAX_TEXT_BYTES``; snapshots ``MAX_SNAPSHOT_COUNT`` Gaussians; requested images at most
``MAX_IMAGE_PIXELS`` pixels (3840 x 2160, a 4K UHD screen) and ``MAX_IMAGE_SIDE`` (8192) per side.
Why that cap: the trainer renders a requested image inside the training loop, and a render's
memory and time grow with its pixel count (CPU reference backend, 100k Gaussians: 0.8 GB at
1920 x 1080, 2.8 GB at 3840 x 2160; one 16384 x 16384 request took a trainer from 0.9 to 15 GB).
A larger request is refused: the trainer drops that client with a log line saying why.
"""

from __future__ import annotations

import json
import math
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rasterizer.camera import Camera, fov_to_focal
from rasterizer.gaussians import Gaussians
from rasterizer.sh import num_sh_coefficients

__all__ = ["ProtocolError", "ConnectionClosed", "ViewRequest", "ExtensionRequest", "Snapshot",
           "EXTENSION_KEY", "EXTENSION_VERSION", "DEFAULT_IP", "DEFAULT_PORT", "MAX_REQUEST_BYTES",
           "MAX_IMAGE_SIDE", "MAX_IMAGE_PIXELS", "MAX_TEXT_BYTES", "MAX_SNAPSHOT_COUNT", "read_exact",
           "read_u32", "read_message", "take_message", "frame_message", "decode_request", "encode_request", "request_camera",
           "request_matrices", "encode_image", "encode_path", "encode_extension", "read_extension",
           "encode_snapshot", "decode_snapshot", "snapshot_size"]

DEFAULT_IP = "127.0.0.1"
DEFAULT_PORT = 6009
EXTENSION_KEY = "splatview"
EXTENSION_VERSION = 1
MAX_REQUEST_BYTES = 64 << 10       # SIBR's requests are about 1 KB
MAX_IMAGE_SIDE = 8192              # pixels per side of a requested image
MAX_IMAGE_PIXELS = 3840 * 2160     # pixels of a requested image (see the module docstring)
MAX_TEXT_BYTES = 1 << 20           # a path or an extension header
MAX_SNAPSHOT_COUNT = 200_000_000   # Gaussians in one snapshot
SIBR_Z_NEAR, SIBR_Z_FAR = 0.009, 1100.0   # what SIBR's camera usually sends (unused by the render)
_U32 = struct.Struct("<I")
_REQUIRED = ("train", "fov_y", "fov_x", "z_near", "z_far", "shs_python", "rot_scale_python",
             "keep_alive", "scaling_modifier", "view_matrix", "view_projection_matrix")


class ProtocolError(ValueError):
    """A message that breaks the protocol (the connection is dropped)."""


class ConnectionClosed(ProtocolError):
    """The peer closed the connection (possibly in the middle of a message)."""


# ----- framing ------------------------------------------------------------------------------------
def read_exact(sock: socket.socket, size: int) -> bytes:
    """Exactly ``size`` bytes from ``sock``, however they are split into segments (the reference
    trusts a single ``recv``). Raises :class:`ConnectionClosed` if the peer closes first."""
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        count = sock.recv_into(view[got:], size - got)
        if count == 0:
            raise ConnectionClosed(f"connection closed after {got} of {size} bytes")
        got += count
    return bytes(buffer)


def read_u32(sock: socket.socket) -> int:
    return _U32.unpack(read_exact(sock, 4))[0]


def read_message(sock: socket.socket, limit: int) -> bytes:
    """A ``u32`` length prefix and that many bytes; a length above ``limit`` is rejected before
    anything is allocated."""
    size = read_u32(sock)
    if size > limit:
        raise ProtocolError(f"message of {size} bytes is over the {limit}-byte limit")
    return read_exact(sock, size)


def take_message(buffer: bytearray, limit: int) -> bytes | None:
    """Remove and return the first complete ``u32``-prefixed message of ``buffer`` (bytes received
    so far, for a non-blocking reader); None while it is incomplete. An announced length above
    ``limit`` is a :class:`ProtocolError` as soon as the prefix is in."""
    if len(buffer) < 4:
        return None
    size = _U32.unpack_from(buffer)[0]
    if size > limit:
        raise ProtocolError(f"message of {size} bytes is over the {limit}-byte limit")
    if len(buffer) < 4 + size:
        return None
    payload = bytes(buffer[4:4 + size])
    del buffer[:4 + size]
    return payload


def frame_message(payload: bytes) -> bytes:
    """``u32`` length + payload."""
    return _U32.pack(len(payload)) + payload


# ----- requests -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExtensionRequest:
    """The ``"splatview"`` key of a request: extension version and what the viewer wants."""

    version: int = EXTENSION_VERSION
    want: frozenset[str] = frozenset({"stats", "snapshot"})

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "want": sorted(self.want)}


@dataclass(frozen=True)
class ViewRequest:
    """One decoded request. ``width``/``height`` 0 means "no image". Angles in radians;
    matrices are the 16 floats as sent (column-major OpenGL, see the module docstring)."""

    width: int
    height: int
    train: bool = True
    fov_x: float = 1.0
    fov_y: float = 1.0
    z_near: float = SIBR_Z_NEAR
    z_far: float = SIBR_Z_FAR
    shs_python: bool = False
    rot_scale_python: bool = False
    keep_alive: bool = True
    scaling_modifier: float = 1.0
    view_matrix: tuple[float, ...] = tuple(np.eye(4).flatten().tolist())
    view_projection_matrix: tuple[float, ...] = tuple(np.eye(4).flatten().tolist())
    extension: ExtensionRequest | None = None

    @property
    def has_image(self) -> bool:
        return self.width != 0 and self.height != 0


def _number(message: dict, key: str) -> float:
    value = message[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProtocolError(f"{key!r} must be a finite number, got {str(value)[:40]!r}")
    return float(value)


def _matrix(message: dict, key: str) -> tuple[float, ...]:
    value = message[key]
    if not isinstance(value, list) or len(value) != 16:
        raise ProtocolError(f"{key!r} must be a list of 16 numbers")
    numbers = tuple(_number({key: v}, key) for v in value)
    return numbers


def _size(message: dict, key: str) -> int:
    value = message.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(f"{key!r} must be a non-negative integer, got {str(value)[:40]!r}")
    return value


def _extension(message: dict) -> ExtensionRequest | None:
    value = message.get(EXTENSION_KEY)
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("version"), int) \
            or not isinstance(value.get("want", []), list):
        raise ProtocolError(f"{EXTENSION_KEY!r} must be {{\"version\": int, \"want\": [...]}}")
    return ExtensionRequest(value["version"], frozenset(str(w) for w in value.get("want", [])))


def decode_request(payload: bytes) -> ViewRequest:
    """Parse and check one request's JSON. As the reference, a 0x0 request needs no other key
    (and then means "no image, do not train"), while an image request needs them all."""
    try:
        message = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProtocolError(f"request is not UTF-8 JSON ({error})") from None
    if not isinstance(message, dict):
        raise ProtocolError("request is not a JSON object")
    width, height = _size(message, "resolution_x"), _size(message, "resolution_y")
    if width * height > MAX_IMAGE_PIXELS or max(width, height) > MAX_IMAGE_SIDE:
        raise ProtocolError(f"refused a {width}x{height} image: over the limit of {MAX_IMAGE_PIXELS} pixels "
                            f"(3840x2160) and {MAX_IMAGE_SIDE} per side")
    extension = _extension(message)
    if width == 0 or height == 0:
        if extension is None:  # the reference ignores every other key: no image, no step
            return ViewRequest(width, height, train=False, keep_alive=False)
        # The extension honours the controls on 0x0 requests (missing ones: paused, not kept alive).
        return ViewRequest(width, height, train=bool(message.get("train", 0)),
                           keep_alive=bool(message.get("keep_alive", 0)),
                           scaling_modifier=_number(message, "scaling_modifier")
                           if "scaling_modifier" in message else 1.0, extension=extension)
    missing = [key for key in _REQUIRED if key not in message]
    if missing:
        raise ProtocolError(f"request without {', '.join(missing)}")
    return ViewRequest(width, height, train=bool(message["train"]), fov_x=_number(message, "fov_x"),
                       fov_y=_number(message, "fov_y"), z_near=_number(message, "z_near"),
                       z_far=_number(message, "z_far"), shs_python=bool(message["shs_python"]),
                       rot_scale_python=bool(message["rot_scale_python"]),
                       keep_alive=bool(message["keep_alive"]),
                       scaling_modifier=_number(message, "scaling_modifier"),
                       view_matrix=_matrix(message, "view_matrix"),
                       view_projection_matrix=_matrix(message, "view_projection_matrix"),
                       extension=extension)


def encode_request(request: ViewRequest) -> bytes:
    """The framed request (``u32`` + JSON) as SIBR sends it: flags as 0/1 integers, matrices
    as JSON floats; the extension key only when ``request.extension`` is set."""
    message: dict[str, Any] = {
        "resolution_x": int(request.width), "resolution_y": int(request.height),
        "train": int(request.train), "fov_y": float(request.fov_y), "fov_x": float(request.fov_x),
        "z_near": float(request.z_near), "z_far": float(request.z_far),
        "shs_python": int(request.shs_python), "rot_scale_python": int(request.rot_scale_python),
        "keep_alive": int(request.keep_alive), "scaling_modifier": float(request.scaling_modifier),
        "view_matrix": [float(v) for v in request.view_matrix],
        "view_projection_matrix": [float(v) for v in request.view_projection_matrix],
    }
    if request.extension is not None:
        message[EXTENSION_KEY] = request.extension.to_json()
    return frame_message(json.dumps(message).encode("utf-8"))


# ----- cameras --------------------------------------------------------------------------------------
def _gl_to_opencv(view_gl: np.ndarray) -> np.ndarray:
    """OpenGL eye axes (y up, -z forward) <-> OpenCV (y down, +z forward): negate rows 1 and 2
    (its own inverse)."""
    flipped = np.array(view_gl, dtype=np.float64)
    flipped[1:3, :] *= -1.0
    return flipped


def request_camera(request: ViewRequest) -> Camera:
    """The camera the reference renders for an image request.

    ``view_matrix`` read column-major is SIBR's OpenGL world->eye matrix; negating its rows 1
    and 2 gives our OpenCV world->camera matrix (the reference negates columns 1 and 2 of the
    transpose it builds: the same flip). Intrinsics come from ``fov_x``/``fov_y`` with a centred
    principal point (cx = W/2, cy = H/2 in COLMAP's convention). The reference projects the 2D
    means with ``view_projection_matrix`` instead; for SIBR's symmetric perspective of the same
    fields of view, x_ndc = x / (z tan(fov_x/2)), and its pixel mapping ((ndc + 1) W - 1) / 2 is
    exactly fx x / z + W/2 - 1/2 with fx = W / (2 tan(fov_x/2)): the same positions, so we need
    not use that matrix (it is still checked to be 16 numbers, as the reference's reshape does).
    """
    if not request.has_image:
        raise ProtocolError("a 0x0 request has no camera")
    for name, fov in (("fov_x", request.fov_x), ("fov_y", request.fov_y)):
        if not 0.0 < fov < math.pi:
            raise ProtocolError(f"{name} must be in (0, pi) radians, got {fov}")
    view_gl = np.asarray(request.view_matrix, dtype=np.float64).reshape(4, 4).T  # column-major
    world_to_camera = _gl_to_opencv(view_gl)
    if not np.allclose(world_to_camera[3], [0.0, 0.0, 0.0, 1.0]) or abs(np.linalg.det(world_to_camera[:3, :3])) < 1e-12:
        raise ProtocolError("view_matrix is not an invertible rigid view matrix")
    width, height = request.width, request.height
    return Camera(width, height, fov_to_focal(request.fov_x, width), fov_to_focal(request.fov_y, height),
                  width / 2.0, height / 2.0, world_to_camera)


def _perspective_gl(fov_x: float, fov_y: float, near: float, far: float) -> np.ndarray:
    """OpenGL's symmetric perspective matrix (NDC z in [-1, 1]), as SIBR builds it."""
    return np.array([[1.0 / math.tan(fov_x / 2.0), 0.0, 0.0, 0.0],
                     [0.0, 1.0 / math.tan(fov_y / 2.0), 0.0, 0.0],
                     [0.0, 0.0, -(far + near) / (far - near), -2.0 * far * near / (far - near)],
                     [0.0, 0.0, -1.0, 0.0]])


def request_matrices(camera: Camera, near: float = SIBR_Z_NEAR,
                     far: float = SIBR_Z_FAR) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(``view_matrix``, ``view_projection_matrix``) for ``camera`` (OpenCV pose), 16 floats
    each in column-major order, as SIBR sends them. Exact for a centred principal point."""
    view_gl = _gl_to_opencv(camera.world_to_camera.numpy())
    view_projection = _perspective_gl(camera.fov_x, camera.fov_y, near, far) @ view_gl
    return tuple(view_gl.T.flatten().tolist()), tuple(view_projection.T.flatten().tolist())


# ----- replies ----------------------------------------------------------------------------------------
def encode_image(image: torch.Tensor) -> bytes:
    """[3, H, W] float RGB -> ``H*W*3`` bytes, row 0 = top, ``trunc(clamp(x, 0, 1) * 255)``
    (the reference's ``.byte()`` truncates)."""
    pixels = (image.detach().clamp(0.0, 1.0) * 255.0).to(torch.uint8).permute(1, 2, 0).contiguous()
    return pixels.cpu().numpy().tobytes()


def encode_path(path: str) -> bytes:
    """The framed source path (UTF-8; byte-identical to the reference's ASCII for ASCII paths)."""
    return frame_message(path.encode("utf-8", errors="surrogateescape"))


def encode_extension(stats: dict[str, Any] | None, snapshot: "Snapshot | None") -> bytes:
    """The extension section appended after the reference reply (see the module docstring)."""
    header = {"version": EXTENSION_VERSION, "stats": stats,
              "snapshot": None if snapshot is None else {"count": snapshot.count, "sh_degree": snapshot.sh_degree,
                                                         "iteration": snapshot.iteration}}
    blob = b"" if snapshot is None else snapshot.data
    return frame_message(json.dumps(header).encode("utf-8")) + frame_message(blob)


def read_extension(sock: socket.socket) -> tuple[dict[str, Any], "Snapshot | None"]:
    """Read one extension section: (header dict, snapshot or None). The snapshot's size is
    checked against its header before it is read."""
    try:
        header = json.loads(read_message(sock, MAX_TEXT_BYTES).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProtocolError(f"extension header is not UTF-8 JSON ({error})") from None
    if not isinstance(header, dict) or not isinstance(header.get("version"), int):
        raise ProtocolError("extension header without a version")
    size = read_u32(sock)
    described = header.get("snapshot")
    if described is None:
        if size != 0:
            raise ProtocolError(f"{size} snapshot bytes without a snapshot header")
        return header, None
    try:
        count, degree, iteration = int(described["count"]), int(described["sh_degree"]), int(described["iteration"])
    except (KeyError, TypeError, ValueError):
        raise ProtocolError("snapshot header needs count, sh_degree and iteration") from None
    if size != snapshot_size(count, degree):
        raise ProtocolError(f"snapshot of {count} Gaussians at degree {degree} cannot be {size} bytes")
    return header, Snapshot(count, degree, iteration, read_exact(sock, size))


# ----- snapshots --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    """A compact copy of the Gaussians (layout in the module docstring)."""

    count: int
    sh_degree: int
    iteration: int
    data: bytes = field(repr=False)


def _snapshot_fields(count: int, sh_degree: int) -> list[tuple[str, np.dtype, tuple[int, ...]]]:
    rest = num_sh_coefficients(sh_degree) - 1
    half = np.dtype("<f2")
    return [("means", np.dtype("<f4"), (count, 3)), ("sh_dc", half, (count, 1, 3)),
            ("sh_rest", half, (count, rest, 3)), ("opacity_logits", half, (count,)),
            ("log_scales", half, (count, 3)), ("quaternions", half, (count, 4))]


def snapshot_size(count: int, sh_degree: int) -> int:
    """Bytes of a snapshot of ``count`` Gaussians at SH degree ``sh_degree`` (0-3)."""
    if not 0 <= count <= MAX_SNAPSHOT_COUNT or not 0 <= sh_degree <= 3:
        raise ProtocolError(f"snapshot of {count} Gaussians at SH degree {sh_degree} is out of range")
    return sum(dtype.itemsize * int(np.prod(shape)) for _, dtype, shape in _snapshot_fields(count, sh_degree))


_HALF_MAX = 65504.0


def encode_snapshot(gaussians: Gaussians, sh_degree: int, iteration: int) -> Snapshot:
    """Snapshot ``gaussians`` keeping the SH bands up to ``sh_degree`` (the ones training uses);
    float16 values are clamped to its finite range, quaternions normalised first."""
    with torch.no_grad():
        g = gaussians.with_sh_degree(sh_degree)
        arrays = {"means": g.means, "sh_dc": g.sh_dc, "sh_rest": g.sh_rest, "opacity_logits": g.opacity_logits,
                  "log_scales": g.log_scales, "quaternions": g.rotations}
        parts = []
        for name, dtype, shape in _snapshot_fields(len(g), sh_degree):
            tensor = arrays[name].detach()
            if dtype.itemsize == 2:
                tensor = tensor.clamp(-_HALF_MAX, _HALF_MAX).to(torch.float16)
            else:
                tensor = tensor.to(torch.float32)
            parts.append(tensor.reshape(shape).cpu().numpy().astype(dtype, copy=False).tobytes())
    return Snapshot(len(g), sh_degree, iteration, b"".join(parts))


def decode_snapshot(snapshot: Snapshot) -> Gaussians:
    """The Gaussians (float32, CPU) of a snapshot."""
    expected = snapshot_size(snapshot.count, snapshot.sh_degree)
    if len(snapshot.data) != expected:
        raise ProtocolError(f"snapshot has {len(snapshot.data)} bytes, expected {expected}")
    tensors, offset = {}, 0
    for name, dtype, shape in _snapshot_fields(snapshot.count, snapshot.sh_degree):
        size = dtype.itemsize * int(np.prod(shape))
        array = np.frombuffer(snapshot.data, dtype=dtype, count=int(np.prod(shape)), offset=offset)
        tensors[name] = torch.from_numpy(array.astype(np.float32).reshape(shape))
        offset += size
    return Gaussians(**tensors)
