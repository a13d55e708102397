// bench/gpu_bench.c — training-step throughput of the model on the CUDA backend (bench/gpu.sh).
//
//   gpu_bench [--config configs/vit_b16.ini] [--batch 64] [--steps 10] [--warmup 3]
//             [--precision bf16|fp32] [--bf16-path convert|fast] [--no-lt] [--attention auto|fused|flash|cublas]
//             [--profile] [--peak-n 8192] [--input] [--attention-alone]
//
// Synthetic in-memory batches (random uint8 views, uploaded every step as the trainer does),
// full steps (forward + backward + AdamW).  Prints the measured bf16 GEMM rate of the device
// (cuBLAS, 8192^3), the step time, pairs/s, model TFLOP/s (matrix products counted analytically,
// training = 3x forward) and MFU against that GEMM rate.  --profile adds a second pass that
// synchronises around every heavy op and reports where the time goes (sync overhead included,
// so its total is a little above the plain step time).  --input runs the trainer's real input path
// instead of the in-memory batch: the input feed (trainer/feed.h), whose thread parses LZ4 batch
// messages (the wire format) and decompresses them straight into the pinned slots of the input ring,
// which copies them to the GPU on its own stream; each step trains on its slot where it lies on the
// device (vm_model_forward_backward_dev), as the training loop does.  It reports the path's capacity
// alone (pairs/s) and the data-wait per step beside the model.  --attention-alone first times the
// attention op by itself on the model's encoder and decoder shapes, batched cuBLAS vs fused vs flash,
// forward and backward, with the effective bandwidth of the bytes its contract moves.  The last line is one
// machine-readable "result ..." line that bench/gpu.sh collects.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "common/config.h"
#include "common/rng.h"
#include "trainer/backend.h"
#include "proto/proto.h"
#include "trainer/cuda/cuda_backend.h"
#include "trainer/feed.h"
#include "trainer/model.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// ---- profiling wrappers: sync, time the op, sync ----------------------------------------------------
static const vm_backend_ops *real_be;
enum { P_MATMUL_F, P_MATMUL_B, P_ATT_F, P_ATT_B, P_LN_F, P_LN_B, P_GELU_F, P_GELU_B, P_RESID, P_ADAMW,
       P_UPLOAD, P_LOSSES, P_TOKENS, P_NORMSQ, P_N };
static const char *pname[P_N] = {"matmul fwd", "matmul bwd", "attention fwd", "attention bwd", "layernorm fwd",
                                 "layernorm bwd", "gelu fwd", "gelu bwd", "add/accumulate", "adamw",
                                 "upload (to_device)", "losses", "patchify+tokens", "sumsq"};
static double ptime[P_N];
static long pcalls[P_N];

