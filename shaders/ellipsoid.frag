#version 430 core
// Ray / ellipsoid intersection in the ellipsoid's local frame (double precision, nearer root;
// misses are discarded), SIBR's shading max(0.4, dot(-dir, normal)) * colour, and the depth of
// the hit written to gl_FragDepth (window depth of the projected hit).
in vec3 world_pos;
flat in vec3 centre;
flat in vec3 radii;
flat in mat3 rot;
flat in vec3 colour;

uniform mat4 view_projection;
uniform vec3 camera_center;
uniform int pass_index;         // 1: additive pass, alpha 0.05
out vec4 frag_color;

void main() {
    vec3 dir = normalize(world_pos - camera_center);
    dvec3 inv = 1.0lf / dvec3(radii);
    dvec3 o = dvec3(transpose(rot) * (camera_center - centre)) * inv;   // unit-sphere frame
    dvec3 d = dvec3(transpose(rot) * dir) * inv;
    double a = dot(d, d), b = 2.0lf * dot(d, o), c = dot(o, o) - 1.0lf;
    double disc = b * b - 4.0lf * a * c;
    if (disc < 0.0lf) discard;
    double root = sqrt(disc);
    double t = (-b - root) / (2.0lf * a);
    if (t < 0.0lf) t = (-b + root) / (2.0lf * a);   // camera inside the ellipsoid
    if (t < 0.0lf) discard;
    vec3 hit = camera_center + float(t) * dir;
    vec3 local = transpose(rot) * (hit - centre);
    vec3 normal = normalize(rot * (local / radii));
    vec3 shaded = max(0.4, dot(-dir, normal)) * colour;
    vec4 clip = view_projection * vec4(hit, 1.0);
    gl_FragDepth = 0.5 * (clip.z / clip.w) + 0.5;
    frag_color = vec4(shaded, pass_index == 0 ? 1.0 : 0.05);
}
