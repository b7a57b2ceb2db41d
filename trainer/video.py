"""Rendering a camera path (``rasterizer.camera_paths``) to an MP4 file or to PNG frames, for
``splat-render --camera-path``.

MP4 files are H.264 in yuv420p (what every player and browser plays) written by the ffmpeg
binary that the ``imageio-ffmpeg`` wheel ships: frames are streamed to it one by one, so a long
video never sits in memory. yuv420p halves the chroma resolution, so both sides must be even.
The file is written beside its destination and renamed into place when complete: Ctrl-C or a
crash leaves no half-written video (and an earlier file of that name untouched).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from rasterizer import Gaussians, render
from rasterizer.camera_paths import Keyframe

from .image_io import save_png, to_uint8

__all__ = ["VideoWriter", "even_size", "render_frames"]

VIDEO_QUALITY = 8   # imageio-ffmpeg's 0..10 scale (libx264 CRF about 18): visually lossless


def even_size(width: int, height: int) -> tuple[int, int]:
    """The largest even size not above ``width`` x ``height`` (at least 2 x 2), for yuv420p."""
    return max(2, width - width % 2), max(2, height - height % 2)


class VideoWriter:
    """An H.264 MP4 being written; use as a context manager and :meth:`append` uint8 [H, W, 3]
    frames of ``size`` (width, height), both even. ``fps``: frames per second."""

    def __init__(self, path: str | os.PathLike, size: tuple[int, int], fps: float):
        import imageio_ffmpeg  # noqa: PLC0415 - only when a video is written

        if size[0] % 2 or size[1] % 2:
            raise ValueError(f"video size {size[0]}x{size[1]}: width and height must be even (H.264, yuv420p)")
        self.path = Path(path)
        self.size = size
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # ffmpeg picks the container from the extension: keep .mp4 at the end of the temporary name.
        self._temporary = self.path.with_name(f".{self.path.stem}.partial{os.getpid()}.mp4")
        self._writer = imageio_ffmpeg.write_frames(str(self._temporary), size, fps=fps, codec="libx264",
                                                   pix_fmt_out="yuv420p", quality=VIDEO_QUALITY,
                                                   macro_block_size=1, ffmpeg_log_level="error")
        self._writer.send(None)   # start ffmpeg
        self.frames = 0

    def append(self, frame: np.ndarray) -> None:
        if frame.shape != (self.size[1], self.size[0], 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame of shape {frame.shape} {frame.dtype}; expected "
                             f"({self.size[1]}, {self.size[0]}, 3) uint8")
        self._writer.send(np.ascontiguousarray(frame))
        self.frames += 1

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            self._writer.close()   # waits for ffmpeg to finish the file
        finally:
            if kind is None:
                os.replace(self._temporary, self.path)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._temporary)


def _render_frames(gaussians: Gaussians, frames: Sequence[Keyframe], size: tuple[int, int],
                   background: torch.Tensor, sh_degree: int, antialiasing: bool, backend: str,
                   quiet: bool, what: str) -> Iterator[np.ndarray]:
    for frame in tqdm(frames, desc=what, disable=quiet, unit="frame"):
        with torch.no_grad():
            image = render(gaussians, frame.camera(*size), background=background, sh_degree=sh_degree,
                           antialiasing=antialiasing, backend=backend).image
        yield to_uint8(image.clamp(0, 1))


def render_frames(gaussians: Gaussians, frames: Sequence[Keyframe], size: tuple[int, int], fps: float,
                  background: torch.Tensor, sh_degree: int, video: Path | None = None,
                  frames_dir: Path | None = None, antialiasing: bool = False, backend: str = "auto",
                  quiet: bool = False) -> int:
    """Render ``frames`` at ``size`` (width, height) into ``video`` (MP4 at ``fps``) or as
    ``frames_dir/00000.png``...; returns the number of frames written."""
    images = _render_frames(gaussians, frames, size, background, sh_degree, antialiasing, backend, quiet,
                            f"Rendering {len(frames)} frames")
    if video is not None:
        with VideoWriter(video, size, fps) as writer:
            for image in images:
                writer.append(image)
        return writer.frames
    count = 0
    for count, image in enumerate(images, start=1):
        save_png(frames_dir / f"{count - 1:05d}.png", image)
    return count
