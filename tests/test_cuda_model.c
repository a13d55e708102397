// tests/test_cuda_model.c — the whole model on the CUDA backend against the CPU reference.
//
// Same configuration (configs/tiny.ini, then a ViT-shaped small variant), same initial parameters
// (copied from the CPU model), same batch and masks (drawn on the host from the step):
//  - debug step: the losses and EVERY gradient tensor agree, ||cuda - cpu|| / ||cpu|| per tensor;
//  - 20 training steps (AdamW, warmup, clipping): the CUDA losses track the CPU losses.
// fp32 and bf16; bf16 against both the CPU-bf16 reference (vm_backend_cpu_bf16: the same rounding
// points, so tight) and the fp32 CPU model (loose: bf16 rounding itself moves this tiny model's
// gradients by up to 0.2); and bf16 with bf16 activations ([train] activations).  Skips with the
// reason without a GPU.
#include <stdlib.h>
#include <string.h>
#include "common/config.h"
#include "common/rng.h"
#include "tests/harness.h"
#include "trainer/backend.h"
#include "trainer/cuda/cuda_backend.h"
#include "trainer/model.h"

// Per-tensor gradient tolerances of a whole debug step, ||cuda - ref|| / ||ref||.
//
// fp32: the per-op tests hold each op to 1e-5; through the whole model the differences compound,
// and the tiny model is sensitive (BatchNorm over 4 samples per view): on the CPU alone, perturbing
// every parameter by 1e-6 (relative) moves the SimSiam projector's gradient by 6e-5.
#define TOL_MODEL32 1e-3
//
// bf16, "convert" path: compared against the CPU-bf16 reference (vm_backend_cpu_bf16), which
// rounds the same operands at the same points, so what is left is fp32-level differences
// (accumulation order, expf/erff, reductions) amplified by the model and by bf16 roundings that
// those differences flip.  Measured on the CPU (tools/bf16_diag.c, worst tensor of a debug step,
// tiny/simsiam+cls/vicreg): cpu-bf16 baseline vs AVX2 build 2.9e-3/3.4e-3/1.0e-3; products summed
// exactly (double) instead of in fp32 1.6e-3/9e-6/1e-6; every product output jittered by 1e-6
// relative (a pessimistic stand-in for cuBLAS's order, several fp32 ulps on every element)
// 2.0e-2/2.1e-2/2.1e-2 over the tensors above the floor, and 4.2e-2 on tiny's norm.bias, a
// tensor below the floor (measured against 1e-2 |g|, as here).  The 1e-2 sits below the
// jitter case, and CUDA differs from the CPU in every op, so the bound is 0.1: 2.4x over the worst
// jitter case.  What this whole-model check is for is wiring (a wrong tensor, offset or rounding
// path: O(1) errors, or the bf16-vs-fp32 distance of ~0.2 for rounding left out of a whole path);
// the rounding points themselves are held to 5e-4 of cpu-bf16 per op in test_cuda_ops.c.
#define TOL_MODEL16_EMU 0.1
// bf16 vs the fp32 CPU model: catches a gross bf16 bug (O(1) errors) in either implementation.
// Measured cpu-bf16 vs cpu fp32 on this debug step (tiny.ini): worst tensor cls_token 0.207
// (norm.weight 0.204, ...) and losses within 2.3e-4 (loss.con 2.6e-3): bf16 rounding itself, the
// 0.197 the GPU showed for cls_token.  (SimSiam + cls pooling reaches 1.0 there: not compared.)
#define TOL_MODEL16_FP32 0.5
#define TOL_LOSS16_FP32 2e-2

typedef struct {
    const vm_backend_ops *cpu, *cpu16, *cu;
    vm_config cfg;
    vm_model *mc, *mb, *mg;  // CPU fp32 model, CPU-bf16 model (bf16 runs only), GPU model
    vm_losses lc, lb, lg;    // the losses of the last debug step
    int B;
    uint8_t *views;
} pair_t;

