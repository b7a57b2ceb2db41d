"""trainer.metrics (L1, PSNR, SSIM, LPIPS) and the splat-metrics command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F
from PIL import Image

from trainer.cli.metrics import main as metrics_main
from trainer.metrics import LPIPS, LPIPS_DIR_ENV, l1_loss, load_lpips, psnr, ssim


@pytest.fixture(autouse=True)
def one_thread():
    """Tensors here are tiny: intra-op threads only add overhead (10x on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----- independent references ------------------------------------------------------
def reference_ssim(img: np.ndarray, gt: np.ndarray) -> float:
    """Float64 SSIM of [C,H,W] arrays: 11×11 Gaussian σ=1.5, zero padding, C1=0.01², C2=0.03²."""
    x = np.arange(11) - 5
    g = np.exp(-x ** 2 / (2 * 1.5 ** 2))
    g /= g.sum()
    window = np.outer(g, g)

    def blur(a):
        return np.stack([scipy.ndimage.correlate(c, window, mode="constant", cval=0.0) for c in a])

    mu1, mu2 = blur(img), blur(gt)
    s11, s22, s12 = blur(img * img) - mu1 ** 2, blur(gt * gt) - mu2 ** 2, blur(img * gt) - mu1 * mu2
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 ** 2 + mu2 ** 2 + c1) * (s11 + s22 + c2))
    return float(m.mean())


# torchvision vgg16 conv layers: (index in `features`, in channels, out channels)
VGG_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
             (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512),
             (26, 512, 512), (28, 512, 512)]


def random_vgg_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A full torchvision-style vgg16 state dict (classifier keys included, as in the real file)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for index, cin, cout in VGG_CONVS:
        state[f"features.{index}.weight"] = torch.randn(cout, cin, 3, 3, generator=gen) * math.sqrt(2 / (9 * cin))
        state[f"features.{index}.bias"] = torch.randn(cout, generator=gen) * 0.01
    state["classifier.0.weight"] = torch.zeros(4, 8)  # ignored by the loader
    return state


def random_lin_state(seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen)
            for k, c in enumerate([64, 128, 256, 512, 512])}


