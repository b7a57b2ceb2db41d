"""``splat-train --fast``: the resolution schedule (trainer/resolution_schedule.py) and its use in
the training loop."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pytest
import torch

from rasterizer import Camera, render
from test_train_support import known_gaussians, orbit_camera, tiny_config, write_tiny_scene
from trainer.resolution_schedule import (MAX_FACTOR, ResolutionSchedule, SmallViews, at_factor, downscaled_photo,
                                         energy_kept)
from trainer.train import train


def noise(seed: int, size: int = 256) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(size, size, 3, generator=generator) * 255).to(torch.uint8)


def gradient(size: int = 256) -> torch.Tensor:
    return torch.linspace(0, 255, size)[None, :, None].expand(size, size, 3).to(torch.uint8).contiguous()


def test_energy_kept_is_one_at_full_size_and_falls_with_the_scale():
    values = energy_kept(noise(0), [1, 1.5, 2, 3, 4, 8])
    assert values[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(values, values[1:]))
    # White noise spreads its energy evenly over the frequencies: half the size per side keeps
    # about a quarter (the DC term adds a little).
    assert 0.22 < values[2] < 0.30
    # A smooth ramp keeps most of its energy at an eighth of the size.
    assert energy_kept(gradient(), [8])[0] > 0.5


def test_noise_starts_at_half_size_and_smooth_photos_at_the_largest_factor():
    noisy = ResolutionSchedule.from_photos([noise(1), noise(2)], end=1000)
    assert 1.8 < noisy.start_scale < 2.3
    smooth = ResolutionSchedule.from_photos([gradient()], end=1000)
    assert smooth.start_scale == pytest.approx(MAX_FACTOR)
    # The least compressible photo decides the start: noise next to the ramp starts near 2.
    mixed = ResolutionSchedule.from_photos([gradient(), noise(3)], end=1000)
    assert mixed.start_scale == pytest.approx(noisy.start_scale, abs=0.2)


def test_small_photos_are_never_rendered_below_32_pixels():
    schedule = ResolutionSchedule.from_photos([gradient(64)], end=1000)
    assert schedule.start_scale == pytest.approx(2.0)
    assert schedule.factor(1) <= 2
    assert ResolutionSchedule.from_photos([gradient(40)], end=1000).factor(1) == 1


def test_factors_fall_one_by_one_to_full_size_at_the_end():
    schedule = ResolutionSchedule.from_photos([gradient()], end=3000)
    factors = [schedule.factor(it) for it in range(1, 3200)]
    # Iteration 1 is just past the start: its scale is a little under start_scale.
    assert factors[0] in (int(schedule.start_scale), int(schedule.start_scale) - 1) and factors[0] >= 3
    assert all(a >= b for a, b in zip(factors, factors[1:]))
    assert set(factors) == set(range(1, factors[0] + 1))   # every factor in between is used
    assert schedule.factor(3000) == 1 and schedule.factor(2999) >= 1
    assert all(last < 3000 for last in schedule.until)
    assert schedule.describe().endswith(f"full resolution from {schedule.until[0] + 1}")


def test_no_schedule_without_photos_or_room():
    assert ResolutionSchedule.from_photos([], end=1000).factor(1) == 1
    assert ResolutionSchedule.from_photos([gradient()], end=0).factor(1) == 1
    assert "full resolution throughout" in ResolutionSchedule(1.0, (), 100).describe()


def test_downscaled_photo_averages_areas():
    photo = torch.arange(16, dtype=torch.uint8).reshape(4, 4, 1).expand(4, 4, 3).contiguous() * 10
    small = downscaled_photo(photo, 2, 2)
    assert small.shape == (2, 2, 3) and small.dtype == torch.uint8
    expected = torch.tensor([[(0 + 10 + 40 + 50) / 4, (20 + 30 + 60 + 70) / 4],
                             [(80 + 90 + 120 + 130) / 4, (100 + 110 + 140 + 150) / 4]]).round()
    assert torch.equal(small[..., 0], expected.to(torch.uint8))


def test_downscaled_alpha_keeps_the_colour_of_what_is_there():
    """Red at half opacity next to a transparent (black) pixel: the average is red at a quarter
    opacity, not a darker red, so that compositing it gives the average of the composites."""
    photo = torch.tensor([[[255, 0, 0, 128], [0, 0, 0, 0]]], dtype=torch.uint8)
    small = downscaled_photo(photo, 1, 1)
    assert small.tolist() == [[[255, 0, 0, 64]]]
    clear = downscaled_photo(torch.zeros(2, 2, 4, dtype=torch.uint8), 1, 1)
    assert clear.tolist() == [[[0, 0, 0, 0]]]


def test_a_smaller_camera_sees_the_area_average_of_the_photo():
    """The scaled intrinsics and the area average agree on where pixels are: the render at half
    size matches the halved full-size render far better than one shifted by half a pixel."""
    gaussians, camera = known_gaussians(), orbit_camera(0.4).resized(96, 96)
    with torch.no_grad():
        full = render(gaussians, camera, (0.0, 0.0, 0.0), backend="reference").image
        photo = (full.clamp(0, 1).permute(1, 2, 0) * 255).round().to(torch.uint8)
        (view,), (small_photo,) = at_factor([_View(camera)], [photo], 2)
        assert (view.camera.width, view.camera.height) == (48, 48)
        assert view.camera.fx == pytest.approx(camera.fx / 2) and view.camera.cx == pytest.approx(camera.cx / 2)
        target = small_photo.permute(2, 0, 1).float() / 255
        aligned = render(gaussians, view.camera, (0.0, 0.0, 0.0), backend="reference").image.clamp(0, 1)
        shifted_camera = replace(view.camera, cx=view.camera.cx + 0.5)
        shifted = render(gaussians, shifted_camera, (0.0, 0.0, 0.0), backend="reference").image.clamp(0, 1)
    aligned_error = (aligned - target).abs().mean()
    assert aligned_error < 0.5 * (shifted - target).abs().mean()
    assert aligned_error < 0.02


@dataclass(frozen=True)
class _View:
    """A stand-in for trainer.scene.View (a dataclass with a camera)."""

    camera: Camera
    index: int = 0


def test_at_factor_keeps_photos_another_process_renders():
    camera = orbit_camera(0.1).resized(64, 40)
    views, photos = at_factor([_View(camera)], [None], 4)
    assert photos == [None] and (views[0].camera.width, views[0].camera.height) == (16, 10)


def test_small_views_are_made_once_per_factor():
    """The same view at the same factor is the same camera object (the CUDA backend's upload
    cache is keyed by it) and the same photo; a new factor makes new ones."""
    views = [_View(orbit_camera(0.1).resized(64, 40), index=3), _View(orbit_camera(0.7).resized(64, 40), index=5)]
    photos = [torch.full((40, 64, 3), 100, dtype=torch.uint8), torch.full((40, 64, 3), 200, dtype=torch.uint8)]
    small = SmallViews()
    first_views, first_photos = small.at(views, photos, 2)
    again_views, again_photos = small.at(views[::-1], photos[::-1], 2)
    assert again_views[1] is first_views[0] and again_photos[1] is first_photos[0]
    assert (first_views[1].camera.width, first_photos[1].shape) == (32, (20, 32, 3))
    assert int(first_photos[1][0, 0, 0]) == 200
    remote_views, remote_photos = small.at(views[:1], [None], 2)   # another process's photo
    assert remote_photos == [None] and remote_views[0].camera.width == 32
    quarter_views, _ = small.at(views, photos, 4)
    assert quarter_views[0].camera.width == 16 and small.at(views, photos, 4)[0][0] is quarter_views[0]
    assert small.at(views, photos, 1) == (views, photos)


def test_fast_training_renders_small_views_first_then_full_size(tmp_path, monkeypatch, capsys):
    """The training loop renders a step's views at the schedule's size (32x32 photos: half
    size, 16x16, to iteration 29), full size from the schedule's end (half the run: 30), test
    views at full size, and says when the size changes; the model it saves is an ordinary one."""
    scene = write_tiny_scene(tmp_path / "scene")
    monkeypatch.setattr("trainer.train.ResolutionSchedule.from_photos",
                        classmethod(lambda cls, photos, end: cls(2.5, (29,), end)))
    sizes: dict[int, set] = {}
    import trainer.train as training

    real_render = training.render

    def recording_render(gaussians, camera, *args, **kwargs):
        sizes.setdefault(current[0], set()).add((camera.width, camera.height))
        return real_render(gaussians, camera, *args, **kwargs)

    current = [0]
    monkeypatch.setattr(training, "render", recording_render)
    lines = []
    config = tiny_config(scene, tmp_path / "m", "--eval", "--iterations", "60", "--fast", "--test_iterations", "60",
                         "--densify_until_iter", "40")   # the schedule ends at 30, half the run
    config.script.quiet = False
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    result = train(config, hooks=[lambda trainer, it: current.__setitem__(0, it)],
                   log=lines.append)
    assert result.status == "completed"
    assert sizes[1] == {(16, 16)} and sizes[29] == {(16, 16)}
    assert sizes[30] == {(32, 32)}
    assert (32, 32) in sizes[60]   # the last step and the test views at 60
    text = "\n".join(lines) + capsys.readouterr().out   # lines during the progress bar go through it
    assert "--fast (not the reference): 1/2 to 29, full resolution from 30" in text
    assert "[ITER 1] --fast: training at 1/2 of full resolution" in text
    assert "[ITER 30] --fast: training at full resolution" in text
    assert (tmp_path / "m" / "point_cloud" / "iteration_60" / "point_cloud.ply").is_file()
    assert math.isfinite(result.metrics[60]["test"]["psnr"])
