"""The training fast path against the PyTorch path it replaces.

* the fused L1 + SSIM loss (``trainer/cuda/loss.cu``) against ``trainer.metrics`` on random
  renders and uint8 ground truths: loss within 1e-5, gradient within 1e-4 relative;
* the fused densification statistics against ``GaussianModel.add_densification_stats``;
* renders through a ``PairBudget`` (no host wait) against exact renders, and the overflow redo;
* the running progress values (``trainer.progress``) against the reference's EMA;
* a 2k-step training run on a real scene with and without the fast path (test PSNR ±0.1 dB).

The kernels compile anywhere (cuda-bindings + NVRTC); everything else needs an NVIDIA GPU.
"""

import dataclasses
import math
from collections.abc import Sequence

import pytest
import torch

from trainer.losses import STAT_L1, STAT_LOSS, STAT_MSE, STAT_SSIM, photometric_loss_torch
from trainer.metrics import l1_loss, ssim
from trainer.progress import EMA_WEIGHT, RunningStats
from trainer.scene import view_image_float

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")


def fast_path_available() -> bool:
    from trainer.losses import fused_loss_available

    return fused_loss_available()


needs_fast_path = pytest.mark.skipif(not torch.cuda.is_available() or not fast_path_available(),
                                     reason="needs an NVIDIA GPU with cuda-bindings + NVRTC")


def test_trainer_kernels_compile_for_hopper_without_a_gpu():
    pytest.importorskip("cuda.bindings.nvrtc", reason="cuda-bindings (splatview[cuda]) not installed")
    from rasterizer.cuda.compiler import compile_source
    from trainer.cuda import ADAM_SOURCE, DENSIFY_SOURCE, LOSS_SOURCE

    for source, kernels in ((LOSS_SOURCE, ("loss_forward", "loss_finalize", "loss_backward")),
                            (DENSIFY_SOURCE, ("densify_stats",)), (ADAM_SOURCE, ("adam_step",))):
        cubin = compile_source(source, "sm_90")
        assert cubin[:4] == b"\x7fELF"
        for kernel in kernels:
            assert kernel.encode() in cubin


def random_pair(height: int, width: int, channels: int, seed: int, device="cpu", batch: int | None = None):
    """A render with values beyond [0, 1] (the clamp matters) and exact 0/1 values (the clamp's
    boundary passes the gradient), and a uint8 ground truth of 3 or 4 channels."""
    generator = torch.Generator().manual_seed(seed)
    lead = () if batch is None else (batch,)
    image = torch.rand(*lead, 3, height, width, generator=generator) * 1.3 - 0.15
    flat = image.view(-1)
    flat[:7] = 0.0
    flat[7:14] = 1.0
    gt = torch.randint(0, 256, (*lead, height, width, channels), generator=generator, dtype=torch.uint8)
    if channels == 4:  # premultiplied: colour <= alpha
        gt[..., :3] = torch.minimum(gt[..., :3], gt[..., 3:])
    background = torch.rand(3, generator=generator)
    return image.to(device), gt.to(device), background.to(device)


def reference_loss(image, gt, background, lambda_dssim=0.2, dtype=torch.float32):
    """The trainer's loss before the fused kernel, written out from trainer.metrics."""
    render = image.to(dtype).clamp(0.0, 1.0)
    target = view_image_float(gt, background.float()).to(dtype)
    return (1.0 - lambda_dssim) * l1_loss(render, target) + lambda_dssim * (1.0 - ssim(render, target))


def test_torch_loss_statistics_columns():
    image, gt, background = random_pair(20, 24, 4, seed=1)
    loss, stats = photometric_loss_torch(image, gt, background, 0.2)
    target = view_image_float(gt, background)
    render = image.clamp(0, 1)
    assert stats.shape == (1, 4)
    torch.testing.assert_close(loss, reference_loss(image, gt, background))
    torch.testing.assert_close(stats[0, STAT_LOSS], loss)
    torch.testing.assert_close(stats[0, STAT_L1], l1_loss(render, target))
    torch.testing.assert_close(stats[0, STAT_SSIM], ssim(render, target))
    torch.testing.assert_close(stats[0, STAT_MSE], ((render - target) ** 2).mean())


@needs_fast_path
@pytest.mark.cuda
@pytest.mark.parametrize("height,width,channels,lambda_dssim", [
    (37, 53, 3, 0.2), (64, 48, 4, 0.2), (16, 16, 3, 0.7), (200, 300, 4, 0.2), (5, 130, 3, 1.0)])
def test_fused_loss_matches_the_reference_loss(height, width, channels, lambda_dssim):
    from trainer.cuda import fused_photometric_loss

    for seed in range(3):
        image, gt, background = random_pair(height, width, channels, seed, "cuda")
        image.requires_grad_(True)
        reference = reference_loss(image, gt, background, lambda_dssim)
        (expected_grad,) = torch.autograd.grad(reference, image)
        loss, stats = fused_photometric_loss(image, gt, background, lambda_dssim)
        (grad,) = torch.autograd.grad(loss * 3.0, image)  # an upstream factor reaches the kernel
        assert abs(loss.item() - reference.item()) <= 1e-5
        assert ((grad - 3.0 * expected_grad).norm() / (3.0 * expected_grad).norm()).item() <= 1e-4
        # Against float64 too: the fused loss is at least as accurate as the float32 path.
        exact = reference_loss(image.detach().double(), gt, background.double(), lambda_dssim)
        assert abs(loss.item() - exact.item()) <= 1e-5
        torch.testing.assert_close(stats[0, STAT_LOSS], loss.detach())
        _, torch_stats = photometric_loss_torch(image.detach(), gt, background, lambda_dssim)
        torch.testing.assert_close(stats, torch_stats, rtol=1e-5, atol=1e-6)


