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