// Every profiled op once: X(slot, op, (parameters), (arguments)).  The list defines the wrappers
// and fills the profiled table (ops a backend lacks stay NULL).
#define PROFILED_OPS(X)                                                                                           \
    X(P_MATMUL_F, matmul_forward, (float *o, const float *i, const float *w, const float *b, int N, int C, int OC), \
      (o, i, w, b, N, C, OC))                                                                                     \
    X(P_MATMUL_B, matmul_backward, (float *di, float *dw, float *db, const float *g, const float *i, const float *w, \
      int N, int C, int OC), (di, dw, db, g, i, w, N, C, OC))                                                     \
    X(P_ATT_F, attention_forward, (float *o, float *a, const float *q, int B, int T, int C, int NH),               \
      (o, a, q, B, T, C, NH))                                                                                     \
    X(P_ATT_B, attention_backward, (float *dq, float *s, const float *g, const float *q, const float *a, int B,   \
      int T, int C, int NH), (dq, s, g, q, a, B, T, C, NH))                                                       \
    X(P_LN_F, layernorm_forward, (float *o, float *m, float *r, const float *i, const float *w, const float *b,    \
      int N, int C, float eps), (o, m, r, i, w, b, N, C, eps))                                                    \
    X(P_LN_B, layernorm_backward, (float *di, float *dw, float *db, const float *g, const float *i,               \
      const float *w, const float *m, const float *r, int N, int C), (di, dw, db, g, i, w, m, r, N, C))          \
    X(P_GELU_F, gelu_forward, (float *o, const float *i, size_t n), (o, i, n))                                    \
    X(P_GELU_B, gelu_backward, (float *d, const float *i, const float *g, size_t n), (d, i, g, n))                \
    X(P_RESID, add, (float *o, const float *a, const float *b, size_t n), (o, a, b, n))                           \
    X(P_RESID, accumulate, (float *d, const float *s, size_t n), (d, s, n))                                       \
    X(P_ADAMW, adamw_ranges, (float *p, const float *g, float *m, float *v, const vm_adamw_range *r, int nr,      \
      float lr, float b1, float b2, float eps, float wd, int t, float gs), (p, g, m, v, r, nr, lr, b1, b2, eps, wd, t, gs)) \
    X(P_UPLOAD, to_device, (void *d, const void *s, size_t n), (d, s, n))                                         \
    X(P_LOSSES, mae_loss, (float *l, float *dp, const float *p, const float *t, const float *m, int B, int L,     \
      int D, int np, float dl), (l, dp, p, t, m, B, L, D, np, dl))                                                \
    X(P_LOSSES, infonce_loss, (float *l, float *d1, float *d2, const float *z1, const float *z2, int N, int D,    \
      float t, float dl), (l, d1, d2, z1, z2, N, D, t, dl))                                                       \
    X(P_TOKENS, patchify, (float *o, const uint8_t *img, int B, int H, int W, int P, int co, const float m[3],    \
      const float s[3]), (o, img, B, H, W, P, co, m, s))                                                          \
    X(P_TOKENS, gather_tokens, (float *o, const float *x, const float *c, const int32_t *k, int B, int L, int K,  \
      int C), (o, x, c, k, B, L, K, C))                                                                           \
    X(P_TOKENS, unshuffle_tokens, (float *o, const float *x, const float *mt, const int32_t *r, int B, int L,     \
      int K, int C), (o, x, mt, r, B, L, K, C))                                                                   \
    X(P_NORMSQ, sumsq, (float *o, const float *x, size_t n), (o, x, n))                                           \
    /* the bf16-activation ops ([train] activations = bf16), in the same categories */                           \
    X(P_MATMUL_F, matmul_forward_bf16, (vm_bf16 *o, const vm_bf16 *i, const float *w, const float *b, int N,      \
      int C, int OC), (o, i, w, b, N, C, OC))                                                                     \
    X(P_MATMUL_B, matmul_backward_bf16, (float *di, float *dw, float *db, const float *g, const vm_bf16 *i,       \
      const float *w, int N, int C, int OC), (di, dw, db, g, i, w, N, C, OC))                                     \
    X(P_ATT_F, attention_forward_bf16, (vm_bf16 *o, float *a, const vm_bf16 *q, int B, int T, int C, int NH),     \
      (o, a, q, B, T, C, NH))                                                                                     \
    X(P_ATT_B, attention_backward_bf16, (float *dq, float *s, const float *g, const vm_bf16 *q, const float *a,   \
      int B, int T, int C, int NH), (dq, s, g, q, a, B, T, C, NH))                                                \
    X(P_LN_F, layernorm_forward_bf16, (vm_bf16 *o, float *m, float *r, const float *i, const float *w,            \
      const float *b, int N, int C, float eps), (o, m, r, i, w, b, N, C, eps))                                    \
    X(P_GELU_F, gelu_forward_bf16, (vm_bf16 *o, const vm_bf16 *i, size_t n), (o, i, n))                          \
    X(P_GELU_B, gelu_backward_bf16, (float *d, const vm_bf16 *i, const float *g, size_t n), (d, i, g, n))         \
    X(P_RESID, add_bf16, (float *o, const float *a, const vm_bf16 *b, size_t n), (o, a, b, n))

// sync, time the op, sync
#define WRAP(slot, name, params, args)                                      \
    static void w_##name params {                                            \
        real_be->sync();                                                     \
        double t0 = now();                                                   \
        real_be->name args;                                                  \
        real_be->sync();                                                     \
        ptime[slot] += now() - t0;                                           \
        pcalls[slot]++;                                                      \
    }
