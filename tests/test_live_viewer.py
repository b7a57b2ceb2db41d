"""``splat-view --train``: flag parsing (in-process), and the window, the training panel and the
end-of-run save under Xvfb (child processes: GLFW and Dear PyGui stay out of pytest)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from test_train_support import write_tiny_scene
from viewer_support import child_state
from trainer.config import parse_args
from viewer.live.command import main as live_main, parse

QUICK = ["--densify_from_iter", "3", "--densification_interval", "4", "--densify_until_iter", "100",
         "--densify_grad_threshold", "0.0000001"]


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory) -> Path:
    return write_tiny_scene(tmp_path_factory.mktemp("liveview") / "scene")


def train_flags(scene: Path, model: Path, *extra: str) -> list[str]:
    return ["-s", str(scene), "-m", str(model), "--quiet", "--data_device", "cpu", "--backend", "reference",
            "--test_iterations", "-1", *extra]


def test_training_flags_are_splat_trains(tmp_path):
    common = ["-s", "scene", "-m", str(tmp_path / "m"), "-r", "8", "--iterations", "50", "--test_iterations",
              "-1", "--save_iterations", "10", "20", "-w", "--densify_grad_threshold", "0.001"]
    args, config = parse(["--train", "--camera", "2", "--start-paused", *common, "--frames", "3"])
    assert config == parse_args(common)
    assert (args.camera, args.start_paused, args.frames, args.train) == (2, True, 3, True)
    assert config.script.save_iterations == [10, 20, 50]   # splat-train's own rule, applied once


@pytest.mark.parametrize("argv, status, needle", [
    (["--train", "--bogus"], 2, "unrecognized arguments: --bogus"),
    (["--train", "--iterations", "many"], 2, "--iterations: must be an integer >= 0, got 'many'"),
    (["--train", "--iterations", "-5"], 2, "--iterations: must be an integer >= 0, got -5"),
    (["--train", "--screenshot", "x.png"], 2, "--screenshot needs --frames"),
])
def test_bad_flags_exit_2_with_one_line(argv, status, needle, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == status
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("splat-view --train: error:") and needle in error


def test_setup_errors_are_one_line(tmp_path, capsys):
    assert live_main(["--train", "-m", str(tmp_path / "m"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "splat-view: error: no scene given: use -s/--source_path SOURCE"]
    assert live_main(["--train", "-s", str(tmp_path / "nowhere"), "-m", str(tmp_path / "m"), "--quiet"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("splat-view: error:") and "nowhere" in lines[0]


def test_help_lists_viewer_and_training_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(["--train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--start-paused" in text and "--densify_grad_threshold" in text and "--max-fps" in text


def run_child(args: list, display: str, script: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, DISPLAY=display)
    command = [sys.executable, "-c", script] if script else [sys.executable, "-m", "viewer.cli"]
    return subprocess.run([*command, *map(str, args)], env=env, capture_output=True, text=True, timeout=180)


def test_window_close_saves_like_ctrl_c(tiny_scene, xvfb_display, tmp_path):
    """``--frames K``: K frames while training runs, then the splat-train outputs and the
    interrupted run's PLY + checkpoint."""
    model, shot = tmp_path / "m", tmp_path / "shot.png"
    result = run_child(["--train", *train_flags(tiny_scene, model, "--iterations", "10000"),
                        "--frames", "8", "--screenshot", shot, "--rendering-size", 48, 48], xvfb_display)
    if result.returncode != 0 and "OpenGL 4.3" in result.stderr:
        pytest.skip("no GL 4.3 context here")
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in model.iterdir())
    saved = [p.name for p in (model / "point_cloud").iterdir()]
    assert len(saved) == 1 and saved[0].startswith("iteration_")
    under_way = int(saved[0].split("_")[1])
    assert names == ["cameras.json", "cfg_args", f"chkpnt{under_way - 1}.pth", "exposure.json", "input.ply",
                     "point_cloud"]
    assert f"Interrupted at iteration {under_way}" in result.stderr
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape == (48, 48, 3) and (pixels.reshape(-1, 3) != 0).any(axis=1).mean() > 0.02


