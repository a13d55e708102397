// proto/proto.c — encode, validate and decode batch messages (layout: proto/SPEC.md).
//
// The receiver side is written for hostile input: every field is read from the message with
// bounds-checked little-endian loads, checked against the limits of proto.h in 64-bit arithmetic
// that cannot overflow (each factor is bounded first), and every block length is checked against
// what is left of the message before it is used.
#include "proto/proto.h"

#include <lz4.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack (streaming hash, no allocation)
#include <xxhash.h>
#if defined(__x86_64__)
// libxxhash's runtime dispatch to AVX2/AVX-512 (same hashes): ~3x the baseline SSE2 build's speed,
// which is most of what the checksums cost on the decode path.
#include <xxh_x86dispatch.h>
#endif

#include "common/io.h"

// Header byte offsets (SPEC.md, "Header").
enum {
    OFF_MAGIC = 0, OFF_VMAJOR = 4, OFF_VMINOR = 6, OFF_HSIZE = 8, OFF_FLAGS = 12,
    OFF_B = 16, OFF_V = 20, OFF_H = 24, OFF_W = 28,
    OFF_C = 32, OFF_LAYOUT = 34, OFF_CODEC = 36, OFF_FILTER = 38,
    OFF_SREC = 40, OFF_VREC = 42, OFF_BLOCK = 44, OFF_EPOCH = 48, OFF_PRODUCER = 52,
    OFF_UNIT = 56, OFF_SEQ = 64, OFF_SOFF = 72, OFF_RES0 = 76,
    OFF_META = 80, OFF_RAW = 88, OFF_PAYLOAD = 96, OFF_PSUM = 104, OFF_RES1 = 112, OFF_HSUM = 120,
};
_Static_assert(OFF_HSUM + 8 == VM_BATCH_HEADER_SIZE, "header layout");

#define BLOCK_STORED 0x80000000u  // block word: high bit = stored raw, low 31 bits = stored bytes

// ---- little-endian access (byte by byte: no alignment or endianness assumptions) --------------
static inline void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static inline void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static inline uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32; }

const char *vm_batch_codec_name(uint32_t codec) {
    switch (codec) {
    case VM_BATCH_CODEC_NONE: return "none";
    case VM_BATCH_CODEC_LZ4: return "lz4";
    default: return "unknown";
    }
}

// Shape check shared by both sides: returns the raw size, or 0 and a reason in *why.
static uint64_t shape_raw(uint64_t b, uint64_t v, uint64_t h, uint64_t w, uint64_t c, const char **why) {
    if (b == 0 || b > VM_BATCH_MAX_SAMPLES) return *why = "batch size (B) out of range 1..65536", 0;
    if (v == 0 || v > VM_BATCH_MAX_VIEWS) return *why = "views (V) out of range 1..256", 0;
    if (h == 0 || h > VM_BATCH_MAX_DIM || w == 0 || w > VM_BATCH_MAX_DIM)
        return *why = "height/width out of range 1..16384", 0;
    if (c != 3) return *why = "channels must be 3", 0;
    // Each factor is bounded (2^16 * 2^8 * 2^14 * 2^14 * 3 < 2^54): no overflow.
    uint64_t raw = b * v * h * w * c;
    if (raw > VM_BATCH_MAX_RAW) return *why = "raw size over 64 GiB", 0;
    return raw;
}

static uint32_t eff_channels(const vm_batch_header *h) { return h->channels ? h->channels : 3; }
static uint32_t eff_block(const vm_batch_header *h) { return h->block_size ? h->block_size : VM_BATCH_DEFAULT_BLOCK; }

uint64_t vm_batch_raw_size(const vm_batch_header *h) {
    const char *why;
    return shape_raw(h->batch, h->views, h->height, h->width, eff_channels(h), &why);
}

static uint64_t meta_bytes(uint64_t b, uint64_t v, uint64_t srec, uint64_t vrec) { return b * (srec + v * vrec); }

