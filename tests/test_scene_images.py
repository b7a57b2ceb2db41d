"""Resolution rules and the uint8 image cache (decoded vs. encoded with read-ahead)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainer.scene import ImageCache, ImageSource, ResolutionRule, load_scene, view_image_float


# ----- resolution rules -----------------------------------------------------------------------
@pytest.mark.parametrize("r, expected", [(1, (45, 33)), (2, (22, 16)), (4, (11, 8)), (8, (6, 4))])
def test_divisors_round_like_python(r, expected):
    assert ResolutionRule(r).size(45, 33) == expected  # round(22.5) == 22, round(16.5) == 16


def test_default_caps_width_at_1600_with_one_notice():
    lines = []
    rule = ResolutionRule(-1, lines.append)
    assert rule.size(1600, 900) == (1600, 900)
    assert lines == []
    assert rule.size(2000, 1333) == (1600, 1066)  # s = 1.25: int(1066.4)
    assert rule.size(3200, 2000) == (1600, 1000)
    assert len(lines) == 1 and "1600" in lines[0]


def test_other_values_are_a_target_width():
    assert ResolutionRule(30).size(45, 33) == (30, 22)  # s = 1.5: int(22.0)
    assert ResolutionRule(1000).size(500, 100) == (1000, 200)  # upscaling, as the reference
    for bad in (0, -2):
        with pytest.raises(ValueError):
            ResolutionRule(bad)


def write_scene(source: Path, sizes: list[tuple[int, int]], rgba: bool = False) -> None:
    """A tiny transforms.json scene; frame i at x = i; compressible patterns (varying alpha)."""
    (source / "images").mkdir(parents=True)
    frames = []
    for i, (w, h) in enumerate(sizes):
        y, x = np.mgrid[:h, :w]
        channels = [(x * 7 + y * 3 + i * 11 + 40 * c) % 256 for c in range(3)] + [(x * 20) % 256]
        pixels = np.stack(channels[: 4 if rgba else 3], axis=-1).astype(np.uint8)
        Image.fromarray(pixels).save(source / "images" / f"{i:02d}.png")
        matrix = np.eye(4)
        matrix[0, 3] = i
        frames.append({"file_path": f"images/{i:02d}.png", "transform_matrix": matrix.tolist(),
                       "fl_x": 0.8 * w, "fl_y": 0.9 * w, "cx": 0.4 * w, "cy": 0.6 * h, "w": w, "h": h})
    (source / "transforms.json").write_text(json.dumps({"frames": frames}))


def test_loading_resolution_scales_intrinsics_and_pixels(tmp_path):
    write_scene(tmp_path / "s", [(2000, 10), (45, 33)])
    lines = []
    scene = load_scene(tmp_path / "s", log=lines.append)
    wide, small = scene.train_views
    assert (wide.camera.width, wide.camera.height) == (1600, 8)
    assert (wide.original_camera.width, wide.original_camera.height) == (2000, 10)
    assert wide.camera.fx == pytest.approx(0.8 * 2000 * 1600 / 2000)
    assert wide.camera.cy == pytest.approx(0.6 * 10 * 8 / 10)
    assert sum("1600" in line for line in lines) == 1
    assert any("bytes" in line and "Image cache" in line for line in lines)
    assert (small.camera.width, small.camera.height) == (45, 33)
    assert scene.images.get(wide.index).shape == (8, 1600, 3)

    half = load_scene(tmp_path / "s", resolution=2, quiet=True)
    view = half.train_views[1]
    assert (view.camera.width, view.camera.height) == (22, 16)
    assert view.camera.fx == pytest.approx(0.8 * 45 * 22 / 45)
    assert view.camera.fy == pytest.approx(0.9 * 45 * 16 / 33)
    expected = np.asarray(Image.open(view.image_path).resize((22, 16)))  # PIL default (bicubic)
    np.testing.assert_array_equal(half.images.get(view.index).numpy(), expected)

    target = load_scene(tmp_path / "s", resolution=30, quiet=True).train_views[1].camera
    assert (target.width, target.height) == (30, 22)


# ----- cache -------------------------------------------------------------------------------------
def test_encoded_cache_returns_the_decoded_pixels(tmp_path):
    write_scene(tmp_path / "s", [(61, 37), (80, 42), (36, 36), (45, 60)], rgba=True)
    decoded = load_scene(tmp_path / "s", resolution=2, white_background=True, quiet=True)
    assert decoded.images.mode == "decoded"
    assert decoded.images.nbytes == sum(v.camera.width * v.camera.height * 3 for v in decoded.views)

    file_bytes = sum(v.image_path.stat().st_size for v in decoded.views)
    budget = decoded.images.nbytes - 1
    assert file_bytes <= budget  # so the encoded files fit and are held in memory
    encoded = load_scene(tmp_path / "s", resolution=2, white_background=True, quiet=True,
                         cache_budget_bytes=budget)
    assert encoded.images.mode == "encoded"
    assert encoded.images.nbytes == file_bytes  # the PNG files held in memory
    order = [3, 1, 0, 2, 1]
    encoded.images.prefetch(order)
    for position, index in enumerate(order):
        encoded.images.prefetch(order[position + 1:])
        image = encoded.images.get(index)
        assert image.dtype == torch.uint8
        torch.testing.assert_close(image, decoded.images.get(index), rtol=0, atol=0)
    encoded.close()

    paths_only = load_scene(tmp_path / "s", quiet=True, cache_budget_bytes=10)
    assert paths_only.images.mode == "encoded" and paths_only.images.nbytes == 0
    for view in paths_only.views:
        image = paths_only.images.get(view.index)
        assert image.shape == (view.camera.height, view.camera.width, 3)
    paths_only.close()


def test_prefetch_bounds_and_close(tmp_path):
    write_scene(tmp_path / "s", [(8, 8)] * 6)
    sources = [ImageSource(tmp_path / "s" / "images" / f"{i:02d}.png", (8, 8)) for i in range(6)]
    cache = ImageCache(sources, budget_bytes=0, workers=2, readahead=2)
    assert cache.mode == "encoded"
    for _ in range(5):
        cache.prefetch(range(6))
    assert len(cache._pending) <= 4
    cache.close()
    assert cache.get(5).shape == (8, 8, 3)  # still usable after close, synchronously
    with ImageCache(sources, budget_bytes=10**9) as decoded:
        cache.prefetch([0])  # no-op in decoded mode
        torch.testing.assert_close(decoded.get(0), cache.get(0), rtol=0, atol=0)


def test_view_image_float():
    image = torch.tensor([[[0, 128, 255], [1, 2, 3]]], dtype=torch.uint8)  # [1, 2, 3]
    result = view_image_float(image)
    assert result.shape == (3, 1, 2) and result.dtype == torch.float32 and result.is_contiguous()
    torch.testing.assert_close(result[:, 0, 0], torch.tensor([0.0, 128 / 255, 1.0]))
    torch.testing.assert_close(result[:, 0, 1], torch.tensor([1.0, 2.0, 3.0]) / 255)


def test_cuda_device_without_cuda_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    write_scene(tmp_path / "s", [(8, 8)])
    with pytest.raises(ValueError, match="CUDA"):
        load_scene(tmp_path / "s", data_device="cuda", quiet=True)


def test_cpu_images_are_page_locked_where_cuda_is(tmp_path):
    """With CUDA present, images held on the CPU are page-locked, so the trainer's copy to the
    GPU does not hold up the host; without it they are ordinary memory."""
    write_scene(tmp_path / "s", [(8, 8), (10, 6)])
    scene = load_scene(tmp_path / "s", data_device="cpu", quiet=True)
    image = scene.images.get(1)
    assert image.device.type == "cpu" and image.shape == (6, 10, 3)
    assert image.is_pinned() == torch.cuda.is_available()
    if torch.cuda.is_available():
        copied = image.to("cuda", non_blocking=True)
        torch.cuda.synchronize()
        assert torch.equal(copied.cpu(), image)


@pytest.mark.parametrize("size", [(16, 12), (8, 6)])  # native size, and resized by -r 2
def test_kept_alpha_composites_like_loading_over_that_background(tmp_path, size):
    """With keep_alpha the cache holds premultiplied RGB + alpha; compositing it over a
    background gives what loading with that background gives (up to uint8 rounding)."""
    write_scene(tmp_path / "s", [(16, 12)], rgba=True)
    resolution = 1 if size == (16, 12) else 2
    kept = load_scene(tmp_path / "s", resolution=resolution, keep_alpha=True, quiet=True)
    image = kept.images.get(0)
    assert image.shape == (size[1], size[0], 4)
    rgb, alpha = image[..., :3].int(), image[..., 3:].int()
    assert (rgb <= alpha).all()  # premultiplied colour never exceeds its alpha
    for white in (False, True):
        loaded = load_scene(tmp_path / "s", resolution=resolution, white_background=white, quiet=True)
        background = torch.full((3,), 1.0 if white else 0.0)
        torch.testing.assert_close(view_image_float(image, background),
                                   view_image_float(loaded.images.get(0)), rtol=0, atol=2.5 / 255)
    # A background that is neither: the exact blend of the stored values.
    background = torch.tensor([0.2, 0.5, 0.9])
    expected = image[..., :3].float() / 255 + background * (1 - image[..., 3:].float() / 255)
    torch.testing.assert_close(view_image_float(image, background), expected.permute(2, 0, 1))
    with pytest.raises(ValueError, match="background"):
        view_image_float(image)


def test_kept_alpha_on_opaque_images_is_fully_opaque(tmp_path):
    write_scene(tmp_path / "s", [(8, 8)])
    image = load_scene(tmp_path / "s", keep_alpha=True, quiet=True).images.get(0)
    assert image.shape == (8, 8, 4) and (image[..., 3] == 255).all()