PANEL_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import dearpygui.dearpygui as dpg
    from viewer.app import ViewerApp, ViewerError
    from viewer.live.command import LiveModel, parse, viewer_setup
    from viewer.live.session import TrainingSession
    from viewer.window.panel import ControlPanel
    from viewer.live.panel import TrainingSection

    args, config = parse(sys.argv[1:])
    session = TrainingSession(config, start_paused=True, snapshot_interval_s=0.0)
    session.setup()
    viewer_input, state = viewer_setup(session, args)
    try:
        app = ViewerApp(viewer_input, state, visible=True)
    except ViewerError as error:
        print("NOGL", error)
        sys.exit(0)
    app.panel = ControlPanel(state, sections=[TrainingSection(session)])
    app.frame_callbacks.append(LiveModel(session, max_fps=0))
    session.start()
    session.wait_idle()
    out = {}

    def texts():
        app.run(frames=2)   # a frame: the snapshot is swapped in, the panel shows the stats
        tags = ("train_status", "train_iteration", "train_count", "train_message", "stat_count", "train_loss")
        return {tag: dpg.get_value(tag) for tag in tags} | {"toggle": dpg.get_item_label("train_toggle"),
                                                            "shown": len(app.input.gaussians)}

    def press(tag):
        dpg.get_item_callback(tag)(tag, None, None)

    out["start"] = texts()
    press("train_step")
    session.wait_idle()
    out["one_step"] = texts()
    for _ in range(6):
        press("train_step")
        session.wait_idle()
    out["seven_steps"] = texts() | {"model": len(session.trainer.model)}
    press("train_toggle")
    app.run(frames=2)
    out["running_label"] = dpg.get_item_label("train_toggle")
    deadline = time.monotonic() + 60
    while session.trainer.completed < 10 and time.monotonic() < deadline:
        app.run(frames=2)
    press("train_toggle")
    session.wait_idle()
    press("train_save")
    session.wait_idle()
    out["saved"] = texts() | {"completed": session.trainer.completed}
    app.close()
    result = session.stop()
    out["result"] = [result.status, result.iteration]
    print("STATE" + json.dumps(out))
""")


def test_training_panel_drives_the_session(tiny_scene, xvfb_display, tmp_path):
    model = tmp_path / "m"
    result = run_child(["--train", *train_flags(tiny_scene, model, "--iterations", "10000", *QUICK)],
                       xvfb_display, PANEL_SCRIPT)
    out = child_state(result)

    start = out["start"]
    assert start["train_status"] == "training: paused" and start["toggle"] == "Start"
    assert start["train_iteration"] == "iteration: 0 / 10,000" and start["shown"] == 200
    assert start["train_loss"] == "loss: \u2014"                        # no loss before the first step
    assert out["one_step"]["train_iteration"] == "iteration: 1 / 10,000"
    seven = out["seven_steps"]
    # Densified at the end of iterations 4 and 8 (from 3, every 4): after 7 steps, once.
    assert seven["train_iteration"] == "iteration: 7 / 10,000" and seven["toggle"] == "Resume"
    assert seven["shown"] == seven["model"] > 200                      # the window shows the new model
    assert seven["stat_count"] == f"Gaussians: {seven['model']:,}"     # and the viewer panel counts it
    assert seven["train_count"] == f"Gaussians (training): {seven['model']:,}"
    assert out["running_label"] == "Pause"
    saved = out["saved"]
    done = saved["completed"]
    assert done >= 10 and saved["train_status"] == "training: paused"
    ply = model / "point_cloud" / f"iteration_{done + 1}" / "point_cloud.ply"
    assert saved["train_message"] == f"saved iteration {done + 1}: {ply}" and ply.is_file()
    assert out["result"] == ["interrupted", done]
    assert (model / f"chkpnt{done}.pth").is_file()


def test_ctrl_c_in_the_terminal_saves_and_exits_130(tiny_scene, xvfb_display, tmp_path):
    import signal
    import time

    model = tmp_path / "m"
    env = dict(os.environ, DISPLAY=xvfb_display)
    child = subprocess.Popen([sys.executable, "-m", "viewer.cli", "--train", "--hide-panel",
                              *train_flags(tiny_scene, model, "--iterations", "10000", "--save_iterations", "2")],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        # iteration_2 is written inside the training loop: the window's loop is running by then.
        while not (model / "point_cloud" / "iteration_2").is_dir() and child.poll() is None:
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if child.returncode != 130 and "OpenGL 4.3" in err:
        pytest.skip("no GL 4.3 context here")
    assert child.returncode == 130, err
    under_way = max(int(p.name.split("_")[1]) for p in (model / "point_cloud").iterdir())
    assert under_way > 2 and f"Interrupted at iteration {under_way}" in err and "Traceback" not in err
    assert (model / f"chkpnt{under_way - 1}.pth").is_file()
