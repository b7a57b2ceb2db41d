"""Ground-truth images: decoding (alpha compositing, undistortion, resizing) and the cache.

Images are held as uint8 ``[H, W, 3]`` RGB tensors (1 byte per channel), transparency
composited over the scene background; or, for training with a background that changes every
step, as ``[H, W, 4]``: RGB premultiplied by alpha, plus alpha. The float conversion
(:func:`view_image_float`, which composites the 4-channel form) happens per training step. When all decoded images would not fit the
memory budget, the cache keeps the *encoded* files in memory (or, if even those do not fit,
only their paths) and decodes on demand; :meth:`ImageCache.prefetch` decodes upcoming indices
on a thread pool so that training does not wait.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from rasterizer.files import FileFormatError

from .undistort import Distortion, undistort_image

__all__ = ["ImageSource", "ImageCache", "decode_image", "view_image_float", "available_memory"]


@dataclass(frozen=True)
class ImageSource:
    """How to produce one ground-truth image.

    Attributes:
        path: the image file.
        size: output (width, height) in pixels (the loading resolution).
        background: RGB in [0, 1] that transparent pixels are composited over; None keeps the
            alpha instead (4 channels: premultiplied RGB and alpha).
        intrinsics: (fx, fy, cx, cy) in pixels at the file's own size; only used to undistort.
        distortion: lens distortion to remove before resizing, or None.
    """

    path: Path
    size: tuple[int, int]
    background: tuple[float, float, float] | None = (0.0, 0.0, 0.0)
    intrinsics: tuple[float, float, float, float] | None = None
    distortion: Distortion | None = None

    @property
    def decoded_nbytes(self) -> int:
        return self.size[0] * self.size[1] * (3 if self.background is not None else 4)


def _to_rgb(image: Image.Image, background: tuple[float, float, float] | None) -> np.ndarray:
    """uint8 [H, W, 3]: alpha (if any) composited over ``background``, rounded; with
    ``background=None``, uint8 [H, W, 4]: RGB premultiplied by alpha, then alpha."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = Image.fromarray((np.asarray(image, dtype=np.float64) / 257.0).round().clip(0, 255)
                                .astype(np.uint8))
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info)
    if not has_alpha and background is not None:
        return np.asarray(image.convert("RGB"))
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    alpha = rgba[..., 3:4]
    if background is None:
        premultiplied = np.concatenate([rgba[..., :3] * alpha, alpha], axis=-1)
        return (premultiplied * 255.0).round().clip(0, 255).astype(np.uint8)
    composite = rgba[..., :3] * alpha + np.asarray(background, dtype=np.float32) * (1.0 - alpha)
    return (composite * 255.0).round().clip(0, 255).astype(np.uint8)


def decode_image(source: ImageSource, data: bytes | None = None) -> np.ndarray:
    """Decode ``source`` (from ``data`` if given, else from its file) to uint8 [H, W, 3] at
    ``source.size``: composite alpha, undistort at the file's size, then resize with PIL's
    default filter (bicubic), as the reference does."""
    try:
        with Image.open(io.BytesIO(data) if data is not None else source.path) as image:
            image.load()
            rgb = _to_rgb(image, source.background)
    except FileNotFoundError:
        raise FileNotFoundError(f"{source.path}: image file not found") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise FileFormatError(source.path, f"cannot decode the image ({error})") from None
    if source.distortion is not None and not source.distortion.is_identity:
        fx, fy, cx, cy = source.intrinsics
        rgb = undistort_image(rgb, fx, fy, cx, cy, source.distortion)
    if (rgb.shape[1], rgb.shape[0]) != tuple(source.size):
        # "RGBa" tells PIL the colour is already premultiplied, so it resamples it as it is.
        mode = "RGB" if rgb.shape[-1] == 3 else "RGBa"
        rgb = np.asarray(Image.fromarray(rgb, mode).resize(tuple(source.size)).convert(mode))
    if not rgb.flags.writeable or not rgb.flags.c_contiguous:
        rgb = np.array(rgb, order="C")  # torch wants a writable array
    return rgb


def view_image_float(image: torch.Tensor, background: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] in [0, 1] (on the same device).

    A 4-channel image (premultiplied RGB and alpha) is composited over ``background`` (RGB in
    [0, 1]): ``rgb + background * (1 - alpha)``, exactly what a render over that background shows.
    """
    values = image.to(torch.float32).div_(255.0).permute(2, 0, 1)
    if values.shape[0] == 3:
        return values.contiguous()
    if background is None:
        raise ValueError("a ground-truth image with alpha needs the background to composite over")
    background = torch.as_tensor(background, dtype=torch.float32, device=values.device)
    return (values[:3] + background[:, None, None] * (1.0 - values[3:4])).contiguous()


def available_memory(device: str = "cpu") -> int:
    """Bytes currently available: free GPU memory for ``cuda``, else MemAvailable (Linux) or
    the OS's count of available physical pages."""
    if str(device).startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        pass
    try:
        import psutil  # optional

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - no way to know: assume a modest machine
        return 8 << 30


