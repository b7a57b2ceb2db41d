#version 430 core
// Shows a rendered image (RGB in [0, 1], any size) stretched over the window.
uniform sampler2D image;
in vec2 uv;
out vec4 colour;

void main() {
    colour = vec4(texture(image, uv).rgb, 1.0);
}
