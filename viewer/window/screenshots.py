"""Screenshot file names: unique, never overwriting a file, even for several shots in one second."""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["unique_screenshot_path"]


def unique_screenshot_path(folder: str | os.PathLike = ".", now: float | None = None) -> Path:
    """A new, empty ``splatview-YYYYmmdd-HHMMSS-mmm.png`` in ``folder`` (``-2``, ``-3``... appended
    when that name is taken). The file is created here (exclusively), so that two shots never get
    the same name; the caller writes the image over it."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"-{int(now * 1000) % 1000:03d}"
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 10_000):
        path = folder / (f"splatview-{stamp}.png" if attempt == 1 else f"splatview-{stamp}-{attempt}.png")
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return path
    raise OSError(f"{folder}: no free screenshot name for {stamp}")
