"""The viewer as a person uses it, under Xvfb on a 1366x768 screen: both windows fit, closing the
panel hides it (Tab and the right-click menu bring it back), closing the render window quits in
well under a second, the layout is remembered, the render size follows the window, each
navigation mode moves the camera as documented, screenshots never overwrite, the camera path is
edited, saved, loaded and previewed from the panel, and slow renders do not freeze the loop.

Windows are driven as a window manager would: the close button is the ``WM_DELETE_WINDOW``
message (``viewer_support.x11``), keys and clicks go through the app's GLFW callbacks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rasterizer import write_ply
from rasterizer.model_folder import point_cloud_path, write_cameras_json, write_cfg_args
from test_train_support import known_gaussians, orbit_camera
from viewer_support import child_state, x11

pytest.importorskip("glfw")

TESTS = Path(__file__).parent
RENDER_TITLE = "splatview - model (iteration 100)"
PANEL_TITLE = "splatview controls"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A model folder whose cameras are 1600x1066 (the viewer opens at 1200x800: too wide for a
    1366x768 screen with the panel beside it)."""
    folder = tmp_path_factory.mktemp("session") / "model"
    write_ply(point_cloud_path(folder, 100), known_gaussians())
    cameras = [orbit_camera(angle).resized(1600, 1066) for angle in (0.0, 1.1, 2.3, 3.5)]
    write_cameras_json(folder, [], cameras)
    write_cfg_args(folder, dict(sh_degree=0, source_path="/nonexistent", model_path=str(folder), images="images",
                                depths="", resolution=-1, white_background=True, train_test_exp=False,
                                data_device="cuda", eval=False))
    return folder


