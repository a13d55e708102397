// tests/test_cuda_ops.c — every op of the CUDA backend against the CPU reference backend.
//
// Random inputs (never zeros), the same on both backends; CUDA outputs are poisoned with NaN
// before each run, so an element the kernel forgets to write fails the comparison.  Outputs that
// accumulate (+=) start from the same random values on both sides.  Error = ||cuda - cpu|| / ||cpu||:
// fp32 under 1e-5.  bf16 "convert" path: the matrix products against the CPU-bf16 reference
// (vm_backend_cpu_bf16: operands rounded at the same points), so only fp32 accumulation order and
// the rare bf16 rounding it flips differ: under 5e-4 (expected 1e-6..1e-4; one rounding point
// missing or misplaced moves an output by ~2e-3, the bf16-vs-fp32 distance of a product, which
// the old bound of 1e-2 against fp32 could not see).  bf16 "fast" path (cuBLAS decides where it
// rounds): against fp32, under 1e-2 (the envelope of rounding all or none of the operands).
// Without a GPU (or without CUDA in the build) every test skips with the reason.
#include <stdlib.h>
#include <string.h>
#include "common/rng.h"
#include "tests/harness.h"
#include "trainer/backend.h"
#include "trainer/cpu/cpu_ops.h"  // vm_bf16_from_float / vm_bf16_to_float
#include "trainer/cuda/cuda_backend.h"

#define TOL32 1e-5
#define TOL16 1e-2      // bf16 fast path vs fp32
#define TOL16_EMU 5e-4  // bf16 convert path vs the CPU-bf16 reference

static const vm_backend_ops *cpu, *cu;
static const vm_backend_ops *ref;  // the reference of the products: cpu, or cpu-bf16 (set_mode)
static vm_rng rng;
static double tol = TOL32;

// Precision and bf16 path of the CUDA backend, with the reference and tolerance that go with them.
static void set_mode(int bf16, int fast) {
    vm_backend_cuda_set_precision(bf16);
    vm_backend_cuda_set_bf16_path(fast);
    ref = bf16 && !fast ? vm_backend_cpu_bf16(0) : cpu;
    tol = !bf16 ? TOL32 : fast ? TOL16 : TOL16_EMU;
}

// The backends for this test, or SKIP.  Precision fp32 unless bf16.
static void setup(int bf16, uint64_t seed) {
    char why[512] = "";
    cu = vm_backend_cuda(why, sizeof why);
    if (!cu) SKIP("no GPU: %s", why);
    cpu = vm_backend_cpu(0);
    vm_backend_cuda_set_lt(0);
    set_mode(bf16, 0);
    vm_rng_init(&rng, seed, 1);
}

// ---- host buffers (freed at exit of the process: tests are short) --------------------------------
static float *hrand(size_t n, float lo, float hi) {
    float *x = malloc(n * sizeof(float));
    CHECK(x);
    for (size_t i = 0; i < n; i++) {
        float v;
        do v = lo + (hi - lo) * vm_rng_uniformf(&rng); while (v == 0.0f);
        x[i] = v;
    }
    return x;
}
static float *hcopy(const float *x, size_t n) {
    float *y = malloc(n * sizeof(float));
    CHECK(y);
    memcpy(y, x, n * sizeof(float));
    return y;
}
static float *hnan(size_t n) {
    float *y = malloc(n * sizeof(float));
    CHECK(y);
    for (size_t i = 0; i < n; i++) y[i] = NAN;
    return y;
}
// Random permutation of 0..L-1 for each of B rows: (B, L)
static int32_t *hperm(int B, int L) {
    int32_t *p = malloc((size_t)B * L * sizeof(int32_t));
    CHECK(p);
    for (int b = 0; b < B; b++) {
        int32_t *r = p + (size_t)b * L;
        for (int i = 0; i < L; i++) r[i] = i;
        for (int i = L - 1; i > 0; i--) {
            int j = (int)vm_rng_int(&rng, 0, i);
            int32_t t = r[i]; r[i] = r[j]; r[j] = t;
        }
    }
    return p;
}

// ---- device buffers ------------------------------------------------------------------------------
static void *dput(const void *h, size_t bytes) {
    void *d = cu->alloc(bytes);
    CHECK(d, "cuda alloc of %zu bytes failed", bytes);
    cu->to_device(d, h, bytes);
    return d;
}
static float *dputf(const float *h, size_t n) { return dput(h, n * sizeof(float)); }
static float *dpoison(size_t n) {
    float *h = hnan(n);
    float *d = dputf(h, n);
    free(h);
    return d;
}
// Frees every buffer listed with fn: cu->free for device buffers, free for host ones.
#define FREE_ALL(fn, ...)                                                                         \
    do {                                                                                          \
        void *all_[] = {__VA_ARGS__};                                                             \
        for (size_t i_ = 0; i_ < sizeof all_ / sizeof *all_; i_++) fn(all_[i_]);                  \
    } while (0)

// ||a - ref|| / ||ref|| of two host arrays (a NaN in a fails any tolerance).
static double relerr(const float *a, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)a[i] - ref[i];
        num += e * e;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

// ||cuda - ref|| / ||ref|| of the device array d against the host reference.
static double relerr_dev(const float *d, const float *ref, size_t n) {
    float *h = malloc(n * sizeof(float));
    CHECK(h);
    cu->to_host(h, d, n * sizeof(float));
    double e = relerr(h, ref, n);
    free(h);
    return e;
}
#define CHECK_DEV(name, d, ref, n)                                                                \
    do {                                                                                          \
        double e_ = relerr_dev((d), (ref), (n));                                                  \
        CHECK(e_ < tol, "%s: relative error %.3g (tolerance %.0e)", (name), e_, tol);            \
    } while (0)
#define CHECK_SCALAR(name, a, b)                                                                  \
    do {                                                                                          \
        double a_ = (a), b_ = (b), e_ = fabs(a_ - b_) / (fabs(b_) > 0 ? fabs(b_) : 1.0);          \
        CHECK(e_ < tol, "%s: cuda %.9g vs cpu %.9g (relative %.3g)", (name), a_, b_, e_);       \
    } while (0)

// ---- input ----------------------------------------------------------------------------------------
TEST(cuda_patchify) {
    setup(0, 1);
    const int B = 3, H = 48, W = 32, P = 8, L = (H / P) * (W / P), D = 3 * P * P;
    size_t nimg = (size_t)B * H * W * 3, n = (size_t)B * L * D;
    uint8_t *img = malloc(nimg);
    for (size_t i = 0; i < nimg; i++) img[i] = (uint8_t)vm_rng_int(&rng, 0, 255);
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    uint8_t *dimg = dput(img, nimg);
    for (int order = 0; order < 2; order++) {
        float *ref = hnan(n), *out = dpoison(n);
        cpu->patchify(ref, img, B, H, W, P, order, mean, std);
        cu->patchify(out, dimg, B, H, W, P, order, mean, std);
        CHECK_DEV(order ? "patchify conv order" : "patchify mae order", out, ref, n);
        cu->free(out);
        free(ref);
    }
    cu->free(dimg);
    free(img);
}

// ---- dense ------------------------------------------------------------------------------------------
static void check_matmul(int N, int C, int OC, int with_bias, int with_dinp) {
    float *x = hrand((size_t)N * C, -1, 1), *w = hrand((size_t)OC * C, -0.5f, 0.5f), *b = hrand(OC, -1, 1);
    float *g = hrand((size_t)N * OC, -1, 1);
    float *dw0 = hrand((size_t)OC * C, -1, 1), *db0 = hrand(OC, -1, 1);
    float *out = hnan((size_t)N * OC), *dx = hnan((size_t)N * C), *dw = hcopy(dw0, (size_t)OC * C),
          *db = hcopy(db0, OC);
    ref->matmul_forward(out, x, w, with_bias ? b : NULL, N, C, OC);
    ref->matmul_backward(with_dinp ? dx : NULL, dw, with_bias ? db : NULL, g, x, w, N, C, OC);

    float *d_x = dputf(x, (size_t)N * C), *d_w = dputf(w, (size_t)OC * C), *d_b = dputf(b, OC),
          *d_g = dputf(g, (size_t)N * OC), *d_dw = dputf(dw0, (size_t)OC * C), *d_db = dputf(db0, OC);
    float *d_out = dpoison((size_t)N * OC), *d_dx = dpoison((size_t)N * C);
    cu->matmul_forward(d_out, d_x, d_w, with_bias ? d_b : NULL, N, C, OC);
    cu->matmul_backward(with_dinp ? d_dx : NULL, d_dw, with_bias ? d_db : NULL, d_g, d_x, d_w, N, C, OC);
    CHECK_DEV("matmul out", d_out, out, (size_t)N * OC);
    if (with_dinp) CHECK_DEV("matmul dinp", d_dx, dx, (size_t)N * C);
    CHECK_DEV("matmul dweight", d_dw, dw, (size_t)OC * C);
    CHECK_DEV("matmul dbias", d_db, db, OC);
    FREE_ALL(cu->free, d_x, d_w, d_b, d_g, d_dw, d_db, d_out, d_dx);
    FREE_ALL(free, x, w, b, g, dw0, db0, out, dx, dw, db);
}

