#version 430 core
// Gaussian falloff of one splat, premultiplied for back-to-front blending with
// glBlendFunc(GL_ONE, GL_ONE_MINUS_SRC_ALPHA) over a framebuffer cleared to the background.
in vec2 offset;                 // fragment centre minus Gaussian centre, in pixels
flat in vec3 conic;
flat in vec4 color_opacity;
out vec4 frag_color;

void main() {
    float power = -0.5 * (conic.x * offset.x * offset.x + conic.z * offset.y * offset.y)
                  - conic.y * offset.x * offset.y;
    if (power > 0.0) discard;
    float alpha = min(0.99, color_opacity.w * exp(power));
    if (alpha < 1.0 / 255.0) discard;
    frag_color = vec4(color_opacity.rgb * alpha, alpha);
}
