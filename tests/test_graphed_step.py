"""The training step replayed from a CUDA graph (``trainer.graphed_step``) against the same
step launched eagerly: the same pixels, statistics and gradients (up to the order of float
atomics), new inputs at each replay, a new capture when the model's tensors or the pair budget
change, and an overflow caught as for an eager render. GPU only (CI compiles the kernels but
has no GPU to capture on)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")


def _fast_path_available() -> bool:
    from trainer.losses import fused_loss_available

    return fused_loss_available()


needs_fast_path = pytest.mark.skipif(not torch.cuda.is_available() or not _fast_path_available(),
                                     reason="needs an NVIDIA GPU with cuda-bindings + NVRTC")
FIELDS = ("means", "log_scales", "quaternions", "opacity_logits", "sh_dc", "sh_rest")


def random_gaussians(n: int, seed: int):
    from rasterizer import Gaussians

    generator = torch.Generator().manual_seed(seed)
    return Gaussians(torch.randn(n, 3, generator=generator) * 0.8, torch.randn(n, 1, 3, generator=generator) * 0.5,
                     torch.randn(n, 15, 3, generator=generator) * 0.2, torch.randn(n, generator=generator),
                     torch.randn(n, 3, generator=generator) * 0.4 - 3.0,
                     torch.randn(n, 4, generator=generator)).to("cuda")


def cameras_and_photos(seed: int, sizes=((160, 120), (160, 120)), channels: int = 3):
    from rasterizer import Camera, look_at

    generator = torch.Generator().manual_seed(seed)
    eyes = ([0, 0, -3.5], [0.4, 0.3, -2.5], [-0.3, 0.5, -3.0])
    cameras = [Camera(w, h, 150 + 30 * i, 150 + 25 * i, w / 2 - 3 * i, h / 2 + 4 * i, look_at(eyes[i], [0, 0, 0]))
               for i, (w, h) in enumerate(sizes)]
    photos = [torch.randint(0, 256, (h, w, channels), generator=generator, dtype=torch.uint8).cuda() for w, h in sizes]
    return cameras, photos


def snapshot(result, width: int | None = None, height: int | None = None) -> dict:
    """A copy of a step's results (a graph's buffers change at the next replay); from a canvas,
    the view's ``width`` x ``height`` corner of the image."""
    image = result.image if width is None else result.image[0, :, :height, :width]
    copied = {"image": image.clone(), "radii": result.radii.clone(), "means2d_grad": result.means2d_grad.clone(),
              "stats": result.stats.clone(), "loss": result.loss.clone()}
    copied.update({name: None if grad is None else grad.clone() for name, grad in zip(FIELDS, result.grads)})
    return copied


