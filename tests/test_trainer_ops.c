// Tests of the CPU ops (trainer/cpu/) behind trainer/backend.h.
//
// For every op with a backward:
//   1. the double instantiation's backward against central finite differences of its forward
//      (objective sum(out * R) with random R, step 1e-6, norm-wise relative error < 1e-6);
//   2. the float ops, called through the backend table, against the double instantiation on the
//      same (float-representable) inputs: outputs and gradients within 1e-5 relative, norm-wise;
// and forwards and losses against straightforward double reference code written here.  Each test
// runs once per float build (baseline x86-64 and AVX2 + FMA, skipped on CPUs without them).
// Accumulating outputs (+=) are pre-filled with random values, written ones (=) with garbage, so
// that both halves of the contract are checked.  VICMAE_OPS_VERBOSE=1 prints every error measured.
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include "tests/harness.h"
#include "trainer/backend.h"
#include "trainer/cpu/cpu_ops.h"

// ---- helpers --------------------------------------------------------------------------------
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void) {  // xorshift64*, uniform [0, 1)
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545F4914F6CDD1Dull) >> 11) * 0x1.0p-53;
}

// Every buffer of a test lives in this arena, freed at the end of the test.
static void *arena[512];
static int arena_n;
static void *arena_alloc(size_t bytes) {
    CHECK(arena_n < 512, "test arena full");
    void *p = calloc(bytes ? bytes : 1, 1);
    CHECK(p != NULL);
    return arena[arena_n++] = p;
}
static void arena_reset(void) {
    while (arena_n > 0) free(arena[--arena_n]);
}

// n random values in [lo, hi), rounded to float so that float and double see the same inputs
static double *vec(size_t n, double lo, double hi) {
    double *x = arena_alloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * urand());
    return x;
}
static double *zeros(size_t n) { return arena_alloc(n * sizeof(double)); }
static double *copy_of(const double *x, size_t n) {
    double *y = zeros(n);
    memcpy(y, x, n * sizeof(double));
    return y;
}
static float *tof(const double *x, size_t n) {
    float *y = arena_alloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) y[i] = (float)x[i];
    return y;
}
static double dot(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}
// ||a - b|| / ||b||, norm-wise
static double rel_err(const double *a, const double *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}
static double rel_err_f(const float *a, const double *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}
// a - b, for the += outputs
static double *minus(const double *a, const double *b, size_t n) {
    double *y = zeros(n);
    for (size_t i = 0; i < n; i++) y[i] = a[i] - b[i];
    return y;
}
static double *minus_f(const float *a, const double *b, size_t n) {
    double *y = zeros(n);
    for (size_t i = 0; i < n; i++) y[i] = (double)a[i] - b[i];
    return y;
}

// The float ops are called through a backend table, once per instruction set this CPU runs.
static const vm_backend_ops *FB;
#define OPS_TEST(name)                                                                     \
    static void name##_body(void);                                                         \
    TEST(name##_baseline) {                                                                \
        FB = vm_cpu_backend_isa("baseline");                                               \
        name##_body();                                                                     \
    }                                                                                      \
    TEST(name##_avx2) {                                                                    \
        FB = vm_cpu_backend_isa("avx2");                                                   \
        if (!FB) SKIP("this CPU has no AVX2 + FMA");                                        \
        name##_body();                                                                     \
    }                                                                                      \
    static void name##_body(void)

#define FD_TOL 1e-6   // backward vs finite differences, double
#define FP_TOL 1e-5   // float instantiation vs double
#define REF_TOL 1e-12 // double op vs double reference code

typedef double (*objective_fn)(void);

// Central differences of f with respect to each x[i], against the analytic gradient g.
static void fd_check(const char *what, objective_fn f, double *x, const double *g, size_t n) {
    const double h = 1e-6;
    double num = 0, den = 0;
    // thousands of tiny forwards: one thread, so a loaded machine's thread wake-ups do not add up
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    for (size_t i = 0; i < n; i++) {
        double xi = x[i];
        x[i] = xi + h;
        double fp = f();
        x[i] = xi - h;
        double fm = f();
        x[i] = xi;
        double fd = (fp - fm) / (2 * h);
        num += (fd - g[i]) * (fd - g[i]);
        den += g[i] * g[i];
    }
    f();  // leave the outputs as at the unperturbed point
    omp_set_num_threads(threads);
    CHECK(den > 0, "%s: the gradient is zero, the check would prove nothing", what);
    double e = sqrt(num / den);
    if (getenv("VICMAE_OPS_VERBOSE")) fprintf(stderr, "  fd    %-30s %.2e\n", what, e);
    CHECK(e < FD_TOL, "%s: backward differs from finite differences by %.3g (relative)", what, e);
}

static void fp_check(const char *what, const float *f, const double *d, size_t n) {
    double e = rel_err_f(f, d, n);
    if (getenv("VICMAE_OPS_VERBOSE")) fprintf(stderr, "  float %-30s %.2e\n", what, e);
    CHECK(e < FP_TOL, "%s: float differs from double by %.3g (relative)", what, e);
}
static void fp_check_acc(const char *what, const float *f, const double *f0, const double *d,
                         const double *d0, size_t n) {  // compares the increments of += outputs
    double *df = minus_f(f, f0, n), *dd = minus(d, d0, n);
    double e = rel_err(df, dd, n);
    if (getenv("VICMAE_OPS_VERBOSE")) fprintf(stderr, "  float %-30s %.2e\n", what, e);
    CHECK(e < FP_TOL, "%s: float differs from double by %.3g (relative)", what, e);
}

// ---- the op's objective: global state of the test being run ---------------------------------
static struct {
    int B, T, C, NH, N, OC, L, K, D, flag;
    double eps, mom, temp, w[3];
    double *in[4];   // inputs of the forward (perturbed by fd_check)
    double *out;     // forward output (n_out)
    double *aux[6];  // saved tensors (mean, rstd, att, running stats) and scratch
    double *R;       // objective weights (n_out)
    size_t n_out;
    const int32_t *ids;
} S;
static double objective(void) { return dot(S.out, S.R, S.n_out); }

// ---- dense ------------------------------------------------------------------------------------
static double obj_matmul(void) {
    vm_cpu_matmul_forward_d(S.out, S.in[0], S.in[1], S.in[2], S.N, S.C, S.OC);
    return objective();
}

OPS_TEST(matmul_forward_and_backward) {
    const int N = 7, C = 9, OC = 6;
    double *inp = vec(N * C, -1, 1), *w = vec(OC * C, -1, 1), *b = vec(OC, -1, 1);
    double *out = zeros(N * OC), *R = vec(N * OC, -1, 1);
    S = (typeof(S)){.N = N, .C = C, .OC = OC, .in = {inp, w, b}, .out = out, .R = R, .n_out = N * OC};
    obj_matmul();
    for (int n = 0; n < N; n++)  // reference: the definition
        for (int o = 0; o < OC; o++) {
            double s = b[o];
            for (int c = 0; c < C; c++) s += inp[n * C + c] * w[o * C + c];
            CHECK_NEAR(out[n * OC + o], s, REF_TOL);
        }
    double *dinp = vec(N * C, 1e3, 2e3);  // garbage: must be overwritten
    double *dw0 = vec(OC * C, -1, 1), *db0 = vec(OC, -1, 1);
    double *dw = copy_of(dw0, OC * C), *db = copy_of(db0, OC);
    vm_cpu_matmul_backward_d(dinp, dw, db, R, inp, w, N, C, OC);
    fd_check("matmul dinp", obj_matmul, inp, dinp, N * C);
    fd_check("matmul dweight", obj_matmul, w, minus(dw, dw0, OC * C), OC * C);
    fd_check("matmul dbias", obj_matmul, b, minus(db, db0, OC), OC);

    float *fo = tof(out, N * OC), *fdi = tof(dinp, N * C), *fdw = tof(dw0, OC * C), *fdb = tof(db0, OC);
    for (size_t i = 0; i < (size_t)N * C; i++) fdi[i] = 1e3f;
    FB->matmul_forward(fo, tof(inp, N * C), tof(w, OC * C), tof(b, OC), N, C, OC);
    FB->matmul_backward(fdi, fdw, fdb, tof(R, N * OC), tof(inp, N * C), tof(w, OC * C), N, C, OC);
    obj_matmul();
    fp_check("matmul out", fo, out, N * OC);
    fp_check("matmul dinp", fdi, dinp, N * C);
    fp_check_acc("matmul dweight", fdw, dw0, dw, dw0, OC * C);
    fp_check_acc("matmul dbias", fdb, db0, db, db0, OC);

    // bias NULL and dinp NULL are allowed
    vm_cpu_matmul_forward_d(out, inp, w, NULL, N, C, OC);
    double s = 0;
    for (int c = 0; c < C; c++) s += inp[2 * C + c] * w[3 * C + c];
    CHECK_NEAR(out[2 * OC + 3], s, REF_TOL);
    memcpy(dw, dw0, sizeof(double) * OC * C);
    vm_cpu_matmul_backward_d(NULL, dw, NULL, R, inp, w, N, C, OC);
    s = dw0[1 * C + 4];
    for (int n = 0; n < N; n++) s += R[n * OC + 1] * inp[n * C + 4];
    CHECK_NEAR(dw[1 * C + 4], s, REF_TOL);
    arena_reset();
}

// ---- normalisation ------------------------------------------------------------------------------
static double obj_layernorm(void) {
    vm_cpu_layernorm_forward_d(S.out, S.aux[0], S.aux[1], S.in[0], S.in[1], S.in[2], S.N, S.C, S.eps);
    return objective();
}