TEST(cuda_matmul) {
    setup(0, 2);
    check_matmul(96, 64, 80, 1, 1);
    check_matmul(37, 50, 30, 0, 1);     // odd shapes, no bias
    check_matmul(200, 192, 576, 1, 0);  // no dinp (first layer)
}

TEST(cuda_matmul_bf16) {
    setup(1, 3);
    check_matmul(96, 64, 80, 1, 1);
    check_matmul(256, 384, 1152, 1, 1);
    check_matmul(37, 50, 30, 0, 1);
    vm_backend_cuda_set_precision(0);
}

// ---- normalisation ------------------------------------------------------------------------------------
TEST(cuda_layernorm) {
    setup(0, 4);
    const int N = 70, C = 96;
    size_t n = (size_t)N * C;
    float *x = hrand(n, -2, 3), *w = hrand(C, 0.5f, 1.5f), *b = hrand(C, -1, 1), *g = hrand(n, -1, 1);
    float *dx0 = hrand(n, -1, 1), *dw0 = hrand(C, -1, 1), *db0 = hrand(C, -1, 1);
    float *out = hnan(n), *mean = hnan(N), *rstd = hnan(N), *dx = hcopy(dx0, n), *dw = hcopy(dw0, C),
          *db = hcopy(db0, C);
    cpu->layernorm_forward(out, mean, rstd, x, w, b, N, C, 1e-6f);
    cpu->layernorm_backward(dx, dw, db, g, x, w, mean, rstd, N, C);
    float *d_x = dputf(x, n), *d_w = dputf(w, C), *d_b = dputf(b, C), *d_g = dputf(g, n);
    float *d_out = dpoison(n), *d_mean = dpoison(N), *d_rstd = dpoison(N);
    float *d_dx = dputf(dx0, n), *d_dw = dputf(dw0, C), *d_db = dputf(db0, C);
    cu->layernorm_forward(d_out, d_mean, d_rstd, d_x, d_w, d_b, N, C, 1e-6f);
    CHECK_DEV("layernorm out", d_out, out, n);
    CHECK_DEV("layernorm mean", d_mean, mean, N);
    CHECK_DEV("layernorm rstd", d_rstd, rstd, N);
    cu->layernorm_backward(d_dx, d_dw, d_db, d_g, d_x, d_w, d_mean, d_rstd, N, C);
    CHECK_DEV("layernorm dinp", d_dx, dx, n);
    CHECK_DEV("layernorm dweight", d_dw, dw, C);
    CHECK_DEV("layernorm dbias", d_db, db, C);
}

static void check_batchnorm(int N, int C, int affine) {
    size_t n = (size_t)N * C;
    float *x = hrand(n, -2, 3), *w = hrand(C, 0.5f, 1.5f), *b = hrand(C, -1, 1), *g = hrand(n, -1, 1);
    float *rm0 = hrand(C, -0.5f, 0.5f), *rv0 = hrand(C, 0.5f, 1.5f), *dw0 = hrand(C, -1, 1), *db0 = hrand(C, -1, 1);
    float *out = hnan(n), *mean = hnan(C), *rstd = hnan(C), *rm = hcopy(rm0, C), *rv = hcopy(rv0, C);
    float *dx = hnan(n), *dw = hcopy(dw0, C), *db = hcopy(db0, C);
    const float *W = affine ? w : NULL, *Bb = affine ? b : NULL;
    cpu->batchnorm_forward(out, mean, rstd, rm, rv, x, W, Bb, N, C, 1e-5f, 0.1f);
    cpu->batchnorm_backward(dx, affine ? dw : NULL, affine ? db : NULL, g, x, W, mean, rstd, N, C);
    float *d_x = dputf(x, n), *d_w = dputf(w, C), *d_b = dputf(b, C), *d_g = dputf(g, n);
    float *d_out = dpoison(n), *d_mean = dpoison(C), *d_rstd = dpoison(C), *d_rm = dputf(rm0, C),
          *d_rv = dputf(rv0, C), *d_dx = dpoison(n), *d_dw = dputf(dw0, C), *d_db = dputf(db0, C);
    cu->batchnorm_forward(d_out, d_mean, d_rstd, d_rm, d_rv, d_x, affine ? d_w : NULL, affine ? d_b : NULL, N, C,
                          1e-5f, 0.1f);
    CHECK_DEV("batchnorm out", d_out, out, n);
    CHECK_DEV("batchnorm mean", d_mean, mean, C);
    CHECK_DEV("batchnorm rstd", d_rstd, rstd, C);
    CHECK_DEV("batchnorm running_mean", d_rm, rm, C);
    CHECK_DEV("batchnorm running_var", d_rv, rv, C);
    cu->batchnorm_backward(d_dx, affine ? d_dw : NULL, affine ? d_db : NULL, d_g, d_x, affine ? d_w : NULL,
                           d_mean, d_rstd, N, C);
    CHECK_DEV("batchnorm dinp", d_dx, dx, n);
    if (affine) {
        CHECK_DEV("batchnorm dweight", d_dw, dw, C);
        CHECK_DEV("batchnorm dbias", d_db, db, C);
    }
}

TEST(cuda_batchnorm) {
    setup(0, 5);
    check_batchnorm(24, 100, 1);
    check_batchnorm(17, 40, 0);  // affine=False (the projector's last BatchNorm)
}

// ---- attention ---------------------------------------------------------------------------------------
// Where flash runs (modes AUTO and FLASH, on the shapes it takes; for an fp32 qkv only in bf16
// convert mode) att holds the forward's row statistics, not probabilities (cuda_backend.h): the
// checks compare out and dqkv, and check the statistics with check_flash_stats instead, which fails
// when flash was expected and another path ran.  act16: the bf16-activation op (any precision).
static int expect_flash(int T, int C, int NH, int act16) {
    int mode = vm_backend_cuda_fused_attention();
    if (mode != VM_ATTENTION_FLASH && mode != VM_ATTENTION_AUTO) return 0;
    if (!act16 && !(vm_backend_cuda_precision() && !vm_backend_cuda_bf16_path())) return 0;
    return vm_backend_cuda_flash_attention_takes(T, C, NH);
}

// The flash forward's att: the first B*NH*T*2 floats are (row max, 1 / row sum) of each query row,
// the rest is left as it was — still the poison, or the forward that ran was not the flash one (the
// fused and cuBLAS paths write every probability, and the test would pass without running flash).
// 1 / row sum is the row's largest probability (exp(max - max) = 1): the reference att's row max.
static void check_flash_stats(const char *name, const float *d_att, const float *att, int B, int T, int NH) {
    size_t rows = (size_t)B * NH * T, na = rows * T, touched = 0, bad_max = 0;
    float *h = malloc(na * sizeof(float)), *inv = malloc(rows * sizeof(float)), *want = malloc(rows * sizeof(float));
    CHECK(h && inv && want);
    cu->to_host(h, d_att, na * sizeof(float));
    for (size_t r = 0; r < rows; r++) {
        float m = att[r * T];
        for (int j = 1; j < T; j++) m = att[r * T + j] > m ? att[r * T + j] : m;
        want[r] = m, inv[r] = h[2 * r + 1];
        bad_max += !isfinite(h[2 * r]);
    }
    for (size_t i = 2 * rows; i < na; i++) touched += !isnan(h[i]);
    double e = relerr(inv, want, rows);
    free(h), free(inv), free(want);
    CHECK(touched == 0, "%s: %zu floats of att past the row statistics were written (not the flash forward?)", name,
          touched);
    CHECK(bad_max == 0, "%s: %zu row maxima are not finite", name, bad_max);
    CHECK(e < tol, "%s: 1 / row sum vs the reference's largest probability: relative error %.3g (tolerance %.0e)",
          name, e, tol);
}

