"""The tile pairs' radix sort (``rasterizer/cuda/sort.cu``) against ``torch.sort(stable=True)``
and a gather, bit for bit, on the GPU; it compiles anywhere."""

import pytest
import torch

nvrtc = pytest.importorskip("cuda.bindings.nvrtc", reason="cuda-bindings (splatview[cuda]) not installed")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")


def test_sort_kernels_compile_for_hopper_without_a_gpu():
    from rasterizer.cuda.compiler import compile_source

    cubin = compile_source("sort.cu", "sm_90")
    for kernel in ("radix_count16", "radix_count32", "radix_scatter16", "radix_scatter32"):
        assert kernel.encode() in cubin


def random_keys(n: int, kind: str, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    sentinel = 32767 if dtype == torch.int16 else 2**31 - 1
    if kind == "tiles":      # a 1080p frame's tiles, a tenth of the slots unused (the sentinel)
        keys = torch.randint(0, 8160, (n,), generator=generator)
        keys[torch.rand(n, generator=generator) < 0.1] = sentinel
    elif kind == "equal":    # one tile: only stability orders them
        keys = torch.full((n,), 7)
    elif kind == "wide":     # every bit of the key type below the sign
        keys = torch.randint(0, sentinel + 1, (n,), generator=generator, dtype=torch.int64)
    else:                    # already sorted runs, then reversed
        keys = torch.arange(n).flip(0) // 3
    return keys.to(dtype)


@cuda
@pytest.mark.parametrize("dtype", [torch.int16, torch.int32])
@pytest.mark.parametrize("kind", ["tiles", "equal", "wide", "reversed"])
@pytest.mark.parametrize("n", [0, 1, 2, 255, 2048, 2049, 100_003])
def test_sort_pairs_is_torchs_stable_sort(dtype, kind, n):
    from rasterizer.cuda.sort import sort_pairs

    if kind == "reversed" and dtype == torch.int16 and n > 32767 * 3:
        pytest.skip("keys past int16")
    generator = torch.Generator().manual_seed(n)
    keys = random_keys(n, kind, dtype, generator).cuda()
    values = torch.randperm(n, generator=generator).to(torch.int32).cuda()
    expected_keys, order = torch.sort(keys, stable=True)
    expected_values = values[order]
    sort_pairs(keys, values, 15 if dtype == torch.int16 else 31)
    assert torch.equal(keys, expected_keys)
    assert torch.equal(values, expected_values)


@cuda
def test_sort_pairs_of_a_few_bits_and_bad_arguments():
    from rasterizer.cuda.sort import sort_pairs

    keys = torch.tensor([3, 1, 2, 1, 0, 3, 1], dtype=torch.int16, device="cuda")
    values = torch.arange(7, dtype=torch.int32, device="cuda")
    sort_pairs(keys, values, 2)  # one pass: an odd count ends in the spare buffers, copied back
    assert keys.tolist() == [0, 1, 1, 1, 2, 3, 3] and values.tolist() == [4, 1, 3, 6, 2, 0, 5]
    with pytest.raises(ValueError, match="int16/int32 keys"):
        sort_pairs(keys.long(), values, 2)
    with pytest.raises(ValueError, match="key_bits"):
        sort_pairs(keys, values, 17)
    with pytest.raises(ValueError, match="one shape"):
        sort_pairs(keys, values[:3], 2)