OPS_TEST(layernorm_forward_and_backward) {
    const int N = 6, C = 10;
    double *inp = vec(N * C, -2, 3), *w = vec(C, 0.5, 1.5), *b = vec(C, -1, 1);
    double *out = zeros(N * C), *mean = zeros(N), *rstd = zeros(N), *R = vec(N * C, -1, 1);
    S = (typeof(S)){.N = N, .C = C, .eps = 1e-6, .in = {inp, w, b}, .aux = {mean, rstd},
                    .out = out, .R = R, .n_out = N * C};
    obj_layernorm();
    for (int n = 0; n < N; n++) {
        double m = 0, v = 0;
        for (int c = 0; c < C; c++) m += inp[n * C + c] / C;
        for (int c = 0; c < C; c++) v += (inp[n * C + c] - m) * (inp[n * C + c] - m) / C;
        for (int c = 0; c < C; c++)
            CHECK_NEAR(out[n * C + c], (inp[n * C + c] - m) / sqrt(v + 1e-6) * w[c] + b[c], 1e-12);
    }
    double *dx0 = vec(N * C, -1, 1), *dw0 = vec(C, -1, 1), *db0 = vec(C, -1, 1);
    double *dx = copy_of(dx0, N * C), *dw = copy_of(dw0, C), *db = copy_of(db0, C);
    vm_cpu_layernorm_backward_d(dx, dw, db, R, inp, w, mean, rstd, N, C);
    fd_check("layernorm dinp", obj_layernorm, inp, minus(dx, dx0, N * C), N * C);
    fd_check("layernorm dweight", obj_layernorm, w, minus(dw, dw0, C), C);
    fd_check("layernorm dbias", obj_layernorm, b, minus(db, db0, C), C);

    obj_layernorm();
    float *fo = tof(out, N * C), *fm = tof(mean, N), *fr = tof(rstd, N);
    float *fdx = tof(dx0, N * C), *fdw = tof(dw0, C), *fdb = tof(db0, C);
    float *fin = tof(inp, N * C), *fw = tof(w, C);
    FB->layernorm_forward(fo, fm, fr, fin, fw, tof(b, C), N, C, 1e-6f);
    FB->layernorm_backward(fdx, fdw, fdb, tof(R, N * C), fin, fw, fm, fr, N, C);
    fp_check("layernorm out", fo, out, N * C);
    fp_check("layernorm rstd", fr, rstd, N);
    fp_check_acc("layernorm dinp", fdx, dx0, dx, dx0, N * C);
    fp_check_acc("layernorm dweight", fdw, dw0, dw, dw0, C);
    fp_check_acc("layernorm dbias", fdb, db0, db, db0, C);
    arena_reset();
}

static double obj_batchnorm(void) {
    double *rm = S.aux[4], *rv = S.aux[5];  // updated copies: keep the originals
    memcpy(rm, S.aux[2], sizeof(double) * S.C);
    memcpy(rv, S.aux[3], sizeof(double) * S.C);
    vm_cpu_batchnorm_forward_d(S.out, S.aux[0], S.aux[1], rm, rv, S.in[0], S.in[1], S.in[2], S.N,
                               S.C, S.eps, S.mom);
    return objective();
}

static void batchnorm_case(int affine) {
    const int N = 8, C = 70;  // C > 64: two column chunks
    double *inp = vec(N * C, -2, 3), *w = affine ? vec(C, 0.5, 1.5) : NULL, *b = affine ? vec(C, -1, 1) : NULL;
    double *out = zeros(N * C), *mean = zeros(C), *rstd = zeros(C), *R = vec(N * C, -1, 1);
    double *rm0 = vec(C, -1, 1), *rv0 = vec(C, 0.5, 2);
    S = (typeof(S)){.N = N, .C = C, .eps = 1e-5, .mom = 0.1, .in = {inp, w, b},
                    .aux = {mean, rstd, rm0, rv0, zeros(C), zeros(C)}, .out = out, .R = R, .n_out = N * C};
    double *rm = copy_of(rm0, C), *rv = copy_of(rv0, C);
    vm_cpu_batchnorm_forward_d(out, mean, rstd, rm, rv, inp, w, b, N, C, 1e-5, 0.1);
    for (int c = 0; c < C; c++) {  // reference: PyTorch's training-mode BatchNorm1d
        double m = 0, v = 0;
        for (int n = 0; n < N; n++) m += inp[n * C + c] / N;
        for (int n = 0; n < N; n++) v += (inp[n * C + c] - m) * (inp[n * C + c] - m);
        for (int n = 0; n < N; n++) {
            double y = (inp[n * C + c] - m) / sqrt(v / N + 1e-5);
            if (affine) y = y * w[c] + b[c];
            CHECK_NEAR(out[n * C + c], y, 1e-12);
        }
        CHECK_NEAR(rm[c], 0.9 * rm0[c] + 0.1 * m, 1e-12);
        CHECK_NEAR(rv[c], 0.9 * rv0[c] + 0.1 * v / (N - 1), 1e-12);
    }
    double *dx = vec(N * C, 1e3, 2e3);
    double *dw0 = vec(C, -1, 1), *db0 = vec(C, -1, 1), *dw = copy_of(dw0, C), *db = copy_of(db0, C);
    vm_cpu_batchnorm_backward_d(dx, affine ? dw : NULL, affine ? db : NULL, R, inp, w, mean, rstd, N, C);
    fd_check("batchnorm dinp", obj_batchnorm, inp, dx, N * C);
    if (affine) {
        fd_check("batchnorm dweight", obj_batchnorm, w, minus(dw, dw0, C), C);
        fd_check("batchnorm dbias", obj_batchnorm, b, minus(db, db0, C), C);
    }
    obj_batchnorm();
    float *fo = tof(out, N * C), *fm = tof(mean, C), *fr = tof(rstd, C), *frm = tof(rm0, C), *frv = tof(rv0, C);
    float *fdx = tof(dx, N * C), *fdw = tof(dw0, C), *fdb = tof(db0, C), *fin = tof(inp, N * C);
    float *fw = affine ? tof(w, C) : NULL, *fb = affine ? tof(b, C) : NULL;
    FB->batchnorm_forward(fo, fm, fr, frm, frv, fin, fw, fb, N, C, 1e-5f, 0.1f);
    FB->batchnorm_backward(fdx, affine ? fdw : NULL, affine ? fdb : NULL, tof(R, N * C), fin, fw, fm, fr, N, C);
    fp_check("batchnorm out", fo, out, N * C);
    fp_check("batchnorm running_mean", frm, rm, C);
    fp_check("batchnorm running_var", frv, rv, C);
    fp_check("batchnorm dinp", fdx, dx, N * C);
    if (affine) {
        fp_check_acc("batchnorm dweight", fdw, dw0, dw, dw0, C);
        fp_check_acc("batchnorm dbias", fdb, db0, db, db0, C);
    }
    arena_reset();
}
OPS_TEST(batchnorm_forward_and_backward) { batchnorm_case(1); }
OPS_TEST(batchnorm_without_affine) { batchnorm_case(0); }

// ---- attention ---------------------------------------------------------------------------------
static double obj_attention(void) {
    vm_cpu_attention_forward_d(S.out, S.aux[0], S.in[0], S.B, S.T, S.C, S.NH);
    return objective();
}

OPS_TEST(attention_forward_and_backward) {
    const int B = 2, T = 5, C = 12, NH = 3, hs = C / NH;
    double *qkv = vec(B * T * 3 * C, -1.5, 1.5), *out = zeros(B * T * C);
    double *att = zeros(B * NH * T * T), *R = vec(B * T * C, -1, 1);
    S = (typeof(S)){.B = B, .T = T, .C = C, .NH = NH, .in = {qkv}, .aux = {att}, .out = out,
                    .R = R, .n_out = B * T * C};
    obj_attention();
    for (int b = 0; b < B; b++)  // reference: softmax(q k^T / sqrt(hs)) v, head by head
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                double p[8], z = 0;
                for (int u = 0; u < T; u++) {
                    double s = 0;
                    for (int i = 0; i < hs; i++)
                        s += qkv[(b * T + t) * 3 * C + h * hs + i] * qkv[(b * T + u) * 3 * C + C + h * hs + i];
                    p[u] = exp(s / sqrt(hs));
                    z += p[u];
                }
                for (int u = 0; u < T; u++) CHECK_NEAR(att[((b * NH + h) * T + t) * T + u], p[u] / z, 1e-12);
                for (int i = 0; i < hs; i++) {
                    double o = 0;
                    for (int u = 0; u < T; u++) o += p[u] / z * qkv[(b * T + u) * 3 * C + 2 * C + h * hs + i];
                    CHECK_NEAR(out[(b * T + t) * C + h * hs + i], o, 1e-12);
                }
            }
    double *dqkv = vec(B * T * 3 * C, 1e3, 2e3), *scratch = zeros(B * NH * T * T);
    vm_cpu_attention_backward_d(dqkv, scratch, R, qkv, att, B, T, C, NH);
    fd_check("attention dqkv", obj_attention, qkv, dqkv, B * T * 3 * C);

    obj_attention();
    float *fo = tof(out, B * T * C), *fatt = tof(att, B * NH * T * T), *fq = tof(qkv, B * T * 3 * C);
    float *fdq = tof(dqkv, B * T * 3 * C), *fs = tof(scratch, B * NH * T * T);
    for (size_t i = 0; i < (size_t)B * T * 3 * C; i++) fdq[i] = 1e3f;
    FB->attention_forward(fo, fatt, fq, B, T, C, NH);
    FB->attention_backward(fdq, fs, tof(R, B * T * C), fq, fatt, B, T, C, NH);
    fp_check("attention out", fo, out, B * T * C);
    fp_check("attention att", fatt, att, B * NH * T * T);
    fp_check("attention dqkv", fdq, dqkv, B * T * 3 * C);
    arena_reset();
}

// ---- the CUDA backend's bf16 numerics (trainer/cpu/bf16.c, vm_backend_cpu_bf16) ------------------
// The emulated ops round their product operands to bf16 and accumulate in fp32: each is compared
// with double-precision code here that rounds at the same points (so the two agree to fp32
// accumulation accuracy, BF16_EMU_TOL), and with the fp32 op (they must differ by more than
// BF16_MIN_DIFF on random non-round inputs, or the rounding did not happen: bf16 keeps 8
// significant bits, so rounded operands move a product by ~1e-3 relative).
#define BF16_EMU_TOL 1e-6
#define BF16_MIN_DIFF 1e-4

