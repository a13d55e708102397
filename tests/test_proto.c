// Tests of proto/: round trips across codecs and shapes, every single-byte corruption and every
// truncation of small messages, hostile headers, version negotiation, buffer limits, batch files.
// Buffers are malloc'ed at their exact size so that the ASan build catches any out-of-bounds access.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lz4.h>
#include "proto/proto.h"
#include "tests/harness.h"
#include "tests/test_proto_util.h"

// Parse and decode (the receiver's full check); returns the first error code, 0 when valid.
static int receive(const uint8_t *msg, size_t len, vm_batch_view *v, uint8_t **pixels, vm_error *err) {
    *pixels = NULL;
    int rc = vm_batch_parse(msg, len, v, err);
    if (rc) return rc;
    *pixels = malloc(v->h.raw_size);
    CHECK(*pixels != NULL);
    return vm_batch_decode_pixels(v, *pixels, v->h.raw_size, err);
}

static void check_same(const tp_batch *t, const vm_batch_view *v, const uint8_t *pixels) {
    const vm_batch_header *h = &v->h;
    CHECK_EQ_INT(h->version_major, VM_BATCH_VERSION_MAJOR);
    CHECK_EQ_INT(h->version_minor, VM_BATCH_VERSION_MINOR);
    CHECK_EQ_INT(h->batch, t->h.batch);
    CHECK_EQ_INT(h->views, t->h.views);
    CHECK_EQ_INT(h->height, t->h.height);
    CHECK_EQ_INT(h->width, t->h.width);
    CHECK_EQ_INT(h->channels, 3);
    CHECK_EQ_INT(h->codec, t->h.codec);
    CHECK_EQ_INT(h->epoch, t->h.epoch);
    CHECK_EQ_INT(h->producer_id, t->h.producer_id);
    CHECK(h->work_unit == t->h.work_unit && h->sequence == t->h.sequence);
    CHECK_EQ_INT(h->sample_offset, t->h.sample_offset);
    CHECK_EQ_INT(h->flags, t->h.flags);
    CHECK_EQ_INT(h->raw_size, t->raw);
    for (uint32_t b = 0; b < h->batch; b++) {
        vm_sample_meta s;
        vm_batch_get_sample(v, b, &s);
        CHECK(s.video_id == t->samples[b].video_id && s.src_width == 640 && s.src_height == 480, "sample %u", b);
        for (uint32_t j = 0; j < h->views; j++) {
            vm_view_meta m, *e = &t->views[b * h->views + j];
            vm_batch_get_view(v, b, j, &m);
            CHECK(m.frame == e->frame && m.pts_ns == e->pts_ns && m.crop_x == e->crop_x && m.crop_y == e->crop_y &&
                  m.crop_w == e->crop_w && m.crop_h == e->crop_h && m.flip == e->flip, "sample %u view %u", b, j);
        }
    }
    CHECK(memcmp(pixels, t->pixels, t->raw) == 0, "pixels differ after the round trip");
}