static void setup(pair_t *p, int bf16, const char *const *overrides, int B) {
    char why[512] = "";
    memset(p, 0, sizeof *p);
    p->cu = vm_backend_cuda(why, sizeof why);
    if (!p->cu) SKIP("no GPU: %s", why);
    p->cpu = vm_backend_cpu(0);
    p->cpu16 = bf16 ? vm_backend_cpu_bf16(0) : NULL;
    vm_backend_cuda_set_precision(bf16);
    vm_backend_cuda_set_bf16_path(0);
    vm_backend_cuda_set_lt(0);
    vm_error err = {0};
    vm_config_defaults(&p->cfg);
    CHECK_OK(vm_config_load(&p->cfg, "configs/tiny.ini", &err), err);
    CHECK_OK(vm_config_override(&p->cfg, "optim.warmup_steps=3", &err), err);
    CHECK_OK(vm_config_override(&p->cfg, "optim.clip_grad=1.0", &err), err);
    for (int i = 0; overrides && overrides[i]; i++) CHECK_OK(vm_config_override(&p->cfg, overrides[i], &err), err);
    CHECK_OK(vm_config_validate(&p->cfg, &err), err);
    p->B = B;
    CHECK_OK(vm_model_create(&p->mc, &p->cfg, p->cpu, B, &err), err);
    if (bf16) CHECK_OK(vm_model_create(&p->mb, &p->cfg, p->cpu16, B, &err), err);
    CHECK_OK(vm_model_create(&p->mg, &p->cfg, p->cu, B, &err), err);
    vm_model_init(p->mc, 1234);
    vm_model_set_total_steps(p->mc, 20);
    vm_model_set_total_steps(p->mg, 20);
    // identical starting point: the CPU parameters copied to the GPU (and to the CPU-bf16 model)
    size_t n = vm_model_num_floats(p->mc);
    CHECK(n == vm_model_num_floats(p->mg));
    p->cu->to_device(vm_model_params(p->mg), vm_model_params(p->mc), n * sizeof(float));
    p->cu->zero(vm_model_adam_m(p->mg), n * sizeof(float));
    p->cu->zero(vm_model_adam_v(p->mg), n * sizeof(float));
    if (p->mb) {
        vm_model_set_total_steps(p->mb, 20);
        memcpy(vm_model_params(p->mb), vm_model_params(p->mc), n * sizeof(float));
        memset(vm_model_adam_m(p->mb), 0, n * sizeof(float));
        memset(vm_model_adam_v(p->mb), 0, n * sizeof(float));
    }
    int S = p->cfg.model.img_size;
    size_t nv = (size_t)B * 2 * S * S * 3;
    p->views = malloc(nv);
    CHECK(p->views);
    vm_rng r;
    vm_rng_init(&r, 77, 5);
    // smooth-ish images (a gradient plus noise), so that norm_pix targets are not pure noise
    for (size_t i = 0; i < nv; i++) p->views[i] = (uint8_t)((i / 3 % S) * 200 / S + vm_rng_int(&r, 0, 55));
}

static void teardown(pair_t *p) {
    vm_model_free(p->mc);
    if (p->mb) vm_model_free(p->mb);
    vm_model_free(p->mg);
    free(p->views);
    vm_backend_cuda_set_precision(0);
}

static double rel(double a, double b) { return fabs(a - b) / (fabs(b) > 1e-12 ? fabs(b) : 1e-12); }

// One forward/backward (step 0) on every model of the pair.
static void debug_step(pair_t *p) {
    vm_error err = {0};
    CHECK_OK(vm_model_forward_backward(p->mc, p->views, p->B, 0, &p->lc, &err), err);
    if (p->mb) CHECK_OK(vm_model_forward_backward(p->mb, p->views, p->B, 0, &p->lb, &err), err);
    CHECK_OK(vm_model_forward_backward(p->mg, p->views, p->B, 0, &p->lg, &err), err);
}

// The GPU's losses and every gradient tensor of the last debug step against a CPU model (p->mc or
// p->mb): gradients within tol, losses within loss_tol.  check = 0 only measures.  Returns the
// worst gradient error.
static double compare_step(pair_t *p, vm_model *ref, const vm_losses *lr, double tol, double loss_tol, int check,
                           const char *what) {
    const vm_losses *lg = &p->lg;
    if (check) {
        CHECK(rel(lg->total, lr->total) < loss_tol, "%s: loss.total cuda %.9g cpu %.9g", what, lg->total, lr->total);
        CHECK(rel(lg->rec, lr->rec) < loss_tol, "%s: loss.rec cuda %.9g cpu %.9g", what, lg->rec, lr->rec);
        if (p->cfg.loss.contrastive != VM_CON_NONE)
            CHECK(rel(lg->con, lr->con) < loss_tol, "%s: loss.con cuda %.9g cpu %.9g", what, lg->con, lr->con);
    }
    size_t n = vm_model_num_floats(ref);
    float *gc = malloc(n * sizeof(float)), *gg = malloc(n * sizeof(float));
    CHECK(gc && gg);
    memcpy(gc, vm_model_grads(ref), n * sizeof(float));  // CPU models: host memory
    p->cu->to_host(gg, vm_model_grads(p->mg), n * sizeof(float));
    // A tensor whose true gradient is rounding noise (the bias of a Linear followed by BatchNorm
    // has exactly zero gradient in exact arithmetic) is compared against a floor of 1e-2 of the
    // global gradient norm instead of its own norm.
    double gall = 0;
    for (size_t j = 0; j < n; j++) gall += (double)gc[j] * gc[j];
    double floor_ = 1e-2 * sqrt(gall);
    double worst = 0;
    int checked = 0;
    for (int i = 0; i < vm_model_num_tensors(ref); i++) {
        const vm_tensor_info *t = vm_model_tensor(ref, i);
        if (t->kind != VM_TENSOR_PARAM || !t->numel) continue;
        double num = 0, den = 0;
        for (size_t j = 0; j < t->numel; j++) {
            double e = (double)gg[t->offset + j] - gc[t->offset + j];
            num += e * e;
            den += (double)gc[t->offset + j] * gc[t->offset + j];
        }
        double e = sqrt(num) / fmax(sqrt(den), floor_);
        if (check)
            CHECK(e < tol, "%s: grad.%s: relative error %.3g (tolerance %.0e, |cpu| %.3g)", what, t->name, e, tol,
                  sqrt(den));
        if (e > worst) worst = e;
        if (sqrt(den) > floor_) checked++;
    }
    CHECK(checked > 10, "only %d gradient tensors", checked);
    free(gc);
    free(gg);
    return worst;
}

