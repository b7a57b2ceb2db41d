#version 430 core
// SIBR's Ellipsoid render mode (GaussianSurfaceRenderer / gaussian_surface.vert): one instanced
// 36-vertex unit cube (+-1) per Gaussian, scaled to its 2-sigma ellipsoid:
// vertex = R * (2 * scale (*) corner) + centre (no scaling modifier). Instances that do not take
// part in the current pass (pass 0: opacity >= 0.2, pass 1: opacity < 0.2) collapse to 0.
layout(std430, binding = 0) readonly buffer Means { vec4 mean_opacity[]; };  // shared with splats
layout(std430, binding = 2) readonly buffer Shs { uint sh[]; };              // 48 halves per Gaussian, 2 per uint
layout(std430, binding = 4) readonly buffer Rots { vec4 rotation[]; };       // normalised (w, x, y, z)
layout(std430, binding = 5) readonly buffer Scales { vec4 scale[]; };        // activated xyz, pad

uniform mat4 view_projection;   // GL clip from world (our Camera's axes, principal point)
uniform int pass_index;         // 0 opaque, 1 transparent

out vec3 world_pos;
flat out vec3 centre;
flat out vec3 radii;            // 2 * scale
flat out mat3 rot;              // local -> world
flat out vec3 colour;

const float OPACITY_SPLIT = 0.2;

mat3 quaternion_matrix(vec4 q) {
    float w = q.x, x = q.y, y = q.z, z = q.w;
    return mat3(1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y + w * z), 2.0 * (x * z - w * y),   // column 0
                2.0 * (x * y - w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z + w * x),   // column 1
                2.0 * (x * z + w * y), 2.0 * (y * z - w * x), 1.0 - 2.0 * (x * x + y * y)); // column 2
}

const ivec3 CUBE[8] = ivec3[](ivec3(-1, -1, -1), ivec3(1, -1, -1), ivec3(1, 1, -1), ivec3(-1, 1, -1),
                              ivec3(-1, -1, 1), ivec3(1, -1, 1), ivec3(1, 1, 1), ivec3(-1, 1, 1));
const int FACES[36] = int[](0, 1, 2, 0, 2, 3,   4, 6, 5, 4, 7, 6,   0, 4, 5, 0, 5, 1,
                            3, 2, 6, 3, 6, 7,   0, 3, 7, 0, 7, 4,   1, 5, 6, 1, 6, 2);

void main() {
    uint id = uint(gl_InstanceID);
    vec4 mo = mean_opacity[id];
    bool opaque = mo.w >= OPACITY_SPLIT;
    if (opaque != (pass_index == 0)) { gl_Position = vec4(0.0); return; }
    centre = mo.xyz;
    radii = 2.0 * scale[id].xyz;
    rot = quaternion_matrix(rotation[id]);
    vec2 dc_rg = unpackHalf2x16(sh[id * 24u]), dc_b = unpackHalf2x16(sh[id * 24u + 1u]);
    colour = 0.5 + 0.2 * vec3(dc_rg, dc_b.x);
    world_pos = rot * (radii * vec3(CUBE[FACES[gl_VertexID]])) + centre;
    gl_Position = view_projection * vec4(world_pos, 1.0);
}