size_t vm_batch_max_size(const vm_batch_header *h) {
    uint64_t raw = vm_batch_raw_size(h);
    if (!raw) return 0;
    uint64_t n = VM_BATCH_HEADER_SIZE + meta_bytes(h->batch, h->views, VM_BATCH_SAMPLE_REC_SIZE, VM_BATCH_VIEW_REC_SIZE);
    if (h->codec == VM_BATCH_CODEC_LZ4) {
        uint32_t bs = eff_block(h);
        if (bs < VM_BATCH_MIN_BLOCK || bs > VM_BATCH_MAX_BLOCK) return 0;
        // A block that does not shrink is stored raw, so the worst case is raw + one word per block.
        n += raw + 4 * ((raw + bs - 1) / bs);
    } else if (h->codec == VM_BATCH_CODEC_NONE) {
        n += raw;
    } else {
        return 0;
    }
    if (n > SIZE_MAX) return 0;
    return (size_t)n;
}

// Message checksum: XXH3-64 of msg[128 .. len) followed by msg[0 .. 120), i.e. every stored byte
// but the checksum field.  It covers the compressed payload too: a corrupted LZ4 sequence can decode
// to the same pixels (a match offset moved onto an identical run), which the pixel checksum alone
// would let through.  The body comes first so that the encoder can hash blocks as it writes them.
static uint64_t msg_hash_finish(XXH3_state_t *st, const uint8_t *msg) {
    XXH3_64bits_update(st, msg, OFF_HSUM);
    return XXH3_64bits_digest(st);
}