static float bits_f(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
static uint32_t f_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

TEST(bf16_round_known_values) {
    // ties go to the even neighbour: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 (odd), so down;
    // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even), so up
    CHECK(vm_bf16_round(1.0f + 0x1p-8f) == 1.0f);
    CHECK(vm_bf16_round(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f);
    CHECK(vm_bf16_round(-1.0f - 0x1p-8f) == -1.0f);
    CHECK(vm_bf16_round(1.0f + 0x1p-8f + 0x1p-20f) == 1.0f + 0x1p-7f, "above the tie: up");
    CHECK(vm_bf16_round(1.0f + 0x1p-8f - 0x1p-20f) == 1.0f, "below the tie: down");
    CHECK(vm_bf16_round(3.14159265f) == 3.140625f, "pi -> 0x4049");
    CHECK(f_bits(vm_bf16_round(bits_f(0x00008000u))) == 0, "subnormal tie to even (0)");
    CHECK(f_bits(vm_bf16_round(bits_f(0x00018000u))) == 0x00020000u, "subnormal tie to even (up)");
    CHECK(f_bits(vm_bf16_round(-0.0f)) == 0x80000000u, "-0 keeps its sign");
    // specials: Inf kept, NaN stays NaN (also a NaN whose payload is only in the dropped bits),
    // overflow of the largest finite floats to Inf as round-to-nearest does
    CHECK(isinf(vm_bf16_round(INFINITY)) && vm_bf16_round(INFINITY) > 0);
    CHECK(isinf(vm_bf16_round(-INFINITY)) && vm_bf16_round(-INFINITY) < 0);
    CHECK(isnan(vm_bf16_round(NAN)));
    CHECK(isnan(vm_bf16_round(bits_f(0x7f800001u))), "signalling NaN with a low payload");
    CHECK(isnan(vm_bf16_round(bits_f(0xff800001u))));
    CHECK(isinf(vm_bf16_round(bits_f(0x7f7fffffu))), "FLT_MAX rounds up to Inf");
    CHECK(f_bits(vm_bf16_round(bits_f(0x7f7f0000u))) == 0x7f7f0000u, "largest bf16 kept");
    // every finite bf16 value is unchanged; random floats move by at most half a bf16 ulp
    for (uint32_t h = 0; h < 0x10000u; h++) {
        float x = bits_f(h << 16);
        if (isfinite(x)) CHECK(f_bits(vm_bf16_round(x)) == h << 16, "bf16 0x%04x changed", (unsigned)h);
    }
    for (int i = 0; i < 100000; i++) {
        float x = (float)((urand() - 0.5) * pow(2.0, 60 * urand() - 30)), r = vm_bf16_round(x);
        CHECK((f_bits(r) & 0xffffu) == 0, "not a bf16 value");
        int e;
        frexp(x, &e);  // |x| in [2^(e-1), 2^e): bf16 ulp 2^(e-8), half of it 2^(e-9)
        CHECK(fabs((double)r - x) <= ldexp(1, e - 9), "%.9g -> %.9g: more than half an ulp", x, r);
    }
}

// The bf16 products of the float build under test (FB's instruction set).
static int fb_is_avx2(void) { return FB == vm_cpu_backend_isa("avx2"); }
static void bf16_copy_f(float *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = vm_bf16_round(src[i]);
}
static float *bf16_of(const float *x, size_t n) {
    float *y = arena_alloc(n * sizeof(float));
    bf16_copy_f(y, x, n);
    return y;
}
static float *fvec(size_t n, double lo, double hi) { return tof(vec(n, lo, hi), n); }
static float *fcopy(const float *x, size_t n) {
    float *y = arena_alloc(n * sizeof(float));
    memcpy(y, x, n * sizeof(float));
    return y;
}
// ||a - b|| / ||b|| of two float arrays
static double rel_ff(const float *a, const float *b, size_t n) {
    double *bd = zeros(n);
    for (size_t i = 0; i < n; i++) bd[i] = b[i];
    return rel_err_f(a, bd, n);
}
static void emu_check(const char *what, const float *emu, const double *ref, const float *fp32, size_t n) {
    double e = rel_err_f(emu, ref, n), d = rel_ff(emu, fp32, n);
    if (getenv("VICMAE_OPS_VERBOSE")) fprintf(stderr, "  bf16  %-30s vs ref %.2e, vs fp32 %.2e\n", what, e, d);
    CHECK(e < BF16_EMU_TOL, "%s: emulated bf16 differs from the rounded double reference by %.3g", what, e);
    CHECK(d > BF16_MIN_DIFF, "%s: emulated bf16 is within %.3g of fp32: no rounding happened?", what, d);
}

OPS_TEST(bf16_matmul_emulation) {
    const int N = 33, C = 70, OC = 21;
    void (*fwd)(float *, const float *, const float *, const float *, int, int, int) =
        fb_is_avx2() ? vm_cpu_bf16_matmul_forward_f_avx2 : vm_cpu_bf16_matmul_forward_f;
    void (*bwd)(float *, float *, float *, const float *, const float *, const float *, int, int, int) =
        fb_is_avx2() ? vm_cpu_bf16_matmul_backward_f_avx2 : vm_cpu_bf16_matmul_backward_f;
    float *x = fvec((size_t)N * C, -1, 1), *w = fvec((size_t)OC * C, -1, 1), *b = fvec(OC, -1, 1);
    float *g = fvec((size_t)N * OC, -1, 1), *dw0 = fvec((size_t)OC * C, -1, 1), *db0 = fvec(OC, -1, 1);
    float *x16 = bf16_of(x, (size_t)N * C), *w16 = bf16_of(w, (size_t)OC * C), *g16 = bf16_of(g, (size_t)N * OC);
    // forward: bias added in fp32 (not rounded)
    float *out = arena_alloc(sizeof(float) * N * OC), *out32 = arena_alloc(sizeof(float) * N * OC);
    fwd(out, x, w, b, N, C, OC);
    FB->matmul_forward(out32, x, w, b, N, C, OC);
    double *ref = zeros((size_t)N * OC);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = b[o];
            for (int c = 0; c < C; c++) s += (double)x16[n * C + c] * w16[o * C + c];
            ref[n * OC + o] = s;
        }
    emu_check("bf16 matmul out", out, ref, out32, (size_t)N * OC);
    // backward: dinp from bf16 dout and weight; dweight += from bf16 dout and inp; dbias += sums of
    // the fp32 dout, bit for bit the fp32 op's
    float *dx = arena_alloc(sizeof(float) * N * C), *dw = fcopy(dw0, (size_t)OC * C), *db = fcopy(db0, OC);
    float *dx32 = arena_alloc(sizeof(float) * N * C), *dw32 = fcopy(dw0, (size_t)OC * C), *db32 = fcopy(db0, OC);
    for (size_t i = 0; i < (size_t)N * C; i++) dx[i] = 1e3f;
    bwd(dx, dw, db, g, x, w, N, C, OC);
    FB->matmul_backward(dx32, dw32, db32, g, x, w, N, C, OC);
    double *rdx = zeros((size_t)N * C), *rdw = zeros((size_t)OC * C);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int o = 0; o < OC; o++) s += (double)g16[n * OC + o] * w16[o * C + c];
            rdx[n * C + c] = s;
        }
    for (int o = 0; o < OC; o++)
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int n = 0; n < N; n++) s += (double)g16[n * OC + o] * x16[n * C + c];
            rdw[o * C + c] = s;
        }
    emu_check("bf16 matmul dinp", dx, rdx, dx32, (size_t)N * C);
    double *ddw = zeros((size_t)OC * C), *ddw32 = zeros((size_t)OC * C);  // the increments
    for (size_t i = 0; i < (size_t)OC * C; i++) ddw[i] = (double)dw[i] - dw0[i], ddw32[i] = (double)dw32[i] - dw0[i];
    {
        double e = rel_err(ddw, rdw, (size_t)OC * C), d = rel_err(ddw, ddw32, (size_t)OC * C);
        // the += onto dw0 rounds the increment to dw0's fp32 ulps: a few 1e-7 relative
        CHECK(e < 1e-5, "bf16 matmul dweight: increment differs from the rounded reference by %.3g", e);
        CHECK(d > BF16_MIN_DIFF, "bf16 matmul dweight: within %.3g of fp32: no rounding?", d);
    }
    CHECK(memcmp(db, db32, sizeof(float) * OC) == 0, "dbias must be the fp32 column sums of dout");
    // dinp NULL (first layer) and bias NULL
    float *dw2 = fcopy(dw0, (size_t)OC * C);
    bwd(NULL, dw2, NULL, g, x, w, N, C, OC);
    CHECK(memcmp(dw2, dw, sizeof(float) * OC * C) == 0, "dweight without dinp differs");
    fwd(out, x, w, NULL, N, C, OC);
    double s = 0;
    for (int c = 0; c < C; c++) s += (double)x16[2 * C + c] * w16[5 * C + c];
    CHECK_NEAR(out[2 * OC + 5], s, 1e-5);
    arena_reset();
}

