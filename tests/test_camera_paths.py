"""Camera paths (rasterizer/camera_paths.py): interpolation, generated paths, camera_path.json."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from rasterizer import Camera, look_at
from rasterizer.camera_paths import (CameraPath, Keyframe, focus_point, generate_path, interpolate,
                                     load_camera_path, save_camera_path, scene_up)
from rasterizer.files import FileFormatError


def ring_cameras(count: int = 8, up=(0.0, 1.0, 0.0), height: float = 1.0, radius: float = 3.0,
                 arc: float = 2 * math.pi) -> list[Camera]:
    """Cameras on a ring around the origin, looking at it, held level for ``up``."""
    up = np.asarray(up, dtype=np.float64)
    first = np.cross(up, [0.0, 0.0, 1.0]) if abs(up[2]) < 0.9 else np.cross(up, [1.0, 0.0, 0.0])
    first /= np.linalg.norm(first)
    second = np.cross(up, first)
    cameras = []
    for k in range(count):
        angle = arc * k / count
        eye = height * up + radius * (math.cos(angle) * first + math.sin(angle) * second)
        cameras.append(Camera.from_fov(64, 48, 1.0, 0.8, look_at(eye.tolist(), [0.0, 0.0, 0.0], up.tolist())))
    return cameras


def project(camera_pose: torch.Tensor, point) -> np.ndarray:
    """Camera coordinates of a world point."""
    p = camera_pose[:3, :3].numpy() @ np.asarray(point, dtype=np.float64) + camera_pose[:3, 3].numpy()
    return p


def test_interpolation_passes_through_keyframes_and_is_smooth():
    keyframes = [Keyframe.from_camera(c) for c in ring_cameras(5, arc=math.pi)]
    path = CameraPath(keyframes, seconds=4.0, fps=1.0)
    frames = path.sample(4 * 10 + 1)   # 10 frames per transition: keyframes at every 10th
    for k, keyframe in enumerate(keyframes):
        assert torch.allclose(frames[10 * k].world_to_camera, keyframe.world_to_camera, atol=1e-9)
    centres = np.stack([f.center.numpy() for f in frames])
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    # no jump: the camera moves at a steady pace through the keyframes (a half ring of radius 3)
    assert steps.max() < 1.6 * steps.mean() and steps.min() > 0.4 * steps.mean()
    # velocity is continuous at the keyframes: second differences stay small everywhere
    assert np.linalg.norm(np.diff(centres, 2, axis=0), axis=1).max() < 0.1 * steps.mean()
    # orientation changes smoothly too (angle between successive frames)
    angles = [torch.arccos(((a.world_to_camera[:3, :3] @ b.world_to_camera[:3, :3].T).trace() - 1) / 2).item()
              for a, b in zip(frames, frames[1:])]
    assert max(angles) < 1.6 * np.mean(angles)


def test_loop_closes_smoothly_and_fov_never_overshoots():
    cameras = ring_cameras(4)
    keyframes = [Keyframe(c.world_to_camera, fov) for c, fov in zip(cameras, (0.5, 0.5, 1.0, 1.0))]
    looped = CameraPath(keyframes, seconds=2.0, fps=20.0, loop=True)
    frames = looped.sample()
    assert len(frames) == 40
    end, start = looped.at(1.0), looped.at(0.0)
    assert torch.allclose(end.world_to_camera, start.world_to_camera, atol=1e-9)
    centres = np.stack([f.center.numpy() for f in frames + frames[:1]])
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert steps.max() < 1.3 * steps.min()   # the seam is no different from the rest
    fovs = [f.fov_y for f in CameraPath(keyframes, loop=False).sample(61)]
    assert min(fovs) >= 0.5 - 1e-12 and max(fovs) <= 1.0 + 1e-12   # PCHIP: monotone, no overshoot
    assert all(b >= a - 1e-12 for a, b in zip(fovs, fovs[1:]))


def test_single_keyframe_and_empty_paths():
    keyframe = Keyframe.from_camera(ring_cameras(1)[0])
    assert all(f is keyframe for f in CameraPath([keyframe], seconds=1, fps=5).sample())
    with pytest.raises(ValueError, match="at least one keyframe"):
        interpolate([], [0.0])
    with pytest.raises(ValueError, match="field of view"):
        Keyframe(torch.eye(4, dtype=torch.float64), 0.0)


@pytest.mark.parametrize("up", [(0.0, 1.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0)])
def test_scene_up_and_focus_from_a_ring(up):
    cameras = ring_cameras(6, up=up, arc=math.pi / 2)   # a quarter ring: the mean up alone would tilt
    assert scene_up(cameras) == pytest.approx(np.asarray(up), abs=1e-9)
    assert focus_point(cameras) == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)


def test_orbit_circles_the_focus_level_with_the_cameras():
    cameras = ring_cameras(8, up=(0.0, 0.0, 1.0), height=1.0, radius=3.0)
    path = generate_path("orbit", cameras, seconds=2.0, fps=15.0)
    assert path.loop and path.size == (64, 48) and path.frame_count() == 30
    for frame in path.sample():
        centre = frame.center.numpy()
        assert centre[2] == pytest.approx(1.0, abs=1e-6)                     # the cameras' height
        assert np.hypot(*centre[:2]) == pytest.approx(3.0, rel=0.05)          # their radius
        x, y, z = project(frame.world_to_camera, [0.0, 0.0, 0.0])
        assert z > 0 and abs(x / z) < 0.02 and abs(y / z) < 0.02              # looking at the focus
        assert frame.fov_y == pytest.approx(cameras[0].fov_y)
    # the first frame starts where the first camera is
    assert path.sample()[0].center.numpy() == pytest.approx(cameras[0].center.numpy(), abs=0.15)


def test_spiral_and_interp():
    cameras = ring_cameras(5, arc=0.6)   # a short arc, as a forward-facing capture
    spiral = generate_path("spiral", cameras, seconds=1.0, fps=24.0)
    mean_centre = np.mean([c.center.numpy() for c in cameras], axis=0)
    for frame in spiral.sample():
        assert np.linalg.norm(frame.center.numpy() - mean_centre) < 1.0   # near the cameras
        x, y, z = project(frame.world_to_camera, [0.0, 0.0, 0.0])
        assert z > 0 and abs(x / z) < 0.05 and abs(y / z) < 0.05          # looking at the focus
    interp = generate_path("interp", cameras, seconds=4.0, fps=2.0)
    frames = interp.sample(len(cameras))
    for frame, camera in zip(frames, cameras):
        assert torch.allclose(frame.world_to_camera, camera.world_to_camera, atol=1e-9)
    with pytest.raises(ValueError, match="one of"):
        generate_path("zigzag", cameras)
    with pytest.raises(ValueError, match="needs input cameras"):
        generate_path("orbit", [])


def test_json_round_trip_in_nerfstudio_conventions(tmp_path):
    cameras = ring_cameras(3)
    path = CameraPath([Keyframe.from_camera(c) for c in cameras], seconds=1.5, fps=10.0, loop=True)
    file = tmp_path / "camera_path.json"
    save_camera_path(file, path, 320, 240)
    document = json.loads(file.read_text())
    assert (document["render_width"], document["render_height"], document["fps"], document["seconds"],
            document["is_cycle"], document["camera_type"]) == (320, 240, 10.0, 1.5, True, "perspective")
    assert len(document["keyframes"]) == 3 and len(document["camera_path"]) == 15
    # nerfstudio: camera-to-world, OpenGL axes (z points back, away from what the camera sees)
    c2w = np.asarray(document["keyframes"][0]["matrix"]).reshape(4, 4)
    assert c2w[:3, 3] == pytest.approx(cameras[0].center.numpy())
    forward = cameras[0].world_to_camera[2, :3].numpy()
    assert c2w[:3, 2] == pytest.approx(-forward)
    assert document["keyframes"][0]["fov"] == pytest.approx(math.degrees(cameras[0].fov_y))
    assert document["keyframes"][0]["aspect"] == pytest.approx(320 / 240)

    loaded = load_camera_path(file)
    assert (loaded.seconds, loaded.fps, loaded.loop, loaded.size) == (1.5, 10.0, True, (320, 240))
    for a, b in zip(loaded.keyframes, path.keyframes):
        assert torch.allclose(a.world_to_camera, b.world_to_camera, atol=1e-9) and a.fov_y == pytest.approx(b.fov_y)
    for a, b in zip(loaded.recorded_frames, path.sample()):
        assert torch.allclose(a.world_to_camera, b.world_to_camera, atol=1e-9)


def test_reads_nerfstudio_files_without_keyframes_and_old_string_matrices(tmp_path):
    camera = ring_cameras(1)[0]
    c2w_gl = np.linalg.inv(camera.world_to_camera.numpy()) @ np.diag([1.0, -1.0, -1.0, 1.0])
    dense = {"render_width": 64, "render_height": 48, "fps": 24,
             "camera_path": [{"camera_to_world": c2w_gl.reshape(-1).tolist(), "fov": 50.0, "aspect": 1.33}] * 3}
    file = tmp_path / "dense.json"
    file.write_text(json.dumps(dense))
    loaded = load_camera_path(file)
    assert len(loaded.keyframes) == 3 and loaded.seconds == pytest.approx(3 / 24)
    assert torch.allclose(loaded.keyframes[0].world_to_camera, camera.world_to_camera, atol=1e-9)
    assert loaded.keyframes[0].fov_y == pytest.approx(math.radians(50.0))
    # nerfstudio's first viewer wrote keyframe matrices as a string of a column-major list
    old = {"keyframes": [{"matrix": json.dumps(c2w_gl.T.reshape(-1).tolist()), "fov": 40}], "camera_path": []}
    file.write_text(json.dumps(old))
    assert torch.allclose(load_camera_path(file).keyframes[0].world_to_camera, camera.world_to_camera, atol=1e-9)


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not a JSON camera path"),
    ("[1, 2]", "expected a JSON object"),
    ('{"keyframes": []}', "neither keyframes nor camera_path"),
    ('{"keyframes": [{"matrix": [1, 0, 0, 0]}]}', "keyframes[0]"),
    ('{"keyframes": [{"matrix": [0,0,0,0, 0,0,0,0, 0,0,0,0, 0,0,0,1], "fov": 50}]}', "invertible"),
    ('{"camera_type": "fisheye", "keyframes": []}', "fisheye"),
    ('{"fps": -3, "camera_path": [{"camera_to_world": [1,0,0,0, 0,1,0,0, 0,0,1,0, 0,0,0,1], "fov": 50}]}',
     "must be positive"),
])
def test_bad_files_name_the_file_and_the_problem(tmp_path, content, problem):
    file = tmp_path / "bad.json"
    file.write_text(content)
    with pytest.raises(FileFormatError) as caught:
        load_camera_path(file)
    assert str(file) in str(caught.value) and problem in str(caught.value)
    with pytest.raises(FileNotFoundError, match="no such camera path"):
        load_camera_path(tmp_path / "missing.json")
