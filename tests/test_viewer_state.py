"""The viewer-state object: initial view, snapping, settings rules, navigation scaled to the scene."""

import math

import pytest
import torch

from rasterizer import Camera, look_at
from viewer.state import ViewerState

CAMERAS = [Camera(1600, 1000, 1400, 1400, 800, 500, look_at([x, 0.0, -3.0], [0, 0, 0]), image_name=f"c{i}")
           for i, x in enumerate((-2.0, 0.0, 2.0))]


def test_starts_at_the_first_input_camera_with_sibr_size():
    state = ViewerState.from_input_camera(CAMERAS)
    assert (state.width, state.height) == (1200, 750)  # min(1200, width), aspect kept
    torch.testing.assert_close(state.world_to_camera, CAMERAS[0].world_to_camera)
    assert state.fov_y == pytest.approx(CAMERAS[0].fov_y)
    camera = state.camera()
    assert camera.fov_y == pytest.approx(CAMERAS[0].fov_y)
    assert (camera.cx, camera.cy) == (600.0, 375.0)


def test_snapping_gives_the_exact_input_pose():
    state = ViewerState.from_input_camera(CAMERAS)
    state.set_pose(look_at([-0.4, 0.2, -2.7], [0, 0, 0]))  # nearest to camera 1
    assert state.snap_to_closest() == 1
    assert torch.equal(state.world_to_camera, CAMERAS[1].world_to_camera)
    assert state.step_camera(+1) == 2 and state.step_camera(+1) == 0 and state.step_camera(-1) == 2
    with pytest.raises(IndexError, match="input camera 7"):
        state.snap_to(7)


def test_moves_bump_the_version_only_when_the_pose_changes():
    state = ViewerState.from_input_camera(CAMERAS)
    version = state.version
    assert not state.move([], seconds=0.1) and state.version == version
    assert state.move(["W"], seconds=0.1) and state.version == version + 1


def test_settings_are_checked_and_clamped():
    state = ViewerState.from_input_camera(CAMERAS, max_sh_degree=2)
    state.update(scaling_modifier=5.0, sh_degree=9, background=(2.0, -1.0, 0.5), render_mode="depth")
    assert state.scaling_modifier == 1.0 and state.sh_degree == 2
    assert state.background == (1.0, 0.0, 0.5) and state.render_mode == "depth"
    state.update(scaling_modifier=0.0)
    assert state.scaling_modifier == 0.001
    with pytest.raises(ValueError, match="render mode"):
        state.update(render_mode="wireframe")
    with pytest.raises(ValueError, match="navigation"):
        state.update(navigation="fly")
    with pytest.raises(AttributeError, match="no setting"):
        state.update(world_to_camera=torch.eye(4))


def test_only_changes_the_image_depends_on_ask_for_a_new_render():
    state = ViewerState.from_input_camera(CAMERAS)
    version = state.version
    state.update(navigation="orbit", speed=2.0, turn_speed=1.0, screenshot_folder="/tmp", vsync=True)
    assert state.version == version   # nothing to redraw: a slow render does not freeze the panel
    state.update(scaling_modifier=0.5)
    assert state.version == version + 1
    state.update(scaling_modifier=0.5)   # the same value again: no change
    assert state.version == version + 1
    assert state.resize(640, 400) and state.version == version + 2 and not state.resize(640, 400)


def test_key_speeds_follow_the_scene_and_the_field_of_view():
    """A narrow lens turns slowly: half a field of view per second by default."""
    narrow = Camera(1000, 660, 2000.0, 2000.0, 500, 330, look_at([0.0, 0.0, -30.0], [0, 0, 0]))
    state = ViewerState.from_input_camera([narrow])
    state.set_scene((0.0, 0.0, 0.0), 30.0, (0.0, -1.0, 0.0))
    assert math.degrees(state.fov_y) == pytest.approx(18.74, abs=0.01)
    before = state.world_to_camera[2, :3].clone()
    state.move(["J"], seconds=0.3)
    turned = math.degrees(math.acos(float(state.world_to_camera[2, :3] @ before)))
    assert turned == pytest.approx(0.5 * 0.3 * 18.74, abs=0.01)   # 2.8 degrees, the statuette stays in view
    assert state.move_speed == pytest.approx(15.0)                  # half the scene scale per second
    start = state.world_to_camera.clone()
    state.move(["W"], seconds=1.0)
    moved = -state.world_to_camera[:3, :3].T @ state.world_to_camera[:3, 3] + start[:3, :3].T @ start[:3, 3]
    assert float(moved.norm()) == pytest.approx(15.0)
    state.update(turn_speed=99.0, speed=0.0)
    assert (state.turn_speed, state.speed) == (3.0, 0.01)           # clamped to the sliders' ranges


def test_up_axis_levels_the_view_and_navigation_cycles():
    state = ViewerState.from_input_camera(CAMERAS)
    state.set_scene((0.0, 0.0, 0.0), 3.0, (0.0, -1.0, 0.0))
    forward = state.world_to_camera[2, :3].clone()
    state.update(up="+y")   # e.g. a y-up PLY that opened upside down
    torch.testing.assert_close(state.up_vector(), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(state.world_to_camera[2, :3], forward)   # same view direction...
    assert float(state.world_to_camera[1, :3] @ state.up_vector()) < -0.99   # ...now +y is up on screen
    with pytest.raises(ValueError, match="up must be one of"):
        state.update(up="sideways")
    assert [state.next_navigation() for _ in range(3)] == ["orbit", "trackball", "fps"]


def test_orbit_mode_keys_carry_the_pivot_along():
    state = ViewerState.from_input_camera(CAMERAS, navigation="orbit")
    state.set_scene((0.0, 0.0, 0.0), 3.0, (0.0, -1.0, 0.0))
    state.move(["D"], seconds=1.0)
    assert torch.tensor(state.pivot) @ CAMERAS[0].world_to_camera[0, :3].float() == pytest.approx(1.5)


def test_camera_index_follows_snapping():
    state = ViewerState.from_input_camera(CAMERAS, 1)
    assert state.camera_index == 1
    state.step_camera(+1)
    assert state.camera_index == 2
    state.set_pose(look_at([-1.9, 0.0, -3.0], [0, 0, 0]))
    state.snap_to_closest()
    assert state.camera_index == 0
