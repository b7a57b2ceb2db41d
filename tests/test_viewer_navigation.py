"""SIBR-style navigation: key presses move the camera as specified, snapping is exact."""

import math

import pytest
import torch

from rasterizer import Camera, look_at
from viewer.navigation.controls import closest_camera, dolly, fps_step, orbit, rotation_about

START = look_at([1.0, -0.5, -4.0], [0.0, 0.0, 0.0], up=(0.0, -1.0, 0.0))


def centre(pose):
    return -pose[:3, :3].T @ pose[:3, 3]


def axes(pose):
    """Camera right, down, forward in world coordinates (rows of R)."""
    return pose[:3, :3][0], pose[:3, :3][1], pose[:3, :3][2]


@pytest.mark.parametrize("key, axis, sign", [("W", 2, 1), ("S", 2, -1), ("D", 0, 1), ("A", 0, -1),
                                             ("Q", 1, 1), ("E", 1, -1)])
def test_translation_keys_move_along_the_camera_axes(key, axis, sign):
    pose = fps_step(START, [key], seconds=0.5, speed=2.0, rotation_speed=1.0)
    moved = centre(pose) - centre(START)
    torch.testing.assert_close(moved, sign * 1.0 * axes(START)[axis])  # 0.5 s at 2 units/s
    torch.testing.assert_close(pose[:3, :3], START[:3, :3])  # no rotation


@pytest.mark.parametrize("key, expected", [
    ("I", ("forward", "up")), ("K", ("forward", "down")),
    ("L", ("forward", "right")), ("J", ("forward", "left")),
    ("O", ("right", "down")), ("U", ("right", "up")),
])
def test_rotation_keys_turn_the_view_as_named(key, expected):
    angle = 0.3
    pose = fps_step(START, [key], seconds=1.0, speed=1.0, rotation_speed=angle)
    torch.testing.assert_close(centre(pose), centre(START))  # turning keeps the camera in place
    right, down, forward = axes(START)
    new = dict(zip(("right", "down", "forward"), axes(pose)))
    towards = {"up": -down, "down": down, "right": right, "left": -right}[expected[1]]
    turned = new[expected[0]]
    # The named axis tilted by exactly `angle` towards the named direction.
    assert float(turned @ towards) == pytest.approx(math.sin(angle), abs=1e-9)
    assert torch.allclose(pose[:3, :3] @ pose[:3, :3].T, torch.eye(3, dtype=torch.float64), atol=1e-12)


def test_keys_combine_and_ignore_unknown_ones():
    both = fps_step(START, ["w", "d", "F1"], seconds=1.0, speed=1.0, rotation_speed=1.0)
    right, _, forward = axes(START)
    torch.testing.assert_close(centre(both) - centre(START), forward + right)


def test_orbit_keeps_the_target_in_place_and_the_distance():
    target = torch.tensor([0.2, 0.1, 0.3], dtype=torch.float64)
    before = START[:3, :3] @ target + START[:3, 3]
    pose = orbit(START, target, yaw=0.4, pitch=-0.2)
    after = pose[:3, :3] @ target + pose[:3, 3]
    torch.testing.assert_close(after, before)
    assert float((centre(pose) - target).norm()) == pytest.approx(float((centre(START) - target).norm()))
    assert not torch.allclose(centre(pose), centre(START))


def test_dolly_moves_towards_the_target():
    target = torch.zeros(3, dtype=torch.float64)
    pose = dolly(START, target, factor=0.5)
    assert float(centre(pose).norm()) == pytest.approx(0.5 * float(centre(START).norm()))
    torch.testing.assert_close(pose[:3, :3], START[:3, :3])


def test_snap_to_closest_and_exact_pose():
    cameras = [Camera(64, 48, 50, 50, 32, 24, look_at([x, 0.0, -3.0], [0, 0, 0]), image_name=f"c{x}")
               for x in (-2.0, 0.0, 2.0)]
    pose = fps_step(cameras[2].world_to_camera, ["A"], seconds=0.1, speed=1.0, rotation_speed=0.0)
    index = closest_camera(pose, cameras)
    assert index == 2
    torch.testing.assert_close(cameras[index].world_to_camera, look_at([2.0, 0.0, -3.0], [0, 0, 0]))
    with pytest.raises(ValueError, match="no input cameras"):
        closest_camera(pose, [])


def test_rotation_about_is_a_rotation():
    matrix = rotation_about((1.0, 2.0, 3.0), 0.7)
    torch.testing.assert_close(matrix @ matrix.T, torch.eye(3, dtype=torch.float64))
    assert float(torch.linalg.det(matrix)) == pytest.approx(1.0)
