"""The trainable Gaussian model: parameters, Adam, densification statistics and surgery.

This is graphdeco-inria's ``scene/gaussian_model.py`` (HEAD ``54c035f``), reproduced rule for
rule (spec §4.2-4.5). Parameters are named and ordered as the reference's Adam groups::

    xyz [N, 3], f_dc [N, 1, 3], f_rest [N, K-1, 3], opacity [N], scaling [N, 3], rotation [N, 4]

(raw, pre-activation values; ``opacity`` is [N] here and [N, 1] in the reference). Densification
statistics live beside them: ``grad_accum`` (sum of NDC gradient norms), ``denom`` (number of
steps in which the Gaussian was visible) and ``max_radii`` (largest screen radius, pixels).

Known quirks of the reference, kept by default (``fix_quirks=True`` changes only the first):

* The size prune ``max_radii2D > 20`` never fires: the statistics are zeroed after clone and
  after split, just before the prune reads them (issues #123/#741/#1108; the maintainers kept
  it for reproducibility). ``fix_quirks`` uses the radii as they were before densification.
* Clones sit at exactly the parent's position; the paper moves them along the positional
  gradient (issue #820). The next optimiser steps separate them (their Adam moments differ).
* ``position_lr_delay_mult`` has no effect: the schedule is built without delay steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from rasterizer.gaussians import Gaussians, inverse_sigmoid
from rasterizer.reference import quaternion_to_matrix
from rasterizer.sh import sh_degree_from_coefficients

from .batching import batch_betas, learning_rate_scale
from .config import OptimizationParams
from .schedule import ExponentialLR

__all__ = ["GaussianModel", "SparseGaussianAdam", "DensifyReport", "PARAM_NAMES", "ADAM_EPS",
           "MIN_OPACITY", "SPLIT_CHILDREN", "SIZE_PRUNE_PIXELS", "ADAM_MOMENTS", "compact_rows_in_place",
           "convert_reference_capture"]

# The reference's Adam parameter-group order; its checkpoints key optimizer state by it.
PARAM_NAMES = ("xyz", "f_dc", "f_rest", "opacity", "scaling", "rotation")
ADAM_EPS = 1e-15
ADAM_BETAS = (0.9, 0.999)  # torch's defaults, the reference's
MIN_OPACITY = 0.005        # prune threshold on sigmoid(opacity)
SPLIT_CHILDREN = 2         # N in densify_and_split
SPLIT_SCALE_DIVISOR = 0.8 * SPLIT_CHILDREN   # children's scale = parent's / 1.6
SIZE_PRUNE_PIXELS = 20     # max_radii2D threshold, used after the first opacity reset
WORLD_SIZE_PRUNE = 0.1     # fraction of the extent above which a Gaussian is pruned
RESET_OPACITY = 0.01
ADAM_MOMENTS = ("exp_avg", "exp_avg_sq")  # the Adam state with a row per Gaussian


class SparseGaussianAdam(torch.optim.Adam):
    """Adam that updates only the rows (Gaussians) visible in the step, as the reference's
    ``SparseGaussianAdam`` (rasterizer branch ``3dgs_accel``, from Taming-3DGS).

    Rows outside ``visible`` keep their parameters *and* moments untouched. Like the
    reference's CUDA kernel it uses **no bias correction** and does not advance the ``step``
    counter; its betas are the group's, (0.9, 0.999) as the reference's kernel hard-codes unless
    a batch of views changed them (``trainer.batching``).
    """

    @torch.no_grad()
    def step(self, visible: Tensor | None = None, closure: Callable | None = None):  # type: ignore[override]
        if visible is None:
            raise ValueError("SparseGaussianAdam.step needs the visibility mask [N] (radii > 0)")
        rows = torch.nonzero(visible).squeeze(1)
        for group in self.param_groups:
            lr, eps = group["lr"], group["eps"]
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if len(state) == 0:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                grad = param.grad[rows]
                exp_avg = state["exp_avg"][rows].mul_(beta1).add_(grad, alpha=1.0 - beta1)
                exp_avg_sq = state["exp_avg_sq"][rows].mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                state["exp_avg"][rows] = exp_avg
                state["exp_avg_sq"][rows] = exp_avg_sq
                param[rows] = param[rows] - lr * exp_avg / (exp_avg_sq.sqrt() + eps)
        return None


@dataclass
class DensifyReport:
    """What one ``densify_and_prune`` did (counts of Gaussians)."""

    cloned: int = 0
    split: int = 0          # parents split (each replaced by SPLIT_CHILDREN children)
    pruned: int = 0
    capped: bool = False    # candidates were dropped because of max_gaussians
    before: int = 0
    after: int = 0


class GaussianModel:
    """Trainable Gaussians with the reference's optimiser and densification.

    Typical use::

        model = GaussianModel.from_gaussians(Gaussians.from_points(xyz, rgb, 3), device)
        model.training_setup(opt, spatial_lr_scale=scene.extent)
        ... render(model.gaussians(), ...) ... loss.backward()
        model.add_densification_stats(out.ndc_gradient(W, H), out.radii)
        model.step(visible=out.radii > 0)
    """

    def __init__(self, params: dict[str, Tensor], max_sh_degree: int, active_sh_degree: int = 0):
        self.params: dict[str, torch.nn.Parameter] = {
            name: torch.nn.Parameter(params[name].detach().clone().contiguous(), requires_grad=True)
            for name in PARAM_NAMES}
        self.max_sh_degree = int(max_sh_degree)
        self.active_sh_degree = int(active_sh_degree)
        n = len(self)
        device = self.device
        self.grad_accum = torch.zeros(n, device=device)
        self.denom = torch.zeros(n, device=device)
        self.max_radii = torch.zeros(n, device=device)
        self.spatial_lr_scale = 1.0
        self.percent_dense = 0.01
        self.optimizer: torch.optim.Adam | None = None
        self.optimizer_type = "default"
        self.xyz_schedule: ExponentialLR | None = None
        self.batch_size = 1         # views per optimiser step the rates and betas are set for

    # ----- construction -----------------------------------------------------------------
    @classmethod
    def from_gaussians(cls, gaussians: Gaussians, device: torch.device | str = "cpu",
                       max_sh_degree: int | None = None) -> "GaussianModel":
        """A model holding copies of ``gaussians`` (SH padded/truncated to ``max_sh_degree``)."""
        degree = gaussians.sh_degree if max_sh_degree is None else int(max_sh_degree)
        g = gaussians.with_sh_degree(degree).to(device=device, dtype=torch.float32)
        return cls({"xyz": g.means, "f_dc": g.sh_dc, "f_rest": g.sh_rest,
                    "opacity": g.opacity_logits, "scaling": g.log_scales,
                    "rotation": g.quaternions}, degree)

    def training_setup(self, opt: OptimizationParams, spatial_lr_scale: float, batch_size: int = 1) -> None:
        """Adam (eps 1e-15) with the reference's groups and learning rates; the position rate
        is ``position_lr_init * spatial_lr_scale`` and follows the exponential schedule. For
        ``batch_size`` views per step every rate is multiplied by sqrt(B) and the betas
        (0.9, 0.999) raised to the power B (``trainer.batching``); B = 1 is the reference."""
        self.spatial_lr_scale = float(spatial_lr_scale)
        self.percent_dense = opt.percent_dense
        self.batch_size = int(batch_size)
        scale = learning_rate_scale(self.batch_size)
        groups = [
            {"params": [self.params["xyz"]], "lr": opt.position_lr_init * self.spatial_lr_scale, "name": "xyz"},
            {"params": [self.params["f_dc"]], "lr": opt.feature_lr, "name": "f_dc"},
            {"params": [self.params["f_rest"]], "lr": opt.feature_lr / 20.0, "name": "f_rest"},
            {"params": [self.params["opacity"]], "lr": opt.opacity_lr, "name": "opacity"},
            {"params": [self.params["scaling"]], "lr": opt.scaling_lr, "name": "scaling"},
            {"params": [self.params["rotation"]], "lr": opt.rotation_lr, "name": "rotation"},
        ]
        for group in groups:
            group["lr"] *= scale
            group["betas"] = batch_betas(ADAM_BETAS, self.batch_size)
        self.optimizer_type = opt.optimizer_type
        self.optimizer = _make_optimizer(groups, opt.optimizer_type, self.device)
        # Quirk kept: the reference never passes lr_delay_steps, so position_lr_delay_mult is
        # inert (the delay factor needs delay_steps > 0).
        self.xyz_schedule = ExponentialLR(opt.position_lr_init * self.spatial_lr_scale * scale,
                                          opt.position_lr_final * self.spatial_lr_scale * scale,
                                          max_steps=opt.position_lr_max_steps)

    def rescale_for_batch(self, batch_size: int) -> None:
        """Adapt the optimiser's rates and betas, set for ``self.batch_size`` views per step (e.g.
        by a checkpoint), to ``batch_size``; nothing changes when they are equal."""
        if batch_size == self.batch_size:
            return
        ratio = batch_size / self.batch_size
        for group in self.optimizer.param_groups:
            group["lr"] *= math.sqrt(ratio)
            group["betas"] = tuple(beta ** ratio for beta in group["betas"])
        schedule = self.xyz_schedule
        schedule.lr_init *= math.sqrt(ratio)
        schedule.lr_final *= math.sqrt(ratio)
        self.batch_size = int(batch_size)

    # ----- views --------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.params["xyz"].shape[0]

    @property
    def device(self) -> torch.device:
        return self.params["xyz"].device

    def gaussians(self) -> Gaussians:
        """The parameters as a :class:`Gaussians` (the same tensors: renders get gradients)."""
        p = self.params
        return Gaussians(p["xyz"], p["f_dc"], p["f_rest"], p["opacity"], p["scaling"], p["rotation"])

    @property
    def scales(self) -> Tensor:
        return torch.exp(self.params["scaling"])

    @property
    def opacities(self) -> Tensor:
        return torch.sigmoid(self.params["opacity"])

    # ----- schedules ------------------------------------------------------------------------
    def update_learning_rate(self, iteration: int) -> float:
        """Set the position learning rate for 1-based ``iteration``; returns it."""
        lr = self.xyz_schedule(iteration)
        for group in self.optimizer.param_groups:
            if group["name"] == "xyz":
                group["lr"] = lr
        return lr

    def oneup_sh_degree(self) -> None:
        if self.active_sh_degree < self.max_sh_degree:
            self.active_sh_degree += 1

    # ----- optimisation ----------------------------------------------------------------------
    def step(self, visible: Tensor | None = None) -> None:
        """One optimiser step (sparse Adam uses ``visible``), then gradients set to None."""
        if isinstance(self.optimizer, SparseGaussianAdam):
            self.optimizer.step(visible)
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def add_densification_stats(self, ndc_grad: Tensor, radii: Tensor) -> None:
        """Accumulate one step's statistics for the visible Gaussians (``radii > 0``):
        ``max_radii = max(max_radii, radii)``, ``grad_accum += |ndc_grad[:, :2]|``, ``denom += 1``."""
        # Masked arithmetic rather than boolean indexing: no host synchronisation per step.
        visible = radii > 0
        radii = radii.to(self.max_radii.dtype)
        self.max_radii.copy_(torch.where(visible, torch.maximum(self.max_radii, radii), self.max_radii))
        norms = torch.norm(ndc_grad[:, :2], dim=-1).to(self.grad_accum.dtype)
        self.grad_accum.add_(torch.where(visible, norms, torch.zeros_like(norms)))
        self.denom.add_(visible.to(self.denom.dtype))

    @torch.no_grad()
    def add_gradients(self, grads: Sequence[Tensor | None]) -> None:
        """Add gradients computed outside autograd, in :class:`Gaussians` field order (means,
        log_scales, quaternions, opacity_logits, sh_dc, sh_rest), to the parameters' ``.grad``; a
        None is no gradient (a parameter whose step the rasterizer's backward took)."""
        for name, grad in zip(("xyz", "scaling", "rotation", "opacity", "f_dc", "f_rest"), grads):
            if grad is None:
                continue
            param = self.params[name]
            if param.grad is None:
                param.grad = grad
            else:
                param.grad += grad

    @torch.no_grad()
    def add_render_statistics(self, means2d_grad: Tensor, radii: Tensor, width: int, height: int,
                              fused: bool = False) -> None:
        """:meth:`add_densification_stats` for a render of ``width`` x ``height`` pixels, from its
        ``means2d`` gradient in pixels ([N, 2]; [V, N, 2] with radii [V, N] for V views, added
        one view after the other). ``fused``: one CUDA kernel (``trainer.cuda``) instead of
        a dozen small ones, the same arithmetic."""
        if fused:
            from .cuda import accumulate_densification_stats  # noqa: PLC0415 - needs cuda-bindings

            accumulate_densification_stats(means2d_grad, radii, width, height, self.grad_accum, self.denom,
                                           self.max_radii)
            return
        scale = means2d_grad.new_tensor([width / 2.0, height / 2.0])
        for grad, view_radii in zip(means2d_grad.reshape(-1, len(self), 2), radii.reshape(-1, len(self))):
            self.add_densification_stats(grad * scale, view_radii)

    # ----- optimiser surgery (the reference's cat/prune/replace_tensor_to_optimizer) -----------
    def _rebuild(self, rebuild: Callable[[str, str, Tensor], Tensor],
                 settle: Callable[[str, str, Tensor, bool], Tensor]) -> None:
        """Replace the parameters and their Adam moments **one tensor at a time**.

        ``rebuild(name, key, old)`` returns the new tensor for parameter group ``name`` (``key``
        is ``"param"`` or a moment, ``"exp_avg"``/``"exp_avg_sq"``), or ``old`` itself to leave
        it. Each new tensor takes its old one's place before the next is built, so the memory
        this needs beyond the model is one new tensor (at most the SH coefficients, 180 bytes a
        Gaussian) rather than a new model with its moments (708 bytes a Gaussian), and the old
        gradients go with their parameters. Densification had been the peak of a run's memory.

        If building fails part way (out of memory, Ctrl-C), ``settle(name, key, tensor,
        rebuilt)`` is put in place of every tensor, those rebuilt already and those not, and
        must return them all to one consistent model without allocating much (views, in-place
        work); then the error propagates. So the model the trainer saves on the way out is
        always whole. The Adam ``step`` counts carry over, as in the reference."""
        slots = [(group, key) for group in self.optimizer.param_groups
                 for key in ("param", *ADAM_MOMENTS) if key == "param" or key in self._state_of(group)]
        for position, (group, key) in enumerate(slots):
            old = self._slot(group, key)
            try:
                new = rebuild(group["name"], key, old)
            except BaseException:
                for other, (group_, key_) in enumerate(slots):
                    current = self._slot(group_, key_)
                    settled = settle(group_["name"], key_, current, other < position)
                    if settled is not current:
                        self._put(group_, key_, settled)
                raise
            if new is not old:
                del old  # the old tensor's memory is free once it is out of the optimiser
                self._put(group, key, new)

    def _state_of(self, group: dict) -> dict:
        return self.optimizer.state.get(group["params"][0], {})

    def _slot(self, group: dict, key: str) -> Tensor:
        param = group["params"][0]
        return param.detach() if key == "param" else self.optimizer.state[param][key]

    def _put(self, group: dict, key: str, tensor: Tensor) -> None:
        """``tensor`` in slot ``key`` of optimiser ``group``. A new parameter also becomes
        :attr:`params`' entry, and its old one's Adam state moves over to it unchanged."""
        if key != "param":
            self.optimizer.state[group["params"][0]][key] = tensor
            return
        param = torch.nn.Parameter(tensor.contiguous(), requires_grad=True)
        state = self.optimizer.state.pop(group["params"][0], None)
        if state is not None:
            self.optimizer.state[param] = state
        group["params"][0] = param
        self.params[group["name"]] = param

    def _append(self, new: dict[str, Tensor]) -> None:
        """Append rows; their Adam moments are zero. On failure the model is as before (the
        tensors grown already are cut back to views of their old rows)."""
        count, before = new["xyz"].shape[0], len(self)

        def grown(name: str, key: str, tensor: Tensor) -> Tensor:
            extra = new[name] if key == "param" else tensor.new_zeros((count,) + tensor.shape[1:])
            return torch.cat([tensor, extra])

        self._rebuild(grown, lambda name, key, tensor, rebuilt: tensor[:before] if rebuilt else tensor)

    def _keep(self, mask: Tensor) -> None:
        """Keep only the rows where ``mask`` is True (parameters, moments and statistics). On
        failure the model is as after (the tensors not yet rebuilt are compacted in place, see
        :func:`compact_rows_in_place`)."""
        kept = torch.nonzero(mask).squeeze(1)  # one wait for the count, not one per tensor
        if len(kept) == len(self):
            return
        self.grad_accum, self.denom, self.max_radii = self.grad_accum[kept], self.denom[kept], self.max_radii[kept]
        self._rebuild(lambda name, key, tensor: tensor[kept],
                      lambda name, key, tensor, rebuilt: tensor if rebuilt else compact_rows_in_place(tensor, kept))

    def _replace(self, name: str, tensor: Tensor) -> None:
        """Replace one parameter; its Adam moments become zero (in place: nothing to allocate,
        so nothing can fail half way)."""
        group = next(group for group in self.optimizer.param_groups if group["name"] == name)
        self._put(group, "param", tensor)
        state = self._state_of(group)
        for key in ADAM_MOMENTS:
            if key in state:
                state[key].zero_()

    def _zero_stats(self) -> None:
        n = len(self)
        self.grad_accum = torch.zeros(n, device=self.device)
        self.denom = torch.zeros(n, device=self.device)
        self.max_radii = torch.zeros(n, device=self.device)

    # ----- densification ------------------------------------------------------------------------
    @torch.no_grad()
    def densify_and_prune(self, grad_threshold: float, min_opacity: float, extent: float,
                          size_threshold: float | None, max_gaussians: int | None = None,
                          fix_quirks: bool = False) -> DensifyReport:
        """Clone, split, then prune, exactly as the reference's ``densify_and_prune``.

        Args:
            grad_threshold: mean NDC gradient norm at or above which a Gaussian densifies.
            min_opacity: Gaussians with ``sigmoid(opacity) <`` this are pruned.
            extent: scene extent (radius); the clone/split boundary is ``percent_dense*extent``.
            size_threshold: ``None`` before the first opacity reset; otherwise also prune
                ``max_radii > size_threshold`` (dead in the reference, see the module docstring)
                and ``max(scale) > 0.1*extent``.
            max_gaussians: cap on the count after densification; when exceeded, only the
                candidates with the largest gradients densify.
            fix_quirks: make the screen-size prune use the radii gathered before densification.
        """
        report = DensifyReport(before=len(self))
        grads = self.grad_accum / self.denom
        grads[grads.isnan()] = 0.0
        radii_before = self.max_radii.clone() if fix_quirks else None
        big = self.scales.max(dim=1).values > self.percent_dense * extent
        candidates = grads >= grad_threshold
        clone_mask, split_mask = candidates & ~big, candidates & big
        if max_gaussians is not None:
            clone_mask, split_mask, report.capped = self._cap(grads, clone_mask, split_mask, max_gaussians)
        report.cloned = int(clone_mask.sum())
        report.split = int(split_mask.sum())
        self.densify_and_clone(clone_mask)
        self.densify_and_split(split_mask)

        prune = self.opacities < min_opacity
        if size_threshold:
            # Quirk kept: max_radii was zeroed by the clone and split above, so this test never
            # fires in the reference. With fix_quirks the radii gathered before densification
            # are used instead (see _carry_radii for the new rows).
            radii = self.max_radii
            if radii_before is not None:
                radii = _carry_radii(radii_before, clone_mask, split_mask, len(self))
            prune |= radii > size_threshold
            prune |= self.scales.max(dim=1).values > WORLD_SIZE_PRUNE * extent
        report.pruned = int(prune.sum())
        self._keep(~prune)
        report.after = len(self)
        return report

    @torch.no_grad()
    def densify_and_clone(self, mask: Tensor) -> None:
        """Append an exact copy of every selected Gaussian (same position; quirk kept: the paper
        moves it along the gradient), then zero the statistics as the reference does."""
        self._append({k: self.params[k].detach()[mask] for k in PARAM_NAMES})
        self._zero_stats()

    @torch.no_grad()
    def densify_and_split(self, mask: Tensor) -> None:
        """Replace every selected Gaussian by SPLIT_CHILDREN children sampled inside it.

        ``mask`` covers the Gaussians present before any clone; clones appended since then are
        never split (the reference pads the gradients of new rows with zeros). Child offsets are
        ``R(q) @ s`` with ``s ~ N(0, diag(scale^2))`` drawn from torch's global generator in the
        reference's order (children of copy 1 of every parent, then copy 2); child scales are
        ``scale / 1.6``; rotation, SH and opacity are copied raw. Statistics are zeroed.
        """
        n = len(self)
        selected = torch.zeros(n, dtype=torch.bool, device=self.device)
        selected[: mask.shape[0]] = mask
        self._append(self._split_children(selected))
        self._zero_stats()
        self._keep(torch.cat([~selected, torch.ones(SPLIT_CHILDREN * int(selected.sum()), dtype=torch.bool,
                                                    device=self.device)]))

    def _cap(self, grads: Tensor, clone_mask: Tensor, split_mask: Tensor,
             max_gaussians: int) -> tuple[Tensor, Tensor, bool]:
        """The densification candidates kept under ``max_gaussians`` (a partitioned model
        decides over all its parts)."""
        return _cap_candidates(grads, clone_mask, split_mask, max_gaussians - len(self))

    def _split_children(self, selected: Tensor) -> dict[str, Tensor]:
        """The children of the ``selected`` rows (see :func:`split_children`); a partitioned
        model computes them for the whole model, so that each part gets its rows."""
        parents = {name: self.params[name].detach()[selected] for name in PARAM_NAMES}
        return split_children(parents, self.scales[selected])

    @torch.no_grad()
    def prune(self, mask: Tensor) -> None:
        """Remove the Gaussians where ``mask`` is True."""
        self._keep(~mask)

    @torch.no_grad()
    def reset_opacity(self) -> None:
        """``opacity = logit(min(sigmoid(opacity), 0.01))``; its Adam moments become zero."""
        capped = torch.clamp_max(self.opacities, RESET_OPACITY)
        self._replace("opacity", inverse_sigmoid(capped))

    # ----- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training bit for bit (tensors are not copied)."""
        return {
            "max_sh_degree": self.max_sh_degree,
            "active_sh_degree": self.active_sh_degree,
            "spatial_lr_scale": self.spatial_lr_scale,
            "optimizer_type": self.optimizer_type,
            "batch_size": self.batch_size,
            "params": {k: self.params[k].detach() for k in PARAM_NAMES},
            "grad_accum": self.grad_accum,
            "denom": self.denom,
            "max_radii": self.max_radii,
            "optimizer": self.optimizer.state_dict(),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], opt: OptimizationParams,
                        device: torch.device | str = "cpu", batch_size: int = 1) -> "GaussianModel":
        """Rebuild a model saved by :meth:`state_dict` (or converted by
        :func:`convert_reference_capture`) and re-create its optimiser with ``opt``'s rates; the
        saved rates and betas, set for the batch size it was trained with, follow ``batch_size``."""
        params = {k: state["params"][k].to(device=device, dtype=torch.float32) for k in PARAM_NAMES}
        model = cls(params, state["max_sh_degree"], state["active_sh_degree"])
        saved_batch = int(state.get("batch_size", 1))
        model.training_setup(opt, state["spatial_lr_scale"], saved_batch)
        model.optimizer.load_state_dict(state["optimizer"])
        for group in model.optimizer.param_groups:
            group["foreach"] = False  # whatever the saving side used
        model.rescale_for_batch(batch_size)
        for key in ("grad_accum", "denom", "max_radii"):
            setattr(model, key, state[key].to(device=device, dtype=torch.float32).reshape(len(model)))
        return model