@needs_fast_path
@pytest.mark.cuda
def test_fused_loss_batch_is_the_sum_of_its_images():
    from trainer.cuda import fused_photometric_loss

    image, gt, background = random_pair(40, 72, 3, seed=5, device="cuda", batch=3)
    image.requires_grad_(True)
    loss, stats = fused_photometric_loss(image, gt, background, 0.2)
    (grad,) = torch.autograd.grad(loss, image)
    for b in range(3):
        single = image[b].detach().clone().requires_grad_(True)
        one, one_stats = fused_photometric_loss(single, gt[b], background, 0.2)
        (one_grad,) = torch.autograd.grad(one, single)
        torch.testing.assert_close(stats[b], one_stats[0])
        torch.testing.assert_close(grad[b], one_grad)
    torch.testing.assert_close(loss, stats[:, STAT_LOSS].sum())


@needs_fast_path
@pytest.mark.cuda
def test_fused_loss_rejects_mismatched_inputs():
    from trainer.cuda import fused_photometric_loss

    image, gt, background = random_pair(20, 20, 3, seed=0, device="cuda")
    with pytest.raises(ValueError, match="do not match"):
        fused_photometric_loss(image, gt[:10], background, 0.2)
    with pytest.raises(ValueError, match="uint8"):
        fused_photometric_loss(image, gt.float(), background, 0.2)


@needs_fast_path
@pytest.mark.cuda
def test_fused_densification_statistics_match():
    from trainer.model import GaussianModel
    from rasterizer import Gaussians

    generator = torch.Generator().manual_seed(3)
    n = 5000
    gaussians = Gaussians.from_points(torch.rand(n, 3, generator=generator), torch.rand(n, 3, generator=generator), 1)
    models = [GaussianModel.from_gaussians(gaussians, "cuda") for _ in range(2)]
    for step in range(4):
        views = 1 if step < 2 else 2
        grad = (torch.randn(views, n, 2, generator=generator) * 1e-3).cuda()
        radii = torch.randint(-2, 30, (views, n), generator=generator).clamp_min(0).to(torch.int32).cuda()
        if views == 1:
            grad, radii = grad[0], radii[0]
        models[0].add_render_statistics(grad, radii, 640, 480, fused=True)
        models[1].add_render_statistics(grad, radii, 640, 480, fused=False)
    for key in ("grad_accum", "denom", "max_radii"):
        torch.testing.assert_close(getattr(models[0], key), getattr(models[1], key), rtol=1e-6, atol=0), key


def test_running_stats_follow_the_reference_ema():
    stats = RunningStats(torch.device("cpu"), rows=4)
    values = [(0.5, 0.01), (0.4, 0.0), (0.3, 0.004), (0.35, 0.002), (0.2, 0.001), (0.25, 0.003), (0.1, 0.0005)]
    loss_ema, psnr_ema = 0.0, 0.0
    for step, (loss, mse) in enumerate(values, 1):
        stats.record(torch.tensor([loss, mse]))
        loss_ema = EMA_WEIGHT * loss + (1 - EMA_WEIGHT) * loss_ema
        if mse > 0:  # a perfect step (PSNR inf) leaves the running PSNR as it was
            psnr_ema = EMA_WEIGHT * 20 * math.log10(1 / math.sqrt(mse)) + (1 - EMA_WEIGHT) * psnr_ema
        if step == 4:  # four rows recorded: copied, folded on the next look
            assert stats.lagged()["loss"] == pytest.approx(loss_ema, rel=1e-6)
    current = stats.current()
    assert current["loss"] == pytest.approx(loss_ema, rel=1e-6)
    assert current["psnr"] == pytest.approx(psnr_ema, rel=1e-6)
    stats.load({"loss": 1.5, "psnr": 20.0})
    assert stats.current() == {"loss": 1.5, "psnr": 20.0}


@needs_fast_path
@pytest.mark.cuda
def test_running_stats_on_the_gpu_lag_and_catch_up():
    stats = RunningStats(torch.device("cuda"), rows=3)
    for step in range(7):
        stats.record(torch.tensor([1.0 / (step + 1), 0.01], device="cuda"))
    lagged = stats.lagged()
    current = stats.current()
    expected = 0.0
    for step in range(7):
        expected = EMA_WEIGHT / (step + 1) + (1 - EMA_WEIGHT) * expected
    assert current["loss"] == pytest.approx(expected, rel=1e-6)
    assert current["psnr"] == pytest.approx(20.0 * (1 - (1 - EMA_WEIGHT) ** 7), rel=1e-5)
    assert lagged["loss"] != current["loss"]  # the display lags by up to two buffers