TEST(proto_round_trip_codecs_and_shapes) {
    const uint32_t shapes[][4] = {{1, 1, 1, 1}, {1, 2, 8, 8}, {3, 2, 17, 13}, {2, 16, 9, 31}, {5, 3, 64, 48}, {4, 2, 224, 224}};
    const uint32_t blocks[] = {0, 4096, 5000};
    int compressed = 0, stored = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (uint32_t codec = 0; codec <= 1; codec++)
            for (int kind = 0; kind < 3; kind++)
                for (size_t bi = 0; bi < 3; bi++) {
                    if (codec == VM_BATCH_CODEC_NONE && bi) continue;
                    tp_batch t;
                    tp_batch_init(&t, shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], codec, kind, s * 7 + kind);
                    t.h.block_size = blocks[bi];
                    vm_error err = {0};
                    size_t len;
                    uint8_t *msg = tp_encode(&t, &len, &err);
                    CHECK(msg != NULL, "encode: %s", err.msg);
                    CHECK(len <= vm_batch_max_size(&t.h));
                    vm_batch_view v;
                    uint8_t *px;
                    CHECK_OK(receive(msg, len, &v, &px, &err), err);
                    check_same(&t, &v, px);
                    if (codec == VM_BATCH_CODEC_LZ4) {
                        CHECK_EQ_INT(v.h.block_size, blocks[bi] ? blocks[bi] : VM_BATCH_DEFAULT_BLOCK);
                        if (len < t.raw) compressed++;
                        if (kind == 1) CHECK(len > t.raw, "noise cannot shrink: %zu vs %zu", len, t.raw);
                        if (kind == 0 && t.raw > 100000) CHECK(len * 2 < t.raw, "gradients should compress 2x: %zu of %zu", len, t.raw);
                        if (kind == 1) stored++;
                    } else {
                        CHECK_EQ_INT(len, VM_BATCH_HEADER_SIZE + v.h.meta_size + t.raw);
                    }
                    free(px);
                    free(msg);
                    tp_batch_free(&t);
                }
    CHECK(compressed > 10 && stored > 10, "compressed %d stored %d", compressed, stored);
}

// Flip every byte of the message to every other value: parse or decode must reject each one.
// Every position is tried with all 255 other values; with xors_in_payload < 255 the payload bytes of
// the larger multi-block message get that many values each (keeps the ASan run short).
static void every_corruption(uint32_t codec, int kind, uint32_t B, uint32_t H, uint32_t block, int xors_in_payload) {
    tp_batch t;
    tp_batch_init(&t, B, 2, H, 24, codec, kind, 11);
    t.h.block_size = block;
    vm_error err = {0};
    size_t len;
    uint8_t *msg = tp_encode(&t, &len, &err);
    CHECK(msg != NULL, "%s", err.msg);
    long tried = 0, expect = 0;
    int why[16] = {0};
    vm_batch_view v0;
    CHECK_OK(vm_batch_parse(msg, len, &v0, &err), err);
    size_t payload_at = (size_t)(v0.payload - msg);
    if (block) {  // the mixed message really has both kinds of blocks
        int stored = 0, packed = 0;
        for (const uint8_t *p = v0.payload; p < msg + len;) {
            uint32_t w = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
            if (w >> 31) stored++; else packed++;
            p += 4 + (w & 0x7fffffffu);
        }
        CHECK(stored > 0 && packed > 0, "stored %d compressed %d", stored, packed);
    }
    for (size_t i = 0; i < len; i++) {
        uint8_t orig = msg[i];
        int nx = i < payload_at ? 255 : xors_in_payload;
        expect += nx;
        for (int k = 1; k <= nx; k++) {
            int x = nx == 255 ? k : (int)(tp_hash32(i * 31 + k) % 255) + 1;
            msg[i] = (uint8_t)(orig ^ x);
            vm_batch_view v;
            uint8_t *px;
            err.msg[0] = 0;
            int rc = receive(msg, len, &v, &px, &err);
            free(px);
            CHECK(rc < 0, "byte %zu ^ 0x%02x of %zu accepted (codec %u)", i, x, len, codec);
            CHECK(err.msg[0] != 0, "no reason for byte %zu", i);
            why[-rc & 15]++;
            tried++;
        }
        msg[i] = orig;
    }
    CHECK_EQ_INT(tried, expect);
    CHECK(why[-VM_ECORRUPT] > 0 && why[-VM_EVERSION] > 0, "corrupt %d version %d", why[-VM_ECORRUPT], why[-VM_EVERSION]);
    free(msg);
    tp_batch_free(&t);
}

TEST(proto_every_byte_corruption_none) { every_corruption(VM_BATCH_CODEC_NONE, 0, 2, 4, 0, 255); }
TEST(proto_every_byte_corruption_lz4) { every_corruption(VM_BATCH_CODEC_LZ4, 0, 2, 8, 0, 255); }
// Four 4 KiB blocks, stored (noise) and compressed alternately; 8 values per payload byte.
TEST(proto_every_byte_corruption_lz4_mixed_blocks) { every_corruption(VM_BATCH_CODEC_LZ4, 2, 3, 30, 4096, 8); }