static void check_attention(int B, int T, int C, int NH) {
    size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C, na = (size_t)B * NH * T * T;
    float *qkv = hrand(nq, -1.5f, 1.5f), *g = hrand(no, -1, 1);
    float *out = hnan(no), *att = hnan(na), *dqkv = hnan(nq), *scr = hnan(na);
    ref->attention_forward(out, att, qkv, B, T, C, NH);
    ref->attention_backward(dqkv, scr, g, qkv, att, B, T, C, NH);
    float *d_qkv = dputf(qkv, nq), *d_g = dputf(g, no);
    float *d_out = dpoison(no), *d_att = dpoison(na), *d_dqkv = dpoison(nq), *d_scr = dpoison(na);
    cu->attention_forward(d_out, d_att, d_qkv, B, T, C, NH);
    CHECK_DEV("attention out", d_out, out, no);
    if (!expect_flash(T, C, NH, 0)) CHECK_DEV("attention att", d_att, att, na);
    else check_flash_stats("attention att (flash statistics)", d_att, att, B, T, NH);
    cu->attention_backward(d_dqkv, d_scr, d_g, d_qkv, d_att, B, T, C, NH);
    CHECK_DEV("attention dqkv", d_dqkv, dqkv, nq);
    FREE_ALL(cu->free, d_qkv, d_g, d_out, d_att, d_dqkv, d_scr);
    FREE_ALL(free, qkv, g, out, att, dqkv, scr);
}

TEST(cuda_attention) {
    setup(0, 6);
    check_attention(2, 13, 32, 4);
    check_attention(3, 50, 128, 2);  // encoder-like: 1 + 49 visible tokens, hs 64
    check_attention(1, 197, 64, 1);  // decoder-like length
}

TEST(cuda_attention_bf16) {  // the batched cuBLAS path
    setup(1, 7);
    vm_backend_cuda_set_fused_attention(VM_ATTENTION_CUBLAS);
    check_attention(2, 13, 32, 4);
    check_attention(3, 50, 128, 2);
    check_attention(1, 197, 64, 1);
    check_attention(2, 197, 512, 16);
    vm_backend_cuda_set_fused_attention(VM_ATTENTION_AUTO);
    vm_backend_cuda_set_precision(0);
}

// A shape {B, T, C, NH, backward} of the fused tests: the fused forward takes it, and the fused
// backward takes it (1) or not (0), or as shared memory allows (-1).
static void check_fused_takes(const int *s) {
    CHECK(vm_backend_cuda_fused_attention_takes(s[1], s[2], s[3], 0), "fused forward takes T=%d C=%d NH=%d", s[1], s[2],
          s[3]);
    CHECK(s[4] < 0 || vm_backend_cuda_fused_attention_takes(s[1], s[2], s[3], 1) == s[4],
          "fused backward takes T=%d C=%d NH=%d: %d", s[1], s[2], s[3], !s[4]);
}

// The fused kernels (trainer/cuda/cuda_attention.cu), on shapes they must take: every head size,
// T a multiple of 16 and not (padding rows and columns), one and several query rounds of the
// backward.  Same reference and tolerance as the cuBLAS path: the rounding points are the same.
TEST(cuda_attention_fused_bf16) {
    setup(1, 11);
    vm_backend_cuda_set_fused_attention(VM_ATTENTION_FUSED);
    static const int shapes[][5] = {  // B, T, C, NH, backward fused too (-1: as shared memory allows)
        {2, 13, 32, 2, 1},    // hs 16, one partial tile
        {3, 50, 128, 2, 1},   // encoder-like: 1 + 49 visible tokens, hs 64
        {2, 197, 512, 16, 1}, // decoder-like: 1 + 196 tokens, hs 32 (two backward rounds)
        {2, 64, 256, 2, 1},   // hs 128
        {1, 100, 256, 2, 0},  // hs 128, too many dK/dV tiles for the fused backward: cuBLAS there
        {2, 256, 128, 4, -1}, // the longest sequence, hs 32 (backward: 234 KB of shared memory)
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        const int *s = shapes[i];
        check_fused_takes(s);
        check_attention(s[0], s[1], s[2], s[3]);
    }
    CHECK(!vm_backend_cuda_fused_attention_takes(13, 32, 4, 0), "head size 8 is not taken");
    CHECK(!vm_backend_cuda_fused_attention_takes(257, 128, 4, 0), "T = 257 is not taken");
    vm_backend_cuda_set_fused_attention(VM_ATTENTION_AUTO);
    vm_backend_cuda_set_precision(0);
}

// The flash kernels (trainer/cuda/cuda_attention_flash.cu), on shapes they must take: every head size
// they serve, T a multiple of 16 and not, the shortest (2) and longest (256) sequences, one and
// several key/query tiles per warp in the backward (more than its 8 warps' worth).  Same reference
// and tolerance as the other paths (the rounding points are the same); att is not compared.  Under
// compute-sanitizer (VICMAE_MEMCHECK) the shapes marked quick only: racecheck is slow.
static const int flash_shapes[][5] = {  // B, T, C, NH, quick
    {2, 13, 32, 2, 1},    // hs 16, one partial tile
    {3, 50, 128, 2, 1},   // encoder-like: 1 + 49 visible tokens, hs 64
    {2, 197, 512, 16, 0}, // decoder-like: 1 + 196 tokens, hs 32 (13 tiles: two rounds of 8 warps)
    {1, 197, 64, 1, 1},   // decoder length, hs 64 (the largest backward shared memory taken: 205 KB)
    {2, 64, 128, 2, 0},   // hs 64, no padding
    {2, 100, 192, 3, 0},  // hs 64, padding rows and columns
    {1, 256, 32, 1, 1},   // the longest sequence, hs 32 (16 tiles: the largest score registers)
    {3, 2, 64, 2, 1},     // the shortest sequence (2 floats of statistics per row fill att)
    {2, 17, 128, 2, 1},   // hs 64, a second tile holding one row (15 padding rows and columns)
    {2, 197, 64, 4, 0},   // hs 16 on the decoder length (13 tiles: score registers of 13 key tiles)
};
static int flash_shape_skipped(const int *s) { return !s[4] && getenv("VICMAE_MEMCHECK") != NULL; }

TEST(cuda_attention_flash_bf16) {
    setup(1, 29);
    vm_backend_cuda_set_fused_attention(VM_ATTENTION_FLASH);
    CHECK(vm_backend_cuda_fused_attention() == VM_ATTENTION_FLASH, "flash mode is selectable");
    for (size_t i = 0; i < sizeof flash_shapes / sizeof *flash_shapes; i++) {
        const int *s = flash_shapes[i];
        CHECK(vm_backend_cuda_flash_attention_takes(s[1], s[2], s[3]), "flash takes T=%d C=%d NH=%d", s[1], s[2], s[3]);
        if (!flash_shape_skipped(s)) check_attention(s[0], s[1], s[2], s[3]);
    }
    CHECK(!vm_backend_cuda_flash_attention_takes(64, 256, 2), "head size 128 is not taken");
    CHECK(!vm_backend_cuda_flash_attention_takes(13, 32, 4), "head size 8 is not taken");
    CHECK(!vm_backend_cuda_flash_attention_takes(257, 128, 4), "T = 257 is not taken");
    CHECK(!vm_backend_cuda_flash_attention_takes(1, 64, 2), "T = 1 is not taken (att too small for the statistics)");
    // hs 128 in flash mode: the fused kernels, as FUSED (att holds probabilities)
    check_attention(2, 64, 256, 2);
    vm_backend_cuda_set_fused_attention(VM_ATTENTION_AUTO);
    vm_backend_cuda_set_precision(0);
}

