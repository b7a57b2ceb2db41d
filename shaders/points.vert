#version 430 core
// Initial Points mode: one GL point per input point (glDrawArrays(GL_POINTS, 0, N), empty VAO).
layout(std430, binding = 6) readonly buffer Points { vec4 points[]; };   // 2 per point: xyz1, rgb1
uniform mat4 view_projection;
uniform float point_size;
out vec3 colour;

void main() {
    gl_Position = view_projection * vec4(points[2 * gl_VertexID].xyz, 1.0);
    gl_PointSize = point_size;
    colour = points[2 * gl_VertexID + 1].rgb;
}