@needs_fast_path
@pytest.mark.cuda
def test_budgeted_renders_equal_exact_renders_and_overflow_is_reported():
    from rasterizer import Camera, Gaussians, look_at, render
    from rasterizer.cuda import PairBudget

    generator = torch.Generator().manual_seed(11)
    n = 4000
    gaussians = Gaussians(torch.randn(n, 3, generator=generator) * 0.8, torch.randn(n, 1, 3, generator=generator) * 0.5,
                          torch.randn(n, 15, 3, generator=generator) * 0.2, torch.randn(n, generator=generator),
                          torch.randn(n, 3, generator=generator) * 0.4 - 3.0, torch.randn(n, 4, generator=generator)).to("cuda")
    cameras = [Camera(160, 120, 150, 150, 80, 60, look_at([0, 0, -3.5], [0, 0, 0])),
               Camera(160, 120, 300, 300, 80, 60, look_at([0.3, 0.2, -2.0], [0, 0, 0]))]
    budget = PairBudget(headroom=1.5, minimum=16)
    for camera in cameras:  # the first render counts synchronously; the second may overflow
        exact = render(gaussians, camera, backend="cuda")
        budgeted = render(gaussians, camera, backend="cuda", pair_budget=budget)
        if budget.overflowed():
            budgeted = render(gaussians, camera, backend="cuda", pair_budget=budget)
            assert not budget.overflowed()
        assert torch.equal(exact.image, budgeted.image)
        assert torch.equal(exact.radii, budgeted.radii)
    # A budget far too small is caught, and grows to fit.
    small = PairBudget(headroom=1.0, minimum=1)
    small.grow(10)
    assert small.capacity == 10
    assert small.pending_overflow() is None
    render(gaussians, cameras[1], backend="cuda", pair_budget=small)
    assert small.pending_overflow().tolist() == [True]  # the same answer, on the GPU
    assert small.overflowed() and small.overflows == 1
    assert small.capacity == small.largest > 10
    again = render(gaussians, cameras[1], backend="cuda", pair_budget=small)
    render(gaussians, cameras[1], backend="cuda", pair_budget=small)
    assert small.pending_overflow().tolist() == [False]  # two renders, each exactly at the capacity
    assert not small.overflowed()
    assert torch.equal(again.image, render(gaussians, cameras[1], backend="cuda").image)


@needs_fast_path
@pytest.mark.cuda
def test_budget_overflow_redo_gives_the_exact_gradients(tmp_path, shared_data):
    """A training step whose render outgrows the pair budget is redone: the first try's partial
    gradients are dropped, and the step's gradients, statistics and densification inputs are
    those of a step with an exact, synchronised sort (up to the order of float atomics)."""
    from rasterizer.cuda import PairBudget
    from trainer.batching import Step
    from trainer.config import parse_args
    from trainer.train import Trainer

    config = parse_args(["-s", str(shared_data("shapes")), "-m", str(tmp_path / "m"), "-r", "4", "-w",
                         "--iterations", "30", "--test_iterations", "-1", "--save_iterations", "-1", "--quiet",
                         "--disable_viewer", "--random_init_points", "3000", "--backend", "cuda"])
    trainer = Trainer(config)
    trainer.setup()
    trainer.run()  # some steps, so that the gradients are not trivial
    # Step 31 of a longer run (the last one computes no parameter gradients), every gradient
    # stored (the fused SH step has its own test).
    trainer.config.optimization.iterations, trainer.fuse_sh_rest_step = 1000, False
    view = trainer.scene.train_views[3]
    gt = trainer.scene.images.get(view.index)
    results = []
    for budget in (None, PairBudget(headroom=1.0, minimum=1)):
        if budget is not None:
            budget.grow(1)  # room for one pair: the render overflows
        trainer.pair_budget = budget
        trainer.model.optimizer.zero_grad(set_to_none=True)
        (out,), stats = trainer._forward_backward(Step(31, 31), [view], [gt], trainer.background)
        results.append(({name: p.grad.clone() for name, p in trainer.model.params.items()},
                        out.means2d_grad.clone(), out.radii.clone(), stats.clone()))
    trainer.scene.close()
    assert budget.overflows == 1 and budget.capacity >= budget.largest > 1
    (grads, means2d_grad, radii, stats), (grads2, means2d_grad2, radii2, stats2) = results
    assert torch.equal(radii, radii2)
    torch.testing.assert_close(stats, stats2, rtol=1e-6, atol=1e-7)
    assert ((means2d_grad - means2d_grad2).norm() / means2d_grad.norm()).item() <= 1e-5
    for name, grad in grads.items():
        assert ((grad - grads2[name]).norm() / grad.norm().clamp_min(1e-20)).item() <= 1e-5, name


