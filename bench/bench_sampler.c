// bench/bench_sampler.c — the sampler's costs (run by bench/bench_sampler.sh).
//
//   bench_sampler kernel OUTDIR [img_size] [frame_w frame_h] [views]
//       Crop + resize + flip of `views` RandomResizedCrop views (default config ranges) from a
//       frame_w x frame_h frame (default 341 x 256: decode_short_side 256 of a 4:3 video) to
//       img_size (224).  Writes OUTDIR/frame.npy and OUTDIR/boxes.txt (x y w h flip per line) so
//       that bench/opencv_crop.py replays the same crops; prints "kernel_us_per_view X".
//   bench_sampler decode CONFIG VIDEO... 
//       Draws pairs_per_video pairs from each video through vm_sampler_draw and prints decode and
//       render seconds per pair and frames decoded per pair.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <libyuv/planar_functions.h>
#include <libyuv/rotate_argb.h>
#include <libyuv/scale_rgb.h>
#include <math.h>
#include "common/io.h"
#include "common/rng.h"
#include "sampler/sampler.h"

// CPU time of this thread: the machine running the benchmark may be shared, and wall time would
// count other processes' turns (the OpenCV baseline measures the same way).
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

// The definition being approximated (tests/test_sampler.c has the same): crop, PIL/torch
// antialiased bilinear evaluated per output pixel in double precision, flip, round once.
static void reference(const uint8_t *src, int sw, int x0, int y0, int w, int h, uint8_t *dst, int dw, int dh, int flip) {
    double sx = (double)w / dw, sy = (double)h / dh, fx = fmax(sx, 1), fy = fmax(sy, 1);
    for (int oy = 0; oy < dh; oy++)
        for (int ox = 0; ox < dw; ox++) {
            double cx = (ox + 0.5) * sx, cy = (oy + 0.5) * sy, acc[3] = {0, 0, 0}, wsum = 0;
            int iy0 = (int)fmax(0, floor(cy - fy)), iy1 = (int)fmin(h - 1, ceil(cy + fy));
            int ix0 = (int)fmax(0, floor(cx - fx)), ix1 = (int)fmin(w - 1, ceil(cx + fx));
            for (int iy = iy0; iy <= iy1; iy++) {
                double wy = fmax(0, 1 - fabs((iy + 0.5 - cy) / fy));
                for (int ix = ix0; ix <= ix1 && wy > 0; ix++) {
                    double wx = fmax(0, 1 - fabs((ix + 0.5 - cx) / fx));
                    const uint8_t *p = src + ((size_t)(y0 + iy) * sw + x0 + ix) * 3;
                    for (int c = 0; c < 3; c++) acc[c] += wx * wy * p[c];
                    wsum += wx * wy;
                }
            }
            int tx = flip ? dw - 1 - ox : ox;
            for (int c = 0; c < 3; c++) dst[((size_t)oy * dw + tx) * 3 + c] = (uint8_t)lround(acc[c] / wsum);
        }
}

// libyuv doing the same job: RGBScale (row-wise through ARGB) with its best filter, then a mirror.
static int yuv_crop_resize(const uint8_t *src, int sw, int x, int y, int w, int h, uint8_t *dst, uint8_t *tmp, int S,
                           int flip) {
    const uint8_t *s = src + ((size_t)y * sw + x) * 3;
    if (!flip) return RGBScale(s, sw * 3, w, h, dst, S * 3, S, S, kFilterBox);
    int rc = RGBScale(s, sw * 3, w, h, tmp, S * 3, S, S, kFilterBox);
    return rc ? rc : RGB24Mirror(tmp, S * 3, dst, S * 3, S, S);
}