// ---- pointwise ---------------------------------------------------------------------------------------
TEST(cuda_pointwise) {
    setup(0, 8);
    const size_t n = 10007;
    float *x = hrand(n, -3, 3), *y = hrand(n, -2, 2), *g = hrand(n, -1, 1);
    float *d_x = dputf(x, n), *d_y = dputf(y, n), *d_g = dputf(g, n);
    float *ref = hnan(n), *d_o = dpoison(n);
    cpu->gelu_forward(ref, x, n); cu->gelu_forward(d_o, d_x, n); CHECK_DEV("gelu_forward", d_o, ref, n);
    cu->free(d_o); d_o = dpoison(n);
    cpu->gelu_backward(ref, x, g, n); cu->gelu_backward(d_o, d_x, d_g, n); CHECK_DEV("gelu_backward", d_o, ref, n);
    cu->free(d_o); d_o = dpoison(n);
    cpu->relu_forward(ref, x, n); cu->relu_forward(d_o, d_x, n); CHECK_DEV("relu_forward", d_o, ref, n);
    cu->free(d_o); d_o = dpoison(n);
    cpu->relu_backward(ref, x, g, n); cu->relu_backward(d_o, d_x, d_g, n); CHECK_DEV("relu_backward", d_o, ref, n);
    cu->free(d_o); d_o = dpoison(n);
    cpu->add(ref, x, y, n); cu->add(d_o, d_x, d_y, n); CHECK_DEV("add", d_o, ref, n);
    // views one element in (not 16-byte aligned): the one-at-a-time path of the 8-wide kernels
    cu->free(d_o); d_o = dpoison(n);
    cpu->gelu_forward(ref, x, n); cu->gelu_forward(d_o + 1, d_x + 1, n - 1);
    CHECK_DEV("gelu_forward, unaligned", d_o + 1, ref + 1, n - 1);
    cpu->gelu_backward(ref, x, g, n); cu->gelu_backward(d_o + 1, d_x + 1, d_g + 1, n - 1);
    CHECK_DEV("gelu_backward, unaligned", d_o + 1, ref + 1, n - 1);
    cpu->add(ref, x, y, n); cu->add(d_o + 1, d_x + 1, d_y + 1, n - 1);
    CHECK_DEV("add, unaligned", d_o + 1, ref + 1, n - 1);
    // accumulate and scale work in place on a copy of x
    float *acc = hcopy(x, n), *d_acc = dputf(x, n);
    cpu->accumulate(acc, y, n); cu->accumulate(d_acc, d_y, n); CHECK_DEV("accumulate", d_acc, acc, n);
    cpu->scale(acc, -0.37f, n); cu->scale(d_acc, -0.37f, n); CHECK_DEV("scale", d_acc, acc, n);

    const int B = 3, T = 17, C = 24;
    size_t nt = (size_t)B * T * C;
    float *inp = hrand(nt, -1, 1), *pos = hrand((size_t)T * C, -1, 1), *dpos0 = hrand((size_t)T * C, -1, 1);
    float *o = hnan(nt), *dpos = hcopy(dpos0, (size_t)T * C);
    cpu->add_rows(o, inp, pos, B, T, C);
    cpu->add_rows_backward(dpos, inp, B, T, C);
    float *d_inp = dputf(inp, nt), *d_pos = dputf(pos, (size_t)T * C), *d_o2 = dpoison(nt),
          *d_dpos = dputf(dpos0, (size_t)T * C);
    cu->add_rows(d_o2, d_inp, d_pos, B, T, C);
    CHECK_DEV("add_rows", d_o2, o, nt);
    cu->add_rows(d_inp, d_inp, d_pos, B, T, C);  // in place, as the model uses it
    CHECK_DEV("add_rows in place", d_inp, o, nt);
    cu->to_device(d_inp, inp, nt * sizeof(float));
    cu->add_rows_backward(d_dpos, d_inp, B, T, C);
    CHECK_DEV("add_rows_backward", d_dpos, dpos, (size_t)T * C);
}

// ---- token plumbing -------------------------------------------------------------------------------------
TEST(cuda_tokens) {
    setup(0, 9);
    const int B = 3, L = 16, K = 5, C = 40;
    // ids_keep = the first K of a random permutation (as MAE's argsort of noise), ids_restore its inverse
    int32_t *perm = hperm(B, L), *keep = malloc((size_t)B * K * 4), *restore = malloc((size_t)B * L * 4);
    for (int b = 0; b < B; b++) {
        for (int k = 0; k < K; k++) keep[b * K + k] = perm[b * L + k];
        for (int i = 0; i < L; i++) restore[b * L + perm[b * L + i]] = i;
    }
    int32_t *d_keep = dput(keep, (size_t)B * K * 4), *d_restore = dput(restore, (size_t)B * L * 4);
    size_t nx = (size_t)B * L * C, ne = (size_t)B * (K + 1) * C, nd = (size_t)B * (L + 1) * C;
    float *x = hrand(nx, -1, 1), *cls = hrand(C, -1, 1), *mtok = hrand(C, -1, 1);
    float *d_x = dputf(x, nx), *d_cls = dputf(cls, C), *d_mtok = dputf(mtok, C);

    float *enc = hnan(ne), *d_enc = dpoison(ne);
    cpu->gather_tokens(enc, x, cls, keep, B, L, K, C);
    cu->gather_tokens(d_enc, d_x, d_cls, d_keep, B, L, K, C);
    CHECK_DEV("gather_tokens", d_enc, enc, ne);
    float *genc = hrand(ne, -1, 1), *dcls0 = hrand(C, -1, 1), *dx = hnan(nx), *dcls = hcopy(dcls0, C);
    cpu->gather_tokens_backward(dx, dcls, genc, keep, B, L, K, C);
    float *d_genc = dputf(genc, ne), *d_dx = dpoison(nx), *d_dcls = dputf(dcls0, C);
    cu->gather_tokens_backward(d_dx, d_dcls, d_genc, d_keep, B, L, K, C);
    CHECK_DEV("gather_tokens_backward dx", d_dx, dx, nx);
    CHECK_DEV("gather_tokens_backward dcls", d_dcls, dcls, C);

    float *dec = hnan(nd), *d_dec = dpoison(nd);
    cpu->unshuffle_tokens(dec, genc, mtok, restore, B, L, K, C);
    cu->unshuffle_tokens(d_dec, d_genc, d_mtok, d_restore, B, L, K, C);
    CHECK_DEV("unshuffle_tokens", d_dec, dec, nd);
    float *gdec = hrand(nd, -1, 1), *dm0 = hrand(C, -1, 1), *dxe = hnan(ne), *dm = hcopy(dm0, C);
    cpu->unshuffle_tokens_backward(dxe, dm, gdec, restore, B, L, K, C);
    float *d_gdec = dputf(gdec, nd), *d_dxe = dpoison(ne), *d_dm = dputf(dm0, C);
    cu->unshuffle_tokens_backward(d_dxe, d_dm, d_gdec, d_restore, B, L, K, C);
    CHECK_DEV("unshuffle_tokens_backward dx", d_dxe, dxe, ne);
    CHECK_DEV("unshuffle_tokens_backward dmask_token", d_dm, dm, C);

    // drop_first_token over the decoder tensor (T = L + 1)
    size_t nl = (size_t)B * L * C;
    float *dr = hnan(nl), *d_dr = dpoison(nl);
    cpu->drop_first_token(dr, gdec, B, L + 1, C);
    cu->drop_first_token(d_dr, d_gdec, B, L + 1, C);
    CHECK_DEV("drop_first_token", d_dr, dr, nl);
    float *gd = hrand(nl, -1, 1), *ddr = hnan(nd), *d_gd = dputf(gd, nl), *d_ddr = dpoison(nd);
    cpu->drop_first_token_backward(ddr, gd, B, L + 1, C);
    cu->drop_first_token_backward(d_ddr, d_gd, B, L + 1, C);
    CHECK_DEV("drop_first_token_backward", d_ddr, ddr, nd);

    // pooling over the encoder tensor (T = K + 1), both modes; backward accumulates
    for (int pc = 0; pc < 2; pc++) {
        size_t np = (size_t)B * C;
        float *po = hnan(np), *d_po = dpoison(np);
        cpu->pool_forward(po, genc, B, K + 1, C, pc);
        cu->pool_forward(d_po, d_genc, B, K + 1, C, pc);
        CHECK_DEV(pc ? "pool_forward cls" : "pool_forward mean", d_po, po, np);
        float *gp = hrand(np, -1, 1), *acc0 = hrand(ne, -1, 1), *acc = hcopy(acc0, ne);
        cpu->pool_backward(acc, gp, B, K + 1, C, pc);
        float *d_gp = dputf(gp, np), *d_acc = dputf(acc0, ne);
        cu->pool_backward(d_acc, d_gp, B, K + 1, C, pc);
        CHECK_DEV(pc ? "pool_backward cls" : "pool_backward mean", d_acc, acc, ne);
    }
}

// ---- losses -------------------------------------------------------------------------------------------------
TEST(cuda_mae_loss) {
    setup(0, 10);
    const int B = 4, L = 49, D = 48;
    size_t n = (size_t)B * L * D;
    float *pred = hrand(n, -1, 1), *target = hrand(n, -2, 2), *mask = malloc((size_t)B * L * 4);
    for (int i = 0; i < B * L; i++) mask[i] = vm_rng_uniformf(&rng) < 0.75f ? 1.0f : 0.0f;
    float *d_pred = dputf(pred, n), *d_t = dputf(target, n), *d_mask = dputf(mask, (size_t)B * L);
    for (int np = 0; np < 2; np++) {
        float loss = NAN, dloss = NAN, *dp = hnan(n), *d_dp = dpoison(n);
        cpu->mae_loss(&loss, dp, pred, target, mask, B, L, D, np, 0.7f);
        cu->mae_loss(&dloss, d_dp, d_pred, d_t, d_mask, B, L, D, np, 0.7f);
        CHECK_SCALAR(np ? "mae loss (norm_pix)" : "mae loss", dloss, loss);
        CHECK_DEV(np ? "mae dpred (norm_pix)" : "mae dpred", d_dp, dp, n);
    }
}

