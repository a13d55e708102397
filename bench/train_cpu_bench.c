// bench/train_cpu_bench.c — time of one full training step on the CPU backend (bench/bench_train.sh).
//
//   train_cpu_bench [--config FILE] [--set section.key=value]... [--steps 3] [--warmup 1]
//
// A full step is what `vicmae train` does per batch: vm_model_forward_backward (patchify, masking,
// encoder, decoder, projector, losses, backward) + vm_model_optimizer_step (AdamW), on synthetic
// uint8 pairs (Philox, fixed seed) of [optim] batch_size.  Threads: [run] threads (0 = all cores).
// Prints the step time (best and mean of --steps), pairs/s and GFLOP/s of the matrix products
// counted analytically (training = 3x forward, the convention of bench/gpu_bench.c), and one
// machine-readable "result ..." line.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "common/config.h"
#include "common/io.h"
#include "common/rng.h"
#include "trainer/backend.h"
#include "trainer/model.h"

// Forward FLOPs of the matrix products for 2B images (both views), MAE shapes.
static double forward_flops(const vm_config *c, int B) {
    double D = c->model.embed_dim, Dd = c->model.decoder_embed_dim, P = c->model.patch_size;
    double L = (double)(c->model.img_size / c->model.patch_size) * (c->model.img_size / c->model.patch_size);
    double K = (int)(L * (1 - c->model.mask_ratio)), Te = K + 1, Td = L + 1, r = c->model.mlp_ratio;
    double blk_e = 2 * Te * (3 * D * D + D * D + 2 * r * D * D) + 4 * Te * Te * D;
    double blk_d = 2 * Td * (3 * Dd * Dd + Dd * Dd + 2 * r * Dd * Dd) + 4 * Td * Td * Dd;
    double h = c->model.proj_hidden_dim, o = c->model.proj_out_dim;
    double per_img = 2 * L * 3 * P * P * D                 // patch embedding (all patches, before masking)
                     + c->model.depth * blk_e + 2 * Te * D * Dd  // encoder, decoder_embed
                     + c->model.decoder_depth * blk_d + 2 * Td * Dd * 3 * P * P  // decoder, decoder_pred
                     + 2 * (D * h + h * h + h * o);           // projector
    return 2.0 * B * per_img;
}

// CPU seconds of the process, all threads: on a shared machine a less noisy measure of work than
// wall time (with one thread; with several it also counts threads spinning at barriers).
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    vm_config cfg;
    vm_config_defaults(&cfg);
    vm_error err = {0};
    int steps = 3, warmup = 1;
    for (int i = 1; i < argc; i++) {
        int rc = 0;
        if (!strcmp(argv[i], "--config") && i + 1 < argc) rc = vm_config_load(&cfg, argv[++i], &err);
        else if (!strcmp(argv[i], "--set") && i + 1 < argc) rc = vm_config_override(&cfg, argv[++i], &err);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warmup = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: train_cpu_bench [--config FILE] [--set k=v]... [--steps N] [--warmup N]\n");
            return 2;
        }
        if (rc) {
            fprintf(stderr, "train_cpu_bench: %s\n", err.msg);
            return 2;
        }
    }
    if (vm_config_validate(&cfg, &err) || steps < 1 || warmup < 0) {
        fprintf(stderr, "train_cpu_bench: %s\n", err.msg[0] ? err.msg : "bad --steps/--warmup");
        return 2;
    }
    int B = cfg.optim.batch_size, S = cfg.model.img_size;
    const vm_backend_ops *be = vm_backend_cpu(cfg.run.threads);
    vm_model *m;
    if (vm_model_create(&m, &cfg, be, B, &err)) {
        fprintf(stderr, "train_cpu_bench: %s\n", err.msg);
        return 1;
    }
    vm_model_init(m, 0);
    vm_model_set_total_steps(m, 1000);
    size_t n = (size_t)B * 2 * S * S * 3;
    uint8_t *views = malloc(n);
    if (!views) return 1;
    vm_rng g;
    vm_rng_init(&g, 1, 0);
    for (size_t i = 0; i < n; i++) views[i] = (uint8_t)(vm_rng_u32(&g) >> 24);

    double best = 1e30, sum = 0, cpu_best = 1e30;
    vm_losses ls = {0};
    for (int s = 0; s < warmup + steps; s++) {
        double t0 = vm_now(), c0 = cpu_now();
        float lr, gn;
        if (vm_model_forward_backward(m, views, B, s, &ls, &err)) {
            fprintf(stderr, "train_cpu_bench: %s\n", err.msg);
            return 1;
        }
        vm_model_optimizer_step(m, s, &lr, &gn);
        double dt = vm_now() - t0, dc = cpu_now() - c0;
        if (s >= warmup) {
            sum += dt;
            if (dt < best) best = dt;
            if (dc < cpu_best) cpu_best = dc;
        }
    }
    double fl = 3 * forward_flops(&cfg, B);
    printf("vicmae cpu: %d pairs of %dx%d, ViT D%d x%d h%d, decoder %d x%d h%d: step best %.1f ms, mean %.1f ms, "
           "%.2f pairs/s, %.1f GFLOP/s (%.1f GFLOP per step), cpu time %.1f ms, loss %.4f\n",
           B, S, S, cfg.model.embed_dim, cfg.model.depth, cfg.model.num_heads, cfg.model.decoder_embed_dim,
           cfg.model.decoder_depth, cfg.model.decoder_num_heads, best * 1e3, sum / steps * 1e3, B / best,
           fl / best * 1e-9, fl * 1e-9, cpu_best * 1e3, ls.total);
    printf("result impl=vicmae-cpu batch=%d step_ms=%.3f mean_ms=%.3f cpu_ms=%.3f gflop=%.3f gflops=%.2f\n", B,
           best * 1e3, sum / steps * 1e3, cpu_best * 1e3, fl * 1e-9, fl / best * 1e-9);
    free(views);
    vm_model_free(m);
    return 0;
}