// ---- encode --------------------------------------------------------------------------------
int vm_batch_encode(const vm_batch_header *h, const vm_sample_meta *samples, const vm_view_meta *views,
                    const uint8_t *pixels, void *out, size_t out_cap, size_t *out_len, vm_error *err) {
    const char *why = NULL;
    uint32_t C = eff_channels(h);
    uint64_t raw = shape_raw(h->batch, h->views, h->height, h->width, C, &why);
    if (!raw) return vm_fail(err, VM_EINVAL, "encoding batch %ux%ux%ux%ux%u: %s", h->batch, h->views, h->height, h->width, C, why);
    if (h->codec != VM_BATCH_CODEC_NONE && h->codec != VM_BATCH_CODEC_LZ4)
        return vm_fail(err, VM_EUNSUPPORTED, "encoding batch: unknown codec %u", h->codec);
    if (h->filter != VM_BATCH_FILTER_NONE) return vm_fail(err, VM_EUNSUPPORTED, "encoding batch: unknown filter %u", h->filter);
    if (h->layout != 0 && h->layout != VM_BATCH_LAYOUT_BVHWC_RGB8)
        return vm_fail(err, VM_EUNSUPPORTED, "encoding batch: unknown pixel layout %u", h->layout);
    uint32_t bs = h->codec == VM_BATCH_CODEC_LZ4 ? eff_block(h) : 0;
    if (h->codec == VM_BATCH_CODEC_LZ4 && (bs < VM_BATCH_MIN_BLOCK || bs > VM_BATCH_MAX_BLOCK))
        return vm_fail(err, VM_EINVAL, "encoding batch: block size %u out of range %u..%u", bs, VM_BATCH_MIN_BLOCK, VM_BATCH_MAX_BLOCK);
    if (!samples || !views || !pixels || !out || !out_len) return vm_fail(err, VM_EINVAL, "encoding batch: NULL argument");

    uint64_t meta = meta_bytes(h->batch, h->views, VM_BATCH_SAMPLE_REC_SIZE, VM_BATCH_VIEW_REC_SIZE);
    uint64_t fixed = VM_BATCH_HEADER_SIZE + meta;
    if (out_cap < fixed) return vm_fail(err, VM_ERANGE, "encoding batch: output buffer of %zu bytes, need at least %llu", out_cap, (unsigned long long)fixed);
    uint8_t *o = out;

    // Metadata table: per sample its record, then its V view records.
    uint8_t *m = o + VM_BATCH_HEADER_SIZE;
    for (uint32_t b = 0; b < h->batch; b++) {
        const vm_sample_meta *s = &samples[b];
        put64(m, s->video_id);
        put32(m + 8, s->src_width);
        put32(m + 12, s->src_height);
        m += VM_BATCH_SAMPLE_REC_SIZE;
        for (uint32_t j = 0; j < h->views; j++) {
            const vm_view_meta *vw = &views[(size_t)b * h->views + j];
            if (vw->flip > 1) return vm_fail(err, VM_EINVAL, "encoding batch: sample %u view %u: flip %u is not 0 or 1", b, j, vw->flip);
            put64(m, (uint64_t)vw->frame);
            put64(m + 8, (uint64_t)vw->pts_ns);
            put32(m + 16, (uint32_t)vw->crop_x);
            put32(m + 20, (uint32_t)vw->crop_y);
            put32(m + 24, (uint32_t)vw->crop_w);
            put32(m + 28, (uint32_t)vw->crop_h);
            memset(m + 32, 0, 8);
            m[32] = vw->flip;
            m += VM_BATCH_VIEW_REC_SIZE;
        }
    }

    // Payload, hashing the raw pixels (st) and the stored bytes (ms) block by block while in cache.
    XXH3_state_t st, ms;
    XXH3_64bits_reset(&st);
    XXH3_64bits_reset(&ms);
    XXH3_64bits_update(&ms, o + VM_BATCH_HEADER_SIZE, meta);
    uint8_t *p = o + fixed, *end = o + out_cap;
    if (h->codec == VM_BATCH_CODEC_NONE) {
        if ((uint64_t)(end - p) < raw) return vm_fail(err, VM_ERANGE, "encoding batch: output buffer of %zu bytes, need %llu", out_cap, (unsigned long long)(fixed + raw));
        const size_t step = 1u << 20;
        for (uint64_t off = 0; off < raw; off += step) {
            size_t n = raw - off < step ? (size_t)(raw - off) : step;
            memcpy(p + off, pixels + off, n);
            XXH3_64bits_update(&st, pixels + off, n);
            XXH3_64bits_update(&ms, p + off, n);
        }
        p += raw;
    } else {
        for (uint64_t off = 0; off < raw; off += bs) {
            int n = raw - off < bs ? (int)(raw - off) : (int)bs;
            if (end - p < 4) return vm_fail(err, VM_ERANGE, "encoding batch: output buffer of %zu bytes too small (see vm_batch_max_size)", out_cap);
            size_t room = (size_t)(end - p - 4);
            // Ask LZ4 for strictly fewer bytes than the block: if it cannot, the block is stored.
            int cap = room < (size_t)n ? (int)room : n - 1;
            int c = cap > 0 ? LZ4_compress_default((const char *)pixels + off, (char *)p + 4, n, cap) : 0;
            if (c > 0) {
                put32(p, (uint32_t)c);
            } else {
                if (room < (size_t)n) return vm_fail(err, VM_ERANGE, "encoding batch: output buffer of %zu bytes too small (see vm_batch_max_size)", out_cap);
                put32(p, BLOCK_STORED | (uint32_t)n);
                memcpy(p + 4, pixels + off, n);
                c = n;
            }
            XXH3_64bits_update(&ms, p, 4 + (size_t)c);
            p += 4 + c;
            XXH3_64bits_update(&st, pixels + off, n);
        }
    }
    uint64_t payload = (uint64_t)(p - (o + fixed));

    memset(o, 0, VM_BATCH_HEADER_SIZE);
    put32(o + OFF_MAGIC, VM_BATCH_MAGIC);
    put16(o + OFF_VMAJOR, VM_BATCH_VERSION_MAJOR);
    put16(o + OFF_VMINOR, VM_BATCH_VERSION_MINOR);
    put32(o + OFF_HSIZE, VM_BATCH_HEADER_SIZE);
    put32(o + OFF_FLAGS, h->flags);
    put32(o + OFF_B, h->batch);
    put32(o + OFF_V, h->views);
    put32(o + OFF_H, h->height);
    put32(o + OFF_W, h->width);
    put16(o + OFF_C, (uint16_t)C);
    put16(o + OFF_LAYOUT, VM_BATCH_LAYOUT_BVHWC_RGB8);
    put16(o + OFF_CODEC, (uint16_t)h->codec);
    put16(o + OFF_FILTER, VM_BATCH_FILTER_NONE);
    put16(o + OFF_SREC, VM_BATCH_SAMPLE_REC_SIZE);
    put16(o + OFF_VREC, VM_BATCH_VIEW_REC_SIZE);
    put32(o + OFF_BLOCK, bs);
    put32(o + OFF_EPOCH, h->epoch);
    put32(o + OFF_PRODUCER, h->producer_id);
    put64(o + OFF_UNIT, h->work_unit);
    put64(o + OFF_SEQ, h->sequence);
    put32(o + OFF_SOFF, h->sample_offset);
    put64(o + OFF_META, meta);
    put64(o + OFF_RAW, raw);
    put64(o + OFF_PAYLOAD, payload);
    put64(o + OFF_PSUM, XXH3_64bits_digest(&st));
    put64(o + OFF_HSUM, msg_hash_finish(&ms, o));
    *out_len = (size_t)(fixed + payload);
    return 0;
}

