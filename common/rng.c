#include "common/rng.h"
#include <math.h>

void vm_philox4x32(uint64_t key, uint64_t counter_hi, uint64_t counter_lo, uint32_t out[4]) {
    const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
    uint32_t c0 = (uint32_t)counter_lo, c1 = (uint32_t)(counter_lo >> 32);
    uint32_t c2 = (uint32_t)counter_hi, c3 = (uint32_t)(counter_hi >> 32);
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)M0 * c0, p1 = (uint64_t)M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += W0; k1 += W1;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

uint64_t vm_rng_stream(uint32_t domain, uint64_t a, uint64_t b, uint64_t c) {
    uint64_t h = splitmix64(domain);
    h = splitmix64(h ^ a);
    h = splitmix64(h ^ b);
    return splitmix64(h ^ c);
}

void vm_rng_init(vm_rng *r, uint64_t seed, uint64_t stream) {
    r->seed = seed;
    r->stream = stream;
    r->index = 0;
    r->used = 4;
}

uint32_t vm_rng_u32(vm_rng *r) {
    if (r->used == 4) {
        vm_philox4x32(r->seed, r->stream, r->index++, r->buf);
        r->used = 0;
    }
    return r->buf[r->used++];
}

uint64_t vm_rng_u64(vm_rng *r) {
    uint64_t hi = vm_rng_u32(r);
    return (hi << 32) | vm_rng_u32(r);
}

double vm_rng_uniform(vm_rng *r) { return (double)(vm_rng_u64(r) >> 11) * 0x1.0p-53; }
float vm_rng_uniformf(vm_rng *r) { return (float)(vm_rng_u32(r) >> 8) * 0x1.0p-24f; }
double vm_rng_range(vm_rng *r, double lo, double hi) { return lo + (hi - lo) * vm_rng_uniform(r); }

int64_t vm_rng_int(vm_rng *r, int64_t lo, int64_t hi) {
    if (hi <= lo) return lo;
    uint64_t span = (uint64_t)hi - (uint64_t)lo + 1;  // (hi - lo in int64_t could overflow)
    if (span == 0) return (int64_t)vm_rng_u64(r);  // full 64-bit range
    uint64_t limit = UINT64_MAX - UINT64_MAX % span;  // reject the biased tail
    uint64_t x;
    do x = vm_rng_u64(r); while (x >= limit);
    return (int64_t)((uint64_t)lo + x % span);  // wraps into [lo, hi] without signed overflow
}

double vm_rng_normal(vm_rng *r) {
    double u1 = vm_rng_uniform(r), u2 = vm_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}
