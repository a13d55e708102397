// vicmae export --ckpt CKPT --timm OUT.safetensors [--config FILE] [--set section.key=value]...
//
// Writes the encoder of a checkpoint under timm's VisionTransformer names (eval/export.h): no
// decoder, projector, predictor or optimiser state.  The architecture comes from --config, else
// from the configuration stored in the checkpoint.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli/cli.h"
#include "eval/export.h"

static int usage(void) {
    fprintf(stderr, "usage: vicmae export --ckpt CKPT --timm OUT.safetensors [--config FILE] [--set section.key=value]...\n");
    return 2;
}

int cmd_export(int argc, char **argv) {
    const char *ckpt = NULL, *out = NULL;
    int have_config = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage(), 0;
        if (!strcmp(argv[i], "--config") || !strncmp(argv[i], "--config=", 9)) have_config = 1;
        if (!strcmp(argv[i], "--ckpt") && i + 1 < argc) ckpt = argv[i + 1];
    }
    if (!ckpt) {
        fprintf(stderr, "vicmae export: --ckpt is required\n");
        return usage();
    }
    // The checkpoint's own configuration, through a temporary file so that --set still applies.
    char tmp[64] = "";
    char **args = calloc((size_t)argc + 3, sizeof *args);
    if (!args) return 1;
    memcpy(args, argv, (size_t)argc * sizeof *args);
    int n = argc;
    vm_error err = {0};
    if (!have_config) {
        char *ini = NULL;
        if (vm_ckpt_config(ckpt, &ini, &err)) {
            fprintf(stderr, "vicmae export: %s\n", err.msg);
            free(args);
            return 2;
        }
        snprintf(tmp, sizeof tmp, "/tmp/vicmae-export-XXXXXX");
        int fd = mkstemp(tmp);
        FILE *fp = fd >= 0 ? fdopen(fd, "w") : NULL;
        int bad = !fp || fputs(ini, fp) < 0;
        if (fp) bad |= fclose(fp) != 0;
        free(ini);
        if (bad) {
            fprintf(stderr, "vicmae export: %s: cannot write the stored configuration\n", tmp);
            if (fd >= 0) unlink(tmp);
            free(args);
            return 1;
        }
        args[n++] = "--config";
        args[n++] = tmp;
    }
    args[n] = NULL;
    vm_config cfg;
    int rc = vm_cli_config(&n, args, &cfg);
    if (tmp[0]) unlink(tmp);
    if (rc) { free(args); return rc; }
    for (int i = 1; i < n; i++) {
        if (!strcmp(args[i], "--ckpt") && i + 1 < n) i++;
        else if (!strcmp(args[i], "--timm") && i + 1 < n) out = args[++i];
        else {
            fprintf(stderr, "vicmae export: unexpected argument '%s'\n", args[i]);
            free(args);
            return usage();
        }
    }
    free(args);
    if (!out) {
        fprintf(stderr, "vicmae export: --timm OUT.safetensors is required\n");
        return usage();
    }
    vm_model *m = NULL;
    rc = 1;
    // The CPU backend: an export only copies tensors.
    if (vm_model_create(&m, &cfg, vm_backend_cpu(1), 1, &err) || vm_model_load(m, ckpt, 0, &err) ||
        vm_export_timm(m, out, &err))
        fprintf(stderr, "vicmae export: %s\n", err.msg);
    else {
        printf("export: %s -> %s (%s layout: img_size %d, patch %d, dim %d, depth %d, heads %d, pool %s)\n", ckpt, out,
               vm_export_timm_name(&cfg), cfg.model.img_size, cfg.model.patch_size, cfg.model.embed_dim,
               cfg.model.depth, cfg.model.num_heads, cfg.model.pool == VM_POOL_CLS ? "token" : "avg");
        rc = 0;
    }
    vm_model_free(m);
    return rc;
}
