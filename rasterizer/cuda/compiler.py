"""Run-time compilation of splatview's CUDA kernels with NVRTC, a disk cache, and launches.

No nvcc and no C++ compiler are involved: ``.cu`` sources shipped in this package are compiled
by NVRTC (from the ``nvidia-cuda-nvrtc`` wheel, through ``cuda-bindings``) into a cubin for the
GPU's own architecture, then loaded with the driver API. A source may ``#include "name.cuh"``
headers shipped beside it or in ``rasterizer/cuda`` (code shared between kernels, such as
``adam.cuh``); NVRTC gets them by name (:func:`include_headers`). Cubins are cached on disk under
a key made of the source and header text, the architecture and the NVRTC version:

* ``$SPLATVIEW_KERNEL_CACHE`` if set, else ``$XDG_CACHE_HOME/splatview/kernels``
  (``~/.cache/splatview/kernels``).

Kernels run on PyTorch's current stream and read/write PyTorch-allocated memory.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from rasterizer.files import atomic_write_bytes

if TYPE_CHECKING:
    import torch

__all__ = ["KernelError", "compile_cubin", "compile_source", "nvrtc_version", "kernel_cache_dir", "CudaModule",
           "include_headers", "load_module", "read_source", "source_path"]

_SOURCE_DIR = Path(__file__).parent
_INSTALL_HINT = ('install matching NVIDIA wheels: pip install "splatview[cuda]" '
                 "(cuda-bindings, cuda-core and nvidia-cuda-nvrtc of your driver's CUDA major version)")


class KernelError(RuntimeError):
    """The CUDA toolchain pieces are missing, mismatched, or a kernel failed to build/launch."""


def _check(result, what: str):
    """Unwrap a cuda-bindings ``(status, *values)`` tuple, raising on a non-success status."""
    status, *values = result if isinstance(result, tuple) else (result,)
    if int(status) != 0:
        raise KernelError(f"{what} failed: {status!r}")
    return values[0] if len(values) == 1 else tuple(values)


def _nvrtc():
    try:
        from cuda.bindings import nvrtc  # noqa: PLC0415
    except ImportError as error:
        raise KernelError(f"NVIDIA's cuda-bindings is not installed ({error}); {_INSTALL_HINT}") from None
    return nvrtc


def nvrtc_version() -> tuple[int, int]:
    """(major, minor) of the NVRTC library in use."""
    try:
        return _check(_nvrtc().nvrtcVersion(), "nvrtcVersion")
    except (OSError, RuntimeError) as error:
        if isinstance(error, KernelError):
            raise
        raise KernelError(f"the NVRTC library could not be loaded ({error}); {_INSTALL_HINT}") from None


def source_path(source: str | Path) -> Path:
    """Where a kernel source lives: a bare name is a ``.cu`` file shipped in ``rasterizer/cuda``;
    a :class:`~pathlib.Path` is taken as it is (other packages ship their own kernels)."""
    return source if isinstance(source, Path) else _SOURCE_DIR / source


def read_source(source: str | Path) -> str:
    """Text of a kernel source (see :func:`source_path`)."""
    return source_path(source).read_text(encoding="utf-8")


_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


def include_headers(source: str | Path) -> dict[str, str]:
    """The headers a kernel source includes with ``#include "name"`` (and those they include),
    name -> text, found beside the source or in ``rasterizer/cuda``."""
    path = source_path(source)
    folders = (path.parent, _SOURCE_DIR)
    headers: dict[str, str] = {}
    pending = _INCLUDE.findall(path.read_text(encoding="utf-8"))
    while pending:
        name = pending.pop()
        if name in headers:
            continue
        found = next((folder / name for folder in folders if (folder / name).is_file()), None)
        if found is None:
            raise KernelError(f"{path.name} includes {name!r}, which is neither in {path.parent} nor in {_SOURCE_DIR}")
        headers[name] = found.read_text(encoding="utf-8")
        pending.extend(_INCLUDE.findall(headers[name]))
    return headers


def compile_cubin(source: str, name: str, arch: str, defines: Sequence[str] = (),
                  headers: dict[str, str] | None = None) -> bytes:
    """Compile CUDA C++ ``source`` to a cubin for ``arch`` (e.g. ``"sm_90"``); needs no GPU.
    ``headers``: name -> text of the files it includes (:func:`include_headers`)."""
    nvrtc = _nvrtc()
    headers = headers or {}
    program = _check(nvrtc.nvrtcCreateProgram(source.encode(), name.encode(), len(headers),
                                              [text.encode() for text in headers.values()],
                                              [header.encode() for header in headers]),
                     "nvrtcCreateProgram")
    options = [f"--gpu-architecture={arch}".encode(), b"-std=c++17",
               b"-default-device"] + [f"-D{d}".encode() for d in defines]
    try:
        result = nvrtc.nvrtcCompileProgram(program, len(options), options)
        if int(result[0]) != 0:
            size = _check(nvrtc.nvrtcGetProgramLogSize(program), "nvrtcGetProgramLogSize")
            log = b" " * size
            _check(nvrtc.nvrtcGetProgramLog(program, log), "nvrtcGetProgramLog")
            raise KernelError(f"NVRTC could not compile {name} for {arch}:\n"
                              f"{log.decode(errors='replace').strip()}")
        size = _check(nvrtc.nvrtcGetCUBINSize(program), "nvrtcGetCUBINSize")
        cubin = b" " * size
        _check(nvrtc.nvrtcGetCUBIN(program, cubin), "nvrtcGetCUBIN")
        return cubin
    finally:
        nvrtc.nvrtcDestroyProgram(program)


def compile_source(source: str | Path, arch: str, defines: Sequence[str] = ()) -> bytes:
    """:func:`compile_cubin` of a kernel source file (see :func:`source_path`) with its headers."""
    path = source_path(source)
    return compile_cubin(read_source(path), path.name, arch, defines, include_headers(path))


def kernel_cache_dir() -> Path:
    """Where compiled cubins are kept (see the module docstring)."""
    override = os.environ.get("SPLATVIEW_KERNEL_CACHE")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "splatview" / "kernels"


def cached_cubin(source: str, name: str, arch: str, defines: Sequence[str] = (),
                 headers: dict[str, str] | None = None) -> bytes:
    """``compile_cubin`` through the disk cache."""
    major, minor = nvrtc_version()
    included = [part for header in sorted(headers or {}) for part in (header, headers[header])]
    key = hashlib.sha256("\0".join([source, arch, f"{major}.{minor}", *defines, *included]).encode()).hexdigest()[:24]
    path = kernel_cache_dir() / f"{Path(name).stem}-{arch}-nvrtc{major}.{minor}-{key}.cubin"
    if path.is_file():
        return path.read_bytes()
    cubin = compile_cubin(source, name, arch, defines, headers)
    try:
        atomic_write_bytes(path, cubin)
    except OSError:
        pass  # an unwritable cache only costs a recompile next time
    return cubin


@dataclass
class CudaModule:
    """A loaded cubin: ``module.launch("kernel", grid, block, args, shared_bytes)``.

    ``args`` are (value, ctypes type) pairs: ``(tensor.data_ptr(), POINTER)``, ``(n, INT)``,
    ``(x, FLOAT)``, ``(n, LONGLONG)`` (the shorthands at the end of this module).
    """

    handle: object
    functions: dict

    def launch(self, kernel: str, grid: Sequence[int], block: Sequence[int],
               args: Sequence[tuple], shared_bytes: int = 0) -> None:
        from cuda.bindings import driver  # noqa: PLC0415

        function = self.functions.get(kernel)
        if function is None:
            function = _check(driver.cuModuleGetFunction(self.handle, kernel.encode()), f"cuModuleGetFunction({kernel})")
            self.functions[kernel] = function
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        if min(grid) == 0:
            return
        # The arguments are packed here into one buffer, 8 bytes a slot, and the driver gets the
        # address of an array of pointers to the slots: cuda-bindings' own (value, type)
        # packing costs tens of microseconds a launch, and training launches ~20 kernels a step.
        # The driver copies the values during the call, so the buffers may go right after.
        count = len(args)
        layout = "<" + "".join(_SLOT_FORMAT[kind] for _, kind in args)
        packed = ctypes.create_string_buffer(struct.pack(layout, *(value for value, _ in args)), 8 * count)
        base = ctypes.addressof(packed)
        pointers = (ctypes.c_void_p * count)(*range(base, base + 8 * count, 8))
        _check(driver.cuLaunchKernel(function, *grid, *block, shared_bytes, _current_stream(),
                                     ctypes.addressof(pointers), 0), f"launching {kernel}")


def _current_stream() -> int:
    """The raw handle of PyTorch's current CUDA stream on the current device."""
    import torch  # noqa: PLC0415

    try:  # the private accessor skips building a Stream object (a few microseconds a launch)
        return torch._C._cuda_getCurrentRawStream(torch.cuda.current_device())
    except AttributeError:
        return torch.cuda.current_stream().cuda_stream


