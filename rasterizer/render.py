"""``render()``: the one entry point to every rasterizer backend.

Backends:

* ``"reference"``: pure PyTorch (``rasterizer/reference.py``), differentiable through autograd,
  runs on any device. Every fast backend is tested against it.
* ``"cuda"``: NVRTC-compiled CUDA kernels (added with the CUDA backend).
* ``"auto"``: ``"cuda"`` when the Gaussians live on a CUDA device and the backend is available,
  otherwise ``"reference"``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import torch

from .camera import Camera
from .gaussians import Gaussians

__all__ = ["RenderOutput", "render", "available_backends", "resolve_backend"]


@dataclass
class RenderOutput:
    """What a render returns. With a list of B cameras every field gains a leading [B] axis.

    Attributes:
        image:     [3, H, W] float RGB, ``C + T * background`` (not clamped to [0, 1]).
        alpha:     [H, W] accumulated opacity ``1 - T``.
        inv_depth: [H, W] alpha-weighted inverse view depth (1/z), no background term.
        radii:     [N] int32 screen radius in pixels (3 sigma); 0 where the Gaussian was culled.
        means2d:   [N, 2] projected means in pixels (x right, y down, pixel centres at integer
                   coordinates: pixel (i, j) is centred at (i, j)). It takes part in the graph,
                   so after ``backward()`` its ``.grad`` holds dLoss/d(pixel position). The
                   reference's densification statistic is the gradient in NDC units; multiply
                   the x and y components by W/2 and H/2 to get it (``ndc_gradient``).
    """

    image: torch.Tensor
    alpha: torch.Tensor
    inv_depth: torch.Tensor
    radii: torch.Tensor
    means2d: torch.Tensor

    def ndc_gradient(self, width: int, height: int) -> torch.Tensor:
        """``means2d.grad`` converted to the reference's NDC units (pixels * size / 2)."""
        if self.means2d.grad is None:
            raise RuntimeError("means2d has no gradient yet: call backward() first")
        scale = torch.tensor([width / 2.0, height / 2.0], dtype=self.means2d.grad.dtype,
                             device=self.means2d.grad.device)
        return self.means2d.grad * scale


@functools.lru_cache(maxsize=64)
def _constant(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small constant tensor, uploaded once: a fresh host-to-GPU copy per frame would make the
    CPU wait for the GPU to drain, and stall the launches that should run ahead."""
    return torch.tensor(values, dtype=dtype, device=device)


def available_backends() -> list[str]:
    """Names of the backends usable on this machine."""
    names = ["reference"]
    try:
        from .cuda import is_available  # noqa: PLC0415 - optional backend
    except ImportError:
        return names
    if is_available():
        names.append("cuda")
    return names


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend ``render`` will use for Gaussians on ``device``: ``auto`` picks ``cuda`` when it
    is available there, else ``reference``; an unusable explicit choice raises."""
    if backend not in ("auto", "reference", "cuda"):
        raise ValueError(f"unknown backend {backend!r}: use 'reference', 'cuda' or 'auto'")
    if backend == "auto":
        return "cuda" if device.type == "cuda" and "cuda" in available_backends() else "reference"
    if backend == "cuda" and "cuda" not in available_backends():
        raise RuntimeError("the CUDA backend is not available here (no NVIDIA GPU, or "
                           "splatview[cuda] is not installed); use backend='reference'")
    return backend


def render(gaussians: Gaussians, camera: Camera | Sequence[Camera],
           background: Sequence[float] | torch.Tensor = (0.0, 0.0, 0.0),
           sh_degree: int | None = None, scaling_modifier: float = 1.0,
           antialiasing: bool = False, backend: str = "auto", pair_budget=None) -> RenderOutput:
    """Render ``gaussians`` seen by ``camera`` (or a list of cameras, giving a batch).

    Args:
        gaussians: raw parameters (may require grad; gradients flow to all of them).
        camera: a :class:`Camera` (OpenCV axes, COLMAP principal point) or a list of them.
        background: RGB colour added behind the Gaussians (``C + T * background``); a tensor
            that requires grad receives a gradient.
        sh_degree: SH bands to evaluate (0-3); ``None`` uses every band stored.
        scaling_modifier: multiplies every scale (viewer slider; 1.0 for training).
        antialiasing: the Mip-Splatting 2D filter opacity compensation of the reference.
        backend: ``"reference"``, ``"cuda"`` or ``"auto"``.
        pair_budget: CUDA backend only, ignored by the others: a
            :class:`rasterizer.cuda.PairBudget` that sizes the tile sort without waiting for
            the GPU; the caller must then ask ``pair_budget.overflowed()`` before trusting the
            result (see its docstring). ``None``: the count is read on the host, always exact.
    """
    cameras = [camera] if isinstance(camera, Camera) else list(camera)
    if not cameras:
        raise ValueError("render() needs at least one camera")
    degree = gaussians.sh_degree if sh_degree is None else int(sh_degree)
    if not 0 <= degree <= gaussians.sh_degree:
        raise ValueError(f"sh_degree {degree} is outside 0..{gaussians.sh_degree} (the degree stored)")
    if isinstance(background, torch.Tensor):
        background_t = background.to(dtype=gaussians.dtype, device=gaussians.device)
    else:
        background_t = _constant(tuple(float(v) for v in background), gaussians.dtype, gaussians.device)
    if background_t.shape != (3,):
        raise ValueError(f"background must be 3 values (RGB), got shape {tuple(background_t.shape)}")
    chosen = resolve_backend(backend, gaussians.device)
    options = {}
    if chosen == "cuda":
        from .cuda import render_cuda as backend_render  # noqa: PLC0415
        options["pair_budget"] = pair_budget
    else:
        from .reference import render_reference as backend_render  # noqa: PLC0415
    sizes = {(cam.width, cam.height) for cam in cameras}
    if len(sizes) != 1:
        raise ValueError(f"a batch of cameras must share one image size, got {sorted(sizes)}")
    # With batched=False the backend returns unbatched fields, and its ``means2d`` is the very
    # tensor the image was computed from, so that ``means2d.grad`` is filled by backward().
    return backend_render(gaussians, cameras, background_t, degree, float(scaling_modifier),
                          bool(antialiasing), batched=not isinstance(camera, Camera), **options)