@needs_fast_path
@pytest.mark.cuda
@pytest.mark.parametrize("antialiasing", [False, True])
def test_training_step_without_autograd_matches_autograd(antialiasing):
    """render_for_training + the fused loss's explicit gradient + TrainingRender.backward give
    the gradients, statistics and densification inputs that render() + the fused loss +
    loss.backward() give (up to the order of float atomics)."""
    from rasterizer import Camera, Gaussians, look_at, render
    from rasterizer.cuda import render_for_training
    from trainer.cuda import fused_photometric_loss, fused_photometric_loss_and_gradient

    generator = torch.Generator().manual_seed(21)
    n = 3000
    raw = Gaussians(torch.randn(n, 3, generator=generator) * 0.8, torch.randn(n, 1, 3, generator=generator) * 0.5,
                    torch.randn(n, 15, 3, generator=generator) * 0.2, torch.randn(n, generator=generator),
                    torch.randn(n, 3, generator=generator) * 0.4 - 3.0, torch.randn(n, 4, generator=generator)).to("cuda")
    camera = Camera(96, 72, 90, 90, 50.5, 33.2, look_at([0.3, 0.2, -3.0], [0, 0, 0]))
    gt = torch.randint(0, 256, (72, 96, 4), generator=generator, dtype=torch.uint8).cuda()
    gt[..., :3] = torch.minimum(gt[..., :3], gt[..., 3:])
    background = torch.tensor([0.2, 0.5, 0.9], device="cuda")
    fields = ("means", "log_scales", "quaternions", "opacity_logits", "sh_dc", "sh_rest")

    leaves = {name: getattr(raw, name).clone().requires_grad_(True) for name in fields}
    out = render(Gaussians(**leaves), camera, background, sh_degree=2, antialiasing=antialiasing, backend="cuda")
    loss, stats = fused_photometric_loss(out.image, gt, background, 0.2)
    loss.backward()

    rendered = render_for_training(raw, camera, background, 2, antialiasing)
    loss2, stats2, grad_image = fused_photometric_loss_and_gradient(rendered.output.image, gt, background, 0.2)
    grads = rendered.backward(grad_image)
    assert torch.equal(rendered.output.image, out.image.detach())
    assert torch.equal(rendered.output.radii, out.radii)
    torch.testing.assert_close(loss2, loss.detach())
    torch.testing.assert_close(stats2, stats)
    relative = lambda a, b: ((a - b).norm() / b.norm().clamp_min(1e-20)).item()  # noqa: E731
    assert relative(rendered.output.means2d.grad, out.means2d.grad) <= 1e-5
    for name, grad in zip(fields, grads):
        assert relative(grad, leaves[name].grad) <= 1e-5, name


@needs_fast_path
@pytest.mark.cuda
def test_batched_training_render_matches_separate_renders():
    """render_for_training on a list of cameras (one set of launches), the fused loss over the
    batch and one backward give each view's image, loss statistics, means2d gradient and radii
    as separate renders do, the parameters' gradients summed over the views, and the same
    densification statistics as adding the views one after the other."""
    from rasterizer import Camera, Gaussians, look_at
    from rasterizer.cuda import PairBudget, render_for_training
    from trainer.cuda import fused_photometric_loss_and_gradient
    from trainer.model import GaussianModel

    generator = torch.Generator().manual_seed(23)
    n = 3000
    raw = Gaussians(torch.randn(n, 3, generator=generator) * 0.8, torch.randn(n, 1, 3, generator=generator) * 0.5,
                    torch.randn(n, 15, 3, generator=generator) * 0.2, torch.randn(n, generator=generator),
                    torch.randn(n, 3, generator=generator) * 0.4 - 3.0, torch.randn(n, 4, generator=generator)).to("cuda")
    cameras = [Camera(96, 72, 90, 90, 48 + 3 * v, 36 - 2 * v, look_at([0.3 * v - 0.4, 0.2, -3.0], [0, 0, 0]))
               for v in range(4)]
    gts = torch.randint(0, 256, (4, 72, 96, 3), generator=generator, dtype=torch.uint8).cuda()
    background = torch.tensor([0.2, 0.5, 0.9], device="cuda")
    budget = PairBudget(headroom=1.0, minimum=1)
    budget.grow(1)  # the first batched render overflows and is redone, as in training
    batch = render_for_training(raw, cameras, background, 3, False, budget)
    if budget.overflowed():
        batch = render_for_training(raw, cameras, background, 3, False, budget)
        assert not budget.overflowed()
    loss, stats, grad_image = fused_photometric_loss_and_gradient(batch.output.image, gts, background, 0.2)
    grads = batch.backward(grad_image)
    relative = lambda a, b: ((a - b).norm() / b.norm().clamp_min(1e-20)).item()  # noqa: E731
    summed, singles = None, []
    for v, camera in enumerate(cameras):
        single = render_for_training(raw, camera, background, 3, False)
        loss_v, stats_v, grad_v = fused_photometric_loss_and_gradient(single.output.image, gts[v], background, 0.2)
        grads_v = single.backward(grad_v)
        singles.append(single)
        assert torch.equal(batch.output.image[v], single.output.image)
        assert torch.equal(batch.output.radii[v], single.output.radii)
        torch.testing.assert_close(stats[v], stats_v[0])
        assert relative(batch.output.means2d.grad[v], single.output.means2d.grad) <= 1e-5
        summed = grads_v if summed is None else [a + b for a, b in zip(summed, grads_v)]
    for index, (grad, expected) in enumerate(zip(grads, summed)):
        assert relative(grad, expected) <= 1e-5, index

    models = [GaussianModel.from_gaussians(raw, "cuda") for _ in range(2)]
    models[0].add_render_statistics(batch.output.means2d.grad, batch.output.radii, 96, 72, fused=True)
    for single in singles:
        models[1].add_render_statistics(single.output.means2d.grad, single.output.radii, 96, 72, fused=True)
    assert torch.equal(models[0].denom, models[1].denom)
    assert torch.equal(models[0].max_radii, models[1].max_radii)
    torch.testing.assert_close(models[0].grad_accum, models[1].grad_accum, rtol=1e-5, atol=1e-9)


