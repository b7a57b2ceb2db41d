"""An editing session on one model: a crop box and a floater strength under preview, edits
applied on top of each other, and undo. The viewer's edit panel and ``splat-edit`` share it.

Everything is a boolean mask over the Gaussians as loaded (nothing is copied until
:meth:`EditSession.result`): ``applied`` holds what earlier edits kept; the preview removes
from it what lies outside the crop box and then what the floater rules flag among the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from rasterizer.camera import Camera
from rasterizer.gaussians import Gaussians

from .crop import CropBox
from .floaters import RULES, FloaterAnalysis, FloaterThresholds

__all__ = ["EditSession", "Preview"]


@dataclass(frozen=True)
class Preview:
    """What the current settings do, as masks over the loaded Gaussians.

    ``keep``: what a save writes now; ``outside``: removed by the crop box; ``floaters``:
    removed by the floater rules (inside the box); ``rule_counts``: how many each rule alone
    removes among the Gaussians inside the box (a Gaussian may match several rules).
    """

    keep: torch.Tensor
    outside: torch.Tensor
    floaters: torch.Tensor
    rule_counts: dict[str, int]
    thresholds: FloaterThresholds

    @property
    def kept(self) -> int:
        return int(self.keep.sum())


class EditSession:
    """Edits on ``gaussians``; ``cameras``: the input cameras for the ``unseen`` rule."""

    def __init__(self, gaussians: Gaussians, cameras: Sequence[Camera] = ()):
        self.original = gaussians.detach()
        self.analysis = FloaterAnalysis(self.original, cameras)
        self.applied = torch.ones(len(self.original), dtype=torch.bool)
        self.crop: CropBox | None = None
        self.strength = 0.0
        self._history: list[tuple[torch.Tensor, CropBox | None, float]] = []
        self._cached: tuple[tuple, Preview] | None = None
        self._edits = 0   # bumped by apply and undo: part of the preview cache's key

    def set_crop(self, crop: CropBox | None) -> None:
        self.crop = crop

    def set_strength(self, strength: float) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"floater strength must be in [0, 1], got {strength}")
        self.strength = float(strength)

    def preview(self) -> Preview:
        """The masks of the current settings (cached until a setting changes)."""
        key = (self.crop, self.strength, self._edits)
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        applied = self.applied
        inside = self.crop.contains(self.original.means).cpu() if self.crop is not None else torch.ones_like(applied)
        candidates = applied & inside
        masks = self.analysis.masks(self.strength)
        floaters = torch.zeros_like(applied)
        counts = {}
        for rule in RULES:
            floaters |= masks[rule]
            counts[rule] = int((masks[rule] & candidates).sum())
        floaters &= candidates
        preview = Preview(keep=candidates & ~floaters, outside=applied & ~inside, floaters=floaters,
                          rule_counts=counts, thresholds=self.analysis.thresholds(self.strength))
        self._cached = (key, preview)
        return preview

    def apply(self) -> int:
        """Make the preview's removals an edit (undoable); the crop box and strength reset.
        Returns how many Gaussians this edit removed."""
        keep = self.preview().keep
        removed = int(self.applied.sum() - keep.sum())
        self._history.append((self.applied, self.crop, self.strength))
        self.applied, self.crop, self.strength = keep, None, 0.0
        self._edits += 1
        return removed

    @property
    def can_undo(self) -> bool:
        return bool(self._history)

    def undo(self) -> bool:
        """Take back the last :meth:`apply`, with the crop box and strength it had; False when
        there is nothing to undo."""
        if not self._history:
            return False
        self.applied, self.crop, self.strength = self._history.pop()
        self._edits += 1
        return True

    def result(self) -> Gaussians:
        """The Gaussians a save writes: the applied edits and the current preview."""
        return self.original.index(self.preview().keep.to(self.original.device))
