// tests/fuzz/fuzz_proto.c — libFuzzer target for the batch wire format (`make fuzz-proto`).
//
// Each input goes through the receiver twice: as given (which the message checksum rejects almost
// always), and with the checksum recomputed, so that the fuzzer explores the structural validation
// behind it (sizes, limits, LZ4 blocks, metadata).  Properties, beyond "no crash, no out-of-bounds
// access" (ASan): a rejection always carries a reason, and whatever parses and decodes re-encodes
// into a message that decodes to the same pixels and metadata.
//
// tests/test_proto_fuzz.c includes this file to replay tests/corpus/proto/ in every `make test`,
// with FUZZ_FAIL reporting through the test harness instead of abort().
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "proto/proto.h"
#include "tests/test_proto_util.h"

#ifndef FUZZ_FAIL
#define FUZZ_FAIL(...) (fprintf(stderr, "fuzz_proto: " __VA_ARGS__), fputc('\n', stderr), abort())
#endif

// Keep memory per input bounded (the parser allows raw <= ~256 x message size).
#define FUZZ_MAX_RAW (64u << 20)

static void fuzz_reencode(const vm_batch_view *v, const uint8_t *pixels) {
    const vm_batch_header *h = &v->h;
    vm_batch_header e = {.batch = h->batch, .views = h->views, .height = h->height, .width = h->width,
                         .codec = h->codec, .block_size = h->block_size, .flags = h->flags, .epoch = h->epoch,
                         .producer_id = h->producer_id, .work_unit = h->work_unit, .sequence = h->sequence,
                         .sample_offset = h->sample_offset};
    vm_sample_meta *s = calloc(h->batch, sizeof *s);
    vm_view_meta *w = calloc((size_t)h->batch * h->views, sizeof *w);
    for (uint32_t b = 0; b < h->batch; b++) {
        vm_batch_get_sample(v, b, &s[b]);
        for (uint32_t j = 0; j < h->views; j++) vm_batch_get_view(v, b, j, &w[(size_t)b * h->views + j]);
    }
    size_t cap = vm_batch_max_size(&e), len = 0;
    if (!cap) FUZZ_FAIL("a parsed header has no valid max size");
    uint8_t *out = malloc(cap);
    vm_error err = {0};
    if (vm_batch_encode(&e, s, w, pixels, out, cap, &len, &err) != 0) FUZZ_FAIL("re-encode failed: %s", err.msg);
    vm_batch_view v2;
    if (vm_batch_parse(out, len, &v2, &err) != 0) FUZZ_FAIL("re-encoded message rejected: %s", err.msg);
    uint8_t *px = malloc(h->raw_size);
    if (vm_batch_decode_pixels(&v2, px, h->raw_size, &err) != 0) FUZZ_FAIL("re-encoded pixels rejected: %s", err.msg);
    if (memcmp(px, pixels, h->raw_size) != 0) FUZZ_FAIL("re-encoded pixels differ");
    for (uint32_t b = 0; b < h->batch; b++) {
        vm_sample_meta s2;
        vm_batch_get_sample(&v2, b, &s2);
        if (s2.video_id != s[b].video_id || s2.src_width != s[b].src_width || s2.src_height != s[b].src_height)
            FUZZ_FAIL("re-encoded sample %u differs", b);
        for (uint32_t j = 0; j < h->views; j++) {
            vm_view_meta a = w[(size_t)b * h->views + j], c;
            vm_batch_get_view(&v2, b, j, &c);
            if (a.frame != c.frame || a.pts_ns != c.pts_ns || a.crop_x != c.crop_x || a.crop_y != c.crop_y ||
                a.crop_w != c.crop_w || a.crop_h != c.crop_h || a.flip != c.flip)
                FUZZ_FAIL("re-encoded view %u/%u differs", b, j);
        }
    }
    free(px);
    free(out);
    free(s);
    free(w);
}

// Parse + decode one message (in a buffer of exactly len bytes); returns 0 when it was accepted.
static int fuzz_receive(const uint8_t *m, size_t len) {
    vm_batch_view v;
    vm_error err = {0};
    int rc = vm_batch_parse(m, len, &v, &err);
    if (rc == 0 && v.h.raw_size <= FUZZ_MAX_RAW) {
        uint8_t *px = malloc(v.h.raw_size);
        // A one-byte-short destination is always refused, before anything is written.
        if (v.h.raw_size && vm_batch_decode_pixels(&v, px, v.h.raw_size - 1, &err) != VM_ERANGE)
            FUZZ_FAIL("short destination accepted");
        err.msg[0] = 0;
        rc = vm_batch_decode_pixels(&v, px, v.h.raw_size, &err);
        if (rc == 0) fuzz_reencode(&v, px);
        free(px);
    } else if (rc == 0) {
        return 0;
    }
    if (rc != 0 && (rc >= 0 || !err.msg[0])) FUZZ_FAIL("rejection %d without a reason", rc);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *m = malloc(size ? size : 1);  // exact size: ASan sees a one-byte overread
    if (size) memcpy(m, data, size);
    fuzz_receive(size ? m : (const uint8_t *)"", size);
    if (size >= VM_BATCH_HEADER_SIZE) {
        tp_reseal(m, size);
        fuzz_receive(m, size);
    }
    free(m);
    return 0;
}
