"""The viewer-state object: initial view, snapping, settings rules."""

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
