"""The reference's ``-r/--resolution`` rules (``utils/camera_utils.py: loadCam``).

* ``r`` in {1, 2, 4, 8}: size = ``(round(W / r), round(H / r))`` (Python's round).
* ``r == -1`` (default): images wider than 1600 px are scaled to width 1600:
  ``s = W / 1600`` (a one-line notice is printed once per load), else ``s = 1``;
  size = ``(int(W / s), int(H / s))``.
* any other positive ``r``: target width ``r`` pixels, ``s = W / r``, size as above.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["MAX_DEFAULT_WIDTH", "ResolutionRule"]

MAX_DEFAULT_WIDTH = 1600


class ResolutionRule:
    """Computes loading sizes; remembers whether the >1600 px notice was already given."""

    def __init__(self, resolution: int = -1, log: Callable[[str], None] | None = None):
        resolution = int(resolution)
        if resolution == 0 or resolution < -1:
            raise ValueError(f"--resolution must be -1, 1, 2, 4, 8 or a target width in pixels, "
                             f"got {resolution}")
        self.resolution = resolution
        self.log = log
        self.noticed = False

    def size(self, width: int, height: int) -> tuple[int, int]:
        """Loading size (width, height) in pixels for an image of ``width`` x ``height``."""
        r = self.resolution
        if r in (1, 2, 4, 8):
            return round(width / r), round(height / r)
        if r == -1:
            if width <= MAX_DEFAULT_WIDTH:
                return width, height
            if not self.noticed:
                self.noticed = True
                if self.log is not None:
                    self.log(f"Images wider than {MAX_DEFAULT_WIDTH} px are scaled down to width "
                             f"{MAX_DEFAULT_WIDTH}; pass -r 1 to keep the full resolution.")
            scale = width / MAX_DEFAULT_WIDTH
        else:
            scale = width / r
        return max(1, int(width / scale)), max(1, int(height / scale))
