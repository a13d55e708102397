// tools/bf16_diag.c — is a bf16 gradient error rounding or a bug?  On tests/test_cuda_model.c's
// exact setup (configs/tiny.ini, warmup 3, clip 1.0, B = 4, init seed 1234, its views), one debug
// step on CPU models with identical parameters: cpu-bf16 (vm_backend_cpu_bf16) vs cpu fp32, and
// cpu-bf16 vs itself under fp32-level changes of the kind CUDA's different implementation makes
// (baseline instead of AVX2 build, products summed exactly in double, product outputs jittered by
// 1e-6 / 1e-5 relative); per gradient tensor ||a - b|| / max(||b||, 1e-2 ||g||), worst first.
// The last two cases run every bf16 variant with bf16 activations ([train] activations = bf16).
// --train adds 20 training steps (PER_STEP=1 prints each).  The numbers behind the bf16
// tolerances of tests/test_cuda_model.c and docs/GPU.md.  Built by `make all`:
//   build/tools/bf16_diag [--train]   # from the repository root (reads configs/tiny.ini)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "common/config.h"
#include "common/rng.h"
#include "trainer/backend.h"
#include "trainer/cpu/cpu_ops.h"
#include "trainer/model.h"

// ---- the products accumulated exactly (double), results rounded to float ----
static int g_dacc_bf16;
static double *d_of(const float *x, size_t n) {
    if (!x) return NULL;
    double *y = calloc(n + 1, sizeof(double));
    for (size_t i = 0; i < n; i++) y[i] = x[i];
    return y;
}
static void f_from(float *dst, const double *src, size_t n) { for (size_t i = 0; i < n; i++) dst[i] = (float)src[i]; }
static void dacc_mm_f(float *out, const float *inp, const float *w, const float *b, int N, int C, int OC) {
    double *di = d_of(inp, (size_t)N * C), *dw = d_of(w, (size_t)OC * C), *db = d_of(b, OC), *o = malloc((size_t)N * OC * 8);
    (g_dacc_bf16 ? vm_cpu_bf16_matmul_forward_d : vm_cpu_matmul_forward_d)(o, di, dw, db, N, C, OC);
    f_from(out, o, (size_t)N * OC);
    free(di); free(dw); free(db); free(o);
}
static void dacc_mm_b(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp, const float *w,
                      int N, int C, int OC) {
    double *dg = d_of(dout, (size_t)N * OC), *di = d_of(inp, (size_t)N * C), *dw = d_of(w, (size_t)OC * C);
    double *ddi = dinp ? malloc((size_t)N * C * 8) : NULL, *ddw = d_of(dweight, (size_t)OC * C), *ddb = d_of(dbias, OC);
    (g_dacc_bf16 ? vm_cpu_bf16_matmul_backward_d : vm_cpu_matmul_backward_d)(ddi, ddw, ddb, dg, di, dw, N, C, OC);
    if (dinp) f_from(dinp, ddi, (size_t)N * C);
    f_from(dweight, ddw, (size_t)OC * C);
    if (dbias) f_from(dbias, ddb, OC);
    free(dg); free(di); free(dw); free(ddi); free(ddw); free(ddb);
}
static void dacc_att_f(float *out, float *att, const float *qkv, int B, int T, int C, int NH) {
    double *q = d_of(qkv, (size_t)B * T * 3 * C), *o = malloc((size_t)B * T * C * 8), *a = malloc((size_t)B * NH * T * T * 8);
    (g_dacc_bf16 ? vm_cpu_bf16_attention_forward_d : vm_cpu_attention_forward_d)(o, a, q, B, T, C, NH);
    f_from(out, o, (size_t)B * T * C);
    f_from(att, a, (size_t)B * NH * T * T);
    free(q); free(o); free(a);
}
static void dacc_att_b(float *dqkv, float *scratch, const float *dout, const float *qkv, const float *att, int B,
                       int T, int C, int NH) {
    double *q = d_of(qkv, (size_t)B * T * 3 * C), *g = d_of(dout, (size_t)B * T * C), *a = d_of(att, (size_t)B * NH * T * T);
    double *dq = malloc((size_t)B * T * 3 * C * 8), *s = malloc((size_t)B * NH * T * T * 8);
    (g_dacc_bf16 ? vm_cpu_bf16_attention_backward_d : vm_cpu_attention_backward_d)(dq, s, g, q, a, B, T, C, NH);
    f_from(dqkv, dq, (size_t)B * T * 3 * C);
    free(q); free(g); free(a); free(dq); free(s);
}

