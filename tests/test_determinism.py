"""What the README claims about reproducibility, on the CPU (the reference backend): the same flags
and --seed give the same Gaussians bit for bit, with the same number of CPU threads, and a run
resumed from a checkpoint ends where the uninterrupted run does (test_train_run.py checks the
resume on the tiny scene; here the scene is large enough for PyTorch's CPU kernels to run in
parallel, which is where the order of floating-point additions used to vary)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rasterizer import Camera, Gaussians, look_at, render
from test_train_run import assert_same_model, final_state
from test_train_support import tiny_config, write_tiny_scene
from trainer.train import train

THREADS = 2
STEPS = 10
FLAGS = ["--iterations", str(STEPS), "--test_iterations", "-1", "--checkpoint_iterations", "5", str(STEPS),
         "--densify_from_iter", "3", "--densification_interval", "3", "--random_background"]


@pytest.fixture
def threads():
    """Two intra-op threads (as on CI's two cores), whatever this machine's default."""
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield THREADS
    torch.set_num_threads(before)


def gradients(gaussians: Gaussians, camera: Camera) -> list[torch.Tensor]:
    tensors = [t.detach().clone().requires_grad_(True) for t in gaussians.tensors().values()]
    g = Gaussians(*tensors)
    out = render(g, camera, torch.tensor([0.2, 0.3, 0.4]), backend="reference")
    (out.image * torch.linspace(0.5, 1.5, out.image.numel()).reshape(out.image.shape)).sum().backward()
    return [t.grad for t in tensors] + [out.means2d.grad]


def test_reference_backward_is_bitwise_repeatable(threads):
    """Thousands of Gaussians overlapping the same tiles: the backward pass accumulates each
    Gaussian's gradient from many pixels. Five repeats must agree to the bit."""
    generator = torch.Generator().manual_seed(3)
    n = 1500
    means = (torch.rand(n, 3, generator=generator) - 0.5) * 1.5
    gaussians = Gaussians(means, torch.randn(n, 1, 3, generator=generator), torch.randn(n, 15, 3, generator=generator) * 0.1,
                          torch.randn(n, generator=generator), torch.full((n, 3), -3.0) + torch.rand(n, 3, generator=generator),
                          torch.randn(n, 4, generator=generator))
    camera = Camera.from_fov(64, 48, 0.9, None, look_at((0.0, 0.5, 3.0), (0.0, 0.0, 0.0)))
    first = gradients(gaussians, camera)
    for _ in range(4):
        again = gradients(gaussians, camera)
        for a, b in zip(first, again):
            assert torch.equal(a, b)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return write_tiny_scene(tmp_path_factory.mktemp("determinism") / "scene", train=6, test=0, points=2000)


def test_same_seed_same_gaussians_and_resume_matches(scene, tmp_path, threads, cpu_only):
    runs = []
    for name in ("a", "b"):
        result = train(tiny_config(scene, tmp_path / name, *FLAGS))
        assert result.status == "completed"
        runs.append(final_state(tmp_path / name, STEPS))
    assert runs[0][0] == runs[1][0]            # the PLY files, byte for byte
    assert_same_model(runs[0][1], runs[1][1])  # parameters, optimiser state, statistics, random state
    resumed = tmp_path / "resumed"
    result = train(tiny_config(scene, resumed, *FLAGS, "--start_checkpoint", str(tmp_path / "a" / "chkpnt5.pth")))
    assert result.status == "completed" and result.steps == STEPS - 5
    ply, state = final_state(resumed, STEPS)
    assert ply == runs[0][0]
    assert_same_model(state, runs[0][1])
