#version 430 core
// Compute-shader splatting, step 4 of 4: one workgroup per 16x16 tile sorts the tile's list of
// ranks (bitonic, in place in its power-of-two segment, padded with 0xFFFFFFFF), then blends
// front to back as the reference rasterizer: alpha = min(0.99, opacity e^power), skipped below
// 1/255, stop once T (1 - alpha) < 1e-4; colour C + T background. Row 0 of the output = top.
layout(local_size_x = 16, local_size_y = 16) in;

layout(std430, binding = 8) readonly buffer Geometry { vec4 geometry[]; };
layout(std430, binding = 9) readonly buffer Colour { vec4 colour[]; };
layout(std430, binding = 10) readonly buffer ConicC { float conic_c[]; };
layout(std430, binding = 12) readonly buffer TileCount { uint tile_count[]; };
layout(std430, binding = 13) readonly buffer SegmentStart { uint segment_start[]; };
layout(std430, binding = 16) coherent buffer Lists { uint lists[]; };
layout(rgba8, binding = 0) writeonly uniform image2D image;

uniform uvec2 grid;
uniform vec2 image_size;
uniform vec3 background;

shared vec4 batch_geometry[256];
shared vec4 batch_colour[256];
shared float batch_conic_c[256];
shared uint live;

uint capacity(uint n) { return n <= 1u ? n : 1u << uint(findMSB(n - 1u) + 1); }

void sort_segment(uint start, uint n, uint t) {
    uint size = capacity(n);
    for (uint k = n + t; k < size; k += 256u) lists[start + k] = 0xFFFFFFFFu;
    memoryBarrierBuffer();
    barrier();
    for (uint k = 2u; k <= size; k <<= 1u)
        for (uint j = k >> 1u; j > 0u; j >>= 1u) {
            for (uint i = t; i < size / 2u; i += 256u) {
                uint low = ((i & ~(j - 1u)) << 1u) | (i & (j - 1u));
                uint high = low | j;
                uint a = lists[start + low], b = lists[start + high];
                if ((a > b) == ((low & k) == 0u)) { lists[start + low] = b; lists[start + high] = a; }
            }
            memoryBarrierBuffer();
            barrier();
        }
}

void main() {
    uint tile = gl_WorkGroupID.y * grid.x + gl_WorkGroupID.x;
    uint t = gl_LocalInvocationIndex;
    uint start = segment_start[tile], n = tile_count[tile];
    sort_segment(start, n, t);

    ivec2 pixel = ivec2(gl_WorkGroupID.xy * 16u + gl_LocalInvocationID.xy);
    bool inside = pixel.x < int(image_size.x) && pixel.y < int(image_size.y);
    vec2 centre = vec2(pixel) + 0.5;   // COLMAP pixel centre
    float transmittance = 1.0;
    vec3 accumulated = vec3(0.0);
    bool done = !inside;
    for (uint base = 0u; base < n; base += 256u) {
        barrier();                     // the previous batch is no longer read
        if (t == 0u) live = 0u;
        barrier();
        if (!done) atomicAdd(live, 1u);
        if (base + t < n) {
            uint rank = lists[start + base + t];
            batch_geometry[t] = geometry[rank];
            batch_colour[t] = colour[rank];
            batch_conic_c[t] = conic_c[rank];
        }
        barrier();
        if (live == 0u) break;         // every pixel of the tile is saturated
        uint batch = min(256u, n - base);
        for (uint m = 0u; m < batch && !done; m++) {
            vec4 g = batch_geometry[m];
            vec2 d = g.xy - centre;
            float power = -0.5 * (g.z * d.x * d.x + batch_conic_c[m] * d.y * d.y) - g.w * d.x * d.y;
            if (power > 0.0) continue;
            float alpha = min(0.99, batch_colour[m].w * exp(power));
            if (alpha < 1.0 / 255.0) continue;
            float next = transmittance * (1.0 - alpha);
            if (next < 0.0001) { done = true; break; }
            accumulated += batch_colour[m].rgb * alpha * transmittance;
            transmittance = next;
        }
    }
    if (inside) imageStore(image, pixel, vec4(accumulated + transmittance * background, 1.0));
}
