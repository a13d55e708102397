// tests/test_proto_util.h — building batch messages in the proto tests, the fuzz target's replay
// and the seed corpus.  Header-only (static functions), so each test binary takes what it uses.
#pragma once
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include "proto/proto.h"

// A batch in memory: header, B sample records, B*V view records, pixels (B, V, H, W, 3).
typedef struct {
    vm_batch_header h;
    vm_sample_meta *samples;
    vm_view_meta *views;
    uint8_t *pixels;
    size_t raw;
} tp_batch;

static inline uint32_t tp_hash32(uint64_t x) {  // splitmix-style mix, deterministic content
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return (uint32_t)(x ^ (x >> 31));
}

// kind 0: smooth gradients with mild noise (compresses), 1: uniform noise (stored blocks),
// 2: alternating 4 KiB stretches of noise and flat colour (stored and compressed 4 KiB blocks).
static inline void tp_batch_init(tp_batch *t, uint32_t B, uint32_t V, uint32_t H, uint32_t W, uint32_t codec, int kind,
                                 uint64_t seed) {
    memset(t, 0, sizeof *t);
    t->h.batch = B, t->h.views = V, t->h.height = H, t->h.width = W, t->h.codec = codec;
    t->h.epoch = 3, t->h.producer_id = 7, t->h.work_unit = 0x123456789abcull + seed, t->h.sequence = 42 + seed;
    t->h.sample_offset = 5, t->h.flags = VM_BATCH_F_UNIT_END;
    t->raw = (size_t)B * V * H * W * 3;
    t->samples = calloc(B, sizeof *t->samples);
    t->views = calloc((size_t)B * V, sizeof *t->views);
    t->pixels = malloc(t->raw ? t->raw : 1);
    for (uint32_t b = 0; b < B; b++) {
        t->samples[b] = (vm_sample_meta){.video_id = 1000 + b + seed, .src_width = 640, .src_height = 480};
        for (uint32_t j = 0; j < V; j++)
            t->views[b * V + j] = (vm_view_meta){.frame = (int64_t)(b * 10 + j * 3), .pts_ns = -5 + (int64_t)b * 33366666,
                                                 .crop_x = (int32_t)j, .crop_y = (int32_t)b, .crop_w = 200 + (int32_t)j,
                                                 .crop_h = 150, .flip = (uint8_t)((b + j) & 1)};
    }
    for (size_t i = 0; i < t->raw; i++) {
        size_t px = i / 3, x = px % W, y = (px / W) % H;
        uint32_t r = tp_hash32(seed * 0x100000001ull + i);
        uint8_t v;
        if (kind == 0) v = (uint8_t)(x * 2 + y + (i % 3) * 40 + ((r & 63) == 0 ? r >> 8 : 0));
        else if (kind == 1) v = (uint8_t)r;
        else v = (i / 4096) % 2 == 0 ? (uint8_t)r : (uint8_t)(i % 3);
        t->pixels[i] = v;
    }
}

static inline void tp_batch_free(tp_batch *t) {
    free(t->samples);
    free(t->views);
    free(t->pixels);
}

// Encode into a malloc'ed buffer of exactly the message's size (so ASan sees any overread).
static inline uint8_t *tp_encode(const tp_batch *t, size_t *len, vm_error *err) {
    size_t cap = vm_batch_max_size(&t->h);
    uint8_t *tmp = malloc(cap ? cap : 1);
    if (!tmp) return NULL;
    if (vm_batch_encode(&t->h, t->samples, t->views, t->pixels, tmp, cap, len, err) != 0) {
        free(tmp);
        return NULL;
    }
    uint8_t *out = malloc(*len);
    memcpy(out, tmp, *len);
    free(tmp);
    return out;
}

// Recompute the message checksum after a test edits fields (SPEC.md: XXH3-64 of msg[128 .. len)
// followed by msg[0 .. 120)); lets hostile-header tests get past the checksum.
static inline void tp_reseal(uint8_t *msg, size_t len) {
    XXH3_state_t *st = XXH3_createState();
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, msg + 128, len - 128);
    XXH3_64bits_update(st, msg, 120);
    uint64_t s = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    for (int i = 0; i < 8; i++) msg[120 + i] = (uint8_t)(s >> (8 * i));
}

static inline void tp_put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static inline void tp_put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static inline void tp_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
