#version 430 core
// One compare-exchange step of a bitonic sort over `pairs` (length a power of two), ascending by
// (key, value). The host runs it for k = 2, 4, ..., n and j = k/2, ..., 1; steps with j < 512
// are done in shared memory in one dispatch (local_steps), the rest one step per dispatch.
layout(local_size_x = 512) in;

layout(std430, binding = 7) buffer Pairs { uvec2 pairs[]; };

uniform uint k;              // size of the bitonic sequences being merged
uniform uint j;              // first compare distance of this dispatch
uniform bool local_steps;    // run every distance j, j/2, ..., 1 in shared memory

shared uvec2 block[1024];

bool greater(uvec2 a, uvec2 b) { return a.x > b.x || (a.x == b.x && a.y > b.y); }

void global_step() {
    uint i = gl_GlobalInvocationID.x;                 // one thread per pair of elements
    uint low = ((i & ~(j - 1u)) << 1u) | (i & (j - 1u));
    uint high = low | j;
    bool ascending = (low & k) == 0u;
    uvec2 a = pairs[low], b = pairs[high];
    if (greater(a, b) == ascending) { pairs[low] = b; pairs[high] = a; }
}

void shared_steps() {
    // Each workgroup owns 1024 consecutive elements; distances j..1 stay inside that block.
    uint base = gl_WorkGroupID.x * 1024u;
    uint t = gl_LocalInvocationID.x;
    block[t] = pairs[base + t];
    block[t + 512u] = pairs[base + t + 512u];
    barrier();
    for (uint d = j; d > 0u; d >>= 1u) {
        uint low = ((t & ~(d - 1u)) << 1u) | (t & (d - 1u));
        uint high = low | d;
        bool ascending = ((base + low) & k) == 0u;
        uvec2 a = block[low], b = block[high];
        if (greater(a, b) == ascending) { block[low] = b; block[high] = a; }
        barrier();
    }
    pairs[base + t] = block[t];
    pairs[base + t + 512u] = block[t + 512u];
}

void main() {
    if (local_steps) shared_steps(); else global_step();
}