// ---- the bf16 products with every output element times (1 + eps u), u uniform in [-1, 1]: a
// stand-in for another implementation's fp32 accumulation order, of chosen size.  The products
// are those of g_nz_of, the cpu-bf16 table of this CPU's instruction set.
static const vm_backend_ops *g_nz_of;
static double g_eps;
static uint64_t g_ns = 88172645463325252ull;
static void jitter(float *x, size_t n) {
    if (!x) return;
    for (size_t i = 0; i < n; i++) {
        g_ns ^= g_ns << 13, g_ns ^= g_ns >> 7, g_ns ^= g_ns << 17;
        x[i] *= (float)(1 + g_eps * ((double)(g_ns >> 11) * 0x1.0p-52 - 1));
    }
}
static void nz_mm_f(float *out, const float *inp, const float *w, const float *b, int N, int C, int OC) {
    g_nz_of->matmul_forward(out, inp, w, b, N, C, OC);
    jitter(out, (size_t)N * OC);
}
static void nz_mm_b(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp, const float *w,
                    int N, int C, int OC) {
    g_nz_of->matmul_backward(dinp, dweight, dbias, dout, inp, w, N, C, OC);
    if (dinp) jitter(dinp, (size_t)N * C);
    jitter(dweight, (size_t)OC * C);
}
static void nz_att_f(float *out, float *att, const float *qkv, int B, int T, int C, int NH) {
    g_nz_of->attention_forward(out, att, qkv, B, T, C, NH);
    jitter(out, (size_t)B * T * C);
    jitter(att, (size_t)B * NH * T * T);
}
static void nz_att_b(float *dqkv, float *scratch, const float *dout, const float *qkv, const float *att, int B,
                     int T, int C, int NH) {
    g_nz_of->attention_backward(dqkv, scratch, dout, qkv, att, B, T, C, NH);
    jitter(dqkv, (size_t)B * T * 3 * C);
}

// ---- bf16 activations over the products of the backend being run (g_cur): trainer/cpu/bf16.c's
// rule (vm_act16_*, cpu_ops.h) over that backend's fp32-stored ops, so every variant above keeps
// its perturbation with [train] activations = bf16
static const vm_backend_ops *g_cur;
static void act_ln_f(vm_bf16 *out, float *mean, float *rstd, const float *inp, const float *w, const float *b, int N,
                     int C, float eps) {
    vm_act16_layernorm_forward(g_cur->layernorm_forward, out, mean, rstd, inp, w, b, N, C, eps);
}
static void act_mm_f(vm_bf16 *out, const vm_bf16 *inp, const float *w, const float *b, int N, int C, int OC) {
    vm_act16_matmul_forward(g_cur->matmul_forward, out, inp, w, b, N, C, OC);
}
static void act_mm_b(float *dinp, float *dweight, float *dbias, const float *dout, const vm_bf16 *inp, const float *w,
                     int N, int C, int OC) {
    vm_act16_matmul_backward(g_cur->matmul_backward, dinp, dweight, dbias, dout, inp, w, N, C, OC);
}
static void act_att_f(vm_bf16 *out, float *att, const vm_bf16 *qkv, int B, int T, int C, int NH) {
    vm_act16_attention_forward(g_cur->attention_forward, out, att, qkv, B, T, C, NH);
}
static void act_att_b(float *dqkv, float *scratch, const float *dout, const vm_bf16 *qkv, const float *att, int B,
                      int T, int C, int NH) {
    vm_act16_attention_backward(g_cur->attention_backward, dqkv, scratch, dout, qkv, att, B, T, C, NH);
}
static void act_gelu_f(vm_bf16 *out, const vm_bf16 *inp, size_t n) { vm_act16_gelu_forward(g_cur->gelu_forward, out, inp, n); }
static void act_gelu_b(float *dinp, const vm_bf16 *inp, const float *dout, size_t n) {
    vm_act16_gelu_backward(g_cur->gelu_backward, dinp, inp, dout, n);
}
// (add_bf16 has no product in it: the table's own, cpu-bf16's, stays)
static void with_act_ops(vm_backend_ops *t, const vm_backend_ops *bf) {
    t->layernorm_forward_bf16 = act_ln_f, t->matmul_forward_bf16 = act_mm_f, t->matmul_backward_bf16 = act_mm_b;
    t->attention_forward_bf16 = act_att_f, t->attention_backward_bf16 = act_att_b;
    t->gelu_forward_bf16 = act_gelu_f, t->gelu_backward_bf16 = act_gelu_b, t->add_bf16 = bf->add_bf16;
}