OPS_TEST(bf16_attention_emulation) {
    const int B = 2, T = 7, C = 16, NH = 2, hs = C / NH, C3 = 3 * C;
    const size_t nq = (size_t)B * T * C3, no = (size_t)B * T * C, na = (size_t)B * NH * T * T;
    void (*fwd)(float *, float *, const float *, int, int, int, int) =
        fb_is_avx2() ? vm_cpu_bf16_attention_forward_f_avx2 : vm_cpu_bf16_attention_forward_f;
    void (*bwd)(float *, float *, const float *, const float *, const float *, int, int, int, int) =
        fb_is_avx2() ? vm_cpu_bf16_attention_backward_f_avx2 : vm_cpu_bf16_attention_backward_f;
    float *qkv = fvec(nq, -1.5, 1.5), *dy = fvec(no, -1, 1);
    float *q16 = bf16_of(qkv, nq), *dy16 = bf16_of(dy, no);
    float *out = arena_alloc(sizeof(float) * no), *att = arena_alloc(sizeof(float) * na);
    float *out32 = arena_alloc(sizeof(float) * no), *att32 = arena_alloc(sizeof(float) * na);
    fwd(out, att, qkv, B, T, C, NH);
    FB->attention_forward(out32, att32, qkv, B, T, C, NH);
    // reference forward: scores from bf16 q, k (scale on the sum), softmax in double -> att (the op
    // keeps fp32 probabilities); out from bf16(att) — the op's own att rounded, so that a value
    // within an ulp of a bf16 tie cannot round differently here — and bf16 v
    double *ratt = zeros(na), *rout = zeros(no), *ratt32 = zeros(na);
    const double scale = 1 / sqrt((double)hs);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                double p[8], z = 0, p32[8], z32 = 0;
                for (int u = 0; u < T; u++) {
                    double s = 0, s32 = 0;
                    for (int i = 0; i < hs; i++) {
                        size_t iq = (size_t)(b * T + t) * C3 + h * hs + i, ik = (size_t)(b * T + u) * C3 + C + h * hs + i;
                        s += (double)q16[iq] * q16[ik];
                        s32 += (double)qkv[iq] * qkv[ik];
                    }
                    p[u] = exp(s * scale), p32[u] = exp(s32 * scale);
                    z += p[u], z32 += p32[u];
                }
                double *a = ratt + ((size_t)(b * NH + h) * T + t) * T;
                for (int u = 0; u < T; u++) a[u] = p[u] / z, ratt32[(a - ratt) + u] = p32[u] / z32;
                for (int i = 0; i < hs; i++) {
                    double o = 0;
                    for (int u = 0; u < T; u++)
                        o += (double)vm_bf16_round(att[(a - ratt) + u]) * q16[(size_t)(b * T + u) * C3 + 2 * C + h * hs + i];
                    rout[(size_t)(b * T + t) * C + h * hs + i] = o;
                }
            }
    emu_check("bf16 attention att (fp32 softmax)", att, ratt, att32, na);
    CHECK(rel_err_f(att32, ratt32, na) < 1e-5, "the fp32 op's att vs double");
    emu_check("bf16 attention out", out, rout, out32, no);
    // backward: datt = dO . v (bf16 both), dpre = att (datt - sum) scale in double from the op's
    // fp32 att; the op leaves bf16(dpre) in scratch: each value a bf16 within half an ulp of the
    // reference dpre; dq, dk from those rounded values and bf16 k, q; dv from bf16(att), bf16 dO
    float *dqkv = arena_alloc(sizeof(float) * nq), *scr = arena_alloc(sizeof(float) * na);
    float *dqkv32 = arena_alloc(sizeof(float) * nq), *scr32 = arena_alloc(sizeof(float) * na);
    for (size_t i = 0; i < nq; i++) dqkv[i] = 1e3f;
    bwd(dqkv, scr, dy, qkv, att, B, T, C, NH);
    FB->attention_backward(dqkv32, scr32, dy, qkv, att32, B, T, C, NH);
    double *rdq = zeros(nq), dpre_num = 0, dpre_den = 0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *A = att + (size_t)(b * NH + h) * T * T, *D16 = scr + (size_t)(b * NH + h) * T * T;
            for (int t = 0; t < T; t++) {
                double datt[8], s = 0;
                for (int u = 0; u < T; u++) {
                    double d = 0;
                    for (int i = 0; i < hs; i++)
                        d += (double)dy16[(size_t)(b * T + t) * C + h * hs + i] * q16[(size_t)(b * T + u) * C3 + 2 * C + h * hs + i];
                    datt[u] = d;
                    s += A[t * T + u] * d;
                }
                for (int u = 0; u < T; u++) {
                    double dpre = A[t * T + u] * (datt[u] - s) * scale, got = D16[t * T + u];
                    CHECK((f_bits(D16[t * T + u]) & 0xffffu) == 0, "scratch holds bf16(dpre)");
                    dpre_num += (got - dpre) * (got - dpre), dpre_den += dpre * dpre;
                }
            }
            for (int i = 0; i < hs; i++)
                for (int t = 0; t < T; t++) {
                    double sq = 0, sk = 0, sv = 0;
                    for (int u = 0; u < T; u++) {
                        sq += (double)D16[t * T + u] * q16[(size_t)(b * T + u) * C3 + C + h * hs + i];      // dpre k
                        sk += (double)D16[u * T + t] * q16[(size_t)(b * T + u) * C3 + h * hs + i];          // dpre^T q
                        sv += (double)vm_bf16_round(A[u * T + t]) * dy16[(size_t)(b * T + u) * C + h * hs + i];  // att^T dO
                    }
                    size_t r = (size_t)(b * T + t) * C3 + h * hs + i;
                    rdq[r] = sq, rdq[r + C] = sk, rdq[r + 2 * C] = sv;
                }
        }
    // each value within half a bf16 ulp (at most 2^-8 relative), norm-wise too, with a little room
    // for the fp32 computation of dpre; and not equal (it was rounded)
    double e_dpre = sqrt(dpre_num / dpre_den);
    CHECK(e_dpre < 0x1p-8 * 1.01 && e_dpre > 1e-4, "bf16(dpre) vs the reference dpre: %.3g relative", e_dpre);
    emu_check("bf16 attention dqkv", dqkv, rdq, dqkv32, nq);
    arena_reset();
}

TEST(cpu_bf16_backend_table) {
    const vm_backend_ops *f = vm_backend_cpu(0), *h = vm_backend_cpu_bf16(0);
    CHECK(h != NULL && strcmp(h->name, "cpu-bf16") == 0 && strcmp(f->name, "cpu") == 0);
    // the products replaced, everything else the CPU table of the same instruction set
    CHECK(h->matmul_forward != f->matmul_forward && h->matmul_backward != f->matmul_backward);
    CHECK(h->attention_forward != f->attention_forward && h->attention_backward != f->attention_backward);
    int avx2 = f == vm_cpu_backend_isa("avx2");
    CHECK(h->matmul_forward == (avx2 ? vm_cpu_bf16_matmul_forward_f_avx2 : vm_cpu_bf16_matmul_forward_f));
    CHECK(h->attention_backward == (avx2 ? vm_cpu_bf16_attention_backward_f_avx2 : vm_cpu_bf16_attention_backward_f));
    CHECK(h->layernorm_forward == f->layernorm_forward && h->gelu_forward == f->gelu_forward &&
          h->infonce_loss == f->infonce_loss && h->adamw == f->adamw && h->alloc == f->alloc);
    void (*const *fns)(void) = (void (*const *)(void))((const char *)h + sizeof(const char *));
    size_t nfn = (sizeof *h - sizeof(const char *)) / sizeof(void (*)(void));
    for (size_t i = 0; i < nfn; i++) CHECK(fns[i] != NULL, "cpu-bf16 entry %zu is NULL", i);
}

// ---- bf16 activations (the cpu-bf16 table's bf16-activation ops) ------------------------------
// bf16 in, each bf16 output one rounding of the fp32 result.  LayerNorm, linear and GELU outputs
// against double references rounded once: never more than one bf16 ulp apart, and equal in nearly
// every element (only where the fp32 result and the double one fall on the two sides of a rounding
// boundary).  The linear backward and the attention ops are by contract the emulated products
// above on the widened input (bitwise; their numerics are tested there); add is exact.
#define FBF(op) (fb_is_avx2() ? vm_cpu_##op##_f_avx2 : vm_cpu_##op##_f)

static vm_bf16 *to16(const float *x, size_t n) {
    vm_bf16 *y = arena_alloc(n * sizeof(vm_bf16));
    for (size_t i = 0; i < n; i++) y[i] = vm_bf16_from_float(x[i]);
    return y;
}
static float *from16(const vm_bf16 *x, size_t n) {
    float *y = arena_alloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) y[i] = vm_bf16_to_float(x[i]);
    return y;
}
static vm_bf16 *poisoned16(size_t n) {
    vm_bf16 *y = arena_alloc(n * sizeof(vm_bf16));
    for (size_t i = 0; i < n; i++) y[i] = 0xffffu;  // a NaN
    return y;
}
// floor: an absolute error allowed besides the ulp (GELU's fp32 erf is accurate to ~1e-7 absolute,
// which is many ulps of its tiny outputs far left)
static void ulp_check(const char *what, const vm_bf16 *got, const double *ref, size_t n, double floor) {
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        float g = vm_bf16_to_float(got[i]), r = vm_bf16_round((float)ref[i]);
        if (g == r) continue;
        off++;
        int e;
        frexp(ref[i], &e);  // |ref| in [2^(e-1), 2^e): a bf16 ulp is 2^(e-8)
        CHECK(fabs((double)g - r) <= ldexp(1, e - 8) + floor, "%s[%zu] = %.9g: more than one bf16 ulp from %.9g", what, i, g,
              ref[i]);
    }
    CHECK(off * 50 <= n, "%s: %zu of %zu values differ from the rounded reference", what, off, n);
}

OPS_TEST(bf16_activation_ops) {
    const int N = 37, C = 48, OC = 40;
    const size_t nx = (size_t)N * C, ny = (size_t)N * OC;
    // LayerNorm: fp32 residual in, bf16 out, fp32 statistics identical to the fp32 op's
    float *x = fvec(nx, -2, 3), *lw = fvec(C, 0.5, 1.5), *lb = fvec(C, -0.5, 0.5);
    vm_bf16 *ln = poisoned16(nx);
    float *mean = arena_alloc(N * sizeof(float)), *rstd = arena_alloc(N * sizeof(float));
    float *ln32 = arena_alloc(nx * sizeof(float)), *mean32 = arena_alloc(N * sizeof(float)), *rstd32 = arena_alloc(N * sizeof(float));
    FBF(layernorm_forward_bf16)(ln, mean, rstd, x, lw, lb, N, C, 1e-6f);
    FB->layernorm_forward(ln32, mean32, rstd32, x, lw, lb, N, C, 1e-6f);
    CHECK(memcmp(mean, mean32, N * sizeof(float)) == 0 && memcmp(rstd, rstd32, N * sizeof(float)) == 0);
    double *ref = zeros(nx);
    for (int n = 0; n < N; n++) {
        double m = 0, v = 0;
        for (int c = 0; c < C; c++) m += x[n * C + c];
        m /= C;
        for (int c = 0; c < C; c++) v += (x[n * C + c] - m) * (x[n * C + c] - m);
        double r = 1 / sqrt(v / C + 1e-6);
        for (int c = 0; c < C; c++) ref[n * C + c] = (x[n * C + c] - m) * r * lw[c] + lb[c];
    }
    ulp_check("layernorm bf16 out", ln, ref, nx, 0);
    // linear: bf16 inp (exact) @ bf16(weight) + bf16(bias), summed in fp32, rounded once
    float *w = fvec((size_t)OC * C, -0.3, 0.3), *b = fvec(OC, -1, 1), *wr = bf16_of(w, (size_t)OC * C);
    float *xin = from16(ln, nx);
    vm_bf16 *y = poisoned16(ny);
    FBF(matmul_forward_bf16)(y, ln, w, b, N, C, OC);
    double *ry = zeros(ny);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = vm_bf16_round(b[o]);
            for (int c = 0; c < C; c++) s += (double)xin[n * C + c] * wr[o * C + c];
            ry[n * OC + o] = s;
        }
    ulp_check("linear bf16 out", y, ry, ny, 0);
    // linear backward: the emulated product on the widened input, bitwise
    float *g = fvec(ny, -1, 1), *dw0 = fvec((size_t)OC * C, -1, 1), *db0 = fvec(OC, -1, 1);
    float *dx = arena_alloc(nx * sizeof(float)), *dw = fcopy(dw0, (size_t)OC * C), *db = fcopy(db0, OC);
    float *dxr = arena_alloc(nx * sizeof(float)), *dwr = fcopy(dw0, (size_t)OC * C), *dbr = fcopy(db0, OC);
    FBF(matmul_backward_bf16)(dx, dw, db, g, ln, w, N, C, OC);
    FBF(bf16_matmul_backward)(dxr, dwr, dbr, g, xin, w, N, C, OC);
    CHECK(memcmp(dx, dxr, nx * sizeof(float)) == 0 && memcmp(dw, dwr, (size_t)OC * C * sizeof(float)) == 0 &&
          memcmp(db, dbr, OC * sizeof(float)) == 0, "linear backward on bf16 input differs from the emulated op");
    // GELU: bf16 in, bf16 out rounded once; backward fp32 from the bf16 input
    float *yin = from16(y, ny);
    vm_bf16 *ge = poisoned16(ny);
    FBF(gelu_forward_bf16)(ge, y, ny);
    double *rg = zeros(ny), *rdg = zeros(ny);
    for (size_t i = 0; i < ny; i++) {
        double v = yin[i];
        rg[i] = 0.5 * v * erfc(-v / sqrt(2.0));
        rdg[i] = g[i] * (0.5 * erfc(-v / sqrt(2.0)) + v * exp(-0.5 * v * v) / sqrt(2 * M_PI));
    }
    ulp_check("gelu bf16 out", ge, rg, ny, 1e-6);
    float *dg = arena_alloc(ny * sizeof(float));
    FBF(gelu_backward_bf16)(dg, y, g, ny);
    fp_check("gelu dinp from bf16", dg, rdg, ny);
    // residual add: exact
    float *a = fvec(ny, -1, 1), *sum = arena_alloc(ny * sizeof(float));
    FBF(add_bf16)(sum, a, ge, ny);
    for (size_t i = 0; i < ny; i++) CHECK(sum[i] == a[i] + vm_bf16_to_float(ge[i]), "add_bf16[%zu]", i);
    // attention: the emulated products on the widened qkv; out rounded once
    const int Bt = 2, T = 9, Ca = 16, NH = 2;
    const size_t nq = (size_t)Bt * T * 3 * Ca, no = (size_t)Bt * T * Ca, na = (size_t)Bt * NH * T * T;
    vm_bf16 *qkv = to16(fvec(nq, -1.5, 1.5), nq), *out = poisoned16(no);
    float *qkvw = from16(qkv, nq), *att = arena_alloc(na * sizeof(float)), *attr = arena_alloc(na * sizeof(float));
    float *outr = arena_alloc(no * sizeof(float));
    FBF(attention_forward_bf16)(out, att, qkv, Bt, T, Ca, NH);
    FBF(bf16_attention_forward)(outr, attr, qkvw, Bt, T, Ca, NH);
    CHECK(memcmp(att, attr, na * sizeof(float)) == 0, "attention probabilities differ");
    for (size_t i = 0; i < no; i++)
        CHECK(out[i] == vm_bf16_from_float(outr[i]), "attention out[%zu] is not the fp32 result rounded once", i);
    float *dy = fvec(no, -1, 1), *dqkv = arena_alloc(nq * sizeof(float)), *dqkvr = arena_alloc(nq * sizeof(float));
    float *scr = arena_alloc(na * sizeof(float)), *scrr = arena_alloc(na * sizeof(float));
    FBF(attention_backward_bf16)(dqkv, scr, dy, qkv, att, Bt, T, Ca, NH);
    FBF(bf16_attention_backward)(dqkvr, scrr, dy, qkvw, att, Bt, T, Ca, NH);
    CHECK(memcmp(dqkv, dqkvr, nq * sizeof(float)) == 0, "attention backward on bf16 qkv differs from the emulated op");
    arena_reset();
}

