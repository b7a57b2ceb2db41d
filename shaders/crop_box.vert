#version 430 core
// The edit panel's crop box: its 12 edges as GL_LINES (glDrawArrays(GL_LINES, 0, 24), empty VAO).
// Corner i has local signs from its bits (x: bit 0, y: bit 1, z: bit 2): edges join corners one bit apart.
uniform mat4 view_projection;
uniform vec3 corners[8];
const int EDGES[24] = int[24](0, 1, 2, 3, 4, 5, 6, 7,    // along x
                              0, 2, 1, 3, 4, 6, 5, 7,    // along y
                              0, 4, 1, 5, 2, 6, 3, 7);   // along z

void main() {
    gl_Position = view_projection * vec4(corners[EDGES[gl_VertexID]], 1.0);
}
