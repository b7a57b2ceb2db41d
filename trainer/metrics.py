"""Image-quality metrics: L1, PSNR, SSIM and LPIPS (VGG, v0.1), as graphdeco-inria computes them.

Conventions shared by every function here:

* images are float tensors with values in [0, 1], channels first: one image ``[C, H, W]``
  or a batch ``[B, C, H, W]`` (``img`` and ``gt`` of the same shape);
* a single image gives a 0-dim tensor, a batch gives one value per image (shape ``[B]``);
* ``l1_loss`` and ``ssim`` are differentiable (the training loss uses them), on CPU and CUDA,
  in float32 and float64.

LPIPS needs pretrained weights that splatview never downloads; see :func:`load_lpips` for
where it looks for them.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["l1_loss", "psnr", "ssim", "VGG16", "LPIPS", "LPIPS_DIR_ENV", "VGG_WEIGHTS_FILE",
           "LPIPS_WEIGHTS_FILE", "lpips_weight_candidates", "load_lpips"]


# ----- L1 / PSNR / SSIM -----------------------------------------------------------
def l1_loss(img: Tensor, gt: Tensor) -> Tensor:
    """Mean absolute difference over every element (all images, channels, pixels); 0-dim."""
    return torch.abs(img - gt).mean()


def _per_image(img: Tensor) -> tuple[Tensor, bool]:
    """``img`` as a batch ``[B, C, H, W]`` and whether it was one already."""
    if img.dim() == 4:
        return img, True
    if img.dim() == 3:
        return img.unsqueeze(0), False
    raise ValueError(f"expected an image [C,H,W] or a batch [B,C,H,W], got shape {tuple(img.shape)}")


def psnr(img: Tensor, gt: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB for a peak of 1: ``20·log10(1/sqrt(mse))``.

    The MSE runs over all pixels and channels of each image (the reference's
    ``utils/image_utils.psnr`` on a ``[1, 3, H, W]`` tensor, as ``metrics.py`` calls it).
    Identical images give ``+inf``.
    """
    img, batched = _per_image(img)
    mse = ((img - gt.reshape(img.shape)) ** 2).reshape(img.shape[0], -1).mean(1)
    value = 20 * torch.log10(1.0 / torch.sqrt(mse))
    return value if batched else value[0]


