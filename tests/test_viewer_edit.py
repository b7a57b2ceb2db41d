"""Editing in the viewer: the controller (no GL), the crop box's mouse arithmetic, its GL drawing,
the Edit panel section under Xvfb and the whole splat-view window with editing attached."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from rasterizer import Camera, look_at, read_gaussians, write_ply
from rasterizer.model_folder import point_cloud_path, write_cameras_json, write_cfg_args
from trainer.edit import CropBox, open_model
from viewer.edit.crop_box import moved_box, scaled_box, turned_box
from viewer.edit.panel import HIGHLIGHT_RGB, EditController, edit_source
from viewer_support import child_state

from test_edit import PLANTED, cameras_above, plane_model

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def model_folder(tmp_path) -> Path:
    folder = tmp_path / "scan"
    write_ply(point_cloud_path(folder, 300), plane_model(list(PLANTED.values())))
    write_cfg_args(folder, {"sh_degree": 3, "source_path": str(tmp_path / "gone"), "white_background": False})
    write_cameras_json(folder, [], cameras_above())
    return folder


def controller_for(folder: Path) -> EditController:
    source = open_model(folder)
    return EditController(source.gaussians, source.cameras, source)


# ----- controller -------------------------------------------------------------------------------
def test_crop_box_hides_outside_and_floaters_are_highlighted_or_hidden(model_folder):
    c = controller_for(model_folder)
    assert len(c.display_gaussians()) == 2004 and c.version == 0
    c.set_box(CropBox((0.0, 0.0, 0.0), (1.0, 1.0, 4.0)))
    assert len(c.display_gaussians()) == 2004          # the box is off
    c.set_crop_enabled(True)
    inside = len(c.display_gaussians())
    assert inside == int(c.session.preview().keep.sum()) < 2004
    c.set_strength(0.5)
    shown = c.display_gaussians()                       # highlight: still drawn, in magenta
    flagged = c.session.preview().floaters
    assert len(shown) == inside and int(flagged.sum()) >= 2
    rgb = shown.sh_dc[:, 0] * 0.28209479177387814 + 0.5
    magenta = torch.isclose(rgb, torch.tensor(HIGHLIGHT_RGB), atol=1e-5).all(dim=1)
    assert int(magenta.sum()) == int(flagged.sum()) and (shown.opacities[magenta] >= 0.7 - 1e-6).all()
    c.set_show("hide")
    assert len(c.display_gaussians()) == inside - int(flagged.sum())
    lines = c.summary()
    assert lines[0].startswith("outside the crop box:") and any(line.startswith("oversize: 1 ") for line in lines)


def test_apply_undo_and_saving_never_over_the_model(model_folder):
    c = controller_for(model_folder)
    assert c.output == str(model_folder.parent / "scan-edited")
    c.set_box(CropBox((0.0, 0.0, 0.0), (1.0, 1.0, 4.0)))
    c.set_crop_enabled(True)
    kept = c.session.preview().kept
    c.apply()
    assert not c.crop_enabled and "removed" in c.message and len(c.display_gaussians()) == kept
    c.undo()
    assert c.crop_enabled and c.box == CropBox((0.0, 0.0, 0.0), (1.0, 1.0, 4.0))
    written = c.save()
    assert written == model_folder.parent / "scan-edited" and "saved" in c.message
    assert len(read_gaussians(point_cloud_path(written, 300))) == kept
    assert c.output == str(model_folder.parent / "scan-edited-2")     # the next save: a new name
    c.set_format("spz")
    assert c.output == str(model_folder.parent / "scan-edited.spz")
    c.output = str(point_cloud_path(model_folder, 300))               # typed in by hand
    before = point_cloud_path(model_folder, 300).read_bytes()
    c.set_format("ply")
    assert c.save() is None and c.message.startswith("not saved:") and "being edited" in c.message
    assert point_cloud_path(model_folder, 300).read_bytes() == before
    c.save_box(model_folder.parent / "box.json")
    assert CropBox.read(model_folder.parent / "box.json") == c.box


def test_edit_source_has_no_cameras_for_a_framed_bare_file(tmp_path):
    from viewer.scene_source import load_viewer_input

    path = tmp_path / "m.ply"
    write_ply(path, plane_model())
    opened = load_viewer_input(path)
    source = edit_source(opened, path)
    assert source.cameras == [] and source.model_folder is None and len(opened.cameras) == 1


# ----- mouse arithmetic -------------------------------------------------------------------------
def project(camera: Camera, point) -> np.ndarray:
    p = camera.world_to_camera.numpy() @ np.append(np.asarray(point, float), 1.0)
    return np.array([camera.fx * p[0] / p[2] + camera.cx, camera.fy * p[1] / p[2] + camera.cy])


def test_drag_moves_the_box_with_the_cursor_and_keeps_its_depth():
    camera = Camera.from_fov(200, 100, math.radians(60), None, look_at([1.0, -2.0, -5.0], [0.0, 0.0, 0.0]))
    box = CropBox((0.2, 0.1, 0.3), (1.0, 1.0, 1.0), (10.0, 20.0, 30.0))
    moved = moved_box(box, camera, 15.0, -8.0)
    assert np.allclose(project(camera, moved.center) - project(camera, box.center), [15.0, -8.0], atol=1e-6)
    depth = lambda c: (camera.world_to_camera.numpy() @ np.append(c, 1.0))[2]  # noqa: E731
    assert math.isclose(depth(moved.center), depth(box.center), rel_tol=1e-9)
    assert moved.size == box.size and moved.rotation == box.rotation


def test_turn_and_scale():
    camera = Camera.from_fov(100, 100, math.radians(60), None, look_at([0.0, 0.0, -5.0], [0.0, 0.0, 0.0]))
    box = CropBox((0.0, 0.0, 0.0), (2.0, 1.0, 1.0))
    turned = turned_box(box, camera, dx=math.pi / 2 / 0.01, dy=0.0)    # 90 degrees about the view's vertical
    long_axis = turned.matrix[:, 0]
    assert np.allclose(np.abs(long_axis), [0.0, 0.0, 1.0], atol=1e-9) and turned.center == box.center
    assert scaled_box(box, 2).size == pytest.approx((2.42, 1.21, 1.21))


# ----- GL drawing -------------------------------------------------------------------------------
def test_box_edges_are_drawn_where_the_corners_project(gl_context):
    from viewer.edit.crop_box import EDGE_RGB, CropBoxOverlay
    from viewer.window.gl_context import draw_to_float_image

    camera = Camera.from_fov(128, 96, math.radians(60), None, look_at([0.5, -0.8, -4.0], [0.0, 0.0, 0.0]))
    box = CropBox((0.0, 0.0, 0.0), (1.2, 0.8, 1.0), (0.0, 25.0, 0.0))
    overlay = CropBoxOverlay(controller=None)
    image = draw_to_float_image(overlay, camera, box=box)   # on the framebuffer's clear colour (black)
    overlay.release()
    lit = (image - torch.tensor(EDGE_RGB)[:, None, None]).abs().max(dim=0).values < 0.02
    assert 100 < int(lit.sum()) < 2000                       # lines, not a filled box
    for corner in box.corners():
        u, v = project(camera, corner)
        window = lit[max(0, int(v) - 2): int(v) + 3, max(0, int(u) - 2): int(u) + 3]
        assert window.any(), f"no edge pixel near corner at ({u:.1f}, {v:.1f})"
    assert not lit[: int(min(project(camera, c)[1] for c in box.corners())) - 3].any()   # nothing above it


# ----- the panel section and the whole window (child processes: Dear PyGui, GLFW) ------------------
PANEL_SCRIPT = textwrap.dedent("""
    import json, sys
    import dearpygui.dearpygui as dpg
    from rasterizer import read_gaussians
    from trainer.edit import open_model
    from viewer.edit.panel import EditController, EditSection
    from viewer.window.panel import ControlPanel
    from viewer.state import ViewerState

    folder = sys.argv[1]
    source = open_model(folder)
    controller = EditController(source.gaussians, source.cameras, source)
    state = ViewerState.from_input_camera(source.cameras, 0)
    panel = ControlPanel(state, sections=[EditSection(controller)], rect=(0, 0, 420, 760))

    def fire(tag, value):
        dpg.set_value(tag, value)
        callback = dpg.get_item_callback(tag)
        callback(tag, value, dpg.get_item_user_data(tag))

    for _ in range(2):
        panel.frame(0.016, 10)
    fire("edit_crop", True)
    fire("edit_center", [0.0, 0.0, 0.0, 0.0])
    fire("edit_size", [1.0, 1.0, 4.0, 0.0])
    fire("edit_strength", 0.5)
    fire("edit_show", "hide")
    panel.frame(0.016, 10)
    summary = dpg.get_value("edit_summary")
    undo_before = dpg.get_item_configuration("edit_undo")["enabled"]
    fire("edit_apply", None)
    panel.frame(0.016, 10)
    undo_after = dpg.get_item_configuration("edit_undo")["enabled"]
    applied_kept = controller.session.preview().kept
    fire("edit_undo", None)
    panel.frame(0.016, 10)
    fields = [dpg.get_value("edit_size")[:3], dpg.get_value("edit_crop"), dpg.get_value("edit_strength")]
    fire("edit_format", "splat")
    output = dpg.get_value("edit_output")
    fire("edit_save", None)
    panel.frame(0.016, 10)
    message = dpg.get_value("edit_message")
    saved = len(read_gaussians(output))
    panel.close()
    print("STATE" + json.dumps(dict(summary=summary, undo=[undo_before, undo_after], kept=applied_kept,
                                    fields=fields, output=output, message=message, saved=saved,
                                    show=controller.show)))
