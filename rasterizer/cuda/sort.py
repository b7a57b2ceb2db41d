"""A stable key-value radix sort for the tile pairs (``sort.cu``), in place.

``torch.sort(keys, stable=True)`` followed by ``values[order]`` needs 28 bytes a pair beside its
6-byte inputs (int64 indices, an int64 iota and cub's double buffers): at the training render's
memory peak that was 200-250 bytes a Gaussian (``bench/RESULTS.md``). This sort needs one spare
copy of the keys and values and a table of 256 counts a block of 2048 pairs.
"""

from __future__ import annotations

import torch

from .compiler import INT, LONGLONG, POINTER, load_module

__all__ = ["sort_pairs"]

_SOURCE = "sort.cu"
_THREADS = 256        # sort.cu's SORT_THREADS (= its RADIX: one thread a digit)
_TILE_ITEMS = 2048    # sort.cu's TILE_ITEMS: pairs a block
_RADIX_BITS = 8


def _ptr(tensor: torch.Tensor) -> tuple:
    return (tensor.data_ptr(), POINTER)


def sort_pairs(keys: torch.Tensor, values: torch.Tensor, key_bits: int) -> None:
    """Sort ``keys`` and ``values`` by key, stably (equal keys keep their order), in place.

    ``keys``: a contiguous CUDA int16 or int32 tensor of non-negative keys below ``2**key_bits``
    (``key_bits`` <= 16 or 32); ``values``: contiguous int32, as many. Both come back sorted
    exactly as ``torch.sort(keys, stable=True)`` and ``values[order]`` would give them. Runs on
    PyTorch's current stream, without waiting for the GPU."""
    if keys.dtype not in (torch.int16, torch.int32) or values.dtype != torch.int32:
        raise ValueError(f"sort_pairs takes int16/int32 keys and int32 values, not {keys.dtype} and {values.dtype}")
    if keys.shape != values.shape or not (keys.is_contiguous() and values.is_contiguous()):
        raise ValueError("sort_pairs takes contiguous keys and values of one shape")
    width = 16 if keys.dtype == torch.int16 else 32
    if not 0 < key_bits <= width:
        raise ValueError(f"key_bits must be in 1..{width} for {keys.dtype} keys, not {key_bits}")
    n = keys.numel()
    if n <= 1:
        return
    device = keys.device
    module = load_module(_SOURCE, device.index if device.index is not None else torch.cuda.current_device())
    blocks = (n + _TILE_ITEMS - 1) // _TILE_ITEMS
    counts = torch.empty(_THREADS * blocks, dtype=torch.int32, device=device)
    source, target = (keys, values), (torch.empty_like(keys), torch.empty_like(values))
    for shift in range(0, key_bits, _RADIX_BITS):
        module.launch(f"radix_count{width}", (blocks,), (_THREADS,),
                      [(n, LONGLONG), _ptr(source[0]), (shift, INT), _ptr(counts)])
        # Inclusive: the scatter subtracts each count itself (one launch fewer a pass).
        ends = torch.cumsum(counts, 0, dtype=torch.int32)
        module.launch(f"radix_scatter{width}", (blocks,), (_THREADS,), [
            (n, LONGLONG), _ptr(source[0]), _ptr(source[1]), (shift, INT), _ptr(ends), _ptr(counts),
            _ptr(target[0]), _ptr(target[1])])
        source, target = target, source
    if source[0] is not keys:  # an odd number of passes ends in the spare buffers
        keys.copy_(source[0])
        values.copy_(source[1])