TEST(cuda_infonce_loss) {
    setup(0, 11);
    const int N = 24, D = 32;
    size_t n = (size_t)N * D;
    float *z1 = hrand(n, -1, 1), *z2 = hrand(n, -1, 1);
    for (size_t i = 0; i < n; i++) z2[i] = 0.6f * z1[i] + 0.4f * z2[i];  // positives closer
    float loss = NAN, closs = NAN, *dz1 = hnan(n), *dz2 = hnan(n);
    cpu->infonce_loss(&loss, dz1, dz2, z1, z2, N, D, 0.1f, 0.9f);
    float *d_z1 = dputf(z1, n), *d_z2 = dputf(z2, n), *d_dz1 = dpoison(n), *d_dz2 = dpoison(n);
    cu->infonce_loss(&closs, d_dz1, d_dz2, d_z1, d_z2, N, D, 0.1f, 0.9f);
    CHECK_SCALAR("infonce loss", closs, loss);
    CHECK_DEV("infonce dz1", d_dz1, dz1, n);
    CHECK_DEV("infonce dz2", d_dz2, dz2, n);
}

TEST(cuda_simsiam_loss) {
    setup(0, 12);
    const int N = 20, D = 36;
    size_t n = (size_t)N * D;
    float *p1 = hrand(n, -1, 1), *p2 = hrand(n, -1, 1), *z1 = hrand(n, -1, 1), *z2 = hrand(n, -1, 1);
    float loss = NAN, closs = NAN, *dp1 = hnan(n), *dp2 = hnan(n);
    cpu->simsiam_loss(&loss, dp1, dp2, p1, p2, z1, z2, N, D, 1.3f);
    float *d_p1 = dputf(p1, n), *d_p2 = dputf(p2, n), *d_z1 = dputf(z1, n), *d_z2 = dputf(z2, n);
    float *d_dp1 = dpoison(n), *d_dp2 = dpoison(n);
    cu->simsiam_loss(&closs, d_dp1, d_dp2, d_p1, d_p2, d_z1, d_z2, N, D, 1.3f);
    CHECK_SCALAR("simsiam loss", closs, loss);
    CHECK_DEV("simsiam dp1", d_dp1, dp1, n);
    CHECK_DEV("simsiam dp2", d_dp2, dp2, n);
}

TEST(cuda_vicreg_loss) {
    setup(0, 13);
    const int N = 32, D = 24;
    size_t n = (size_t)N * D;
    // scales around 1 so that some columns have std < 1 (hinge active) and some not
    float *z1 = hrand(n, -1.5f, 1.5f), *z2 = hrand(n, -2.5f, 2.5f);
    float loss = NAN, closs = NAN, terms[3] = {NAN, NAN, NAN}, cterms[3] = {NAN, NAN, NAN};
    float *dz1 = hnan(n), *dz2 = hnan(n);
    cpu->vicreg_loss(&loss, terms, dz1, dz2, z1, z2, N, D, 25.0f, 25.0f, 1.0f, 0.5f);
    float *d_z1 = dputf(z1, n), *d_z2 = dputf(z2, n), *d_dz1 = dpoison(n), *d_dz2 = dpoison(n);
    cu->vicreg_loss(&closs, cterms, d_dz1, d_dz2, d_z1, d_z2, N, D, 25.0f, 25.0f, 1.0f, 0.5f);
    CHECK(terms[1] > 0, "test data should activate the variance hinge (%g)", terms[1]);
    CHECK_SCALAR("vicreg loss", closs, loss);
    CHECK_SCALAR("vicreg invariance", cterms[0], terms[0]);
    CHECK_SCALAR("vicreg variance", cterms[1], terms[1]);
    CHECK_SCALAR("vicreg covariance", cterms[2], terms[2]);
    CHECK_DEV("vicreg dz1", d_dz1, dz1, n);
    CHECK_DEV("vicreg dz2", d_dz2, dz2, n);
}

// ---- optimiser ----------------------------------------------------------------------------------------------
TEST(cuda_optimizer) {
    setup(0, 14);
    const size_t n = 100003;
    float *x = hrand(n, -1, 1);
    float *d_x = dputf(x, n);
    float s = NAN, cs = NAN;
    cpu->sumsq(&s, x, n);
    cu->sumsq(&cs, d_x, n);
    CHECK_SCALAR("sumsq", cs, s);
    float *p = hrand(n, -1, 1), *g = hrand(n, -0.1f, 0.1f), *m = hrand(n, -0.01f, 0.01f), *v = hrand(n, 1e-6f, 1e-4f);
    float *d_p = dputf(p, n), *d_g = dputf(g, n), *d_m = dputf(m, n), *d_v = dputf(v, n);
    for (int t = 1; t <= 3; t++) {  // three steps: bias correction changes with t
        cpu->adamw(p, g, m, v, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.05f, t, 0.8f);
        cu->adamw(d_p, d_g, d_m, d_v, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.05f, t, 0.8f);
    }
    CHECK_DEV("adamw param", d_p, p, n);
    CHECK_DEV("adamw m", d_m, m, n);
    CHECK_DEV("adamw v", d_v, v, n);
    // many ranges in one call: with and without decay, one longer than a chunk of the kernel, one
    // empty, and gaps between them that must stay as they are
    const vm_adamw_range ranges[] = {{0, 10, 1}, {17, 5000, 0}, {5017, 0, 1}, {5020, 30000, 1}, {40000, 60003, 0}};
    const int nr = sizeof ranges / sizeof *ranges;
    float *p0 = hcopy(p, n);
    for (int t = 4; t <= 5; t++) {
        cpu->adamw_ranges(p, g, m, v, ranges, nr, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.05f, t, 0.8f);
        cu->adamw_ranges(d_p, d_g, d_m, d_v, ranges, nr, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.05f, t, 0.8f);
    }
    CHECK_DEV("adamw ranges param", d_p, p, n);
    CHECK_DEV("adamw ranges m", d_m, m, n);
    CHECK_DEV("adamw ranges v", d_v, v, n);
    float *back = hnan(n);
    cu->to_host(back, d_p, n * sizeof(float));
    size_t gaps = 0, moved = 0;
    for (size_t i = 0; i < n; i++) {
        int in = 0;
        for (int k = 0; k < nr; k++) in |= i >= ranges[k].off && i < ranges[k].off + ranges[k].n;
        if (!in) gaps++, moved += memcmp(&back[i], &p0[i], sizeof(float)) != 0;
    }
    CHECK(gaps == 4990 && moved == 0, "%zu of %zu floats outside the ranges changed", moved, gaps);
}

// ---- memory entries ---------------------------------------------------------------------------------------
TEST(cuda_memory) {
    setup(0, 15);
    // every entry of the table is set (the struct is a name followed by function pointers only)
    CHECK(!strcmp(cu->name, "cuda"));
    void (*const *fn)(void) = (void (*const *)(void))((const char *)cu + sizeof(const char *));
    size_t nfn = (sizeof *cu - sizeof(const char *)) / sizeof(void (*)(void));
    for (size_t i = 0; i < nfn; i++) CHECK(fn[i] != NULL, "table entry %zu of %zu is NULL", i, nfn);
    const size_t n = 4099;
    float *x = hrand(n, -1, 1), *back = hnan(n);
    float *a = cu->alloc(n * sizeof(float)), *b = cu->alloc(n * sizeof(float));
    CHECK(a && b);
    cu->to_host(back, a, n * sizeof(float));
    for (size_t i = 0; i < n; i++) CHECK(back[i] == 0.0f, "alloc must zero-fill: [%zu] = %g", i, back[i]);
    cu->to_device(a, x, n * sizeof(float));
    cu->copy(b, a, n * sizeof(float));
    cu->sync();
    cu->to_host(back, b, n * sizeof(float));
    CHECK(memcmp(back, x, n * sizeof(float)) == 0, "to_device/copy/to_host round trip differs");
    cu->zero(b, 16 * sizeof(float));
    cu->to_host(back, b, n * sizeof(float));
    CHECK(back[0] == 0.0f && back[15] == 0.0f && back[16] == x[16], "zero wrote the wrong range");
    cu->free(a);
    cu->free(b);
    char name[256];
    CHECK(vm_backend_cuda_device_name(name, sizeof name) == 0 && name[0], "device name");
}