def _make_optimizer(groups: list[dict], optimizer_type: str, device: torch.device) -> torch.optim.Adam:
    """The reference's Adam (eps 1e-15) over ``groups``. On CUDA, one launch per parameter
    (``trainer.cuda.CudaAdam``; the step is launch-bound otherwise), or torch's fused Adam where
    the trainer's kernels are unavailable. Elsewhere foreach=False: one kernel per tensor,
    identical after a resume."""
    if optimizer_type == "sparse_adam":
        return SparseGaussianAdam(groups, lr=0.0, eps=ADAM_EPS, foreach=False)
    if device.type == "cuda":
        from . import cuda as kernels  # noqa: PLC0415 - optional (cuda-bindings)

        if kernels.is_available():
            return kernels.CudaAdam(groups, lr=0.0, eps=ADAM_EPS)
        return torch.optim.Adam(groups, lr=0.0, eps=ADAM_EPS, fused=True)
    return torch.optim.Adam(groups, lr=0.0, eps=ADAM_EPS, foreach=False)


def compact_rows_in_place(tensor: Tensor, kept: Tensor, chunk: int = 1 << 16) -> Tensor:
    """``tensor[kept]`` written over the first rows of ``tensor`` itself and returned as a view
    of them: the memory it needs is one ``chunk`` of rows, not a copy. ``kept`` must be
    increasing row indices, so that ``kept[i] >= i``: a chunk only reads rows at or after the
    ones it writes, which no earlier chunk has written."""
    for start in range(0, len(kept), chunk):
        rows = kept[start:start + chunk]
        tensor[start:start + len(rows)] = tensor[rows]
    return tensor[:len(kept)]