TEST(proto_every_truncation_and_extension) {
    for (uint32_t codec = 0; codec <= 1; codec++) {
        tp_batch t;
        tp_batch_init(&t, 3, 2, 30, 24, codec, 2, 5);
        t.h.block_size = 4096;
        vm_error err = {0};
        size_t len;
        uint8_t *msg = tp_encode(&t, &len, &err);
        CHECK(msg != NULL, "%s", err.msg);
        for (size_t n = 0; n < len; n++) {
            uint8_t *cut = malloc(n ? n : 1);
            memcpy(cut, msg, n);
            vm_batch_view v;
            int rc = vm_batch_parse(n ? cut : NULL, n, &v, &err);
            if (n) CHECK(rc == VM_ECORRUPT, "truncated to %zu of %zu: rc %d %s", n, len, rc, err.msg);
            else CHECK(rc < 0);
            free(cut);
        }
        for (size_t extra = 1; extra <= 9; extra += 4) {
            uint8_t *longer = calloc(len + extra, 1);
            memcpy(longer, msg, len);
            vm_batch_view v;
            CHECK(vm_batch_parse(longer, len + extra, &v, &err) == VM_ECORRUPT, "trailing bytes accepted");
            CHECK(strstr(err.msg, "trailing") != NULL, "%s", err.msg);
            free(longer);
        }
        free(msg);
        tp_batch_free(&t);
    }
}

// Edit header fields, reseal the header checksum, expect rejection naming the reason.
static void expect_hostile(const uint8_t *good, size_t len, void (*edit)(uint8_t *), int code, const char *reason) {
    uint8_t *m = malloc(len);
    memcpy(m, good, len);
    edit(m);
    tp_reseal(m, len);
    vm_batch_view v;
    vm_error err = {0};
    int rc = vm_batch_parse(m, len, &v, &err);
    if (rc == 0) {  // a header that passes parse must still never decode out of bounds
        uint8_t *px = malloc(v.h.raw_size);
        rc = vm_batch_decode_pixels(&v, px, v.h.raw_size, &err);
        free(px);
    }
    CHECK(rc == code, "expected %d (%s), got %d: %s", code, reason, rc, err.msg);
    CHECK(strstr(err.msg, reason) != NULL, "expected '%s' in: %s", reason, err.msg);
    free(m);
}

static void e_huge_b(uint8_t *m) { tp_put32(m + 16, 0xffffffffu); }
static void e_b_over(uint8_t *m) { tp_put32(m + 16, VM_BATCH_MAX_SAMPLES + 1); }
static void e_zero_v(uint8_t *m) { tp_put32(m + 20, 0); }
static void e_huge_h(uint8_t *m) { tp_put32(m + 24, 1u << 31); }
static void e_huge_total(uint8_t *m) {  // each factor legal, product over 64 GiB
    tp_put32(m + 16, VM_BATCH_MAX_SAMPLES), tp_put32(m + 20, VM_BATCH_MAX_VIEWS);
    tp_put32(m + 24, VM_BATCH_MAX_DIM), tp_put32(m + 28, VM_BATCH_MAX_DIM);
}
static void e_channels(uint8_t *m) { tp_put16(m + 32, 4); }
static void e_hsize_huge(uint8_t *m) { tp_put32(m + 8, 0xfffffff8u); }
static void e_hsize_small(uint8_t *m) { tp_put32(m + 8, 64); }
static void e_meta_size(uint8_t *m) { tp_put64(m + 80, ~0ull); }
static void e_raw_size(uint8_t *m) { tp_put64(m + 88, 1ull << 62); }
static void e_payload_size(uint8_t *m) { tp_put64(m + 96, ~0ull - 100); }
static void e_srec(uint8_t *m) { tp_put16(m + 40, 0xfff8), tp_put64(m + 80, 2 * (0xfff8 + 2 * 40)); }
static void e_srec_meta(uint8_t *m) { tp_put16(m + 40, 0xfff8); }
static void e_vrec_small(uint8_t *m) { tp_put16(m + 42, 8); }
static void e_codec(uint8_t *m) { tp_put16(m + 36, 9); }
static void e_layout(uint8_t *m) { tp_put16(m + 34, 2); }
static void e_filter(uint8_t *m) { tp_put16(m + 38, 3); }
static void e_block_zero(uint8_t *m) { tp_put32(m + 44, 0); }
static void e_block_huge(uint8_t *m) { tp_put32(m + 44, 0x7fffffffu); }
// First block word (after 128-byte header and the 2-sample metadata table).
#define FIRST_BLOCK (128 + 2 * (16 + 2 * 40))
static void e_block_len_huge(uint8_t *m) { tp_put32(m + FIRST_BLOCK, 0x7fffffffu); }
static void e_block_stored_wrong(uint8_t *m) { tp_put32(m + FIRST_BLOCK, 0x80000000u | 17); }
static void e_block_len_zero(uint8_t *m) { tp_put32(m + FIRST_BLOCK, 0); }