// ---- pointwise -----------------------------------------------------------------------------------
static double obj_gelu(void) {
    vm_cpu_gelu_forward_d(S.out, S.in[0], S.n_out);
    return objective();
}
static double obj_relu(void) {
    vm_cpu_relu_forward_d(S.out, S.in[0], S.n_out);
    return objective();
}

OPS_TEST(gelu_and_relu) {
    const size_t n = 300;
    double *x = vec(n, -4, 4), *out = zeros(n), *R = vec(n, -1, 1), *dx = vec(n, 1e3, 2e3);
    S = (typeof(S)){.in = {x}, .out = out, .R = R, .n_out = n};
    obj_gelu();
    for (size_t i = 0; i < n; i++) CHECK_NEAR(out[i], x[i] * 0.5 * erfc(-x[i] / sqrt(2.0)), 1e-13);
    vm_cpu_gelu_backward_d(dx, x, R, n);
    fd_check("gelu dinp", obj_gelu, x, dx, n);
    float *fo = tof(out, n), *fdx = tof(dx, n), *fx = tof(x, n);
    FB->gelu_forward(fo, fx, n);
    FB->gelu_backward(fdx, fx, tof(R, n), n);
    fp_check("gelu out", fo, out, n);
    fp_check("gelu dinp", fdx, dx, n);

    obj_relu();
    for (size_t i = 0; i < n; i++) CHECK_NEAR(out[i], x[i] > 0 ? x[i] : 0, 0);
    vm_cpu_relu_backward_d(dx, x, R, n);
    fd_check("relu dinp", obj_relu, x, dx, n);
    FB->relu_backward(fdx, fx, tof(R, n), n);
    fp_check("relu dinp", fdx, dx, n);
    arena_reset();
}

OPS_TEST(add_accumulate_scale) {
    const size_t n = 1000;
    double *a = vec(n, -1, 1), *b = vec(n, -1, 1), *o = vec(n, 5, 6);
    vm_cpu_add_d(o, a, b, n);
    for (size_t i = 0; i < n; i++) CHECK_NEAR(o[i], a[i] + b[i], 0);
    vm_cpu_accumulate_d(o, a, n);
    for (size_t i = 0; i < n; i++) CHECK_NEAR(o[i], 2 * a[i] + b[i], 0);
    vm_cpu_scale_d(o, 0.25, n);
    for (size_t i = 0; i < n; i++) CHECK_NEAR(o[i], 0.25 * (2 * a[i] + b[i]), 0);
    float *fo = tof(a, n);
    FB->add(fo, fo, tof(b, n), n);  // in place
    for (size_t i = 0; i < n; i++) CHECK_NEAR(fo[i], (float)a[i] + (float)b[i], 0);
    arena_reset();
}

static double obj_add_rows(void) {
    vm_cpu_add_rows_d(S.out, S.in[0], S.in[1], S.B, S.T, S.C);
    return objective();
}

OPS_TEST(add_rows_forward_and_backward) {
    const int B = 3, T = 7, C = 20;  // T*C > 64: several column chunks
    double *x = vec(B * T * C, -1, 1), *pos = vec(T * C, -1, 1), *out = zeros(B * T * C);
    double *R = vec(B * T * C, -1, 1);
    S = (typeof(S)){.B = B, .T = T, .C = C, .in = {x, pos}, .out = out, .R = R, .n_out = B * T * C};
    obj_add_rows();
    for (int i = 0; i < B * T * C; i++) CHECK_NEAR(out[i], x[i] + pos[i % (T * C)], 0);
    double *dp0 = vec(T * C, -1, 1), *dp = copy_of(dp0, T * C);
    vm_cpu_add_rows_backward_d(dp, R, B, T, C);
    fd_check("add_rows dpos", obj_add_rows, pos, minus(dp, dp0, T * C), T * C);
    float *fdp = tof(dp0, T * C);
    FB->add_rows_backward(fdp, tof(R, B * T * C), B, T, C);
    fp_check_acc("add_rows dpos", fdp, dp0, dp, dp0, T * C);
    float *fx = tof(x, B * T * C);
    FB->add_rows(fx, fx, tof(pos, T * C), B, T, C);  // in place
    fp_check("add_rows in place", fx, out, B * T * C);
    arena_reset();
}

// ---- input and token plumbing ----------------------------------------------------------------
OPS_TEST(patchify_both_orders) {
    const int B = 2, H = 8, W = 12, P = 4, L = (H / P) * (W / P), D = 3 * P * P;
    uint8_t *img = arena_alloc((size_t)B * H * W * 3);
    for (int i = 0; i < B * H * W * 3; i++) img[i] = (uint8_t)(urand() * 256);
    const double mean[3] = {0.485, 0.456, 0.406}, std[3] = {0.229, 0.224, 0.225};
    const float fmean[3] = {0.485f, 0.456f, 0.406f}, fstd[3] = {0.229f, 0.224f, 0.225f};
    for (int conv = 0; conv <= 1; conv++) {
        double *out = zeros(B * L * D);
        float *fo = arena_alloc(sizeof(float) * B * L * D);
        vm_cpu_patchify_d(out, img, B, H, W, P, conv, mean, std);
        FB->patchify(fo, img, B, H, W, P, conv, fmean, fstd);
        for (int b = 0; b < B; b++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++)
                    for (int c = 0; c < 3; c++) {
                        int l = (y / P) * (W / P) + x / P, py = y % P, px = x % P;
                        int j = conv ? c * P * P + py * P + px : (py * P + px) * 3 + c;
                        uint8_t v = img[((b * H + y) * W + x) * 3 + c];
                        size_t o = ((size_t)b * L + l) * D + j;
                        CHECK_NEAR(out[o], (v / 255.0 - mean[c]) / std[c], 1e-12);
                        // float: exactly torchvision's ToTensor + Normalize in float32
                        CHECK(fo[o] == ((float)v / 255.0f - fmean[c]) / fstd[c], "float patch value");
                    }
    }
    arena_reset();
}

// a random permutation of L, as MAE's argsort of noise: ids_keep = first K, ids_restore = inverse
static void random_masking(int32_t *keep, int32_t *restore, int B, int L, int K) {
    int32_t *shuffle = arena_alloc(sizeof(int32_t) * L);
    for (int b = 0; b < B; b++) {
        for (int l = 0; l < L; l++) shuffle[l] = l;
        for (int l = L - 1; l > 0; l--) {
            int j = (int)(urand() * (l + 1));
            int32_t t = shuffle[l];
            shuffle[l] = shuffle[j];
            shuffle[j] = t;
        }
        for (int k = 0; k < K; k++) keep[b * K + k] = shuffle[k];
        for (int l = 0; l < L; l++) restore[b * L + shuffle[l]] = l;
    }
}

static double obj_gather(void) {
    vm_cpu_gather_tokens_d(S.out, S.in[0], S.in[1], S.ids, S.B, S.L, S.K, S.C);
    return objective();
}
static double obj_unshuffle(void) {
    vm_cpu_unshuffle_tokens_d(S.out, S.in[0], S.in[1], S.ids, S.B, S.L, S.K, S.C);
    return objective();
}