PROFILED_OPS(WRAP)

static vm_backend_ops profiled(const vm_backend_ops *be) {
    vm_backend_ops p = *be;
    real_be = be;
#define SET_WRAPPER(slot, name, params, args) \
    if (be->name) p.name = w_##name;
    PROFILED_OPS(SET_WRAPPER)
    return p;
}

// ---- FLOPs -----------------------------------------------------------------------------------------
// Forward matrix-product FLOPs of one image (2 per multiply-add): patch embedding on all L patches,
// encoder on 1+K tokens, decoder on 1+L tokens, attention's two products, projector.
static double forward_flops_per_image(const vm_config *cfg, int K) {
    const typeof(cfg->model) *m = &cfg->model;
    double P = m->patch_size, L = (double)(m->img_size / m->patch_size) * (m->img_size / m->patch_size);
    double D = m->embed_dim, Dd = m->decoder_embed_dim, Te = 1 + K, Td = 1 + L;
    double H = (int)(D * m->mlp_ratio), Hd = (int)(Dd * m->mlp_ratio);
    double f = 2 * L * 3 * P * P * D;
    f += m->depth * (2 * Te * (3 * D * D + D * D + 2 * D * H) + 4 * Te * Te * D);
    f += 2 * Te * D * Dd;
    f += m->decoder_depth * (2 * Td * (3 * Dd * Dd + Dd * Dd + 2 * Dd * Hd) + 4 * Td * Td * Dd);
    f += 2 * Td * Dd * 3 * P * P;
    if (cfg->loss.contrastive != VM_CON_NONE) {
        double h = m->proj_hidden_dim, o = m->proj_out_dim;
        f += 2 * (D * h + h * h + h * o);
    }
    return f;
}

// ---- attention alone: both paths on the model's encoder and decoder shapes ---------------------------
// Mean ms of `iters` calls of fwd or bwd after one warm-up call.
static double time_attention(const vm_backend_ops *be, int bwd, int iters, float *out, float *att, float *qkv,
                             float *g, float *dqkv, float *scr, int B, int T, int C, int NH) {
    double t0 = 0;
    for (int i = 0; i <= iters; i++) {
        if (i == 1) be->sync(), t0 = now();
        if (bwd) be->attention_backward(dqkv, scr, g, qkv, att, B, T, C, NH);
        else be->attention_forward(out, att, qkv, B, T, C, NH);
    }
    be->sync();
    return (now() - t0) / iters * 1e3;
}

