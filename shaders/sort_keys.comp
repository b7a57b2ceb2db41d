#version 430 core
// Sort keys for the back-to-front order (viewer/gl_splats.py, GpuDepthSort). One entry per splat,
// padded to a power of two: (key, value) = (~sortable(view z), ~index), so that an *ascending*
// sort gives descending depth and, among equal depths, descending index: the order of the CPU
// path (np.argsort(z, stable)[::-1]). Padding entries are (0xFFFFFFFF, 0xFFFFFFFF) and sort last.
layout(local_size_x = 256) in;

layout(std430, binding = 0) readonly buffer Means { vec4 mean_opacity[]; };
layout(std430, binding = 7) writeonly buffer Pairs { uvec2 pairs[]; };

uniform vec4 depth_row;   // third row of world_to_camera: z = dot(depth_row.xyz, p) + depth_row.w
uniform uint count;       // splats; the dispatch covers the padded length

// IEEE-754 bits made monotonic as unsigned integers (negative floats reversed).
uint sortable(float value) {
    uint bits = floatBitsToUint(value);
    return (bits & 0x80000000u) != 0u ? ~bits : bits | 0x80000000u;
}

void main() {
    uint i = gl_GlobalInvocationID.x;
    if (i >= uint(pairs.length())) return;
    if (i >= count) { pairs[i] = uvec2(0xFFFFFFFFu); return; }
    float z = dot(depth_row.xyz, mean_opacity[i].xyz) + depth_row.w;
    pairs[i] = uvec2(~sortable(z), ~i);
}
