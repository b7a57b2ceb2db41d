"""When the view is rendered again, and at which resolution, so that the window and the panel stay
responsive however slow a full-resolution render is.

The render loop keeps its last image and renders only when something it depends on changed
(``key``: the state's version, the model's, the size). While changes keep coming (a drag, a held
key, a slider) and a full-resolution render would take longer than ``budget_s``, it renders at a
reduced scale that fits the budget; ``settle_s`` after the last change it renders once more at
full resolution. Costs are measured (seconds per full-resolution frame, scaled by the pixel
count), so the scale adapts to the backend, the model and the machine.
"""

from __future__ import annotations

import math
from typing import Hashable

__all__ = ["RenderPacing"]


class RenderPacing:
    """Decides the scale (0..1] of each render, or that the last image is still current.

    Args:
        budget_s: the longest a render may take while the user interacts (seconds).
        settle_s: quiet time after the last change before the full-resolution render (seconds).
        min_scale: the lowest render scale (per axis).
        adaptive: False renders every change at full resolution (scripted runs, offscreen).
    """

    STEP = 0.125   # scales are multiples of this: fewer reallocations of the render target

    def __init__(self, budget_s: float = 1 / 15, settle_s: float = 0.3, min_scale: float = 0.125,
                 adaptive: bool = True) -> None:
        self.budget_s, self.settle_s, self.min_scale, self.adaptive = budget_s, settle_s, min_scale, adaptive
        self.full_cost_s: float | None = None   # estimated seconds for a full-resolution render
        self.shown_scale: float | None = None   # scale of the image on screen (None: nothing yet)
        self._key: Hashable = None
        self._last_change = -math.inf

    def plan(self, key: Hashable, now: float) -> float | None:
        """The scale to render at now, or None when the image on screen is current."""
        if self.shown_scale is None:          # nothing on screen yet: the first image is a full one
            self._key, self._last_change = key, now
            return 1.0
        if key != self._key:
            self._key, self._last_change = key, now
            return self._interactive_scale()
        if self.shown_scale < 1.0 and now - self._last_change >= self.settle_s:
            return 1.0
        return None

    def _interactive_scale(self) -> float:
        if not self.adaptive or self.full_cost_s is None or self.full_cost_s <= self.budget_s:
            return 1.0
        scale = math.sqrt(self.budget_s / self.full_cost_s)
        return max(self.min_scale, min(1.0, math.floor(scale / self.STEP) * self.STEP))

    def rendered(self, scale: float, seconds: float) -> None:
        """Record a render at ``scale`` that took ``seconds`` (its cost grows with the pixels)."""
        full = seconds / max(scale * scale, 1e-6)
        self.full_cost_s = full if self.full_cost_s is None else 0.5 * (self.full_cost_s + full)
        self.shown_scale = scale

    def invalidate(self) -> None:
        """Forget the image on screen (e.g. the render target was lost): render at the next plan."""
        self.shown_scale = None
