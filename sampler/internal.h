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

// Functions the sampler's files share: hidden, not exported by libvicmae-video.so.
#pragma GCC visibility push(hidden)
// vm_crop_resize_rgb with the SIMD loops on (simd = 1, where the target has them) or off; both give
// the same bytes (tests/test_sampler.c checks).
int vm_crop_resize_impl(const uint8_t *src, int sw, int sh, size_t sstride, int x, int y, int w, int h, uint8_t *dst,
                        int dw, int dh, int flip, int simd, vm_scratch *scratch, vm_error *err);
#pragma GCC visibility pop