def wait_for(condition, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return False


def inside_screen(rect, size=(1366, 768)) -> bool:
    x, y, width, height = rect[:4]
    return x >= 0 and y >= 0 and x + width <= size[0] and y + height <= size[1]


def launch(model, display, config, *extra):
    env = dict(os.environ, DISPLAY=display, SPLATVIEW_CONFIG_DIR=str(config))
    return subprocess.Popen([sys.executable, "-m", "viewer.cli", "-m", str(model), *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cli_session_on_a_small_screen(model, small_screen, tmp_path):
    X = x11()
    config = tmp_path / "config"
    viewer = launch(model, small_screen, config)
    try:
        both_up = wait_for(lambda: X.mapped(small_screen, RENDER_TITLE) and X.mapped(small_screen, PANEL_TITLE), 90)
        if not both_up and viewer.poll() is not None:
            pytest.skip(f"the viewer could not open here: {viewer.stderr.read()[-400:]}")
        assert both_up
        windows = X.windows(small_screen)
        render, panel = windows[RENDER_TITLE][:4], windows[PANEL_TITLE][:4]
        assert inside_screen(render) and inside_screen(panel), (render, panel)
        assert render[0] + render[2] <= panel[0]                      # side by side, not overlapping
        assert abs(render[2] / render[3] - 1600 / 1066) < 0.01         # shrunk to fit, aspect kept
        time.sleep(2.0)                                                # the first frames are drawn

        X.close(small_screen, PANEL_TITLE)                             # the panel's close button
        assert wait_for(lambda: not X.mapped(small_screen, PANEL_TITLE), 10)
        time.sleep(1.0)
        assert viewer.poll() is None and X.mapped(small_screen, RENDER_TITLE)   # hidden, not frozen or gone

        closed = time.perf_counter()
        X.close(small_screen, RENDER_TITLE)                            # the render window's close button
        code = viewer.wait(timeout=30)
        quit_seconds = time.perf_counter() - closed
    finally:
        if viewer.poll() is None:
            viewer.kill()
            viewer.wait()
    assert code == 0, viewer.stderr.read()
    assert quit_seconds < 1.0, f"quitting took {quit_seconds:.2f} s"

    remembered = json.loads((config / "viewer.json").read_text())
    assert tuple(remembered["render_window"]) == render and remembered["panel_visible"] is False

    # The next session opens where this one was, with the panel still hidden.
    again = launch(model, small_screen, config)
    try:
        assert wait_for(lambda: X.mapped(small_screen, RENDER_TITLE), 90)
        time.sleep(1.5)
        assert X.windows(small_screen)[RENDER_TITLE][:4] == render
        assert not X.mapped(small_screen, PANEL_TITLE)
        X.close(small_screen, RENDER_TITLE)
        assert again.wait(timeout=30) == 0
    finally:
        if again.poll() is None:
            again.kill()
            again.wait()


PRELUDE = textwrap.dedent("""
    import json, math, os, sys, time
    import torch
    sys.path.insert(0, {tests!r})
    from viewer_support import x11
    from viewer.app import ViewerApp, ViewerError
    from viewer.scene_source import load_viewer_input
    from viewer.state import ViewerState

    viewer_input = load_viewer_input({model!r}, -1)
    state = ViewerState.from_input_camera(viewer_input.cameras, 0, max_sh_degree=0, sh_degree=0,
                                          background=(1.0, 1.0, 1.0))
    try:
        app = ViewerApp(viewer_input, state, visible=True, interactive=True, with_panel={with_panel})
    except ViewerError as error:
        print("NOGL", error)
        sys.exit(0)
    import glfw
    out = {{}}

    def centre():
        pose = state.world_to_camera
        return -pose[:3, :3].T @ pose[:3, 3]

    def key(name):
        app._on_key(app.window, getattr(glfw, "KEY_" + name), 0, glfw.PRESS, 0)
""")


def run_child(script: str, display: str, config: Path, timeout: int = 240) -> dict:
    env = dict(os.environ, DISPLAY=display, SPLATVIEW_CONFIG_DIR=str(config))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
    return child_state(result)


def test_panel_hides_and_comes_back_and_edits_the_camera_path(model, small_screen, tmp_path):
    script = PRELUDE.format(tests=str(TESTS), model=str(model), with_panel=True) + textwrap.dedent(f"""
        import dearpygui.dearpygui as dpg
        from viewer.launch import open_panel
        X = x11()
        display = os.environ["DISPLAY"]
        app.panel = open_panel(app)
        app.run(frames=3)
        out["panel_rect"] = list(app.panel.rect())
        out["render_rect"] = list(app.surface.rect())
        X.close(display, "splatview controls")          # the close button hides the panel...
        app.run(frames=3)
        out["after_close"] = [app.panel.visible, X.mapped(display, "splatview controls"), app.panel.is_open()]
        key("TAB")                                       # ...Tab brings it back
        app.run(frames=3)
        out["after_tab"] = [app.panel.visible, X.mapped(display, "splatview controls")]
        app.panel.hide()
        app.run(frames=2)
        app.press(1, 40, 40)                             # a right click opens the menu...
        app.release(1, 41, 40)
        app.run(frames=2)
        out["menu_entry"] = app._actions()[0][0]
        app.press(0, 60, 40 + 12 / app._window_scale())  # ...and a left click on its first entry
        app.run(frames=2)
        out["after_menu"] = [app.panel.visible, X.mapped(display, "splatview controls"), app.menu is None]

        # P and [ ] move the panel's input camera field
        state.set_pose(viewer_input.cameras[2].world_to_camera)
        key("P")
        app.run(frames=2)
        out["snap_field"] = [dpg.get_value("snap_index")]
        key("RIGHT_BRACKET")
        app.run(frames=2)
        out["snap_field"].append(dpg.get_value("snap_index"))

        # the camera path: keyframes from three views, saved, cleared, loaded, previewed
        def fire(tag, value=None):   # what DPG does on user input: store the value, call the callback
            if value is not None:
                dpg.set_value(tag, value)
            callback = dpg.get_item_callback(tag)
            if callback is not None:   # an input read by a button has none
                callback(tag, dpg.get_value(tag) if value is None else value, None)
        for index in (0, 1, 3):
            state.snap_to(index)
            fire("path_add")
        fire("path_seconds", 2.0)
        fire("path_file", {str(tmp_path / "flight.json")!r})
        fire("path_save")
        app.run(frames=2)
        out["saved_message"] = dpg.get_value("path_message")
        saved = [k.world_to_camera.tolist() for k in app.path_editor.keyframes]
        fire("path_clear")
        fire("path_load")
        app.run(frames=2)
        out["loaded_same"] = len(saved) == len(app.path_editor.keyframes) and all(
            torch.allclose(k.world_to_camera, torch.tensor(pose, dtype=torch.float64), atol=1e-9)
            for k, pose in zip(app.path_editor.keyframes, saved))
        out["listbox"] = dpg.get_item_configuration("path_keyframes")["items"]
        state.snap_to(2)
        key("SPACE")                                      # play the preview
        app.run(frames=2)
        out["playing"] = [app.path_editor.playing, dpg.get_item_label("path_play")]
        started = time.monotonic()
        while time.monotonic() - started < 0.8:          # (frame times advance the preview)
            app.run(frames=5)
        out["preview_moved"] = [app.path_editor.position > 0.1,
                                not torch.equal(state.world_to_camera, viewer_input.cameras[2].world_to_camera)]
        key("SPACE")
        app.path_editor.scrub(0.5)
        app.run(frames=2)
        from OpenGL import GL
        from viewer.backends.gl_splats import read_framebuffer
        app.compose()                                     # the path drawn over the view, as on screen
        GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, 0)
        width, height = app.surface.size()
        pixels = read_framebuffer(width, height)
        yellow = (pixels[0] > 0.9) & (pixels[1] > 0.7) & (pixels[1] < 0.85) & (pixels[2] < 0.3)
        out["path_pixels"] = int(yellow.sum())
        from trainer.image_io import save_png
        save_png({str(tmp_path / "path_preview.png")!r}, pixels)
        app.close()
        print("STATE" + json.dumps(out))
    """)
    out = run_child(script, small_screen, tmp_path / "config")
    assert inside_screen(out["panel_rect"]) and inside_screen(out["render_rect"])
    assert out["after_close"] == [False, False, True]          # hidden, not destroyed
    assert out["after_tab"] == [True, True]
    assert out["menu_entry"] == "Show control panel" and out["after_menu"] == [True, True, True]
    assert out["snap_field"] == [2, 3]
    assert "saved" in out["saved_message"] and "flight.json" in out["saved_message"]
    assert "splat-render -m MODEL --camera-path" in out["saved_message"]
    assert out["loaded_same"] and len(out["listbox"]) == 3 and out["listbox"][0].startswith("1: (")
    assert out["playing"] == [True, "Stop (Space)"] and out["preview_moved"] == [True, True]
    assert out["path_pixels"] > 50                              # the path's yellow line is on screen
    document = json.loads((tmp_path / "flight.json").read_text())
    assert len(document["keyframes"]) == 3 and len(document["camera_path"]) == 60


def test_window_navigation_screenshots_and_pacing(model, small_screen, tmp_path):
    shots = tmp_path / "shots"
    script = PRELUDE.format(tests=str(TESTS), model=str(model), with_panel=False) + textwrap.dedent(f"""
        from viewer.navigation.controls import camera_centre
        app.run(frames=2)
        # ---- the render size follows the window (unless --rendering-size fixed it) ----
        out["start_size"] = [state.width, state.height]
        glfw.set_window_size(app.window, 640, 360)
        glfw.poll_events()
        wait = time.monotonic() + 5
        while app.surface.size() != (640, 360) and time.monotonic() < wait:
            glfw.poll_events()
        app.run(frames=3)
        time.sleep(0.4)                                   # settled: the full-resolution render
        app.run(frames=2)
        out["resized"] = [state.width, state.height, *app.compositor.target.size]

        # ---- navigation: each mode as documented ----
        up = state.up_vector()
        pivot = torch.tensor(state.pivot, dtype=torch.float64)
        state.snap_to(0)
        before_centre, before_forward = centre().clone(), state.world_to_camera[2, :3].clone()
        right = state.world_to_camera[0, :3].clone()
        app.drag(0, 60.0, 0.0)                            # fps: look around, in place, to the right
        out["fps"] = [float((centre() - before_centre).norm()),
                      float(state.world_to_camera[2, :3] @ right), float(state.world_to_camera[0, :3] @ up)]
        state.snap_to(0)
        state.update(navigation="orbit")
        distance = float((centre() - pivot).norm())
        app.drag(0, -80.0, 30.0)                          # orbit: around the pivot, up stays up
        out["orbit"] = [float((centre() - pivot).norm()) - distance, float(state.world_to_camera[0, :3] @ up),
                        float((centre() - before_centre) @ right)]
        state.snap_to(0)
        state.update(navigation="trackball")
        app.drag(0, 50.0, 40.0)                           # trackball: around the pivot, freely
        out["trackball"] = [float((centre() - pivot).norm()) - distance,
                            float((centre() - before_centre).norm())]
        state.snap_to(0)
        state.update(navigation="orbit")
        pivot_before = torch.tensor(state.pivot, dtype=torch.float64)
        app.drag(1, 30.0, 0.0)                            # right drag pans, the pivot comes along
        out["pan"] = [float((centre() - before_centre) @ right),
                      float(((torch.tensor(state.pivot, dtype=torch.float64) - pivot_before)
                             - (centre() - before_centre)).norm())]
        state.snap_to(0)
        app.scroll(2)                                     # the wheel moves towards the pivot
        pivot = torch.tensor(state.pivot, dtype=torch.float64)
        out["wheel"] = float((centre() - pivot).norm()) / float((before_centre - pivot).norm())
        state.snap_to(0)
        app.run(frames=2)
        width, height = glfw.get_window_size(app.window)
        out["picked"] = app.pick_pivot(width / 2, height / 2)   # a double click on the model's middle
        out["pivot_distance"] = float(torch.tensor(state.pivot).norm())
        state.update(navigation="fps")

        # ---- screenshots: M twice in one second, then one larger than the window ----
        state.screenshot_folder = {str(shots)!r}
        key("M"); app.run(frames=2)
        key("M"); app.run(frames=2)
        out["messages"] = [state.message]
        state.update(screenshot_size=(1280, 720))
        key("M"); app.run(frames=2)
        out["messages"].append(state.message)

        # ---- the key help overlay ----
        from OpenGL import GL
        from viewer.backends.gl_splats import read_framebuffer
        def window_pixels():
            app.compose()
            GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, 0)
            return read_framebuffer(*app.surface.size())
        plain = window_pixels()
        key("H")
        helped = window_pixels()
        key("ESCAPE")                                     # Esc closes the help first...
        out["help"] = [float((helped - plain).abs().mean()), app.help_visible,
                       bool(glfw.window_should_close(app.window))]

        # ---- slow renders: reduced resolution while moving, nothing while idle ----
        real_draw = app._draw_view
        full_pixels = state.width * state.height
        def slow_draw(camera):                            # 0.5 s for a full frame, less for fewer pixels
            time.sleep(0.5 * camera.width * camera.height / full_pixels)
            real_draw(camera)
        app._draw_view = slow_draw
        app.pacing.plan("reset", 0.0); app.pacing.rendered(1.0, 0.5)
        scales, frame_times = [], []
        for step in range(6):                             # a drag: the view changes every frame
            app.drag(0, 5.0, 0.0)
            start = time.perf_counter()
            app.run(frames=1)
            frame_times.append(time.perf_counter() - start)
            scales.append(app.pacing.shown_scale)
        time.sleep(0.4)
        app.run(frames=2)                                 # settled: one full-resolution render
        out["pacing"] = [scales, max(frame_times), app.pacing.shown_scale]
        start = time.perf_counter()
        renders = []
        for _ in range(10):                               # idle: the kept image, no render
            renders.append(app.render_if_needed())
        out["idle"] = [any(renders), time.perf_counter() - start]
        app.close()
        print("STATE" + json.dumps(out))
    """)
    out = run_child(script, small_screen, tmp_path / "config")
    assert out["start_size"][0] < 1200 and out["resized"] == [640, 360, 640, 360]
    moved, looked_right, tilt = out["fps"]
    assert moved < 1e-9 and looked_right > 0.05 and abs(tilt) < 1e-9
    change, tilt, sideways = out["orbit"]
    assert abs(change) < 1e-9 and abs(tilt) < 1e-9 and sideways > 0    # dragged left: the model turns left
    assert abs(out["trackball"][0]) < 1e-9 and out["trackball"][1] > 0.1
    assert out["pan"][0] < 0 and out["pan"][1] < 1e-9                  # dragged right: camera moved left
    assert out["wheel"] == pytest.approx(0.81)                          # 0.9 ** 2 of the way
    assert out["picked"] is True and out["pivot_distance"] < 0.8        # on the model (around the origin)
    files = sorted(shots.glob("splatview-*.png"))
    assert len(files) == 3 and len({f.name for f in files}) == 3     # two in one second: two files
    from PIL import Image

    sizes = sorted(Image.open(f).size for f in files)
    assert sizes == [(640, 360), (640, 360), (1280, 720)]               # M at the window's size, then 2x
    for message, size in zip(out["messages"], ("(640x360)", "(1280x720)")):
        assert message.startswith("screenshot saved to ") and message.endswith(size)
        named = Path(message[len("screenshot saved to "):-len(size) - 1])
        assert named.is_absolute() and named in [f.resolve() for f in files]   # says where it went
    difference, still_helping, quitting = out["help"]
    assert difference > 0.01 and not still_helping and not quitting
    scales, slowest, settled = out["pacing"]
    assert all(s < 1.0 for s in scales) and slowest < 0.35 and settled == 1.0
    assert out["idle"][0] is False and out["idle"][1] < 0.05