// ---- one model per backend, the same parameters ----
enum { NB = 9 };
static const char *bname[NB] = {"fp32", "bf16", "bf16-baseline-isa", "bf16-exact-acc", "fp32-baseline-isa", "fp32-exact-acc", "bf16-baseline+exact", "bf16-noise-1e-6", "bf16-noise-1e-5"};
// what the training comparison measures each backend against: bf16 against fp32, the bf16
// variants against bf16, the fp32 variants against fp32
static const int bref[NB] = {0, 0, 1, 1, 0, 0, 1, 1, 1};
// the globals that backend k's ops read: exact sums of bf16 products, the noise size, the table
static const vm_backend_ops *const *g_be;
static void select_backend(int k) { g_dacc_bf16 = k == 3 || k == 6; g_eps = k == 7 ? 1e-6 : 1e-5; g_cur = g_be[k]; }

typedef struct {
    vm_model *m[NB];
    float *g[NB];
    vm_losses l[NB];
    vm_config cfg;
} run_t;

static double metric(run_t *r, int a, int b, const vm_tensor_info *t, double floor_) {
    double num = 0, den = 0;
    for (size_t j = 0; j < t->numel; j++) {
        double e = (double)r->g[a][t->offset + j] - r->g[b][t->offset + j];
        num += e * e;
        den += (double)r->g[b][t->offset + j] * r->g[b][t->offset + j];
    }
    return sqrt(num) / fmax(sqrt(den), floor_);
}

typedef struct { double e; int i; } ent;
static int cmp_ent(const void *a, const void *b) { double x = ((const ent *)a)->e, y = ((const ent *)b)->e; return x < y ? 1 : x > y ? -1 : 0; }

static void compare(run_t *r, int a, int b, int top) {
    vm_model *m = r->m[b];
    size_t n = vm_model_num_floats(m);
    double gall = 0;
    for (size_t j = 0; j < n; j++) gall += (double)r->g[b][j] * r->g[b][j];
    double floor_ = 1e-2 * sqrt(gall);
    int nt = vm_model_num_tensors(m), k = 0;
    ent *es = calloc(nt, sizeof *es);
    for (int i = 0; i < nt; i++) {
        const vm_tensor_info *t = vm_model_tensor(m, i);
        if (t->kind != VM_TENSOR_PARAM || !t->numel) continue;
        es[k].e = metric(r, a, b, t, floor_), es[k].i = i, k++;
    }
    qsort(es, k, sizeof *es, cmp_ent);
    printf("  %s vs %s: loss.total %.6g vs %.6g (rel %.2e), rec rel %.2e, con rel %.2e; worst grads (of %d):\n",
           bname[a], bname[b], r->l[a].total, r->l[b].total, fabs(r->l[a].total - r->l[b].total) / fabs(r->l[b].total),
           fabs(r->l[a].rec - r->l[b].rec) / fabs(r->l[b].rec),
           r->l[b].con != 0 ? fabs(r->l[a].con - r->l[b].con) / fabs(r->l[b].con) : 0.0, k);
    for (int j = 0; j < top && j < k; j++) {
        const vm_tensor_info *t = vm_model_tensor(m, es[j].i);
        double den = 0;
        for (size_t q = 0; q < t->numel; q++) den += (double)r->g[b][t->offset + q] * r->g[b][t->offset + q];
        printf("    %-40s %.3e%s\n", t->name, es[j].e, sqrt(den) < floor_ ? "  (below floor: vs 1e-2 |g|)" : "");
    }
    free(es);
}

