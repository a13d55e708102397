// vicmae export --ckpt CKPT --timm OUT.safetensors [--config FILE] [--set section.key=value]...
//
// Writes the encoder of a checkpoint under timm's VisionTransformer names (eval/export.h): no
// decoder, projector, predictor or optimiser state.  The architecture comes from --config, else
// from the configuration stored in the checkpoint.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli/cli.h"
#include "eval/export.h"

static int usage_to(FILE *f) {
    fprintf(f, "usage: vicmae export --ckpt CKPT --timm OUT.safetensors [--config FILE] [--set section.key=value]...\n");
    return 2;
}
static int usage(void) { return usage_to(stderr); }

int cmd_export(int argc, char **argv) {
    const char *ckpt = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage_to(stdout), 0;
        if (!strcmp(argv[i], "--ckpt") && i + 1 < argc) ckpt = argv[i + 1];
    }
    if (!ckpt) {
        fprintf(stderr, "vicmae export: --ckpt is required\n");
        return usage();
    }
    vm_config cfg;
    vm_error err = {0};
    int n = argc;
    int rc = vm_cli_config_ckpt(&n, argv, ckpt, &cfg);  // consumes --config/--set
    if (rc) return rc;
    for (int i = 1; i < n; i++) {
        if (!strcmp(argv[i], "--ckpt") && i + 1 < n) i++;
        else if (!strcmp(argv[i], "--timm") && i + 1 < n) out = argv[++i];
        else {
            fprintf(stderr, "vicmae export: unexpected argument '%s'\n", argv[i]);
            return usage();
        }
    }
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
