"""``splat-view --connect`` end to end under Xvfb: a real ``splat-train`` loop (a Trainer thread
with the network viewer hook) and the viewer in a child process, in both display paths."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rasterizer import Camera, render
from rasterizer.camera import fov_to_focal
from test_train_support import tiny_config, write_tiny_scene
from test_viewer_cli import psnr, run_viewer
from trainer.train import Trainer
from viewer.network.client import source_cameras

W, H = 48, 32


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return write_tiny_scene(tmp_path_factory.mktemp("netview") / "scene")


def start_trainer(scene: Path, model: Path):
    """One iteration (the last takes no optimiser step, so the model never changes), kept alive
    for the viewer; returns (trainer, server, thread)."""
    from trainer.network.server import NetworkViewer

    server = NetworkViewer("127.0.0.1", 0).listen()

    def wait_for_the_viewer(trainer: Trainer, iteration: int) -> None:
        """Poll the viewer port until the child process is connected (one iteration would
        otherwise be over before the viewer has started)."""
        deadline = time.monotonic() + 60
        while server.served == 0 and time.monotonic() < deadline:
            server(trainer, iteration)
            time.sleep(0.01)

    trainer = Trainer(tiny_config(scene, model, "--iterations", "1", "--test_iterations", "-1"),
                      hooks=[wait_for_the_viewer, server])
    thread = threading.Thread(target=lambda: (trainer.run(), server.close()), daemon=True)
    thread.start()
    return trainer, server, thread


def expected_image(trainer: Trainer, scene: Path) -> np.ndarray:
    """What the viewer should show: its view starts at the source's first camera (SIBR's rule),
    at the window size with that camera's vertical field of view."""
    first = source_cameras(str(scene))[0]
    focal = fov_to_focal(first.fov_y, H)
    camera = Camera(W, H, focal, focal, W / 2, H / 2, first.world_to_camera)
    with torch.no_grad():
        image = render(trainer.model.gaussians(), camera, trainer.background, backend=trainer.backend,
                       sh_degree=trainer.model.active_sh_degree).image
    return (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)


@pytest.mark.parametrize("path", ["trainer_image", "local_snapshot"])
def test_connect_shows_the_training_model(scene, tmp_path, xvfb_display, path):
    trainer, server, thread = start_trainer(scene, tmp_path / "m")
    out = tmp_path / "shot.png"
    extra = ["--reference-protocol"] if path == "trainer_image" else []
    try:
        result = run_viewer("--connect", f"127.0.0.1:{server.port}", "--frames", 3, "--screenshot", out,
                            "--rendering-size", W, H, *extra, display=xvfb_display)
        if result.returncode != 0 and "OpenGL 4.3" in result.stderr:
            pytest.skip("no GL 4.3 context here")
        assert result.returncode == 0, result.stderr
        shot = np.asarray(Image.open(out).convert("RGB"))
        expected = expected_image(trainer, scene)
        assert shot.shape == expected.shape
        if path == "trainer_image":  # the trainer's bytes, blitted with the flip
            assert np.abs(shot.astype(int) - expected).max() <= 1
        else:  # half-precision snapshot through the GL splat path
            assert psnr(shot, expected) >= 30.0
        assert server.served >= 2
    finally:
        thread.join(30)  # the viewer left: keep-alive ends, training returns
    assert not thread.is_alive()
    assert (tmp_path / "m" / "point_cloud" / "iteration_1" / "point_cloud.ply").is_file()


def test_connect_errors_are_one_line(tmp_path):
    result = run_viewer("--connect", "localhost:notaport")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("splat-view: error:") and "HOST:PORT" in lines[0]




CONNECTED_PANEL = """
import json, sys, time
import dearpygui.dearpygui as dpg
import viewer.app as app_module

real_run = app_module.ViewerApp.run

def run(self, frames=None, screenshot=None):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not self.remote.has_content():
        real_run(self, frames=2)
    real_run(self, frames=6)
    tags = ("stat_count", "render_mode", "backend", "sh_degree", "scaling_modifier", "remote_train",
            "remote_keep_alive", "remote_local_rendering")
    shown = {tag: dpg.is_item_shown(tag) for tag in tags}
    print("STATE" + json.dumps(dict(shown=shown, status=dpg.get_value("remote_status"),
                                    wrap=dpg.get_item_configuration("remote_status")["wrap"])))

app_module.ViewerApp.run = run
from viewer.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("path", ["trainer_image", "local_snapshot"])
def test_connected_panel_shows_only_controls_that_act(scene, tmp_path, small_screen, path):
    """graphdeco's protocol (trainer images): no Gaussian count, no local render settings and no
    "Render locally" box; splatview's trainer (snapshots): all of them."""
    import json
    import os
    import subprocess
    import sys

    from viewer_support import child_state

    trainer, server, thread = start_trainer(scene, tmp_path / "m")
    extra = ["--reference-protocol"] if path == "trainer_image" else []
    try:
        env = dict(os.environ, DISPLAY=small_screen, SPLATVIEW_CONFIG_DIR=str(tmp_path / "config"))
        result = subprocess.run([sys.executable, "-c", CONNECTED_PANEL, "--connect", f"127.0.0.1:{server.port}",
                                 "--rendering-size", str(W), str(H), *extra], env=env, capture_output=True,
                                text=True, timeout=180)
        out = child_state(result)
    finally:
        thread.join(30)
    shown = out["shown"]
    assert shown["remote_train"] and shown["remote_keep_alive"] and shown["scaling_modifier"]
    local = path == "local_snapshot"
    assert out["status"].startswith("remote: Connected") and out["wrap"] == 0   # wraps, never cut off
    assert ("iteration" in out["status"]) is local      # the trainer's statistics come with the extension
    for tag in ("stat_count", "render_mode", "remote_local_rendering"):
        assert shown[tag] is local, (tag, json.dumps(shown))