def copy_to_host_async(host: torch.Tensor, device: torch.Tensor) -> None:
    """Queue a copy of ``device`` (a contiguous CUDA tensor) into ``host`` (pinned, as many
    bytes) on PyTorch's current stream, through the driver. Unlike ``host.copy_(device,
    non_blocking=True)`` it may be captured into a CUDA graph: PyTorch's pinned-memory allocator
    records an event on the host buffer, which a capture refuses."""
    from cuda.bindings import driver  # noqa: PLC0415

    nbytes = device.numel() * device.element_size()
    if host.numel() * host.element_size() != nbytes or not host.is_pinned():
        raise ValueError("copy_to_host_async needs a pinned host tensor of the device tensor's size")
    _check(driver.cuMemcpyDtoHAsync(host.data_ptr(), device.data_ptr(), nbytes, _current_stream()),
           "cuMemcpyDtoHAsync")


_modules: dict[tuple, CudaModule] = {}
_modules_lock = threading.Lock()


def _ensure_context(device_index: int) -> None:
    """Make the device's primary context (the one PyTorch uses) current on this thread."""
    import torch  # noqa: PLC0415
    from cuda.bindings import driver  # noqa: PLC0415

    torch.cuda.init()
    with torch.cuda.device(device_index):
        torch.cuda.current_stream()  # forces PyTorch to set up its context
    _check(driver.cuInit(0), "cuInit")
    device = _check(driver.cuDeviceGet(device_index), "cuDeviceGet")
    context = _check(driver.cuDevicePrimaryCtxRetain(device), "cuDevicePrimaryCtxRetain")
    _check(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent")


def device_arch(device_index: int) -> str:
    import torch  # noqa: PLC0415

    major, minor = torch.cuda.get_device_capability(device_index)
    return f"sm_{major}{minor}"


def load_module(source: str | Path, device_index: int, defines: Sequence[str] = ()) -> CudaModule:
    """Compile (or fetch from the cache) and load a kernel source (see :func:`source_path`) for
    a CUDA device. Loaded modules are kept: later calls are a dictionary look-up."""
    key = (str(source), device_index, tuple(defines))
    module = _modules.get(key)
    if module is not None:
        return module
    with _modules_lock:
        if key in _modules:
            return _modules[key]
        from cuda.bindings import driver  # noqa: PLC0415

        path = source_path(source)
        text = read_source(path)
        arch = device_arch(device_index)
        _ensure_context(device_index)
        cubin = cached_cubin(text, path.name, arch, defines, include_headers(path))
        try:
            handle = _check(driver.cuModuleLoadData(cubin), "cuModuleLoadData")
        except KernelError as error:
            driver_version = _check(driver.cuDriverGetVersion(), "cuDriverGetVersion")
            major, minor = nvrtc_version()
            raise KernelError(
                f"the GPU driver (CUDA {driver_version // 1000}.{driver_version % 1000 // 10}) could not "
                f"load kernels built by NVRTC {major}.{minor} for {arch} ({error}); "
                f"install an nvidia-cuda-nvrtc wheel no newer than the driver: "
                f'pip install "nvidia-cuda-nvrtc=={driver_version // 1000}.*"') from None
        module = CudaModule(handle, {})
        _modules[key] = module
        return module


# ctypes shorthands for kernel arguments, and their 8-byte slots in a packed argument buffer
# (struct format, little-endian; 4-byte values are padded).
POINTER = ctypes.c_void_p
INT = ctypes.c_int
FLOAT = ctypes.c_float
LONGLONG = ctypes.c_longlong
_SLOT_FORMAT = {POINTER: "Q", INT: "i4x", FLOAT: "f4x", LONGLONG: "q"}
