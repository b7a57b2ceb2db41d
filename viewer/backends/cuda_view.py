"""The CUDA drawing path: the CUDA rasterizer renders into torch memory and the image reaches a
GL texture through CUDA-GL interop (``shared/reference/viewer-notes.md`` §3.3, texture path).

Per frame, on torch's current stream: render -> RGBA8 HWC on the GPU (row 0 = top) -> map the
registered texture -> ``cudaMemcpy2DToArrayAsync`` -> unmap (which orders GL's later reads after
the copy, so no synchronisation is needed) -> a fullscreen triangle samples the texture with
``v`` flipped. The texture is registered once per size and unregistered before it is deleted.

Without interop (``--no_interop``, a GL context on another GPU, a failed registration) the image
goes through host memory and ``glTexSubImage2D`` instead, after one notice on stderr.
All calls must run on the thread whose GL context owns the texture, with that context current.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import torch
from OpenGL import GL

from rasterizer.camera import Camera
from rasterizer.gaussians import Gaussians
from rasterizer.render import render
from .gl_display import DisplayTexture

__all__ = ["CudaSplatRenderer", "DisplayTexture", "interop_devices", "InteropError"]


class InteropError(RuntimeError):
    """CUDA-GL interop is not possible here (the message says why)."""


def _runtime():
    try:
        from cuda.bindings import runtime  # noqa: PLC0415
    except ImportError as error:
        raise InteropError(f"cuda-bindings is not installed ({error})") from None
    return runtime


def _check(result, what: str):
    """cuda-bindings calls return ``(error, values...)`` and never raise: turn errors into
    :class:`InteropError`; return the values (one value unwrapped)."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise InteropError(f"{what} failed: {error.name if hasattr(error, 'name') else error}")
    return values[0] if len(values) == 1 else tuple(values)


def interop_devices() -> list[int]:
    """CUDA devices that share memory with the current GL context (empty when none does, e.g. GL
    on Mesa or on another GPU)."""
    runtime = _runtime()
    result = runtime.cudaGLGetDevices(8, runtime.cudaGLDeviceList.cudaGLDeviceListAll)
    if int(result[0]) != 0:
        return []
    count, devices = result[1], result[2]
    return [int(d) for d in list(devices)[:count]]


class InteropUpload:
    """The texture registered with CUDA (write-discard): copies device images into it."""

    def __init__(self, texture: int, width: int, height: int) -> None:
        self._rt = _runtime()
        flags = self._rt.cudaGraphicsRegisterFlags.cudaGraphicsRegisterFlagsWriteDiscard
        self.resource = _check(self._rt.cudaGraphicsGLRegisterImage(texture, GL.GL_TEXTURE_2D, flags),
                               "cudaGraphicsGLRegisterImage")
        self.width, self.height = width, height

    def upload(self, rgba: torch.Tensor) -> None:
        """Copy ``rgba`` ([H, W, 4] uint8, contiguous, on the GPU) into the texture, ordered on
        torch's current stream."""
        rt, stream = self._rt, torch.cuda.current_stream().cuda_stream
        _check(rt.cudaGraphicsMapResources(1, self.resource, stream), "cudaGraphicsMapResources")
        try:
            array = _check(rt.cudaGraphicsSubResourceGetMappedArray(self.resource, 0, 0),
                           "cudaGraphicsSubResourceGetMappedArray")
            row = self.width * 4
            _check(rt.cudaMemcpy2DToArrayAsync(array, 0, 0, rgba.data_ptr(), row, row, self.height,
                                               rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream),
                   "cudaMemcpy2DToArrayAsync")
        finally:
            _check(rt.cudaGraphicsUnmapResources(1, self.resource, stream), "cudaGraphicsUnmapResources")

    def release(self) -> None:
        _check(self._rt.cudaGraphicsUnregisterResource(self.resource), "cudaGraphicsUnregisterResource")


def _notice(message: str) -> None:
    print(f"splat-view: notice: {message}", file=sys.stderr, flush=True)


class CudaSplatRenderer:
    """Draws a model with the CUDA rasterizer into the current GL framebuffer.

    Args:
        gaussians: the model (moved to ``device`` once).
        device: the CUDA device to render on.
        interop: try CUDA-GL interop; when False or impossible, copy through host memory.
        notice: where the one-time fallback notice goes.
    """

    def __init__(self, gaussians: Gaussians, device: torch.device, interop: bool = True,
                 notice: Callable[[str], None] = _notice) -> None:
        self.device = device
        self.gaussians = gaussians.to(device, torch.float32)
        self.display = DisplayTexture()
        self._notice = notice
        self._interop_wanted = interop
        self.interop: InteropUpload | None = None
        self.fallback_reason: str | None = None
        self._rgba: torch.Tensor | None = None
        if not interop:
            self._fall_back("turned off by --no_interop")
            return
        try:
            devices = interop_devices()
        except InteropError as error:
            self._fall_back(str(error))
            return
        if device.index not in devices:
            self._fall_back(f"the OpenGL context is not on CUDA device {device.index} "
                            f"(interop devices: {devices or 'none'})")

    def _fall_back(self, reason: str) -> None:
        self._interop_wanted = False
        self.fallback_reason = reason
        self._notice(f"CUDA-GL interop unavailable ({reason}); falling back to slower rendering "
                     "with a copy through host memory")

    def set_gaussians(self, gaussians: Gaussians) -> None:
        self.gaussians = gaussians.to(self.device, torch.float32)

    def _resize(self, width: int, height: int) -> None:
        if self.interop is not None:   # unregister before GL deletes the texture
            self.interop.release()
            self.interop = None
        self.display.allocate(width, height)
        self._rgba = torch.full((height, width, 4), 255, dtype=torch.uint8, device=self.device)
        if self._interop_wanted:
            try:
                self.interop = InteropUpload(self.display.texture, width, height)
            except InteropError as error:
                self._fall_back(str(error))

    def render_rgba(self, camera: Camera, background: Sequence[float], sh_degree: int | None = None,
                    scaling_modifier: float = 1.0, antialiasing: bool = False) -> torch.Tensor:
        """The frame as [H, W, 4] uint8 on the GPU (row 0 = top, alpha 255), rounded to 8 bits."""
        if (camera.width, camera.height) != self.display.size:
            self._resize(camera.width, camera.height)
        degree = None if sh_degree is None else min(int(sh_degree), self.gaussians.sh_degree)
        with torch.inference_mode():
            out = render(self.gaussians, camera, tuple(float(v) for v in background), sh_degree=degree,
                         scaling_modifier=scaling_modifier, antialiasing=antialiasing, backend="cuda")
            rgb = self._rgba[..., :3]
            rgb.copy_(out.image.permute(1, 2, 0).mul(255.0).add_(0.5).clamp_(0.0, 255.0))
        return self._rgba

    def draw(self, camera: Camera, background: Sequence[float] = (0.0, 0.0, 0.0), sh_degree: int | None = None,
             scaling_modifier: float = 1.0, antialiasing: bool = False, fast_culling: bool = True) -> None:
        """Render ``camera``'s view and draw it over the viewport of the camera's size.
        ``fast_culling`` has no effect here: the CUDA kernels always drop the tiles where a
        splat's alpha stays below 1/255, which is tighter than SIBR's per-axis extents."""
        rgba = self.render_rgba(camera, background, sh_degree, scaling_modifier, antialiasing)
        if self.interop is not None:
            self.interop.upload(rgba)
        else:
            self.display.upload_from_host(rgba)
        self.display.draw((camera.width, camera.height))

    def release(self) -> None:
        if self.interop is not None:
            self.interop.release()
            self.interop = None
        self.display.release()
