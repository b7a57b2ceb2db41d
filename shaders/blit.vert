#version 430 core
// Fullscreen triangle without vertex buffers: gl_VertexID 0, 1, 2 cover the viewport.
// uv.y runs top-down when flip_y is set, because renders are stored with row 0 at the top.
uniform bool flip_y;
out vec2 uv;

void main() {
    vec2 corner = vec2(float((gl_VertexID << 1) & 2), float(gl_VertexID & 2));
    uv = flip_y ? vec2(corner.x, 1.0 - corner.y) : corner;
    gl_Position = vec4(corner * 2.0 - 1.0, 0.0, 1.0);
}