OPS_TEST(gather_and_unshuffle_tokens) {
    const int B = 3, L = 12, K = 4, C = 70;
    int32_t *keep = arena_alloc(sizeof(int32_t) * B * K), *restore = arena_alloc(sizeof(int32_t) * B * L);
    random_masking(keep, restore, B, L, K);
    // gather: out (B, 1+K, C)
    double *x = vec(B * L * C, -1, 1), *cls = vec(C, -1, 1), *enc = zeros(B * (1 + K) * C);
    double *R = vec(B * (1 + K) * C, -1, 1);
    S = (typeof(S)){.B = B, .L = L, .K = K, .C = C, .in = {x, cls}, .out = enc, .R = R,
                    .n_out = B * (1 + K) * C, .ids = keep};
    obj_gather();
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            CHECK_NEAR(enc[(b * (1 + K)) * C + c], cls[c], 0);
            for (int k = 0; k < K; k++)
                CHECK_NEAR(enc[(b * (1 + K) + 1 + k) * C + c], x[(b * L + keep[b * K + k]) * C + c], 0);
        }
    double *dx = vec(B * L * C, 1e3, 2e3), *dcls0 = vec(C, -1, 1), *dcls = copy_of(dcls0, C);
    vm_cpu_gather_tokens_backward_d(dx, dcls, R, keep, B, L, K, C);
    fd_check("gather_tokens dx", obj_gather, x, dx, B * L * C);
    fd_check("gather_tokens dcls", obj_gather, cls, minus(dcls, dcls0, C), C);
    float *fdx = tof(dx, B * L * C), *fdc = tof(dcls0, C);
    for (int i = 0; i < B * L * C; i++) fdx[i] = 1e3f;
    FB->gather_tokens_backward(fdx, fdc, tof(R, B * (1 + K) * C), keep, B, L, K, C);
    fp_check("gather_tokens dx", fdx, dx, B * L * C);
    fp_check_acc("gather_tokens dcls", fdc, dcls0, dcls, dcls0, C);

    // unshuffle: x (B, 1+K, C) -> out (B, 1+L, C)
    double *mt = vec(C, -1, 1), *dec = zeros(B * (1 + L) * C), *R2 = vec(B * (1 + L) * C, -1, 1);
    S = (typeof(S)){.B = B, .L = L, .K = K, .C = C, .in = {enc, mt}, .out = dec, .R = R2,
                    .n_out = B * (1 + L) * C, .ids = restore};
    obj_unshuffle();
    for (int b = 0; b < B; b++)  // reference: MAE's cat + gather with ids_restore
        for (int c = 0; c < C; c++) {
            CHECK_NEAR(dec[(b * (1 + L)) * C + c], cls[c], 0);
            for (int l = 0; l < L; l++) {
                int k = restore[b * L + l];
                double want = k < K ? x[(b * L + keep[b * K + k]) * C + c] : mt[c];
                CHECK_NEAR(dec[(b * (1 + L) + 1 + l) * C + c], want, 0);
            }
        }
    double *denc = vec(B * (1 + K) * C, 1e3, 2e3), *dmt0 = vec(C, -1, 1), *dmt = copy_of(dmt0, C);
    vm_cpu_unshuffle_tokens_backward_d(denc, dmt, R2, restore, B, L, K, C);
    fd_check("unshuffle_tokens dx", obj_unshuffle, enc, denc, B * (1 + K) * C);
    fd_check("unshuffle_tokens dmask_token", obj_unshuffle, mt, minus(dmt, dmt0, C), C);
    float *fde = tof(denc, B * (1 + K) * C), *fdm = tof(dmt0, C);
    for (int i = 0; i < B * (1 + K) * C; i++) fde[i] = 1e3f;
    FB->unshuffle_tokens_backward(fde, fdm, tof(R2, B * (1 + L) * C), restore, B, L, K, C);
    fp_check("unshuffle_tokens dx", fde, denc, B * (1 + K) * C);
    fp_check_acc("unshuffle_tokens dmask_token", fdm, dmt0, dmt, dmt0, C);
    arena_reset();
}

static double obj_drop(void) {
    vm_cpu_drop_first_token_d(S.out, S.in[0], S.B, S.T, S.C);
    return objective();
}
static double obj_pool(void) {
    vm_cpu_pool_forward_d(S.out, S.in[0], S.B, S.T, S.C, S.flag);
    return objective();
}

OPS_TEST(drop_first_token_and_pool) {
    const int B = 3, T = 6, C = 9;
    double *x = vec(B * T * C, -1, 1), *out = zeros(B * (T - 1) * C), *R = vec(B * (T - 1) * C, -1, 1);
    S = (typeof(S)){.B = B, .T = T, .C = C, .in = {x}, .out = out, .R = R, .n_out = B * (T - 1) * C};
    obj_drop();
    for (int b = 0; b < B; b++)
        for (int i = 0; i < (T - 1) * C; i++) CHECK_NEAR(out[b * (T - 1) * C + i], x[b * T * C + C + i], 0);
    double *dx = vec(B * T * C, 1e3, 2e3);
    vm_cpu_drop_first_token_backward_d(dx, R, B, T, C);
    fd_check("drop_first_token dinp", obj_drop, x, dx, B * T * C);

    for (int cls = 0; cls <= 1; cls++) {
        double *p = zeros(B * C), *Rp = vec(B * C, -1, 1);
        S = (typeof(S)){.B = B, .T = T, .C = C, .flag = cls, .in = {x}, .out = p, .R = Rp, .n_out = B * C};
        obj_pool();
        for (int b = 0; b < B; b++)
            for (int c = 0; c < C; c++) {
                double m = 0;
                for (int t = 1; t < T; t++) m += x[(b * T + t) * C + c];
                CHECK_NEAR(p[b * C + c], cls ? x[b * T * C + c] : m / (T - 1), 1e-14);
            }
        double *d0 = vec(B * T * C, -1, 1), *d = copy_of(d0, B * T * C);
        vm_cpu_pool_backward_d(d, Rp, B, T, C, cls);
        fd_check(cls ? "pool(cls) dinp" : "pool(mean) dinp", obj_pool, x, minus(d, d0, B * T * C), B * T * C);
        float *fp = tof(p, B * C), *fd = tof(d0, B * T * C);
        FB->pool_forward(fp, tof(x, B * T * C), B, T, C, cls);
        FB->pool_backward(fd, tof(Rp, B * C), B, T, C, cls);
        fp_check("pool out", fp, p, B * C);
        fp_check_acc("pool dinp", fd, d0, d, d0, B * T * C);
    }
    arena_reset();
}

// pool_forward goes by column chunks of at most 512: a wide row against the plain mean
OPS_TEST(pool_wide_rows) {
    const int B = 2, T = 5, C = 1100;
    double *x = vec(B * T * C, -1, 1), *p = zeros(B * C);
    vm_cpu_pool_forward_d(p, x, B, T, C, 0);
    float *fp = arena_alloc(sizeof(float) * B * C);
    FB->pool_forward(fp, tof(x, B * T * C), B, T, C, 0);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            double m = 0;
            for (int t = 1; t < T; t++) m += x[(b * T + t) * C + c];
            CHECK_NEAR(p[b * C + c], m / (T - 1), 1e-14);
            CHECK_NEAR(fp[b * C + c], m / (T - 1), 1e-6);
        }
    arena_reset();
}

// ---- losses ------------------------------------------------------------------------------------
// The objective of a loss is dloss * loss (the loss's own gradient is scaled by dloss).
static const double DLOSS = 0.7;

static double obj_mae(void) {
    double loss;
    vm_cpu_mae_loss_d(&loss, S.aux[0], S.in[0], S.in[1], S.in[2], S.B, S.L, S.D, S.flag, DLOSS);
    return DLOSS * loss;
}

// MAE forward_loss written out: target normalised per patch (unbiased var + 1e-6)**.5
static double ref_mae(const double *pred, const double *target, const double *mask, int B, int L,
                      int D, int norm_pix) {
    double num = 0, den = 0;
    for (int r = 0; r < B * L; r++) {
        const double *t = target + (size_t)r * D, *p = pred + (size_t)r * D;
        double m = 0, v = 0;
        for (int d = 0; d < D; d++) m += t[d] / D;
        for (int d = 0; d < D; d++) v += (t[d] - m) * (t[d] - m) / (D - 1);
        double e = 0;
        for (int d = 0; d < D; d++) {
            double tt = norm_pix ? (t[d] - m) / pow(v + 1e-6, 0.5) : t[d];
            e += (p[d] - tt) * (p[d] - tt) / D;
        }
        num += e * mask[r];
        den += mask[r];
    }
    return num / den;
}

OPS_TEST(mae_loss_value_and_gradient) {
    const int B = 2, L = 6, D = 12;
    for (int norm_pix = 0; norm_pix <= 1; norm_pix++) {
        double *pred = vec(B * L * D, -2, 2), *target = vec(B * L * D, -1, 3), *mask = zeros(B * L);
        for (int i = 0; i < B * L; i++) mask[i] = i % 3 != 0;  // some kept, some masked
        S = (typeof(S)){.B = B, .L = L, .D = D, .flag = norm_pix, .in = {pred, target, mask},
                        .aux = {zeros(B * L * D)}};
        double loss, *dp = vec(B * L * D, 1e3, 2e3);
        vm_cpu_mae_loss_d(&loss, dp, pred, target, mask, B, L, D, norm_pix, DLOSS);
        double want = ref_mae(pred, target, mask, B, L, D, norm_pix);
        CHECK(fabs(loss - want) <= 1e-12 * fabs(want), "mae loss %.17g vs reference %.17g", loss, want);
        fd_check("mae dpred", obj_mae, pred, dp, B * L * D);
        for (int r = 0; r < B * L; r++)
            if (!mask[r])
                for (int d = 0; d < D; d++) CHECK(dp[r * D + d] == 0, "gradient on a visible patch");
        float floss, *fdp = tof(dp, B * L * D);
        FB->mae_loss(&floss, fdp, tof(pred, B * L * D), tof(target, B * L * D), tof(mask, B * L), B, L, D,
                          norm_pix, (float)DLOSS);
        CHECK(fabs(floss - loss) <= FP_TOL * fabs(loss), "float mae loss %.9g vs %.9g", floss, loss);
        fp_check("mae dpred", fdp, dp, B * L * D);
    }
    arena_reset();
}

static double obj_infonce(void) {
    double loss, *d1 = S.aux[0], *d2 = S.aux[1];
    vm_cpu_infonce_loss_d(&loss, d1, d2, S.in[0], S.in[1], S.N, S.D, S.temp, DLOSS);
    return DLOSS * loss;
}

// SimCLR's info_nce_loss written out: logits over 2N-1 (self removed), CE with the positive
static double ref_infonce(const double *z1, const double *z2, int N, int D, double tau) {
    int M = 2 * N;
    double *zn = zeros((size_t)M * D), total = 0;
    for (int i = 0; i < M; i++) {
        const double *z = i < N ? z1 + i * D : z2 + (i - N) * D;
        double n = sqrt(dot(z, z, D));
        for (int d = 0; d < D; d++) zn[i * D + d] = z[d] / fmax(n, 1e-12);
    }
    for (int i = 0; i < M; i++) {
        int pos = (i + N) % M;
        double se = 0;
        for (int j = 0; j < M; j++)
            if (j != i) se += exp(dot(zn + i * D, zn + j * D, D) / tau);
        total += -log(exp(dot(zn + i * D, zn + pos * D, D) / tau) / se);
    }
    return total / M;
}