@needs_fast_path
@pytest.mark.cuda
def test_a_batch_of_mixed_image_sizes_renders_as_its_cameras_alone():
    """render_for_training of cameras of three sizes (one projection and one blending, on a canvas
    of the largest width and height; one projection backward) gives each view, in its corner of
    the canvas, the image, radii and means2d gradient of its camera rendered alone, and the
    parameters' gradients summed over the views."""
    from rasterizer import Camera, Gaussians, look_at
    from rasterizer.cuda import render_for_training

    generator = torch.Generator().manual_seed(29)
    n = 3000
    raw = Gaussians(torch.randn(n, 3, generator=generator) * 0.8, torch.randn(n, 1, 3, generator=generator) * 0.5,
                    torch.randn(n, 15, 3, generator=generator) * 0.2, torch.randn(n, generator=generator),
                    torch.randn(n, 3, generator=generator) * 0.4 - 3.0, torch.randn(n, 4, generator=generator)).to("cuda")
    sizes = [(96, 72), (80, 64), (96, 72), (101, 59), (80, 64)]  # canvas 101 x 72, no view fills it
    cameras = [Camera(w, h, 90, 90, w / 2 + v, h / 2 - v, look_at([0.3 * v - 0.6, 0.2, -3.0], [0, 0, 0]))
               for v, (w, h) in enumerate(sizes)]
    background = torch.tensor([0.2, 0.5, 0.9], device="cuda")
    batch = render_for_training(raw, cameras, background, 3, False)  # exact pair counts
    assert batch.output.image.shape == (5, 3, 72, 101)
    grad_views = [torch.linspace(-1.0 - v, 1.0 + v, 3 * h * w, device="cuda").reshape(3, h, w)
                  for v, (w, h) in enumerate(sizes)]
    grad_canvas = torch.zeros_like(batch.output.image)  # as the canvas loss gives: zero outside the views
    for v, (w, h) in enumerate(sizes):
        grad_canvas[v, :, :h, :w] = grad_views[v]
    grads = batch.backward(grad_canvas)
    relative = lambda a, b: ((a - b).norm() / b.norm().clamp_min(1e-20)).item()  # noqa: E731
    summed = None
    for v, (w, h) in enumerate(sizes):
        single = render_for_training(raw, cameras[v], background, 3, False)
        singles_grads = single.backward(grad_views[v])
        assert torch.equal(batch.output.image[v, :, :h, :w], single.output.image), v
        assert torch.equal(batch.output.radii[v], single.output.radii), v
        assert relative(batch.output.means2d.grad[v], single.output.means2d.grad) <= 1e-5, v
        summed = singles_grads if summed is None else [a + b for a, b in zip(summed, singles_grads)]
    for index, (grad, expected) in enumerate(zip(grads, summed)):
        assert relative(grad, expected) <= 1e-5, index


@needs_fast_path
@pytest.mark.cuda
@pytest.mark.parametrize("channels", [3, 4])
def test_canvas_loss_is_each_images_own_loss(channels):
    """fused_photometric_loss_on_canvas: each image, in its corner of the canvas, gets the loss,
    statistics and gradient of fused_photometric_loss_and_gradient on that image alone; the rest
    of the canvas (NaN here) is never read and gets a zero gradient."""
    from trainer.cuda import fused_photometric_loss_and_gradient, fused_photometric_loss_on_canvas

    generator = torch.Generator().manual_seed(5)
    sizes = [(37, 50), (64, 33), (37, 50), (20, 17)]        # (width, height); canvas 64 x 50
    canvas = torch.full((4, 3, 50, 64), float("nan"))
    gts = []
    for b, (w, h) in enumerate(sizes):
        canvas[b, :, :h, :w] = torch.rand(3, h, w, generator=generator) * 1.2 - 0.1  # some clamped pixels
        gts.append(torch.randint(0, 256, (h, w, channels), generator=generator, dtype=torch.uint8).cuda())
    canvas, background = canvas.cuda(), torch.tensor([0.3, 0.6, 0.1], device="cuda")
    loss, stats, grad = fused_photometric_loss_on_canvas(canvas, gts, background, 0.2)
    assert torch.isfinite(grad).all()
    total = 0.0
    for b, (w, h) in enumerate(sizes):
        image = canvas[b, :, :h, :w].contiguous()
        loss_b, stats_b, grad_b = fused_photometric_loss_and_gradient(image, gts[b], background, 0.2)
        torch.testing.assert_close(stats[b], stats_b[0], rtol=1e-6, atol=0.0)
        assert torch.equal(grad[b, :, :h, :w], grad_b), b
        outside = torch.ones_like(grad[b], dtype=torch.bool)
        outside[:, :h, :w] = False
        assert (grad[b][outside] == 0).all(), b
        total += float(loss_b)
    assert float(loss) == pytest.approx(total, rel=1e-6)
    with pytest.raises(ValueError, match="does not fit a canvas"):
        fused_photometric_loss_on_canvas(canvas[:1], [torch.zeros(51, 10, 3, dtype=torch.uint8, device="cuda")],
                                         background, 0.2)


