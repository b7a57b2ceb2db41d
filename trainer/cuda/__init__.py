"""The trainer's own CUDA kernels (NVRTC, like the rasterizer's): the fused training loss, the
densification statistics and Adam. Each is the same mathematics as its PyTorch version, which
is the specification and is what the tests compare against:

* :func:`fused_photometric_loss` = ``trainer.losses.photometric_loss_torch`` (L1 + SSIM on the
  clamped render against the uint8 ground truth), forward and backward in three launches
  instead of ~60 small kernels; :func:`fused_photometric_loss_on_canvas` is the same for a
  batch of images of different sizes drawn on one canvas (each image's loss its own);
* :func:`accumulate_densification_stats` = ``GaussianModel.add_densification_stats`` in one
  launch;
* :class:`CudaAdam` = ``torch.optim.Adam`` with one launch per parameter and almost no Python
  (torch's own fused Adam spends ~0.5 ms of host time per step on six parameter groups).

All run on PyTorch's current stream and never wait for the GPU.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch

from rasterizer.cuda import FusedAdamStep, is_available
from rasterizer.cuda.compiler import FLOAT, INT, LONGLONG, POINTER, CudaModule, load_module
from trainer.batching import ints_on

__all__ = ["is_available", "fused_photometric_loss", "fused_photometric_loss_and_gradient",
           "fused_photometric_loss_on_canvas", "canvas_views",
           "accumulate_densification_stats", "CudaAdam",
           "LOSS_SOURCE", "DENSIFY_SOURCE", "ADAM_SOURCE"]

LOSS_SOURCE = Path(__file__).with_name("loss.cu")
DENSIFY_SOURCE = Path(__file__).with_name("densify.cu")
ADAM_SOURCE = Path(__file__).with_name("adam.cu")
_TILE = 16          # loss.cu's TILE_X / TILE_Y
_THREADS = 256


def _module(source: Path, device: torch.device) -> CudaModule:
    return load_module(source, device.index if device.index is not None else torch.cuda.current_device())


def _ptr(tensor: torch.Tensor) -> tuple:
    # a CPU tensor's address would be an illegal access in the kernel, which poisons the CUDA
    # context for the rest of the process: refuse it here, where the error names the cause
    if not tensor.is_cuda:
        raise ValueError(f"a CUDA kernel was given a tensor on {tensor.device} ({tuple(tensor.shape)})")
    return (tensor.data_ptr(), POINTER)


@functools.lru_cache(maxsize=8)
def _ssim_taps(device: torch.device) -> torch.Tensor:
    """The reference SSIM window's 1-D taps (11, sigma 1.5, normalised in float32), on ``device``."""
    gauss = torch.tensor([math.exp(-(x - 5) ** 2 / float(2 * 1.5 ** 2)) for x in range(11)], dtype=torch.float32)
    return (gauss / gauss.sum()).to(device)


@functools.lru_cache(maxsize=8)
def _one(device: torch.device) -> torch.Tensor:
    return torch.ones((), device=device)


def _null_or(tensor: torch.Tensor | None) -> tuple:
    return _ptr(tensor) if tensor is not None else (0, POINTER)


