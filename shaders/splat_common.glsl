// Shared by splat.vert (GL quads) and tile_project.comp (compute tiles); included with
// `#include "splat_common.glsl"` (expanded by shaders.shader_source). Numerics follow
// rasterizer/reference.py: EWA projection with the frustum clamp, +0.3 px^2 dilation, 3-sigma
// extent, SH colour max(0, SH + 0.5) from the camera-to-mean direction. Pixel coordinates are
// COLMAP's (image corner at 0, pixel centres at +0.5, y down).

layout(std430, binding = 0) readonly buffer Means { vec4 mean_opacity[]; };  // xyz, opacity
layout(std430, binding = 1) readonly buffer Covs { float cov3d[]; };         // 6 per splat: xx xy xz yy yz zz
layout(std430, binding = 2) readonly buffer Shs { uint sh[]; };              // 48 halves per splat: [16 coeffs][rgb], 2 per uint

uniform mat4 world_to_camera;   // column-vector convention p_cam = W p_world (uploaded transposed)
uniform vec3 camera_center;     // world position of the camera
uniform vec4 intrinsics;        // fx, fy, cx, cy in pixels
uniform vec2 image_size;        // width, height in pixels
uniform int sh_degree;          // 0..3
uniform float scale2;           // scaling_modifier^2 (multiplies the 3D covariance)
uniform bool antialiasing;      // Mip-Splatting opacity compensation, as the reference
uniform bool fast_culling;      // SIBR's per-axis 3-sigma extents (tightened by opacity) instead of the square
uniform bool inverse_depth;     // depth mode (viewer/gl_modes.py): colour = (1/z, 0, 0) instead of SH

const float NEAR_PLANE = 0.2;
const float DILATION = 0.3;
const float FRUSTUM_GUARD = 0.3;
const float SH_C0 = 0.28209479177387814;
const float SH_C1 = 0.4886025119029199;
const float SH_C2[5] = float[](1.0925484305920792, -1.0925484305920792, 0.31539156525252005,
                               -1.0925484305920792, 0.5462742152960396);
const float SH_C3[7] = float[](-0.5900435899266435, 2.890611442640554, -0.4570457994644658,
                               0.3731763325901154, -0.4570457994644658, 1.445305721320277,
                               -0.5900435899266435);

float sh_half(uint i) { vec2 pair = unpackHalf2x16(sh[i >> 1u]); return (i & 1u) == 0u ? pair.x : pair.y; }
vec3 coeff(uint base, int k) {
    uint i = base + 3u * uint(k);
    return vec3(sh_half(i), sh_half(i + 1u), sh_half(i + 2u));
}

vec3 sh_color(uint splat, vec3 dir) {
    uint base = splat * 48u;
    vec3 c = SH_C0 * coeff(base, 0);
    float x = dir.x, y = dir.y, z = dir.z;
    if (sh_degree >= 1)
        c += -SH_C1 * y * coeff(base, 1) + SH_C1 * z * coeff(base, 2) - SH_C1 * x * coeff(base, 3);
    if (sh_degree >= 2) {
        float xx = x * x, yy = y * y, zz = z * z;
        c += SH_C2[0] * x * y * coeff(base, 4) + SH_C2[1] * y * z * coeff(base, 5)
           + SH_C2[2] * (2.0 * zz - xx - yy) * coeff(base, 6) + SH_C2[3] * x * z * coeff(base, 7)
           + SH_C2[4] * (xx - yy) * coeff(base, 8);
        if (sh_degree >= 3)
            c += SH_C3[0] * y * (3.0 * xx - yy) * coeff(base, 9) + SH_C3[1] * x * y * z * coeff(base, 10)
               + SH_C3[2] * y * (4.0 * zz - xx - yy) * coeff(base, 11)
               + SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy) * coeff(base, 12)
               + SH_C3[4] * x * (4.0 * zz - xx - yy) * coeff(base, 13)
               + SH_C3[5] * z * (xx - yy) * coeff(base, 14) + SH_C3[6] * x * (xx - 3.0 * yy) * coeff(base, 15);
    }
    return max(c + 0.5, 0.0);
}

struct Splat2D {
    vec2 centre;      // projected mean, COLMAP continuous pixels
    vec3 conic;       // inverse 2D covariance (a, b, c): power = -0.5 (a dx^2 + c dy^2) - b dx dy
    vec4 rgba;        // colour (or (1/z, 0, 0) in depth mode) and opacity
    vec2 extent;      // half size in pixels of the footprint: the 3-sigma square, or with
                      // fast culling SIBR's per-axis extents tightened by opacity
};

// False when the splat is culled (behind the near plane, degenerate, or invisible).
bool project_splat(uint splat, out Splat2D s) {
    vec4 mo = mean_opacity[splat];
    vec3 view = (world_to_camera * vec4(mo.xyz, 1.0)).xyz;
    float z = view.z;
    if (z <= NEAR_PLANE) return false;
    float fx = intrinsics.x, fy = intrinsics.y, cx = intrinsics.z, cy = intrinsics.w;

    // EWA Jacobian with the reference's clamp, bounds measured from the principal point.
    vec2 guard = FRUSTUM_GUARD * image_size / (2.0 * vec2(fx, fy));
    float tx = clamp(view.x / z, -(cx / fx + guard.x), (image_size.x - cx) / fx + guard.x) * z;
    float ty = clamp(view.y / z, -(cy / fy + guard.y), (image_size.y - cy) / fy + guard.y) * z;
    mat3 jacobian = mat3(fx / z, 0.0, 0.0,                       // columns
                         0.0, fy / z, 0.0,
                         -fx * tx / (z * z), -fy * ty / (z * z), 0.0);
    uint b6 = splat * 6u;
    mat3 sigma = scale2 * mat3(cov3d[b6], cov3d[b6 + 1], cov3d[b6 + 2],
                               cov3d[b6 + 1], cov3d[b6 + 3], cov3d[b6 + 4],
                               cov3d[b6 + 2], cov3d[b6 + 4], cov3d[b6 + 5]);
    mat3 t = jacobian * mat3(world_to_camera);
    mat3 cov = t * sigma * transpose(t);
    float a = cov[0][0] + DILATION, b = cov[0][1], c = cov[1][1] + DILATION;
    float det = a * c - b * b;
    if (det == 0.0) return false;
    float opacity = mo.w;
    if (antialiasing)
        opacity *= sqrt(max(((a - DILATION) * (c - DILATION) - b * b) / det, 2.5e-5));

    float mid = 0.5 * (a + c);
    float radius = ceil(3.0 * sqrt(mid + sqrt(max(mid * mid - det, 0.1))));
    s.extent = vec2(radius);
    if (fast_culling) {
        // Beyond power = ln(1 / (255 opacity)) every fragment is discarded (alpha < 1/255), so
        // that contour's per-axis extent is exact; SIBR's 3-sigma per-axis cut bounds it above.
        if (opacity < 1.0 / 255.0) return false;
        float t2 = min(9.0, 2.0 * log(255.0 * opacity));
        s.extent = min(s.extent, ceil(sqrt(t2 * vec2(a, c))));
    }
    s.centre = vec2(fx * view.x / z + cx, fy * view.y / z + cy);
    s.conic = vec3(c, -b, a) / det;
    vec3 rgb = inverse_depth ? vec3(1.0 / z, 0.0, 0.0) : sh_color(splat, normalize(mo.xyz - camera_center));
    s.rgba = vec4(rgb, opacity);
    return true;
}