def _format_bytes(count: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def _held(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """A decoded image as the cache holds it on ``device``. On the CPU of a machine with CUDA
    it is page-locked, so that the trainer's copy to the GPU (``non_blocking``) runs beside
    the host's work instead of holding it up (``--data_device cpu`` keeps the training images
    off the GPU at no cost in speed); where page-locking fails, ordinary memory."""
    tensor = torch.from_numpy(image)
    if device.type != "cpu":
        return tensor.to(device)
    if torch.cuda.is_available():
        try:
            return tensor.pin_memory()
        except RuntimeError:
            pass
    return tensor


class ImageCache:
    """uint8 RGB ground-truth images by index, decoded up front or on demand.

    ``mode`` is ``"decoded"`` (every image held decoded on ``device``) or ``"encoded"`` (the
    encoded files held in CPU memory, or only their paths when even those exceed the budget;
    decoded on :meth:`get`, with read-ahead via :meth:`prefetch`). ``nbytes`` is what the cache
    holds.
    """

    def __init__(self, sources: Sequence[ImageSource], device: str = "cpu",
                 budget_bytes: int | None = None, workers: int | None = None,
                 readahead: int | None = None, log: Callable[[str], None] | None = None):
        self.sources = list(sources)
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"data_device {device!r} requested but CUDA is not available")
        if budget_bytes is None:
            budget_bytes = available_memory(str(self.device)) // 2
        self.budget_bytes = int(budget_bytes)
        self.workers = max(1, workers if workers is not None else min(4, os.cpu_count() or 1))
        self.readahead = readahead if readahead is not None else 2 * self.workers
        self._decoded: list[torch.Tensor] | None = None
        self._encoded: list[bytes | None] = []
        self._pending: OrderedDict[int, Future] = OrderedDict()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

        decoded_total = sum(s.decoded_nbytes for s in self.sources)
        if decoded_total <= self.budget_bytes:
            self.mode = "decoded"
            self._decoded = [_held(a, self.device) for a in self._map(decode_image, self.sources)]
            self.nbytes = sum(t.numel() * t.element_size() for t in self._decoded)
            self._shutdown_pool()
            pinned = " (page-locked)" if self._decoded and self._decoded[0].is_pinned() else ""
            message = (f"Image cache: {len(self.sources)} images decoded (uint8), "
                       f"{self.nbytes} bytes ({_format_bytes(self.nbytes)}) on {self.device}{pinned}")
        else:
            self.mode = "encoded"
            file_total = sum(s.path.stat().st_size for s in self.sources)
            if file_total <= self.budget_bytes:
                self._encoded = list(self._map(lambda s: s.path.read_bytes(), self.sources))
                held = "encoded files in memory"
            else:
                self._encoded = [None] * len(self.sources)
                held = "file paths only (read from disk)"
            self.nbytes = sum(len(b) for b in self._encoded if b is not None)
            message = (f"Image cache: decoded images would need {_format_bytes(decoded_total)}, over "
                       f"the budget of {_format_bytes(self.budget_bytes)}; holding {held}, "
                       f"{self.nbytes} bytes ({_format_bytes(self.nbytes)}), decoding on demand")
        if log is not None:
            log(message)

    # ----- public ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.sources)

    def get(self, index: int) -> torch.Tensor:
        """uint8 [H, W, 3] RGB image ``index`` on the data device. In decoded mode this is the
        cached tensor itself: do not modify it in place."""
        if self._decoded is not None:
            return self._decoded[index]
        with self._lock:
            future = self._pending.pop(index, None)
        array = future.result() if future is not None else self._decode(index)
        return torch.from_numpy(array).to(self.device)

    def prefetch(self, indices: Iterable[int]) -> None:
        """Hint that ``indices`` will be read next (in that order); in encoded mode the first
        ``readahead`` of them are decoded in the background. No-op in decoded mode."""
        if self._decoded is not None:
            return
        with self._lock:
            for count, index in enumerate(indices):
                if count >= self.readahead:
                    break
                index = int(index)
                if index in self._pending:
                    continue
                self._pending[index] = self._get_pool().submit(self._decode, index)
            while len(self._pending) > 2 * self.readahead:  # forget stale hints
                _, stale = self._pending.popitem(last=False)
                stale.cancel()

    def close(self) -> None:
        """Stop the read-ahead threads (the cache stays usable, decoding synchronously)."""
        with self._lock:
            for future in self._pending.values():
                future.cancel()
            self._pending.clear()
        self._shutdown_pool()

    def __enter__(self) -> "ImageCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----- internals ------------------------------------------------------------------
    def _decode(self, index: int) -> np.ndarray:
        return decode_image(self.sources[index], self._encoded[index])

    def _get_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="splat-images")
        return self._pool

    def _shutdown_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _map(self, function, items: Sequence) -> list:
        if len(items) <= 1 or self.workers == 1:
            return [function(item) for item in items]
        return list(self._get_pool().map(function, items))
