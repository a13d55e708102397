// vicmae train --config FILE [--set section.key=value]... [--replay DIR] [--backend cpu|cuda]
//              [--resume RUN_DIR|CKPT] [--stop-after STEPS] [--save-batches DIR] [--curve-admit KEY]
//
// Trains the configured model on batches from the pipeline (binds [pipeline] endpoint; workers
// connect, `vicmae run` starts them) or on a directory of stored proto batch files (--replay).
// Everything the run writes is in [run] out_dir (trainer/loop.h).  SIGINT/SIGTERM finish the
// current step, write a checkpoint and exit 0; `--resume` continues from it.
//
// This file is part of the GStreamer-free vicmae-trainer binary: no decoder, sampler or worker.
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli/cli.h"
#include "common/log.h"
#include "trainer/cuda/cuda_backend.h"
#include "trainer/loop.h"

static volatile sig_atomic_t g_stop;  // set by the signal handler, polled by the loop between steps
static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

int cmd_plot(int argc, char **argv);  // cli/cmd_plot.c: the loss curves of the run, at the end

static int usage_to(FILE *f) {
    fprintf(f,
            "usage: vicmae train --config FILE [--set section.key=value]... [--replay DIR] [--backend cpu|cuda]\n"
            "                    [--resume RUN_DIR|CKPT] [--stop-after STEPS] [--save-batches DIR] [--curve-admit KEY]\n"
            "  --replay DIR        train on stored proto batch files instead of the pipeline\n"
            "  --backend B         cpu or cuda (default [run] backend: auto = cuda when a GPU is usable)\n"
            "  --resume X          continue from X/train_state.safetensors (or that file itself);\n"
            "                      without --config the checkpoint's own configuration is used\n"
            "  --stop-after N      stop with a checkpoint after N steps (the schedule still plans all)\n"
            "  --save-batches DIR  also store every received batch (replayable with --replay)\n"
            "  --curve-admit KEY   with [pipeline] curve_secret_key: also admit this worker public key (Z85;\n"
            "                      `vicmae run` passes its local workers' key for the run)\n");
    return 2;
}
static int usage(void) { return usage_to(stderr); }

int cmd_train(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage_to(stdout), 0;
    char state_path[VM_PATH_MAX + 64];
    vm_config cfg;
    int rc = vm_cli_config_resume(&argc, argv, state_path, sizeof state_path, &cfg);
    if (rc) return rc;

    vm_train_opts o;
    vm_train_opts_default(&o);
    const char *backend = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 < argc && !strcmp(a, "--replay")) o.replay_dir = argv[++i];
        else if (i + 1 < argc && !strcmp(a, "--backend")) backend = argv[++i];
        else if (i + 1 < argc && !strcmp(a, "--resume")) i++;
        else if (i + 1 < argc && !strcmp(a, "--save-batches")) o.save_batches = argv[++i];
        else if (i + 1 < argc && !strcmp(a, "--curve-admit")) o.curve_admit = argv[++i];
        else if (i + 1 < argc && !strcmp(a, "--stop-after")) {
            int steps;
            if (vm_cli_int("train", a, argv[++i], 1, INT_MAX, &steps)) return 2;
            o.stop_after = steps;
        } else {
            fprintf(stderr, "vicmae train: unexpected argument '%s'\n", a);
            return usage();
        }
    }
    if (backend && strcmp(backend, "cpu") && strcmp(backend, "cuda")) {
        fprintf(stderr, "vicmae train: --backend '%s': expected cpu or cuda\n", backend);
        return 2;
    }
    // Backend: --backend, else [run] backend; auto = CUDA when vm_backend_cuda() offers one.
    int want = backend ? (!strcmp(backend, "cuda") ? VM_BACKEND_CUDA : VM_BACKEND_CPU) : cfg.run.backend;
    char why[512] = "built without CUDA";
    if (want != VM_BACKEND_CPU) {
        // trainer/cuda/cuda_nocuda.c answers "built without CUDA" when nvcc was absent.
        vm_backend_cuda_set_precision(cfg.train.precision == VM_PREC_BF16);
        o.be = vm_backend_cuda(why, sizeof why);
        if (!o.be && want == VM_BACKEND_CUDA) {
            fprintf(stderr, "vicmae train: CUDA backend unavailable: %s\n", why);
            return 1;
        }
        if (!o.be) vm_info("train: no CUDA backend (%s): training on the CPU", why);
    }
    if (o.be) {  // which CUDA paths this run takes (docs/GPU.md; VICMAE_CUDA_* change them)
        char dev[256], paths[320];
        vm_backend_cuda_device_name(dev, sizeof dev);
        vm_backend_cuda_describe(paths, sizeof paths);
        vm_info("train: CUDA on %s: %s", dev, paths);
    }
    if (!o.be) o.be = vm_backend_cpu(cfg.run.threads);
    if (state_path[0]) o.resume = state_path;  // --resume given

    vm_log_set_role("trainer");
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    o.stop = &g_stop;

    vm_train_result res;
    vm_error err = {0};
    rc = vm_train(&cfg, &o, &res, &err);
    if (rc) {
        fprintf(stderr, "vicmae train: %s\n", err.msg);
        return 1;
    }
    if (res.steps > 0) {  // loss.png beside metrics.jsonl; without gnuplot only a warning
        char *pargv[] = {"plot", cfg.run.out_dir, NULL};
        if (cmd_plot(2, pargv) != 0) vm_warn("train: no loss plot (vicmae plot %s failed)", cfg.run.out_dir);
    }
    printf("train: %ld/%ld steps, loss %.4f -> %.4f (rec %.4f -> %.4f), %.1f s, checkpoint %s\n", res.steps,
           res.total_steps, res.first.total, res.last.total, res.first.rec, res.last.rec, res.seconds,
           res.checkpoint[0] ? res.checkpoint : "(none)");
    return 0;
}
