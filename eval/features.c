// eval/features.c — batched feature extraction of an ImageFolder, with an on-disk cache.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include "common/io.h"
#include "eval/eval.h"
#include "trainer/safetensors.h"

void vm_feature_set_free(vm_feature_set *s) {
    if (!s) return;
    free(s->x), free(s->labels);
    memset(s, 0, sizeof *s);
}

void vm_feature_opts_default(vm_feature_opts *o) {
    memset(o, 0, sizeof *o);
    o->batch = 256;
    o->label = "images";
}

// XXH3-128 of everything the features depend on, as 32 hex digits.
static int cache_key(vm_model *m, const vm_imagefolder *f, char key[33], vm_error *err) {
    const vm_config *cfg = vm_model_config(m);
    const vm_backend_ops *be = vm_model_backend(m);
    XXH3_state_t *st = XXH3_createState();
    size_t nf = vm_model_num_floats(m);
    float *p = malloc(nf * sizeof *p);
    if (!st || !p) {
        XXH3_freeState(st), free(p);
        return vm_fail(err, VM_ENOMEM, "feature cache: out of memory");
    }
    be->to_host(p, vm_model_params(m), nf * sizeof *p);
    XXH3_128bits_reset(st);
    int geom[9] = {1 /* key version */, cfg->model.img_size, cfg->model.patch_size, cfg->model.embed_dim,
                   cfg->model.depth, cfg->model.num_heads, cfg->model.pool, f->n, f->nclasses};
    XXH3_128bits_update(st, geom, sizeof geom);
    XXH3_128bits_update(st, p, nf * sizeof *p);
    free(p);
    for (int i = 0; i < f->n; i++) {
        struct stat s;
        long long meta[2] = {0, 0};
        if (!stat(f->paths[i], &s)) meta[0] = (long long)s.st_size, meta[1] = (long long)s.st_mtime;
        XXH3_128bits_update(st, f->paths[i], strlen(f->paths[i]) + 1);
        XXH3_128bits_update(st, meta, sizeof meta);
        XXH3_128bits_update(st, &f->labels[i], sizeof f->labels[i]);
    }
    XXH128_hash_t h = XXH3_128bits_digest(st);
    XXH3_freeState(st);
    snprintf(key, 33, "%016llx%016llx", (unsigned long long)h.high64, (unsigned long long)h.low64);
    return 0;
}

// 1 when the cache file exists and matches (out filled), 0 otherwise.
static int cache_read(const char *path, const char *key, int n, int dim, int nclasses, vm_feature_set *out) {
    if (access(path, R_OK)) return 0;
    vm_st_file *sf = NULL;
    vm_error e = {0};
    if (vm_st_read(&sf, path, &e)) return 0;
    const vm_st_tensor *x = vm_st_find(sf, "features"), *y = vm_st_find(sf, "labels");
    const char *k = vm_st_meta(sf, "key");
    int ok = x && y && k && !strcmp(k, key) && !strcmp(x->dtype, "F32") && x->ndim == 2 && x->shape[0] == n &&
             x->shape[1] == dim && !strcmp(y->dtype, "I32") && y->ndim == 1 && y->shape[0] == n;
    if (ok) {
        out->x = malloc(x->nbytes), out->labels = malloc(y->nbytes);
        if (!out->x || !out->labels) ok = 0, vm_feature_set_free(out);
        else {
            memcpy(out->x, x->data, x->nbytes), memcpy(out->labels, y->data, y->nbytes);
            out->n = n, out->dim = dim, out->nclasses = nclasses;
        }
    }
    vm_st_close(sf);
    return ok;
}

int vm_eval_features(vm_model *m, const vm_imagefolder *f, const vm_feature_opts *o, vm_feature_set *out,
                     vm_error *err) {
    memset(out, 0, sizeof *out);
    const vm_config *cfg = vm_model_config(m);
    int S = cfg->model.img_size, D = cfg->model.embed_dim, n = f->n;
    int batch = o->batch > 0 ? o->batch : 256;
    char key[33] = "", path[VM_PATH_MAX + 64] = "";
    int rc;
    if (o->cache_dir && o->cache_dir[0]) {
        if ((rc = cache_key(m, f, key, err))) return rc;
        snprintf(path, sizeof path, "%s/feat-%s.safetensors", o->cache_dir, key);
        if (cache_read(path, key, n, D, f->nclasses, out)) {
            if (o->progress) fprintf(stderr, "eval: %s: %d features from cache %s\n", o->label, n, path);
            return 0;
        }
    }
    out->x = malloc((size_t)n * D * sizeof *out->x);
    out->labels = malloc((size_t)n * sizeof *out->labels);
    uint8_t *imgs = malloc((size_t)batch * S * S * 3);
    if (!out->x || !out->labels || !imgs) {
        free(imgs);
        vm_feature_set_free(out);
        return vm_fail(err, VM_ENOMEM, "features: out of memory for %d x %d", n, D);
    }
    memcpy(out->labels, f->labels, (size_t)n * sizeof *out->labels);
    out->n = n, out->dim = D, out->nclasses = f->nclasses;
    double t0 = vm_now();
    rc = 0;
    for (int at = 0; at < n && !rc; at += batch) {
        int c = n - at < batch ? n - at : batch;
        // Decoding is independent per image: spread it over the cores (the first error wins).
        int bad = -1;
        vm_error lerr = {0};
#pragma omp parallel for schedule(dynamic, 8)
        for (int i = 0; i < c; i++) {
            vm_error e = {0};
            if (vm_imagefolder_load(f, at + i, S, imgs + (size_t)i * S * S * 3, &e)) {
#pragma omp critical
                if (bad < 0 || i < bad) bad = i, lerr = e;
            }
        }
        if (bad >= 0) {
            *err = lerr;
            rc = lerr.code ? lerr.code : VM_EIO;
            break;
        }
        if ((rc = vm_model_features(m, imgs, c, out->x + (size_t)at * D, err))) break;
        if (o->progress) {
            double dt = vm_now() - t0;
            fprintf(stderr, "\reval: %s features %d/%d (%.0f img/s)", o->label, at + c, n, (at + c) / (dt > 0 ? dt : 1e-9));
            if (at + c == n) fputc('\n', stderr);
        }
    }
    free(imgs);
    if (rc) {
        vm_feature_set_free(out);
        return rc;
    }
    if (path[0]) {
        vm_error e = {0};
        vm_st_tensor t[2] = {
            {.name = "features", .dtype = "F32", .ndim = 2, .shape = {n, D}, .data = out->x,
             .nbytes = (size_t)n * D * sizeof(float)},
            {.name = "labels", .dtype = "I32", .ndim = 1, .shape = {n}, .data = out->labels,
             .nbytes = (size_t)n * sizeof(int32_t)},
        };
        const char *meta[] = {"key", key, "root", f->root, NULL};
        // A cache that cannot be written costs time next run, not correctness: report and go on.
        if ((vm_mkdirs(o->cache_dir, &e) || vm_st_write(path, t, 2, meta, &e)) && o->cache_err) *o->cache_err = e;
    }
    return 0;
}
