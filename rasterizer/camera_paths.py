"""Camera paths for videos and fly-throughs: keyframes, smooth interpolation, paths generated from
a capture's cameras, and nerfstudio's ``camera_path.json``.

Conventions (those of :class:`rasterizer.Camera`): poses are 4x4 float64 world-to-camera
matrices in OpenCV axes (x right, y down, z forward); fields of view are vertical, in radians.

Interpolation: keyframes are evenly spaced in time (every transition takes the same time).
Camera centres follow a natural cubic spline, orientations scipy's C2-continuous
``RotationSpline`` and fields of view a monotone cubic (PCHIP, so zoom never overshoots). A
looping path wraps around through its first keyframe, smoothly (the splines are fitted over the
keyframes repeated on both sides).

Generated paths (as gsplat's ``--render_traj_path``): ``orbit`` is an ellipse around the point
the cameras look at, in the plane perpendicular to the cameras' mean up direction, at their
median height; ``spiral`` is the LLFF spiral around the mean camera (two turns, moving back and
forth along the view axis); ``interp`` passes through the input cameras in their order.

The file format is nerfstudio's ``camera_path.json`` (what its viewer's "Save camera path"
writes and ``ns-render camera-path`` reads): ``render_width``/``render_height``, ``fps``,
``seconds``, ``is_cycle``, ``keyframes`` (``matrix``, ``fov``, ``aspect``) and the dense
``camera_path`` list (``camera_to_world``, ``fov``, ``aspect``); matrices are camera-to-world
in OpenGL camera axes (x right, y up, z back), 16 numbers row by row, fields of view vertical in
degrees. Positions are in the model's own world frame (splatview has no dataparser transform).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .camera import Camera, fov_to_focal, look_at
from .files import FileFormatError, atomic_write_text

__all__ = ["PATH_KINDS", "Keyframe", "CameraPath", "interpolate", "generate_path", "scene_up",
           "focus_point", "save_camera_path", "load_camera_path"]

PATH_KINDS = ("orbit", "spiral", "interp")
ORBIT_KEYFRAMES = 12            # keyframes on the ellipse (the spline through them is the orbit)
SPIRAL_TURNS, SPIRAL_KEYFRAMES_PER_TURN, SPIRAL_Z_RATE = 2, 8, 0.5   # LLFF's spiral
RADIUS_PERCENTILE = 90          # of the cameras' offsets: the path's radii (as gsplat and LLFF)
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])   # flips camera y and z (right-multiplied)


@dataclass(frozen=True, eq=False)
class Keyframe:
    """One camera pose on a path: ``world_to_camera`` (4x4 float64, OpenCV axes) and the
    vertical field of view ``fov_y`` in radians."""

    world_to_camera: torch.Tensor
    fov_y: float

    def __post_init__(self) -> None:
        matrix = torch.as_tensor(np.asarray(self.world_to_camera, dtype=np.float64)
                                 if not isinstance(self.world_to_camera, torch.Tensor)
                                 else self.world_to_camera.detach().cpu()).to(torch.float64).clone()
        if matrix.shape != (4, 4):
            raise ValueError(f"a keyframe pose must be 4x4, got shape {tuple(matrix.shape)}")
        if not 0.0 < float(self.fov_y) < math.pi:
            raise ValueError(f"a keyframe field of view must be in (0, 180) degrees, got {math.degrees(self.fov_y):g}")
        object.__setattr__(self, "world_to_camera", matrix)
        object.__setattr__(self, "fov_y", float(self.fov_y))

    @classmethod
    def from_camera(cls, camera: Camera) -> "Keyframe":
        return cls(camera.world_to_camera, camera.fov_y)

    @property
    def center(self) -> torch.Tensor:
        """Camera centre in world coordinates, float64 [3]."""
        return -self.world_to_camera[:3, :3].T @ self.world_to_camera[:3, 3]

    def camera(self, width: int, height: int) -> Camera:
        """A centred pinhole camera of this pose at ``width`` x ``height`` (square pixels)."""
        focal = fov_to_focal(self.fov_y, height)
        return Camera(width, height, focal, focal, width / 2.0, height / 2.0, self.world_to_camera)


@dataclass
class CameraPath:
    """Keyframes and how to play them.

    Attributes:
        keyframes: at least one.
        seconds, fps: duration and frame rate; ``frame_count()`` is ``round(seconds * fps)``.
        loop: the path returns smoothly to its first keyframe (nerfstudio's ``is_cycle``).
        size: the render size (width, height) recorded with the path, or None.
        recorded_frames: the dense frame list read from a file (nerfstudio's ``camera_path``),
            which renderers use as-is unless the timing is changed; None for paths made here.
    """

    keyframes: list[Keyframe]
    seconds: float = 4.0
    fps: float = 30.0
    loop: bool = False
    size: tuple[int, int] | None = None
    recorded_frames: list[Keyframe] | None = field(default=None, repr=False)

    def frame_count(self) -> int:
        return max(1, round(self.seconds * self.fps))

    def sample(self, count: int | None = None) -> list[Keyframe]:
        """``count`` frames (default ``frame_count()``) evenly spaced in time: the first at the
        first keyframe and, unless the path loops, the last at the last keyframe."""
        count = self.frame_count() if count is None else count
        if count <= 1:
            fractions = np.zeros(max(count, 0))
        elif self.loop:
            fractions = np.arange(count) / count
        else:
            fractions = np.arange(count) / (count - 1)
        return interpolate(self.keyframes, fractions, self.loop)

    def at(self, fraction: float) -> Keyframe:
        """The pose a ``fraction`` (0..1) of the way through the path."""
        return interpolate(self.keyframes, [min(max(float(fraction), 0.0), 1.0)], self.loop)[0]


def interpolate(keyframes: Sequence[Keyframe], fractions: Sequence[float], loop: bool = False) -> list[Keyframe]:
    """Poses at ``fractions`` (0..1) of the way through ``keyframes`` (see the module docstring)."""
    from scipy.interpolate import CubicSpline, PchipInterpolator  # noqa: PLC0415 - scipy only for paths
    from scipy.spatial.transform import Rotation, RotationSpline  # noqa: PLC0415

    if not keyframes:
        raise ValueError("a camera path needs at least one keyframe")
    fractions = np.asarray(fractions, dtype=np.float64)
    count = len(keyframes)
    if count == 1:
        return [keyframes[0]] * len(fractions)
    if loop:
        pad = min(count, 3)
        knots = np.arange(-pad, count + pad)
        take, span = knots % count, count
    else:
        knots = np.arange(count)
        take, span = knots, count - 1
    centres = np.stack([k.center.numpy() for k in keyframes])[take]
    rotations = Rotation.from_matrix(np.stack([k.world_to_camera[:3, :3].numpy().T for k in keyframes])[take])
    fovs = np.array([k.fov_y for k in keyframes])[take]
    u = fractions * span
    positions = CubicSpline(knots, centres, bc_type="natural")(u)
    camera_to_world = RotationSpline(knots.astype(np.float64), rotations)(u).as_matrix()
    fov_values = PchipInterpolator(knots, fovs)(u)
    frames = []
    for position, rotation, fov in zip(positions, camera_to_world, fov_values):
        pose = np.eye(4)
        pose[:3, :3] = rotation.T
        pose[:3, 3] = -rotation.T @ position
        frames.append(Keyframe(torch.from_numpy(pose), float(fov)))
    return frames


# ----- paths from a capture's cameras --------------------------------------------------------------
def _centres(cameras: Sequence[Camera]) -> np.ndarray:
    return np.stack([camera.center.numpy() for camera in cameras])


def _forwards(cameras: Sequence[Camera]) -> np.ndarray:
    """Unit viewing directions (camera +z) in world coordinates."""
    return np.stack([camera.world_to_camera[2, :3].numpy() for camera in cameras])


def scene_up(cameras: Sequence[Camera]) -> np.ndarray:
    """The capture's up direction, unit length: the direction most nearly perpendicular to all the
    cameras' right axes (people hold cameras level), on the side of their mean up direction
    (camera -y); where the right axes do not pin it down (all cameras facing one way), the mean up
    made perpendicular to them. World -y (COLMAP's and graphdeco's convention) when there are no
    cameras or their ups cancel out."""
    if not cameras:
        return np.array([0.0, -1.0, 0.0])
    rights = np.stack([camera.world_to_camera[0, :3].numpy() for camera in cameras])
    mean_up = -np.stack([camera.world_to_camera[1, :3].numpy() for camera in cameras]).mean(axis=0)
    if np.linalg.norm(mean_up) < 1e-3:
        return np.array([0.0, -1.0, 0.0])
    values, vectors = np.linalg.eigh(rights.T @ rights)
    if values[1] > 0.05 * values[2]:
        up = vectors[:, 0]
    else:
        dominant = vectors[:, 2]
        up = mean_up - (mean_up @ dominant) * dominant
    up = up / np.linalg.norm(up)
    return up if up @ mean_up >= 0 else -up


def focus_point(cameras: Sequence[Camera], fallback: Sequence[float] | None = None) -> np.ndarray:
    """The point nearest to all the cameras' optical axes (least squares), which an
    object-centred capture looks at. When the axes are (nearly) parallel or the point lies behind
    the cameras, ``fallback`` if given, else a point ahead of the mean camera."""
    centres, forwards = _centres(cameras), _forwards(cameras)
    projectors = np.eye(3)[None] - forwards[:, :, None] * forwards[:, None, :]
    system, rhs = projectors.sum(axis=0), np.einsum("nij,nj->i", projectors, centres)
    eigenvalues = np.linalg.eigvalsh(system)
    if len(cameras) >= 2 and eigenvalues[0] > 1e-3 * eigenvalues[-1]:
        point = np.linalg.solve(system, rhs)
        if np.median(np.einsum("ni,ni->n", point - centres, forwards)) > 0:
            return point
    if fallback is not None:
        return np.asarray(fallback, dtype=np.float64)
    spread = float(np.linalg.norm(centres - centres.mean(axis=0), axis=1).max(initial=0.0))
    return centres.mean(axis=0) + forwards.mean(axis=0) * max(3.0 * spread, 1.0)


def _median_fov(cameras: Sequence[Camera]) -> float:
    return float(np.median([camera.fov_y for camera in cameras]))


def _orbit(cameras: Sequence[Camera], target: Sequence[float] | None) -> list[Keyframe]:
    up = scene_up(cameras)
    focus = focus_point(cameras, target)
    offsets = _centres(cameras) - focus
    heights = offsets @ up
    planar = offsets - heights[:, None] * up
    # The ellipse's axes: the principal directions of the cameras' offsets within the plane.
    _, _, axes = np.linalg.svd(planar, full_matrices=True)
    first = axes[0] - (axes[0] @ up) * up
    if np.linalg.norm(first) < 1e-6:   # no planar spread at all: any direction in the plane
        first = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    first = first / np.linalg.norm(first)
    second = np.cross(up, first)
    radii = np.percentile(np.abs(planar @ np.stack([first, second]).T), RADIUS_PERCENTILE, axis=0)
    if radii.max() < 1e-9:   # one camera, or all above the focus: orbit at their distance
        radii[:] = max(float(np.linalg.norm(offsets, axis=1).max()), 1e-3)
    radii = np.maximum(radii, 0.05 * radii.max())
    start = math.atan2(planar[0] @ second / radii[1], planar[0] @ first / radii[0])
    height, fov = float(np.median(heights)), _median_fov(cameras)
    keyframes = []
    for k in range(ORBIT_KEYFRAMES):
        angle = start + 2.0 * math.pi * k / ORBIT_KEYFRAMES
        eye = focus + height * up + radii[0] * math.cos(angle) * first + radii[1] * math.sin(angle) * second
        keyframes.append(Keyframe(look_at(eye.tolist(), focus.tolist(), up.tolist()), fov))
    return keyframes


def _spiral(cameras: Sequence[Camera], target: Sequence[float] | None) -> list[Keyframe]:
    up = scene_up(cameras)
    centres = _centres(cameras)
    centre = centres.mean(axis=0)
    forward = _forwards(cameras).mean(axis=0)
    forward = forward / max(np.linalg.norm(forward), 1e-12)
    if abs(forward @ up) > 0.999:   # looking straight along the up axis: no horizon to keep
        up = np.cross(forward, [1.0, 0.0, 0.0] if abs(forward[0]) < 0.9 else [0.0, 1.0, 0.0])
    mean_pose = look_at(centre.tolist(), (centre + forward).tolist(), up.tolist()).numpy()
    rotation = mean_pose[:3, :3]    # rows: the mean camera's right, down and forward axes
    focal = float((focus_point(cameras, target) - centre) @ forward)
    radii = np.percentile(np.abs((centres - centre) @ rotation.T), RADIUS_PERCENTILE, axis=0)
    if focal <= 1e-6:
        focal = max(3.0 * float(radii.max()), 1.0)
    if radii.max() < 1e-9:
        radii[:] = 0.1 * focal
    look_target = (centre + forward * focal).tolist()
    fov, count = _median_fov(cameras), SPIRAL_TURNS * SPIRAL_KEYFRAMES_PER_TURN
    keyframes = []
    for k in range(count):
        angle = 2.0 * math.pi * SPIRAL_TURNS * k / count
        offset = np.array([math.cos(angle), -math.sin(angle), -math.sin(angle * SPIRAL_Z_RATE)]) * radii
        eye = centre + rotation.T @ offset
        keyframes.append(Keyframe(look_at(eye.tolist(), look_target, up.tolist()), fov))
    return keyframes


def generate_path(kind: str, cameras: Sequence[Camera], seconds: float = 8.0, fps: float = 30.0,
                  target: Sequence[float] | None = None) -> CameraPath:
    """A path of ``kind`` (``PATH_KINDS``) from a capture's ``cameras`` (see the module
    docstring). ``target``: the point to turn around when the cameras do not tell (e.g. one
    camera, or parallel views); ignored for ``interp``."""
    if kind not in PATH_KINDS:
        raise ValueError(f"camera path kind must be one of {PATH_KINDS}, got {kind!r}")
    if not cameras:
        raise ValueError(f"a{'n' if kind[0] in 'aeiou' else ''} {kind} path needs input cameras")
    size = (cameras[0].width, cameras[0].height)
    if kind == "interp":
        return CameraPath([Keyframe.from_camera(c) for c in cameras], seconds, fps, loop=False, size=size)
    keyframes = _orbit(cameras, target) if kind == "orbit" else _spiral(cameras, target)
    return CameraPath(keyframes, seconds, fps, loop=True, size=size)


# ----- nerfstudio's camera_path.json ------------------------------------------------------------------
def _camera_to_world_gl(world_to_camera: torch.Tensor) -> list[float]:
    """The 16 numbers (row by row) of the camera-to-world matrix in OpenGL camera axes."""
    matrix = np.linalg.inv(world_to_camera.numpy()) @ OPENCV_TO_OPENGL
    return [float(v) for v in matrix.reshape(-1)]


def _world_to_camera_cv(numbers: Any, column_major: bool) -> torch.Tensor:
    matrix = np.asarray(numbers, dtype=np.float64).reshape(4, 4)
    if column_major:
        matrix = matrix.T
    if not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix[:3, :3])) < 1e-9:
        raise ValueError("not an invertible pose matrix")
    return torch.from_numpy(np.linalg.inv(matrix @ OPENCV_TO_OPENGL))


def _frame_json(frame: Keyframe, aspect: float, key: str) -> dict[str, Any]:
    return {key: _camera_to_world_gl(frame.world_to_camera), "fov": math.degrees(frame.fov_y), "aspect": aspect}


def save_camera_path(file: str | os.PathLike, path: CameraPath, width: int, height: int) -> None:
    """Write ``path`` as nerfstudio's camera_path.json (atomically), with its keyframes and the
    ``frame_count()`` frames a renderer plays, for a ``width`` x ``height`` render."""
    aspect = width / height
    document = {
        "camera_type": "perspective",
        "render_width": int(width), "render_height": int(height),
        "fps": path.fps, "seconds": path.seconds, "is_cycle": bool(path.loop),
        "keyframes": [_frame_json(k, aspect, "matrix") for k in path.keyframes],
        "camera_path": [_frame_json(f, aspect, "camera_to_world") for f in path.sample()],
    }
    atomic_write_text(file, json.dumps(document, indent=1) + "\n")


def _read_frames(file: Path, entries: Any, key: str, what: str) -> list[Keyframe]:
    if not isinstance(entries, list):
        raise FileFormatError(file, f"'{what}' must be a list")
    frames = []
    for index, entry in enumerate(entries):
        try:
            numbers = entry[key]
            column_major = isinstance(numbers, str)   # nerfstudio's old three.js viewer: a string, column-major
            if column_major:
                numbers = json.loads(numbers)
            frames.append(Keyframe(_world_to_camera_cv(numbers, column_major), math.radians(float(entry["fov"]))))
        except (KeyError, TypeError, ValueError) as error:
            problem = f"missing {error}" if isinstance(error, KeyError) else str(error)
            raise FileFormatError(file, f"{what}[{index}]: {problem}") from None
    return frames


def load_camera_path(file: str | os.PathLike) -> CameraPath:
    """Read a camera_path.json (ours or nerfstudio's). Keyframes come from ``keyframes``, or
    from the ``camera_path`` frames when it has none; those frames are kept as
    ``recorded_frames``. Raises ``FileNotFoundError`` or ``FileFormatError`` naming the file."""
    file = Path(file)
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{file}: no such camera path file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FileFormatError(file, f"not a JSON camera path ({error})") from None
    if not isinstance(document, dict):
        raise FileFormatError(file, "not a camera path (expected a JSON object)")
    if document.get("camera_type", "perspective") != "perspective":
        raise FileFormatError(file, f"camera_type {document['camera_type']!r} is not supported (only perspective)")
    keyframes = _read_frames(file, document.get("keyframes") or [], "matrix", "keyframes")
    recorded = _read_frames(file, document["camera_path"], "camera_to_world", "camera_path") \
        if "camera_path" in document else None
    if not keyframes and not recorded:
        raise FileFormatError(file, "has neither keyframes nor camera_path frames")
    try:
        fps = float(document.get("fps", 30.0))
        seconds = float(document.get("seconds", len(recorded) / fps if recorded else 4.0))
        size = (int(document["render_width"]), int(document["render_height"])) \
            if "render_width" in document and "render_height" in document else None
    except (TypeError, ValueError) as error:
        raise FileFormatError(file, f"bad fps, seconds or render size ({error})") from None
    if not (fps > 0 and seconds > 0) or (size is not None and min(size) <= 0):
        raise FileFormatError(file, "fps, seconds and the render size must be positive")
    return CameraPath(keyframes or list(recorded), seconds, fps, bool(document.get("is_cycle", False)),
                      size, recorded or None)
