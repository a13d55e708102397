// tests/test_cuda_train.c — the training loop (trainer/loop.h, `vicmae train --replay DIR`) on the
// CUDA backend, on stored batch files, against the same run on the CPU backend: same number of
// steps, losses of the first and last step within tolerance, a checkpoint written.  fp32, bf16,
// and bf16 with bf16 activations.  This is also the "short training" that tools/gpu-check.sh runs under compute-sanitizer.
// Skips with the reason without a GPU.
#include "tests/harness.h"
#include "tests/test_trainer_util.h"
#include <unistd.h>
#include "trainer/backend.h"
#include "trainer/cuda/cuda_backend.h"
#include "trainer/loop.h"

static double rel(double a, double b) { return fabs(a - b) / (fabs(b) > 1e-12 ? fabs(b) : 1e-12); }

static void train_both(int bf16, int act16, double tol) {
    char why[512] = "";
    const vm_backend_ops *cu = vm_backend_cuda(why, sizeof why);
    if (!cu) SKIP("no GPU: %s", why);
    vm_backend_cuda_set_precision(bf16);
    vm_backend_cuda_set_bf16_path(0);
    char name[64], run_gpu[1024];
    snprintf(name, sizeof name, "cpu-%d-%d", bf16, act16);
    loop_replay t;  // its run directory: the CPU run
    loop_replay_setup(&t, name);
    snprintf(name, sizeof name, "gpu-%d-%d-run", bf16, act16);
    loop_subdir(run_gpu, sizeof run_gpu, name);
    loop_write_batches(t.data, 5, 3, 32, 11);  // 15 pairs per epoch, batches of 4: 3 steps x 2 epochs

    t.o.be = vm_backend_cpu(0);
    vm_train_result rc = loop_replay_train(&t);

    t.cfg.train.precision = bf16 ? VM_PREC_BF16 : VM_PREC_FP32;  // (cmd_train selects it; set above too)
    t.cfg.train.activations = act16 ? VM_ACT_BF16 : VM_ACT_FP32;
    t.o.be = cu;
    vm_train_result rg = loop_replay_train_in(&t, run_gpu);

    CHECK_EQ_INT(rg.steps, rc.steps);
    CHECK(rg.bf16_activations == act16 && !rc.bf16_activations, "bf16 activations: cuda %d (want %d), cpu %d (want 0)",
          rg.bf16_activations, act16, rc.bf16_activations);
    CHECK(rg.steps >= 6, "only %ld steps", rg.steps);
    CHECK(isfinite(rg.last.total), "cuda loss %g", rg.last.total);
    CHECK(rel(rg.first.total, rc.first.total) < tol, "first loss cuda %.9g cpu %.9g", rg.first.total, rc.first.total);
    CHECK(rel(rg.last.total, rc.last.total) < tol, "last loss cuda %.9g cpu %.9g", rg.last.total, rc.last.total);
    CHECK(rg.checkpoint[0] && access(rg.checkpoint, R_OK) == 0, "no checkpoint at '%s'", rg.checkpoint);
    printf("  %s: %ld steps, loss %.5f -> %.5f (cpu %.5f -> %.5f), data wait %.1f%%\n",
           act16 ? "bf16, bf16 activations" : bf16 ? "bf16" : "fp32",
           rg.steps, rg.first.total, rg.last.total, rc.first.total, rc.last.total,
           rg.seconds > 0 ? 100 * rg.wait_seconds / rg.seconds : 0.0);
    vm_backend_cuda_set_precision(0);
}

TEST(cuda_train_replay_fp32) { train_both(0, 0, 1e-3); }
TEST(cuda_train_replay_bf16) { train_both(1, 0, 2e-2); }
TEST(cuda_train_replay_bf16_activations) { train_both(1, 1, 2e-2); }