OPS_TEST(infonce_loss_value_and_gradient) {
    const int N = 5, D = 7;
    double *z1 = vec(N * D, -1, 1), *z2 = vec(N * D, -1, 1);
    S = (typeof(S)){.N = N, .D = D, .temp = 0.1, .in = {z1, z2}, .aux = {zeros(N * D), zeros(N * D)}};
    double loss, *d1 = vec(N * D, 1e3, 2e3), *d2 = vec(N * D, 1e3, 2e3);
    vm_cpu_infonce_loss_d(&loss, d1, d2, z1, z2, N, D, 0.1, DLOSS);
    double want = ref_infonce(z1, z2, N, D, 0.1);
    CHECK(fabs(loss - want) <= 1e-12 * fabs(want), "infonce %.17g vs reference %.17g", loss, want);
    fd_check("infonce dz1", obj_infonce, z1, d1, N * D);
    fd_check("infonce dz2", obj_infonce, z2, d2, N * D);
    float floss, *f1 = tof(d1, N * D), *f2 = tof(d2, N * D);
    FB->infonce_loss(&floss, f1, f2, tof(z1, N * D), tof(z2, N * D), N, D, 0.1f, (float)DLOSS);
    CHECK(fabs(floss - loss) <= FP_TOL * fabs(loss), "float infonce %.9g vs %.9g", floss, loss);
    fp_check("infonce dz1", f1, d1, N * D);
    fp_check("infonce dz2", f2, d2, N * D);
    arena_reset();
}

static double obj_simsiam(void) {
    double loss, *d1 = S.aux[0], *d2 = S.aux[1];
    vm_cpu_simsiam_loss_d(&loss, d1, d2, S.in[0], S.in[1], S.in[2], S.in[3], S.N, S.D, DLOSS);
    return DLOSS * loss;
}

OPS_TEST(simsiam_loss_value_and_gradient) {
    const int N = 6, D = 9;
    double *p1 = vec(N * D, -1, 1), *p2 = vec(N * D, -1, 1), *z1 = vec(N * D, -1, 1), *z2 = vec(N * D, -1, 1);
    S = (typeof(S)){.N = N, .D = D, .in = {p1, p2, z1, z2}, .aux = {zeros(N * D), zeros(N * D)}};
    double loss, *d1 = vec(N * D, 1e3, 2e3), *d2 = vec(N * D, 1e3, 2e3);
    vm_cpu_simsiam_loss_d(&loss, d1, d2, p1, p2, z1, z2, N, D, DLOSS);
    double want = 0;  // -(cos(p1, z2).mean() + cos(p2, z1).mean()) / 2
    for (int n = 0; n < N; n++) {
        want -= dot(p1 + n * D, z2 + n * D, D) / sqrt(dot(p1 + n * D, p1 + n * D, D) * dot(z2 + n * D, z2 + n * D, D)) / N / 2;
        want -= dot(p2 + n * D, z1 + n * D, D) / sqrt(dot(p2 + n * D, p2 + n * D, D) * dot(z1 + n * D, z1 + n * D, D)) / N / 2;
    }
    CHECK(fabs(loss - want) <= 1e-12 * fabs(want), "simsiam %.17g vs reference %.17g", loss, want);
    fd_check("simsiam dp1", obj_simsiam, p1, d1, N * D);
    fd_check("simsiam dp2", obj_simsiam, p2, d2, N * D);
    float floss, *f1 = tof(d1, N * D), *f2 = tof(d2, N * D);
    FB->simsiam_loss(&floss, f1, f2, tof(p1, N * D), tof(p2, N * D), tof(z1, N * D), tof(z2, N * D), N, D,
                          (float)DLOSS);
    CHECK(fabs(floss - loss) <= FP_TOL * fabs(loss), "float simsiam %.9g vs %.9g", floss, loss);
    fp_check("simsiam dp1", f1, d1, N * D);
    fp_check("simsiam dp2", f2, d2, N * D);
    arena_reset();
}

static double obj_vicreg(void) {
    double loss, terms[3], *d1 = S.aux[0], *d2 = S.aux[1];
    vm_cpu_vicreg_loss_d(&loss, terms, d1, d2, S.in[0], S.in[1], S.N, S.D, S.w[0], S.w[1], S.w[2], DLOSS);
    return DLOSS * loss;
}

// The official VICReg forward written out (N rows, D features)
static void ref_vicreg(double terms[3], const double *x, const double *y, int N, int D) {
    double repr = 0;
    for (int i = 0; i < N * D; i++) repr += (x[i] - y[i]) * (x[i] - y[i]) / (N * D);
    double stdl = 0, covl = 0;
    for (int br = 0; br < 2; br++) {
        const double *z = br ? y : x;
        double *zc = zeros((size_t)N * D);
        for (int d = 0; d < D; d++) {
            double m = 0;
            for (int n = 0; n < N; n++) m += z[n * D + d] / N;
            for (int n = 0; n < N; n++) zc[n * D + d] = z[n * D + d] - m;
        }
        double hinge = 0;
        for (int d = 0; d < D; d++) {
            double v = 0;
            for (int n = 0; n < N; n++) v += zc[n * D + d] * zc[n * D + d] / (N - 1);
            hinge += fmax(0, 1 - sqrt(v + 1e-4)) / D;
        }
        stdl += hinge / 2;
        for (int i = 0; i < D; i++)
            for (int j = 0; j < D; j++) {
                if (i == j) continue;
                double c = 0;
                for (int n = 0; n < N; n++) c += zc[n * D + i] * zc[n * D + j] / (N - 1);
                covl += c * c / D;
            }
    }
    terms[0] = repr, terms[1] = stdl, terms[2] = covl;
}

OPS_TEST(vicreg_loss_value_and_gradient) {
    const int N = 7, D = 6;
    double *z1 = vec(N * D, -1, 1), *z2 = vec(N * D, -1, 1);
    for (int n = 0; n < N; n++)  // spread the features so that some std are below 1, some above
        for (int d = 0; d < D; d++) z1[n * D + d] = (float)(z1[n * D + d] * (0.5 + d * 0.6)), z2[n * D + d] = (float)(z2[n * D + d] * (3.5 - d * 0.6));
    S = (typeof(S)){.N = N, .D = D, .w = {25, 25, 1}, .in = {z1, z2}, .aux = {zeros(N * D), zeros(N * D)}};
    double loss, terms[3], *d1 = vec(N * D, 1e3, 2e3), *d2 = vec(N * D, 1e3, 2e3);
    vm_cpu_vicreg_loss_d(&loss, terms, d1, d2, z1, z2, N, D, 25, 25, 1, DLOSS);
    double want[3];
    ref_vicreg(want, z1, z2, N, D);
    for (int i = 0; i < 3; i++)
        CHECK(fabs(terms[i] - want[i]) <= 1e-12 * fabs(want[i]), "vicreg term %d: %.17g vs reference %.17g", i,
              terms[i], want[i]);
    CHECK(want[1] > 0, "the std hinge must be active somewhere for the test to mean something");
    CHECK_NEAR(loss, 25 * want[0] + 25 * want[1] + want[2], 1e-12 * fabs(loss));
    fd_check("vicreg dz1", obj_vicreg, z1, d1, N * D);
    fd_check("vicreg dz2", obj_vicreg, z2, d2, N * D);
    float floss, fterms[3], *f1 = tof(d1, N * D), *f2 = tof(d2, N * D);
    FB->vicreg_loss(&floss, fterms, f1, f2, tof(z1, N * D), tof(z2, N * D), N, D, 25, 25, 1, (float)DLOSS);
    CHECK(fabs(floss - loss) <= FP_TOL * fabs(loss), "float vicreg %.9g vs %.9g", floss, loss);
    fp_check("vicreg terms", fterms, terms, 3);
    fp_check("vicreg dz1", f1, d1, N * D);
    fp_check("vicreg dz2", f2, d2, N * D);
    arena_reset();
}

// ---- optimiser ----------------------------------------------------------------------------------
OPS_TEST(sumsq_and_adamw_match_pytorch_steps) {
    const size_t n = 1000;
    double *x = vec(n, -1, 1), ss;
    vm_cpu_sumsq_d(&ss, x, n);
    CHECK_NEAR(ss, dot(x, x, n), 1e-12);
    float fss;
    FB->sumsq(&fss, tof(x, n), n);
    CHECK_NEAR(fss, ss, 1e-6 * ss);

    // 5 steps of torch.optim.AdamW(lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.05), written out
    double *p = vec(n, -1, 1), *m = zeros(n), *v = zeros(n);
    double *rp = copy_of(p, n), *rm = zeros(n), *rv = zeros(n);
    float *fp = tof(p, n), *fm = tof(m, n), *fv = tof(v, n);
    const double lr = 1e-3, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.05, scale = 0.5;
    for (int t = 1; t <= 5; t++) {
        double *g = vec(n, -1, 1);
        vm_cpu_adamw_d(p, g, m, v, n, lr, b1, b2, eps, wd, t, scale);
        FB->adamw(fp, tof(g, n), fm, fv, n, (float)lr, (float)b1, (float)b2, (float)eps, (float)wd, t,
                       (float)scale);
        for (size_t i = 0; i < n; i++) {
            double gi = g[i] * scale;
            rp[i] *= 1 - lr * wd;
            rm[i] = b1 * rm[i] + (1 - b1) * gi;
            rv[i] = b2 * rv[i] + (1 - b2) * gi * gi;
            double mh = rm[i] / (1 - pow(b1, t)), vh = rv[i] / (1 - pow(b2, t));
            rp[i] -= lr * mh / (sqrt(vh) + eps);
        }
        CHECK(rel_err(p, rp, n) < 1e-14, "adamw step %d: double op differs from the reference", t);
        CHECK(rel_err(m, rm, n) < 1e-14 && rel_err(v, rv, n) < 1e-14, "adamw moments, step %d", t);
    }
    fp_check("adamw param", fp, p, n);
    fp_check("adamw m", fm, m, n);
    fp_check("adamw v", fv, v, n);
    arena_reset();
}

// ---- the backend table ---------------------------------------------------------------------------
TEST(cpu_backend_table_is_complete) {
    const vm_backend_ops *be = vm_backend_cpu(0);
    CHECK(be != NULL && strcmp(be->name, "cpu") == 0);
    // every entry set up to the optional bf16-activation group, none of that group (the CPU
    // computes in fp32): the struct is all function pointers after the name
    void (*const *fns)(void) = (void (*const *)(void))((const char *)be + sizeof(const char *));
    size_t nfn = (sizeof *be - sizeof(const char *)) / sizeof(void (*)(void));
    size_t nreq = (offsetof(vm_backend_ops, layernorm_forward_bf16) - sizeof(const char *)) / sizeof(void (*)(void));
    for (size_t i = 0; i < nfn; i++)
        CHECK((fns[i] != NULL) == (i < nreq), "backend entry %zu is %s", i, fns[i] ? "set" : "NULL");
    // memory round trip and one op through the table
    float *a = be->alloc(16 * sizeof(float));
    CHECK(a != NULL);
    for (int i = 0; i < 16; i++) CHECK(a[i] == 0, "alloc must zero-fill");
    float host[16], back[16];
    for (int i = 0; i < 16; i++) host[i] = (float)i - 7.5f;
    be->to_device(a, host, sizeof host);
    be->relu_forward(a, a, 16);
    be->sync();
    be->to_host(back, a, sizeof back);
    for (int i = 0; i < 16; i++) CHECK(back[i] == (host[i] > 0 ? host[i] : 0));
    be->free(a);
}

