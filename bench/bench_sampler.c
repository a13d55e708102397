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
    // A natural-looking frame: smooth gradients plus noise (content does not change the cost).
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
