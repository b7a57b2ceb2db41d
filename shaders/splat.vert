#version 430 core
// One instanced quad per Gaussian (glDrawArraysInstanced(GL_TRIANGLE_STRIP, 0, 4, N), empty VAO),
// drawn back to front in the order of GpuDepthSort. The quad is mapped so that image row 0 is
// the top of the framebuffer (GL's last row).
#include "splat_common.glsl"

layout(std430, binding = 3) readonly buffer Order { uvec2 sorted_pairs[]; };  // back to front: (key, ~index)

out vec2 offset;                // pixel offset from the Gaussian's centre
flat out vec3 conic;            // inverse 2D covariance (a, b, c)
flat out vec4 color_opacity;

void main() {
    Splat2D s;
    if (!project_splat(~sorted_pairs[gl_InstanceID].y, s)) {
        gl_Position = vec4(0.0, 0.0, 2.0, 1.0);   // outside the clip volume: no fragments
        return;
    }
    vec2 corner = vec2(gl_VertexID & 1, (gl_VertexID >> 1) & 1) * 2.0 - 1.0;
    offset = corner * s.extent;
    vec2 pixel = s.centre + offset;
    gl_Position = vec4(2.0 * pixel.x / image_size.x - 1.0, 1.0 - 2.0 * pixel.y / image_size.y, 0.0, 1.0);
    conic = s.conic;
    color_opacity = s.rgba;
}
