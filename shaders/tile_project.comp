#version 430 core
// Compute-shader splatting, step 1 of 4 (viewer/gl_tiles.py): project every splat, in front-to-back
// rank f (from GpuDepthSort's back-to-front order), and count the 16x16 tiles its footprint
// touches, with the reference rasterizer's tile rectangle (getRect).
layout(local_size_x = 256) in;
#include "splat_common.glsl"

layout(std430, binding = 3) readonly buffer Order { uvec2 sorted_pairs[]; };   // back to front
layout(std430, binding = 8) writeonly buffer Geometry { vec4 geometry[]; };    // centre xy, conic a b (by rank)
layout(std430, binding = 9) writeonly buffer Colour { vec4 colour[]; };        // rgb, opacity
layout(std430, binding = 10) writeonly buffer ConicC { float conic_c[]; };
layout(std430, binding = 11) writeonly buffer Rects { uvec4 rects[]; };        // tile x0 y0 x1 y1 (exclusive)
layout(std430, binding = 12) buffer TileCount { uint tile_count[]; };

uniform uint count;
uniform uvec2 grid;       // tiles across, down

const float TILE = 16.0;

void main() {
    uint i = gl_GlobalInvocationID.x;
    if (i >= count) return;
    uint rank = count - 1u - i;
    Splat2D s;
    uvec4 rect = uvec4(0u);
    if (project_splat(~sorted_pairs[i].y, s)) {
        vec2 p = s.centre - 0.5;   // the reference's pixel coordinates (pixel centres at integers)
        // int() truncates toward zero, as the reference's C casts do.
        ivec2 lo = clamp(ivec2((p - s.extent) / TILE), ivec2(0), ivec2(grid));
        ivec2 hi = clamp(ivec2((p + s.extent + TILE - 1.0) / TILE), ivec2(0), ivec2(grid));
        if (all(lessThan(lo, hi))) {
            rect = uvec4(lo, hi);
            for (uint y = rect.y; y < rect.w; y++)
                for (uint x = rect.x; x < rect.z; x++)
                    atomicAdd(tile_count[y * grid.x + x], 1u);
        }
    }
    geometry[rank] = vec4(s.centre, s.conic.xy);
    colour[rank] = s.rgba;
    conic_c[rank] = s.conic.z;
    rects[rank] = rect;
}
