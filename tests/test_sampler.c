// tests/test_sampler.c — the sampler without video: policies, crop/flip statistics, the resize kernel
// against a straightforward reference, colour operations, determinism across threads.
// (tests/test_sampler_video.c covers decoding real and generated videos.)
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "common/rng.h"
#include "sampler/internal.h"
#include "tests/harness.h"

static vm_config base_config(void) {
    vm_config c;
    vm_config_defaults(&c);
    c.run.seed = 1234;
    c.model.img_size = 32;
    c.sampler.gap_unit = VM_UNIT_FRAMES;  // most tests pass no timestamps
    return c;
}

static vm_sampler *make(const vm_config *c) {
    vm_sampler *s = NULL;
    vm_error err = {0};
    CHECK_OK(vm_sampler_create(c, &s, &err), err);
    return s;
}

// Kolmogorov-Smirnov distance between the sample x[0..n) and U[lo, hi].
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double ks_uniform(double *x, int n, double lo, double hi) {
    qsort(x, n, sizeof *x, cmp_double);
    double d = 0;
    for (int i = 0; i < n; i++) {
        double F = (x[i] - lo) / (hi - lo);
        F = F < 0 ? 0 : F > 1 ? 1 : F;
        d = fmax(d, fmax(fabs(F - (double)i / n), fabs(F - (double)(i + 1) / n)));
    }
    return d;
}

// ---- RandomResizedCrop ------------------------------------------------------------------------------

// Scale [0.1, 0.5] on a square 1000x1000 frame: no try is ever rejected (the widest crop is
// sqrt(0.5 * 4/3) * 1000 = 816 px), so the drawn area fraction must be U[0.1, 0.5] and the log aspect
// ratio U[log 3/4, log 4/3], up to rounding w and h to pixels (< 0.4% of either range).
// Tolerance: KS distance <= 1.63 / sqrt(n) (1% false-alarm level) + 0.01 for the rounding.
TEST(rrc_follows_scale_and_ratio_distribution) {
    vm_config c = base_config();
    c.sampler.mode = VM_PAIR_SAME;
    c.sampler.scale_min = 0.1;
    c.sampler.scale_max = 0.5;
    vm_sampler *s = make(&c);
    enum { N = 20000 };
    double *area = malloc(sizeof(double) * N), *lratio = malloc(sizeof(double) * N);
    vm_view_plan v[2];
    vm_error err = {0};
    for (int i = 0; i < N / 2; i++) {
        CHECK_OK(vm_sampler_plan(s, 7, 0, (uint64_t)i, 10, NULL, 1000, 1000, v, &err), err);
        for (int j = 0; j < 2; j++) {
            CHECK(v[j].crop_x >= 0 && v[j].crop_y >= 0 && v[j].crop_x + v[j].crop_w <= 1000 &&
                  v[j].crop_y + v[j].crop_h <= 1000, "box %d,%d %dx%d", v[j].crop_x, v[j].crop_y, v[j].crop_w, v[j].crop_h);
            area[2 * i + j] = v[j].crop_w * (double)v[j].crop_h / 1e6;
            lratio[2 * i + j] = log((double)v[j].crop_w / v[j].crop_h);
        }
    }
    double tol = 1.63 / sqrt(N) + 0.01;
    double da = ks_uniform(area, N, 0.1, 0.5), dr = ks_uniform(lratio, N, log(0.75), log(4.0 / 3));
    CHECK(da <= tol, "area fraction KS distance %.4f > %.4f", da, tol);
    CHECK(dr <= tol, "log aspect KS distance %.4f > %.4f", dr, tol);
    free(area);
    free(lratio);
    vm_sampler_free(s);
}

// Default MAE ranges on a 4:3 frame: boxes always inside; both ends of the scale range are reached.
TEST(rrc_default_ranges_stay_inside) {
    vm_config c = base_config();
    vm_sampler *s = make(&c);
    vm_view_plan v[2];
    vm_error err = {0};
    double amin = 1, amax = 0;
    for (int i = 0; i < 5000; i++) {
        CHECK_OK(vm_sampler_plan(s, 3, 1, (uint64_t)i, 100, NULL, 341, 256, v, &err), err);
        for (int j = 0; j < 2; j++) {
            CHECK(v[j].crop_w >= 1 && v[j].crop_h >= 1 && v[j].crop_x >= 0 && v[j].crop_y >= 0 &&
                  v[j].crop_x + v[j].crop_w <= 341 && v[j].crop_y + v[j].crop_h <= 256);
            double a = v[j].crop_w * (double)v[j].crop_h / (341.0 * 256);
            double r = (double)v[j].crop_w / v[j].crop_h;
            CHECK(r >= 0.75 * 0.97 && r <= 4.0 / 3 * 1.03, "ratio %g", r);
            amin = fmin(amin, a);
            amax = fmax(amax, a);
        }
    }
    CHECK(amin < 0.21 && amax > 0.95, "area range reached [%g, %g]", amin, amax);
    vm_sampler_free(s);
}

