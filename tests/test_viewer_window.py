"""The viewer's window logic without a window: render pacing, window placement and the remembered
layout, screenshot names, overlays, the camera path editor, which panel controls apply, the
training panel's texts and ``splat-view --help``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest
import torch

from rasterizer import Camera, look_at
from viewer.state import ViewerState
from viewer.window.layout import Layout, load_layout, place_windows, restore_layout, save_layout
from viewer.window.pacing import RenderPacing
from viewer.window.screenshots import unique_screenshot_path

SMALL_SCREEN = (0, 0, 1366, 768)


# ----- pacing -------------------------------------------------------------------------------------
def test_the_kept_image_is_reused_until_something_changes():
    pacing = RenderPacing(budget_s=0.05, settle_s=0.3)
    assert pacing.plan("a", now=0.0) == 1.0           # the first image is a full one
    pacing.rendered(1.0, 0.01)                        # and cheap: 10 ms
    assert pacing.plan("a", now=0.1) is None          # nothing changed: no render
    assert pacing.plan("b", now=0.2) == 1.0           # cheap enough to stay at full resolution
    pacing.rendered(1.0, 0.01)
    assert pacing.plan("b", now=5.0) is None


def test_slow_renders_drop_resolution_while_the_view_moves_then_refine():
    pacing = RenderPacing(budget_s=0.05, settle_s=0.3)
    pacing.plan(0, now=0.0)
    pacing.rendered(1.0, 2.0)                         # 2 s per full frame (llvmpipe, a big model)
    scale = pacing.plan(1, now=1.0)                   # a drag starts
    assert scale == 0.125                             # sqrt(0.05 / 2) = 0.16, floored to a multiple of 1/8
    pacing.rendered(scale, 2.0 * scale * scale)
    assert pacing.plan(2, now=1.05) == 0.125          # still moving
    pacing.rendered(0.125, 0.03)
    assert pacing.plan(2, now=1.2) is None            # not settled yet: keep the quick image
    assert pacing.plan(2, now=1.4) == 1.0             # settled: one full-resolution render
    pacing.rendered(1.0, 2.0)
    assert pacing.plan(2, now=2.0) is None
    moderate = RenderPacing(budget_s=0.05)
    moderate.plan(0, 0.0)
    moderate.rendered(1.0, 0.2)                       # 200 ms: half resolution fits 50 ms
    assert moderate.plan(1, 1.0) == 0.5
    assert RenderPacing(adaptive=False).plan(0, 0.0) == 1.0
    floor = RenderPacing(budget_s=0.05, min_scale=0.25)
    floor.plan(0, 0.0)
    floor.rendered(1.0, 20.0)                         # hopeless: still never below the minimum
    assert floor.plan(1, 1.0) == 0.25


# ----- layout -------------------------------------------------------------------------------------
def inside(rect, area=SMALL_SCREEN) -> bool:
    x, y, w, h = rect
    return area[0] <= x and area[1] <= y and x + w <= area[0] + area[2] and y + h <= area[1] + area[3]


def overlap(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


@pytest.mark.parametrize("render_size", [(1200, 800), (1200, 675), (600, 400), (1900, 400), (500, 1400)])
def test_both_windows_fit_a_small_screen_side_by_side(render_size):
    layout = place_windows(SMALL_SCREEN, render_size, panel=True)
    assert inside(layout.render) and inside(layout.panel) and not overlap(layout.render, layout.panel)
    scale = layout.render[2] / render_size[0]
    assert scale <= 1.0 and layout.render[3] == pytest.approx(render_size[1] * scale, abs=1)   # aspect kept
    if render_size == (600, 400):
        assert layout.render[2:] == (600, 400)        # small enough: untouched
    no_panel = place_windows(SMALL_SCREEN, render_size, panel=False)
    assert no_panel.panel is None and inside(no_panel.render)


def test_work_area_offsets_are_respected():
    area = (0, 27, 1366, 741)   # a top bar of 27 px
    layout = place_windows(area, (1200, 800), panel=True)
    assert inside(layout.render, area) and inside(layout.panel, area) and layout.render[1] == 27


def test_layout_is_remembered_when_it_still_fits(tmp_path):
    saved = Layout((100, 50, 800, 500), (910, 50, 390, 700), panel_visible=False)
    save_layout(saved, tmp_path)
    loaded = load_layout(tmp_path)
    assert loaded == saved
    assert restore_layout(loaded, SMALL_SCREEN, panel=True) == saved
    assert restore_layout(loaded, (0, 0, 1024, 600), panel=True) is None   # a smaller monitor now
    assert restore_layout(Layout((0, 0, 800, 500), None), SMALL_SCREEN, panel=True) is None
    (tmp_path / "viewer.json").write_text("{broken")
    assert load_layout(tmp_path) is None                                   # ignored, placed afresh
    (tmp_path / "viewer.json").write_text(json.dumps({"render_window": [1, 2, "x", 4]}))
    assert load_layout(tmp_path) is None


# ----- screenshots ---------------------------------------------------------------------------------
def test_screenshot_names_never_collide(tmp_path):
    now = math.floor(time.time()) + 0.25   # (+ 0.5 s below stays in the same second)
    names = [unique_screenshot_path(tmp_path, now) for _ in range(3)]   # three shots in one millisecond
    assert len({p.name for p in names}) == 3 and all(p.exists() for p in names)
    assert names[0].name.startswith("splatview-") and names[0].suffix == ".png"
    assert names[1].stem == names[0].stem + "-2" and names[2].stem == names[0].stem + "-3"
    later = unique_screenshot_path(tmp_path, now + 0.5)                  # half a second later: its own name
    assert later.stem[:-4] == names[0].stem[:-4] and later.stem != names[0].stem


# ----- overlays ------------------------------------------------------------------------------------
def test_menu_hit_testing_and_images():
    from viewer.options import key_help_lines
    from viewer.window.overlay import Menu, help_image, message_image

    menu = Menu([("Show control panel", "Tab"), ("Key bindings", "H"), ("Quit", "Esc")], x=100, y=50)
    image = menu.image(hover=1)
    width = image.size[0]
    assert menu.entry_at(110, 50 + 4 + 2, width) == 0
    assert menu.entry_at(110, 50 + 4 + menu.row_height * 2 + 3, width) == 2
    assert menu.entry_at(90, 60, width) is None and menu.entry_at(110, 50 + 4 + menu.row_height * 3 + 1, width) is None
    assert image.getpixel((5, 4 + menu.row_height + 2)) != menu.image().getpixel((5, 4 + menu.row_height + 2))
    rows = key_help_lines("orbit")
    assert ("double click", "pivot on the point under the cursor") in rows and len(rows) > 15
    assert help_image("Keys", rows).size[1] > 15 * len(rows) and message_image("hello").size[0] > 20


# ----- the camera path editor ---------------------------------------------------------------------
def make_state() -> ViewerState:
    cameras = [Camera(64, 48, 50, 50, 32, 24, look_at([3 * math.cos(a), 1.0, 3 * math.sin(a)], [0, 0, 0]))
               for a in (0.0, 0.7, 1.4, 2.1)]
    state = ViewerState.from_input_camera(cameras)
    state.set_scene((0.0, 0.0, 0.0), 3.0, (0.0, -1.0, 0.0))
    return state


def test_path_editor_keyframes_preview_and_json_round_trip(tmp_path):
    from viewer.navigation.path_editor import PathEditor

    state = make_state()
    editor = PathEditor(state, seconds=2.0, fps=10.0)
    for index in (0, 2, 3):
        state.snap_to(index)
        editor.add_current()
    assert len(editor.keyframes) == 3 and editor.selected == 2
    editor.select(0)
    editor.move_selected(+1)                           # reorder: camera 2's view first now
    assert editor.selected == 1
    torch.testing.assert_close(editor.keyframes[0].world_to_camera, state.input_cameras[2].world_to_camera)
    editor.remove_selected()
    assert [k.world_to_camera.tolist() for k in editor.keyframes] == \
        [state.input_cameras[i].world_to_camera.tolist() for i in (2, 3)]
    state.snap_to(1)
    editor.select(0)
    editor.add_current()                               # inserted after the selection
    assert torch.equal(editor.keyframes[1].world_to_camera, state.input_cameras[1].world_to_camera)

    file = tmp_path / "flight.json"
    editor.set_timing(seconds=3.0, fps=12.0, loop=True)
    editor.save(file)
    other = PathEditor(make_state())
    assert other.load(file) == 3
    assert (other.path.seconds, other.path.fps, other.path.loop) == (3.0, 12.0, True)
    for a, b in zip(other.keyframes, editor.keyframes):
        torch.testing.assert_close(a.world_to_camera, b.world_to_camera)

    state.snap_to(0)
    before = state.world_to_camera.clone()
    editor.play()
    torch.testing.assert_close(state.world_to_camera, editor.keyframes[0].world_to_camera)
    editor.advance(1.5)                                # half way through a 3 s loop
    torch.testing.assert_close(state.world_to_camera, editor.path.at(0.5).world_to_camera)
    editor.stop(restore=True)
    torch.testing.assert_close(state.world_to_camera, before)
    assert editor.curve().shape == (24 * 3 + 2, 3)     # drawn with 24 points a transition (+ closing point)
    editor.generate("orbit")
    assert editor.path.loop and len(editor.keyframes) == 12
    with pytest.raises(ValueError, match="no keyframes"):
        PathEditor(state).save(tmp_path / "empty.json")


# ----- which controls the panel shows ------------------------------------------------------------
def test_only_controls_that_act_are_shown():
    pytest.importorskip("dearpygui")
    from viewer.window.panel import applicable_controls

    state = make_state()
    state.available_backends = ("cuda", "gl", "gl-compute")
    shown = applicable_controls(state)
    assert all(shown[name] for name in ("backend", "render_mode", "scaling_modifier", "antialiasing", "fast_culling"))
    state.update(backend="cuda")
    assert not applicable_controls(state)["fast_culling"]      # the CUDA kernels always cull exactly
    state.update(render_mode="ellipsoids")
    shown = applicable_controls(state)
    assert not any(shown[name] for name in ("backend", "scaling_modifier", "sh_degree", "antialiasing"))
    state.update(render_mode="depth")
    assert applicable_controls(state)["scaling_modifier"] and not applicable_controls(state)["sh_degree"]
    state.shows_remote_images = True                           # --connect to graphdeco's train.py
    shown = applicable_controls(state)
    assert shown["scaling_modifier"] and not any(shown[name] for name in (
        "backend", "render_mode", "sh_degree", "antialiasing", "fast_culling", "background"))


def test_training_panel_shows_a_dash_before_the_first_step():
    pytest.importorskip("dearpygui")
    from viewer.live.panel import stats_lines
    from viewer.live.session import TrainingStats

    before = stats_lines(TrainingStats("ready", 0, 30000))
    assert before["train_loss"] == "loss: \u2014" and before["train_psnr"] == "PSNR: \u2014"
    assert before["train_rate"] == "steps/s: \u2014" and before["train_iteration"] == "iteration: 0 / 30,000"
    after = stats_lines(TrainingStats("running", 1, 30000, loss=0.25, psnr=12.5, steps_per_second=3.0))
    assert after["train_loss"] == "loss: 0.250000" and after["train_psnr"] == "PSNR: 12.50 dB"


# ----- the command line ----------------------------------------------------------------------------
def test_help_is_quick_plain_and_lists_the_keys():
    """``splat-view --help`` imports no torch, GL or Dear PyGui, reads as plain text and lists the keys."""
    script = ("import sys, io, contextlib\n"
              "from viewer.cli import main\n"
              "out = io.StringIO()\n"
              "with contextlib.redirect_stdout(out):\n"
              "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
              "heavy = [m for m in ('torch', 'OpenGL', 'dearpygui', 'glfw') if m in sys.modules]\n"
              "print(repr(heavy)); print(out.getvalue())\n")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    heavy, text = result.stdout.split("\n", 1)
    assert heavy == "[]" and elapsed < 5.0
    assert "``" not in text and ":class:" not in text and "usage: splat-view" in text
    for expected in ("W S A D", "Tab", "H, F1", "orbit: double click", "right click", "--navigation", "--up"):
        assert expected in text
    train = subprocess.run([sys.executable, "-m", "viewer.cli", "--train", "--help"], capture_output=True,
                           text=True, timeout=60)
    assert train.returncode == 0 and "--start-paused" in train.stdout and "--iterations" in train.stdout


@pytest.mark.parametrize("flags, message", [
    (["x.ply", "--frames", "0"], "--frames: must be an integer >= 1, got 0"),
    (["x.ply", "--rendering-size", "640", "-1"], "--rendering-size: must be an integer between 1 and 16384, got -1"),
    (["x.ply", "--up", "sideways"], "--up: invalid choice"),
    (["x.ply", "--navigation", "fly"], "--navigation: invalid choice"),
])
def test_bad_view_flags_exit_2_with_one_line(flags, message, capsys):
    from viewer.cli import main

    with pytest.raises(SystemExit) as caught:
        main(flags)
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert caught.value.code == 2 and error.startswith("splat-view: error:") and message in error