@needs_fast_path
@pytest.mark.cuda
def test_batched_step_fused_matches_autograd(tmp_path, shared_data):
    """A training step of four views: the fused path (one batched render without autograd)
    and the autograd path (a batched render() and loss.backward()) give the same gradients,
    statistics and densification inputs (up to float rounding)."""
    from trainer.batching import Step
    from trainer.config import parse_args
    from trainer.train import Trainer

    config = parse_args(["-s", str(shared_data("shapes")), "-m", str(tmp_path / "m"), "-r", "4", "-w",
                         "--iterations", "40", "--batch_size", "4", "--test_iterations", "-1", "--save_iterations",
                         "-1", "--quiet", "--disable_viewer", "--random_init_points", "3000", "--backend", "cuda"])
    trainer = Trainer(config)
    trainer.setup()
    trainer.run()
    trainer.config.optimization.iterations, trainer.fuse_sh_rest_step = 1000, False  # as in the test above
    views = [trainer.scene.train_views[i] for i in (1, 4, 7, 9)]
    gts = [trainer.scene.images.get(view.index) for view in views]
    results = []
    for fused in (True, False):
        trainer.fused_kernels = fused
        trainer.model.optimizer.zero_grad(set_to_none=True)
        statistics, stats = trainer._forward_backward(Step(41, 44), views, gts, trainer.background)
        (screen,) = statistics
        results.append(({name: p.grad.clone() for name, p in trainer.model.params.items()},
                        screen.means2d_grad.clone(), screen.radii.clone(), stats.clone()))
    trainer.scene.close()
    (grads, means2d_grad, radii, stats), (grads2, means2d_grad2, radii2, stats2) = results
    assert means2d_grad.shape == (4, len(trainer.model), 2)
    assert torch.equal(radii, radii2)
    # The autograd path's loss is the PyTorch one (its SSIM convolves in another order).
    torch.testing.assert_close(stats, stats2, rtol=1e-5, atol=1e-6)
    assert ((means2d_grad - means2d_grad2).norm() / means2d_grad.norm()).item() <= 1e-4
    for name, grad in grads.items():
        assert ((grad - grads2[name]).norm() / grad.norm().clamp_min(1e-20)).item() <= 1e-4, name


@needs_fast_path
@pytest.mark.cuda
def test_cuda_adam_matches_torch_adam():
    """CudaAdam against torch.optim.Adam (the reference's optimiser): same update within float
    rounding, over several steps, groups with their own learning rates, and a state that
    torch's Adam can load."""
    from trainer.cuda import CudaAdam

    generator = torch.Generator().manual_seed(4)
    shapes = [(1000, 3), (1000, 15, 3), (1000,)]
    start = [torch.randn(*shape, generator=generator) for shape in shapes]
    rates = [1.6e-4, 2.5e-3, 0.025]
    models = []
    for optimizer_class in (CudaAdam, torch.optim.Adam):
        params = [torch.nn.Parameter(t.clone().cuda()) for t in start]
        groups = [{"params": [p], "lr": lr, "name": str(i)} for i, (p, lr) in enumerate(zip(params, rates))]
        models.append((params, optimizer_class(groups, lr=0.0, eps=1e-15)))
    for step in range(5):
        grads = [torch.randn(*shape, generator=generator).cuda() * 10.0 ** -step for shape in shapes]
        for params, optimizer in models:
            for param, grad in zip(params, grads):
                param.grad = grad.clone()
            optimizer.step()
    for ours, theirs in zip(models[0][0], models[1][0]):
        torch.testing.assert_close(ours, theirs, rtol=2e-5, atol=1e-6)
    state = models[0][1].state_dict()
    fresh = [torch.nn.Parameter(t.clone().cuda()) for t in start]
    torch.optim.Adam([{"params": [p], "lr": lr, "name": str(i)} for i, (p, lr) in enumerate(zip(fresh, rates))],
                     lr=0.0).load_state_dict(state)
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(state["state"][1][key], models[1][1].state_dict()["state"][1][key], rtol=1e-4, atol=1e-12)
    assert float(state["state"][0]["step"]) == 5.0