def split_children(parents: dict[str, Tensor], scales: Tensor) -> dict[str, Tensor]:
    """The reference's split: SPLIT_CHILDREN children of each parent (raw parameters
    ``parents``, activated ``scales`` [P, 3]), rows ordered child copy first (all parents' first
    children, then their second). Positions are the parent's plus ``R(q) @ s`` with
    ``s ~ N(0, diag(scale^2))`` from torch's global generator, scales are the parent's / 1.6,
    everything else is copied."""
    count = SPLIT_CHILDREN
    stds = scales.repeat(count, 1)
    samples = torch.normal(mean=torch.zeros_like(stds), std=stds)
    rotations = quaternion_to_matrix(torch.nn.functional.normalize(parents["rotation"], dim=-1)).repeat(count, 1, 1)
    children = {
        "xyz": torch.bmm(rotations, samples.unsqueeze(-1)).squeeze(-1) + parents["xyz"].repeat(count, 1),
        "scaling": torch.log(stds / SPLIT_SCALE_DIVISOR),
    }
    for name in ("f_dc", "f_rest", "opacity", "rotation"):
        value = parents[name]
        children[name] = value.repeat(count, *([1] * (value.dim() - 1)))
    return children


def _cap_candidates(grads: Tensor, clone_mask: Tensor, split_mask: Tensor,
                    room: int) -> tuple[Tensor, Tensor, bool]:
    """Keep at most ``room`` densification candidates (each clone or split adds one Gaussian),
    those with the largest gradients."""
    candidates = clone_mask | split_mask
    total = int(candidates.sum())
    if total <= max(room, 0):
        return clone_mask, split_mask, False
    keep = torch.zeros_like(candidates)
    if room > 0:
        scores = torch.where(candidates, grads, torch.full_like(grads, -1.0))
        keep[torch.topk(scores, room).indices] = True
    return clone_mask & keep, split_mask & keep, True