// ---- parse ---------------------------------------------------------------------------------
#define BAD(...) vm_fail(err, VM_ECORRUPT, "batch message: " __VA_ARGS__)

int vm_batch_parse(const void *msg, size_t len, vm_batch_view *view, vm_error *err) {
    const uint8_t *m = msg;
    memset(view, 0, sizeof *view);
    if (!m) return vm_fail(err, VM_EINVAL, "batch message: NULL");
    if (len < 8) return BAD("%zu bytes, shorter than the 8-byte preamble", len);
    if (get32(m + OFF_MAGIC) != VM_BATCH_MAGIC)
        return BAD("bad magic %02x %02x %02x %02x (expected \"VMBT\"): not a vicmae batch", m[0], m[1], m[2], m[3]);
    // Version before anything else, so that a future major gets a clear message, not "corrupt".
    unsigned vmaj = get16(m + OFF_VMAJOR), vmin = get16(m + OFF_VMINOR);
    if (vmaj != VM_BATCH_VERSION_MAJOR)
        return vm_fail(err, VM_EVERSION,
                       "batch message: format version %u.%u, this build reads %u.x only (producer and trainer "
                       "must run the same major version of vicmae)", vmaj, vmin, VM_BATCH_VERSION_MAJOR);
    if (len < VM_BATCH_HEADER_SIZE) return BAD("truncated: %zu bytes, header needs %d", len, VM_BATCH_HEADER_SIZE);

    vm_batch_header *h = &view->h;
    h->version_major = (uint16_t)vmaj;
    h->version_minor = (uint16_t)vmin;
    h->header_size = get32(m + OFF_HSIZE);
    h->flags = get32(m + OFF_FLAGS);
    h->batch = get32(m + OFF_B);
    h->views = get32(m + OFF_V);
    h->height = get32(m + OFF_H);
    h->width = get32(m + OFF_W);
    h->channels = get16(m + OFF_C);
    h->layout = get16(m + OFF_LAYOUT);
    h->codec = get16(m + OFF_CODEC);
    h->filter = get16(m + OFF_FILTER);
    h->sample_rec_size = get16(m + OFF_SREC);
    h->view_rec_size = get16(m + OFF_VREC);
    h->block_size = get32(m + OFF_BLOCK);
    h->epoch = get32(m + OFF_EPOCH);
    h->producer_id = get32(m + OFF_PRODUCER);
    h->work_unit = get64(m + OFF_UNIT);
    h->sequence = get64(m + OFF_SEQ);
    h->sample_offset = get32(m + OFF_SOFF);
    h->meta_size = get64(m + OFF_META);
    h->raw_size = get64(m + OFF_RAW);
    h->payload_size = get64(m + OFF_PAYLOAD);
    h->payload_checksum = get64(m + OFF_PSUM);
    h->msg_checksum = get64(m + OFF_HSUM);

    // Sizes first (bounded, so that the checksum below only reads inside the message).
    if (h->header_size < VM_BATCH_HEADER_SIZE || h->header_size > 65536)
        return BAD("header size %u out of range %d..65536", h->header_size, VM_BATCH_HEADER_SIZE);
    if (h->header_size % 8) return BAD("header size %u is not a multiple of 8", h->header_size);
    const char *why = NULL;
    uint64_t raw = shape_raw(h->batch, h->views, h->height, h->width, h->channels, &why);
    if (!raw) return BAD("shape %ux%ux%ux%ux%u: %s", h->batch, h->views, h->height, h->width, h->channels, why);
    if (h->sample_rec_size < VM_BATCH_SAMPLE_REC_SIZE || h->view_rec_size < VM_BATCH_VIEW_REC_SIZE ||
        h->sample_rec_size % 8 || h->view_rec_size % 8)
        return BAD("record sizes %u/%u: need multiples of 8 of at least %d/%d", h->sample_rec_size,
                   h->view_rec_size, VM_BATCH_SAMPLE_REC_SIZE, VM_BATCH_VIEW_REC_SIZE);
    uint64_t meta = meta_bytes(h->batch, h->views, h->sample_rec_size, h->view_rec_size);  // < 2^16*(2^16+2^8*2^16)
    if (h->meta_size != meta) return BAD("metadata size %llu, expected %llu for B=%u V=%u", (unsigned long long)h->meta_size, (unsigned long long)meta, h->batch, h->views);
    if (h->raw_size != raw) return BAD("raw size %llu, expected %llu for the shape", (unsigned long long)h->raw_size, (unsigned long long)raw);
    if (h->header_size + meta > len)
        return BAD("truncated: %zu bytes, header and metadata need %llu", len, (unsigned long long)(h->header_size + meta));
    uint64_t avail = len - h->header_size - meta;
    if (h->payload_size != avail)
        return BAD("payload size %llu but %llu bytes follow the metadata (truncated or trailing bytes)",
                   (unsigned long long)h->payload_size, (unsigned long long)avail);
    XXH3_state_t ms;
    XXH3_64bits_reset(&ms);
    XXH3_64bits_update(&ms, m + VM_BATCH_HEADER_SIZE, len - VM_BATCH_HEADER_SIZE);
    if (msg_hash_finish(&ms, m) != h->msg_checksum) return BAD("message checksum mismatch (corrupted in transit or on disk)");

    // From here on the header is what the producer wrote; still check its semantics.
    if (h->layout != VM_BATCH_LAYOUT_BVHWC_RGB8) return vm_fail(err, VM_EUNSUPPORTED, "batch message: unknown pixel layout %u", h->layout);
    if (h->filter != VM_BATCH_FILTER_NONE) return vm_fail(err, VM_EUNSUPPORTED, "batch message: unknown filter %u", h->filter);
    view->msg = m;
    view->len = len;
    view->meta = m + h->header_size;
    view->payload = view->meta + meta;
    if (h->codec == VM_BATCH_CODEC_NONE) {
        if (h->payload_size != raw) return BAD("codec none: payload %llu bytes, raw %llu", (unsigned long long)h->payload_size, (unsigned long long)raw);
    } else if (h->codec == VM_BATCH_CODEC_LZ4) {
        uint32_t bs = h->block_size;
        if (bs < VM_BATCH_MIN_BLOCK || bs > VM_BATCH_MAX_BLOCK) return BAD("lz4 block size %u out of range", bs);
        // Walk the blocks: each word's length must fit what is left, stored blocks are exactly the
        // block's raw size and compressed ones strictly smaller; the payload must end on the last.
        const uint8_t *p = view->payload, *end = p + h->payload_size;
        uint64_t nb = (raw + bs - 1) / bs;
        for (uint64_t i = 0; i < nb; i++) {
            uint64_t rb = i + 1 < nb ? bs : raw - (nb - 1) * (uint64_t)bs;
            if (end - p < 4) return BAD("lz4 payload truncated at block %llu of %llu", (unsigned long long)i, (unsigned long long)nb);
            uint32_t w = get32(p), n = w & ~BLOCK_STORED;
            p += 4;
            if (w & BLOCK_STORED ? n != rb : (n == 0 || n >= rb))
                return BAD("lz4 block %llu: %s length %u for %llu raw bytes", (unsigned long long)i,
                           w & BLOCK_STORED ? "stored" : "compressed", n, (unsigned long long)rb);
            if ((uint64_t)(end - p) < n) return BAD("lz4 block %llu truncated: %u bytes, %zu left", (unsigned long long)i, n, (size_t)(end - p));
            // LZ4 expands at most ~255x (a match length grows by 255 per byte); a block claiming
            // more is hostile, and the bound keeps raw_size (what a receiver allocates) <= ~256 x len.
            if (!(w & BLOCK_STORED) && rb > 256 * (uint64_t)n + 64)
                return BAD("lz4 block %llu: %u bytes cannot expand to %llu", (unsigned long long)i, n, (unsigned long long)rb);
            p += n;
        }
        if (p != end) return BAD("%zu trailing bytes after the last lz4 block", (size_t)(end - p));
        view->nblocks = nb;
    } else {
        return vm_fail(err, VM_EUNSUPPORTED, "batch message: unknown codec %u (this build has none, lz4)", h->codec);
    }

    // Metadata values (the checksum guards against corruption; this guards against nonsense).
    for (uint32_t b = 0; b < h->batch; b++)
        for (uint32_t j = 0; j < h->views; j++) {
            vm_view_meta vw;
            vm_batch_get_view(view, b, j, &vw);
            if (vw.flip > 1) return BAD("sample %u view %u: flip %u is not 0 or 1", b, j, vw.flip);
            if (vw.crop_w < 0 || vw.crop_h < 0) return BAD("sample %u view %u: negative crop size %dx%d", b, j, vw.crop_w, vw.crop_h);
        }
    return 0;
}

