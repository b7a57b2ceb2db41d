"""``splat-render`` and ``splat-metrics`` on a model folder: the reference's layout and values."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from rasterizer import render, write_ply
from rasterizer.model_folder import point_cloud_path, write_cfg_args
from trainer.cli import metrics as metrics_cli
from trainer.cli import render as render_cli
from trainer.scene import load_scene

from test_train_support import known_gaussians, write_tiny_scene


def cfg_args(source, model, **overrides) -> dict:
    values = dict(sh_degree=0, source_path=str(source), model_path=str(model), images="images",
                  depths="", resolution=-1, white_background=True, train_test_exp=False,
                  data_device="cuda", eval=True)
    values.update(overrides)
    return values


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A model whose Gaussians are the ones the tiny scene was rendered from."""
    root = tmp_path_factory.mktemp("render")
    source = write_tiny_scene(root / "scene", train=4, test=2, white=True)
    model = root / "model"
    write_ply(point_cloud_path(model, 7), known_gaussians())
    write_ply(point_cloud_path(model, 30), known_gaussians())
    write_cfg_args(model, cfg_args(source, model))
    return source, model


def read_png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_layout_numbering_and_values(model_folder):
    source, model = model_folder
    assert render_cli.main(["-m", str(model), "--quiet"]) == 0
    for split, count in (("train", 4), ("test", 2)):
        folder = model / split / "ours_30"  # the largest saved iteration by default
        names = [f"{i:05d}.png" for i in range(count)]
        assert sorted(p.name for p in (folder / "renders").iterdir()) == names
        assert sorted(p.name for p in (folder / "gt").iterdir()) == names
    assert not (model / "train" / "ours_7").exists()

    scene = load_scene(source, white_background=True, eval=True, quiet=True)
    gaussians = known_gaussians()
    for index, view in enumerate(scene.test_views):
        with torch.no_grad():
            expected = render(gaussians, view.camera, (1.0, 1.0, 1.0), backend="reference").image.clamp(0, 1)
        expected_u8 = (expected.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)  # save_image rounding
        np.testing.assert_array_equal(read_png(model / "test" / "ours_30" / "renders" / f"{index:05d}.png"),
                                      expected_u8)
        np.testing.assert_array_equal(read_png(model / "test" / "ours_30" / "gt" / f"{index:05d}.png"),
                                      scene.images.get(view.index).numpy())


def test_flags_override_cfg_args(model_folder):
    _, model = model_folder
    assert render_cli.main(["-m", str(model), "--iteration", "7", "--skip_train", "-r", "2", "--quiet"]) == 0
    assert not (model / "train" / "ours_7").exists()
    rendered = read_png(model / "test" / "ours_7" / "renders" / "00000.png")
    assert rendered.shape == (16, 16, 3)  # -r 2 on 32x32 images


def test_metrics_on_rendered_model(model_folder):
    _, model = model_folder
    assert render_cli.main(["-m", str(model), "--skip_train", "--quiet"]) == 0
    assert metrics_cli.main(["-m", str(model), "--quiet"]) == 0
    results = json.loads((model / "results.json").read_text())
    # Rendered from the very Gaussians that made the ground truth: near-identical images.
    assert results["ours_30"]["PSNR"] > 45 and results["ours_30"]["SSIM"] > 0.99


def test_missing_model_gives_one_line_error(tmp_path, capsys):
    assert render_cli.main(["-m", str(tmp_path / "nowhere"), "--quiet"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("splat-render: error:") and "cfg_args" in error and "\n" not in error


def test_missing_iteration_names_the_folder(model_folder, capsys):
    _, model = model_folder
    assert render_cli.main(["-m", str(model), "--iteration", "123", "--quiet"]) == 1
    assert "iteration_123" in capsys.readouterr().err


def test_batches_render_the_same_images(model_folder, tmp_path):
    """--batch_size changes how many views share a render, not the images (and 0 is refused)."""
    _, model = model_folder
    outputs = {}
    for batch in ("1", "3"):
        assert render_cli.main(["-m", str(model), "--iteration", "7", "--quiet", "--batch_size", batch]) == 0
        outputs[batch] = {p.relative_to(model): p.read_bytes() for p in sorted((model / "train" / "ours_7").rglob("*.png"))}
    assert len(outputs["1"]) == 8 and outputs["1"] == outputs["3"]
    with pytest.raises(SystemExit) as exit_info:
        render_cli.main(["-m", str(model), "--batch_size", "0"])
    assert exit_info.value.code == 2