static void run_case(const char *title, const char *const *overrides, const vm_backend_ops *const *be, int train) {
    run_t r;
    memset(&r, 0, sizeof r);
    vm_error err = {0};
    vm_config_defaults(&r.cfg);
    const char *base[] = {"optim.warmup_steps=3", "optim.clip_grad=1.0"};
    if (vm_config_load(&r.cfg, "configs/tiny.ini", &err)) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    for (int i = 0; i < 2; i++) if (vm_config_override(&r.cfg, base[i], &err)) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    for (int i = 0; overrides && overrides[i]; i++)
        if (vm_config_override(&r.cfg, overrides[i], &err)) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    if (vm_config_validate(&r.cfg, &err)) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    const int B = 4;
    for (int k = 0; k < NB; k++) {
        if (vm_model_create(&r.m[k], &r.cfg, be[k], B, &err)) { fprintf(stderr, "%s\n", err.msg); exit(1); }
        vm_model_set_total_steps(r.m[k], 20);
    }
    vm_model_init(r.m[0], 1234);
    size_t n = vm_model_num_floats(r.m[0]);
    for (int k = 1; k < NB; k++) {
        memcpy(vm_model_params(r.m[k]), vm_model_params(r.m[0]), n * sizeof(float));
        memset(vm_model_adam_m(r.m[k]), 0, n * sizeof(float));
        memset(vm_model_adam_v(r.m[k]), 0, n * sizeof(float));
    }
    int S = r.cfg.model.img_size;
    size_t nv = (size_t)B * 2 * S * S * 3;
    uint8_t *views = malloc(nv);
    vm_rng rg;
    vm_rng_init(&rg, 77, 5);
    for (size_t i = 0; i < nv; i++) views[i] = (uint8_t)((i / 3 % S) * 200 / S + vm_rng_int(&rg, 0, 55));
    printf("== %s: debug step (||a - b|| / max(||b||, 1e-2 ||g_b||) per gradient tensor)\n", title);
    for (int k = 0; k < NB; k++) {
        select_backend(k);
        if (vm_model_forward_backward(r.m[k], views, B, 0, &r.l[k], &err)) { fprintf(stderr, "%s\n", err.msg); exit(1); }
        r.g[k] = vm_model_grads(r.m[k]);
    }
    compare(&r, 1, 0, 12);  // bf16 vs fp32
    compare(&r, 1, 3, 8);   // accumulation order: fp32 sums vs exact sums of the same bf16 products
    compare(&r, 2, 1, 8);   // ISA
    compare(&r, 6, 1, 8);   // both
    compare(&r, 7, 1, 6);
    compare(&r, 8, 1, 6);
    compare(&r, 5, 0, 4);   // fp32 sums vs exact, fp32 model
    compare(&r, 4, 0, 4);
    if (train) {
        // 20 steps each (the debug step above already ran step 0's forward/backward: start over
        // from the same parameters by re-running step 0)
        double wl[NB] = {0}, wg[NB] = {0};
        for (long step = 0; step < 20; step++) {
            float lr, gn[NB];
            vm_losses l[NB];
            for (int k = 0; k < NB; k++) {
                select_backend(k);
                vm_model_forward_backward(r.m[k], views, B, step, &l[k], &err);
                vm_model_optimizer_step(r.m[k], step, &lr, &gn[k]);
            }
            if (getenv("PER_STEP"))
                printf("    step %2ld loss fp32 %.6f bf16 %.6f pert %.6f  gn fp32 %.5f bf16 %.5f pert %.5f\n", step,
                       l[0].total, l[1].total, l[6].total, gn[0], gn[1], gn[6]);
            for (int k = 1; k < NB; k++) {
                int ref = bref[k];
                wl[k] = fmax(wl[k], fabs(l[k].total - l[ref].total) / fabs(l[ref].total));
                wg[k] = fmax(wg[k], fabs(gn[k] - gn[ref]) / fabs(gn[ref]));
            }
        }
        printf("  20 training steps, worst relative difference over the steps:\n");
        for (int k = 1; k < NB; k++) {
            int ref = bref[k];
            printf("    %-18s vs %-5s loss %.3e  grad norm %.3e\n", bname[k], bname[ref], wl[k], wg[k]);
        }
    }
    for (int k = 0; k < NB; k++) vm_model_free(r.m[k]);
    free(views);
}

