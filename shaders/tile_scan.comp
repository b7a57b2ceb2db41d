#version 430 core
// Compute-shader splatting, step 2 of 4: each tile's list gets a segment of the power-of-two size
// at or above its count (so step 4 can bitonic-sort it in place); an exclusive scan of those sizes
// gives the segment starts and the total. One workgroup; each thread scans a run of tiles.
layout(local_size_x = 1024) in;

layout(std430, binding = 12) readonly buffer TileCount { uint tile_count[]; };
layout(std430, binding = 13) writeonly buffer SegmentStart { uint segment_start[]; };
layout(std430, binding = 14) writeonly buffer Total { uint total; };

uniform uint tiles;

shared uint partial[1024];

uint capacity(uint n) { return n <= 1u ? n : 1u << uint(findMSB(n - 1u) + 1); }

void main() {
    uint t = gl_LocalInvocationIndex;
    uint run = (tiles + 1023u) / 1024u;
    uint first = t * run, last = min(first + run, tiles);
    uint sum = 0u;
    for (uint k = first; k < last; k++) sum += capacity(tile_count[k]);
    partial[t] = sum;
    barrier();
    for (uint offset = 1u; offset < 1024u; offset <<= 1u) {   // inclusive Hillis-Steele scan
        uint add = t >= offset ? partial[t - offset] : 0u;
        barrier();
        partial[t] += add;
        barrier();
    }
    uint start = partial[t] - sum;
    for (uint k = first; k < last; k++) {
        segment_start[k] = start;
        start += capacity(tile_count[k]);
    }
    if (t == 1023u) total = partial[1023];
}
