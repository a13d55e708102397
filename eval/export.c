// eval/export.c — timm export of the encoder, and the configuration stored in a checkpoint.
#include "eval/export.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "trainer/safetensors.h"

int vm_export_is_encoder(const char *name) {
    return !strcmp(name, "cls_token") || !strcmp(name, "pos_embed") || !strncmp(name, "patch_embed.", 12) ||
           !strncmp(name, "blocks.", 7) || !strncmp(name, "norm.", 5);
}

const char *vm_export_timm_name(const vm_config *cfg) {
    switch (cfg->model.embed_dim) {
    case 192: return "vit_tiny_patch16_224";
    case 384: return "vit_small_patch16_224";
    case 768: return "vit_base_patch16_224";
    case 1024: return "vit_large_patch16_224";
    case 1280: return "vit_huge_patch14_224";
    default: return "vit_custom";
    }
}

int vm_export_timm(vm_model *m, const char *path, vm_error *err) {
    const vm_config *cfg = vm_model_config(m);
    const vm_backend_ops *be = vm_model_backend(m);
    size_t nf = vm_model_num_floats(m);
    int nt = vm_model_num_tensors(m);
    float *p = malloc(nf * sizeof *p);
    vm_st_tensor *t = calloc((size_t)nt, sizeof *t);
    char *ini = NULL;  // NULL on failure, reported below
    vm_config_to_text(cfg, &ini, NULL, NULL);
    int rc = 0;
    if (!p || !t || !ini) {
        rc = vm_fail(err, VM_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    be->to_host(p, vm_model_params(m), nf * sizeof *p);
    int n = 0;
    for (int i = 0; i < nt; i++) {
        const vm_tensor_info *ti = vm_model_tensor(m, i);
        if (!vm_export_is_encoder(ti->name) || ti->kind == VM_TENSOR_COUNTER) continue;
        t[n].name = ti->name;
        t[n].dtype = "F32";
        t[n].ndim = ti->ndim;
        for (int d = 0; d < ti->ndim; d++) t[n].shape[d] = ti->shape[d];
        t[n].data = p + ti->offset;
        t[n].nbytes = ti->numel * sizeof(float);
        n++;
    }
    char img[16], patch[16], dim[16], depth[16], heads[16], mlp[32];
    snprintf(img, sizeof img, "%d", cfg->model.img_size);
    snprintf(patch, sizeof patch, "%d", cfg->model.patch_size);
    snprintf(dim, sizeof dim, "%d", cfg->model.embed_dim);
    snprintf(depth, sizeof depth, "%d", cfg->model.depth);
    snprintf(heads, sizeof heads, "%d", cfg->model.num_heads);
    snprintf(mlp, sizeof mlp, "%.17g", cfg->model.mlp_ratio);
    const char *meta[] = {"format", "pt", "timm_model", vm_export_timm_name(cfg), "img_size", img, "patch_size", patch,
                          "embed_dim", dim, "depth", depth, "num_heads", heads, "mlp_ratio", mlp, "global_pool",
                          cfg->model.pool == VM_POOL_CLS ? "token" : "avg", "config", ini, NULL};
    rc = vm_st_write(path, t, n, meta, err);
done:
    free(p), free(t), free(ini);
    return rc;
}

int vm_ckpt_config(const char *ckpt, char **ini, vm_error *err) {
    vm_st_file *f = NULL;
    int rc = vm_st_read(&f, ckpt, err);
    if (rc) return rc;
    const char *c = vm_st_meta(f, "config");
    if (!c || !c[0]) rc = vm_fail(err, VM_ENOTFOUND, "%s: no stored configuration (pass --config)", ckpt);
    else if (!(*ini = strdup(c))) rc = vm_fail(err, VM_ENOMEM, "out of memory");
    vm_st_close(f);
    return rc;
}
