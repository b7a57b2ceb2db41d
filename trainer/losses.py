"""The training loss, ``(1 - λ) L1 + λ (1 - SSIM)`` of the clamped render against the ground
truth, as graphdeco's ``train.py`` computes it, with one PyTorch and one fused CUDA implementation.

:func:`photometric_loss_torch` is the specification (``trainer.metrics``' L1 and SSIM on
``view_image_float`` of the uint8 image); :func:`photometric_loss` picks the fused kernels of
``trainer.cuda`` when the render is on a CUDA device and they are available. Both return the
loss and per-image statistics ``[B, 4] = (loss, MSE, L1, SSIM)`` that the progress bar reads
later without making the step wait for the GPU.
"""

from __future__ import annotations

import torch

from trainer.metrics import l1_loss, ssim
from trainer.scene.images import view_image_float

__all__ = ["photometric_loss", "photometric_loss_torch", "fused_loss_available", "STAT_LOSS", "STAT_MSE",
           "STAT_L1", "STAT_SSIM"]

# Columns of the per-image statistics; loss and MSE first, so that ``stats[b, :2]`` is the pair
# the progress bar needs.
STAT_LOSS, STAT_MSE, STAT_L1, STAT_SSIM = range(4)


def fused_loss_available() -> bool:
    """True when the fused CUDA loss can run here (a GPU, cuda-bindings and NVRTC)."""
    from trainer.cuda import is_available  # noqa: PLC0415

    return is_available()


def photometric_loss_torch(image: torch.Tensor, gt: torch.Tensor, background: torch.Tensor,
                           lambda_dssim: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference loss in PyTorch; arguments and results as :func:`photometric_loss`."""
    batched = image.dim() == 4
    images = image if batched else image.unsqueeze(0)
    gts = gt if batched else gt.unsqueeze(0)
    total, rows = None, []
    for render, truth in zip(images, gts):
        render = render.clamp(0.0, 1.0)
        target = view_image_float(truth.to(render.device, non_blocking=True), background)
        l1, similarity = l1_loss(render, target), ssim(render, target)
        loss = (1.0 - lambda_dssim) * l1 + lambda_dssim * (1.0 - similarity)
        mse = ((render.detach() - target) ** 2).mean()
        rows.append(torch.stack([loss.detach(), mse, l1.detach(), similarity.detach()]))
        total = loss if total is None else total + loss
    return total, torch.stack(rows)


def photometric_loss(image: torch.Tensor, gt: torch.Tensor, background: torch.Tensor, lambda_dssim: float,
                     fused: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training loss of a render (or a batch of renders, whose losses are summed).

    Args:
        image: float render ``[3, H, W]`` or ``[B, 3, H, W]``, not clamped.
        gt: the cached ground truth, uint8 ``[H, W, C]`` or ``[B, H, W, C]``: C = 3 (RGB) or 4
            (premultiplied RGB + alpha, composited over ``background`` as ``view_image_float``).
        background: [3] RGB in [0, 1].
        lambda_dssim: weight of ``1 - SSIM`` (the reference's ``--lambda_dssim``).
        fused: use the CUDA kernels (``None``: when available for this device and dtype).

    Returns:
        ``(loss, stats)``: the 0-dim loss and ``stats [B, 4]`` (see ``STAT_*``), detached.
    """
    if fused is None:
        fused = image.device.type == "cuda" and image.dtype == torch.float32 and fused_loss_available()
    if fused:
        from trainer.cuda import fused_photometric_loss  # noqa: PLC0415 - needs cuda-bindings

        return fused_photometric_loss(image, gt.to(image.device, non_blocking=True), background, lambda_dssim)
    return photometric_loss_torch(image, gt, background, lambda_dssim)