static int kernel(int argc, char **argv) {
    const char *dir = argv[2];
    int S = argc > 3 ? atoi(argv[3]) : 224, W = argc > 5 ? atoi(argv[4]) : 341, H = argc > 5 ? atoi(argv[5]) : 256;
    int N = argc > 6 ? atoi(argv[6]) : 2000;
    vm_config c;
    vm_config_defaults(&c);
    c.model.img_size = S;
    c.sampler.gap_unit = VM_UNIT_FRAMES;
    vm_sampler *s;
    vm_error err = {0};
    if (vm_sampler_create(&c, &s, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    // Gradients that wrap around (hard edges, where misplaced filters show) plus noise; content
    // does not change the cost.
    uint8_t *frame = malloc((size_t)W * H * 3), *out = malloc((size_t)S * S * 3);
    vm_rng r;
    vm_rng_init(&r, 1, 2);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int ch = 0; ch < 3; ch++)
                frame[((size_t)y * W + x) * 3 + ch] = (uint8_t)((x * (ch + 1) + y * (3 - ch)) / 3 + (vm_rng_u32(&r) & 31));
    char path[2048];
    snprintf(path, sizeof path, "%s/frame.npy", dir);
    int64_t shape[3] = {H, W, 3};
    if (vm_npy_write(path, frame, "|u1", 1, shape, 3, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    snprintf(path, sizeof path, "%s/boxes.txt", dir);
    FILE *fb = fopen(path, "w");
    if (!fb) { perror(path); return 1; }
    vm_view_plan *plans = malloc(sizeof *plans * N);
    for (int i = 0; i < N; i += 2) {
        vm_view_plan v[2];
        if (vm_sampler_plan(s, 0, 0, (uint64_t)i, 100, NULL, W, H, v, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
        plans[i] = v[0];
        if (i + 1 < N) plans[i + 1] = v[1];
    }
    for (int i = 0; i < N; i++)
        fprintf(fb, "%d %d %d %d %d\n", plans[i].crop_x, plans[i].crop_y, plans[i].crop_w, plans[i].crop_h, plans[i].flip);
    fclose(fb);
    vm_scratch scratch = {0};
    double best[5];
    for (int rep = 0; rep < 5; rep++) {
        double t0 = cpu_now();
        for (int i = 0; i < N; i++)
            if (vm_crop_resize_rgb(frame, W, H, (size_t)W * 3, plans[i].crop_x, plans[i].crop_y, plans[i].crop_w,
                                   plans[i].crop_h, out, S, S, plans[i].flip, &scratch, &err)) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
        best[rep] = (cpu_now() - t0) / N;
    }
    qsort(best, 5, sizeof best[0], cmp_d);
    printf("kernel_us_per_view %.2f\n", best[0] * 1e6);  // fastest of 5: least disturbed
    uint8_t *tmp = malloc((size_t)S * S * 3), *ref = malloc((size_t)S * S * 3);
    for (int rep = 0; rep < 5; rep++) {
        double t0 = cpu_now();
        for (int i = 0; i < N; i++)
            if (yuv_crop_resize(frame, W, plans[i].crop_x, plans[i].crop_y, plans[i].crop_w, plans[i].crop_h, out, tmp,
                                S, plans[i].flip)) {
                fprintf(stderr, "libyuv RGBScale failed\n");
                return 1;
            }
        best[rep] = (cpu_now() - t0) / N;
    }
    qsort(best, 5, sizeof best[0], cmp_d);
    printf("libyuv_us_per_view %.2f\n", best[0] * 1e6);
    // Quality: mean and largest difference to the double-precision reference, first 100 views.
    double sum[2] = {0, 0};
    int worst[2] = {0, 0};
    const int NQ = N < 100 ? N : 100;
    for (int i = 0; i < NQ; i++) {
        const vm_view_plan *p = &plans[i];
        reference(frame, W, p->crop_x, p->crop_y, p->crop_w, p->crop_h, ref, S, S, p->flip);
        for (int k = 0; k < 2; k++) {
            if (k == 0) vm_crop_resize_rgb(frame, W, H, (size_t)W * 3, p->crop_x, p->crop_y, p->crop_w, p->crop_h, out,
                                           S, S, p->flip, &scratch, &err);
            else yuv_crop_resize(frame, W, p->crop_x, p->crop_y, p->crop_w, p->crop_h, out, tmp, S, p->flip);
            for (size_t e = 0; e < (size_t)S * S * 3; e++) {
                int d = abs(out[e] - ref[e]);
                sum[k] += d;
                if (d > worst[k]) worst[k] = d;
            }
        }
    }
    printf("quality_vs_reference vicmae_mean %.3f vicmae_max %d libyuv_mean %.3f libyuv_max %d\n",
           sum[0] / ((double)NQ * S * S * 3), worst[0], sum[1] / ((double)NQ * S * S * 3), worst[1]);
    free(tmp);
    free(ref);
    vm_scratch_free(&scratch);
    free(plans);
    free(frame);
    free(out);
    vm_sampler_free(s);
    return 0;
}

static int decode(int argc, char **argv) {
    vm_config c;
    vm_config_defaults(&c);
    vm_error err = {0};
    if (vm_config_load(&c, argv[2], &err) || vm_config_validate(&c, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    vm_sampler *s;
    if (vm_sampler_create(&c, &s, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    const int K = c.sampler.pairs_per_video, V = vm_sampler_views(s), S = vm_sampler_size(s);
    uint8_t *px = malloc((size_t)K * V * S * S * 3);
    vm_sample_meta *sm = malloc(sizeof *sm * K);
    vm_view_meta *vm = malloc(sizeof *vm * K * V);
    vm_sampler_stats st = {0};
    double t0 = vm_now();
    for (int i = 3; i < argc; i++) {
        if (vm_sampler_draw_path(s, argv[i], (uint64_t)i, 0, 0, K, px, sm, vm, &st, &err) && err.code != VM_ERANGE) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
    }
    double total = vm_now() - t0;
    double n = st.samples ? (double)st.samples : 1;
    printf("videos %lld samples %lld skipped %lld\n", (long long)st.videos, (long long)st.samples,
           (long long)st.skipped_short);
    printf("decode_ms_per_sample %.3f render_ms_per_sample %.3f total_ms_per_sample %.3f\n", st.decode_s / n * 1e3,
           st.render_s / n * 1e3, total / n * 1e3);
    printf("frames_needed_per_sample %.2f frames_decoded_per_sample %.2f\n", st.frames_needed / n,
           st.frames_decoded / n);
    printf("render_fraction_of_decode %.4f\n", st.render_s / (st.decode_s > 0 ? st.decode_s : 1));
    free(px);
    free(sm);
    free(vm);
    vm_sampler_free(s);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "kernel")) return kernel(argc, argv);
    if (argc >= 4 && !strcmp(argv[1], "decode")) return decode(argc, argv);
    fprintf(stderr, "usage: bench_sampler kernel OUTDIR [img_size [w h [views]]] | decode CONFIG VIDEO...\n");
    return 2;
}
