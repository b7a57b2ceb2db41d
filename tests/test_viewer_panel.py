"""The Dear PyGui control panel under Xvfb.

Dear PyGui keeps one global viewport per process and aborts the process (SIGABRT) when it cannot
open one, so every test runs it in a child process and reads the resulting state back as JSON.
"""

import os
import subprocess
import sys
import textwrap

import pytest
from viewer_support import child_state

pytest.importorskip("dearpygui")

PRELUDE = textwrap.dedent("""
    import json, math, sys
    import torch
    import dearpygui.dearpygui as dpg
    from rasterizer import Camera
    from viewer.state import ViewerState

    def pose(angle, distance=4.0):
        # world-to-camera of a camera on a circle around the origin, looking at it (OpenCV axes)
        c, s = math.cos(angle), math.sin(angle)
        rotation = torch.tensor([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]], dtype=torch.float64)
        matrix = torch.eye(4, dtype=torch.float64)
        matrix[:3, :3] = rotation
        matrix[:3, 3] = torch.tensor([0.0, 0.0, distance], dtype=torch.float64)
        return matrix

    cameras = [Camera(64, 48, 60.0, 60.0, 32.0, 24.0, pose(a)) for a in (0.0, 1.2, 2.5)]
    state = ViewerState.from_input_camera(cameras, 0, max_sh_degree=3, sh_degree=3)

    def fire(tag, value):
        # what DPG does on user input: store the widget's value, then call its callback
        dpg.set_value(tag, value)
        callback = dpg.get_item_callback(tag)
        if callback is not None:  # an input read by a button has none
            callback(tag, dpg.get_value(tag) if value is None else value, dpg.get_item_user_data(tag))

    def dump(**extra):
        print("STATE" + json.dumps(dict(
            render_mode=state.render_mode, scaling_modifier=state.scaling_modifier,
            sh_degree=state.sh_degree, background=list(state.background), fov_y=state.fov_y,
            pose=state.world_to_camera.tolist(), navigation=state.navigation, speed=state.speed,
            antialiasing=state.antialiasing, vsync=state.vsync, screenshot=state.screenshot_pending,
            fast_culling=state.fast_culling, backend=state.backend,
            version=state.version, **extra)))
""")

PANEL_SCRIPT = PRELUDE + textwrap.dedent("""
    from viewer.window.panel import ControlPanel
    panel = ControlPanel(state, stats_source=lambda: {"sorted": "yes"})
    for _ in range(3):
        panel.frame(0.016, 1234)
    texts = [dpg.get_value(tag) for tag in ("stat_frame", "stat_count", "backend", "stat_extra")]
    fire("render_mode", "depth")
    fire("scaling_modifier", 0.25)
    fire("sh_degree", 1)
    fire("antialiasing", True)
    fire("navigation", "orbit")
    fire("vsync", True)
    fire("fast_culling", False)
    dpg.set_value("background", [127.5, 63.75, 255.0, 255.0])  # DPG colours: 0..255 in set/get_value,
    dpg.get_item_callback("background")("background", [0.5, 0.25, 1.0, 1.0], None)  # 0..1 as app_data
    panel.frame(0.016, 1234)
    first = dict(render_mode=state.render_mode, scaling_modifier=state.scaling_modifier,
                 sh_degree=state.sh_degree, background=list(state.background))
    # out-of-range values, as a typed-in value or a hand-edited slider might give them
    state.update(scaling_modifier=5.0)
    dpg.get_item_callback("scaling_modifier")("scaling_modifier", 7.5, None)
    clamped_high = state.scaling_modifier
    dpg.get_item_callback("scaling_modifier")("scaling_modifier", 0.0, None)
    clamped_low = (state.scaling_modifier, dpg.get_value("scaling_modifier"))
    dpg.get_item_callback("sh_degree")("sh_degree", 9, None)
    sh_high = state.sh_degree
    # snapping: to input camera 2 by index, then move a bit away from camera 1 and snap to closest
    fire("snap_index", 2)
    fire("snap_to", None)
    snapped_two = state.world_to_camera.tolist()
    near_one = cameras[1].world_to_camera.clone()
    near_one[0, 3] += 0.05
    state.set_pose(near_one)
    fire("snap_closest", None)
    closest_index = dpg.get_value("snap_index")
    fire("screenshot", None)
    for _ in range(2):
        panel.frame(0.02, 1234)
    still_open = panel.is_open()
    panel.close()
    dump(texts=texts, first=first, clamped_high=clamped_high, clamped_low=list(clamped_low),
         sh_high=sh_high, snapped_two=snapped_two, closest_index=closest_index, still_open=still_open,
         closed=not panel.is_open(),
         camera_poses=[c.world_to_camera.tolist() for c in cameras])
""")