// fp32: one debug step against the CPU model.
static double check_debug_step(pair_t *p, double tol) {
    debug_step(p);
    return compare_step(p, p->mc, &p->lc, tol, tol, 1, "vs cpu fp32");
}

// bf16: one debug step against the CPU-bf16 model (gradients within tol16, losses within loss16)
// and the fp32 CPU model (gross errors: TOL_MODEL16_FP32, TOL_LOSS16_FP32).
static void check_debug_step_bf16(pair_t *p, const char *label, double tol16, double loss16) {
    char what16[256], what32[256];
    snprintf(what16, sizeof what16, "%s vs cpu-bf16", label);
    snprintf(what32, sizeof what32, "%s vs cpu fp32", label);
    debug_step(p);
    double we = compare_step(p, p->mb, &p->lb, tol16, loss16, 1, what16);
    double wf = compare_step(p, p->mc, &p->lc, TOL_MODEL16_FP32, TOL_LOSS16_FP32, 1, what32);
    printf("  %s debug step: worst gradient relative error %.3g vs cpu-bf16, %.3g vs cpu fp32\n", label, we, wf);
}

// 20 steps on both; the losses of each step within tol of the CPU's, the gradient norms within
// gn_tol (the norm is far more sensitive than the loss: BatchNorm over 4 samples per view).
static void check_training(pair_t *p, double tol, double gn_tol) {
    vm_error err = {0};
    for (long step = 0; step < 20; step++) {
        vm_losses lc, lg;
        float lr_c, lr_g, gn_c, gn_g;
        CHECK_OK(vm_model_forward_backward(p->mc, p->views, p->B, step, &lc, &err), err);
        CHECK_OK(vm_model_forward_backward(p->mg, p->views, p->B, step, &lg, &err), err);
        CHECK(isfinite(lg.total), "step %ld: cuda loss %g", step, lg.total);
        CHECK(rel(lg.total, lc.total) < tol, "step %ld: loss cuda %.9g cpu %.9g (tolerance %.0e)", step, lg.total,
              lc.total, tol);
        vm_model_optimizer_step(p->mc, step, &lr_c, &gn_c);
        vm_model_optimizer_step(p->mg, step, &lr_g, &gn_g);
        CHECK(lr_c == lr_g, "step %ld: lr differs", step);
        CHECK(rel(gn_g, gn_c) < gn_tol, "step %ld: grad norm cuda %.9g cpu %.9g", step, gn_g, gn_c);
    }
}

