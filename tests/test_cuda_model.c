// tests/test_cuda_model.c — the whole model on the CUDA backend against the CPU reference.
//
// Same configuration (configs/tiny.ini, then a ViT-shaped small variant), same initial parameters
// (copied from the CPU model), same batch and masks (drawn on the host from the step):
//  - debug step: the losses and EVERY gradient tensor agree, ||cuda - cpu|| / ||cpu|| per tensor;
//  - 20 training steps (AdamW, warmup, clipping): the CUDA losses track the CPU losses.
// fp32 and bf16.  Skips with the reason without a GPU.
#include <stdlib.h>
#include <string.h>
#include "common/config.h"
#include "common/rng.h"
#include "tests/harness.h"
#include "trainer/backend.h"
#include "trainer/cuda/cuda_backend.h"
#include "trainer/model.h"

// Per-tensor gradient tolerances of a whole debug step.  The per-op tests hold each op to 1e-5 /
// 1e-2; through the whole model the differences compound, and the tiny model is sensitive: on the
// CPU alone, perturbing every parameter by 1e-6 (relative) moves the SimSiam projector's gradient
// by 6e-5, and by 4e-3 (bf16-like) moves LayerNorm gradients by 3e-2 (InfoNCE) to 0.5 (SimSiam,
// cls pooling).  The bf16 bound therefore catches wrong results (O(1) errors), not rounding.
#define TOL_MODEL32 1e-3
#define TOL_MODEL16 0.15

typedef struct {
    const vm_backend_ops *cpu, *cu;
    vm_config cfg;
    vm_model *mc, *mg;  // CPU model, GPU model
    int B;
    uint8_t *views;
} pair_t;

static void setup(pair_t *p, int bf16, const char *const *overrides, int B) {
    char why[512] = "";
    memset(p, 0, sizeof *p);
    p->cu = vm_backend_cuda(why, sizeof why);
    if (!p->cu) SKIP("no GPU: %s", why);
    p->cpu = vm_backend_cpu(0);
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
    CHECK_OK(vm_model_create(&p->mg, &p->cfg, p->cu, B, &err), err);
    vm_model_init(p->mc, 1234);
    vm_model_set_total_steps(p->mc, 20);
    vm_model_set_total_steps(p->mg, 20);
    // identical starting point: the CPU parameters copied to the GPU
    size_t n = vm_model_num_floats(p->mc);
    CHECK(n == vm_model_num_floats(p->mg));
    p->cu->to_device(vm_model_params(p->mg), vm_model_params(p->mc), n * sizeof(float));
    p->cu->zero(vm_model_adam_m(p->mg), n * sizeof(float));
    p->cu->zero(vm_model_adam_v(p->mg), n * sizeof(float));
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
    vm_model_free(p->mg);
    free(p->views);
    vm_backend_cuda_set_precision(0);
}

static double rel(double a, double b) { return fabs(a - b) / (fabs(b) > 1e-12 ? fabs(b) : 1e-12); }

// One forward/backward on both; every gradient tensor within tol.  Returns the worst error.
static double check_debug_step(pair_t *p, double tol) {
    vm_error err = {0};
    vm_losses lc, lg;
    CHECK_OK(vm_model_forward_backward(p->mc, p->views, p->B, 0, &lc, &err), err);
    CHECK_OK(vm_model_forward_backward(p->mg, p->views, p->B, 0, &lg, &err), err);
    CHECK(rel(lg.total, lc.total) < tol, "loss.total cuda %.9g cpu %.9g", lg.total, lc.total);
    CHECK(rel(lg.rec, lc.rec) < tol, "loss.rec cuda %.9g cpu %.9g", lg.rec, lc.rec);
    if (p->cfg.loss.contrastive != VM_CON_NONE)
        CHECK(rel(lg.con, lc.con) < tol, "loss.con cuda %.9g cpu %.9g", lg.con, lc.con);
    size_t n = vm_model_num_floats(p->mc);
    float *gc = malloc(n * sizeof(float)), *gg = malloc(n * sizeof(float));
    CHECK(gc && gg);
    p->cpu->to_host(gc, vm_model_grads(p->mc), n * sizeof(float));
    p->cu->to_host(gg, vm_model_grads(p->mg), n * sizeof(float));
    // A tensor whose true gradient is rounding noise (the bias of a Linear followed by BatchNorm
    // has exactly zero gradient in exact arithmetic) is compared against a floor of 1e-2 of the
    // global gradient norm instead of its own norm.
    double gall = 0;
    for (size_t j = 0; j < n; j++) gall += (double)gc[j] * gc[j];
    double floor_ = 1e-2 * sqrt(gall);
    double worst = 0;
    int checked = 0;
    for (int i = 0; i < vm_model_num_tensors(p->mc); i++) {
        const vm_tensor_info *t = vm_model_tensor(p->mc, i);
        if (t->kind != VM_TENSOR_PARAM || !t->numel) continue;
        double num = 0, den = 0;
        for (size_t j = 0; j < t->numel; j++) {
            double e = (double)gg[t->offset + j] - gc[t->offset + j];
            num += e * e;
            den += (double)gc[t->offset + j] * gc[t->offset + j];
        }
        double e = sqrt(num) / fmax(sqrt(den), floor_);
        CHECK(e < tol, "grad.%s: relative error %.3g (tolerance %.0e, |cpu| %.3g)", t->name, e, tol, sqrt(den));
        if (e > worst) worst = e;
        if (sqrt(den) > floor_) checked++;
    }
    CHECK(checked > 10, "only %d gradient tensors", checked);
    free(gc);
    free(gg);
    return worst;
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
    double worst = check_debug_step(&p, TOL_MODEL16);
    printf("  bf16 debug step: worst gradient relative error %.3g\n", worst);
    teardown(&p);
}

TEST(cuda_model_train_bf16) {
    pair_t p;
    setup(&p, 1, NULL, 4);
    check_training(&p, 2e-2, 0.25);
    teardown(&p);
}

TEST(cuda_model_debug_step_bf16_fast) {
    pair_t p;
    setup(&p, 1, NULL, 4);
    vm_backend_cuda_set_bf16_path(1);
    if (vm_backend_cuda_bf16_path() != 1) SKIP("this cuBLAS refuses CUBLAS_COMPUTE_32F_FAST_16BF");
    double worst = check_debug_step(&p, TOL_MODEL16);
    printf("  bf16 (cuBLAS FAST_16BF) debug step: worst gradient relative error %.3g\n", worst);
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
        double worst = check_debug_step(&p, bf16 ? TOL_MODEL16 : TOL_MODEL32);
        printf("  %s + cuBLASLt bias epilogue debug step: worst gradient relative error %.3g\n", bf16 ? "bf16" : "fp32", worst);
        vm_backend_cuda_set_lt(0);
        teardown(&p);
    }
}
