// vicmae eval knn|linear|all (--ckpt CKPT | --random-init) --train DIR --val DIR [options]
//
// Evaluates a frozen encoder on ImageFolder data (eval/eval.h): k-NN (cosine, k = 20, T = 0.07
// weighted votes as DINO) and/or a linear probe (standardised features, SGD or L-BFGS).  The model
// architecture comes from --config, else from the configuration stored in the checkpoint.
// Prints one result line per evaluation; --json FILE appends them as JSON lines.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli/cli.h"
#include "common/io.h"
#include "common/log.h"
#include "eval/eval.h"
#include "eval/export.h"
#include "trainer/safetensors.h"

extern const vm_backend_ops *vm_backend_cuda(char *why, size_t why_cap) __attribute__((weak));

static int usage_to(FILE *f) {
    fprintf(f,
            "usage: vicmae eval knn|linear|all (--ckpt CKPT | --random-init) --train DIR --val DIR\n"
            "                   [--config FILE] [--set section.key=value]... [options]\n"
            "  --ckpt CKPT          model.safetensors or train_state.safetensors of a run\n"
            "  --random-init        a randomly initialised encoder (MAE init from --seed, default run.seed)\n"
            "  --config FILE        model architecture (default: the config stored in CKPT)\n"
            "  --pool mean|cls      feature pooling (default [model] pool)\n"
            "  --train-per-class N  use the first N training images of each class (default all)\n"
            "  --val-per-class N    the same for --val\n"
            "  --batch N            images per feature chunk (default 256)\n"
            "  --cache DIR          cache extracted features in DIR (keyed by weights and images)\n"
            "  --backend cpu|cuda   default [run] backend (auto: CUDA when usable)\n"
            "  --k N --temperature T          k-NN (default 20, 0.07)\n"
            "  --optimizer sgd|lbfgs --epochs N --lr X --wd X   linear probe (default sgd, 100, 0.1, 0)\n"
            "  --json FILE          append the results as JSON lines\n"
            "  --save-features F    write the features as safetensors: train.features (N, D), train.labels,\n"
            "                       val.features, val.labels (ImageFolder order)\n"
            "  --quiet              no progress lines\n");
    return 2;
}
static int usage(void) { return usage_to(stderr); }


static void print_result(FILE *json, const char *what, const vm_eval_result *r, const char *ckpt, const char *params,
                         int ntrain) {
    printf("%s: top-1 %.2f%%  top-5 %.2f%%  (%d train, %d val; %s)\n", what, r->top1, r->top5, ntrain, r->n, params);
    if (json)
        fprintf(json, "{\"eval\": \"%s\", \"ckpt\": \"%s\", \"top1\": %.4f, \"top5\": %.4f, \"n_train\": %d, \"n_val\": %d, "
                      "\"params\": \"%s\"}\n", what, ckpt, r->top1, r->top5, ntrain, r->n, params);
}

static int save_features(const char *path, const vm_feature_set *tr, const vm_feature_set *va, vm_error *err) {
    vm_st_tensor t[4];
    const vm_feature_set *s[2] = {tr, va};
    static const char *names[2][2] = {{"train.features", "train.labels"}, {"val.features", "val.labels"}};
    for (int i = 0; i < 2; i++) {
        t[2 * i] = (vm_st_tensor){.name = names[i][0], .dtype = "F32", .ndim = 2, .shape = {s[i]->n, s[i]->dim},
                                  .data = s[i]->x, .nbytes = (size_t)s[i]->n * s[i]->dim * sizeof(float)};
        t[2 * i + 1] = (vm_st_tensor){.name = names[i][1], .dtype = "I32", .ndim = 1, .shape = {s[i]->n},
                                      .data = s[i]->labels, .nbytes = (size_t)s[i]->n * sizeof(int32_t)};
    }
    return vm_st_write(path, t, 4, NULL, err);
}

