// bench/proto_bench.c — batch wire-format throughput and ratio on real frames (bench/bench_proto.sh).
//
//   proto_bench FRAMES.rgb WIDTH HEIGHT [BATCH]
//
// FRAMES.rgb is raw RGB24 frames (what ffmpeg -f rawvideo -pix_fmt rgb24 writes).  Batches are
// frame pairs (V = 2: frame i and frame i + 4, as a pair sampler would take them) of BATCH samples.
// Measured in the same run, single-threaded, over every batch, best of several passes:
//   memcpy             copy of the raw batch (the floor any format is measured against)
//   lz4 plain          LZ4_compress_default / LZ4_decompress_safe of the batch as one buffer
//   proto none / lz4   vm_batch_encode, and vm_batch_parse + vm_batch_decode_pixels (checksums included)
// plus the filter study: LZ4 ratio after a reversible filter (SPEC.md records the verdict).
// GB/s are raw (decoded) bytes per second, 1 GB = 1e9 bytes.
#include <lz4.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/io.h"
#include "proto/proto.h"

static double best_of(double a, double b) { return a < b ? a : b; }

// ---- candidate filters (in place on one view: H x W x 3) -----------------------------------
// Vectorized as a real implementation would be (the build's -O2 does not vectorize loops that need
// an epilogue), so that the study charges each filter its fair cost.
#pragma GCC push_options
#pragma GCC optimize("O3")
// left: each byte minus the same channel of the pixel to its left (per-row delta).
static void f_left(uint8_t *p, int h, int w) {
    for (int y = 0; y < h; y++) {
        uint8_t *r = p + (size_t)y * w * 3;
        for (int x = w * 3 - 1; x >= 3; x--) r[x] = (uint8_t)(r[x] - r[x - 3]);
    }
}
// up: each row minus the row above (rows as restrict pointers so that the compiler vectorizes).
static void sub_row(uint8_t *restrict cur, const uint8_t *restrict prev, size_t n) {
    for (size_t x = 0; x < n; x++) cur[x] = (uint8_t)(cur[x] - prev[x]);
}
static void add_row(uint8_t *restrict cur, const uint8_t *restrict prev, size_t n) {
    for (size_t x = 0; x < n; x++) cur[x] = (uint8_t)(cur[x] + prev[x]);
}
static void f_up(uint8_t *p, int h, int w) {
    size_t row = (size_t)w * 3;
    for (int y = h - 1; y >= 1; y--) sub_row(p + y * row, p + (y - 1) * row, row);
}
static void inv_up(uint8_t *p, int h, int w) {
    size_t row = (size_t)w * 3;
    for (int y = 1; y < h; y++) add_row(p + y * row, p + (y - 1) * row, row);
}
// planes: RGBRGB... -> RRR..GGG..BBB.. (byte planes).
static void f_planes(uint8_t *p, int h, int w, uint8_t *tmp) {
    size_t n = (size_t)h * w;
    for (size_t i = 0; i < n; i++) tmp[i] = p[3 * i], tmp[n + i] = p[3 * i + 1], tmp[2 * n + i] = p[3 * i + 2];
    memcpy(p, tmp, 3 * n);
}
// planes, then left delta inside each plane (a 1-channel row delta).
static void f_planes_left(uint8_t *p, int h, int w, uint8_t *tmp) {
    f_planes(p, h, w, tmp);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < h; y++) {
            uint8_t *r = p + (size_t)c * h * w + (size_t)y * w;
            for (int x = w - 1; x >= 1; x--) r[x] = (uint8_t)(r[x] - r[x - 1]);
        }
}
// inverse of left (the decode side's cost).
static void inv_left(uint8_t *p, int h, int w) {
    for (int y = 0; y < h; y++) {
        uint8_t *r = p + (size_t)y * w * 3;
        for (int x = 3; x < w * 3; x++) r[x] = (uint8_t)(r[x] + r[x - 3]);
    }
}

#pragma GCC pop_options