// A 10:1 frame with scale >= 0.9 rejects all 10 tries: torchvision's centre-crop fallback gives
// h = 100, w = round(100 * 4/3) = 133, centred.
TEST(rrc_fallback_is_torchvision_centre_crop) {
    vm_config c = base_config();
    c.sampler.scale_min = 0.9;
    vm_sampler *s = make(&c);
    vm_view_plan v[2];
    vm_error err = {0};
    CHECK_OK(vm_sampler_plan(s, 0, 0, 0, 5, NULL, 1000, 100, v, &err), err);
    CHECK_EQ_INT(v[0].crop_w, 133);
    CHECK_EQ_INT(v[0].crop_h, 100);
    CHECK_EQ_INT(v[0].crop_x, (1000 - 133) / 2);
    CHECK_EQ_INT(v[0].crop_y, 0);
    // Tall frame: w = W, h = round(W / (3/4)).
    CHECK_OK(vm_sampler_plan(s, 0, 0, 0, 5, NULL, 60, 1000, v, &err), err);
    CHECK_EQ_INT(v[1].crop_w, 60);
    CHECK_EQ_INT(v[1].crop_h, 80);
    CHECK_EQ_INT(v[1].crop_y, (1000 - 80) / 2);
    vm_sampler_free(s);
}

// Flip rate: n = 20000 views, |rate - p| <= 4 standard deviations of a binomial proportion.
TEST(flip_rate_matches_flip_p) {
    const double ps[] = {0.0, 0.2, 0.5, 1.0};
    for (int q = 0; q < 4; q++) {
        vm_config c = base_config();
        c.sampler.flip_p = ps[q];
        vm_sampler *s = make(&c);
        vm_view_plan v[2];
        vm_error err = {0};
        int flips = 0, n = 20000;
        for (int i = 0; i < n / 2; i++) {
            CHECK_OK(vm_sampler_plan(s, 11, 2, (uint64_t)i, 50, NULL, 64, 48, v, &err), err);
            flips += v[0].flip + v[1].flip;
        }
        double rate = (double)flips / n, tol = 4 * sqrt(ps[q] * (1 - ps[q]) / n);
        CHECK(fabs(rate - ps[q]) <= tol, "flip_p %g: rate %.4f (tol %.4f)", ps[q], rate, tol);
        vm_sampler_free(s);
    }
}

// ---- frame choice ---------------------------------------------------------------------------------

// Timestamps of a variable-rate video: 30 fps with +-8 ms jitter, strictly ascending.
static int64_t *vfr_pts(int n, uint64_t seed) {
    int64_t *pts = malloc(sizeof(int64_t) * n);
    vm_rng r;
    vm_rng_init(&r, seed, 99);
    for (int i = 0; i < n; i++) pts[i] = (int64_t)i * 33333333 + (int64_t)vm_rng_int(&r, -8000000, 8000000);
    return pts;
}

