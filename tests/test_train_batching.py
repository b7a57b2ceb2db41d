"""Batches of views (--batch_size): steps over view counts, the schedule's events at the same
views as one view per step, learning rates and Adam betas for the batch, and real runs (one
image size, and several sizes in one batch)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from test_train_support import tiny_config, write_tiny_scene
from trainer.batching import (ScreenStatistics, Step, batch_betas, batch_steps, in_view_order, learning_rate_scale,
                              put_views, select_views, view_shares)
from trainer.config import OptimizationParams
from trainer.model import GaussianModel
from trainer.run_state import load_checkpoint
from trainer.train import Trainer, train
from rasterizer import Gaussians


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory) -> Path:
    return write_tiny_scene(tmp_path_factory.mktemp("tiny") / "scene")


def test_steps_cover_every_view_once():
    steps = list(batch_steps(1, 10, 4))
    assert steps == [Step(1, 4), Step(5, 8), Step(9, 10)]
    assert [s.size for s in steps] == [4, 4, 2]
    assert list(batch_steps(7, 10, 1)) == [Step(v, v) for v in range(7, 11)]
    assert list(batch_steps(11, 10, 2)) == []
    assert Step(998, 1001).multiples(1000) == 1 and Step(1001, 1004).multiples(1000) == 0
    assert Step(1, 2000).multiples(1000) == 2 and Step(5, 5).multiples(5) == 1
    assert Step(3, 6).holds(6) and not Step(3, 6).holds(7) and Step(3, 6).hits({1, 4, 6}) == [4, 6] and Step(5, 5).hits({5}) == [5]
    with pytest.raises(ValueError):
        list(batch_steps(1, 10, 0))


def test_view_shares_are_contiguous_and_even():
    assert view_shares(5, 2) == [range(0, 3), range(3, 5)]
    assert view_shares(2, 3) == [range(0, 1), range(1, 2), range(2, 2)]
    assert [len(r) for r in view_shares(16, 4)] == [4, 4, 4, 4]


def test_views_selected_and_put_back_by_position():
    """Contiguous positions give views of the tensor (no copy); others an index, same values."""
    tensor = torch.arange(5 * 3 * 2).reshape(5, 3, 2)
    for positions in ([1, 2, 3], [4], [3, 0, 2]):
        expected = torch.stack([tensor[p] for p in positions])
        assert torch.equal(select_views(tensor, positions), expected)
        assert torch.equal(select_views(tensor.transpose(0, 1), positions, dim=1), expected.transpose(0, 1))
        target = torch.zeros_like(tensor)
        put_views(target, positions, expected)
        assert torch.equal(target[positions], expected) and int(target.count_nonzero()) == int(expected.count_nonzero())
    run = select_views(tensor, [1, 2])
    assert run.data_ptr() == tensor[1].data_ptr()  # a view
    rows = [torch.full((2, 4), 1.0), torch.full((1, 4), 2.0)]
    assert in_view_order(rows, [[0, 2], [1]])[:, 0].tolist() == [1.0, 2.0, 1.0]
    assert in_view_order(rows, [[0, 1], [2]])[:, 0].tolist() == [1.0, 1.0, 2.0]


def test_learning_rates_and_betas_follow_the_batch():
    assert learning_rate_scale(4) == 2.0 and batch_betas((0.9, 0.999), 1) == (0.9, 0.999)
    assert batch_betas((0.9, 0.999), 4) == pytest.approx((0.9 ** 4, 0.999 ** 4))
    opt = OptimizationParams()
    gaussians = Gaussians.from_points(torch.rand(50, 3).double().numpy(), torch.rand(50, 3).double().numpy(), 1)
    one, four = GaussianModel.from_gaussians(gaussians), GaussianModel.from_gaussians(gaussians)
    one.training_setup(opt, 2.0)
    four.training_setup(opt, 2.0, batch_size=4)
    for g1, g4 in zip(one.optimizer.param_groups, four.optimizer.param_groups):
        assert g4["lr"] == pytest.approx(2.0 * g1["lr"]) and g1["betas"] == (0.9, 0.999)
        assert g4["betas"] == pytest.approx((0.9 ** 4, 0.999 ** 4))
    assert four.update_learning_rate(1000) == pytest.approx(2.0 * one.update_learning_rate(1000))
    # A checkpoint trained with one batch size continues with another: rates and betas follow.
    resumed = GaussianModel.from_state_dict(one.state_dict(), opt, "cpu", batch_size=4)
    for g, expected in zip(resumed.optimizer.param_groups, four.optimizer.param_groups):
        assert g["lr"] == pytest.approx(expected["lr"]) and g["betas"] == pytest.approx(expected["betas"])
    assert resumed.state_dict()["batch_size"] == 4
    same = GaussianModel.from_state_dict(one.state_dict(), opt, "cpu", batch_size=1)
    assert [g["lr"] for g in same.optimizer.param_groups] == [g["lr"] for g in one.optimizer.param_groups]


class EventRecorder(Trainer):
    """A trainer whose steps render nothing: it records at which views the schedule's events
    fire (fast enough for thousands of views)."""

    def setup(self) -> None:
        super().setup()
        self.events: list[tuple[str, int]] = []
        model = self.model
        record = self.events.append
        model.densify_and_prune = lambda *a, **k: record(("densify", self._current.last)) or _Report()
        model.reset_opacity = lambda: record(("reset", self._current.last))
        model.oneup_sh_degree = lambda: record(("sh", self._current.last))
        model.step = lambda visible=None: record(("adam", self._current.last))

    def _iteration(self, step: Step) -> None:
        self._current = step
        super()._iteration(step)

    def _forward_backward(self, step, views, gts, background):
        radii = torch.zeros(len(views), len(self.model), dtype=torch.int32, device=self.device)
        return ([ScreenStatistics(torch.zeros(len(views), len(self.model), 2, device=self.device), radii, 8, 8)],
                torch.zeros(len(views), 4, device=self.device))

    def _report(self, it: int) -> None:
        self.events.append(("test", it))

    def _save_ply(self, it: int) -> Path:
        self.events.append(("ply", it))
        return Path()

    def _save_checkpoint(self, it: int) -> Path:
        self.events.append(("checkpoint", it))
        return Path()


class _Report:
    capped = False


def schedule_events(scene: Path, model: Path, batch: int) -> list[tuple[str, int]]:
    config = tiny_config(scene, model, "--iterations", "3000", "--batch_size", str(batch), "--sh_degree", "3",
                         "--densify_from_iter", "500", "--densification_interval", "100", "--densify_until_iter", "1200",
                         "--opacity_reset_interval", "600", "--test_iterations", "1000", "2000",
                         "--save_iterations", "1500", "--checkpoint_iterations", "2400", "--disable_viewer")
    trainer = EventRecorder(config)
    result = trainer.run()
    trainer.scene.close()
    assert result.status == "completed" and result.iteration == 3000
    return trainer.events


def test_events_fire_at_the_same_view_counts(tiny_scene, tmp_path):
    """With a batch size that divides the intervals, every event happens in the step that ends
    at the view where one view per step has it; the optimiser steps once per step, except the
    last."""
    single = schedule_events(tiny_scene, tmp_path / "one", 1)
    batched = schedule_events(tiny_scene, tmp_path / "four", 4)
    assert [e for e in single if e[0] != "adam"] == [e for e in batched if e[0] != "adam"]
    assert ("densify", 600) in single and ("densify", 500) not in single and ("densify", 1200) not in single
    assert single.count(("reset", 600)) == 1 and ("reset", 1200) not in single
    assert [e for e in single if e[0] == "sh"] == [("sh", 1000), ("sh", 2000), ("sh", 3000)]
    assert ("ply", 1500) in single and ("ply", 3000) in single and ("checkpoint", 2400) in single
    assert sum(1 for e in single if e[0] == "adam") == 2999
    assert sum(1 for e in batched if e[0] == "adam") == 749


def test_a_batch_that_does_not_divide_the_schedule(tiny_scene, tmp_path):
    """B = 3: events fire in the step holding their view; checkpoints are named by the step's
    last view; the last step is short (3000 = 999 * 3 + 3, here 2999 views: 1000 steps)."""
    config = tiny_config(tiny_scene, tmp_path / "three", "--iterations", "2999", "--batch_size", "3",
                         "--densify_from_iter", "500", "--densification_interval", "100", "--densify_until_iter", "1200",
                         "--opacity_reset_interval", "600", "--test_iterations", "1000", "--save_iterations", "1500",
                         "--checkpoint_iterations", "2400", "--disable_viewer")
    trainer = EventRecorder(config)
    trainer.run()
    trainer.scene.close()
    events = trainer.events
    assert ("densify", 600) in events and ("densify", 702) in events  # 700 is in the step 700..702
    assert ("test", 1000) in events and ("ply", 1500) in events and ("ply", 2999) in events
    assert ("checkpoint", 2400) in events          # 2398..2400
    assert [e for e in events if e[0] == "sh"] == [("sh", 1002), ("sh", 2001)]
    assert sum(1 for e in events if e[0] == "adam") == 999


def test_batched_training_learns_and_resumes_exactly(tiny_scene, tmp_path, cpu_only):
    flags = ["--iterations", "120", "--batch_size", "2", "--densify_from_iter", "20", "--densification_interval", "20",
             "--opacity_reset_interval", "1000", "--densify_until_iter", "100", "--test_iterations", "2", "120"]
    full = train(tiny_config(tiny_scene, tmp_path / "full", "--checkpoint_iterations", "60", "120", *flags))
    assert full.status == "completed" and full.iteration == 120 and full.steps == 120
    assert full.metrics[120]["train"]["psnr"] > full.metrics[2]["train"]["psnr"] + 2.0  # 2: before any step
    assert full.num_gaussians > 200  # densified
    resumed = train(tiny_config(tiny_scene, tmp_path / "resumed", "--checkpoint_iterations", "120",
                                "--start_checkpoint", str(tmp_path / "full" / "chkpnt60.pth"), *flags))
    assert resumed.steps == 60
    a = load_checkpoint(tmp_path / "full" / "chkpnt120.pth", torch.device("cpu"))
    b = load_checkpoint(tmp_path / "resumed" / "chkpnt120.pth", torch.device("cpu"))
    for name, tensor in a["model"]["params"].items():
        assert torch.equal(tensor, b["model"]["params"][name]), name
    assert a["model"]["batch_size"] == 2


def test_a_batch_of_several_image_sizes(shared_data, tmp_path):
    """statuette's images differ in size: a batch renders each size on its own and sums."""
    config = tiny_config(shared_data("statuette"), tmp_path / "m", "-r", "8", "--iterations", "9", "--batch_size", "3",
                         "--test_iterations", "9", "--disable_viewer")
    trainer = Trainer(config)
    trainer.setup()
    sizes = {(v.camera.width, v.camera.height) for v in trainer.scene.train_views}
    assert len(sizes) > 1
    result = trainer.run()
    trainer.scene.close()
    assert result.status == "completed" and result.iteration == 9
    assert math.isfinite(result.metrics[9]["train"]["psnr"])