def assert_same_step(graphed: dict, eager: dict) -> None:
    assert torch.equal(graphed["image"], eager["image"])
    assert torch.equal(graphed["radii"], eager["radii"])
    torch.testing.assert_close(graphed["stats"], eager["stats"], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(graphed["loss"], eager["loss"], rtol=1e-6, atol=1e-7)
    for name in ("means2d_grad",) + FIELDS:
        if eager[name] is None:  # sh_rest's, where the step took the fused SH step
            assert graphed[name] is None, name
            continue
        error = (graphed[name] - eager[name]).norm() / eager[name].norm().clamp_min(1e-20)
        assert error.item() <= 1e-5, name


def eager(gaussians, camera, photo, background, sh_degree=3) -> dict:
    from trainer.graphed_step import _eager_step

    return snapshot(_eager_step(gaussians, camera, photo, background, sh_degree, False, 0.2, None))


SEVERAL_SIZES = ((160, 120), (131, 97), (152, 120))


@needs_fast_path
@pytest.mark.cuda
@pytest.mark.parametrize("sizes,canvas,channels", [
    (((160, 120), (160, 120)), None, 3),   # one size: each view at its own
    (SEVERAL_SIZES, (160, 120), 3),        # several: each in the corner of the largest
    (SEVERAL_SIZES, (160, 120), 4),
])
def test_replays_take_each_steps_camera_and_photo(sizes, canvas, channels):
    """One capture serves every step: each replay gives the pixels, loss and gradients of that
    step's eager launches (of the view at its own size, when drawn on a canvas)."""
    from rasterizer.cuda import PairBudget
    from trainer.graphed_step import GraphedTrainingStep

    gaussians = random_gaussians(4000, seed=3)
    cameras, photos = cameras_and_photos(seed=4, sizes=sizes, channels=channels)
    background = torch.tensor([0.2, 0.5, 0.9], device="cuda")
    # Eager first, as in training (its first step reads the pair count back): the kernels are
    # loaded and the loss's constants uploaded, which a capture may not do.
    expected = [eager(gaussians, camera, photo, background) for camera, photo in zip(cameras, photos)]
    budget = PairBudget()
    budget.grow(1)
    step = GraphedTrainingStep(canvas)
    order = (1, 0, len(sizes) - 1, 1)
    for index in order:
        result = step.run(gaussians, cameras[index], photos[index], background, 3, False, 0.2, budget)
        assert not budget.overflowed()
        corner = () if canvas is None else sizes[index]
        assert_same_step(snapshot(result, *corner), expected[index])
    assert (step.captures, step.replays) == (1, len(order))


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


@needs_fast_path
@pytest.mark.cuda
@pytest.mark.parametrize("canvas", [None, (160, 120)])
def test_replays_take_the_fused_sh_step_with_each_steps_scalars(canvas):
    """With the optimiser's fused SH step, each replay moves sh_rest and its moments as the
    eager step does at that step count (the scalars change every step; one capture serves
    them all), stores no sh_rest gradient, and an overflowed replay moves nothing."""
    from rasterizer import Gaussians
    from rasterizer.cuda import PairBudget
    from trainer.cuda import CudaAdam
    from trainer.graphed_step import GraphedTrainingStep, _eager_step

    graphed_model = random_gaussians(4000, seed=11)
    eager_model = Gaussians(**{name: getattr(graphed_model, name).clone() for name in FIELDS})
    start = graphed_model.sh_rest.clone()
    cameras, photos = cameras_and_photos(seed=12)
    background = torch.tensor([0.1, 0.3, 0.6], device="cuda")

    def optimiser(model):
        return CudaAdam([{"params": [model.sh_rest], "lr": 0.0025 / 20, "name": "f_rest"}], lr=0.0, eps=1e-15)

    graphed_adam, eager_adam = optimiser(graphed_model), optimiser(eager_model)
    eager(graphed_model, cameras[0], photos[0], background)  # loads the kernels (see above)
    budget = PairBudget()
    budget.grow(1)
    step = GraphedTrainingStep(canvas)
    for index in (0, 1, 0):
        expected = snapshot(_eager_step(eager_model, cameras[index], photos[index], background, 3, False, 0.2,
                                        None, sh_rest_step=eager_adam.fused_step(eager_model.sh_rest)))
        result = step.run(graphed_model, cameras[index], photos[index], background, 3, False, 0.2, budget,
                          graphed_adam.fused_step(graphed_model.sh_rest))
        assert not budget.overflowed()
        corner = () if canvas is None else (cameras[index].width, cameras[index].height)
        assert_same_step(snapshot(result, *corner), expected)
        # Adam's update is m / sqrt(v): a gradient near zero whose last bits differ (float
        # atomics) may move the other way, so the moves are compared as a whole.
        assert relative_error(graphed_model.sh_rest - start, eager_model.sh_rest - start) < 1e-2
        for moment in ("exp_avg", "exp_avg_sq"):
            assert relative_error(graphed_adam.state[graphed_model.sh_rest][moment],
                                  eager_adam.state[eager_model.sh_rest][moment]) < 1e-4
    assert (step.captures, step.replays) == (1, 3)
    assert not torch.equal(graphed_model.sh_rest, start)

    # Room for ten pairs: the replay overflows, the kernel leaves sh_rest where it was.
    before = graphed_model.sh_rest.clone()
    small = PairBudget(headroom=1.0, minimum=1)
    small.grow(10)
    step.run(graphed_model, cameras[1], photos[1], background, 3, False, 0.2, small,
             graphed_adam.fused_step(graphed_model.sh_rest))
    assert small.overflowed()
    graphed_adam.undo_fused_step(graphed_model.sh_rest)
    assert torch.equal(graphed_model.sh_rest, before)
    with pytest.raises(ValueError, match="not the sh_rest tensor"):
        step.run(graphed_model, cameras[0], photos[0], background, 3, False, 0.2, budget,
                 eager_adam.fused_step(eager_model.sh_rest))


@needs_fast_path
@pytest.mark.cuda
def test_a_view_larger_than_the_canvas_is_refused():
    from rasterizer.cuda import PairBudget
    from trainer.graphed_step import GraphedTrainingStep

    gaussians = random_gaussians(100, seed=2)
    cameras, photos = cameras_and_photos(seed=2)
    budget = PairBudget()
    budget.grow(1)
    with pytest.raises(ValueError, match="does not fit the canvas"):
        GraphedTrainingStep(canvas=(150, 120)).run(gaussians, cameras[0], photos[0], torch.ones(3, device="cuda"),
                                                   3, False, 0.2, budget)


@needs_fast_path
@pytest.mark.cuda
def test_new_tensors_a_new_degree_or_an_overflow_capture_again():
    from rasterizer import Gaussians
    from rasterizer.cuda import PairBudget
    from trainer.graphed_step import GraphedTrainingStep

    gaussians = random_gaussians(3000, seed=5)
    cameras, photos = cameras_and_photos(seed=6)
    background = torch.tensor([1.0, 1.0, 1.0], device="cuda")
    budget = PairBudget()
    budget.grow(1)
    step = GraphedTrainingStep()
    eager(gaussians, cameras[0], photos[0], background)  # loads the kernels (see above)
    step.run(gaussians, cameras[0], photos[0], background, 3, False, 0.2, budget)
    assert not budget.overflowed()
    # A densification replaces the parameters' tensors: the old graph would read freed memory.
    moved = Gaussians(**{name: getattr(gaussians, name).clone() for name in FIELDS})
    moved.means.add_(0.05)
    result = step.run(moved, cameras[1], photos[1], background, 3, False, 0.2, budget)
    assert not budget.overflowed()
    assert_same_step(snapshot(result), eager(moved, cameras[1], photos[1], background))
    result = step.run(moved, cameras[1], photos[1], background, 1, False, 0.2, budget)
    assert not budget.overflowed()
    assert_same_step(snapshot(result), eager(moved, cameras[1], photos[1], background, sh_degree=1))
    assert step.captures == 3
    # Room for ten pairs: the replay reports the overflow like an eager render, and the budget
    # grows; the next step captures with the new capacity and is whole.
    small = PairBudget(headroom=1.0, minimum=1)
    small.grow(10)
    step.run(moved, cameras[0], photos[0], background, 1, False, 0.2, small)
    assert small.overflowed() and small.overflows == 1 and small.capacity > 10
    result = step.run(moved, cameras[0], photos[0], background, 1, False, 0.2, small)
    assert not small.overflowed()
    assert_same_step(snapshot(result), eager(moved, cameras[0], photos[0], background, sh_degree=1))
    assert (step.captures, step.replays) == (5, 5)


@needs_fast_path
@pytest.mark.cuda
def test_training_with_graphs_matches_training_without(tmp_path, shared_data):
    """Two short runs of the trainer through densification and an opacity reset, with the graphs
    and without: the graphs are used (a capture per change of the model, not per step) and
    the runs end at the same quality (float atomics make them differ in the last bits)."""
    from trainer.config import parse_args
    from trainer.train import Trainer, evaluate_views

    scores, steps = [], []
    for graphs in (True, False):
        flags = ["-s", str(shared_data("shapes")), "-m", str(tmp_path / f"graphs{graphs}"), "-r", "4", "-w",
                 "--eval", "--iterations", "600", "--densify_from_iter", "100", "--densification_interval", "100",
                 "--densify_until_iter", "400", "--opacity_reset_interval", "300", "--test_iterations", "-1",
                 "--save_iterations", "-1", "--quiet", "--disable_viewer", "--backend", "cuda"]
        trainer = Trainer(parse_args(flags + ([] if graphs else ["--no_cuda_graphs"])))
        trainer.setup()
        trainer.run()
        scores.append(evaluate_views(trainer.model, trainer.scene, trainer.scene.test_views, trainer.background,
                                     backend="cuda")["psnr"])
        steps.append((trainer._graph_step.captures, trainer._graph_step.replays))
        trainer.scene.close()
    (captures, replays), (no_captures, no_replays) = steps
    assert (no_captures, no_replays) == (0, 0)
    # Densifications at 200 and 300, resets at 300 (and at 100 with -w), SH degree at 1000: a
    # few captures, and every other step of the 599 with a parameter gradient a replay.
    assert 2 <= captures <= 30, captures
    assert replays >= 560, replays
    assert abs(scores[0] - scores[1]) < 0.3, scores


def test_the_graph_key_holds_what_a_capture_bakes_in():
    """A new capture for new parameter tensors, another image, SH degree, background or pair
    capacity; none for the same inputs (CPU: the key reads addresses and sizes only)."""
    from rasterizer import Gaussians
    from rasterizer.cuda import FusedAdamStep, PairBudget
    from trainer.graphed_step import graph_key

    generator = torch.Generator().manual_seed(1)
    gaussians = Gaussians(torch.randn(50, 3, generator=generator), torch.randn(50, 1, 3, generator=generator),
                          torch.randn(50, 15, 3, generator=generator), torch.randn(50, generator=generator),
                          torch.randn(50, 3, generator=generator), torch.randn(50, 4, generator=generator))
    budget, background = PairBudget(), torch.ones(3)
    budget.grow(1000)
    image = (64, 48, (48, 64, 3))

    def key(g=gaussians, image=image, background=background, degree=3, fused=None):
        return graph_key(g, image, background, degree, False, 0.2, budget, fused)

    base = key()
    assert key() == base
    replaced = Gaussians(**{name: getattr(gaussians, name) for name in FIELDS if name != "opacity_logits"},
                         opacity_logits=gaussians.opacity_logits.clone())  # an opacity reset
    assert key(g=replaced) != base
    assert key(image=(64, 47, (47, 64, 3))) != base
    assert key(background=torch.zeros(3)) != base
    assert key(degree=2) != base
    moments = torch.zeros_like(gaussians.sh_rest), torch.zeros_like(gaussians.sh_rest)
    fused = FusedAdamStep(gaussians.sh_rest, *moments, 0.9, 0.999, 1e-15, 0.01, 0.03)
    assert key(fused=fused) != base
    # The scalars change every step and come through a buffer; the moments' tensors do not.
    assert key(fused=dataclasses.replace(fused, step_size=0.02, bias_correction2_sqrt=0.04)) == key(fused=fused)
    assert key(fused=dataclasses.replace(fused, exp_avg=moments[0].clone())) != key(fused=fused)
    budget.grow(budget.capacity)  # a count at the capacity: it grows
    assert key() != base


def test_the_reference_backend_replays_no_graph(tmp_path, shared_data):
    from trainer.config import parse_args
    from trainer.train import Trainer

    trainer = Trainer(parse_args(["-s", str(shared_data("shapes")), "-m", str(tmp_path / "m"), "-r", "8",
                                  "--iterations", "1", "--quiet", "--disable_viewer", "--backend", "reference",
                                  "--data_device", "cpu"]))
    trainer.setup()
    assert not trainer.cuda_graphs and trainer._graph_step is None
    trainer.scene.close()