TEST(uniform_gap_in_range_and_covers_it) {
    enum { N = 300, BINS = 15 };
    int64_t *pts = vfr_pts(N, 5);
    for (int unit = 0; unit < 2; unit++) {
        vm_config c = base_config();
        c.sampler.mode = VM_PAIR_UNIFORM;
        c.sampler.gap_unit = unit ? VM_UNIT_FRAMES : VM_UNIT_SECONDS;
        c.sampler.gap_min = unit ? 15 : 0.5;
        c.sampler.gap_max = unit ? 60 : 2.0;
        vm_sampler *s = make(&c);
        int hist[BINS] = {0}, first_seen[N] = {0};
        vm_view_plan v[2];
        vm_error err = {0};
        for (int i = 0; i < 6000; i++) {
            CHECK_OK(vm_sampler_plan(s, 1, 0, (uint64_t)i, N, pts, 64, 64, v, &err), err);
            CHECK(v[0].frame >= 0 && v[1].frame < N && v[0].frame < v[1].frame);
            double g = unit ? (double)(v[1].frame - v[0].frame) : (pts[v[1].frame] - pts[v[0].frame]) / 1e9;
            CHECK(g >= c.sampler.gap_min && g <= c.sampler.gap_max, "gap %g outside [%g, %g]", g, c.sampler.gap_min,
                  c.sampler.gap_max);
            int b = (int)((g - c.sampler.gap_min) / (c.sampler.gap_max - c.sampler.gap_min) * BINS);
            hist[b < BINS ? b : BINS - 1]++;
            first_seen[v[0].frame] = 1;
        }
        for (int b = 0; b < BINS; b++) CHECK(hist[b] > 0, "unit %d: gap bin %d of %d never drawn", unit, b, BINS);
        // Uniform over pairs: pairs with a short gap are more numerous (N - d of gap d), so the
        // lower third of the range must be drawn more often than the upper third.
        CHECK(hist[0] + hist[1] + hist[2] + hist[3] + hist[4] > hist[10] + hist[11] + hist[12] + hist[13] + hist[14]);
        CHECK(first_seen[0] && first_seen[N - 70], "first frames reach both ends");
        vm_sampler_free(s);
    }
    free(pts);
}

TEST(distant_takes_one_frame_per_half) {
    enum { N = 101 };
    int64_t *pts = vfr_pts(N, 6);
    vm_config c = base_config();
    c.sampler.mode = VM_PAIR_DISTANT;
    c.sampler.gap_unit = VM_UNIT_SECONDS;  // halves of the time span
    vm_sampler *s = make(&c);
    int seen[N] = {0};
    vm_view_plan v[2];
    vm_error err = {0};
    int64_t mid = pts[0] + (pts[N - 1] - pts[0] + 1) / 2;
    for (int i = 0; i < 4000; i++) {
        CHECK_OK(vm_sampler_plan(s, 2, 0, (uint64_t)i, N, pts, 64, 64, v, &err), err);
        CHECK(pts[v[0].frame] < mid && pts[v[1].frame] >= mid, "frames %lld %lld around the middle",
              (long long)v[0].frame, (long long)v[1].frame);
        seen[v[0].frame] = seen[v[1].frame] = 1;
    }
    for (int i = 0; i < N; i++) CHECK(seen[i], "frame %d never drawn", i);
    vm_sampler_free(s);
    free(pts);
}

TEST(same_mode_uses_one_frame_with_two_augmentations) {
    vm_config c = base_config();
    c.sampler.mode = VM_PAIR_SAME;
    vm_sampler *s = make(&c);
    vm_view_plan v[2];
    vm_error err = {0};
    int differ = 0;
    for (int i = 0; i < 200; i++) {
        CHECK_OK(vm_sampler_plan(s, 2, 0, (uint64_t)i, 40, NULL, 64, 48, v, &err), err);
        CHECK_EQ_INT(v[0].frame, v[1].frame);
        differ += v[0].crop_x != v[1].crop_x || v[0].crop_w != v[1].crop_w;
    }
    CHECK(differ > 150, "the two views' crops differ in %d of 200 draws", differ);
    vm_sampler_free(s);
}