void vm_batch_view_rebase(vm_batch_view *v, const void *msg) {
    const uint8_t *m = msg;
    v->meta = m + (v->meta - v->msg);
    v->payload = m + (v->payload - v->msg);
    v->msg = m;
}

void vm_batch_get_sample(const vm_batch_view *v, uint32_t b, vm_sample_meta *out) {
    const uint8_t *r = v->meta + (uint64_t)b * (v->h.sample_rec_size + (uint64_t)v->h.views * v->h.view_rec_size);
    out->video_id = get64(r);
    out->src_width = get32(r + 8);
    out->src_height = get32(r + 12);
}

void vm_batch_get_view(const vm_batch_view *v, uint32_t b, uint32_t j, vm_view_meta *out) {
    const uint8_t *r = v->meta + (uint64_t)b * (v->h.sample_rec_size + (uint64_t)v->h.views * v->h.view_rec_size) +
                       v->h.sample_rec_size + (uint64_t)j * v->h.view_rec_size;
    out->frame = (int64_t)get64(r);
    out->pts_ns = (int64_t)get64(r + 8);
    out->crop_x = (int32_t)get32(r + 16);
    out->crop_y = (int32_t)get32(r + 20);
    out->crop_w = (int32_t)get32(r + 24);
    out->crop_h = (int32_t)get32(r + 28);
    out->flip = r[32];
}