TEST(proto_hostile_headers_rejected) {
    tp_batch t;
    tp_batch_init(&t, 2, 2, 8, 24, VM_BATCH_CODEC_LZ4, 0, 1);
    vm_error err = {0};
    size_t len;
    uint8_t *msg = tp_encode(&t, &len, &err);
    CHECK(msg != NULL, "%s", err.msg);
    // The unedited message passes through the same path (the helper itself is sound).
    vm_batch_view v;
    tp_reseal(msg, len);
    CHECK_OK(vm_batch_parse(msg, len, &v, &err), err);

    expect_hostile(msg, len, e_huge_b, VM_ECORRUPT, "batch size (B) out of range");
    expect_hostile(msg, len, e_b_over, VM_ECORRUPT, "batch size (B) out of range");
    expect_hostile(msg, len, e_zero_v, VM_ECORRUPT, "views (V) out of range");
    expect_hostile(msg, len, e_huge_h, VM_ECORRUPT, "height/width out of range");
    expect_hostile(msg, len, e_huge_total, VM_ECORRUPT, "raw size over 64 GiB");
    expect_hostile(msg, len, e_channels, VM_ECORRUPT, "channels must be 3");
    expect_hostile(msg, len, e_hsize_huge, VM_ECORRUPT, "header size");
    expect_hostile(msg, len, e_hsize_small, VM_ECORRUPT, "header size");
    expect_hostile(msg, len, e_meta_size, VM_ECORRUPT, "metadata size");
    expect_hostile(msg, len, e_raw_size, VM_ECORRUPT, "raw size");
    expect_hostile(msg, len, e_payload_size, VM_ECORRUPT, "payload size");
    expect_hostile(msg, len, e_srec, VM_ECORRUPT, "truncated");
    expect_hostile(msg, len, e_srec_meta, VM_ECORRUPT, "metadata size");
    expect_hostile(msg, len, e_vrec_small, VM_ECORRUPT, "record sizes");
    expect_hostile(msg, len, e_codec, VM_EUNSUPPORTED, "unknown codec 9");
    expect_hostile(msg, len, e_layout, VM_EUNSUPPORTED, "unknown pixel layout");
    expect_hostile(msg, len, e_filter, VM_EUNSUPPORTED, "unknown filter");
    expect_hostile(msg, len, e_block_zero, VM_ECORRUPT, "block size");
    expect_hostile(msg, len, e_block_huge, VM_ECORRUPT, "block size");
    expect_hostile(msg, len, e_block_len_huge, VM_ECORRUPT, "lz4 block 0");
    expect_hostile(msg, len, e_block_stored_wrong, VM_ECORRUPT, "stored length 17");
    expect_hostile(msg, len, e_block_len_zero, VM_ECORRUPT, "compressed length 0");
    free(msg);
    tp_batch_free(&t);

    // A crafted lz4 block that is well-formed but decodes to fewer bytes than declared.
    tp_batch_init(&t, 1, 1, 40, 40, VM_BATCH_CODEC_LZ4, 0, 2);  // 4800 raw bytes, one block
    msg = tp_encode(&t, &len, &err);
    CHECK(msg != NULL, "%s", err.msg);
    size_t off = 128 + 16 + 40;
    // kind 0: 4000 bytes (3000 noisy, then flat) decoding short of the 4800 declared;
    // kind 1: 100 flat bytes (11 compressed) claiming 4800 (past LZ4's maximum expansion).
    for (int kind = 0; kind < 2; kind++) {
        char src[4000], comp[5000];
        int n = kind ? 100 : 4000;
        for (int i = 0; i < n; i++) src[i] = kind || i >= 3000 ? 'a' : (char)tp_hash32((uint64_t)i);
        int c = LZ4_compress_default(src, comp, n, sizeof comp);
        CHECK(c > 0 && c < 4800);
        size_t len2 = off + 4 + (size_t)c;
        uint8_t *m2 = malloc(len2);
        memcpy(m2, msg, off);
        tp_put32(m2 + off, (uint32_t)c);
        memcpy(m2 + off + 4, comp, (size_t)c);
        tp_put64(m2 + 96, 4 + (uint64_t)c);
        tp_reseal(m2, len2);
        if (kind == 0) {
            CHECK_OK(vm_batch_parse(m2, len2, &v, &err), err);
            uint8_t *px = malloc(v.h.raw_size);
            CHECK(vm_batch_decode_pixels(&v, px, v.h.raw_size, &err) == VM_ECORRUPT);
            CHECK(strstr(err.msg, "does not decode"), "%s", err.msg);
            free(px);
        } else {
            CHECK_EQ_INT(vm_batch_parse(m2, len2, &v, &err), VM_ECORRUPT);
            CHECK(strstr(err.msg, "cannot expand to 4800"), "%s", err.msg);
        }
        free(m2);
    }
    free(msg);
    tp_batch_free(&t);
}