// A 1-second video with gap [2, 3] s: clamp uses the longest gap it has (first and last frame, the
// gap cut to the span); skip refuses with VM_ERANGE; a 1-frame video gives that frame twice.
TEST(short_videos_clamp_or_skip) {
    enum { N = 30 };
    int64_t pts[N];
    for (int i = 0; i < N; i++) pts[i] = (int64_t)i * 33366667;
    vm_config c = base_config();
    c.sampler.mode = VM_PAIR_UNIFORM;
    c.sampler.gap_unit = VM_UNIT_SECONDS;
    c.sampler.gap_min = 2;
    c.sampler.gap_max = 3;
    vm_sampler *s = make(&c);
    vm_view_plan v[2];
    vm_error err = {0};
    for (int i = 0; i < 50; i++) {
        CHECK_OK(vm_sampler_plan(s, 4, 0, (uint64_t)i, N, pts, 64, 64, v, &err), err);
        CHECK(v[0].frame == 0 && v[1].frame == N - 1, "clamped pair %lld %lld", (long long)v[0].frame,
              (long long)v[1].frame);
    }
    CHECK_OK(vm_sampler_plan(s, 4, 0, 0, 1, pts, 64, 64, v, &err), err);
    CHECK(v[0].frame == 0 && v[1].frame == 0);
    // Gap [0.5, 2] on the same 1 s video: a real pair exists, no clamping needed.
    vm_config c2 = c;
    c2.sampler.gap_min = 0.5;
    c2.sampler.gap_max = 2;
    vm_sampler *s2 = make(&c2);
    CHECK_OK(vm_sampler_plan(s2, 4, 0, 0, N, pts, 64, 64, v, &err), err);
    CHECK((pts[v[1].frame] - pts[v[0].frame]) >= 500000000);
    vm_sampler_free(s2);
    vm_sampler_free(s);

    c.sampler.short_video = VM_SHORT_SKIP;
    s = make(&c);
    CHECK_EQ_INT(vm_sampler_plan(s, 4, 0, 0, N, pts, 64, 64, v, &err), VM_ERANGE);
    CHECK(strstr(err.msg, "no pair") != NULL, "message: %s", err.msg);
    CHECK_EQ_INT(vm_sampler_plan(s, 4, 0, 0, 1, pts, 64, 64, v, &err), VM_ERANGE);
    vm_sampler_free(s);
    c.sampler.mode = VM_PAIR_DISTANT;
    s = make(&c);
    CHECK_EQ_INT(vm_sampler_plan(s, 4, 0, 0, 1, pts, 64, 64, v, &err), VM_ERANGE);
    CHECK_OK(vm_sampler_plan(s, 4, 0, 0, 2, pts, 64, 64, v, &err), err);
    CHECK(v[0].frame == 0 && v[1].frame == 1);
    vm_sampler_free(s);
    c.sampler.short_video = VM_SHORT_CLAMP;  // distant, clamp: a 1-frame video gives it twice
    s = make(&c);
    CHECK_OK(vm_sampler_plan(s, 4, 0, 0, 1, pts, 64, 64, v, &err), err);
    CHECK(v[0].frame == 0 && v[1].frame == 0);
    vm_sampler_free(s);
}

// The schema allows gap_max up to 1e18 s: no overflow, every pair at least gap_min apart qualifies;
// a gap_min beyond any video clamps to the span.
TEST(extreme_gap_bounds) {
    enum { N = 40 };
    int64_t pts[N];
    for (int i = 0; i < N; i++) pts[i] = (int64_t)i * 40000000;  // 25 fps
    vm_config c = base_config();
    c.sampler.mode = VM_PAIR_UNIFORM;
    c.sampler.gap_unit = VM_UNIT_SECONDS;
    c.sampler.gap_min = 0.5;
    c.sampler.gap_max = 1e18;
    vm_sampler *s = make(&c);
    vm_view_plan v[2];
    vm_error err = {0};
    int longest = 0;
    for (int i = 0; i < 300; i++) {
        CHECK_OK(vm_sampler_plan(s, 1, 0, (uint64_t)i, N, pts, 64, 64, v, &err), err);
        CHECK(v[1].frame - v[0].frame >= 13, "gap %lld frames < 0.5 s", (long long)(v[1].frame - v[0].frame));
        longest = longest > v[1].frame - v[0].frame ? longest : (int)(v[1].frame - v[0].frame);
    }
    CHECK(longest >= 35, "long gaps drawn too (longest %d frames)", longest);
    vm_sampler_free(s);
    c.sampler.gap_min = 1e17;
    s = make(&c);
    CHECK_OK(vm_sampler_plan(s, 1, 0, 0, N, pts, 64, 64, v, &err), err);
    CHECK(v[0].frame == 0 && v[1].frame == N - 1);
    vm_sampler_free(s);
}