def reference_lpips(img: torch.Tensor, gt: torch.Tensor, vgg: dict, lin: dict) -> torch.Tensor:
    """LPIPS from the recipe, with F.conv2d on the raw state dicts; img, gt: [B,3,H,W] in [0,1]."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    stages = [[0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]]  # relu1_2 ... relu5_3

    def features(x):
        out = []
        x = (x - shift) / scale
        for n, stage in enumerate(stages):
            if n:
                x = F.max_pool2d(x, 2)
            for i in stage:
                x = F.relu(F.conv2d(x, vgg[f"features.{i}.weight"], vgg[f"features.{i}.bias"], padding=1))
            out.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    total = 0
    for k, (a, b) in enumerate(zip(features(img), features(gt))):
        total = total + F.conv2d((a - b) ** 2, lin[f"lin{k}.model.1.weight"]).mean((1, 2, 3))
    return total


# ----- L1 / PSNR / SSIM --------------------------------------------------------------
def test_identical_images():
    img = torch.rand(3, 20, 24)
    assert psnr(img, img.clone()).item() == math.inf
    assert ssim(img, img.clone()).item() == pytest.approx(1.0, abs=1e-6)
    assert l1_loss(img, img).item() == 0.0


def test_psnr_constant_offset():
    gt = torch.full((3, 16, 16), 0.25, dtype=torch.float64)
    # mse = 0.1² = 0.01 → 20·log10(1/0.1) = 20 dB; 0.05² → 20·log10(20)
    assert psnr(gt + 0.1, gt).item() == pytest.approx(20.0, abs=1e-9)
    assert psnr(gt - 0.05, gt).item() == pytest.approx(20 * math.log10(20), abs=1e-9)
    assert l1_loss(gt + 0.1, gt).item() == pytest.approx(0.1)


def test_psnr_over_all_channels():
    gt = torch.zeros(3, 8, 8, dtype=torch.float64)
    img = gt.clone()
    img[0] = 0.3  # mse = 0.09 / 3 over all channels (not per channel)
    assert psnr(img, gt).item() == pytest.approx(-10 * math.log10(0.03), abs=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ssim_matches_scipy(dtype):
    gen = torch.Generator().manual_seed(3)
    gt = torch.rand(3, 23, 31, generator=gen, dtype=torch.float64)
    img = (gt + 0.15 * torch.randn(3, 23, 31, generator=gen, dtype=torch.float64)).clamp(0, 1)
    expected = reference_ssim(img.numpy(), gt.numpy())
    # float64 agrees to ~1e-7 only: like the reference, the window is normalised in float32
    got = ssim(img.to(dtype), gt.to(dtype))
    assert got.dtype == dtype and got.shape == ()
    assert got.item() == pytest.approx(expected, abs=1e-5 if dtype == torch.float32 else 1e-6)
    # a different structure: two unrelated images
    other = torch.rand(3, 23, 31, generator=gen, dtype=torch.float64)
    assert ssim(other.to(dtype), gt.to(dtype)).item() == pytest.approx(
        reference_ssim(other.numpy(), gt.numpy()), abs=1e-5 if dtype == torch.float32 else 1e-6)


def test_ssim_gradcheck():
    gen = torch.Generator().manual_seed(4)
    img = torch.rand(3, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    gt = torch.rand(3, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ssim, (img, gt))
    batch = torch.rand(2, 3, 12, 13, generator=gen, dtype=torch.float64, requires_grad=True)
    other = batch.detach().flip(0).clone()  # not a view: gradcheck perturbs `batch` in place
    assert torch.autograd.gradcheck(lambda a: 1 - ssim(a, other), (batch,), fast_mode=True)


def test_batch_is_per_image():
    gen = torch.Generator().manual_seed(5)
    img, gt = torch.rand(4, 3, 17, 19, generator=gen), torch.rand(4, 3, 17, 19, generator=gen)
    batch_ssim, batch_psnr = ssim(img, gt), psnr(img, gt)
    assert batch_ssim.shape == (4,) and batch_psnr.shape == (4,)
    for b in range(4):
        assert batch_ssim[b].item() == pytest.approx(ssim(img[b], gt[b]).item(), abs=1e-6)
        assert batch_psnr[b].item() == pytest.approx(psnr(img[b], gt[b]).item(), abs=1e-5)


# ----- LPIPS -----------------------------------------------------------------------------
def test_lpips_loads_torchvision_and_lpips_keys():
    vgg, lin = random_vgg_state(), random_lin_state()
    model = LPIPS()
    model.vgg.load_torchvision_state_dict(vgg)  # strict on features.* keys and shapes
    model.load_lpips_state_dict(lin)  # strict on lin<k>.model.1.weight
    assert torch.equal(model.vgg.features[28].weight, vgg["features.28.weight"])
    assert torch.equal(model.lin4.model[1].weight, lin["lin4.model.1.weight"])
    with pytest.raises(RuntimeError):
        model.load_lpips_state_dict({"0.1.weight": lin["lin0.model.1.weight"]})

    gen = torch.Generator().manual_seed(6)
    img, gt = torch.rand(2, 3, 16, 24, generator=gen), torch.rand(2, 3, 16, 24, generator=gen)
    with torch.no_grad():
        got = model(img, gt)
        expected = reference_lpips(img, gt, vgg, lin)
        assert got.shape == (2,)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
        assert model(img[1], gt[1]).shape == ()
        assert model(img[1], gt[1]).item() == pytest.approx(got[1].item(), rel=1e-4)
        assert model(img, img.clone()).abs().max().item() == 0.0


def test_load_lpips_without_weights(tmp_path, monkeypatch):
    monkeypatch.setenv(LPIPS_DIR_ENV, str(tmp_path))
    model, reason = load_lpips("cpu")
    assert model is None
    assert "vgg16-397923af.pth" in reason and str(tmp_path) in reason


def test_load_lpips_from_env_dir(tmp_path, monkeypatch):
    torch.save(random_vgg_state(), tmp_path / "vgg16-397923af.pth")
    torch.save(random_lin_state(), tmp_path / "vgg.pth")
    monkeypatch.setenv(LPIPS_DIR_ENV, str(tmp_path))
    model, note = load_lpips("cpu")
    assert model is not None, note
    torch.save({"junk": torch.zeros(1)}, tmp_path / "vgg.pth")
    model, reason = load_lpips("cpu")
    assert model is None and "vgg.pth" in reason


# ----- splat-metrics ---------------------------------------------------------------------
def write_model(root: Path, methods=("ours_7000", "ours_30000"), views=3, size=(24, 16)) -> Path:
    rng = np.random.default_rng(7)
    for m, method in enumerate(methods):
        for folder in ("renders", "gt"):
            (root / "test" / method / folder).mkdir(parents=True)
        for v in range(views):
            gt = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            noise = rng.integers(-40 + 10 * m, 41 - 10 * m, gt.shape)
            render = np.clip(gt.astype(int) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(gt).save(root / "test" / method / "gt" / f"{v:05d}.png")
            # renders with alpha: only the first 3 channels count
            rgba = np.concatenate([render, np.full(render.shape[:2] + (1,), 99, np.uint8)], axis=2)
            Image.fromarray(rgba).save(root / "test" / method / "renders" / f"{v:05d}.png")
    return root


def load_png(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path))[..., :3].copy()).permute(2, 0, 1).float() / 255


def test_splat_metrics_end_to_end(tmp_path, monkeypatch, capsys):
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setenv(LPIPS_DIR_ENV, str(weights))  # empty: LPIPS skipped
    model = write_model(tmp_path / "model")
    assert metrics_main(["-m", str(model), "--quiet", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "LPIPS skipped" in out and "Method: ours_7000" in out and "  SSIM : " in out and "  PSNR : " in out

    results = json.loads((model / "results.json").read_text())
    per_view = json.loads((model / "per_view.json").read_text())
    assert list(results) == ["ours_7000", "ours_30000"] and list(per_view) == list(results)
    assert (model / "results.json").read_text().startswith('{\n "ours_7000": {\n  "SSIM": ')
    for method in results:
        assert set(results[method]) == {"SSIM", "PSNR"}
        assert list(per_view[method]["SSIM"]) == ["00000.png", "00001.png", "00002.png"]
        for name in per_view[method]["SSIM"]:
            render = load_png(model / "test" / method / "renders" / name)
            gt = load_png(model / "test" / method / "gt" / name)
            assert per_view[method]["SSIM"][name] == pytest.approx(ssim(render, gt).item(), abs=1e-6)
            assert per_view[method]["PSNR"][name] == pytest.approx(psnr(render, gt).item(), abs=1e-4)
        for metric in ("SSIM", "PSNR"):
            assert results[method][metric] == pytest.approx(np.mean(list(per_view[method][metric].values())),
                                                            abs=1e-5)
        assert f"  SSIM : {results[method]['SSIM']:>12.7f}" in out

    # with weights present, LPIPS is written and equals the module's value
    torch.save(random_vgg_state(), weights / "vgg16-397923af.pth")
    torch.save(random_lin_state(), weights / "vgg.pth")
    assert metrics_main(["--model_paths", str(model), "-q", "--device", "cpu"]) == 0
    assert "  LPIPS: " in capsys.readouterr().out
    results = json.loads((model / "results.json").read_text())
    per_view = json.loads((model / "per_view.json").read_text())
    lpips_model, _ = load_lpips("cpu")
    name = "00001.png"
    render = load_png(model / "test" / "ours_30000" / "renders" / name)
    gt = load_png(model / "test" / "ours_30000" / "gt" / name)
    with torch.no_grad():
        expected = lpips_model(render, gt).item()
    assert per_view["ours_30000"]["LPIPS"][name] == pytest.approx(expected, rel=1e-5)
    assert results["ours_30000"]["LPIPS"] == pytest.approx(np.mean(list(per_view["ours_30000"]["LPIPS"].values())))


def test_splat_metrics_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(LPIPS_DIR_ENV, str(tmp_path))
    no_test = tmp_path / "empty_model"
    no_test.mkdir()
    bad = write_model(tmp_path / "bad", methods=("ours_30000",), views=2)
    (bad / "test" / "ours_30000" / "gt" / "00001.png").unlink()
    good = write_model(tmp_path / "good", methods=("ours_30000",), views=1)

    assert metrics_main(["-m", str(no_test), str(bad), str(good), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert str(no_test / "test") in err[0]
    assert str(bad / "test" / "ours_30000") in err[1] and "00001.png" in err[1]
    assert not (bad / "results.json").exists()
    assert (good / "results.json").exists() and (good / "per_view.json").exists()


def test_splat_metrics_batches_give_the_same_values(tmp_path, monkeypatch, capsys):
    """Pairs measured several at a time (images of two sizes in one folder) give each view's
    values of one at a time, up to float rounding (the convolution runs over the batch); a
    batch size below 1 is refused."""
    monkeypatch.setenv(LPIPS_DIR_ENV, str(tmp_path))  # no weights: SSIM and PSNR
    model = write_model(tmp_path / "model", methods=("ours_7000",), views=5)
    small = np.random.default_rng(3).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    for folder in ("renders", "gt"):
        Image.fromarray(small if folder == "gt" else 255 - small).save(model / "test" / "ours_7000" / folder / "00005.png")
    per_view = {}
    for batch in ("1", "4"):
        assert metrics_main(["-m", str(model), "--quiet", "--device", "cpu", "--batch_size", batch]) == 0
        per_view[batch] = json.loads((model / "per_view.json").read_text())
    for metric, values in per_view["1"]["ours_7000"].items():
        assert list(values) == list(per_view["4"]["ours_7000"][metric]) and len(values) == 6
        for name, value in values.items():
            assert per_view["4"]["ours_7000"][metric][name] == pytest.approx(value, rel=1e-6), (metric, name)
    with pytest.raises(SystemExit) as exit_info:
        metrics_main(["-m", str(model), "--batch_size", "0"])
    assert exit_info.value.code == 2
    assert "must be an integer >= 1" in capsys.readouterr().err