// be's table with the four products replaced
static vm_backend_ops with_products(const vm_backend_ops *be, typeof(be->matmul_forward) mm_f,
                                    typeof(be->matmul_backward) mm_b, typeof(be->attention_forward) att_f,
                                    typeof(be->attention_backward) att_b) {
    vm_backend_ops t = *be;
    t.matmul_forward = mm_f, t.matmul_backward = mm_b, t.attention_forward = att_f, t.attention_backward = att_b;
    return t;
}

int main(int argc, char **argv) {
    int train = argc > 1 && !strcmp(argv[1], "--train");
    const vm_backend_ops *f32 = vm_backend_cpu(0), *bf = vm_backend_cpu_bf16(0), *base = vm_cpu_backend_isa("baseline");
    vm_backend_ops bfbase = with_products(base, vm_cpu_bf16_matmul_forward_f, vm_cpu_bf16_matmul_backward_f,
                                          vm_cpu_bf16_attention_forward_f, vm_cpu_bf16_attention_backward_f);
    vm_backend_ops bfd = with_products(bf, dacc_mm_f, dacc_mm_b, dacc_att_f, dacc_att_b);
    vm_backend_ops f32d = with_products(f32, dacc_mm_f, dacc_mm_b, dacc_att_f, dacc_att_b);  // g_dacc_bf16 = 0
    vm_backend_ops both = with_products(base, dacc_mm_f, dacc_mm_b, dacc_att_f, dacc_att_b);
    g_nz_of = bf;
    vm_backend_ops nz = with_products(bf, nz_mm_f, nz_mm_b, nz_att_f, nz_att_b);
    // the bf16 variants with bf16 activations over their own products (bf: cpu-bf16's own ops)
    with_act_ops(&bfbase, bf), with_act_ops(&bfd, bf), with_act_ops(&both, bf), with_act_ops(&nz, bf);
    const vm_backend_ops *be[NB] = {f32, bf, &bfbase, &bfd, base, &f32d, &both, &nz, &nz};
    g_be = be;
    printf("backends: %s (default ISA), %s\n", f32->name, bf->name);
    static const char *const simsiam[] = {"loss.contrastive=simsiam", "model.pool=cls", NULL};
    static const char *const vicreg[] = {"loss.contrastive=vicreg", "model.norm_pix_loss=false", NULL};
    run_case("tiny.ini (InfoNCE, norm_pix)", NULL, be, train);
    run_case("simsiam + cls pool", simsiam, be, train);
    run_case("vicreg, no norm_pix", vicreg, be, train);
    static const char *const act16[] = {"train.precision=bf16", "train.activations=bf16", NULL};
    run_case("tiny.ini, bf16 activations (the bf16 rows)", act16, be, train);
    static const char *const act16_none[] = {"train.precision=bf16", "train.activations=bf16", "loss.contrastive=none",
                                             NULL};
    run_case("tiny.ini, bf16 activations, no contrastive loss", act16_none, be, train);
    return 0;
}