TEST(clip_policy_strided_segments_and_short) {
    vm_config c = base_config();
    c.sampler.policy = VM_POLICY_CLIP;
    c.sampler.clip_len = 8;
    c.sampler.clip_stride = 4;
    vm_sampler *s = make(&c);
    CHECK_EQ_INT(vm_sampler_views(s), 8);
    vm_view_plan v[8];
    vm_error err = {0};
    int start_seen[100 - 28] = {0};
    for (int i = 0; i < 3000; i++) {
        CHECK_OK(vm_sampler_plan(s, 9, 0, (uint64_t)i, 100, NULL, 64, 48, v, &err), err);
        for (int t = 1; t < 8; t++) {
            CHECK_EQ_INT(v[t].frame - v[t - 1].frame, 4);
            CHECK(v[t].crop_x == v[0].crop_x && v[t].crop_w == v[0].crop_w && v[t].flip == v[0].flip,
                  "one crop for the clip");
        }
        CHECK(v[7].frame < 100);
        start_seen[v[0].frame] = 1;
    }
    for (int i = 0; i < 100 - 28; i++) CHECK(start_seen[i], "start %d never drawn", i);
    // 10 frames for a 29-frame clip: the last frame repeats.
    CHECK_OK(vm_sampler_plan(s, 9, 0, 0, 10, NULL, 64, 48, v, &err), err);
    CHECK(v[0].frame == 0 && v[2].frame == 8 && v[3].frame == 9 && v[7].frame == 9);
    vm_sampler_free(s);
    // TSN: frame t inside segment t.
    c.sampler.clip_stride = 0;
    s = make(&c);
    for (int i = 0; i < 200; i++) {
        CHECK_OK(vm_sampler_plan(s, 9, 0, (uint64_t)i, 83, NULL, 64, 48, v, &err), err);
        for (int t = 0; t < 8; t++) CHECK(v[t].frame >= t * 83 / 8 && v[t].frame < (t + 1) * 83 / 8);
    }
    CHECK_OK(vm_sampler_plan(s, 9, 0, 0, 3, NULL, 64, 48, v, &err), err);  // fewer frames than T
    for (int t = 0; t < 8; t++) CHECK(v[t].frame >= 0 && v[t].frame < 3);
    vm_sampler_free(s);
}

TEST(multiview_is_deterministic_evaluation_views) {
    vm_config c = base_config();
    c.sampler.policy = VM_POLICY_MULTIVIEW;
    c.sampler.clip_len = 4;
    c.sampler.clip_stride = 2;
    c.sampler.num_clips = 3;
    c.sampler.num_crops = 3;
    vm_sampler *s = make(&c);
    CHECK_EQ_INT(vm_sampler_views(s), 36);
    vm_view_plan v[36], w[36];
    vm_error err = {0};
    CHECK_OK(vm_sampler_plan(s, 1, 0, 0, 107, NULL, 320, 240, v, &err), err);
    CHECK_OK(vm_sampler_plan(s, 2, 5, 9, 107, NULL, 320, 240, w, &err), err);
    CHECK(!memcmp(v, w, sizeof v), "no randomness in evaluation views");
    // [clip][crop][t]: clip 0 starts at 0, clip 2 ends at the last frame; crops left/centre/right.
    CHECK_EQ_INT(v[0].frame, 0);
    CHECK_EQ_INT(v[2 * 12 + 3].frame, 106);
    for (int k = 0; k < 3; k++) {
        CHECK_EQ_INT(v[k * 4].crop_w, 240);
        CHECK_EQ_INT(v[k * 4].crop_x, k * 40);
        CHECK_EQ_INT(v[k * 4].flip, 0);
    }
    vm_sampler_free(s);
}

// ---- resize kernel ---------------------------------------------------------------------------------

// The straightforward reference: copy the crop out, resize it in double precision with PIL's
// bilinear filter evaluated directly per output pixel (2-D weights, no intermediate rounding),
// mirror afterwards, round once.
static void reference(const uint8_t *src, int sw, int x0, int y0, int w, int h, uint8_t *dst, int dw, int dh, int flip) {
    uint8_t *crop = malloc((size_t)w * h * 3);
    for (int r = 0; r < h; r++) memcpy(crop + (size_t)r * w * 3, src + ((size_t)(y0 + r) * sw + x0) * 3, (size_t)w * 3);
    double sx = (double)w / dw, sy = (double)h / dh, fx = fmax(sx, 1), fy = fmax(sy, 1);
    for (int oy = 0; oy < dh; oy++)
        for (int ox = 0; ox < dw; ox++) {
            double cx = (ox + 0.5) * sx, cy = (oy + 0.5) * sy, acc[3] = {0, 0, 0}, wsum = 0;
            for (int iy = 0; iy < h; iy++) {
                double wy = fmax(0, 1 - fabs((iy + 0.5 - cy) / fy));
                if (wy == 0) continue;
                for (int ix = 0; ix < w; ix++) {
                    double wx = fmax(0, 1 - fabs((ix + 0.5 - cx) / fx));
                    if (wx == 0) continue;
                    for (int ch = 0; ch < 3; ch++) acc[ch] += wx * wy * crop[((size_t)iy * w + ix) * 3 + ch];
                    wsum += wx * wy;
                }
            }
            int tx = flip ? dw - 1 - ox : ox;
            for (int ch = 0; ch < 3; ch++) dst[((size_t)oy * dw + tx) * 3 + ch] = (uint8_t)lround(acc[ch] / wsum);
        }
    free(crop);
}