@needs_fast_path
@pytest.mark.cuda
@pytest.mark.parametrize("views,from_buffer", [(1, False), (3, False), (1, True)])
def test_fused_sh_rest_step_is_the_optimisers_step(views, from_buffer):
    """The projection backward's fused Adam step of sh_rest (adam.cuh) against CudaAdam.step on
    the gradient the same kernel writes without it: same parameters and moments over two
    steps (one view, and a batch whose gradient is summed over its views first); the other
    gradients are unchanged; a render that overflowed its pair budget moves nothing. With
    ``from_buffer`` the step's scalars come from a device buffer (as in a CUDA graph), and the
    kernel arguments they override hold wrong values."""
    from rasterizer import Camera, Gaussians, look_at
    from rasterizer.cuda import (_project_backward, _project_forward, _raw_parameters, _settings, camera_block,
                                 camera_blocks)
    from trainer.cuda import CudaAdam

    generator = torch.Generator().manual_seed(31)
    n = 2000
    raw = Gaussians(torch.randn(n, 3, generator=generator) * 0.8, torch.randn(n, 1, 3, generator=generator) * 0.5,
                    torch.randn(n, 15, 3, generator=generator) * 0.2, torch.randn(n, generator=generator),
                    torch.randn(n, 3, generator=generator) * 0.4 - 3.0, torch.randn(n, 4, generator=generator)).to("cuda")
    raw.means[:50] = torch.tensor([0.0, 0.0, -10.0], device="cuda")  # behind every camera: culled
    cameras = [Camera(96, 72, 90, 90, 48, 36, look_at([0.3 * v, 0.2, -3.0], [0, 0, 0])) for v in range(views)]
    device = torch.device("cuda")
    camera_data = camera_blocks(cameras, device) if views > 1 else camera_block(cameras[0], device)
    settings = _settings(3, 1.0, False)
    params = _raw_parameters(raw)
    radii = _project_forward(params, camera_data, settings)[5]
    assert (radii > 0).any() and (radii == 0).any()  # culled rows take the step too (zero gradient)
    incoming_steps = [[torch.randn(views, n, width, generator=generator).cuda().squeeze(0) for width in (2, 4, 3)]
                      + [torch.randn(views, n, generator=generator).cuda().squeeze(0)] for _ in range(2)]

    def optimiser(sh_rest):
        return CudaAdam([{"params": [sh_rest], "lr": 0.0025 / 20, "name": "f_rest"}], lr=0.0, eps=1e-15)

    plain_rest, fused_rest = params[5].clone(), params[5].clone()
    plain, fused = optimiser(plain_rest), optimiser(fused_rest)

    def fused_step():
        step = fused.fused_step(fused_rest)
        if not from_buffer:
            return step
        scalars = torch.tensor(step.scalar_values(), dtype=torch.float32, device="cuda")
        return dataclasses.replace(step, step_size=0.0, bias_correction2_sqrt=1.0, scalars=scalars)

    for incoming in incoming_steps:
        grads = _project_backward((*params[:5], plain_rest), camera_data, radii, settings, incoming)
        plain_rest.grad = grads[5]
        plain.step()
        fused_grads = _project_backward((*params[:5], fused_rest), camera_data, radii, settings, incoming,
                                        fused_step())
        assert fused_grads[5] is None
        for got, want in zip(fused_grads[:5], grads[:5]):
            assert torch.equal(got, want)
    torch.testing.assert_close(fused_rest, plain_rest, rtol=1e-6, atol=1e-7)
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(fused.state[fused_rest][key], plain.state[plain_rest][key], rtol=1e-6, atol=1e-12)
    assert float(fused.state[fused_rest]["step"]) == float(plain.state[plain_rest]["step"]) == 2.0
    assert not torch.equal(fused_rest, params[5])

    # Overflowed (7 pairs counted, room for 6): the kernel leaves everything as it was.
    before = [fused_rest.clone(), fused.state[fused_rest]["exp_avg"].clone(), fused.state[fused_rest]["exp_avg_sq"].clone()]
    count = torch.tensor([7], dtype=torch.int64, device="cuda")
    _project_backward((*params[:5], fused_rest), camera_data, radii, settings, incoming_steps[0], fused_step(),
                      (count, 6))
    fused.undo_fused_step(fused_rest)
    after = [fused_rest, fused.state[fused_rest]["exp_avg"], fused.state[fused_rest]["exp_avg_sq"]]
    assert all(torch.equal(a, b) for a, b in zip(after, before))
    assert float(fused.state[fused_rest]["step"]) == 2.0


@needs_fast_path
@pytest.mark.cuda
def test_training_fuses_the_sh_rest_step_only_where_the_reference_allows(tmp_path, shared_data, monkeypatch):
    """In a training run the rasterizer's backward takes the sh_rest step at every iteration
    whose update reads the gradients; at densification iterations (the parameters are replaced
    and take no step) and the last one (no step) it computes no parameter gradient at all. Test
    and save iterations fuse too: their report and PLY come before the render. sh_rest's step
    count ends equal to the positions'. A step whose render outgrew the pair budget is redone
    with the same result as an unfused step."""
    from rasterizer.cuda import PairBudget
    from trainer.batching import Step
    from trainer.config import parse_args
    from trainer.cuda import CudaAdam
    from trainer.train import Trainer

    without_gradients: list[int] = []
    fused: list[bool] = []
    gradients_needed, sh_rest_step = Trainer._parameter_gradients_needed, Trainer._sh_rest_step

    def needed_spy(self, step):
        if not gradients_needed(self, step):
            without_gradients.append(step.first)
            return False
        return True

    monkeypatch.setattr(Trainer, "_parameter_gradients_needed", needed_spy)
    monkeypatch.setattr(Trainer, "_sh_rest_step", lambda self: fused.append(True) or sh_rest_step(self))
    config = parse_args(["-s", str(shared_data("shapes")), "-m", str(tmp_path / "m"), "-r", "4", "-w",
                         "--iterations", "120", "--densify_from_iter", "20", "--densification_interval", "30",
                         "--test_iterations", "50", "--save_iterations", "70", "--quiet", "--disable_viewer",
                         "--random_init_points", "3000", "--backend", "cuda",
                         # the eager launches (the graph's fused step: tests/test_graphed_step.py)
                         "--no_cuda_graphs"])
    trainer = Trainer(config)
    trainer.setup()
    assert trainer.run().status == "completed"
    assert isinstance(trainer.model.optimizer, CudaAdam)
    assert without_gradients == [30, 60, 90, 120] and len(fused) == 116
    assert sorted(trainer.metrics) == [50] and (tmp_path / "m" / "point_cloud" / "iteration_70").is_dir()
    optimizer, params = trainer.model.optimizer, trainer.model.params
    assert float(optimizer.state[params["f_rest"]]["step"]) == float(optimizer.state[params["xyz"]]["step"])

    # Step 121 (of now 1000), once unfused with an exact sort, once fused through a budget too
    # small for it: the redo takes the step once, as the unfused one did.
    trainer.config.optimization.iterations = 1000
    view = trainer.scene.train_views[3]
    gt = trainer.scene.images.get(view.index)
    start = {name: (p.detach().clone(), {k: v.clone() for k, v in optimizer.state[p].items()})
             for name, p in params.items()}
    results = []
    for fuse, budget in ((False, None), (True, PairBudget(headroom=1.0, minimum=1))):
        for name, (value, state) in start.items():
            params[name].data.copy_(value)
            for key, tensor in state.items():
                optimizer.state[params[name]][key].copy_(tensor)
        if budget is not None:
            budget.grow(1)  # room for one pair: the render overflows
        trainer.fuse_sh_rest_step, trainer.pair_budget = fuse, budget
        optimizer.zero_grad(set_to_none=True)
        trainer._forward_backward(Step(121, 121), [view], [gt], trainer.background)
        assert (params["f_rest"].grad is None) == fuse
        trainer.model.step()
        results.append({name: (p.detach().clone(), float(optimizer.state[p]["step"])) for name, p in params.items()})
    trainer.scene.close()
    assert budget.overflows == 1
    for name, (value, step) in results[0].items():
        value2, step2 = results[1][name]
        assert step2 == step == float(start[name][1]["step"]) + 1, name
        moved, moved2 = value - start[name][0], value2 - start[name][0]
        assert ((moved2 - moved).norm() / moved.norm().clamp_min(1e-20)).item() <= 1e-3, name