// ViT-B shapes (a few samples): the kernels' launch geometry at the sizes training uses — 12 heads
// of 64, 4096-wide BatchNorm, 768-wide patches and rows, 128 InfoNCE rows (more than a warp).
// Skipped under compute-sanitizer (VICMAE_MEMCHECK=1), where the small shapes above suffice.
TEST(cuda_vit_b_shapes) {
    setup(0, 17);
    if (getenv("VICMAE_MEMCHECK")) SKIP("large shapes are not run under compute-sanitizer");
    for (int bf16 = 0; bf16 < 2; bf16++) {
        set_mode(bf16, 0);
        check_matmul(400, 768, 2304, 1, 1);      // qkv of 8 encoder samples
        check_matmul(400, 3072, 768, 1, 1);      // fc2
        check_attention(8, 50, 768, 12);         // encoder: 1 + 49 tokens
        check_attention(2, 197, 512, 16);        // decoder: 1 + 196 tokens
    }
    set_mode(0, 0);
    check_batchnorm(64, 4096, 1);
    {   // LayerNorm over 768
        const int N = 400, C = 768;
        size_t n = (size_t)N * C;
        float *x = hrand(n, -2, 3), *w = hrand(C, 0.5f, 1.5f), *b = hrand(C, -1, 1), *g = hrand(n, -1, 1);
        float *out = hnan(n), *mean = hnan(N), *rstd = hnan(N), *dx = hrand(n, -1, 1), *dw = hrand(C, -1, 1),
              *db = hrand(C, -1, 1);
        float *d_x = dputf(x, n), *d_w = dputf(w, C), *d_b = dputf(b, C), *d_g = dputf(g, n), *d_out = dpoison(n),
              *d_mean = dpoison(N), *d_rstd = dpoison(N), *d_dx = dputf(dx, n), *d_dw = dputf(dw, C), *d_db = dputf(db, C);
        cpu->layernorm_forward(out, mean, rstd, x, w, b, N, C, 1e-6f);
        cpu->layernorm_backward(dx, dw, db, g, x, w, mean, rstd, N, C);
        cu->layernorm_forward(d_out, d_mean, d_rstd, d_x, d_w, d_b, N, C, 1e-6f);
        cu->layernorm_backward(d_dx, d_dw, d_db, d_g, d_x, d_w, d_mean, d_rstd, N, C);
        CHECK_DEV("layernorm 768 out", d_out, out, n);
        CHECK_DEV("layernorm 768 dinp", d_dx, dx, n);
        CHECK_DEV("layernorm 768 dweight", d_dw, dw, C);
        CHECK_DEV("layernorm 768 dbias", d_db, db, C);
    }
    {   // reconstruction loss over 16x16x3 patches, InfoNCE over 2 x 64 rows of 128
        const int B = 8, L = 196, D = 768;
        size_t n = (size_t)B * L * D;
        float *pred = hrand(n, -1, 1), *t = hrand(n, -2, 2), *mask = malloc((size_t)B * L * 4);
        for (int i = 0; i < B * L; i++) mask[i] = vm_rng_uniformf(&rng) < 0.75f ? 1.0f : 0.0f;
        float loss = NAN, closs = NAN, *dp = hnan(n), *d_dp = dpoison(n);
        cpu->mae_loss(&loss, dp, pred, t, mask, B, L, D, 1, 1.0f);
        cu->mae_loss(&closs, d_dp, dputf(pred, n), dputf(t, n), dputf(mask, (size_t)B * L), B, L, D, 1, 1.0f);
        CHECK_SCALAR("mae loss 768", closs, loss);
        CHECK_DEV("mae dpred 768", d_dp, dp, n);
        const int N = 64, Dz = 128;
        size_t nz = (size_t)N * Dz;
        float *z1 = hrand(nz, -1, 1), *z2 = hrand(nz, -1, 1), *dz1 = hnan(nz), *dz2 = hnan(nz);
        float *d_dz1 = dpoison(nz), *d_dz2 = dpoison(nz);
        cpu->infonce_loss(&loss, dz1, dz2, z1, z2, N, Dz, 0.1f, 0.03f);
        cu->infonce_loss(&closs, d_dz1, d_dz2, dputf(z1, nz), dputf(z2, nz), N, Dz, 0.1f, 0.03f);
        CHECK_SCALAR("infonce loss 128 rows", closs, loss);
        CHECK_DEV("infonce dz1 128 rows", d_dz1, dz1, nz);
        CHECK_DEV("infonce dz2 128 rows", d_dz2, dz2, nz);
    }
}

// ---- bf16 activations ----------------------------------------------------------------------------------------
// The ops of the "bf16 activations" group of trainer/backend.h against those of the cpu-bf16 table (the
// only CPU table that has them), on the same inputs: bf16 inputs are random floats rounded to bf16 (the
// same bits on both sides); bf16 outputs are poisoned with 0xFFFF (a NaN) before the run.  Tolerances:
// bf16-stored outputs 1e-2 relative, and fewer than 1% of their elements with other bits than the
// reference (an element may differ by one bf16 ulp where the fp32 sums before the rounding differ in
// their last bits: measured in a host simulation of a GPU summation order, at most 0.011%; a rounding
// point out of place differs in 6-31% of the elements while staying within 3e-3 relative, so the
// relative bound alone would pass it); fp32 outputs and gradients TOL16_EMU, as the convert path.
// The reference is `ref`, the cpu-bf16 table that setup(1, ...) and set_mode(1, 0) select.
#define TOL_BF16_OUT 1e-2
#define TOL_BF16_BITS 0.01

static char bmode[96];              // the backend settings of the case being checked, for the messages
static char bcase[192];             // the case being checked (settings and shape)

static const char *at(const char *what) {
    static char buf[320];
    snprintf(buf, sizeof buf, "%s [%s]", what, bcase);
    return buf;
}

static vm_bf16 *hrand16(size_t n, float lo, float hi) {
    float *x = hrand(n, lo, hi);
    vm_bf16 *y = malloc(n * sizeof *y);
    CHECK(y);
    for (size_t i = 0; i < n; i++) y[i] = vm_bf16_from_float(x[i]);  // (trainer/cpu/cpu_ops.h)
    free(x);
    return y;
}
static vm_bf16 *hnan16(size_t n) {
    vm_bf16 *y = malloc(n * sizeof *y);
    CHECK(y);
    for (size_t i = 0; i < n; i++) y[i] = 0xFFFF;
    return y;
}
static vm_bf16 *dput16(const vm_bf16 *h, size_t n) { return dput(h, n * sizeof(vm_bf16)); }
static vm_bf16 *dpoison16(size_t n) {
    vm_bf16 *h = hnan16(n);
    vm_bf16 *d = dput16(h, n);
    free(h);
    return d;
}
// ||cuda - ref|| / ||ref|| of a device bf16 array against the host bf16 reference (NaN fails), and
// in *differ the fraction of elements whose bits differ.
static double relerr_dev16(const vm_bf16 *d, const vm_bf16 *ref, size_t n, double *differ) {
    vm_bf16 *h = malloc(n * sizeof *h);
    float *a = calloc(n, sizeof *a), *b = calloc(n, sizeof *b);
    CHECK(h && a && b);
    cu->to_host(h, d, n * sizeof *h);
    size_t ndiff = 0;
    for (size_t i = 0; i < n; i++) {
        a[i] = vm_bf16_to_float(h[i]), b[i] = vm_bf16_to_float(ref[i]);
        ndiff += h[i] != ref[i];
    }
    double e = relerr(a, b, n);
    *differ = n ? (double)ndiff / (double)n : 0.0;
    free(h), free(a), free(b);
    return e;
}
#define CHECK_DEV16(name, d, ref, n)                                                                        \
    do {                                                                                                    \
        double f_, e_ = relerr_dev16((d), (ref), (n), &f_);                                                 \
        CHECK(e_ < TOL_BF16_OUT, "%s: relative error %.3g (tolerance %.0e)", (name), e_, TOL_BF16_OUT);     \
        CHECK(f_ < TOL_BF16_BITS, "%s: %.2f%% of the bf16 elements differ from the reference (at most %.0f%%)", \
              (name), 100 * f_, 100 * TOL_BF16_BITS);                                                       \
    } while (0)