// A frame with texture at every scale: gradients, a checkerboard, noise.
static void test_frame(uint8_t *img, int w, int h, uint64_t seed) {
    vm_rng r;
    vm_rng_init(&r, seed, 1);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = img + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)(x * 255 / (w > 1 ? w - 1 : 1));
            p[1] = ((x / 3 + y / 2) & 1) ? 220 : 30;
            p[2] = (uint8_t)vm_rng_u32(&r);
        }
}

// Agreement within 1 level (fixed-point rounding of two passes), on enlargements, shrinks by up to
// 7x, odd sizes, 1-pixel crops and flips.
TEST(resize_matches_reference_within_one_level) {
    const int W = 181, H = 97;
    uint8_t *img = malloc((size_t)W * H * 3);
    test_frame(img, W, H, 42);
    const int cases[][7] = {  // x, y, w, h, dw, dh, flip
        {0, 0, 181, 97, 32, 32, 0},  {10, 5, 60, 40, 64, 64, 1}, {3, 7, 17, 13, 53, 41, 0},
        {0, 0, 181, 97, 25, 14, 1},  {50, 20, 1, 1, 8, 8, 0},    {100, 3, 1, 90, 16, 16, 1},
        {7, 9, 150, 3, 31, 7, 0},    {1, 1, 179, 95, 179, 95, 1}, {40, 30, 33, 33, 32, 32, 0},
    };
    vm_scratch scratch = {0};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const int *q = cases[k];
        uint8_t *got = malloc((size_t)q[4] * q[5] * 3), *ref = malloc((size_t)q[4] * q[5] * 3);
        vm_error err = {0};
        CHECK_OK(vm_crop_resize_rgb(img, W, H, (size_t)W * 3, q[0], q[1], q[2], q[3], got, q[4], q[5], q[6], &scratch,
                                    &err), err);
        reference(img, W, q[0], q[1], q[2], q[3], ref, q[4], q[5], q[6]);
        int maxd = 0;
        for (size_t i = 0; i < (size_t)q[4] * q[5] * 3; i++) maxd = fmax(maxd, abs(got[i] - ref[i]));
        CHECK(maxd <= 1, "case %zu (%dx%d+%d+%d -> %dx%d flip %d): max difference %d levels", k, q[2], q[3], q[0],
              q[1], q[4], q[5], q[6], maxd);
        free(got);
        free(ref);
    }
    vm_scratch_free(&scratch);
    free(img);
}

// The SIMD loops compute the same integers as the scalar ones: byte-identical outputs, including
// crops touching the last pixel of the buffer (where the 4-byte loads fall back to scalar).
TEST(resize_simd_equals_scalar) {
    const int W = 123, H = 77;
    uint8_t *img = malloc((size_t)W * H * 3);
    test_frame(img, W, H, 8);
    vm_rng r;
    vm_rng_init(&r, 5, 6);
    vm_scratch scratch = {0};
    for (int i = 0; i < 300; i++) {
        int w = (int)vm_rng_int(&r, 1, W), h = (int)vm_rng_int(&r, 1, H);
        int x = i % 3 ? (int)vm_rng_int(&r, 0, W - w) : W - w, y = i % 3 ? (int)vm_rng_int(&r, 0, H - h) : H - h;
        int dw = (int)vm_rng_int(&r, 1, 70), dh = (int)vm_rng_int(&r, 1, 70), flip = i & 1;
        uint8_t *a = malloc((size_t)dw * dh * 3), *b = malloc((size_t)dw * dh * 3);
        vm_error err = {0};
        CHECK_OK(vm_crop_resize_impl(img, W, H, (size_t)W * 3, x, y, w, h, a, dw, dh, flip, 1, &scratch, &err), err);
        CHECK_OK(vm_crop_resize_impl(img, W, H, (size_t)W * 3, x, y, w, h, b, dw, dh, flip, 0, &scratch, &err), err);
        CHECK(!memcmp(a, b, (size_t)dw * dh * 3), "%dx%d+%d+%d -> %dx%d flip %d differs", w, h, x, y, dw, dh, flip);
        free(a);
        free(b);
    }
    vm_scratch_free(&scratch);
    free(img);
}