""")


def test_edit_panel_under_xvfb(model_folder, xvfb_display):
    pytest.importorskip("dearpygui")
    result = subprocess.run([sys.executable, "-c", PANEL_SCRIPT, str(model_folder)], cwd=REPO,
                            env=dict(os.environ, DISPLAY=xvfb_display), capture_output=True, text=True, timeout=300)
    state = child_state(result)
    assert "outside the crop box:" in state["summary"] and "oversize: 1" in state["summary"]
    assert state["undo"] == [False, True] and state["show"] == "hide"
    assert state["fields"] == [[1.0, 1.0, 4.0], True, 0.5]          # undo brought the box and strength back
    assert state["output"].endswith("scan-edited.splat") and state["saved"] == state["kept"]
    assert state["message"].startswith("saved")


WINDOW_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from trainer.edit import CropBox
    from viewer.app import ViewerApp
    from viewer.backends.gl_splats import read_framebuffer
    from viewer.edit.panel import attach_editing, edit_source
    from viewer.scene_source import load_viewer_input
    from viewer.state import ViewerState
    from viewer.window.surfaces import SurfaceError

    folder = sys.argv[1]
    opened = load_viewer_input(folder)
    state = ViewerState.from_input_camera(opened.cameras, 0, backend="gl", available_backends=("gl",))
    try:
        app = ViewerApp(opened, state, visible=False)
    except SurfaceError as error:
        print("NOGL", error)
        sys.exit(0)
    section = attach_editing(app, edit_source(opened, folder))
    controller = section.controller
    controller.set_box(CropBox((0.0, 0.0, 0.0), (1.0, 1.0, 0.5)))
    controller.set_crop_enabled(True)
    app.run(frames=2)
    shown, kept = len(app.input.gaussians), controller.session.preview().kept
    app.compose()                                  # the window's frame, as on screen
    image = (read_framebuffer(*app.surface.size()).permute(1, 2, 0).numpy() * 255).astype(int)
    controller.set_crop_enabled(False)
    app.compose()
    plain = (read_framebuffer(*app.surface.size()).permute(1, 2, 0).numpy() * 255).astype(int)
    app.close()
    is_yellow = lambda i: (i[..., 0] > 230) & (i[..., 1] > 190) & (i[..., 2] < 40)
    yellow, yellow_without = int(is_yellow(image).sum()), int(is_yellow(plain).sum())
    print("STATE" + json.dumps(dict(shown=shown, kept=kept, yellow=yellow,
                                    yellow_without=yellow_without)))
""")


def test_window_shows_the_preview_and_the_box(model_folder, xvfb_display, tmp_path):
    pytest.importorskip("glfw")
    result = subprocess.run([sys.executable, "-c", WINDOW_SCRIPT, str(model_folder)],
                            cwd=REPO, env=dict(os.environ, DISPLAY=xvfb_display), capture_output=True, text=True,
                            timeout=300)
    state = child_state(result)
    assert state["shown"] == state["kept"] < 2004      # the window draws the cropped model
    assert state["yellow"] > 50 and state["yellow_without"] == 0   # and the box's edges over it