static void check_matmul_act16(int N, int C, int OC, int with_bias, int with_dinp) {
    snprintf(bcase, sizeof bcase, "%s; N=%d C=%d OC=%d%s%s", bmode, N, C, OC, with_bias ? ", bias" : "",
             with_dinp ? ", dinp" : "");
    size_t nx = (size_t)N * C, nw = (size_t)OC * C, no = (size_t)N * OC;
    vm_bf16 *x = hrand16(nx, -1, 1), *out = hnan16(no);
    float *w = hrand(nw, -0.5f, 0.5f), *b = hrand(OC, -1, 1), *g = hrand(no, -1, 1);
    float *dw0 = hrand(nw, -1, 1), *db0 = hrand(OC, -1, 1);
    float *dx = hnan(nx), *dw = hcopy(dw0, nw), *db = hcopy(db0, OC);
    ref->matmul_forward_bf16(out, x, w, with_bias ? b : NULL, N, C, OC);
    ref->matmul_backward_bf16(with_dinp ? dx : NULL, dw, with_bias ? db : NULL, g, x, w, N, C, OC);

    vm_bf16 *d_x = dput16(x, nx), *d_out = dpoison16(no);
    float *d_w = dputf(w, nw), *d_b = dputf(b, OC), *d_g = dputf(g, no), *d_dw = dputf(dw0, nw),
          *d_db = dputf(db0, OC), *d_dx = dpoison(nx);
    cu->matmul_forward_bf16(d_out, d_x, d_w, with_bias ? d_b : NULL, N, C, OC);
    cu->matmul_backward_bf16(with_dinp ? d_dx : NULL, d_dw, with_bias ? d_db : NULL, d_g, d_x, d_w, N, C, OC);
    CHECK_DEV16(at("matmul_forward_bf16 out"), d_out, out, no);
    if (with_dinp) CHECK_DEV(at("matmul_backward_bf16 dinp"), d_dx, dx, nx);
    CHECK_DEV(at("matmul_backward_bf16 dweight"), d_dw, dw, nw);
    CHECK_DEV(at("matmul_backward_bf16 dbias"), d_db, db, OC);  // without a bias: unchanged on both sides
    FREE_ALL(cu->free, d_x, d_out, d_w, d_b, d_g, d_dw, d_db, d_dx);
    FREE_ALL(free, x, out, w, b, g, dw0, db0, dx, dw, db);
}

// check_matmul_act16 with a bias and dinp; with cuBLASLt on, also that the forward ran through its
// epilogue (bf16 output and bias) once: a fallback would pass the checks on the workspace path.
static void check_matmul_act16_epilogue(int N, int C, int OC) {
    long runs0, fallbacks0, runs1, fallbacks1;
    vm_backend_cuda_lt_counts(&runs0, &fallbacks0);
    check_matmul_act16(N, C, OC, 1, 1);
    vm_backend_cuda_lt_counts(&runs1, &fallbacks1);
    if (vm_backend_cuda_lt())
        CHECK(runs1 == runs0 + 1 && fallbacks1 == fallbacks0,
              "%s: N=%d C=%d OC=%d ran %ld times through cuBLASLt and fell back %ld times (want 1 and 0)", bmode, N,
              C, OC, runs1 - runs0, fallbacks1 - fallbacks0);
}

static void check_attention_act16(int B, int T, int C, int NH) {
    snprintf(bcase, sizeof bcase, "%s; B=%d T=%d C=%d NH=%d", bmode, B, T, C, NH);
    size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C, na = (size_t)B * NH * T * T;
    vm_bf16 *qkv = hrand16(nq, -1.5f, 1.5f), *out = hnan16(no);
    float *g = hrand(no, -1, 1), *att = hnan(na), *dqkv = hnan(nq), *scr = hnan(na);
    ref->attention_forward_bf16(out, att, qkv, B, T, C, NH);
    ref->attention_backward_bf16(dqkv, scr, g, qkv, att, B, T, C, NH);

    vm_bf16 *d_qkv = dput16(qkv, nq), *d_out = dpoison16(no);
    float *d_g = dputf(g, no), *d_att = dpoison(na), *d_dqkv = dpoison(nq), *d_scr = dpoison(na);
    cu->attention_forward_bf16(d_out, d_att, d_qkv, B, T, C, NH);
    CHECK_DEV16(at("attention_forward_bf16 out"), d_out, out, no);
    if (!expect_flash(T, C, NH, 1)) CHECK_DEV(at("attention_forward_bf16 att"), d_att, att, na);
    else check_flash_stats(at("attention_forward_bf16 att (flash statistics)"), d_att, att, B, T, NH);
    cu->attention_backward_bf16(d_dqkv, d_scr, d_g, d_qkv, d_att, B, T, C, NH);
    CHECK_DEV(at("attention_backward_bf16 dqkv"), d_dqkv, dqkv, nq);
    FREE_ALL(cu->free, d_qkv, d_out, d_g, d_att, d_dqkv, d_scr);
    FREE_ALL(free, qkv, out, g, att, dqkv, scr);
}

static void check_layernorm_act16(int N, int C) {
    snprintf(bcase, sizeof bcase, "N=%d C=%d", N, C);
    size_t n = (size_t)N * C;
    float *x = hrand(n, -2, 3), *w = hrand(C, 0.5f, 1.5f), *b = hrand(C, -1, 1), *mean = hnan(N), *rstd = hnan(N);
    vm_bf16 *out = hnan16(n);
    ref->layernorm_forward_bf16(out, mean, rstd, x, w, b, N, C, 1e-6f);
    float *d_x = dputf(x, n), *d_w = dputf(w, C), *d_b = dputf(b, C), *d_mean = dpoison(N), *d_rstd = dpoison(N);
    vm_bf16 *d_out = dpoison16(n);
    cu->layernorm_forward_bf16(d_out, d_mean, d_rstd, d_x, d_w, d_b, N, C, 1e-6f);
    CHECK_DEV16(at("layernorm_forward_bf16 out"), d_out, out, n);
    CHECK_DEV(at("layernorm_forward_bf16 mean"), d_mean, mean, N);
    CHECK_DEV(at("layernorm_forward_bf16 rstd"), d_rstd, rstd, N);
    FREE_ALL(cu->free, d_x, d_w, d_b, d_mean, d_rstd, d_out);
    FREE_ALL(free, x, w, b, mean, rstd, out);
}

static void check_pointwise_act16(size_t n) {
    snprintf(bcase, sizeof bcase, "n=%zu", n);
    vm_bf16 *x = hrand16(n, -3, 3), *out = hnan16(n);
    float *a = hrand(n, -2, 2), *g = hrand(n, -1, 1), *dx = hnan(n), *sum = hnan(n);
    ref->gelu_forward_bf16(out, x, n);
    ref->gelu_backward_bf16(dx, x, g, n);
    ref->add_bf16(sum, a, x, n);
    vm_bf16 *d_x = dput16(x, n), *d_out = dpoison16(n);
    float *d_a = dputf(a, n), *d_g = dputf(g, n), *d_dx = dpoison(n), *d_sum = dpoison(n);
    cu->gelu_forward_bf16(d_out, d_x, n);
    CHECK_DEV16(at("gelu_forward_bf16"), d_out, out, n);
    cu->gelu_backward_bf16(d_dx, d_x, d_g, n);
    CHECK_DEV(at("gelu_backward_bf16"), d_dx, dx, n);
    cu->add_bf16(d_sum, d_a, d_x, n);
    CHECK_DEV(at("add_bf16"), d_sum, sum, n);
    cu->add_bf16(d_a, d_a, d_x, n);  // in place, as a residual update
    CHECK_DEV(at("add_bf16 in place"), d_a, sum, n);
    if (n > 1) {  // views one element in (not 16-byte aligned): the one-at-a-time path
        cu->gelu_forward_bf16(d_out + 1, d_x + 1, n - 1);
        CHECK_DEV16(at("gelu_forward_bf16, unaligned"), d_out + 1, out + 1, n - 1);
        cu->gelu_backward_bf16(d_dx + 1, d_x + 1, d_g + 1, n - 1);
        CHECK_DEV(at("gelu_backward_bf16, unaligned"), d_dx + 1, dx + 1, n - 1);
        cu->add_bf16(d_sum + 1, d_a + 1, d_x + 1, n - 1);  // d_a holds sum now: sum + x
        ref->add_bf16(a + 1, sum + 1, x + 1, n - 1);
        CHECK_DEV(at("add_bf16, unaligned"), d_sum + 1, a + 1, n - 1);
    }
    FREE_ALL(cu->free, d_x, d_out, d_a, d_g, d_dx, d_sum);
    FREE_ALL(free, x, out, a, g, dx, sum);
}

