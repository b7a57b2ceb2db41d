"""Writing images: float tensors to 8-bit PNG files, as the reference's ``save_image`` does."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from rasterizer.files import atomic_write

__all__ = ["to_uint8", "save_png"]


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[3, H, W] float in [0, 1] -> [H, W, 3] uint8, rounding as torchvision's ``save_image``
    (clamp(x * 255 + 0.5, 0, 255) then truncation)."""
    array = (image.detach().float() * 255.0 + 0.5).clamp(0, 255).to(torch.uint8)
    return np.ascontiguousarray(array.permute(1, 2, 0).cpu().numpy())


def save_png(path: str | os.PathLike, image: torch.Tensor | np.ndarray) -> None:
    """Save an image as PNG, atomically.

    ``image`` is either a float [3, H, W] tensor in [0, 1] (a render) or a uint8 [H, W, 3]
    tensor/array (as the image cache holds photos).
    """
    if isinstance(image, torch.Tensor):
        array = image.cpu().numpy() if image.dtype == torch.uint8 else to_uint8(image)
    else:
        array = np.asarray(image, dtype=np.uint8)
    with atomic_write(path) as stream:
        Image.fromarray(array).save(stream, format="PNG")