def _carry_radii(radii_before: Tensor, clone_mask: Tensor, split_mask: Tensor, total: int) -> Tensor:
    """Screen radii of the rows after clone and split, from those gathered before: survivors
    keep theirs, a clone inherits its parent's (same position and size), split children get 0
    (they are smaller and have no history yet)."""
    extended = torch.cat([radii_before, radii_before[clone_mask]])
    keep = torch.cat([~split_mask, split_mask.new_ones(int(clone_mask.sum()))])
    kept = extended[keep]
    return torch.cat([kept, kept.new_zeros(total - kept.shape[0])])


def convert_reference_capture(capture: tuple) -> dict[str, Any]:
    """graphdeco's ``GaussianModel.capture()`` tuple -> our :meth:`GaussianModel.state_dict`.

    Tuple: ``(active_sh_degree, xyz, f_dc, f_rest, scaling, rotation, opacity [N, 1],
    max_radii2D, xyz_gradient_accum [N, 1], denom [N, 1], optimizer.state_dict(),
    spatial_lr_scale)``. Its optimizer state is keyed 0..5 in the group order xyz, f_dc,
    f_rest, opacity, scaling, rotation, which is ours; opacity moments are reshaped to [N].
    """
    if not (isinstance(capture, (tuple, list)) and len(capture) == 12):
        raise ValueError("not a graphdeco GaussianModel.capture() tuple (expected 12 entries)")
    (active, xyz, f_dc, f_rest, scaling, rotation, opacity, max_radii, accum, denom,
     optimizer_state, spatial_lr_scale) = capture
    n = xyz.shape[0]
    optimizer_state = {"state": {k: dict(v) for k, v in optimizer_state["state"].items()},
                       "param_groups": [dict(g) for g in optimizer_state["param_groups"]]}
    names = [g.get("name") for g in optimizer_state["param_groups"]]
    if names and all(names) and list(names) != list(PARAM_NAMES):
        raise ValueError(f"unexpected optimizer groups {names}; expected {list(PARAM_NAMES)}")
    opacity_index = PARAM_NAMES.index("opacity")
    for index, entry in optimizer_state["state"].items():
        if int(index) == opacity_index:
            for key in ("exp_avg", "exp_avg_sq"):
                if key in entry:
                    entry[key] = entry[key].reshape(n)
    for group in optimizer_state["param_groups"]:
        group.pop("foreach", None)
    return {
        "max_sh_degree": sh_degree_from_coefficients(f_rest.shape[1] + 1),
        "active_sh_degree": int(active),
        "spatial_lr_scale": float(spatial_lr_scale),
        "optimizer_type": "default",
        "params": {"xyz": xyz, "f_dc": f_dc, "f_rest": f_rest, "opacity": opacity.reshape(n),
                   "scaling": scaling, "rotation": rotation},
        "grad_accum": accum.reshape(n), "denom": denom.reshape(n), "max_radii": max_radii.reshape(n),
        "optimizer": optimizer_state,
    }