// bf16: 20 steps on the CPU fp32, CPU-bf16 and GPU models.  bf16 training is chaotic at this
// size: on the CPU, cpu-bf16 against itself with an fp32-level change (baseline vs AVX2 build,
// exact sums, 1e-6 jitter) gives step losses within 4.6e-3 but gradient norms apart by up to 0.40
// relative within 20 steps (0.65 between cpu-bf16 and fp32), while the mean norm over the 20 steps
// stays within 7% (6% vs fp32).  So: each loss within 2e-2 of both CPU models; step 0's norm
// (before trajectories part) within TOL_MODEL16_EMU of cpu-bf16 (measured 1.6e-4); every norm
// within a factor 2 (rel < 1: NaN, explosions, a broken clip); the mean norm within 0.25 of both.
static void check_training_bf16(pair_t *p) {
    vm_error err = {0};
    double sum_c = 0, sum_b = 0, sum_g = 0;
    for (long step = 0; step < 20; step++) {
        vm_losses lc, lb, lg;
        float lr_c, lr_b, lr_g, gn_c, gn_b, gn_g;
        CHECK_OK(vm_model_forward_backward(p->mc, p->views, p->B, step, &lc, &err), err);
        CHECK_OK(vm_model_forward_backward(p->mb, p->views, p->B, step, &lb, &err), err);
        CHECK_OK(vm_model_forward_backward(p->mg, p->views, p->B, step, &lg, &err), err);
        CHECK(isfinite(lg.total), "step %ld: cuda loss %g", step, lg.total);
        CHECK(rel(lg.total, lb.total) < 2e-2, "step %ld: loss cuda %.9g cpu-bf16 %.9g", step, lg.total, lb.total);
        CHECK(rel(lg.total, lc.total) < 2e-2, "step %ld: loss cuda %.9g cpu fp32 %.9g", step, lg.total, lc.total);
        vm_model_optimizer_step(p->mc, step, &lr_c, &gn_c);
        vm_model_optimizer_step(p->mb, step, &lr_b, &gn_b);
        vm_model_optimizer_step(p->mg, step, &lr_g, &gn_g);
        CHECK(lr_c == lr_g && lr_b == lr_g, "step %ld: lr differs", step);
        if (step == 0)
            CHECK(rel(gn_g, gn_b) < TOL_MODEL16_EMU, "step 0: grad norm cuda %.9g cpu-bf16 %.9g", gn_g, gn_b);
        CHECK(rel(gn_g, gn_b) < 1.0 && rel(gn_g, gn_c) < 1.0, "step %ld: grad norm cuda %.9g cpu-bf16 %.9g fp32 %.9g",
              step, gn_g, gn_b, gn_c);
        sum_c += gn_c, sum_b += gn_b, sum_g += gn_g;
    }
    CHECK(rel(sum_g, sum_b) < 0.25, "mean grad norm cuda %.6g cpu-bf16 %.6g", sum_g / 20, sum_b / 20);
    CHECK(rel(sum_g, sum_c) < 0.25, "mean grad norm cuda %.6g cpu fp32 %.6g", sum_g / 20, sum_c / 20);
    printf("  bf16 training: mean grad norm cuda %.4g, cpu-bf16 %.4g, cpu fp32 %.4g\n", sum_g / 20, sum_b / 20,
           sum_c / 20);
}

// tiny.ini with the paper's losses: InfoNCE + norm_pix reconstruction
TEST(cuda_model_debug_step_fp32) {
    pair_t p;
    setup(&p, 0, NULL, 4);
    double worst = check_debug_step(&p, TOL_MODEL32);
    printf("  fp32 debug step: worst gradient relative error %.3g\n", worst);
    teardown(&p);
}

TEST(cuda_model_train_fp32) {
    pair_t p;
    setup(&p, 0, NULL, 4);
    check_training(&p, 1e-3, 1e-2);
    teardown(&p);
}

// Other losses and pooling go through the other ops (SimSiam predictor, VICReg, cls pooling).
TEST(cuda_model_debug_step_losses) {
    static const char *const simsiam[] = {"loss.contrastive=simsiam", "model.pool=cls", NULL};
    static const char *const vicreg[] = {"loss.contrastive=vicreg", "model.norm_pix_loss=false", NULL};
    pair_t p;
    setup(&p, 0, simsiam, 4);
    check_debug_step(&p, TOL_MODEL32);
    teardown(&p);
    setup(&p, 0, vicreg, 4);
    check_debug_step(&p, TOL_MODEL32);
    teardown(&p);
}

TEST(cuda_model_debug_step_bf16) {
    pair_t p;
    setup(&p, 1, NULL, 4);
    check_debug_step_bf16(&p, "bf16", TOL_MODEL16_EMU, TOL_MODEL16_EMU);
    teardown(&p);
}

TEST(cuda_model_train_bf16) {
    pair_t p;
    setup(&p, 1, NULL, 4);
    check_training_bf16(&p);
    teardown(&p);
}