// Every op of the group; the products in every precision setting (the bf16 ops always make bf16
// products, whatever vm_backend_cuda_set_precision / set_bf16_path say), with cuBLASLt on and off,
// attention through the fused kernels and through batched cuBLAS.
TEST(cuda_bf16_activations) {
    setup(1, 19);  // ref: the cpu-bf16 table; tol: TOL16_EMU (the loop below sets the CUDA modes directly)
    CHECK(ref, "no cpu-bf16 table");
#define NEED(f)                                                                                   \
    do {                                                                                          \
        CHECK(ref->f != NULL, "the cpu-bf16 table has no " #f " (trainer/cpu/bf16.c)");           \
        CHECK(cu->f != NULL, "the CUDA table has no " #f);                                        \
    } while (0)
    NEED(layernorm_forward_bf16);
    NEED(matmul_forward_bf16);
    NEED(matmul_backward_bf16);
    NEED(attention_forward_bf16);
    NEED(attention_backward_bf16);
    NEED(gelu_forward_bf16);
    NEED(gelu_backward_bf16);
    NEED(add_bf16);
#undef NEED
    const int quick = getenv("VICMAE_MEMCHECK") != NULL;  // compute-sanitizer: the small shapes only
    static const struct { int bf16, fast; const char *name; } modes[] = {
        {1, 0, "precision bf16 (convert)"}, {0, 0, "precision fp32"}, {1, 1, "precision bf16 (fast path)"}};
    for (size_t m = 0; m < sizeof modes / sizeof *modes; m++) {
        vm_backend_cuda_set_precision(modes[m].bf16);
        vm_backend_cuda_set_bf16_path(modes[m].fast);
        if (modes[m].fast && !vm_backend_cuda_bf16_path()) continue;  // this cuBLAS refuses FAST_16BF
        for (int lt = 0; lt < 2; lt++) {
            vm_backend_cuda_set_lt(lt);
            snprintf(bmode, sizeof bmode, "%s, cuBLASLt %s", modes[m].name, vm_backend_cuda_lt() ? "on" : "off");
            check_matmul_act16_epilogue(96, 64, 80);
            check_matmul_act16(37, 50, 30, 1, 1);  // N, C, OC not multiples of 8
            check_matmul_act16(37, 50, 30, 0, 1);  // no bias
            if (m == 0 && !quick) {
                check_matmul_act16(200, 192, 576, 1, 0);  // no dinp (first layer)
                check_matmul_act16_epilogue(50, 768, 2304);  // ViT-B qkv of one encoder sample
                check_matmul_act16(101, 384, 96, 0, 1);
            }
        }
        vm_backend_cuda_set_lt(0);
        static const struct { int mode; const char *name; } att_modes[] = {
            {VM_ATTENTION_FUSED, "fused attention"}, {VM_ATTENTION_CUBLAS, "attention through cuBLAS"}};
        for (size_t a = 0; a < sizeof att_modes / sizeof *att_modes; a++) {
            vm_backend_cuda_set_fused_attention(att_modes[a].mode);
            snprintf(bmode, sizeof bmode, "%s, %s", modes[m].name, att_modes[a].name);
            if (att_modes[a].mode == VM_ATTENTION_FUSED) {  // the shapes below do run the fused kernels
                CHECK(vm_backend_cuda_fused_attention_takes(50, 128, 2, 0) &&
                      vm_backend_cuda_fused_attention_takes(50, 128, 2, 1), "fused attention takes T=50 C=128 NH=2");
                CHECK(vm_backend_cuda_fused_attention_takes(197, 64, 4, 0) &&
                      vm_backend_cuda_fused_attention_takes(197, 64, 4, 1), "fused attention takes T=197 C=64 NH=4");
            }
            check_attention_act16(3, 50, 128, 2);  // encoder-like: 1 + 49 tokens, hs 64
            check_attention_act16(2, 197, 64, 4);  // decoder-like length, hs 16
            check_attention_act16(2, 13, 32, 4);   // hs 8: cuBLAS in every mode
            if (m == 0 && !quick) check_attention_act16(2, 197, 512, 16);  // decoder: hs 32, two backward rounds
        }
        vm_backend_cuda_set_fused_attention(VM_ATTENTION_AUTO);
    }
    set_mode(1, 0);
    check_layernorm_act16(70, 96);
    check_layernorm_act16(50, 768);
    check_pointwise_act16(10007);
    check_pointwise_act16(1);
    set_mode(0, 0);
}

// The fused attention kernels instantiated for a bf16 qkv (the bf16-activation ops), alone: no
// cuBLAS product runs here, so that gpu-check's racecheck and synccheck, which run every test named
// cuda_attention_fused_bf16*, check our kernels (fp32 qkv above, bf16 qkv here) and nothing else.
TEST(cuda_attention_fused_bf16_qkv) {
    setup(1, 23);  // ref: the cpu-bf16 table
    set_mode(1, 0);
    vm_backend_cuda_set_fused_attention(VM_ATTENTION_FUSED);
    snprintf(bmode, sizeof bmode, "fused attention, bf16 qkv");
    // B, T, C, NH, backward fused too (-1: as shared memory allows; T 256 hs 32 needs 234 KB for the
    // backward, over an H100's 227 KB)
    static const int shapes[][5] = {{2, 13, 32, 2, 1}, {3, 50, 128, 2, 1}, {2, 197, 512, 16, 1}, {2, 64, 256, 2, 1},
                                    {2, 224, 128, 4, 1}, {2, 256, 128, 4, -1}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        const int *s = shapes[i];
        check_fused_takes(s);
        check_attention_act16(s[0], s[1], s[2], s[3]);
    }
    vm_backend_cuda_set_fused_attention(VM_ATTENTION_AUTO);
    set_mode(0, 0);
}

// The flash kernels instantiated for a bf16 qkv (bf16 out rounded once: CHECK_DEV16), alone, as
// cuda_attention_fused_bf16_qkv: gpu-check's racecheck and synccheck run cuda_attention_flash_bf16*.
TEST(cuda_attention_flash_bf16_qkv) {
    setup(1, 31);  // ref: the cpu-bf16 table
    set_mode(1, 0);
    vm_backend_cuda_set_fused_attention(VM_ATTENTION_FLASH);
    snprintf(bmode, sizeof bmode, "flash attention, bf16 qkv");
    for (size_t i = 0; i < sizeof flash_shapes / sizeof *flash_shapes; i++) {
        const int *s = flash_shapes[i];
        CHECK(vm_backend_cuda_flash_attention_takes(s[1], s[2], s[3]), "flash takes T=%d C=%d NH=%d", s[1], s[2], s[3]);
        if (!flash_shape_skipped(s)) check_attention_act16(s[0], s[1], s[2], s[3]);
    }
    vm_backend_cuda_set_fused_attention(VM_ATTENTION_AUTO);
    set_mode(0, 0);
}

// The other bf16 path: fp32 operands handed to cuBLAS with CUBLAS_COMPUTE_32F_FAST_16BF (last in
// the file: a cuBLAS that refused it would abort the binary after every other test has run).
TEST(cuda_bf16_fast_path) {
    setup(1, 16);
    set_mode(1, 1);
    if (vm_backend_cuda_bf16_path() != 1) SKIP("this cuBLAS refuses CUBLAS_COMPUTE_32F_FAST_16BF");
    check_matmul(96, 64, 80, 1, 1);
    check_matmul(256, 384, 1152, 1, 1);
    check_attention(3, 50, 128, 2);
    check_attention(1, 197, 64, 1);
    vm_backend_cuda_set_bf16_path(0);
    vm_backend_cuda_set_precision(0);
}

// Linear layers through cuBLASLt with the bias in the epilogue: fp32, bf16, bf16 fast; also with
// bias and weight at odd float offsets, as tensors inside the model's flat parameter buffer are.
TEST(cuda_lt_bias_path) {
    setup(0, 18);
    vm_backend_cuda_set_lt(1);
    if (!vm_backend_cuda_lt()) SKIP("cuBLASLt unavailable");
    for (int mode = 0; mode < 3; mode++) {
        set_mode(mode > 0, mode == 2);
        if (mode == 2 && !vm_backend_cuda_bf16_path()) continue;
        check_matmul(96, 64, 80, 1, 1);
        check_matmul(37, 50, 30, 1, 1);
        check_matmul(400, 768, 2304, 1, 0);
        // weight and bias at an odd offset inside one buffer
        const int N = 64, C = 96, OC = 72;
        float *x = hrand((size_t)N * C, -1, 1), *wb = hrand((size_t)OC * C + OC + 3, -0.5f, 0.5f);
        float *w = wb + 1, *b = wb + 2 + (size_t)OC * C, *refo = hnan((size_t)N * OC);
        ref->matmul_forward(refo, x, w, b, N, C, OC);
        float *d_x = dputf(x, (size_t)N * C), *d_wb = dputf(wb, (size_t)OC * C + OC + 3), *d_o = dpoison((size_t)N * OC);
        cu->matmul_forward(d_o, d_x, d_wb + 1, d_wb + 2 + (size_t)OC * C, N, C, OC);
        CHECK_DEV("lt matmul, unaligned weight and bias", d_o, refo, (size_t)N * OC);
    }
    vm_backend_cuda_set_lt(0);
    vm_backend_cuda_set_bf16_path(0);
    vm_backend_cuda_set_precision(0);
}