TEST(proto_unknown_major_rejected_with_clear_message) {
    tp_batch t;
    tp_batch_init(&t, 1, 2, 4, 4, VM_BATCH_CODEC_LZ4, 0, 3);
    vm_error err = {0};
    size_t len;
    uint8_t *msg = tp_encode(&t, &len, &err);
    CHECK(msg != NULL, "%s", err.msg);
    tp_put16(msg + 4, 2);
    tp_put16(msg + 6, 5);
    tp_reseal(msg, len);
    vm_batch_view v;
    CHECK_EQ_INT(vm_batch_parse(msg, len, &v, &err), VM_EVERSION);
    CHECK(strstr(err.msg, "version 2.5") && strstr(err.msg, "reads 1.x"), "%s", err.msg);
    // A header with a future major may be laid out differently: even 8 bytes give the message.
    CHECK_EQ_INT(vm_batch_parse(msg, 8, &v, &err), VM_EVERSION);
    tp_put16(msg + 4, 0);
    CHECK_EQ_INT(vm_batch_parse(msg, len, &v, &err), VM_EVERSION);
    memcpy(msg, "PK\3\4", 4);
    CHECK_EQ_INT(vm_batch_parse(msg, len, &v, &err), VM_ECORRUPT);
    CHECK(strstr(err.msg, "not a vicmae batch"), "%s", err.msg);
    free(msg);
    tp_batch_free(&t);
}

