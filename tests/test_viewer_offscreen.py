"""``splat-view --offscreen`` (a headless EGL framebuffer instead of a window), ``-s SOURCE``
cameras, and the CUDA drawing path with CUDA-GL interop (GPU only), in child processes:
PyOpenGL picks its platform (EGL here, GLX for the window tests) once per process."""

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from rasterizer import render
from test_train_support import known_gaussians, orbit_camera
from test_viewer_cli import psnr, write_model

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")


def run_python(args, timeout=180):
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    return subprocess.run([sys.executable, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout)


def skip_without_egl(result):
    if result.returncode != 0 and "no offscreen OpenGL context" in result.stderr:
        pytest.skip(f"no EGL context here: {result.stderr.strip()[-200:]}")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("offscreen") / "model"
    return write_model(folder, 7, str(folder / "no-dataset"))


def reference_image(camera) -> np.ndarray:
    with torch.no_grad():
        image = render(known_gaussians(), camera, (1.0, 1.0, 1.0), backend="reference").image
    return (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


@pytest.mark.parametrize("backend", ["gl", "gl-compute", pytest.param("cuda", marks=needs_cuda)])
def test_offscreen_screenshot_matches_the_reference(model, tmp_path, backend):
    folder, cameras = model
    out = tmp_path / "shot.png"
    result = run_python(["-m", "viewer.cli", "-m", folder, "--camera", 2, "--frames", 2, "--offscreen",
                         "--backend", backend, "--screenshot", out])
    skip_without_egl(result)
    assert result.returncode == 0, result.stderr
    shot = np.asarray(Image.open(out).convert("RGB"))
    expected = reference_image(cameras[2])
    assert shot.shape == expected.shape
    # gl: back-to-front blending without the 1e-4 early stop; cuda and gl-compute: the
    # reference's tile algorithm, rounded to 8 bits once.
    assert psnr(shot, expected) >= (30.0 if backend == "gl" else 45.0)


def test_offscreen_needs_frames(model):
    folder, _ = model
    result = run_python(["-m", "viewer.cli", "-m", folder, "--offscreen"])
    assert result.returncode == 2 and "--offscreen needs --frames" in result.stderr


def write_nerf_dataset(folder, cameras) -> None:
    """A NeRF-synthetic folder whose frames are ``cameras`` (OpenCV world-to-camera -> Blender
    camera-to-world), with tiny placeholder images of the cameras' size."""
    folder.mkdir(parents=True)
    (folder / "train").mkdir()
    frames = []
    for i, camera in enumerate(cameras):
        c2w = np.linalg.inv(camera.world_to_camera.numpy())
        c2w[:3, 1:3] *= -1   # OpenCV (y down, z forward) -> OpenGL/Blender (y up, z back)
        Image.new("RGB", (camera.width, camera.height), (128, 128, 128)).save(folder / "train" / f"r_{i}.png")
        frames.append({"file_path": f"./train/r_{i}", "transform_matrix": c2w.tolist()})
    fov_x = 2 * math.atan(cameras[0].width / (2 * cameras[0].fx))
    (folder / "transforms_train.json").write_text(json.dumps({"camera_angle_x": fov_x, "frames": frames}))


def test_cameras_come_from_the_source_dataset(model, tmp_path):
    """-s SOURCE gives the dataset's cameras (here: two poses cameras.json lacks); an unreadable
    dataset falls back to cameras.json with one notice."""
    from viewer.scene_source import load_viewer_input

    folder, json_cameras = model
    dataset_cameras = [orbit_camera(angle) for angle in (0.4, 2.9)]
    write_nerf_dataset(tmp_path / "dataset", dataset_cameras)
    notices = []
    opened = load_viewer_input(folder, source=tmp_path / "dataset", notice=notices.append)
    assert notices == [] and len(opened.cameras) == 2
    for got, expected in zip(opened.cameras, dataset_cameras):
        assert torch.allclose(got.world_to_camera, expected.world_to_camera, atol=1e-9)
        assert (got.width, got.height) == (expected.width, expected.height)
        assert got.fx == pytest.approx(expected.fx)
    fallback = load_viewer_input(folder, notice=notices.append)   # cfg_args names a missing folder
    assert len(notices) == 1 and "no-dataset" in notices[0] and "cameras.json" in notices[0]
    assert len(fallback.cameras) == len(json_cameras)
    for got, expected in zip(fallback.cameras, json_cameras):   # cameras.json stores float text
        assert torch.allclose(got.world_to_camera, expected.world_to_camera, atol=1e-9)


def test_source_cameras_of_a_colmap_scene(shared_data):
    from trainer.scene import load_cameras

    cameras = load_cameras(shared_data("statuette"))
    assert len(cameras) == 23
    names = [c.image_name for c in cameras]
    assert names == sorted(names)


INTEROP_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    from viewer.window.egl_context import require_egl_platform
    require_egl_platform()
    from viewer.window.surfaces import OffscreenSurface, require_opengl_library
    require_opengl_library(offscreen=True)
    from viewer.backends.cuda_view import CudaSplatRenderer, interop_devices
    from viewer.backends.gl_splats import read_framebuffer
    sys.path.insert(0, "tests")
    from test_train_support import known_gaussians, orbit_camera
    device = torch.device("cuda", 0)
    surface = OffscreenSurface(160, 120, cuda_device=0)
    notices = []
    out = {"interop_devices": interop_devices()}
    for interop in (True, False):
        renderer = CudaSplatRenderer(known_gaussians(), device, interop=interop, notice=notices.append)
        frames = []
        for size, angle in (((160, 120), 0.3), ((96, 64), 1.2), ((160, 120), 2.0)):   # resizes re-register
            camera = orbit_camera(angle).resized(*size)
            surface.bind()
            renderer.draw(camera, (0.1, 0.2, 0.3))
            shown = read_framebuffer(*size)   # float RGB [3, H, W], rows flipped back to top-first
            expected = renderer.render_rgba(camera, (0.1, 0.2, 0.3))[..., :3].permute(2, 0, 1).float().cpu() / 255
            frames.append(float((shown - expected).abs().max()))
        out["interop" if interop else "host"] = {"max_error": max(frames), "used_interop": renderer.interop is not None}
        renderer.release()
    out["notices"] = notices
    surface.release()
    print("RESULT" + json.dumps(out))
""")


@needs_cuda
def test_cuda_frames_reach_gl_exactly_with_and_without_interop():
    """The texture shown is the rendered RGBA8 image, pixel for pixel, through interop and
    through the host copy, across resizes (unregister, re-create, register)."""
    result = run_python(["-c", INTEROP_SCRIPT])
    skip_without_egl(result)
    assert result.returncode == 0, result.stderr
    out = json.loads([line for line in result.stdout.splitlines() if line.startswith("RESULT")][-1][6:])
    assert 0 in out["interop_devices"], out
    assert out["interop"]["used_interop"] is True and out["interop"]["max_error"] == 0.0
    assert out["host"]["used_interop"] is False and out["host"]["max_error"] == 0.0
    assert len(out["notices"]) == 1 and "--no_interop" in out["notices"][0]   # one notice, for the host run