def train_and_evaluate(source, model_path, seed: int, fast: bool, more_args: Sequence[str] = ()) -> tuple[float, int]:
    """Test PSNR (dB) and Gaussian count of 2k steps on ``source`` at -r 2 with a white
    background, the fast path (fused loss and statistics, budgeted sort) or the PyTorch path,
    where the reference's test report at 2000 looks (before step 2000's densification)."""
    from trainer.config import parse_args
    from trainer.train import Trainer, at_report_points, evaluate_views

    config = parse_args(["-s", str(source), "-m", str(model_path), "-r", "2", "-w", "--eval",
                         "--iterations", "2000", "--test_iterations", "-1", "--save_iterations", "-1",
                         "--quiet", "--disable_viewer", "--backend", "cuda", "--seed", str(seed), *more_args])
    trainer = Trainer(config)
    trainer.setup()
    if not fast:
        trainer.fused_kernels, trainer.pair_budget = False, None
    seen: dict[str, float] = {}

    def evaluate(trainer, _view: int) -> None:
        seen["psnr"] = evaluate_views(trainer.model, trainer.scene, trainer.scene.test_views, trainer.background,
                                      "cuda")["psnr"]
        seen["count"] = len(trainer.model)

    trainer.hooks.append(at_report_points([2000], evaluate))
    try:
        assert trainer.run().status == "completed"
        return seen["psnr"], int(seen["count"])
    finally:
        trainer.scene.close()


# Densification decides per Gaussian on a threshold, so two runs that differ in float rounding
# (the two paths; also two runs of one path, whose atomics add in any order) clone and split
# different Gaussians from the first densification on and end on different models. Measured on
# an H200 (2026-12-01), shapes, 2k steps, seed 2: twelve runs of the PyTorch path, the fast path
# and each half of it gave 32.74 to 33.19 dB (the PyTorch path alone 32.87 to 33.19); seeds 0
# and 1 agreed within 0.05 dB. Without densification decisions the two paths gave 34.502 and
# 34.478 dB (seed 0; the PyTorch path again 34.471) and 34.455 and 34.429 dB (seed 1). So the
# 0.1 dB comparison is made with the statistics gathered but no decision taken, where the two
# runs differ in rounding only; the densifying runs are compared, over three seeds, against the
# spread above. (Those figures were read after step 2000, which densifies; the runs are now read
# before it, as the reference's test report, where fresh split Gaussians add no spread.)
NO_DENSIFICATION = ("--densify_from_iter", "100000")  # statistics still gathered to 2000
QUALITY_SEEDS = (0, 1, 2)


@needs_fast_path
@pytest.mark.cuda
@pytest.mark.slow
def test_fast_path_trains_to_the_same_quality(tmp_path, shared_data):
    """2k steps on shapes (200x200, fixed Gaussians): the fast path reaches the test PSNR of the
    PyTorch path within 0.1 dB."""
    source = shared_data("shapes")
    (reference, count), (fast, fast_count) = (
        train_and_evaluate(source, tmp_path / f"m{fused}", 0, fused, NO_DENSIFICATION) for fused in (False, True))
    assert count == fast_count
    assert abs(fast - reference) <= 0.1, (reference, fast)


@needs_fast_path
@pytest.mark.cuda
@pytest.mark.slow
def test_fast_path_densifies_like_the_pytorch_path(tmp_path, shared_data):
    """2k steps on shapes with densification, three seeds a path: the mean test PSNRs within
    0.3 dB and the mean Gaussian counts within 5% (bounds above the spread between runs, see
    NO_DENSIFICATION; a wrong statistic, e.g. a missing per-view normalisation, moves both by far more)."""
    source = shared_data("shapes")
    runs = {fast: [train_and_evaluate(source, tmp_path / f"m{fast}{seed}", seed, fast) for seed in QUALITY_SEEDS]
            for fast in (False, True)}
    psnr = {fast: sum(p for p, _ in values) / len(values) for fast, values in runs.items()}
    count = {fast: sum(n for _, n in values) / len(values) for fast, values in runs.items()}
    assert abs(psnr[True] - psnr[False]) <= 0.3, runs
    assert abs(count[True] / count[False] - 1) <= 0.05, runs