def _loss_forward(image: torch.Tensor, gt: torch.Tensor, background: torch.Tensor, lambda_dssim: float,
                  views: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """loss.cu's forward and finalize: (loss, stats [B, 4], SSIM partials for the backward).
    ``views``: None, or loss.cu's table of images on a canvas (see :func:`canvas_views`)."""
    images, _, height, width = image.shape
    device = image.device
    blocks_x, blocks_y = (width + _TILE - 1) // _TILE, (height + _TILE - 1) // _TILE
    planes = 3 * images
    ssim_partials = torch.empty(planes, 3, height, width, device=device)
    partials = torch.empty(planes * blocks_x * blocks_y, 3, device=device)
    stats = torch.empty(images, 4, device=device)
    loss = torch.empty((), device=device)
    module = _module(LOSS_SOURCE, device)
    module.launch("loss_forward", (blocks_x, blocks_y, planes), (_TILE, _TILE), [
        (width, INT), (height, INT), (gt.shape[-1], INT), _ptr(image), _ptr(gt), _null_or(views), _ptr(background),
        _ptr(_ssim_taps(device)), _ptr(ssim_partials), _ptr(partials)])
    module.launch("loss_finalize", (1,), (_THREADS,), [
        (images, INT), (blocks_x * blocks_y, INT), (width, INT), (height, INT), _null_or(views),
        (lambda_dssim, FLOAT), _ptr(partials), _ptr(stats), _ptr(loss)])
    return loss, stats, ssim_partials


def _loss_backward(image: torch.Tensor, gt: torch.Tensor, background: torch.Tensor, lambda_dssim: float,
                   ssim_partials: torch.Tensor, grad_loss: torch.Tensor,
                   views: torch.Tensor | None = None) -> torch.Tensor:
    """loss.cu's backward: d(outer)/d image, with ``grad_loss`` = d(outer)/d loss on the device."""
    images, _, height, width = image.shape
    device = image.device
    grad_image = torch.empty_like(image)
    _module(LOSS_SOURCE, device).launch(
        "loss_backward", ((width + _TILE - 1) // _TILE, (height + _TILE - 1) // _TILE, 3 * images), (_TILE, _TILE), [
            (width, INT), (height, INT), (gt.shape[-1], INT), (lambda_dssim, FLOAT), _ptr(image), _ptr(gt),
            _null_or(views), _ptr(background), _ptr(_ssim_taps(device)), _ptr(ssim_partials), _ptr(grad_loss),
            _ptr(grad_image)])
    return grad_image


class _FusedLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, image, gt, background, lambda_dssim):
        loss, stats, ssim_partials = _loss_forward(image, gt, background, lambda_dssim)
        ctx.save_for_backward(image, gt, background, ssim_partials)
        ctx.lambda_dssim = lambda_dssim
        ctx.mark_non_differentiable(stats)
        return loss, stats

    @staticmethod
    def backward(ctx, grad_loss, _grad_stats):
        image, gt, background, ssim_partials = ctx.saved_tensors
        grad_image = _loss_backward(image, gt, background, ctx.lambda_dssim, ssim_partials,
                                    grad_loss.to(torch.float32).contiguous())
        return grad_image, None, None, None


def _checked(image: torch.Tensor, gt: torch.Tensor, background: torch.Tensor) -> tuple:
    """Batched, contiguous, validated inputs of the fused loss."""
    image4 = (image if image.dim() == 4 else image.unsqueeze(0)).contiguous()
    gt4 = (gt if gt.dim() == 4 else gt.unsqueeze(0)).contiguous()
    if image4.dtype != torch.float32 or gt4.dtype != torch.uint8 or image4.device.type != "cuda":
        raise ValueError("the fused loss takes a float32 render and a uint8 ground truth on a CUDA device")
    if image4.shape[1] != 3 or gt4.shape[:3] != (image4.shape[0], *image4.shape[2:]) or gt4.shape[3] not in (3, 4):
        raise ValueError(f"render {tuple(image.shape)} and ground truth {tuple(gt.shape)} do not match "
                         "([B,] 3, H, W and [B,] H, W, 3|4)")
    return image4, gt4, background.to(device=image4.device, dtype=torch.float32).contiguous()


def fused_photometric_loss(image: torch.Tensor, gt: torch.Tensor, background: torch.Tensor,
                           lambda_dssim: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1 - λ) L1 + λ (1 - SSIM)`` of the clamped render against the uint8 ground truth.

    Args:
        image: float32 render ``[3, H, W]`` or ``[B, 3, H, W]`` on a CUDA device, *not* clamped
            (the clamp to [0, 1] and its gradient happen inside).
        gt: uint8 ``[H, W, C]`` or ``[B, H, W, C]`` on the same device; C = 3 (RGB) or 4
            (premultiplied RGB + alpha, composited over ``background``).
        background: float32 [3], RGB in [0, 1].
        lambda_dssim: weight of ``1 - SSIM``.

    Returns:
        ``(loss, stats)``: the 0-dim loss (summed over a batch) with a gradient for ``image``,
        and ``stats [B, 4]`` per image = (loss, MSE, L1, SSIM), no gradient.
    """
    image4, gt4, background = _checked(image, gt, background)
    return _FusedLoss.apply(image4, gt4, background, float(lambda_dssim))


def fused_photometric_loss_and_gradient(image: torch.Tensor, gt: torch.Tensor, background: torch.Tensor,
                                        lambda_dssim: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`fused_photometric_loss` without autograd, for a loss that is not scaled further:
    ``(loss, stats, d loss / d image)`` (the gradient has ``image``'s shape)."""
    image4, gt4, background = _checked(image, gt, background)
    lambda_dssim = float(lambda_dssim)
    loss, stats, ssim_partials = _loss_forward(image4, gt4, background, lambda_dssim)
    grad = _loss_backward(image4, gt4, background, lambda_dssim, ssim_partials, _one(image4.device))
    return loss, stats, grad.view(image.shape)