@functools.lru_cache(maxsize=None)
def _ssim_window(channels: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The reference's window: 11 taps, σ = 1.5, normalised in float32, outer product, per channel."""
    size = 11
    gauss = torch.tensor([math.exp(-(x - size // 2) ** 2 / float(2 * 1.5 ** 2)) for x in range(size)],
                         dtype=torch.float32)
    gauss = (gauss / gauss.sum()).unsqueeze(1)
    window = (gauss @ gauss.t()).expand(channels, 1, size, size).contiguous()
    return window.to(dtype=dtype, device=device)


def ssim(img: Tensor, gt: Tensor) -> Tensor:
    """Structural similarity, exactly the reference's ``utils/loss_utils.ssim``.

    11×11 Gaussian window (σ = 1.5), each channel filtered on its own with zero padding 5
    (so the output map has the input's size), C1 = 0.01², C2 = 0.03² (data range 1), and
    the mean of the SSIM map over channels and pixels. 1 for identical images.
    """
    img, batched = _per_image(img)
    gt = gt.reshape(img.shape)
    channels = img.shape[1]
    window = _ssim_window(channels, img.dtype, img.device)

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(x, window, padding=5, groups=channels)

    mu1, mu2 = blur(img), blur(gt)
    mu1_sq, mu2_sq, mu1_mu2 = mu1.pow(2), mu2.pow(2), mu1 * mu2
    sigma1_sq = blur(img * img) - mu1_sq
    sigma2_sq = blur(gt * gt) - mu2_sq
    sigma12 = blur(img * gt) - mu1_mu2
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    value = ssim_map.mean(dim=(1, 2, 3))
    return value if batched else value[0]


# ----- LPIPS (VGG, v0.1) ----------------------------------------------------------
# torchvision's vgg16 "D" configuration: channel counts, "M" = 2×2 max pool.
_VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
_VGG16_TAPS = (3, 8, 15, 22, 29)  # indices in `features` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_LPIPS_CHANNELS = (64, 128, 256, 512, 512)


class VGG16(nn.Module):
    """torchvision's ``vgg16().features`` in plain torch; state-dict keys ``features.<i>.weight|bias``
    match torchvision's, so ``vgg16-397923af.pth`` loads (its ``classifier.*`` keys are ignored)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in _VGG16_CFG:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = int(item)
        self.features = nn.Sequential(*layers)

    def load_torchvision_state_dict(self, state: dict[str, Tensor]) -> None:
        """Load a torchvision ``vgg16`` state dict (full model or ``features`` only)."""
        self.load_state_dict({k: v for k, v in state.items() if k.startswith("features.")})

    def forward(self, x: Tensor) -> list[Tensor]:
        """The five LPIPS feature maps: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""
        taps = []
        for index, layer in enumerate(self.features[: _VGG16_TAPS[-1] + 1]):
            x = layer(x)
            if index in _VGG16_TAPS:
                taps.append(x)
        return taps


class _LinearHead(nn.Module):
    """lpips' ``NetLinLayer``: dropout (inert in eval) then a 1×1 conv to one channel, no bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))


class LPIPS(nn.Module):
    """LPIPS with the VGG16 backbone and v0.1 linear heads, computed as the reference's
    ``lpipsPyTorch`` does (``metrics.py``).

    Inputs are fed as given, in [0, 1], although the scaling layer's constants were made for
    [-1, 1] inputs: that is what graphdeco-inria's ``metrics.py`` does (issue #1239), and the
    published 3DGS LPIPS numbers depend on it. Steps: ``(x - shift) / scale``; VGG16 features
    at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3; each map divided by its L2 norm over
    channels (+1e-10); squared difference; 1×1 linear head; spatial mean; sum of the 5 layers.
    Lower is more similar; 0 for identical images.

    ``self.vgg`` loads torchvision's state dict (:meth:`VGG16.load_torchvision_state_dict`);
    the heads ``lin0``..``lin4`` load lpips' ``weights/v0.1/vgg.pth`` directly
    (:meth:`load_lpips_state_dict`, keys ``lin<k>.model.1.weight``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.vgg = VGG16()
        self.lin0, self.lin1, self.lin2, self.lin3, self.lin4 = (_LinearHead(c) for c in _LPIPS_CHANNELS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def load_lpips_state_dict(self, state: dict[str, Tensor]) -> None:
        """Load lpips' v0.1 ``vgg.pth`` (keys ``lin0.model.1.weight`` .. ``lin4.model.1.weight``)."""
        heads = nn.ModuleDict({f"lin{k}": getattr(self, f"lin{k}") for k in range(5)})
        heads.load_state_dict(state)

    def forward(self, img: Tensor, gt: Tensor) -> Tensor:
        """LPIPS distance of ``img`` to ``gt`` ([0, 1] images): 0-dim for one image, ``[B]`` for a batch."""
        img, batched = _per_image(img)
        dtype = self.shift.dtype
        img, gt = img.to(dtype), gt.reshape(img.shape).to(dtype)
        feats_x = self.vgg((img - self.shift) / self.scale)
        feats_y = self.vgg((gt - self.shift) / self.scale)
        total = img.new_zeros(img.shape[0])
        for k, (fx, fy) in enumerate(zip(feats_x, feats_y)):
            fx = fx / (torch.sqrt(torch.sum(fx ** 2, dim=1, keepdim=True)) + 1e-10)
            fy = fy / (torch.sqrt(torch.sum(fy ** 2, dim=1, keepdim=True)) + 1e-10)
            total = total + getattr(self, f"lin{k}").model((fx - fy) ** 2).mean(dim=(1, 2, 3))
        return total if batched else total[0]


LPIPS_DIR_ENV = "SPLATVIEW_LPIPS_DIR"
VGG_WEIGHTS_FILE = "vgg16-397923af.pth"  # torchvision's ImageNet VGG16 (IMAGENET1K_V1)
LPIPS_WEIGHTS_FILE = "vgg.pth"  # lpips' weights/v0.1/vgg.pth (the linear heads)


def lpips_weight_candidates() -> tuple[list[Path], list[Path]]:
    """Where :func:`load_lpips` looks, in order: (VGG16 files, LPIPS-head files).

    If ``$SPLATVIEW_LPIPS_DIR`` is set, only ``$SPLATVIEW_LPIPS_DIR/vgg16-397923af.pth`` and
    ``$SPLATVIEW_LPIPS_DIR/vgg.pth``. Otherwise torch hub's cache
    (``torch.hub.get_dir()/checkpoints/``, where torchvision and the reference's
    ``lpipsPyTorch`` save these two files) and, for the heads, an installed ``lpips``
    package's ``weights/v0.1/vgg.pth`` (found without importing it).
    """
    folder = os.environ.get(LPIPS_DIR_ENV)
    if folder:
        return [Path(folder) / VGG_WEIGHTS_FILE], [Path(folder) / LPIPS_WEIGHTS_FILE]
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    heads = [checkpoints / LPIPS_WEIGHTS_FILE]
    try:
        spec = importlib.util.find_spec("lpips")
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        heads.append(Path(location) / "weights" / "v0.1" / LPIPS_WEIGHTS_FILE)
    return [checkpoints / VGG_WEIGHTS_FILE], heads


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__


def load_lpips(device: str | torch.device = "cpu") -> tuple[LPIPS | None, str]:
    """Build :class:`LPIPS` from weights found locally (never downloads).

    Returns ``(model, description of the files used)``, or ``(None, reason)`` when a weight
    file is missing or unreadable. See :func:`lpips_weight_candidates` for the search order.
    """
    vgg_candidates, head_candidates = lpips_weight_candidates()
    found = []
    for name, candidates in (("VGG16 weights", vgg_candidates), ("LPIPS v0.1 VGG heads", head_candidates)):
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            looked = ", ".join(str(p) for p in candidates)
            return None, (f"{name} not found (looked for {looked}); put {VGG_WEIGHTS_FILE} and "
                          f"{LPIPS_WEIGHTS_FILE} in a folder and set ${LPIPS_DIR_ENV} to it")
        found.append(path)
    model = LPIPS()
    try:
        model.vgg.load_torchvision_state_dict(torch.load(found[0], map_location="cpu", weights_only=True))
    except Exception as error:  # unreadable file or wrong keys/shapes
        return None, f"{found[0]}: not torchvision's vgg16 state dict ({_one_line(error)})"
    try:
        model.load_lpips_state_dict(torch.load(found[1], map_location="cpu", weights_only=True))
    except Exception as error:
        return None, f"{found[1]}: not lpips' v0.1 vgg.pth ({_one_line(error)})"
    return model.to(device), f"VGG16 from {found[0]}, LPIPS heads from {found[1]}"
