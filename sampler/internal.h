// sampler/internal.h — the sampler's state, shared by its .c files (not part of the contract).
#pragma once
#include "sampler/sampler.h"

// Colour augmentation probabilities and strengths of one view slot (BYOL's recipe differs
// between view 0 and view 1; other recipes use the same for both).
typedef struct {
    double jitter_p, brightness, contrast, saturation, hue;
    double grayscale_p, blur_p, solarize_p;
} vm_color_params;

struct vm_sampler {
    vm_config cfg;           // a copy: the sampler outlives the caller's config
    int policy, views, size;
    uint64_t seed;
    vm_color_params color[2]; // per view slot (view index % 2)
    int blur_ksize;
};
