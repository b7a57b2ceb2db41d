"""``splat-render --camera-path ... --video``: camera paths rendered to MP4 or PNG frames (CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from rasterizer import render, write_ply
from rasterizer.camera_paths import CameraPath, Keyframe, generate_path, load_camera_path, save_camera_path
from rasterizer.model_folder import point_cloud_path, write_cfg_args
from trainer.cli import render as render_cli
from trainer.scene import load_cameras

from test_render_cli import cfg_args
from test_train_support import known_gaussians, write_tiny_scene

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    source = write_tiny_scene(root / "scene", train=6, test=2, white=True)
    model = root / "model"
    write_ply(point_cloud_path(model, 30), known_gaussians())
    write_cfg_args(model, cfg_args(source, model))
    return source, model


def read_video(path) -> tuple[dict, list[np.ndarray]]:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    return meta, [np.frombuffer(frame, np.uint8).reshape(height, width, 3) for frame in reader]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def reference_frame(keyframe: Keyframe, size) -> np.ndarray:
    with torch.no_grad():
        image = render(known_gaussians(), keyframe.camera(*size), (1.0, 1.0, 1.0), backend="reference").image
    return (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def test_two_second_orbit_to_mp4(model_folder, tmp_path):
    source, model = model_folder
    video = tmp_path / "out" / "orbit.mp4"
    assert render_cli.main(["-m", str(model), "--camera-path", "orbit", "--video", str(video), "--seconds", "2",
                            "--fps", "10", "--video_size", "64", "48", "--quiet"]) == 0
    meta, frames = read_video(video)
    assert len(frames) == 20 and meta["size"] == (64, 48) and meta["fps"] == pytest.approx(10.0)
    assert not [p for p in video.parent.iterdir() if p.name != "orbit.mp4"]   # no temporary left
    # the frames are the model seen along the orbit (H.264 is lossy: compare by PSNR)
    expected = generate_path("orbit", load_cameras(source), seconds=2, fps=10).sample()
    for index in (0, 7, 19):
        assert psnr(frames[index], reference_frame(expected[index], (64, 48))) > 28
    # the orbit moves: consecutive frames differ, and it comes back near the start
    assert psnr(frames[0], frames[10]) < psnr(frames[0], frames[19])


def test_json_path_to_png_frames(model_folder, tmp_path):
    _, model = model_folder
    cameras = load_cameras(model_folder[0])
    path = CameraPath([Keyframe.from_camera(c) for c in cameras[:3]], seconds=1.0, fps=6.0)
    file = tmp_path / "flight.json"
    save_camera_path(file, path, 40, 30)
    assert render_cli.main(["-m", str(model), "--camera-path", str(file), "--quiet"]) == 0
    folder = model / "path_flight" / "ours_30" / "renders"
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:05d}.png" for i in range(6)]
    recorded = load_camera_path(file).recorded_frames
    for index in (0, 5):   # PNG is lossless: exactly the reference rasterizer's frame
        np.testing.assert_array_equal(np.asarray(Image.open(folder / f"{index:05d}.png")),
                                      reference_frame(recorded[index], (40, 30)))
    # --fps retimes the path (resampled from its keyframes); an MP4 rounds an odd size down to even
    video = tmp_path / "flight.mp4"
    assert render_cli.main(["-m", str(model), "--camera-path", str(file), "--fps", "12", "--video", str(video),
                            "--video_size", "41", "31", "--quiet"]) == 0
    meta, frames = read_video(video)
    assert len(frames) == 12 and meta["size"] == (40, 30)


def test_interrupted_render_leaves_no_video(model_folder, tmp_path, monkeypatch):
    _, model = model_folder
    import trainer.video as video_module

    calls = []
    real_render = video_module.render

    def interrupt_after_three(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return real_render(*args, **kwargs)

    monkeypatch.setattr(video_module, "render", interrupt_after_three)
    video = tmp_path / "cut.mp4"
    assert render_cli.main(["-m", str(model), "--camera-path", "spiral", "--video", str(video), "--seconds", "1",
                            "--video_size", "32", "24", "--quiet"]) == 130
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flags, message", [
    (["--camera-path", "orbit", "--fps", "0"], "--fps: must be a number > 0.0"),
    (["--camera-path", "orbit", "--seconds", "-1"], "--seconds: must be a number > 0.0"),
    (["--camera-path", "orbit", "--video_size", "64", "x"], "--video_size: must be an integer >= 1, got 'x'"),
    (["--video", "a.mp4"], "--video needs --camera-path"),
    (["--camera-path", "orbit", "--video", "a.avi"], "must end in .mp4"),
    (["--camera-path", "zigzag"], "give a .json file or one of orbit, spiral, interp"),
])
def test_bad_flags_exit_2_with_one_line(model_folder, flags, message, capsys):
    _, model = model_folder
    with pytest.raises(SystemExit) as caught:
        render_cli.main(["-m", str(model), *flags])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert caught.value.code == 2 and error.startswith("splat-render: error:") and message in error


def test_missing_or_broken_path_file_is_one_line(model_folder, tmp_path, capsys):
    _, model = model_folder
    assert render_cli.main(["-m", str(model), "--camera-path", str(tmp_path / "none.json"), "--quiet"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("splat-render: error:") and "none.json" in error and "\n" not in error
    broken = tmp_path / "broken.json"
    broken.write_text('{"keyframes": [{"matrix": [1, 2, 3]}]}')
    assert render_cli.main(["-m", str(model), "--camera-path", str(broken), "--quiet"]) == 1
    error = capsys.readouterr().err.strip()
    assert "broken.json" in error and "keyframes[0]" in error and "\n" not in error