// Prints, for the encoder (1 + K tokens) and decoder (1 + L tokens) of B images, forward and backward
// times of the batched-cuBLAS, fused and flash paths, and the bytes the op's contract moves at least
// (qkv, out, att written then read; dout, dqkv) as an effective bandwidth (the same bytes for flash,
// which writes only att's row statistics, so that the columns compare times).
static void attention_micro(const vm_backend_ops *be, const vm_config *cfg, int B) {
    const typeof(cfg->model) *mc = &cfg->model;
    int L = (mc->img_size / mc->patch_size) * (mc->img_size / mc->patch_size);
    int K = (int)(L * (1.0 - mc->mask_ratio));
    struct { const char *name; int T, C, NH; } sh[2] = {{"encoder", 1 + K, mc->embed_dim, mc->num_heads},
                                                        {"decoder", 1 + L, mc->decoder_embed_dim, mc->decoder_num_heads}};
    int saved = vm_backend_cuda_fused_attention();
    for (int k = 0; k < 2; k++) {
        int T = sh[k].T, C = sh[k].C, NH = sh[k].NH;
        size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C, na = (size_t)B * NH * T * T;
        float *h = malloc(nq * sizeof(float));
        float *qkv = be->alloc(nq * 4), *g = be->alloc(no * 4), *out = be->alloc(no * 4), *att = be->alloc(na * 4),
              *dqkv = be->alloc(nq * 4), *scr = be->alloc(na * 4);
        if (!h || !qkv || !g || !out || !att || !dqkv || !scr) {
            printf("attention alone, %s: out of memory\n", sh[k].name);
            be->free(qkv), be->free(g), be->free(out), be->free(att), be->free(dqkv), be->free(scr), free(h);
            break;
        }
        vm_rng r;
        vm_rng_init(&r, 9, (uint64_t)k);
        for (size_t i = 0; i < nq; i++) h[i] = 2 * vm_rng_uniformf(&r) - 1;
        be->to_device(qkv, h, nq * 4);
        be->to_device(g, h, no * 4);
        double bytes_f = 4.0 * (nq + no + na), bytes_b = 4.0 * (nq + no + na + nq);
        static const struct { int mode; const char *name; } paths[] = {
            {VM_ATTENTION_CUBLAS, "cuBLAS"}, {VM_ATTENTION_FUSED, "fused"}, {VM_ATTENTION_FLASH, "flash"}};
        for (int p = 0; p < 3; p++) {
            vm_backend_cuda_set_fused_attention(paths[p].mode);
            double f = time_attention(be, 0, 10, out, att, qkv, g, dqkv, scr, B, T, C, NH);
            double b = time_attention(be, 1, 10, out, att, qkv, g, dqkv, scr, B, T, C, NH);
            const char *note = "";
            if (paths[p].mode == VM_ATTENTION_FUSED && !vm_backend_cuda_fused_attention_takes(T, C, NH, 0))
                note = " (shape not taken: cuBLAS)";
            if (paths[p].mode == VM_ATTENTION_FLASH && !vm_backend_cuda_flash_attention_takes(T, C, NH))
                note = " (shape not taken: as fused)";
            printf("attention alone, %s (B %d, T %d, %d heads of %d), %-6s: forward %.3f ms (%.0f GB/s), backward %.3f ms "
                   "(%.0f GB/s)%s\n", sh[k].name, B, T, NH, C / NH, paths[p].name, f, bytes_f / f / 1e6, b,
                   bytes_b / b / 1e6, note);
        }
        be->free(qkv), be->free(g), be->free(out), be->free(att), be->free(dqkv), be->free(scr), free(h);
    }
    vm_backend_cuda_set_fused_attention(saved);
}

// ---- the input path: LZ4 messages -> the input feed's pinned slots -> device ----------------------------
typedef struct {
    void **msgs;
    size_t *lens;
    int nmsg;
    long left, n;  // batches still to give, given
    size_t raw;
} msg_source;

// vm_feed_fill_fn: parse and decompress the next stored message straight into the slot.
static int msg_fill(void *ctx, uint8_t *views, void *info, vm_error *err) {
    (void)info;  // (none: vm_feed_start with 0 info bytes)
    msg_source *s = ctx;
    if (s->left <= 0) return 0;
    int i = (int)(s->n % s->nmsg);
    vm_batch_view v;
    int rc = vm_batch_parse(s->msgs[i], s->lens[i], &v, err);
    if (!rc) rc = vm_batch_decode_pixels(&v, views, s->raw, err);
    if (rc) return rc;
    s->n++, s->left--;
    return 1;
}

// nmsg LZ4 messages of B pairs of S x S: smooth gradients with noise in the low bits, so that they
// compress about as little as video frames do.
static int make_messages(void ***msgs, size_t **lens, int nmsg, int B, int S) {
    vm_batch_header h = {.batch = (uint32_t)B, .views = 2, .height = (uint32_t)S, .width = (uint32_t)S,
                         .codec = VM_BATCH_CODEC_LZ4};
    size_t raw = (size_t)B * 2 * S * S * 3, cap = vm_batch_max_size(&h);
    uint8_t *px = malloc(raw);
    vm_sample_meta *sm = calloc((size_t)B, sizeof *sm);
    vm_view_meta *vm = calloc((size_t)B * 2, sizeof *vm);
    *msgs = calloc((size_t)nmsg, sizeof **msgs);
    *lens = calloc((size_t)nmsg, sizeof **lens);
    if (!px || !sm || !vm || !*msgs || !*lens) return -1;
    vm_rng r;
    vm_rng_init(&r, 5, 5);
    for (int m = 0; m < nmsg; m++) {
        for (size_t i = 0; i < raw; i++) {
            size_t x = i / 3 % S, y = i / 3 / S % S;
            px[i] = (uint8_t)(((x + y + 37 * m) & 255) ^ (vm_rng_u32(&r) & 7));
        }
        h.sequence = (uint64_t)m;
        vm_error e = {0};
        if (!((*msgs)[m] = malloc(cap)) || vm_batch_encode(&h, sm, vm, px, (*msgs)[m], cap, &(*lens)[m], &e)) {
            fprintf(stderr, "gpu_bench: encoding a batch: %s\n", e.msg);
            return -1;
        }
    }
    free(px), free(sm), free(vm);
    return 0;
}