// ---- reproducibility -------------------------------------------------------------------------
// Resuming must continue bitwise, so the ops' results may not depend on how OpenMP splits the
// work: the same inputs with 1, 2, 3 and 5 threads give identical bits.  The shapes are chosen to
// catch splits that follow the thread count: row counts that are not multiples of OpenBLAS's
// unrolls, channel counts that are not multiples of 16 (column chunks, vector tails), products
// with OC != C (dinp and dweight blocks differ), and a product of several row blocks of
// trainer/cpu/matmul.c (VM_MATMUL_ROWS = 384: 1000 rows are 3 blocks, 336 + 336 + 328, and OC =
// 400 rows of dweight 2).  Run it under each OPENBLAS_CORETYPE the library can pick: Haswell, Zen,
// SkylakeX, Core2 kernels differ in how a row's value depends on the GEMM call's shape.
enum { RN = 203, RC = 100, RB = 3, RT = 17, RAC = 96, RNH = 4, RBN = 1000, RBC = 257, RBOC = 400 };
enum { RZN = 24, RZD = 40 };  // contrastive losses: N pairs of D-dim projections

typedef struct {
    const char *name[64];
    float *v[64];
    size_t n[64];
    int count;
} repro_out;

// The pattern every output is pre-filled with: -0.375 .. 0.375 in steps of 0.125.
static float rout_fill(size_t i) { return (float)((int)(i % 7) - 3) * 0.125f; }

// A named output of n floats, pre-filled with the same pattern in every run (for the += outputs).
static float *rout(repro_out *o, const char *name, size_t n) {
    CHECK(o->count < 64);
    float *v = arena_alloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = rout_fill(i);
    o->name[o->count] = name, o->v[o->count] = v, o->n[o->count] = n, o->count++;
    return v;
}

typedef struct {
    const float *x, *w, *qkv, *mask, *bx, *bw, *bb, *z1, *z2, *p1;
} repro_in;

static void run_ops_at(repro_out *o, int threads, const repro_in *in) {
    omp_set_num_threads(threads);
    memset(o, 0, sizeof *o);
    const float *x = in->x, *w = in->w;
    float *mean = rout(o, "layernorm mean", RN), *rstd = rout(o, "layernorm rstd", RN);
    float *ln = rout(o, "layernorm out", (size_t)RN * RC);
    FB->layernorm_forward(ln, mean, rstd, x, w, w + RC, RN, RC, 1e-6f);
    FB->layernorm_backward(rout(o, "layernorm dinp", (size_t)RN * RC), rout(o, "layernorm dweight", RC),
                           rout(o, "layernorm dbias", RC), x, x, w, mean, rstd, RN, RC);
    float *bmean = rout(o, "batchnorm mean", RC), *brstd = rout(o, "batchnorm rstd", RC);
    FB->batchnorm_forward(rout(o, "batchnorm out", (size_t)RN * RC), bmean, brstd,
                          rout(o, "batchnorm running_mean", RC), rout(o, "batchnorm running_var", RC), x,
                          w, w + RC, RN, RC, 1e-5f, 0.1f);
    FB->batchnorm_backward(rout(o, "batchnorm dinp", (size_t)RN * RC), rout(o, "batchnorm dweight", RC),
                           rout(o, "batchnorm dbias", RC), x, x, w, bmean, brstd, RN, RC);
    FB->add_rows_backward(rout(o, "add_rows_backward", RC), x, RN, 1, RC);
    FB->add_rows_backward(rout(o, "add_rows_backward (T, C)", 7 * RC), x, RN / 7, 7, RC);
    float *att = rout(o, "attention att", (size_t)RB * RNH * RT * RT);
    float *aout = rout(o, "attention out", (size_t)RB * RT * RAC);
    FB->attention_forward(aout, att, in->qkv, RB, RT, RAC, RNH);
    FB->attention_backward(rout(o, "attention dqkv", (size_t)RB * RT * 3 * RAC),
                           rout(o, "attention scratch", (size_t)RB * RNH * RT * RT), aout, in->qkv, att,
                           RB, RT, RAC, RNH);
    FB->mae_loss(rout(o, "mae_loss loss", 1), rout(o, "mae_loss dpred", (size_t)RN * RC), x, w, in->mask,
                 RN / 7, 7, RC, 1, 1.0f);
    FB->sumsq(rout(o, "sumsq", 1), x, (size_t)RN * RC);
    FB->gelu_forward(rout(o, "gelu out", (size_t)RN * RC), x, (size_t)RN * RC);
    FB->gelu_backward(rout(o, "gelu dinp", (size_t)RN * RC), x, w, (size_t)RN * RC);
    FB->pool_forward(rout(o, "pool out", (size_t)(RN / 7) * RC), x, RN / 7, 7, RC, 0);
    FB->pool_backward(rout(o, "pool dinp", (size_t)RN * RC), w, RN / 7, 7, RC, 0);
    // linear layers: (RN, RC) -> (RN, RC) with bias, (RN, RC) -> (RN, 2 RC) without, and a larger
    // product of several row blocks (RBN, RBC) -> (RBN, RBOC)
    float *mm = rout(o, "matmul out", (size_t)RN * RC);
    FB->matmul_forward(mm, x, w, w + RC * RC, RN, RC, RC);
    FB->matmul_backward(rout(o, "matmul dinp", (size_t)RN * RC), rout(o, "matmul dweight", (size_t)RC * RC),
                        rout(o, "matmul dbias", RC), x, mm, w, RN, RC, RC);
    float *mw = rout(o, "matmul wide out", (size_t)RN * 2 * RC);
    FB->matmul_forward(mw, x, w, NULL, RN, RC, 2 * RC);
    FB->matmul_backward(NULL, rout(o, "matmul wide dweight", (size_t)2 * RC * RC), NULL, mw, x, w, RN, RC,
                        2 * RC);
    float *big = rout(o, "matmul big out", (size_t)RBN * RBOC);
    FB->matmul_forward(big, in->bx, in->bw, in->bb, RBN, RBC, RBOC);
    FB->matmul_backward(rout(o, "matmul big dinp", (size_t)RBN * RBC),
                        rout(o, "matmul big dweight", (size_t)RBOC * RBC), rout(o, "matmul big dbias", RBOC),
                        big, in->bx, in->bw, RBN, RBC, RBOC);
    // losses (their GEMMs) and the optimiser
    FB->infonce_loss(rout(o, "infonce loss", 1), rout(o, "infonce dz1", RZN * RZD),
                     rout(o, "infonce dz2", RZN * RZD), in->z1, in->z2, RZN, RZD, 0.1f, 1.0f);
    FB->simsiam_loss(rout(o, "simsiam loss", 1), rout(o, "simsiam dp1", RZN * RZD),
                     rout(o, "simsiam dp2", RZN * RZD), in->p1, in->z2, in->z1, in->z2, RZN, RZD, 1.0f);
    FB->vicreg_loss(rout(o, "vicreg loss", 1), rout(o, "vicreg terms", 3), rout(o, "vicreg dz1", RZN * RZD),
                    rout(o, "vicreg dz2", RZN * RZD), in->z1, in->z2, RZN, RZD, 25, 25, 1, 1.0f);
    float *param = rout(o, "adamw param", (size_t)RN * RC), *m = rout(o, "adamw m", (size_t)RN * RC);
    float *v = rout(o, "adamw v", (size_t)RN * RC);
    memcpy(param, w, sizeof(float) * RN * RC);
    for (int t = 1; t <= 2; t++) FB->adamw(param, x, m, v, (size_t)RN * RC, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.05f, t, 0.5f);
}

OPS_TEST(results_do_not_depend_on_thread_count) {
    repro_in in = {
        .x = tof(vec(RN * RC, -2, 2), RN * RC),
        .w = tof(vec(RN * RC, 0.5, 1.5), RN * RC),
        .qkv = tof(vec(RB * RT * 3 * RAC, -1, 1), RB * RT * 3 * RAC),
        .bx = tof(vec(RBN * RBC, -1, 1), RBN * RBC),
        .bw = tof(vec(RBOC * RBC, -1, 1), RBOC * RBC),
        .bb = tof(vec(RBOC, -1, 1), RBOC),
        .z1 = tof(vec(RZN * RZD, -1, 1), RZN * RZD),
        .z2 = tof(vec(RZN * RZD, -1, 1), RZN * RZD),
        .p1 = tof(vec(RZN * RZD, -1, 1), RZN * RZD),
    };
    float *mask = arena_alloc(sizeof(float) * RN);
    for (int i = 0; i < RN; i++) mask[i] = urand() < 0.75;
    in.mask = mask;
    static const int counts[] = {2, 3, 5};
    repro_out *one = arena_alloc(sizeof *one), *other = arena_alloc(sizeof *other);
    int saved = omp_get_max_threads();
    run_ops_at(one, 1, &in);
    for (int j = 0; j < one->count; j++)  // the ops did run: the losses and sumsq were written
        if (strstr(one->name[j], " loss") || !strcmp(one->name[j], "sumsq"))
            CHECK(one->v[j][0] != rout_fill(0), "%s was not written", one->name[j]);
    char msg[1024];
    size_t len = 0, total = 0;
    msg[0] = 0;
    for (size_t k = 0; k < sizeof counts / sizeof *counts; k++) {
        run_ops_at(other, counts[k], &in);
        CHECK(other->count == one->count);
        for (int j = 0; j < one->count; j++) {
            size_t diff = 0, first = 0;
            for (size_t i = 0; i < one->n[j]; i++)
                if (memcmp(&one->v[j][i], &other->v[j][i], sizeof(float)) != 0 && !diff++) first = i;
            total += diff;
            if (diff && len < sizeof msg - 200)
                len += (size_t)snprintf(msg + len, sizeof msg - len, "; %d threads: %s %zu of %zu (first at %zu)",
                                        counts[k], one->name[j], diff, one->n[j], first);
        }
    }
    omp_set_num_threads(saved);
    CHECK(total == 0, "%zu values differ from 1 thread%s", total, msg);
    arena_reset();
}