TEST(resize_rejects_boxes_outside_and_keeps_flat_flat) {
    uint8_t img[10 * 8 * 3], out[5 * 5 * 3];
    memset(img, 77, sizeof img);
    vm_error err = {0};
    CHECK_EQ_INT(vm_crop_resize_rgb(img, 10, 8, 30, 5, 0, 6, 8, out, 5, 5, 0, NULL, &err), VM_EINVAL);
    CHECK(strstr(err.msg, "outside") != NULL);
    CHECK_EQ_INT(vm_crop_resize_rgb(img, 10, 8, 30, 0, 0, 0, 8, out, 5, 5, 0, NULL, &err), VM_EINVAL);
    CHECK_OK(vm_crop_resize_rgb(img, 10, 8, 30, 1, 1, 9, 7, out, 5, 5, 1, NULL, &err), err);
    for (size_t i = 0; i < sizeof out; i++) CHECK_EQ_INT(out[i], 77);
}

// ---- colour -------------------------------------------------------------------------------------------

TEST(colour_operations) {
    enum { S = 16 };
    uint8_t a[S * S * 3], b[S * S * 3];
    test_frame(a, S, S, 3);
    memcpy(b, a, sizeof a);
    vm_view_plan p = {0};
    p.brightness = p.contrast = p.saturation = 1.f;
    p.jitter_order[1] = 1, p.jitter_order[2] = 2, p.jitter_order[3] = 3;
    vm_color_jitter_rgb(b, S, S, &p);
    CHECK(!memcmp(a, b, sizeof a), "identity factors change nothing");
    p.brightness = 0.f;
    vm_color_jitter_rgb(b, S, S, &p);
    for (size_t i = 0; i < sizeof b; i++) CHECK_EQ_INT(b[i], 0);
    memcpy(b, a, sizeof a);
    p.brightness = 1.f;
    p.saturation = 0.f;  // saturation 0 = grayscale
    vm_color_jitter_rgb(b, S, S, &p);
    uint8_t g[S * S * 3];
    memcpy(g, a, sizeof a);
    vm_grayscale_rgb(g, S, S);
    for (int i = 0; i < S * S; i++) {
        CHECK(g[3 * i] == g[3 * i + 1] && g[3 * i] == g[3 * i + 2]);
        CHECK(abs(b[3 * i] - g[3 * i]) <= 1, "saturation 0 vs grayscale at %d: %d %d", i, b[3 * i], g[3 * i]);
    }
    memcpy(b, a, sizeof a);  // a hue shift of one full turn is the identity (within float rounding)
    p.saturation = 1.f;
    p.hue = 0.5f;
    vm_color_jitter_rgb(b, S, S, &p);
    vm_color_jitter_rgb(b, S, S, &p);
    for (size_t i = 0; i < sizeof a; i++) CHECK(abs(a[i] - b[i]) <= 2, "hue round trip at %zu: %d vs %d", i, a[i], b[i]);
    memcpy(b, a, sizeof a);
    vm_solarize_rgb(b, S, S, 128);
    for (size_t i = 0; i < sizeof a; i++) CHECK_EQ_INT(b[i], a[i] >= 128 ? 255 - a[i] : a[i]);
    uint8_t flat[S * S * 3];
    memset(flat, 90, sizeof flat);
    vm_error err = {0};
    CHECK_OK(vm_gaussian_blur_rgb(flat, S, S, 5, 1.5f, NULL, &err), err);
    for (size_t i = 0; i < sizeof flat; i++) CHECK_EQ_INT(flat[i], 90);
    memcpy(b, a, sizeof a);
    CHECK_OK(vm_gaussian_blur_rgb(b, S, S, 5, 1.5f, NULL, &err), err);
    double va = 0, vb = 0;  // blur lowers the variance of the noise channel
    for (int i = 1; i < S * S; i++) {
        va += abs(a[3 * i + 2] - a[3 * i - 1]);
        vb += abs(b[3 * i + 2] - b[3 * i - 1]);
    }
    CHECK(vb < 0.5 * va, "blur: neighbour differences %g -> %g", va, vb);
    CHECK_EQ_INT(vm_gaussian_blur_rgb(b, S, S, 4, 1.f, NULL, &err), VM_EINVAL);
}