// A 1.3 producer appends 16 header bytes and 8 bytes to each sample and view record (SPEC.md:
// minors only append); this 1.0 reader must accept it and read the fields it knows.
TEST(proto_newer_minor_accepted) {
    for (uint32_t codec = 0; codec <= 1; codec++) {
        tp_batch t;
        tp_batch_init(&t, 3, 2, 6, 5, codec, 0, 4);
        vm_error err = {0};
        size_t len;
        uint8_t *msg = tp_encode(&t, &len, &err);
        CHECK(msg != NULL, "%s", err.msg);
        vm_batch_view v0;
        CHECK_OK(vm_batch_parse(msg, len, &v0, &err), err);
        size_t hs = 144, sr = 24, vr = 48, meta = 3 * (sr + 2 * vr);
        size_t len2 = hs + meta + v0.h.payload_size;
        uint8_t *m = malloc(len2);
        memset(m, 0xa5, len2);  // the unknown appended bytes are garbage to this reader
        memcpy(m, msg, 128);
        for (int b = 0; b < 3; b++) {
            const uint8_t *src = v0.meta + b * (16 + 2 * 40);
            uint8_t *dst = m + hs + b * (sr + 2 * vr);
            memcpy(dst, src, 16);
            for (int j = 0; j < 2; j++) memcpy(dst + sr + j * vr, src + 16 + j * 40, 40);
        }
        memcpy(m + hs + meta, v0.payload, v0.h.payload_size);
        tp_put16(m + 6, 3);
        tp_put32(m + 8, (uint32_t)hs);
        tp_put16(m + 40, (uint16_t)sr);
        tp_put16(m + 42, (uint16_t)vr);
        tp_put64(m + 80, meta);
        tp_reseal(m, len2);
        vm_batch_view v;
        uint8_t *px;
        CHECK_OK(receive(m, len2, &v, &px, &err), err);
        CHECK_EQ_INT(v.h.version_minor, 3);
        CHECK_EQ_INT(v.h.header_size, 144);
        v.h.version_minor = 0;  // check_same expects this build's version
        check_same(&t, &v, px);
        free(px);
        free(m);
        free(msg);
        tp_batch_free(&t);
    }
}

TEST(proto_encode_respects_output_capacity) {
    for (uint32_t codec = 0; codec <= 1; codec++) {
        tp_batch t;
        tp_batch_init(&t, 2, 2, 30, 24, codec, 2, 9);
        t.h.block_size = 4096;
        vm_error err = {0};
        size_t len;
        uint8_t *msg = tp_encode(&t, &len, &err);
        CHECK(msg != NULL, "%s", err.msg);
        for (size_t cap = 0; cap < len; cap++) {
            uint8_t *out = malloc(cap ? cap : 1);
            size_t got = 0;
            int rc = vm_batch_encode(&t.h, t.samples, t.views, t.pixels, out, cap, &got, &err);
            CHECK(rc == VM_ERANGE, "cap %zu of %zu: rc %d", cap, len, rc);
            free(out);
        }
        uint8_t *out = malloc(len);
        size_t got = 0;
        CHECK_OK(vm_batch_encode(&t.h, t.samples, t.views, t.pixels, out, len, &got, &err), err);
        CHECK(got == len && memcmp(out, msg, len) == 0, "encoding is deterministic and fits exactly");
        // Decoding into a short destination is refused.
        vm_batch_view v;
        CHECK_OK(vm_batch_parse(out, len, &v, &err), err);
        uint8_t *px = malloc(t.raw - 1);
        CHECK_EQ_INT(vm_batch_decode_pixels(&v, px, t.raw - 1, &err), VM_ERANGE);
        free(px);
        free(out);
        free(msg);
        tp_batch_free(&t);
    }
}

