// common/rng.h — counter-based random numbers (Philox4x32-10, Salmon et al. 2011).
//
// Every random choice in vicmae is a pure function of (seed, stream, index): a stream names what
// is being drawn (e.g. vm_rng_stream(VM_RNG_SAMPLER, epoch, video_id, draw)), so results do not
// depend on how many workers or threads there are or in which order they run.
#pragma once
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Domains keep unrelated draws apart even when their ids coincide.
enum { VM_RNG_SAMPLER = 1, VM_RNG_AUGMENT = 2, VM_RNG_MASK = 3, VM_RNG_INIT = 4, VM_RNG_DATA_ORDER = 5,
       VM_RNG_SYNTH = 6, VM_RNG_EVAL = 7 };

typedef struct vm_rng {
    uint64_t seed;     // key
    uint64_t stream;   // counter high word
    uint64_t index;    // counter low word: next block
    uint32_t buf[4];
    int used;          // words of buf consumed (4 = empty)
} vm_rng;

// One Philox4x32-10 block: 4 random words for (key, counter).
void vm_philox4x32(uint64_t key, uint64_t counter_hi, uint64_t counter_lo, uint32_t out[4]);
// A 64-bit stream id from a domain and up to three ids (splitmix64 mixing).
uint64_t vm_rng_stream(uint32_t domain, uint64_t a, uint64_t b, uint64_t c);

void vm_rng_init(vm_rng *r, uint64_t seed, uint64_t stream);
uint32_t vm_rng_u32(vm_rng *r);
uint64_t vm_rng_u64(vm_rng *r);
double vm_rng_uniform(vm_rng *r);                  // [0, 1), 53 bits
float vm_rng_uniformf(vm_rng *r);                  // [0, 1), 24 bits
double vm_rng_range(vm_rng *r, double lo, double hi);  // [lo, hi)
int64_t vm_rng_int(vm_rng *r, int64_t lo, int64_t hi); // uniform integer in [lo, hi], unbiased
double vm_rng_normal(vm_rng *r);                   // standard normal (Box-Muller)

#ifdef __cplusplus
}
#endif
