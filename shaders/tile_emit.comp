#version 430 core
// Compute-shader splatting, step 3 of 4: write each splat's rank into the list of every tile its
// rectangle covers (unordered; step 4 sorts each list).
layout(local_size_x = 256) in;

layout(std430, binding = 11) readonly buffer Rects { uvec4 rects[]; };
layout(std430, binding = 13) readonly buffer SegmentStart { uint segment_start[]; };
layout(std430, binding = 15) buffer TileFill { uint tile_fill[]; };
layout(std430, binding = 16) writeonly buffer Lists { uint lists[]; };

uniform uint count;
uniform uvec2 grid;

void main() {
    uint rank = gl_GlobalInvocationID.x;
    if (rank >= count) return;
    uvec4 rect = rects[rank];
    for (uint y = rect.y; y < rect.w; y++)
        for (uint x = rect.x; x < rect.z; x++) {
            uint tile = y * grid.x + x;
            lists[segment_start[tile] + atomicAdd(tile_fill[tile], 1u)] = rank;
        }
}
