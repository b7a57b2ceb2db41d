"""``splat-train --fast``: train at a lower resolution while the model is still coarse.

Opt-in, and not the reference's training (which renders every view at its loading resolution
from the first iteration). Early in training the model cannot show fine detail yet, so most of
a full-size render's pixels are spent on frequencies it does not have. DashGaussian (Chen et
al., CVPR 2025, arXiv 2503.18402) renders smaller views while the photos' spectra say little
is lost, and reports about half the training time at equal quality. This module is splatview's
own formulation of that idea:

* **Energy kept at a scale.** For a photo, ``E(s)`` is the share of its Fourier energy
  (magnitude spectrum of its grey level) inside the centred window of the frequencies a photo
  ``s`` times smaller can hold: ``E(1) = 1``, decreasing with ``s``. The curve is averaged over
  up to :data:`SAMPLED_PHOTOS` training photos.
* **Start.** The first scale ``s_max`` is the largest ``s`` (at most :data:`MAX_FACTOR`, and
  leaving renders of at least :data:`MIN_SIDE` pixels) at which every sampled photo keeps
  :data:`START_ENERGY` of its energy.
* **Pace.** Training goes from ``s_max`` to full resolution at ``end`` (``--densify_until_iter``, or
  half of ``--iterations`` if that comes first),
  spending iterations on each scale in proportion to the log of the energy it adds: the scale
  at iteration ``t`` is the ``s`` with ``ln(E(s) / E(s_max)) / ln(1 / E(s_max)) = t / end``.
* **Renders** use whole downscale factors, ``floor(s)``: a view of W x H pixels is rendered at
  ``round(W / f) x round(H / f)`` with its intrinsics scaled (``Camera.resized``), against its
  photo averaged over f x f areas (``downscaled_photo``). Test views, reports and saved models
  are always at full resolution.

Nothing is stored: the schedule is computed again from the photos on resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["ResolutionSchedule", "SmallViews", "energy_kept", "downscaled_photo", "at_factor", "MAX_FACTOR",
           "SAMPLED_PHOTOS"]

MAX_FACTOR = 8          # never render more than 8 times smaller per side
MIN_SIDE = 32           # nor below 32 pixels a side
START_ENERGY = 0.25     # the start scale keeps a quarter of every sampled photo's energy
SAMPLED_PHOTOS = 16     # photos whose spectra are measured (evenly spaced over the training views)
_GRID_STEPS = 64        # E(s) is measured at 65 scales from 1 to the limit, linear in between


def _window_sums(table: torch.Tensor, half_h: int, half_w: int) -> torch.Tensor:
    """Sum of the centred (2 half_h + 1) x (2 half_w + 1) window of an fftshifted [H, W] map,
    given its 2D inclusive prefix sums ``table`` ([H + 1, W + 1], zero first row and column)."""
    height, width = table.shape[0] - 1, table.shape[1] - 1
    cy, cx = height // 2, width // 2
    y0, y1 = max(cy - half_h, 0), min(cy + half_h + 1, height)
    x0, x1 = max(cx - half_w, 0), min(cx + half_w + 1, width)
    return table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]


def energy_kept(photo: torch.Tensor, scales: Sequence[float]) -> list[float]:
    """E(s) for each of ``scales`` (>= 1): the share of ``photo``'s Fourier energy that a copy
    ``s`` times smaller per side can hold. ``photo``: uint8 or float [H, W, C] (channels
    averaged to a grey level; a 4th channel, alpha, is ignored) or [H, W]."""
    grey = photo.to(torch.float64)
    if grey.dim() == 3:
        grey = grey[..., :3].mean(dim=-1)
    spectrum = torch.fft.fftshift(torch.fft.fft2(grey)).abs()
    # On the host: each window sum below is read as a Python float, which from a GPU tensor is
    # a wait for the GPU, one a scale (ResolutionSchedule.from_photos asks 65 scales a photo).
    table = F.pad(spectrum.cumsum(0).cumsum(1), (1, 0, 1, 0)).cpu()
    total = float(table[-1, -1])
    if total <= 0.0:
        return [1.0 for _ in scales]
    height, width = grey.shape
    return [float(_window_sums(table, int(height / (2 * s)), int(width / (2 * s)))) / total for s in scales]


def _start_scale(curve: Callable[[float], float], limit: float) -> float:
    """The largest s in [1, limit] with curve(s) >= START_ENERGY (curve decreasing), by
    bisection; 1 when even s slightly above 1 keeps less."""
    if curve(limit) >= START_ENERGY:
        return limit
    low, high = 1.0, limit
    for _ in range(40):
        middle = 0.5 * (low + high)
        if curve(middle) >= START_ENERGY:
            low = middle
        else:
            high = middle
    return low


@dataclass(frozen=True)
class ResolutionSchedule:
    """Downscale factor by iteration (see the module docstring).

    Attributes:
        start_scale: ``s_max``, the scale of iteration 0 (1: the schedule never downscales).
        until: ``until[f - 2]`` is the last iteration rendered at factor ``f`` or larger, for
            ``f = 2 .. floor(start_scale)`` (non-increasing); from ``end`` on, every render is
            full size.
        end: the iteration from which the schedule is done.
    """

    start_scale: float
    until: tuple[int, ...]
    end: int

    @classmethod
    def from_photos(cls, photos: Sequence[torch.Tensor], end: int) -> "ResolutionSchedule":
        """The schedule of the training ``photos`` (uint8 [H, W, C]), reaching full size at
        iteration ``end``."""
        if not photos or end <= 0:
            return cls(1.0, (), max(end, 0))
        smallest_side = min(min(p.shape[0], p.shape[1]) for p in photos)
        limit = max(1.0, min(float(MAX_FACTOR), smallest_side / MIN_SIDE))
        grid = [1.0 + (limit - 1.0) * k / _GRID_STEPS for k in range(_GRID_STEPS + 1)]
        curves = [energy_kept(photo, grid) for photo in photos]

        def interpolated(values: list[float], s: float) -> float:
            position = 0.0 if limit == 1.0 else (s - 1.0) / (limit - 1.0) * _GRID_STEPS
            k = min(int(position), _GRID_STEPS - 1)
            return values[k] + (values[k + 1] - values[k]) * (position - k)

        start = min(_start_scale(lambda s, c=c: interpolated(c, s), limit) for c in curves)
        mean = [sum(c[k] for c in curves) / len(curves) for k in range(len(grid))]
        at_start = interpolated(mean, start)
        if start < 2.0 or at_start >= 1.0:
            return cls(start, (), end)
        span = math.log(1.0 / at_start)
        until = tuple(int(end * math.log(interpolated(mean, f) / at_start) / span)
                      for f in range(2, int(start) + 1))
        return cls(start, until, end)

    def factor(self, iteration: int) -> int:
        """The downscale factor of the renders of 1-based ``iteration`` (1: full size)."""
        if iteration >= self.end:
            return 1
        factor = 1
        for f, last in enumerate(self.until, start=2):
            if iteration <= last:
                factor = f
        return factor

    def describe(self) -> str:
        """One line for the log: each factor and the iterations it spans."""
        if not self.until:
            return "full resolution throughout (the photos' spectra leave nothing to gain)"
        parts, first = [], 1
        for f in range(len(self.until) + 1, 1, -1):
            last = self.until[f - 2]
            if last >= first:
                parts.append(f"1/{f} to {last}")
                first = last + 1
        return ", ".join(parts) + f", full resolution from {first}"


def downscaled_photo(photo: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``photo`` (uint8 [H, W, C]) averaged over areas to ``height`` x ``width``, uint8. A 4th
    channel (alpha) is averaged with the colours premultiplied, so that compositing the result
    on a background gives the area average of the composited photo."""
    image = photo.permute(2, 0, 1).to(torch.float32)[None]
    if image.shape[1] == 4:
        alpha = image[:, 3:]
        premultiplied = torch.cat([image[:, :3] * alpha / 255.0, alpha], dim=1)
        small = F.interpolate(premultiplied, size=(height, width), mode="area")
        colour = small[:, :3] * 255.0 / small[:, 3:].clamp_min(1e-6)
        small = torch.cat([torch.where(small[:, 3:] > 0, colour, 0.0), small[:, 3:]], dim=1)
    else:
        small = F.interpolate(image, size=(height, width), mode="area")
    return small[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()


def at_factor(views: Sequence, photos: Sequence[torch.Tensor | None], factor: int) -> tuple[list, list]:
    """The views (dataclasses with a ``camera``) with cameras ``factor`` times smaller per side
    and their photos averaged to match (None stays None: a photo another process renders)."""
    small_views, small_photos = [], []
    for view, photo in zip(views, photos):
        camera = view.camera
        width, height = max(1, round(camera.width / factor)), max(1, round(camera.height / factor))
        small_views.append(replace(view, camera=camera.resized(width, height)))
        small_photos.append(None if photo is None else downscaled_photo(photo, width, height))
    return small_views, small_photos


class SmallViews:
    """The training views and photos at the schedule's current factor, each made once per factor.

    The CUDA backend caches a camera's upload by the camera object
    (``rasterizer.cuda.camera_block``): a new smaller camera every step would upload it again,
    and the upload waits for the GPU, every step. The photos are averaged once too (beer's 71
    photos at 1/2 size: 49 MB on the data device). On one H200 this took shapes' first 3500
    views with ``--fast`` from 9.8 s to 8.9 s."""

    def __init__(self) -> None:
        self.factor = 1
        self._made: dict[tuple, tuple] = {}

    def at(self, views: Sequence, photos: Sequence[torch.Tensor | None], factor: int) -> tuple[list, list]:
        """``views`` (each with an ``index``) and ``photos`` ``factor`` times smaller per side;
        what an earlier factor made is dropped when the factor changes."""
        if factor != self.factor:
            self.factor = factor
            self._made.clear()
        if factor == 1:
            return list(views), list(photos)
        pairs = []
        for view, photo in zip(views, photos):
            key = (view.index, photo is None)   # None: a photo another process renders
            if key not in self._made:
                small_views, small_photos = at_factor([view], [photo], factor)
                self._made[key] = (small_views[0], small_photos[0])
            pairs.append(self._made[key])
        return [view for view, _ in pairs], [photo for _, photo in pairs]