int cmd_eval(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) return argc < 2 ? usage() : (usage_to(stdout), 0);
    const char *mode = argv[1];
    int do_knn = !strcmp(mode, "knn") || !strcmp(mode, "all"), do_lin = !strcmp(mode, "linear") || !strcmp(mode, "all");
    if (!do_knn && !do_lin) {
        fprintf(stderr, "vicmae eval: unknown evaluation '%s' (knn, linear or all)\n", mode);
        return usage();
    }
    // argv without the mode word, as vm_cli_config expects (argv[0] = command name).
    argv[1] = argv[0];
    argv++, argc--;
    const char *ckpt = NULL;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--ckpt")) ckpt = argv[i + 1];
    vm_config cfg;
    int rc = vm_cli_config_ckpt(&argc, argv, ckpt, &cfg);
    if (rc) return rc;

    const char *train_dir = NULL, *val_dir = NULL, *cache = NULL, *json_path = NULL, *backend = NULL, *pool = NULL,
               *save_path = NULL;
    int random_init = 0, quiet = 0, train_pc = 0, val_pc = 0, k = 20, seed_set = 0, seed = 0;
    double T = 0.07;
    vm_feature_opts fo;
    vm_feature_opts_default(&fo);
    vm_probe_opts po;
    vm_probe_opts_default(&po);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int used = 1;
        if (!strcmp(a, "--random-init")) random_init = 1, used = 0;
        else if (!strcmp(a, "--quiet")) quiet = 1, used = 0;
        else if (!v) {
            fprintf(stderr, "vicmae eval: unexpected argument '%s'\n", a);
            return usage();
        } else if (!strcmp(a, "--ckpt")) ckpt = v;
        else if (!strcmp(a, "--train")) train_dir = v;
        else if (!strcmp(a, "--val")) val_dir = v;
        else if (!strcmp(a, "--cache")) cache = v;
        else if (!strcmp(a, "--json")) json_path = v;
        else if (!strcmp(a, "--save-features")) save_path = v;
        else if (!strcmp(a, "--backend")) backend = v;
        else if (!strcmp(a, "--pool")) pool = v;
        else if (!strcmp(a, "--seed")) { if ((rc = vm_cli_int("eval", a, v, 0, 1 << 30, &seed))) return rc; seed_set = 1; }
        else if (!strcmp(a, "--train-per-class")) { if ((rc = vm_cli_int("eval", a, v, 1, 1 << 30, &train_pc))) return rc; }
        else if (!strcmp(a, "--val-per-class")) { if ((rc = vm_cli_int("eval", a, v, 1, 1 << 30, &val_pc))) return rc; }
        else if (!strcmp(a, "--batch")) { if ((rc = vm_cli_int("eval", a, v, 1, 1 << 30, &fo.batch))) return rc; }
        else if (!strcmp(a, "--k")) { if ((rc = vm_cli_int("eval", a, v, 1, 1 << 30, &k))) return rc; }
        else if (!strcmp(a, "--temperature")) { if ((rc = vm_cli_num("eval", a, v, 1e-6, INFINITY, &T))) return rc; }
        else if (!strcmp(a, "--epochs")) { if ((rc = vm_cli_int("eval", a, v, 1, 1 << 30, &po.epochs))) return rc; }
        else if (!strcmp(a, "--lr")) { if ((rc = vm_cli_num("eval", a, v, 0, INFINITY, &po.lr))) return rc; }
        else if (!strcmp(a, "--wd")) { if ((rc = vm_cli_num("eval", a, v, 0, INFINITY, &po.weight_decay))) return rc; }
        else if (!strcmp(a, "--optimizer")) {
            if (!strcmp(v, "sgd")) po.optimizer = VM_PROBE_SGD;
            else if (!strcmp(v, "lbfgs")) po.optimizer = VM_PROBE_LBFGS;
            else { fprintf(stderr, "vicmae eval: --optimizer '%s': expected sgd or lbfgs\n", v); return 2; }
        } else {
            fprintf(stderr, "vicmae eval: unexpected argument '%s'\n", a);
            return usage();
        }
        i += used;
    }
    if (!train_dir || !val_dir || (!ckpt == !random_init)) {
        fprintf(stderr, "vicmae eval: needs --train, --val and one of --ckpt or --random-init\n");
        return usage();
    }
    if (pool) {
        vm_error e = {0};
        if (vm_config_set(&cfg, "model", "pool", pool, "--pool", &e)) {
            fprintf(stderr, "vicmae eval: %s\n", e.msg);
            return 2;
        }
    }
    if (backend && strcmp(backend, "cpu") && strcmp(backend, "cuda")) {
        fprintf(stderr, "vicmae eval: --backend '%s': expected cpu or cuda\n", backend);
        return 2;
    }
    const vm_backend_ops *be = NULL;
    char why[512] = "built without CUDA";
    int want_cuda = backend ? !strcmp(backend, "cuda") : cfg.run.backend == VM_BACKEND_CUDA;
    if (want_cuda || (!backend && cfg.run.backend == VM_BACKEND_AUTO)) {
        if (vm_backend_cuda) be = vm_backend_cuda(why, sizeof why);
        if (!be && want_cuda) {
            fprintf(stderr, "vicmae eval: CUDA backend unavailable: %s\n", why);
            return 1;
        }
    }
    if (!be) be = vm_backend_cpu(cfg.run.threads);

    vm_error err = {0};
    vm_imagefolder tr = {0}, va = {0};
    vm_feature_set ftr = {0}, fva = {0};
    vm_model *m = NULL;
    FILE *json = NULL;
    rc = 1;
    if (vm_imagefolder_scan(&tr, train_dir, train_pc, NULL, &err) || vm_imagefolder_scan(&va, val_dir, val_pc, &tr, &err))
        goto fail;
    int max_pairs = (fo.batch + 1) / 2;
    if (vm_model_create(&m, &cfg, be, max_pairs, &err)) goto fail;
    if (random_init) vm_model_init(m, (uint64_t)(seed_set ? seed : cfg.run.seed));
    else if (vm_model_load(m, ckpt, 0, &err)) goto fail;
    vm_error cache_err = {0};
    fo.cache_dir = cache, fo.progress = !quiet, fo.cache_err = &cache_err;
    fo.label = "train";
    if (vm_eval_features(m, &tr, &fo, &ftr, &err)) goto fail;
    fo.label = "val";
    if (vm_eval_features(m, &va, &fo, &fva, &err)) goto fail;
    if (cache_err.code) fprintf(stderr, "vicmae eval: warning: feature cache not written: %s\n", cache_err.msg);
    if (save_path && save_features(save_path, &ftr, &fva, &err)) goto fail;
    if (json_path && !(json = fopen(json_path, "a"))) {
        vm_fail(&err, VM_EIO, "%s: cannot append", json_path);
        goto fail;
    }
    char src[VM_PATH_MAX + 32];
    if (random_init) snprintf(src, sizeof src, "random-init:%d", seed_set ? seed : (int)cfg.run.seed);
    else snprintf(src, sizeof src, "%s", ckpt);
    char params[256];
    vm_eval_result r;
    const char *pool_name = vm_config_enum_name("model", "pool", cfg.model.pool);
    if (do_knn) {
        if (vm_knn(&ftr, &fva, k, T, &r, &err)) goto fail;
        snprintf(params, sizeof params, "k=%d T=%g pool=%s dim=%d", k, T, pool_name, ftr.dim);
        print_result(json, "knn", &r, src, params, ftr.n);
    }
    if (do_lin) {
        po.verbose = !quiet && vm_log_get_level() >= VM_LOG_DEBUG;
        double t0 = vm_now();
        if (vm_linear_probe(&ftr, &fva, &po, &r, &err)) goto fail;
        snprintf(params, sizeof params, "%s epochs=%d lr=%g wd=%g pool=%s dim=%d %.1fs",
                 po.optimizer == VM_PROBE_LBFGS ? "lbfgs" : "sgd", po.epochs, po.lr, po.weight_decay, pool_name, ftr.dim,
                 vm_now() - t0);
        print_result(json, "linear", &r, src, params, ftr.n);
    }
    rc = 0;
fail:
    if (rc) fprintf(stderr, "vicmae eval: %s\n", err.msg);
    if (json) fclose(json);
    vm_feature_set_free(&ftr), vm_feature_set_free(&fva);
    vm_imagefolder_free(&tr), vm_imagefolder_free(&va);
    vm_model_free(m);
    return rc;
}
