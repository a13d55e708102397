// trainer/state.c — the training-state file (see state.h).
#include "trainer/state.h"
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define XXH_INLINE_ALL
#include <xxhash.h>
#include "trainer/safetensors.h"

int vm_state_checksum(vm_model *m, uint64_t *out, vm_error *err) {
    const vm_backend_ops *be = vm_model_backend(m);
    size_t nf = vm_model_num_floats(m), bytes = nf * sizeof(float);
    float *h = malloc(bytes);
    if (!h) return vm_fail(err, VM_ENOMEM, "checkpoint checksum: out of memory (%zu bytes)", bytes);
    XXH3_state_t xs;
    XXH3_64bits_reset(&xs);
    int nt = vm_model_num_tensors(m);
    float *bufs[3] = {vm_model_params(m), vm_model_adam_m(m), vm_model_adam_v(m)};
    for (int pass = 0; pass < 3; pass++) {
        be->to_host(h, bufs[pass], bytes);
        for (int i = 0; i < nt; i++) {
            const vm_tensor_info *ti = vm_model_tensor(m, i);
            if (ti->kind == VM_TENSOR_COUNTER || (pass && ti->kind != VM_TENSOR_PARAM)) continue;
            XXH3_64bits_update(&xs, h + ti->offset, ti->numel * sizeof(float));
        }
    }
    int64_t counter = vm_model_bn_batches(m);
    XXH3_64bits_update(&xs, &counter, sizeof counter);
    *out = XXH3_64bits_digest(&xs);
    free(h);
    return 0;
}

int vm_state_save(vm_model *m, const char *path, const vm_train_state *st, const char *config_text,
                  vm_error *err) {
    uint64_t sum;
    int rc = vm_state_checksum(m, &sum, err);
    if (rc) return vm_error_prefix(err, "%s: ", path);
    char step[32], total[32], seed[32], epoch[32], esample[32], samples[32], check[32], unit[32], usample[32],
        videos[32];
    snprintf(step, sizeof step, "%ld", st->step);
    snprintf(total, sizeof total, "%ld", st->total_steps);
    snprintf(seed, sizeof seed, "%" PRIu64, st->seed);
    snprintf(epoch, sizeof epoch, "%ld", st->epoch);
    snprintf(esample, sizeof esample, "%ld", st->epoch_sample);
    snprintf(samples, sizeof samples, "%ld", st->samples);
    snprintf(check, sizeof check, "%016" PRIx64, sum);
    snprintf(unit, sizeof unit, "%ld", st->unit);
    snprintf(usample, sizeof usample, "%ld", st->unit_sample);
    snprintf(videos, sizeof videos, "%ld", st->videos);
    const char *meta[] = {"format", VM_STATE_FORMAT, "step", step, "total_steps", total, "seed", seed,
                          "rng", "philox4x32-10; masks keyed by (seed, step)", "data_epoch", epoch,
                          "data_epoch_sample", esample, "data_samples", samples, "checksum", check,
                          "config", config_text ? config_text : "",
                          // last: absent when the run has no unit position (the list ends here)
                          st->unit >= 0 ? "data_unit" : NULL, unit, "data_unit_sample", usample,
                          "data_videos", videos, NULL};
    return vm_model_save(m, path, meta, 1, err);
}

// A non-negative decimal integer from the metadata, or an error naming the key.
static int meta_long(const vm_st_file *f, const char *path, const char *key, long *out, vm_error *err) {
    const char *s = vm_st_meta(f, key);
    if (!s) return vm_fail(err, VM_ECORRUPT, "%s: not a training-state file: metadata '%s' is missing", path, key);
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0)
        return vm_fail(err, VM_ECORRUPT, "%s: metadata '%s' = '%s' is not a non-negative integer", path, key, s);
    *out = (long)v;
    return 0;
}

static int read_meta(const vm_st_file *f, const char *path, vm_train_state *st, uint64_t *sum, char **config_text,
                     vm_error *err) {
    const char *fmt = vm_st_meta(f, "format");
    if (!fmt) return vm_fail(err, VM_ECORRUPT, "%s: not a training-state file (no 'format' metadata)", path);
    if (strncmp(fmt, "vicmae-train-state-", 19))
        return vm_fail(err, VM_ECORRUPT, "%s: not a training-state file (format '%s'; a model checkpoint?)", path, fmt);
    if (strcmp(fmt, VM_STATE_FORMAT))
        return vm_fail(err, VM_EVERSION, "%s: format '%s', this trainer reads '%s'", path, fmt, VM_STATE_FORMAT);
    long seed = 0;
    int rc;
    memset(st, 0, sizeof *st);
    if ((rc = meta_long(f, path, "step", &st->step, err)) || (rc = meta_long(f, path, "total_steps", &st->total_steps, err)) ||
        (rc = meta_long(f, path, "seed", &seed, err)) || (rc = meta_long(f, path, "data_epoch", &st->epoch, err)) ||
        (rc = meta_long(f, path, "data_epoch_sample", &st->epoch_sample, err)) ||
        (rc = meta_long(f, path, "data_samples", &st->samples, err)))
        return rc;
    // The unit position came later: a file without it resumes as before (the epoch starts again).
    st->unit = -1;
    if (vm_st_meta(f, "data_unit") &&
        ((rc = meta_long(f, path, "data_unit", &st->unit, err)) ||
         (rc = meta_long(f, path, "data_unit_sample", &st->unit_sample, err)) ||
         (rc = meta_long(f, path, "data_videos", &st->videos, err))))
        return rc;
    st->seed = (uint64_t)seed;
    const char *c = vm_st_meta(f, "checksum");
    char *end;
    if (!c || strlen(c) != 16)
        return vm_fail(err, VM_ECORRUPT, "%s: metadata 'checksum' is missing or malformed", path);
    errno = 0;
    *sum = strtoull(c, &end, 16);
    if (errno || *end) return vm_fail(err, VM_ECORRUPT, "%s: metadata 'checksum' = '%s' is not hexadecimal", path, c);
    if (config_text) {
        const char *t = vm_st_meta(f, "config");
        *config_text = strdup(t ? t : "");
        if (!*config_text) return vm_fail(err, VM_ENOMEM, "%s: out of memory", path);
    }
    return 0;
}

int vm_state_peek(const char *path, vm_train_state *st, char **config_text, vm_error *err) {
    vm_st_file *f;
    int rc = vm_st_read(&f, path, err);
    if (rc) return rc;
    uint64_t sum;
    rc = read_meta(f, path, st, &sum, config_text, err);
    vm_st_close(f);
    return rc;
}

int vm_state_load(vm_model *m, const char *path, vm_train_state *st, vm_error *err) {
    uint64_t want, got;
    vm_st_file *f;
    int rc = vm_st_read(&f, path, err);
    if (rc) return rc;
    rc = read_meta(f, path, st, &want, NULL, err);
    vm_st_close(f);
    if (rc) return rc;
    if ((rc = vm_model_load(m, path, 1, err))) return rc;
    if ((rc = vm_state_checksum(m, &got, err))) return vm_error_prefix(err, "%s: ", path);
    if (got != want)
        return vm_fail(err, VM_ECORRUPT,
                       "%s: checksum mismatch (stored %016" PRIx64 ", tensors hash to %016" PRIx64
                       "): the file is corrupt",
                       path, want, got);
    return 0;
}