static int usage(void) {
    fprintf(stderr, "usage: gpu_bench [--config INI] [--batch PAIRS] [--steps N] [--warmup N] "
                    "[--precision bf16|fp32] [--bf16-path convert|fast] [--no-lt] [--attention auto|fused|flash|cublas] "
                    "[--profile] [--input] [--attention-alone]\n"
                    "                 [--peak-n N (0: skip the GEMM rate)]\n"
                    "                 [--set section.key=value]...\n");
    return 2;
}

int main(int argc, char **argv) {
    const char *config = "configs/vit_b16.ini", *precision = "bf16", *path = "convert";
    int B = 64, steps = 10, warmup = 3, profile = 0, peak_n = 8192, lt = 1, input = 0, micro = 0;
    const char *attention = "auto";
    vm_config cfg;
    vm_error err = {0};
    vm_config_defaults(&cfg);
    const char *sets[32];
    int nsets = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--profile")) { profile = 1; continue; }
        if (!strcmp(a, "--no-lt")) { lt = 0; continue; }
        if (!strcmp(a, "--input")) { input = 1; continue; }
        if (!strcmp(a, "--attention-alone")) { micro = 1; continue; }
        if (!v) return usage();
        if (!strcmp(a, "--config")) config = v;
        else if (!strcmp(a, "--batch")) B = atoi(v);
        else if (!strcmp(a, "--steps")) steps = atoi(v);
        else if (!strcmp(a, "--warmup")) warmup = atoi(v);
        else if (!strcmp(a, "--precision")) precision = v;
        else if (!strcmp(a, "--peak-n")) peak_n = atoi(v);
        else if (!strcmp(a, "--bf16-path")) path = v;
        else if (!strcmp(a, "--attention")) attention = v;
        else if (!strcmp(a, "--set") && nsets < 32) sets[nsets++] = v;
        else return usage();
        i++;
    }
    if (B < 2 || steps < 1 || warmup < 0) return usage();
    int bf16 = !strcmp(precision, "bf16"), fast = !strcmp(path, "fast");
    if ((!bf16 && strcmp(precision, "fp32")) || (!fast && strcmp(path, "convert"))) return usage();
    if (vm_config_load(&cfg, config, &err)) { fprintf(stderr, "gpu_bench: %s\n", err.msg); return 1; }
    cfg.train.precision = bf16 ? VM_PREC_BF16 : VM_PREC_FP32;  // --precision, before --set
    if (!bf16) cfg.train.activations = VM_ACT_FP32;              // (bf16 activations need bf16 products)
    for (int i = 0; i < nsets; i++)
        if (vm_config_override(&cfg, sets[i], &err)) { fprintf(stderr, "gpu_bench: %s\n", err.msg); return 1; }
    if (vm_config_validate(&cfg, &err)) { fprintf(stderr, "gpu_bench: %s\n", err.msg); return 2; }
    cfg.optim.warmup_steps = 0;  // a real lr from the first step (speed does not depend on it)
    int fused = !strcmp(attention, "fused") ? VM_ATTENTION_FUSED
                : !strcmp(attention, "flash")  ? VM_ATTENTION_FLASH
                : !strcmp(attention, "auto")   ? VM_ATTENTION_AUTO
                                               : VM_ATTENTION_CUBLAS;
    if (fused == VM_ATTENTION_CUBLAS && strcmp(attention, "cublas")) return usage();
    if (micro && (!bf16 || fast)) {
        fprintf(stderr, "gpu_bench: --attention-alone compares the bf16 convert paths\n");
        return 2;
    }

    char why[512];
    const vm_backend_ops *be = vm_backend_cuda(why, sizeof why);
    if (!be) { fprintf(stderr, "gpu_bench: no CUDA backend: %s\n", why); return 3; }
    vm_backend_cuda_set_precision(bf16);
    vm_backend_cuda_set_bf16_path(fast);
    vm_backend_cuda_set_lt(lt);
    vm_backend_cuda_set_fused_attention(fused);
    if (fast && !vm_backend_cuda_bf16_path()) {
        fprintf(stderr, "gpu_bench: this cuBLAS refuses CUBLAS_COMPUTE_32F_FAST_16BF: no fast bf16 path\n");
        return 4;
    }
    char dev[256];
    vm_backend_cuda_device_name(dev, sizeof dev);
    double peak = peak_n > 0 ? vm_backend_cuda_gemm_tflops(1, peak_n, 20) : -1;
    printf("device: %s\n", dev);
    printf("cuBLAS bf16 GEMM %d^3 (fp32 accumulate): %.1f TFLOP/s\n", peak_n, peak);

    if (micro) attention_micro(be, &cfg, 2 * B);
    vm_backend_ops prof;
    if (profile) prof = profiled(be);
    vm_model *m;
    if (vm_model_create(&m, &cfg, profile ? &prof : be, B, &err)) { fprintf(stderr, "gpu_bench: %s\n", err.msg); return 1; }
    vm_model_init(m, 1);
    vm_model_set_total_steps(m, 1000000);
    int S = cfg.model.img_size;
    size_t nv = (size_t)B * 2 * S * S * 3;
    uint8_t *views = malloc(nv);
    if (!views) return 1;
    vm_rng r;
    vm_rng_init(&r, 3, 1);
    for (size_t i = 0; i < nv; i += 4) {
        uint32_t x = vm_rng_u32(&r);
        for (int k = 0; k < 4 && i + k < nv; k++) views[i + k] = (uint8_t)(x >> (8 * k));
    }
    // The input path: capacity alone, then the feed beside the steps.
    vm_feed *feed = NULL;
    msg_source src = {0};
    double capacity = 0, data_wait = 0;
    if (input) {
        src.raw = nv, src.nmsg = 4;
        if (make_messages(&src.msgs, &src.lens, src.nmsg, B, S)) return 1;
        printf("input path: LZ4 messages of %.1f MB for %.1f MB of pixels\n", src.lens[0] / 1e6, nv / 1e6);
        src.left = 16;
        if (vm_feed_start(&feed, be, cfg.train.slots, nv, 0, msg_fill, NULL, &src, &err)) {
            fprintf(stderr, "gpu_bench: %s\n", err.msg);
            return 1;
        }
        double t0 = now();
        vm_feed_batch b;
        int n = 0, rc;
        while ((rc = vm_feed_next(feed, &b, &err)) == 1) vm_feed_release(feed, &b), n++;
        be->sync();
        capacity = n * B / (now() - t0);
        vm_feed_stop(feed);
        if (rc < 0) { fprintf(stderr, "gpu_bench: input path: %s\n", err.msg); return 1; }
        printf("input path alone (1 decode thread, %d pinned slots): %.0f pairs/s\n", cfg.train.slots, capacity);
        src.left = warmup + steps, src.n = 0;
        if (vm_feed_start(&feed, be, cfg.train.slots, nv, 0, msg_fill, NULL, &src, &err)) {
            fprintf(stderr, "gpu_bench: %s\n", err.msg);
            return 1;
        }
    }
    vm_losses l;
    float lr, gn;
    double t_fb = 0, t_opt = 0;
    for (int s = 0; s < warmup + steps; s++) {
        if (s == warmup) memset(ptime, 0, sizeof ptime), memset(pcalls, 0, sizeof pcalls);
        vm_feed_batch b = {.slot = -1};
        if (feed && vm_feed_next(feed, &b, &err) != 1) {
            fprintf(stderr, "gpu_bench: input path ended at step %d: %s\n", s, err.msg);
            return 1;
        }
        double t0 = now();
        int rc = feed ? vm_model_forward_backward_dev(m, b.views, B, s, &l, &err)
                      : vm_model_forward_backward(m, views, B, s, &l, &err);
        if (rc) { fprintf(stderr, "gpu_bench: %s\n", err.msg); return 1; }
        double t1 = now();
        vm_model_optimizer_step(m, s, &lr, &gn);
        be->sync();
        double t2 = now();
        if (feed) vm_feed_release(feed, &b);
        if (s >= warmup) t_fb += t1 - t0, t_opt += t2 - t1, data_wait += b.wait_s;
    }
    vm_feed_stop(feed);
    if (!isfinite(l.total)) { fprintf(stderr, "gpu_bench: loss is %g\n", l.total); return 1; }
    const int32_t *keep, *restore;
    int mb, K, L;
    vm_model_last_masks(m, &keep, &restore, &mb, &K, &L);
    double step = (t_fb + t_opt) / steps;
    double flops = 3.0 * 2 * B * forward_flops_per_image(&cfg, K);
    double tflops = flops / step / 1e12;
    int act16 = vm_model_bf16_activations(m);
    printf("model: %s, %d pairs/step, %d of %d patches visible, %.1f M params, precision %s%s, %s activations\n", config,
           B, K, L, vm_model_num_trainable(m) / 1e6, precision,
           bf16 ? (fast ? " (cuBLAS FAST_16BF)" : " (bf16 operand copies)") : "", act16 ? "bf16" : "fp32");
    char paths[320];
    vm_backend_cuda_describe(paths, sizeof paths);
    long lt_runs, lt_fallbacks;
    vm_backend_cuda_lt_counts(&lt_runs, &lt_fallbacks);
    printf("CUDA paths: %s; linear forwards through cuBLASLt: %ld, fallen back to GEMM + bias kernel: %ld\n", paths,
           lt_runs, lt_fallbacks);
    printf("step %.2f ms (forward+backward %.2f, optimizer %.2f), %.1f pairs/s, loss %.4f\n", step * 1e3,
           t_fb / steps * 1e3, t_opt / steps * 1e3, B / step, l.total);
    printf("model FLOPs %.2f TFLOP/step, %.1f TFLOP/s, MFU %.1f%% of the measured bf16 GEMM rate\n", flops / 1e12,
           tflops, 100 * tflops / peak);
    if (input)
        printf("input path beside the steps: data-wait %.3f ms/step = %.2f%% of the step\n", data_wait / steps * 1e3,
               100 * data_wait / (t_fb + t_opt));
    if (profile) {
        double tot = 0;
        for (int i = 0; i < P_N; i++) tot += ptime[i];
        double wall = step * steps;
        printf("profile (synchronised per op; %% of the profiled step time %.2f ms):\n", wall / steps * 1e3);
        for (int i = 0; i < P_N; i++)
            if (pcalls[i])
                printf("  %-20s %8.2f ms/step %5.1f%%  (%ld calls/step)\n", pname[i], ptime[i] / steps * 1e3,
                       100 * ptime[i] / wall, pcalls[i] / steps);
        printf("  %-20s %8.2f ms/step %5.1f%%\n", "other ops + host", (wall - tot) / steps * 1e3, 100 * (wall - tot) / wall);
    }
    char extra[128] = "";
    if (input) snprintf(extra, sizeof extra, " input_pairs_per_s=%.0f data_wait_pct=%.3f", capacity,
                        100 * data_wait / (t_fb + t_opt));
    printf("result impl=vicmae%s%s%s%s precision=%s%s batch=%d step_ms=%.3f pairs_per_s=%.2f tflops=%.2f mfu=%.4f peak=%.1f%s%s\n",
           bf16 && !act16 ? "-fp32act" : "", vm_backend_cuda_lt() ? "" : "-nolt", bf16 && !fast && fused != VM_ATTENTION_AUTO ? (fused == VM_ATTENTION_FLASH ? "-flashatt" : fused ? "-fusedatt" : "-cublasatt") : "", input ? "-input" : "", precision, bf16 && fast ? "-fast" : "", B, step * 1e3, B / step,
           tflops, tflops / peak, peak, profile ? " profiled=1" : "", extra);
    vm_model_free(m);
    free(views);
    for (int i = 0; i < src.nmsg; i++) free(src.msgs[i]);
    free(src.msgs), free(src.lens);
    return 0;
}