TEST(proto_encode_rejects_bad_shapes) {
    tp_batch t;
    tp_batch_init(&t, 1, 1, 2, 2, VM_BATCH_CODEC_LZ4, 0, 0);
    uint8_t out[4096];
    size_t len;
    vm_error err = {0};
    vm_batch_header h = t.h;
    h.batch = 0;
    CHECK_EQ_INT(vm_batch_max_size(&h), 0);
    CHECK_EQ_INT(vm_batch_encode(&h, t.samples, t.views, t.pixels, out, sizeof out, &len, &err), VM_EINVAL);
    h = t.h, h.width = VM_BATCH_MAX_DIM + 1;
    CHECK_EQ_INT(vm_batch_encode(&h, t.samples, t.views, t.pixels, out, sizeof out, &len, &err), VM_EINVAL);
    h = t.h, h.channels = 4;
    CHECK_EQ_INT(vm_batch_encode(&h, t.samples, t.views, t.pixels, out, sizeof out, &len, &err), VM_EINVAL);
    h = t.h, h.codec = 7;
    CHECK_EQ_INT(vm_batch_max_size(&h), 0);
    CHECK_EQ_INT(vm_batch_encode(&h, t.samples, t.views, t.pixels, out, sizeof out, &len, &err), VM_EUNSUPPORTED);
    h = t.h, h.block_size = 100;
    CHECK_EQ_INT(vm_batch_encode(&h, t.samples, t.views, t.pixels, out, sizeof out, &len, &err), VM_EINVAL);
    h = t.h;
    t.views[0].flip = 2;
    CHECK_EQ_INT(vm_batch_encode(&h, t.samples, t.views, t.pixels, out, sizeof out, &len, &err), VM_EINVAL);
    CHECK(strstr(err.msg, "flip"), "%s", err.msg);
    tp_batch_free(&t);
}

// A trainer assembles a batch from chunks: each decodes straight into its slice of one buffer.
TEST(proto_chunks_assemble_into_one_buffer) {
    tp_batch full;
    tp_batch_init(&full, 7, 2, 16, 12, VM_BATCH_CODEC_LZ4, 0, 8);
    size_t per = (size_t)2 * 16 * 12 * 3;
    uint8_t *dst = malloc(full.raw);
    memset(dst, 0, full.raw);
    vm_error err = {0};
    for (uint32_t off = 0; off < 7; off += 3) {
        uint32_t n = off + 3 <= 7 ? 3 : 7 - off;
        vm_batch_header h = full.h;
        h.batch = n, h.sample_offset = off, h.flags = off + n == 7 ? VM_BATCH_F_UNIT_END : 0;
        size_t cap = vm_batch_max_size(&h), len;
        uint8_t *msg = malloc(cap);
        CHECK_OK(vm_batch_encode(&h, full.samples + off, full.views + off * 2, full.pixels + off * per, msg, cap, &len, &err), err);
        vm_batch_view v;
        CHECK_OK(vm_batch_parse(msg, len, &v, &err), err);
        CHECK_EQ_INT(v.h.sample_offset, off);
        CHECK_EQ_INT(v.h.flags & VM_BATCH_F_UNIT_END, off + n == 7);
        CHECK_OK(vm_batch_decode_pixels(&v, dst + (size_t)v.h.sample_offset * per, full.raw - v.h.sample_offset * per, &err), err);
        vm_sample_meta s;
        vm_batch_get_sample(&v, n - 1, &s);
        CHECK(s.video_id == full.samples[off + n - 1].video_id);
        free(msg);
    }
    CHECK(memcmp(dst, full.pixels, full.raw) == 0);
    free(dst);
    tp_batch_free(&full);
}

TEST(proto_batch_file_round_trip) {
    tp_batch t;
    tp_batch_init(&t, 2, 2, 10, 10, VM_BATCH_CODEC_LZ4, 0, 6);
    vm_error err = {0};
    size_t len;
    uint8_t *msg = tp_encode(&t, &len, &err);
    CHECK(msg != NULL, "%s", err.msg);
    char path[1024];
    snprintf(path, sizeof path, "%s/b.vmb", vt_tmpdir());
    CHECK_OK(vm_batch_file_write(path, msg, len, &err), err);
    void *back;
    size_t blen;
    CHECK_OK(vm_batch_file_read(path, &back, &blen, &err), err);
    CHECK(blen == len && memcmp(back, msg, len) == 0);
    free(back);
    CHECK_EQ_INT(vm_batch_file_read("/nonexistent/b.vmb", &back, &blen, &err), VM_EIO);
    CHECK(strstr(err.msg, "/nonexistent/b.vmb"), "%s", err.msg);
    CHECK_EQ_INT(vm_batch_file_read(vt_tmpdir(), &back, &blen, &err), VM_EIO);
    free(msg);
    tp_batch_free(&t);
}

