"""Navigation: SIBR's key presses move the camera as specified, snapping is exact, and each mouse
mode (fps look-around, orbit, trackball, pan, wheel, picking a pivot) moves it as documented."""

import math

import pytest
import torch

from rasterizer import Camera, look_at
from viewer.navigation.controls import (MAX_PITCH, closest_camera, dolly, fps_step, level, look_around,
                                       move_forward, orbit, pan, pick_point, rotation_about, trackball)

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


def test_trackball_keeps_the_target_in_place_and_the_distance():
    target = torch.tensor([0.2, 0.1, 0.3], dtype=torch.float64)
    before = START[:3, :3] @ target + START[:3, 3]
    pose = trackball(START, target, yaw=0.4, pitch=-0.2)
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


UP = torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64)   # START's world up (COLMAP's -y)


def elevation(pose, up=UP) -> float:
    """Angle of the view direction above the horizon, radians."""
    return math.asin(float(axes(pose)[2] @ up))


def roll_free(pose, up=UP) -> bool:
    """The camera's right axis is horizontal: ``up`` stays up on screen."""
    return abs(float(axes(pose)[0] @ up)) < 1e-9


def test_orbit_turns_around_the_pivot_with_up_kept_up():
    pivot = torch.tensor([0.2, 0.1, 0.3], dtype=torch.float64)
    start = look_at(centre(START).tolist(), pivot.tolist(), up=UP.tolist())
    distance = float((centre(start) - pivot).norm())
    right = axes(start)[0]
    pose = orbit(start, pivot, UP, yaw=0.3, pitch=0.0)
    assert float((centre(pose) - pivot).norm()) == pytest.approx(distance)
    assert float((centre(pose) - centre(start)) @ right) > 0          # yaw > 0: the camera moves right
    assert float((centre(pose) - pivot) @ UP) == pytest.approx(float((centre(start) - pivot) @ UP))  # same height
    x, y, z = (pose[:3, :3] @ pivot + pose[:3, 3]).tolist()
    assert abs(x) < 1e-9 and abs(y) < 1e-9 and z > 0                   # still looking at the pivot
    risen = orbit(start, pivot, UP, yaw=0.0, pitch=0.2)
    assert float((centre(risen) - centre(start)) @ UP) > 0             # pitch > 0: the camera rises...
    assert elevation(risen) == pytest.approx(elevation(start) - 0.2)   # ...and looks down by as much
    assert roll_free(pose) and roll_free(risen)
    over = start
    for _ in range(20):                                                # never over the pole
        over = orbit(over, pivot, UP, yaw=0.1, pitch=0.3)
    assert elevation(over) == pytest.approx(-MAX_PITCH) and roll_free(over)
    assert float((centre(over) - pivot).norm()) == pytest.approx(distance)


def test_look_around_turns_in_place_and_stays_level():
    start = level(START, UP)
    pose = look_around(start, UP, yaw=0.25, pitch=0.0)
    torch.testing.assert_close(centre(pose), centre(start))
    # yaw > 0 looks right: the view turns by 0.25 about the vertical
    assert float(axes(pose)[2] @ axes(start)[0]) == pytest.approx(math.cos(elevation(start)) * math.sin(0.25))
    up = look_around(start, UP, yaw=0.0, pitch=0.2)
    assert elevation(up) == pytest.approx(elevation(start) + 0.2)                    # pitch > 0 looks up
    assert roll_free(pose) and roll_free(up)
    for _ in range(20):
        up = look_around(up, UP, yaw=0.0, pitch=0.3)
    assert elevation(up) == pytest.approx(MAX_PITCH)


def test_pan_forward_and_level():
    right, down, forward = axes(START)
    torch.testing.assert_close(centre(pan(START, right=0.5, down=-0.25)) - centre(START), 0.5 * right - 0.25 * down)
    torch.testing.assert_close(centre(move_forward(START, 2.0)) - centre(START), 2.0 * forward)
    rolled = fps_step(START, ["O"], seconds=1.0, speed=0.0, rotation_speed=0.4)
    assert not roll_free(rolled)
    levelled = level(rolled, UP)
    assert roll_free(levelled) and float(axes(levelled)[1] @ UP) < 0     # up is up on screen again
    torch.testing.assert_close(axes(levelled)[2], axes(rolled)[2])       # same view direction
    torch.testing.assert_close(centre(levelled), centre(rolled))


def test_pick_point_finds_the_nearest_surface_under_the_cursor():
    camera = Camera(64, 48, 50.0, 50.0, 32.0, 24.0, look_at([0.0, 0.0, -4.0], [0, 0, 0], up=(0, -1, 0)))
    # a wall of points at z = 0, a few behind it at z = 2 and one stray far to the side
    grid = torch.stack(torch.meshgrid(torch.linspace(-1, 1, 41), torch.linspace(-1, 1, 41), indexing="ij"), -1)
    wall = torch.cat([grid.reshape(-1, 2), torch.zeros(41 * 41, 1)], 1)
    behind = wall[::7] + torch.tensor([0.0, 0.0, 2.0])
    means = torch.cat([wall, behind, torch.tensor([[5.0, 5.0, -1.0]])])
    point = pick_point(means, camera, 32.0, 24.0)
    assert point is not None and float(point[2]) == pytest.approx(0.0, abs=0.05)   # on the wall, not behind it
    assert float(point[:2].norm()) < 0.1                                            # under the cursor
    assert pick_point(means, camera, 2.0, 2.0) is not None                          # the radius grows
    assert pick_point(torch.tensor([[0.0, 0.0, -10.0]]), camera, 32.0, 24.0) is None  # behind the camera