// Presets: BYOL solarises only view 1 (p 0.2) and always blurs view 0; none applies nothing.
TEST(augmentation_presets) {
    vm_config c = base_config();
    c.sampler.aug_preset = VM_AUG_BYOL;
    vm_sampler *s = make(&c);
    vm_view_plan v[2];
    vm_error err = {0};
    int sol[2] = {0}, blur[2] = {0}, jit = 0, gray = 0, n = 4000;
    for (int i = 0; i < n; i++) {
        CHECK_OK(vm_sampler_plan(s, 5, 0, (uint64_t)i, 20, NULL, 64, 64, v, &err), err);
        for (int j = 0; j < 2; j++) sol[j] += v[j].solarize, blur[j] += v[j].blur;
        jit += v[0].jitter;
        gray += v[1].grayscale;
    }
    CHECK_EQ_INT(sol[0], 0);
    CHECK_EQ_INT(blur[0], n);
    CHECK(fabs(sol[1] / (double)n - 0.2) < 0.03 && fabs(blur[1] / (double)n - 0.1) < 0.03);
    CHECK(fabs(jit / (double)n - 0.8) < 0.03 && fabs(gray / (double)n - 0.2) < 0.03);
    vm_sampler_free(s);
    c.sampler.aug_preset = VM_AUG_NONE;
    s = make(&c);
    for (int i = 0; i < 500; i++) {
        CHECK_OK(vm_sampler_plan(s, 5, 0, (uint64_t)i, 20, NULL, 64, 64, v, &err), err);
        CHECK(!v[0].jitter && !v[0].grayscale && !v[0].blur && !v[0].solarize && !v[1].solarize);
    }
    vm_sampler_free(s);
}

// ---- determinism -------------------------------------------------------------------------------------

// Plan + render many samples over synthetic frames; each thread takes every nth sample (so the
// order of work differs with the thread count); the bytes must not.
typedef struct {
    const vm_sampler *s;
    uint8_t *out;
    int first, step, count, failed;
} det_job;

enum { DET_SAMPLES = 24, DET_W = 97, DET_H = 71, DET_FRAMES = 40 };

static void *det_worker(void *arg) {
    det_job *j = arg;
    const int S = vm_sampler_size(j->s), V = vm_sampler_views(j->s);
    uint8_t *frame = malloc((size_t)DET_W * DET_H * 3);
    vm_scratch scratch = {0};
    for (int b = j->first; b < j->count; b += j->step) {
        vm_view_plan v[2];
        vm_error err = {0};
        uint64_t video = (uint64_t)b / 4, draw = (uint64_t)b % 4;
        if (vm_sampler_plan(j->s, video, 3, draw, DET_FRAMES, NULL, DET_W, DET_H, v, &err)) { j->failed = 1; break; }
        for (int k = 0; k < V; k++) {
            test_frame(frame, DET_W, DET_H, video * 1000 + (uint64_t)v[k].frame);
            if (vm_sampler_render(j->s, frame, DET_W, DET_H, &v[k], j->out + ((size_t)b * V + k) * S * S * 3, &scratch,
                                  &err)) { j->failed = 1; break; }
        }
    }
    vm_scratch_free(&scratch);
    free(frame);
    return NULL;
}

static void run_threads(const vm_sampler *s, int nthreads, uint8_t *out) {
    pthread_t th[8];
    det_job jobs[8];
    for (int t = 0; t < nthreads; t++) {
        jobs[t] = (det_job){s, out, t, nthreads, DET_SAMPLES, 0};
        CHECK(pthread_create(&th[t], NULL, det_worker, &jobs[t]) == 0);
    }
    for (int t = 0; t < nthreads; t++) pthread_join(th[t], NULL);
    for (int t = 0; t < nthreads; t++) CHECK(!jobs[t].failed, "thread %d failed", t);
}

TEST(same_seed_same_bytes_with_1_and_3_threads) {
    vm_config c = base_config();
    c.sampler.mode = VM_PAIR_UNIFORM;
    c.sampler.gap_unit = VM_UNIT_FRAMES;
    c.sampler.gap_min = 2;
    c.sampler.gap_max = 10;
    c.sampler.aug_preset = VM_AUG_BYOL;  // every augmentation in play
    vm_sampler *s = make(&c);
    size_t n = (size_t)DET_SAMPLES * 2 * 32 * 32 * 3;
    uint8_t *a = calloc(1, n), *b = calloc(1, n), *d = calloc(1, n);
    run_threads(s, 1, a);
    run_threads(s, 3, b);
    CHECK(!memcmp(a, b, n), "1 vs 3 threads differ");
    vm_sampler_free(s);
    c.run.seed = 1235;  // and the seed matters
    s = make(&c);
    run_threads(s, 3, d);
    CHECK(memcmp(a, d, n) != 0, "another seed gives the same bytes");
    vm_sampler_free(s);
    free(a);
    free(b);
    free(d);
}
