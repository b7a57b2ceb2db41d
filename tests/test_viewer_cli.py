"""``splat-view`` end to end under Xvfb (child processes): scripted screenshots and errors."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from rasterizer import render, write_ply
from rasterizer.model_folder import point_cloud_path, write_cameras_json, write_cfg_args
from test_train_support import known_gaussians, orbit_camera


def run_viewer(*args, display=None):
    """``python -m viewer.cli ARGS`` in a child process (GLFW state stays out of pytest)."""
    env = dict(os.environ, DISPLAY=display or "")
    return subprocess.run([sys.executable, "-m", "viewer.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120)


def write_model(folder, iteration: int, source_path: str):
    """A model folder of ``known_gaussians`` (white background) with three orbit cameras in
    cameras.json and ``source_path`` in cfg_args; returns (folder, cameras)."""
    write_ply(point_cloud_path(folder, iteration), known_gaussians())
    cameras = [orbit_camera(angle) for angle in (0.0, 1.1, 2.3)]
    write_cameras_json(folder, [], cameras)
    write_cfg_args(folder, dict(sh_degree=0, source_path=source_path, model_path=str(folder),
                                images="images", depths="", resolution=-1, white_background=True,
                                train_test_exp=False, data_device="cuda", eval=False))
    return folder, cameras


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("view") / "model", 100, "/nonexistent")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2) / 255.0 ** 2
    return 10 * math.log10(1.0 / mse) if mse > 0 else math.inf


def test_screenshot_from_an_input_camera_matches_the_reference(model, xvfb_display, tmp_path):
    folder, cameras = model
    out = tmp_path / "shot.png"
    result = run_viewer("-m", folder, "--camera", 1, "--frames", 3, "--screenshot", out, display=xvfb_display)
    if result.returncode != 0 and "OpenGL 4.3" in result.stderr:
        pytest.skip("no GL 4.3 context here")
    assert result.returncode == 0, result.stderr
    shot = np.asarray(Image.open(out).convert("RGB"))
    with torch.no_grad():
        expected = render(known_gaussians(), cameras[1], (1.0, 1.0, 1.0), backend="reference").image
    expected = (expected.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    assert shot.shape == expected.shape  # SIBR's default size: the input camera's (32 px wide)
    # The GL path blends back to front without the 1e-4 early stop, through an 8-bit buffer.
    assert psnr(shot, expected) >= 30.0


def test_bare_ply_opens_with_a_framing_camera(model, xvfb_display, tmp_path):
    folder, _ = model
    out = tmp_path / "bare.png"
    result = run_viewer(point_cloud_path(folder, 100), "--frames", 2, "--screenshot", out,
                        "--rendering-size", 96, 64, display=xvfb_display)
    if result.returncode != 0 and "OpenGL 4.3" in result.stderr:
        pytest.skip("no GL 4.3 context here")
    assert result.returncode == 0, result.stderr
    shot = np.asarray(Image.open(out).convert("RGB"))
    assert shot.shape == (64, 96, 3)
    assert (shot.reshape(-1, 3) != 0).any(axis=1).mean() > 0.05  # the model is in view (black background)


@pytest.mark.parametrize("case", ["truncated", "missing", "bad_camera"])
def test_bad_input_is_one_line_error(model, tmp_path, case):
    folder, _ = model
    if case == "truncated":
        broken = tmp_path / "broken.ply"
        broken.write_bytes(point_cloud_path(folder, 100).read_bytes()[:500])
        args, needle = [broken], "broken.ply"
    elif case == "missing":
        args, needle = ["-m", tmp_path / "nowhere"], "nowhere"
    else:
        args, needle = ["-m", folder, "--camera", 9], "--camera 9"
    result = run_viewer(*args)
    assert result.returncode == 1
    # The model's cfg_args names a dataset that does not exist: one notice says so (as SIBR's
    # "loading from model path"), then exactly one error line.
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("splat-view: notice:")]
    assert len(lines) == 1 and lines[0].startswith("splat-view: error:") and needle in lines[0]