def canvas_views(canvas: torch.Tensor, gts: list[torch.Tensor]) -> torch.Tensor:
    """loss.cu's table of images drawn on one canvas: int64 [B, 3] = (address of ``gts[b]``, its
    width, its height), on the canvas's device (copied without waiting for the GPU). The ground
    truths must stay alive until the loss's kernels have run (the caller holds them)."""
    return ints_on([[gt.data_ptr(), gt.shape[1], gt.shape[0]] for gt in gts], canvas.device)


def fused_photometric_loss_on_canvas(canvas: torch.Tensor, gts: list[torch.Tensor], background: torch.Tensor,
                                     lambda_dssim: float, views: torch.Tensor | None = None
                                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`fused_photometric_loss_and_gradient` of a batch of images of different sizes drawn
    on one canvas (one set of launches for all of them).

    Args:
        canvas: float32 ``[B, 3, H, W]`` on a CUDA device; image b is the top-left ``w_b x h_b``
            corner of ``canvas[b]`` (the rest is ignored).
        gts: B uint8 ground truths ``[h_b, w_b, C]`` on the same device, one C for all (3, or 4
            composited over ``background``), each no larger than the canvas.
        background, lambda_dssim: as :func:`fused_photometric_loss`.
        views: the images' table (:func:`canvas_views` of ``gts``) when the caller has it on the
            device already: a CUDA graph's capture may not upload one, and its replays read
            another photo from the same buffer.

    Returns:
        ``(loss, stats [B, 4], d loss / d canvas)``: each image's loss and statistics over its
        own ``3 w_b h_b`` values (as the loss of that image alone), summed into ``loss``; the
        gradient is zero outside the images.
    """
    if canvas.dim() != 4 or canvas.shape[1] != 3 or canvas.dtype != torch.float32 or canvas.device.type != "cuda":
        raise ValueError(f"the canvas must be float32 [B, 3, H, W] on a CUDA device, not {tuple(canvas.shape)} "
                         f"{canvas.dtype} on {canvas.device}")
    if not gts or len(gts) != canvas.shape[0]:
        raise ValueError(f"{len(gts)} ground truths for a canvas of {canvas.shape[0]} images")
    height, width = canvas.shape[2:]
    channels = gts[0].shape[-1]
    for gt in gts:
        if (gt.dtype != torch.uint8 or gt.dim() != 3 or gt.shape[2] != channels or channels not in (3, 4)
                or gt.shape[0] > height or gt.shape[1] > width or gt.device != canvas.device):
            raise ValueError(f"ground truth {tuple(gt.shape)} {gt.dtype} on {gt.device} does not fit a canvas "
                             f"{tuple(canvas.shape)} (uint8 [h, w, 3|4], one channel count for all)")
    # The kernels read each ground truth at its address: these references keep the (contiguous)
    # tensors alive until the launches below are queued; later reuse of their memory is ordered
    # after the kernels on this stream.
    gts = [gt.contiguous() for gt in gts]
    canvas = canvas.contiguous()
    background = background.to(device=canvas.device, dtype=torch.float32).contiguous()
    if views is None:
        views = canvas_views(canvas, gts)
    elif views.shape != (len(gts), 3) or views.dtype != torch.int64 or views.device != canvas.device:
        raise ValueError(f"the images' table must be int64 [{len(gts)}, 3] on {canvas.device}")
    lambda_dssim = float(lambda_dssim)
    loss, stats, ssim_partials = _loss_forward(canvas, gts[0], background, lambda_dssim, views)
    grad = _loss_backward(canvas, gts[0], background, lambda_dssim, ssim_partials, _one(canvas.device), views)
    return loss, stats, grad


def accumulate_densification_stats(grad_means2d: torch.Tensor, radii: torch.Tensor, width: int, height: int,
                                   grad_accum: torch.Tensor, denom: torch.Tensor, max_radii: torch.Tensor) -> None:
    """One step's statistics, in place (see ``densify.cu``): ``grad_means2d`` [N, 2] or
    [V, N, 2] float32 pixel gradients, ``radii`` [N] or [V, N] int32; the three accumulators are
    float32 [N] on the same CUDA device."""
    n = grad_accum.shape[0]
    views = radii.numel() // max(n, 1)
    if grad_means2d.numel() != 2 * views * n or grad_means2d.dtype != torch.float32 or radii.dtype != torch.int32:
        raise ValueError(f"densification statistics: means2d gradient {tuple(grad_means2d.shape)} and radii "
                         f"{tuple(radii.shape)} do not fit {n} Gaussians")
    grad_means2d, radii = grad_means2d.contiguous(), radii.contiguous()
    _module(DENSIFY_SOURCE, grad_accum.device).launch(
        "densify_stats", ((n + _THREADS - 1) // _THREADS,), (_THREADS,), [
            (views, INT), (n, INT), (width / 2.0, FLOAT), (height / 2.0, FLOAT), _ptr(grad_means2d), _ptr(radii),
            _ptr(grad_accum), _ptr(denom), _ptr(max_radii)])


class CudaAdam(torch.optim.Adam):
    """``torch.optim.Adam`` whose ``step`` runs ``adam.cu``: one launch per parameter.

    Same hyper-parameters, same state (``step``, ``exp_avg``, ``exp_avg_sq`` per parameter, so
    checkpoints and the densification surgery see a plain Adam), same update up to float
    rounding. ``step`` counters stay on the CPU (as torch's non-fused Adam keeps them), so the
    bias corrections need no GPU read. Float32 CUDA parameters only; groups with weight decay,
    amsgrad or maximize fall back to torch's own step.

    :meth:`fused_step` hands one parameter's step to the rasterizer's backward instead (the
    same update, ``adam.cuh``, taken where the gradient is computed); that parameter then has no
    ``.grad`` and :meth:`step` passes over it.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, lr=lr, betas=betas, eps=eps, foreach=False)

    def _plain(self) -> bool:
        """Whether every group is plain Adam (what adam.cu implements)."""
        return not any(group["weight_decay"] or group["amsgrad"] or group["maximize"] for group in self.param_groups)

    def _group_of(self, param: torch.Tensor) -> dict:
        for group in self.param_groups:
            if any(p is param for p in group["params"]):
                return group
        raise ValueError("the parameter is not one of this optimiser's")

    def _advance(self, param: torch.Tensor, group: dict) -> tuple[dict, float, float]:
        """Count one more step of ``param`` (creating its state at the first); returns the state
        and torch's (step_size, bias_correction2_sqrt) for it."""
        state = self.state[param]
        if len(state) == 0:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        elif state["step"].device.type != "cpu":  # e.g. restored from a fused Adam's state
            state["step"] = state["step"].cpu()
        state["step"] += 1
        beta1, beta2 = group["betas"]
        step = float(state["step"])
        return state, group["lr"] / (1.0 - beta1 ** step), (1.0 - beta2 ** step) ** 0.5

    def can_fuse(self, param: torch.Tensor) -> bool:
        """Whether :meth:`fused_step` may take ``param``'s step (plain Adam, a contiguous float32
        CUDA tensor whose moments, if any, are contiguous too)."""
        state = self.state.get(param, {})
        tensors = [param] + [state[key] for key in ("exp_avg", "exp_avg_sq") if key in state]
        return (self._plain() and param.is_cuda and param.dtype == torch.float32
                and all(t.is_contiguous() for t in tensors))

    @torch.no_grad()
    def fused_step(self, param: torch.Tensor) -> FusedAdamStep | None:
        """This step of ``param`` for ``rasterizer.cuda.TrainingRender.backward`` to take: counts
        the step and returns its moments and scalars; None (nothing counted: :meth:`step` takes
        it) where it cannot be fused (:meth:`can_fuse`). Call :meth:`undo_fused_step` if the
        backward did not take it (a render that outgrew its pair budget)."""
        if not self.can_fuse(param):
            return None
        group = self._group_of(param)
        state, step_size, bias_correction2_sqrt = self._advance(param, group)
        beta1, beta2 = group["betas"]
        return FusedAdamStep(param, state["exp_avg"], state["exp_avg_sq"], beta1, beta2, group["eps"], step_size,
                             bias_correction2_sqrt)

    def undo_fused_step(self, param: torch.Tensor) -> None:
        """Take back the count of a :meth:`fused_step` that was not applied."""
        self.state[param]["step"] -= 1

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        if closure is not None:
            raise ValueError("CudaAdam does not take a closure")
        if not self._plain():
            super().step()
            return None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state, step_size, bias_correction2_sqrt = self._advance(param, group)
                grad = param.grad if param.grad.is_contiguous() else param.grad.contiguous()
                n = param.numel()
                _module(ADAM_SOURCE, param.device).launch(
                    "adam_step", (min((n + _THREADS - 1) // _THREADS, 65535),), (_THREADS,), [
                        (n, LONGLONG), (beta1, FLOAT), (beta2, FLOAT), (group["eps"], FLOAT), (step_size, FLOAT),
                        (bias_correction2_sqrt, FLOAT), _ptr(param), _ptr(grad), _ptr(state["exp_avg"]),
                        _ptr(state["exp_avg_sq"])])
        return None