// ---- decode --------------------------------------------------------------------------------
int vm_batch_decode_pixels(const vm_batch_view *v, uint8_t *dst, size_t dst_cap, vm_error *err) {
    const vm_batch_header *h = &v->h;
    if (!v->msg) return vm_fail(err, VM_EINVAL, "decoding batch: message not parsed");
    if (dst_cap < h->raw_size)
        return vm_fail(err, VM_ERANGE, "decoding batch: destination of %zu bytes, need %llu", dst_cap, (unsigned long long)h->raw_size);
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    uint64_t raw = h->raw_size;
    if (h->codec == VM_BATCH_CODEC_NONE) {
        const size_t step = 1u << 20;
        for (uint64_t off = 0; off < raw; off += step) {
            size_t n = raw - off < step ? (size_t)(raw - off) : step;
            memcpy(dst + off, v->payload + off, n);
            XXH3_64bits_update(&st, dst + off, n);
        }
    } else {
        // vm_batch_parse validated the block structure; lengths are re-derived the same way and
        // LZ4_decompress_safe bounds every read and write by them.
        const uint8_t *p = v->payload;
        uint32_t bs = h->block_size;
        for (uint64_t i = 0, off = 0; i < v->nblocks; i++, off += bs) {
            int rb = i + 1 < v->nblocks ? (int)bs : (int)(raw - off);
            uint32_t w = get32(p), n = w & ~BLOCK_STORED;
            p += 4;
            if (w & BLOCK_STORED) {
                memcpy(dst + off, p, n);
            } else {
                int got = LZ4_decompress_safe((const char *)p, (char *)dst + off, (int)n, rb);
                if (got != rb)
                    return vm_fail(err, VM_ECORRUPT, "batch message: lz4 block %llu does not decode (%s)",
                                   (unsigned long long)i, got < 0 ? "malformed" : "short");
            }
            XXH3_64bits_update(&st, dst + off, (size_t)rb);
            p += n;
        }
    }
    uint64_t sum = XXH3_64bits_digest(&st);
    if (sum != h->payload_checksum)
        return vm_fail(err, VM_ECORRUPT, "batch message: pixel checksum mismatch (%016llx, header says %016llx)",
                       (unsigned long long)sum, (unsigned long long)h->payload_checksum);
    return 0;
}

// ---- files ---------------------------------------------------------------------------------
int vm_batch_file_write(const char *path, const void *msg, size_t len, vm_error *err) {
    return vm_write_file_atomic(path, msg, len, err);
}

int vm_batch_file_read(const char *path, void **msg, size_t *len, vm_error *err) {
    uint64_t max = VM_BATCH_MAX_RAW + (1ull << 30);  // pixels + generous metadata/block overhead
    return vm_read_file(path, (size_t)max, VM_EIO, msg, len, NULL, err);
}