// The same corruptions with the message checksum recomputed, as a forger (or a bug on the producer
// side) would do: the structural validation alone must then keep every access in bounds (ASan), and
// whatever parses and decodes must be self-consistent.
TEST(proto_every_byte_corruption_resealed_stays_in_bounds) {
    tp_batch t;
    tp_batch_init(&t, 2, 2, 30, 24, VM_BATCH_CODEC_LZ4, 2, 12);
    t.h.block_size = 4096;
    vm_error err = {0};
    size_t len;
    uint8_t *msg = tp_encode(&t, &len, &err);
    CHECK(msg != NULL, "%s", err.msg);
    int rejected = 0, accepted = 0;
    for (size_t i = 0; i < len; i++) {
        if (i >= 120 && i < 128) continue;  // the checksum field itself
        const int xs[] = {0x01, 0x80, 0xff, 0x7f, 0x10};
        for (int k = 0; k < 5; k++) {
            uint8_t *m = malloc(len);
            memcpy(m, msg, len);
            m[i] ^= (uint8_t)xs[k];
            tp_reseal(m, len);
            vm_batch_view v;
            uint8_t *px;
            int rc = receive(m, len, &v, &px, &err);
            if (rc == 0) {
                accepted++;
                CHECK(v.h.raw_size == t.raw, "an accepted message keeps a size consistent with its bytes");
            } else {
                rejected++;
                CHECK(err.msg[0] != 0);
            }
            free(px);
            free(m);
        }
    }
    // Metadata values and the pixel-checksum-guarded payload mostly reject; ids and crop values accept.
    CHECK(rejected > 0 && accepted > 0, "rejected %d accepted %d", rejected, accepted);
    free(msg);
    tp_batch_free(&t);
}

// Flat frames reach LZ4's maximum ratio (~255x; ~130x in 4 KiB blocks): the parser's expansion bound must accept them.
TEST(proto_flat_frames_at_max_ratio_round_trip) {
    const uint32_t blocks[] = {VM_BATCH_MIN_BLOCK, 0, VM_BATCH_MAX_BLOCK};
    for (int i = 0; i < 3; i++) {
        tp_batch t;
        tp_batch_init(&t, 1, 1, i == 2 ? 4096 : 512, i == 2 ? 2048 : 512, VM_BATCH_CODEC_LZ4, 0, 0);
        memset(t.pixels, i == 1 ? 0xff : 0, t.raw);
        t.h.block_size = blocks[i];
        vm_error err = {0};
        size_t len;
        uint8_t *msg = tp_encode(&t, &len, &err);
        CHECK(msg != NULL, "%s", err.msg);
        CHECK(len * 100 < t.raw, "flat frames compress >100x: %zu of %zu", len, t.raw);
        vm_batch_view v;
        uint8_t *px;
        CHECK_OK(receive(msg, len, &v, &px, &err), err);
        CHECK(memcmp(px, t.pixels, t.raw) == 0);
        free(px);
        free(msg);
        tp_batch_free(&t);
    }
}

TEST(proto_view_rebase_after_move) {
    tp_batch t;
    tp_batch_init(&t, 3, 2, 10, 12, VM_BATCH_CODEC_LZ4, 0, 13);
    vm_error err = {0};
    size_t len;
    uint8_t *msg = tp_encode(&t, &len, &err);
    CHECK(msg != NULL, "%s", err.msg);
    vm_batch_view v;
    CHECK_OK(vm_batch_parse(msg, len, &v, &err), err);
    uint8_t *moved = malloc(len);
    memcpy(moved, msg, len);
    memset(msg, 0, len);  // the old buffer is gone
    free(msg);
    vm_batch_view_rebase(&v, moved);
    CHECK(v.msg == moved && v.meta == moved + 128 && v.payload == moved + 128 + v.h.meta_size);
    uint8_t *px = malloc(t.raw);
    CHECK_OK(vm_batch_decode_pixels(&v, px, t.raw, &err), err);
    check_same(&t, &v, px);
    free(px);
    free(moved);
    tp_batch_free(&t);
}