def run_child(script: str, display: str):
    env = dict(os.environ, DISPLAY=display)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    if "X11:" in result.stderr:
        pytest.skip(f"Dear PyGui could not open a viewport here (rc {result.returncode}): {result.stderr[-300:]}")
    return child_state(result)


def test_panel_widgets_edit_the_state(xvfb_display):
    out = run_child(PANEL_SCRIPT, xvfb_display)
    frame_text, count_text, backend_text, extra_text = out["texts"]
    assert "16.00 ms" in frame_text and "62.5 FPS" in frame_text
    assert "1,234" in count_text and backend_text == "gl" and extra_text == "sorted: yes"

    assert out["first"]["render_mode"] == "depth"
    assert out["first"]["scaling_modifier"] == pytest.approx(0.25)
    assert out["first"]["sh_degree"] == 1
    assert out["first"]["background"] == pytest.approx([0.5, 0.25, 1.0], abs=1e-3)
    assert out["antialiasing"] is True and out["navigation"] == "orbit" and out["vsync"] is True
    assert out["fast_culling"] is False and out["backend"] == "gl"

    assert out["clamped_high"] == 1.0
    assert out["clamped_low"] == pytest.approx([0.001, 0.001])  # the widget shows the clamped value
    assert out["sh_high"] == 3

    poses = out["camera_poses"]
    assert out["snapped_two"] == poses[2]
    assert out["closest_index"] == 1 and out["pose"] == poses[1]
    assert out["screenshot"] is True   # the render loop takes it (and names the file)
    assert out["still_open"] is True and out["closed"] is True


def test_panel_and_render_window_share_one_loop(xvfb_display, tmp_path):
    """ViewerApp drives the panel once per frame; panel edits reach the render loop (vsync too)."""
    script = PRELUDE + textwrap.dedent(f"""
        import glfw
        from viewer.app import ViewerApp, ViewerError
        from viewer.window.panel import ControlPanel
        from viewer.scene_source import load_viewer_input

        viewer_input = load_viewer_input({str(tmp_path / "scene.ply")!r}, -1)
        state = ViewerState.from_input_camera(cameras, 0, width=64, max_sh_degree=0, sh_degree=0)
        try:
            app = ViewerApp(viewer_input, state, visible=True)
        except ViewerError as error:
            print("NOGL", error)
            sys.exit(0)
        app.panel = ControlPanel(state)
        seen = []
        app.panel.frame = (lambda frame: lambda s, n, *rest: (seen.append(n), frame(s, n, *rest)))(app.panel.frame)
        app.run(frames=4)
        fire("vsync", True)
        dpg.set_value("background", [255.0, 255.0, 255.0, 255.0])
        dpg.get_item_callback("background")("background", [1.0, 1.0, 1.0, 1.0], None)
        app.run(frames=3, screenshot={str(tmp_path / "shot.png")!r})
        app.close()
        dump(seen=seen)
    """)
    from rasterizer import write_ply
    from test_train_support import known_gaussians

    write_ply(tmp_path / "scene.ply", known_gaussians())
    env = dict(os.environ, DISPLAY=xvfb_display)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    out = child_state(result)
    # run(frames=K) draws K frames and returns before the last swap, so K-1 panel frames each
    assert out["seen"] == [len(known_gaussians())] * 5
    assert out["vsync"] is True and out["background"] == pytest.approx([1.0, 1.0, 1.0], abs=1e-3)
    from PIL import Image

    shot = Image.open(tmp_path / "shot.png").convert("RGB")
    assert shot.getpixel((0, 0)) == (255, 255, 255)  # the panel's background reached the renderer


def test_no_display_gives_one_notice_and_no_panel(monkeypatch, capsys):
    """splat-view goes on without its panel when DPG cannot open (checked before DPG can abort)."""
    from viewer.cli import build_parser
    from viewer.launch import open_panel
    from viewer.state import ViewerState

    import torch

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    from types import SimpleNamespace

    from viewer.navigation.path_editor import PathEditor

    state = ViewerState(32, 24, 1.0, torch.eye(4, dtype=torch.float64))
    app = SimpleNamespace(state=state, layout=None, path_editor=PathEditor(state), toggle_help=lambda: None,
                          quit=lambda: None)
    assert open_panel(app) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no control panel" in err[0]
    assert build_parser().parse_args(["x.ply", "--hide-panel"]).hide_panel is True
    assert build_parser().parse_args(["x.ply"]).hide_panel is False
