#version 430 core
// Depth mode, second pass (with blit.vert): the splats' accumulated (inverse depth, alpha) from the
// first pass (splat.vert with inverse_depth set + splat.frag), normalised by the visible inverse
// depth range and colour-mapped with a turbo-like polynomial; background where alpha is ~0.
uniform sampler2D accumulated;  // r: sum of w_i / z_i (as rasterizer.render's inv_depth), a: alpha
uniform vec2 inv_depth_range;   // (min, max) over the visible Gaussians
uniform vec3 background;
in vec2 uv;
out vec4 colour;

vec3 turbo(float t) {           // Google's polynomial fit of the Turbo colour map
    const vec4 kr = vec4(0.13572138, 4.61539260, -42.66032258, 132.13108234);
    const vec4 kg = vec4(0.09140261, 2.19418839, 4.84296658, -14.18503333);
    const vec4 kb = vec4(0.10667330, 12.64194608, -60.58204836, 110.36276771);
    const vec2 kr2 = vec2(-152.94239396, 59.28637943);
    const vec2 kg2 = vec2(4.27729857, 2.82956604);
    const vec2 kb2 = vec2(-89.90310912, 27.34824973);
    t = clamp(t, 0.0, 1.0);
    vec4 v4 = vec4(1.0, t, t * t, t * t * t);
    vec2 v2 = v4.zw * v4.z;
    return clamp(vec3(dot(v4, kr) + dot(v2, kr2), dot(v4, kg) + dot(v2, kg2),
                      dot(v4, kb) + dot(v2, kb2)), 0.0, 1.0);
}

void main() {
    vec4 acc = texelFetch(accumulated, ivec2(gl_FragCoord.xy), 0);
    if (acc.a < 1.0 / 255.0) { colour = vec4(background, 1.0); return; }
    float mean_inv = acc.r / acc.a;     // alpha-normalised: a weighted mean of 1/z
    float span = max(inv_depth_range.y - inv_depth_range.x, 1e-12);
    float t = clamp((mean_inv - inv_depth_range.x) / span, 0.0, 1.0);
    vec3 mapped = turbo(0.1 + 0.85 * t);   // far = blue, near = red (the near-black ends left out)
    colour = vec4(mix(background, mapped, min(acc.a, 1.0)), 1.0);
}
