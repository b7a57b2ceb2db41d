"""The trainable model: learning rates, SH schedule, densification surgery on hand-made Gaussians,
sparse Adam and graphdeco checkpoint conversion."""

from __future__ import annotations

import math

import pytest
import torch

from rasterizer.gaussians import Gaussians, inverse_sigmoid
from rasterizer.reference import quaternion_to_matrix
from trainer.config import OptimizationParams
from trainer.model import (ADAM_EPS, ADAM_MOMENTS, PARAM_NAMES, GaussianModel, SparseGaussianAdam,
                           compact_rows_in_place, convert_reference_capture)
from trainer.schedule import ExponentialLR, expon_lr, sh_degree_at

EXTENT = 10.0   # percent_dense * extent = 0.1; world-size prune above 0.1 * extent = 1.0


# ----- schedules -------------------------------------------------------------------------------
def test_exponential_schedule_hand_values():
    init, final, steps = 1.6e-4, 1.6e-6, 30_000
    assert expon_lr(0, init, final, steps) == pytest.approx(init, rel=1e-12)
    assert expon_lr(steps, init, final, steps) == pytest.approx(final, rel=1e-12)
    assert expon_lr(2 * steps, init, final, steps) == pytest.approx(final, rel=1e-12)
    assert expon_lr(steps // 2, init, final, steps) == pytest.approx(math.sqrt(init * final), rel=1e-12)
    # 7000 / 30000 of the way in log space: 1.6e-4 * 100^(-7/30)
    assert expon_lr(7000, init, final, steps) == pytest.approx(1.6e-4 * 100 ** (-7 / 30), rel=1e-12)
    assert expon_lr(-1, init, final, steps) == 0.0
    assert expon_lr(10, 0.0, 0.0, steps) == 0.0
    # Delay: mult + (1 - mult) sin(pi/2 * t/delay)
    assert expon_lr(0, 1.0, 1.0, 100, delay_steps=50, delay_mult=0.01) == pytest.approx(0.01)
    assert expon_lr(25, 1.0, 1.0, 100, delay_steps=50, delay_mult=0.01) == pytest.approx(
        0.01 + 0.99 * math.sin(math.pi / 4))
    assert ExponentialLR(init, final, steps)(123) == expon_lr(123, init, final, steps)


def test_sh_degree_schedule():
    assert [sh_degree_at(i, 3) for i in (1, 999, 1000, 1999, 2000, 2999, 3000, 30_000)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert sh_degree_at(5000, 1) == 1 and sh_degree_at(5000, 0) == 0


def make_model(gaussians: Gaussians, opt: OptimizationParams | None = None, extent: float = EXTENT) -> GaussianModel:
    model = GaussianModel.from_gaussians(gaussians)
    model.training_setup(opt or OptimizationParams(), extent)
    return model


def hand_made(sh_degree: int = 1) -> Gaussians:
    """0: small, 1: large (split), 2: small, 3: transparent, 4: huge in world space."""
    n = 5
    k = (sh_degree + 1) ** 2
    scales = torch.tensor([0.05, 0.5, 0.05, 0.05, 2.0])
    quats = torch.tensor([[1.0, 0, 0, 0], [0.9, 0.1, -0.3, 0.2], [1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]])
    opacity = inverse_sigmoid(torch.tensor([0.5, 0.6, 0.7, 0.001, 0.5]))
    return Gaussians(
        means=torch.arange(n * 3, dtype=torch.float32).reshape(n, 3),
        sh_dc=torch.arange(n * 3, dtype=torch.float32).reshape(n, 1, 3) / 10,
        sh_rest=torch.arange(n * (k - 1) * 3, dtype=torch.float32).reshape(n, k - 1, 3) / 100,
        opacity_logits=opacity,
        log_scales=torch.log(scales)[:, None].repeat(1, 3) * torch.tensor([1.0, 1.0, 1.0]),
        quaternions=quats)


def test_learning_rates_and_adam_groups():
    opt = OptimizationParams()
    model = make_model(hand_made(), opt, extent=2.5)
    groups = {g["name"]: g for g in model.optimizer.param_groups}
    assert list(groups) == list(PARAM_NAMES)
    assert groups["xyz"]["lr"] == pytest.approx(0.00016 * 2.5)
    assert groups["f_dc"]["lr"] == 0.0025 and groups["f_rest"]["lr"] == pytest.approx(0.0025 / 20)
    assert (groups["opacity"]["lr"], groups["scaling"]["lr"], groups["rotation"]["lr"]) == (0.025, 0.005, 0.001)
    assert all(g["eps"] == ADAM_EPS == 1e-15 for g in groups.values())
    lr = model.update_learning_rate(15_000)
    assert lr == groups["xyz"]["lr"] == pytest.approx(math.sqrt(0.00016 * 0.0000016) * 2.5)
    # position_lr_delay_mult is inert, as in the reference.
    opt.position_lr_delay_mult = 0.5
    other = make_model(hand_made(), opt, extent=2.5)
    assert other.update_learning_rate(1) == model.update_learning_rate(1)


def test_sh_degree_up_is_capped():
    model = make_model(hand_made(sh_degree=1))
    assert model.max_sh_degree == 1 and model.active_sh_degree == 0
    model.oneup_sh_degree(), model.oneup_sh_degree()
    assert model.active_sh_degree == 1


def take_a_step(model: GaussianModel) -> None:
    """One Adam step on a simple loss, so that every moment is non-zero."""
    loss = sum((p * torch.linspace(0.5, 1.5, p.numel()).reshape(p.shape)).sum() for p in model.params.values())
    loss.backward()
    model.step()


def set_grads(model: GaussianModel, grads, denom: float = 2.0) -> None:
    model.denom = torch.full((len(model),), denom)
    model.grad_accum = torch.tensor(grads, dtype=torch.float32) * denom


# ----- densification ---------------------------------------------------------------------------
def test_add_densification_stats_only_visible():
    model = make_model(hand_made())
    grad = torch.tensor([[3.0, 4.0], [1, 0], [0, 0], [6, 8], [1, 1]])
    radii = torch.tensor([2, 0, 5, 7, 0], dtype=torch.int32)
    model.add_densification_stats(grad, radii)
    model.add_densification_stats(grad, torch.tensor([1, 0, 9, 0, 0], dtype=torch.int32))
    assert model.grad_accum.tolist() == [10.0, 0.0, 0.0, 10.0, 0.0]
    assert model.denom.tolist() == [2, 0, 2, 1, 0]
    assert model.max_radii.tolist() == [2, 0, 9, 7, 0]


def test_clone_split_prune_on_hand_made_gaussians():
    model = make_model(hand_made())
    take_a_step(model)
    before = {k: v.detach().clone() for k, v in model.params.items()}
    moments = {k: model.optimizer.state[model.params[k]]["exp_avg"].clone() for k in PARAM_NAMES}
    # grads: 0 clone (small, high), 1 split (large, high), 2 low, 3 transparent (high, small: cloned
    # too, then both pruned), 4 huge but low gradient. Threshold 0.0002; 1/0 -> NaN -> 0 is tested
    # with denom 0 on row 2.
    set_grads(model, [0.0003, 0.0002, 0.0, 0.001, 0.0001])
    model.denom[2] = 0.0
    model.grad_accum[2] = 0.0
    torch.manual_seed(123)
    report = model.densify_and_prune(0.0002, 0.005, EXTENT, size_threshold=None)
    assert (report.cloned, report.split, report.before) == (2, 1, 5)

    # Expected order: survivors [0, 2, 3, 4], clones [0, 3], children of 1 (two), then prune
    # the transparent 3 and its clone.
    torch.manual_seed(123)
    scale1 = torch.exp(before["scaling"][1])
    samples = torch.normal(mean=torch.zeros(2, 3), std=scale1.repeat(2, 1))
    rotation = quaternion_to_matrix(torch.nn.functional.normalize(before["rotation"][1:2], dim=-1))[0]
    children_xyz = samples @ rotation.T + before["xyz"][1]
    expected_xyz = torch.cat([before["xyz"][[0, 2, 4]], before["xyz"][[0]], children_xyz])
    assert report.pruned == 2 and report.after == len(model) == 6
    torch.testing.assert_close(model.params["xyz"].detach(), expected_xyz, rtol=0, atol=1e-6)
    # Clone = exact copy at the same position (the reference's quirk), all parameters.
    for name in PARAM_NAMES:
        assert torch.equal(model.params[name].detach()[3], before[name][0])
    # Children: scale / 1.6 (log), everything else copied raw.
    torch.testing.assert_close(model.params["scaling"].detach()[4:], (before["scaling"][1] - math.log(1.6)).repeat(2, 1))
    for name in ("f_dc", "f_rest", "opacity", "rotation"):
        assert torch.equal(model.params[name].detach()[4], before[name][1])
        assert torch.equal(model.params[name].detach()[5], before[name][1])
    # Adam: survivors keep their moments, new rows start at zero.
    for name in PARAM_NAMES:
        state = model.optimizer.state[model.params[name]]
        assert torch.equal(state["exp_avg"][:3], moments[name][[0, 2, 4]])
        assert not state["exp_avg"][3:].any() and not state["exp_avg_sq"][3:].any()
        assert state["exp_avg"].shape[0] == 6
    # Statistics are zeroed after densification.
    assert not model.grad_accum.any() and not model.denom.any() and not model.max_radii.any()


def test_size_prune_is_dead_code_unless_fixed():
    for fix in (False, True):
        model = make_model(hand_made())
        set_grads(model, [0.0, 0.0, 0.0, 0.0, 0.0])
        model.max_radii = torch.tensor([0.0, 0.0, 25.0, 0.0, 0.0])  # row 2 is huge on screen
        report = model.densify_and_prune(0.0002, 0.005, EXTENT, size_threshold=20, fix_quirks=fix)
        # Always pruned: 3 (opacity 0.001 < 0.005) and 4 (scale 2.0 > 0.1 * extent).
        # Row 2 (25 px > 20) only when the quirk is fixed.
        assert report.pruned == (3 if fix else 2)
        assert len(model) == (2 if fix else 3)
    # No size threshold (before the first opacity reset): the world-size test is off too.
    model = make_model(hand_made())
    set_grads(model, [0.0] * 5)
    assert model.densify_and_prune(0.0002, 0.005, EXTENT, size_threshold=None).pruned == 1


def test_max_gaussians_keeps_largest_gradients():
    model = make_model(hand_made())
    set_grads(model, [0.0003, 0.0009, 0.0, 0.0, 0.0])
    report = model.densify_and_prune(0.0002, 0.005, EXTENT, None, max_gaussians=6)
    assert report.capped and (report.cloned, report.split) == (0, 1)  # row 1 had the larger gradient
    assert len(model) == 6 - 1  # 5 + 1 (split) - 1 (transparent row pruned)
    model = make_model(hand_made())
    set_grads(model, [0.0003, 0.0009, 0.0, 0.0, 0.0])
    assert not model.densify_and_prune(0.0002, 0.005, EXTENT, None, max_gaussians=100).capped
    model = make_model(hand_made())
    set_grads(model, [0.0003, 0.0009, 0.0, 0.0, 0.0])
    report = model.densify_and_prune(0.0002, 0.005, EXTENT, None, max_gaussians=3)  # already over
    assert report.capped and report.cloned == report.split == 0


def test_reset_opacity_caps_and_zeroes_moments():
    model = make_model(hand_made())
    take_a_step(model)
    opacity = model.opacities.detach().clone()
    scaling_moment = model.optimizer.state[model.params["scaling"]]["exp_avg"].clone()
    model.reset_opacity()
    torch.testing.assert_close(model.opacities.detach(), torch.clamp_max(opacity, 0.01))
    state = model.optimizer.state[model.params["opacity"]]
    assert not state["exp_avg"].any() and not state["exp_avg_sq"].any()
    assert int(state["step"]) == 1  # the step count is kept, as the reference
    assert torch.equal(model.optimizer.state[model.params["scaling"]]["exp_avg"], scaling_moment)


def test_reset_opacity_replaces_only_the_opacity_parameter():
    """The reference's replace_tensor_to_optimizer swaps the opacity parameter alone: in a step
    where the opacity reset comes without densification (white background, at
    densify_from_iter), the other parameters keep their gradients and Adam still updates them
    (only the new opacity has none)."""
    model = make_model(hand_made())
    take_a_step(model)
    before = {name: model.params[name] for name in PARAM_NAMES}
    loss = sum(param.square().sum() for param in model.params.values())
    loss.backward()
    model.reset_opacity()
    assert model.params["opacity"] is not before["opacity"] and model.params["opacity"].grad is None
    for name in PARAM_NAMES:
        if name != "opacity":
            assert model.params[name] is before[name] and model.params[name].grad is not None, name
    xyz = model.params["xyz"].detach().clone()
    model.step()
    assert not torch.equal(model.params["xyz"].detach(), xyz)


# ----- surgery one tensor at a time ----------------------------------------------------------------
def test_compact_rows_in_place_is_the_gather():
    generator = torch.Generator().manual_seed(3)
    for rows, chunk in ((1000, 7), (1000, 64), (1000, 1 << 16), (5, 1)):
        tensor = torch.randn(rows, 4, 3, generator=generator)
        kept = torch.nonzero(torch.rand(rows, generator=generator) < 0.6).squeeze(1)
        expected = tensor[kept].clone()
        storage = tensor.data_ptr()
        result = compact_rows_in_place(tensor, kept, chunk=chunk)
        assert torch.equal(result, expected) and result.data_ptr() == storage  # in place: a view


def model_contents(model: GaussianModel) -> dict[str, torch.Tensor]:
    """Every parameter and Adam moment by name (clones), after checking that the optimiser
    holds exactly the model's parameters and all have one row count."""
    contents = {}
    for group in model.optimizer.param_groups:
        param = group["params"][0]
        assert param is model.params[group["name"]] and param in model.optimizer.state
        contents[group["name"]] = param.detach().clone()
        for key in ADAM_MOMENTS:
            contents[f"{group['name']}.{key}"] = model.optimizer.state[param][key].clone()
    assert len({value.shape[0] for value in contents.values()}) == 1
    assert model.grad_accum.shape[0] == model.denom.shape[0] == model.max_radii.shape[0] == len(model)
    return contents


def fail_at(model: GaussianModel, call: int) -> None:
    """Make the ``call``-th tensor that the model's next surgery builds run out of memory."""
    rebuild_all = model._rebuild

    def failing(rebuild, settle):
        count = iter(range(10**6))

        def rebuild_or_fail(name, key, old):
            if next(count) == call:
                raise torch.OutOfMemoryError("injected")
            return rebuild(name, key, old)
        rebuild_all(rebuild_or_fail, settle)
    model._rebuild = failing


@pytest.mark.parametrize("surgery", ["append", "keep"])
def test_a_surgery_that_runs_out_of_memory_leaves_a_whole_model(surgery):
    """Each tensor is replaced before the next is built; running out of memory part way must
    leave one consistent model the trainer can save: as before an append, as after a prune
    (the tensors not yet rebuilt compacted in place). (An opacity reset allocates nothing.)"""
    def run(model: GaussianModel) -> None:
        if surgery == "append":
            model.densify_and_clone(torch.tensor([True, False, True, True, False]))
        else:
            model.prune(torch.tensor([False, True, False, True, False]))

    def fresh() -> GaussianModel:
        model = make_model(hand_made())
        take_a_step(model)
        return model

    before = model_contents(fresh())
    clean = fresh()
    run(clean)
    after = model_contents(clean)
    slots = len(PARAM_NAMES) * (1 + len(ADAM_MOMENTS))  # in order: a parameter, then its moments
    expected = before if surgery == "append" else after
    for call in range(slots):
        model = fresh()
        fail_at(model, call)
        with pytest.raises(torch.OutOfMemoryError):
            run(model)
        contents = model_contents(model)
        assert contents.keys() == expected.keys()
        for name, value in expected.items():
            assert torch.equal(contents[name], value), (surgery, call, name)
        take_a_step(model)  # and it still trains


# ----- sparse Adam -------------------------------------------------------------------------------
def test_sparse_adam_updates_only_visible_rows():
    opt = OptimizationParams(optimizer_type="sparse_adam")
    model = make_model(hand_made(), opt)
    assert isinstance(model.optimizer, SparseGaussianAdam)
    before = {k: v.detach().clone() for k, v in model.params.items()}
    visible = torch.tensor([True, False, True, False, False])
    for p in model.params.values():
        p.grad = torch.ones_like(p)
    model.step(visible)
    for name, param in model.params.items():
        lr = next(g["lr"] for g in model.optimizer.param_groups if g["name"] == name)
        state = model.optimizer.state[param]
        # No bias correction (the reference's kernel): m = 0.1 g, v = 0.001 g^2.
        expected = before[name][visible] - lr * 0.1 / (math.sqrt(0.001) + 1e-15)
        torch.testing.assert_close(param.detach()[visible], expected)
        assert torch.equal(param.detach()[~visible], before[name][~visible])
        assert not state["exp_avg"][~visible].any()
        torch.testing.assert_close(state["exp_avg"][visible], torch.full_like(state["exp_avg"][visible], 0.1))
        assert param.grad is None


# ----- graphdeco checkpoints ---------------------------------------------------------------------------
def reference_capture(n: int = 6, sh_degree: int = 1):
    """A hand-built graphdeco GaussianModel.capture() tuple after one Adam step."""
    k = (sh_degree + 1) ** 2
    gen = torch.Generator().manual_seed(3)
    tensors = [torch.randn(n, 3, generator=gen), torch.randn(n, 1, 3, generator=gen),
               torch.randn(n, k - 1, 3, generator=gen), torch.randn(n, 1, generator=gen),
               torch.randn(n, 3, generator=gen) - 3, torch.randn(n, 4, generator=gen)]
    params = [torch.nn.Parameter(t) for t in tensors]   # xyz, f_dc, f_rest, opacity, scaling, rotation
    names = ["xyz", "f_dc", "f_rest", "opacity", "scaling", "rotation"]
    adam = torch.optim.Adam([{"params": [p], "lr": 0.01, "name": name} for p, name in zip(params, names)],
                            lr=0.0, eps=1e-15)
    sum((p ** 2).sum() for p in params).backward()
    adam.step()
    xyz, f_dc, f_rest, opacity, scaling, rotation = (p.detach() for p in params)
    capture = (1, xyz, f_dc, f_rest, scaling, rotation, opacity, torch.arange(n, dtype=torch.float32),
               torch.rand(n, 1, generator=gen), torch.ones(n, 1), adam.state_dict(), 2.5)
    return capture, adam


def test_convert_reference_capture():
    capture, adam = reference_capture()
    state = convert_reference_capture(capture)
    model = GaussianModel.from_state_dict(state, OptimizationParams())
    assert (model.max_sh_degree, model.active_sh_degree, model.spatial_lr_scale) == (1, 1, 2.5)
    assert model.params["opacity"].shape == (6,)
    torch.testing.assert_close(model.params["opacity"].detach(), capture[6][:, 0])
    torch.testing.assert_close(model.params["scaling"].detach(), capture[4])
    torch.testing.assert_close(model.grad_accum, capture[8][:, 0])
    torch.testing.assert_close(model.max_radii, capture[7])
    opacity_state = model.optimizer.state[model.params["opacity"]]
    reference_state = adam.state[adam.param_groups[3]["params"][0]]
    torch.testing.assert_close(opacity_state["exp_avg"], reference_state["exp_avg"][:, 0])
    assert int(opacity_state["step"]) == 1
    # It keeps training.
    take_a_step(model)
    with pytest.raises(ValueError):
        convert_reference_capture(capture[:5])
