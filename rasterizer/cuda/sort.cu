// Stable key-value radix sort of the (tile, Gaussian) pairs, compiled at run time by NVRTC (see
// compiler.py and sort.py). It replaces torch.sort(keys, stable=True) and values[order], which
// need 28 bytes a pair beside their inputs (int64 indices, an int64 iota, cub's double
// buffers); this sort needs one more copy of the keys and values (6 bytes a pair for 16-bit
// keys) and a small table of counts.
//
// Least significant digit first, 8 bits a pass, each pass two launches and a scan between them:
//   radix_count:   block b counts the digits of its TILE_ITEMS elements -> counts[digit][b]
//   (the host)     inclusive scan of counts, digit-major (torch.cumsum): block b's digit-d run
//                  ends there, and so begins at that minus counts[digit][b]
//   radix_scatter: block b writes each element at its digit's start + its rank among the
//                  block's elements of that digit, in element order (so the sort is stable)
// Keys are non-negative (the tile keys and the sentinel), read as unsigned.

#define RADIX_BITS 8
#define RADIX (1 << RADIX_BITS)
#define SORT_THREADS 256
#define SORT_WARPS (SORT_THREADS / 32)
#define SORT_ROUNDS 8
#define TILE_ITEMS (SORT_THREADS * SORT_ROUNDS)
#define FULL_MASK 0xffffffffu

template <typename Key>
__device__ __forceinline__ unsigned digit_of(Key key, int shift) {
    return ((unsigned)key >> shift) & (RADIX - 1);
}
template <>
__device__ __forceinline__ unsigned digit_of<short>(short key, int shift) {
    return ((unsigned)(unsigned short)key >> shift) & (RADIX - 1);
}

// counts[digit * blocks + block] = how many of the block's elements have that digit.
template <typename Key>
__device__ void count_digits(long long n, const Key* __restrict__ keys, int shift, int* __restrict__ counts) {
    __shared__ int histogram[RADIX];
    histogram[threadIdx.x] = 0;  // SORT_THREADS == RADIX
    __syncthreads();
    long long base = (long long)blockIdx.x * TILE_ITEMS;
    for (int round = 0; round < SORT_ROUNDS; round++) {
        long long e = base + round * SORT_THREADS + threadIdx.x;
        if (e < n) atomicAdd(&histogram[digit_of(keys[e], shift)], 1);
    }
    __syncthreads();
    counts[(long long)threadIdx.x * gridDim.x + blockIdx.x] = histogram[threadIdx.x];
}

// ends: the inclusive scan of counts (same layout). Element e = base + round * SORT_THREADS
// + thread goes to ends[digit][block] - counts[digit][block] + the number of the block's elements of its digit
// before it: those of earlier rounds (run), of earlier warps in its round (warp_runs), and of
// earlier lanes in its warp (the __match_any_sync peers below it).
template <typename Key>
__device__ void scatter_digits(long long n, const Key* __restrict__ keys, const int* __restrict__ values, int shift,
                               const int* __restrict__ ends, const int* __restrict__ counts,
                               Key* __restrict__ keys_out,
                               int* __restrict__ values_out) {
    __shared__ int run[RADIX];                  // next free slot of each digit for this block
    __shared__ int warp_runs[SORT_WARPS][RADIX];  // a round's count, then first slot, per warp and digit
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    long long slot_of_block = (long long)threadIdx.x * gridDim.x + blockIdx.x;
    run[threadIdx.x] = ends[slot_of_block] - counts[slot_of_block];
    for (int w = 0; w < SORT_WARPS; w++) warp_runs[w][threadIdx.x] = 0;
    __syncthreads();
    long long base = (long long)blockIdx.x * TILE_ITEMS;
    for (int round = 0; round < SORT_ROUNDS; round++) {
        long long e = base + round * SORT_THREADS + threadIdx.x;
        bool active = e < n;
        Key key = active ? keys[e] : (Key)0;
        int value = active ? values[e] : 0;
        // Lanes without an element get a digit of their own (above RADIX): they match no one.
        unsigned digit = active ? digit_of(key, shift) : RADIX + lane;
        unsigned peers = __match_any_sync(FULL_MASK, digit);
        int below = __popc(peers & ((1u << lane) - 1u));
        if (active && below == 0) warp_runs[warp][digit] = __popc(peers);
        __syncthreads();
        // Thread d turns digit d's counts into each warp's first slot, and advances the run.
        int next = run[threadIdx.x];
        for (int w = 0; w < SORT_WARPS; w++) {
            int count = warp_runs[w][threadIdx.x];
            warp_runs[w][threadIdx.x] = next;
            next += count;
        }
        run[threadIdx.x] = next;
        __syncthreads();
        if (active) {
            int slot = warp_runs[warp][digit] + below;
            keys_out[slot] = key;
            values_out[slot] = value;
        }
        __syncthreads();
        for (int w = 0; w < SORT_WARPS; w++) warp_runs[w][threadIdx.x] = 0;
        __syncthreads();
    }
}

extern "C" __global__ void __launch_bounds__(SORT_THREADS) radix_count16(long long n, const short* keys, int shift,
                                                                        int* counts) {
    count_digits<short>(n, keys, shift, counts);
}
extern "C" __global__ void __launch_bounds__(SORT_THREADS) radix_count32(long long n, const int* keys, int shift,
                                                                        int* counts) {
    count_digits<int>(n, keys, shift, counts);
}
extern "C" __global__ void __launch_bounds__(SORT_THREADS) radix_scatter16(
    long long n, const short* keys, const int* values, int shift, const int* ends, const int* counts,
    short* keys_out, int* values_out) {
    scatter_digits<short>(n, keys, values, shift, ends, counts, keys_out, values_out);
}
extern "C" __global__ void __launch_bounds__(SORT_THREADS) radix_scatter32(
    long long n, const int* keys, const int* values, int shift, const int* ends, const int* counts,
    int* keys_out, int* values_out) {
    scatter_digits<int>(n, keys, values, shift, ends, counts, keys_out, values_out);
}