// The "fast" path: cuBLAS with CUBLAS_COMPUTE_32F_FAST_16BF on fp32 operands.  cuBLAS decides per
// product whether (and where) it rounds to bf16 (the GPU showed this path 0.0053 from fp32 on the
// debug step where convert is 0.197 from fp32: most products kept fp32 there), so neither CPU
// reference rounds at its points; the sound bound is the envelope: within TOL_MODEL16_FP32 of
// fp32, the distance that rounding every product gives at most (0.207 measured on the CPU) with
// margin.  The distance to cpu-bf16 is printed, not checked.
TEST(cuda_model_debug_step_bf16_fast) {
    pair_t p;
    setup(&p, 1, NULL, 4);
    vm_backend_cuda_set_bf16_path(1);
    if (vm_backend_cuda_bf16_path() != 1) SKIP("this cuBLAS refuses CUBLAS_COMPUTE_32F_FAST_16BF");
    debug_step(&p);
    double wf = compare_step(&p, p.mc, &p.lc, TOL_MODEL16_FP32, TOL_LOSS16_FP32, 1, "fast vs cpu fp32");
    double we = compare_step(&p, p.mb, &p.lb, 0, 0, 0, "fast vs cpu-bf16");
    printf("  bf16 (cuBLAS FAST_16BF) debug step: worst gradient relative error %.3g vs cpu fp32, %.3g vs cpu-bf16\n",
           wf, we);
    vm_backend_cuda_set_bf16_path(0);
    teardown(&p);
}

// The cuBLASLt bias-epilogue path over the real parameter layout (tensors at offsets of one buffer).
TEST(cuda_model_debug_step_lt) {
    pair_t p;
    for (int bf16 = 0; bf16 < 2; bf16++) {
        setup(&p, bf16, NULL, 4);
        vm_backend_cuda_set_lt(1);
        if (!vm_backend_cuda_lt()) SKIP("cuBLASLt unavailable");
        if (bf16) {
            check_debug_step_bf16(&p, "bf16 + cuBLASLt bias epilogue", TOL_MODEL16_EMU, TOL_MODEL16_EMU);
        } else {
            double worst = check_debug_step(&p, TOL_MODEL32);
            printf("  fp32 + cuBLASLt bias epilogue debug step: worst gradient relative error %.3g\n", worst);
        }
        vm_backend_cuda_set_lt(0);
        teardown(&p);
    }
}

// [train] activations = bf16: the block activations stored as bf16 on the GPU and in the cpu-bf16
// reference (the fp32 CPU model keeps fp32 ones).  Tolerances from tools/bf16_diag (its two "bf16
// activations" cases, on the CPU): with bf16 storage, every fp32-level difference can flip the
// rounding of a stored activation (a 2^-8 step), and through InfoNCE's projector (BatchNorm over 4
// samples, ReLU) a perturbation of 1e-6 relative on the products already moves gradient tensors by
// 0.21 (norm.weight, cls_token: a discrete change, the size of all of bf16's rounding) — so with
// InfoNCE only gross errors can be told (TOL_MODEL16_FP32 against both models).  Without the
// contrastive head the same perturbations move no tensor by more than 4.3e-3 (1e-5 jitter; bf16 vs
// fp32 7.9e-3), and 20 steps' gradient norms by 2.6e-4: there the GPU is held to TOL_ACT16 of
// cpu-bf16 (4.7x the jitter case) and the 20 training steps are checked.  Both with the bias
// epilogue off and on.  The rounding points of each op are held to cpu-bf16 in test_cuda_ops.c.
#define TOL_ACT16 2e-2

TEST(cuda_model_bf16_activations) {
    static const char *const infonce[] = {"train.precision=bf16", "train.activations=bf16", NULL};
    static const char *const none[] = {"train.precision=bf16", "train.activations=bf16", "loss.contrastive=none", NULL};
    pair_t p;
    for (int lt = 0; lt < 2; lt++) {
        setup(&p, 1, none, 4);
        CHECK(vm_model_bf16_activations(p.mg) && vm_model_bf16_activations(p.mb) && !vm_model_bf16_activations(p.mc),
              "bf16 activations: cuda %d, cpu-bf16 %d, cpu %d", vm_model_bf16_activations(p.mg),
              vm_model_bf16_activations(p.mb), vm_model_bf16_activations(p.mc));
        vm_backend_cuda_set_lt(lt);
        check_debug_step_bf16(&p,
                              lt ? "bf16 activations + cuBLASLt bias epilogue, no contrastive loss,"
                                 : "bf16 activations, no contrastive loss,",
                              TOL_ACT16, TOL_ACT16);
        if (lt && !getenv("VICMAE_MEMCHECK")) check_training_bf16(&p);  // (under compute-sanitizer: the steps only)
        vm_backend_cuda_set_lt(0);
        teardown(&p);
    }
    setup(&p, 1, infonce, 4);
    check_debug_step_bf16(&p, "bf16 activations, InfoNCE,", TOL_MODEL16_FP32, TOL_LOSS16_FP32);
    teardown(&p);
}