// LZ4 size of buf in independent blocks of VM_BATCH_DEFAULT_BLOCK (256 KiB), as the proto codec does.
static size_t lz4_blocks_size(const uint8_t *buf, size_t n, char *scratch, int cap) {
    size_t total = 0;
    for (size_t off = 0; off < n; off += VM_BATCH_DEFAULT_BLOCK) {
        int len = n - off < VM_BATCH_DEFAULT_BLOCK ? (int)(n - off) : (int)VM_BATCH_DEFAULT_BLOCK;
        int c = LZ4_compress_default((const char *)buf + off, scratch, len, cap);
        total += 4 + (size_t)(c > 0 && c < len ? c : len);
    }
    return total;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: proto_bench FRAMES.rgb WIDTH HEIGHT [BATCH]\n");
        return 2;
    }
    int W = atoi(argv[2]), H = atoi(argv[3]), B = argc > 4 ? atoi(argv[4]) : 64, V = 2, GAP = 4;
    FILE *fp = fopen(argv[1], "rb");
    if (!fp || W <= 0 || H <= 0 || B <= 0) {
        fprintf(stderr, "proto_bench: cannot read %s or bad size\n", argv[1]);
        return 2;
    }
    fseek(fp, 0, SEEK_END);
    size_t fsize = (size_t)ftell(fp), fb = (size_t)W * H * 3;
    fseek(fp, 0, SEEK_SET);
    size_t nframes = fsize / fb;
    if (nframes < (size_t)GAP + 2) {
        fprintf(stderr, "proto_bench: %zu frames, need more\n", nframes);
        return 2;
    }
    uint8_t *frames = malloc(nframes * fb);
    if (fread(frames, fb, nframes, fp) != nframes) return 2;
    fclose(fp);

    // Batches: sample s = (frame s, frame s + GAP); as many whole batches as the frames give.
    size_t pairs = nframes - GAP, nb = pairs / B;
    if (nb == 0) B = (int)pairs, nb = 1;
    size_t raw = (size_t)B * V * fb;
    uint8_t **batch = calloc(nb, sizeof *batch);
    vm_sample_meta *sm = calloc(B, sizeof *sm);
    vm_view_meta *vm = calloc((size_t)B * V, sizeof *vm);
    for (size_t k = 0; k < nb; k++) {
        batch[k] = malloc(raw);
        for (int s = 0; s < B; s++)
            for (int j = 0; j < V; j++)
                memcpy(batch[k] + ((size_t)s * V + j) * fb, frames + (k * B + s + (size_t)j * GAP) * fb, fb);
    }
    for (int s = 0; s < B; s++) {
        sm[s] = (vm_sample_meta){.video_id = (uint64_t)s, .src_width = (uint32_t)W, .src_height = (uint32_t)H};
        for (int j = 0; j < V; j++)
            vm[s * V + j] = (vm_view_meta){.frame = s + j * GAP, .pts_ns = (int64_t)(s + j * GAP) * 40000000,
                                           .crop_w = W, .crop_h = H};
    }
    printf("proto_bench: %zu frames %dx%d -> %zu batches of B=%d V=%d (%.1f MB raw each), single thread\n", nframes, W,
           H, nb, B, V, raw / 1e6);

    uint8_t *dst = malloc(raw);
    int lcap = LZ4_compressBound((int)raw);
    char *lbuf = malloc((size_t)lcap);
    vm_batch_header hn = {.batch = (uint32_t)B, .views = (uint32_t)V, .height = (uint32_t)H, .width = (uint32_t)W,
                          .codec = VM_BATCH_CODEC_NONE};
    vm_batch_header hl = hn;
    hl.codec = VM_BATCH_CODEC_LZ4;
    size_t mcap = vm_batch_max_size(&hl) > vm_batch_max_size(&hn) ? vm_batch_max_size(&hl) : vm_batch_max_size(&hn);
    uint8_t *msg = malloc(mcap);
    vm_error err = {0};

    enum { MEMCPY, LZ4_ENC, LZ4_DEC, NONE_ENC, NONE_DEC, P_ENC, P_DEC, NT };
    const char *names[NT] = {"memcpy", "lz4 plain encode", "lz4 plain decode", "proto none encode", "proto none decode",
                             "proto lz4 encode", "proto lz4 decode"};
    double best[NT];
    for (int i = 0; i < NT; i++) best[i] = 1e30;
    size_t lz4_bytes = 0, proto_bytes = 0, none_bytes = 0;
    int passes = getenv("PROTO_BENCH_PASSES") ? atoi(getenv("PROTO_BENCH_PASSES")) : 5;  // best of: the machine may be shared
    if (passes < 1) passes = 1;
    for (int pass = 0; pass < passes; pass++) {
        double t[NT] = {0};
        size_t lb = 0, pb = 0, nbts = 0;
        for (size_t k = 0; k < nb; k++) {
            double t0 = vm_now();
            memcpy(dst, batch[k], raw);
            t[MEMCPY] += vm_now() - t0;

            t0 = vm_now();
            int c = LZ4_compress_default((const char *)batch[k], lbuf, (int)raw, lcap);
            t[LZ4_ENC] += vm_now() - t0;
            t0 = vm_now();
            int d = LZ4_decompress_safe(lbuf, (char *)dst, c, (int)raw);
            t[LZ4_DEC] += vm_now() - t0;
            if (c <= 0 || d != (int)raw || memcmp(dst, batch[k], raw)) return fprintf(stderr, "lz4 round trip failed\n"), 1;
            lb += (size_t)c;

            for (int codec = 0; codec < 2; codec++) {
                vm_batch_header *h = codec ? &hl : &hn;
                size_t len;
                t0 = vm_now();
                int rc = vm_batch_encode(h, sm, vm, batch[k], msg, mcap, &len, &err);
                t[codec ? P_ENC : NONE_ENC] += vm_now() - t0;
                if (rc) return fprintf(stderr, "encode: %s\n", err.msg), 1;
                vm_batch_view v;
                t0 = vm_now();
                rc = vm_batch_parse(msg, len, &v, &err);
                if (!rc) rc = vm_batch_decode_pixels(&v, dst, raw, &err);
                t[codec ? P_DEC : NONE_DEC] += vm_now() - t0;
                if (rc || memcmp(dst, batch[k], raw)) return fprintf(stderr, "proto round trip: %s\n", err.msg), 1;
                if (codec) pb += len;
                else nbts += len;
            }
        }
        for (int i = 0; i < NT; i++) best[i] = best_of(best[i], t[i]);
        lz4_bytes = lb, proto_bytes = pb, none_bytes = nbts;
    }
    double total = (double)raw * nb;
    printf("  %-20s %8s %10s %12s\n", "", "GB/s", "vs memcpy", "ratio");
    for (int i = 0; i < NT; i++) {
        double gbs = total / best[i] / 1e9;
        double ratio = i == LZ4_ENC || i == LZ4_DEC ? total / lz4_bytes
                     : i == P_ENC || i == P_DEC     ? total / proto_bytes
                     : i == NONE_ENC || i == NONE_DEC ? total / none_bytes : 1.0;
        printf("  %-20s %8.2f %9.3fx %11.3fx\n", names[i], gbs, best[MEMCPY] / best[i], ratio);
    }
    printf("  proto lz4 vs plain lz4: encode %.2fx, decode %.2fx the speed, size %.4fx\n", best[LZ4_ENC] / best[P_ENC],
           best[LZ4_DEC] / best[P_DEC], (double)proto_bytes / lz4_bytes);

    // Filter study: LZ4 (256 KiB blocks) after each filter, per view, over every batch.
    const char *fnames[] = {"none", "row delta (left)", "row delta (up)", "byte planes", "planes + row delta"};
    uint8_t *work = malloc(raw), *tmp = malloc(fb);
    char *scratch = malloc((size_t)LZ4_compressBound(VM_BATCH_DEFAULT_BLOCK));
    int scap = LZ4_compressBound(VM_BATCH_DEFAULT_BLOCK);
    printf("  filter study (LZ4 in 256 KiB blocks after the filter; filter cost in GB/s, vectorized):\n");
    printf("  %-20s %8s %12s %12s %12s\n", "filter", "ratio", "vs none", "filter GB/s", "unfilter GB/s");
    double base_ratio = 0;
    for (int f = 0; f < 5; f++) {
        size_t bytes = 0;
        double tf = 0, ti = 0;
        for (size_t k = 0; k < nb; k++) {
            double bf = 1e30, t0;
            for (int rep = 0; rep < 3; rep++) {  // best of 3 (the machine is shared)
                memcpy(work, batch[k], raw);
                t0 = vm_now();
                for (int s = 0; s < B * V; s++) {
                    uint8_t *p = work + (size_t)s * fb;
                    if (f == 1) f_left(p, H, W);
                    else if (f == 2) f_up(p, H, W);
                    else if (f == 3) f_planes(p, H, W, tmp);
                    else if (f == 4) f_planes_left(p, H, W, tmp);
                }
                bf = best_of(bf, vm_now() - t0);
            }
            tf += bf;
            bytes += lz4_blocks_size(work, raw, scratch, scap);
            if (f == 1 || f == 2) {
                t0 = vm_now();
                for (int s = 0; s < B * V; s++) (f == 1 ? inv_left : inv_up)(work + (size_t)s * fb, H, W);
                ti += vm_now() - t0;  // one pass: the inverse runs on the filtered data once
                if (memcmp(work, batch[k], raw)) return fprintf(stderr, "%s does not invert\n", fnames[f]), 1;
            }
        }
        double ratio = total / bytes;
        if (f == 0) base_ratio = ratio;
        char fg[32] = "-", ig[32] = "-";
        if (f) snprintf(fg, sizeof fg, "%.2f", total / tf / 1e9);
        if (ti > 0) snprintf(ig, sizeof ig, "%.2f", total / ti / 1e9);
        printf("  %-20s %7.3fx %11.3fx %12s %12s\n", fnames[f], ratio, ratio / base_ratio, fg, ig);
    }
    for (size_t k = 0; k < nb; k++) free(batch[k]);
    free(batch), free(sm), free(vm), free(dst), free(lbuf), free(msg), free(work), free(tmp), free(scratch), free(frames);
    return 0;
}
