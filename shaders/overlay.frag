#version 430 core
// An overlay (help, menu, messages, the camera path): premultiplied RGBA, blended over the frame
// with glBlendFunc(GL_ONE, GL_ONE_MINUS_SRC_ALPHA).
uniform sampler2D image;
in vec2 uv;
out vec4 colour;

void main() {
    colour = texture(image, uv);
}
