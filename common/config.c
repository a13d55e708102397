// common/config.c — the schema table and the INI reader (inih).
#include "common/config.h"
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef enum { T_INT, T_LONG, T_FLOAT, T_BOOL, T_STR, T_ENUM } field_type;

typedef struct {
    const char *section, *key;
    field_type type;
    size_t offset, size;  // size: capacity for T_STR
    const char *def;
    double min, max;      // inclusive range for numbers
    const char *choices;  // "a|b|c" for T_ENUM, in enum order
    const char *help;
} field;

#define F(sec, k, t, member, d, lo, hi, ch, h) \
    {#sec, #k, t, offsetof(vm_config, member), sizeof(((vm_config *)0)->member), d, lo, hi, ch, h}
#define BIG 1e18

static const field schema[] = {
    F(run, seed, T_LONG, run.seed, "0", 0, 9.2e18, NULL, "one seed fixes sampling, masking and initialisation"),
    F(run, out_dir, T_STR, run.out_dir, "runs/demo", 0, 0, NULL, "run directory: metrics.jsonl, checkpoints, plots"),
    F(run, backend, T_ENUM, run.backend, "auto", 0, 0, "auto|cpu|cuda", "trainer backend (auto: cuda when a GPU is usable)"),
    F(run, threads, T_INT, run.threads, "0", 0, 1024, NULL, "CPU threads for the trainer (0 = all cores)"),
    F(run, log_every, T_INT, run.log_every, "10", 1, 1e9, NULL, "steps between progress lines"),

    F(data, path, T_STR, data.path, "", 0, 0, NULL, "video directory (scanned recursively) or manifest file; empty = data.synth_dir"),
    F(data, synth_dir, T_STR, data.synth_dir, "data/synth", 0, 0, NULL, "where the generated demo dataset lives"),

    F(decoder, hw, T_ENUM, decoder.hw, "auto", 0, 0, "auto|off", "use hardware decoders when GStreamer offers them"),
    F(decoder, timeout_ms, T_INT, decoder.timeout_ms, "10000", 100, 3.6e6, NULL, "longest wait on the pipeline bus before a stall is an error"),
    F(decoder, index_cache, T_STR, decoder.index_cache, "", 0, 0, NULL, "frame-index cache directory (empty = $XDG_CACHE_HOME/vicmae/index, else ~/.cache/vicmae/index; off = no cache)"),
    F(decoder, decode_short_side, T_INT, decoder.decode_short_side, "256", 0, 8192, NULL, "scale while decoding so the short side is this (0 = native)"),

    F(sampler, policy, T_ENUM, sampler.policy, "pair", 0, 0, "pair|clip|multiview", "what one sample is"),
    F(sampler, mode, T_ENUM, sampler.mode, "distant", 0, 0, "uniform|distant|same", "how the two frames of a pair are chosen"),
    F(sampler, gap_min, T_FLOAT, sampler.gap_min, "0.5", 0, BIG, NULL, "smallest temporal gap of a pair (gap_unit)"),
    F(sampler, gap_max, T_FLOAT, sampler.gap_max, "2.0", 0, BIG, NULL, "largest temporal gap of a pair (gap_unit)"),
    F(sampler, gap_unit, T_ENUM, sampler.gap_unit, "seconds", 0, 0, "seconds|frames", "unit of gap_min and gap_max"),
    F(sampler, pairs_per_video, T_INT, sampler.pairs_per_video, "1", 1, 4096, NULL, "pairs drawn from one opened video"),
    F(sampler, short_video, T_ENUM, sampler.short_video, "clamp", 0, 0, "clamp|skip", "video shorter than gap_min: clamp the gap or skip it (counted)"),
    F(sampler, clip_len, T_INT, sampler.clip_len, "8", 1, 4096, NULL, "frames per clip (clip/multiview)"),
    F(sampler, clip_stride, T_INT, sampler.clip_stride, "4", 0, 1e6, NULL, "frames between clip frames (0 = spread over the video)"),
    F(sampler, num_clips, T_INT, sampler.num_clips, "1", 1, 1024, NULL, "multiview: temporal clips"),
    F(sampler, num_crops, T_INT, sampler.num_crops, "1", 1, 16, NULL, "multiview: spatial crops per clip"),
    F(sampler, scale_min, T_FLOAT, sampler.scale_min, "0.2", 1e-6, 1, NULL, "RandomResizedCrop smallest area fraction"),
    F(sampler, scale_max, T_FLOAT, sampler.scale_max, "1.0", 1e-6, 1, NULL, "RandomResizedCrop largest area fraction"),
    F(sampler, ratio_min, T_FLOAT, sampler.ratio_min, "0.75", 1e-3, 1e3, NULL, "RandomResizedCrop smallest aspect ratio w/h"),
    F(sampler, ratio_max, T_FLOAT, sampler.ratio_max, "1.3333333333", 1e-3, 1e3, NULL, "RandomResizedCrop largest aspect ratio w/h"),
    F(sampler, flip_p, T_FLOAT, sampler.flip_p, "0.5", 0, 1, NULL, "horizontal flip probability"),
    F(sampler, aug_preset, T_ENUM, sampler.aug_preset, "none", 0, 0, "none|simclr|byol", "colour augmentation preset: simclr and byol replace the jitter_*, grayscale_p, blur_p and solarize_p keys (ignored then) by the official recipes"),
    F(sampler, jitter_p, T_FLOAT, sampler.jitter_p, "0", 0, 1, NULL, "colour jitter probability"),
    F(sampler, jitter_brightness, T_FLOAT, sampler.jitter_brightness, "0.4", 0, 10, NULL, "colour jitter brightness"),
    F(sampler, jitter_contrast, T_FLOAT, sampler.jitter_contrast, "0.4", 0, 10, NULL, "colour jitter contrast"),
    F(sampler, jitter_saturation, T_FLOAT, sampler.jitter_saturation, "0.2", 0, 10, NULL, "colour jitter saturation"),
    F(sampler, jitter_hue, T_FLOAT, sampler.jitter_hue, "0.1", 0, 0.5, NULL, "colour jitter hue"),
    F(sampler, grayscale_p, T_FLOAT, sampler.grayscale_p, "0", 0, 1, NULL, "grayscale probability"),
    F(sampler, blur_p, T_FLOAT, sampler.blur_p, "0", 0, 1, NULL, "Gaussian blur probability"),
    F(sampler, solarize_p, T_FLOAT, sampler.solarize_p, "0", 0, 1, NULL, "solarisation probability"),

    F(pipeline, endpoint, T_STR, pipeline.endpoint, "tcp://127.0.0.1:5557", 0, 0, NULL, "endpoint the trainer binds and workers connect to"),
    F(pipeline, workers, T_INT, pipeline.workers, "0", 0, 1024, NULL, "local workers of `vicmae run` (0 = cores - 1, at least 1)"),
    F(pipeline, chunk_samples, T_INT, pipeline.chunk_samples, "4", 1, 4096, NULL, "samples per message from a worker"),
    F(pipeline, credits, T_INT, pipeline.credits, "16", 1, 65536, NULL, "messages in flight per worker (bounds memory on both sides)"),
    F(pipeline, heartbeat_ms, T_INT, pipeline.heartbeat_ms, "1000", 10, 3.6e6, NULL, "worker heartbeat period"),
    F(pipeline, lease_timeout_ms, T_INT, pipeline.lease_timeout_ms, "10000", 100, 3.6e7, NULL, "re-issue a worker's units after this long without a heartbeat"),
    F(pipeline, codec, T_ENUM, pipeline.codec, "lz4", 0, 0, "lz4|none", "payload codec on the wire"),
    F(pipeline, epochs, T_INT, pipeline.epochs, "0", 0, 1e9, NULL, "stop after this many epochs (0 = optim.epochs)"),
    F(pipeline, ordered, T_BOOL, pipeline.ordered, "true", 0, 0, NULL, "deliver samples in the epoch's unit order (seed, epoch), chunk by chunk, holding early chunks: batches identical for any number of workers"),
    F(pipeline, curve_secret_key, T_STR, pipeline.curve_secret_key, "", 0, 0, NULL, "the trainer's key pair file (`vicmae keygen NAME` writes NAME.key_secret, mode 0600): the wire is then encrypted (ZeroMQ CURVE) and only workers with an admitted key join; empty = plaintext, anyone who reaches the endpoint may join"),
    F(pipeline, curve_clients, T_STR, pipeline.curve_clients, "", 0, 0, NULL, "the workers' public keys admitted with curve_secret_key: a file of `public-key = KEY` lines (e.g. cat worker*.key) or a directory of *.key files, read at start"),

    F(model, img_size, T_INT, model.img_size, "224", 8, 4096, NULL, "input resolution (square)"),
    F(model, patch_size, T_INT, model.patch_size, "16", 1, 256, NULL, "patch size P"),
    F(model, embed_dim, T_INT, model.embed_dim, "768", 1, 16384, NULL, "encoder width D"),
    F(model, depth, T_INT, model.depth, "12", 1, 256, NULL, "encoder blocks"),
    F(model, num_heads, T_INT, model.num_heads, "12", 1, 256, NULL, "encoder attention heads"),
    F(model, decoder_embed_dim, T_INT, model.decoder_embed_dim, "512", 1, 16384, NULL, "decoder width"),
    F(model, decoder_depth, T_INT, model.decoder_depth, "8", 1, 256, NULL, "decoder blocks"),
    F(model, decoder_num_heads, T_INT, model.decoder_num_heads, "16", 1, 256, NULL, "decoder attention heads"),
    F(model, mlp_ratio, T_FLOAT, model.mlp_ratio, "4.0", 0.1, 64, NULL, "MLP hidden size / width"),
    F(model, mask_ratio, T_FLOAT, model.mask_ratio, "0.75", 0, 0.99, NULL, "fraction of patches masked per view"),
    F(model, norm_pix_loss, T_BOOL, model.norm_pix_loss, "true", 0, 0, NULL, "normalise each target patch by its mean and variance"),
    F(model, pool, T_ENUM, model.pool, "mean", 0, 0, "mean|cls", "global feature: mean of patch tokens or class token"),
    F(model, proj_hidden_dim, T_INT, model.proj_hidden_dim, "4096", 1, 65536, NULL, "projector hidden size"),
    F(model, proj_out_dim, T_INT, model.proj_out_dim, "128", 1, 65536, NULL, "projector output size"),
    F(model, pred_hidden_dim, T_INT, model.pred_hidden_dim, "512", 1, 65536, NULL, "SimSiam predictor hidden size"),

    F(loss, contrastive, T_ENUM, loss.contrastive, "infonce", 0, 0, "infonce|simsiam|vicreg|none", "contrastive loss across the two views"),
    F(loss, temperature, T_FLOAT, loss.temperature, "0.1", 1e-4, 100, NULL, "InfoNCE temperature"),
    F(loss, w_rec, T_FLOAT, loss.w_rec, "0.97", 0, 1e6, NULL, "weight of the reconstruction loss"),
    F(loss, w_con, T_FLOAT, loss.w_con, "0.03", 0, 1e6, NULL, "target weight of the contrastive loss"),
    F(loss, con_warmup_steps, T_INT, loss.con_warmup_steps, "0", 0, 1e9, NULL, "steps over which w_con rises from 0 (0 = constant)"),
    F(loss, con_warmup_shape, T_ENUM, loss.con_warmup_shape, "linear", 0, 0, "linear|cosine", "shape of the w_con ramp"),
    F(loss, vicreg_sim, T_FLOAT, loss.vicreg_sim, "25", 0, 1e6, NULL, "VICReg invariance weight"),
    F(loss, vicreg_var, T_FLOAT, loss.vicreg_var, "25", 0, 1e6, NULL, "VICReg variance weight"),
    F(loss, vicreg_cov, T_FLOAT, loss.vicreg_cov, "1", 0, 1e6, NULL, "VICReg covariance weight"),

    F(optim, batch_size, T_INT, optim.batch_size, "64", 1, 1e6, NULL, "pairs per step"),
    F(optim, base_lr, T_FLOAT, optim.base_lr, "1.5e-4", 0, 10, NULL, "lr = base_lr * batch_size / 256"),
    F(optim, min_lr, T_FLOAT, optim.min_lr, "0", 0, 10, NULL, "floor of the cosine schedule"),
    F(optim, weight_decay, T_FLOAT, optim.weight_decay, "0.05", 0, 10, NULL, "AdamW decoupled weight decay"),
    F(optim, beta1, T_FLOAT, optim.beta1, "0.9", 0, 0.999999, NULL, "AdamW beta1"),
    F(optim, beta2, T_FLOAT, optim.beta2, "0.95", 0, 0.999999, NULL, "AdamW beta2"),
    F(optim, eps, T_FLOAT, optim.eps, "1e-8", 0, 1, NULL, "AdamW epsilon"),
    F(optim, warmup_steps, T_INT, optim.warmup_steps, "0", 0, 1e9, NULL, "linear lr warmup steps"),
    F(optim, epochs, T_INT, optim.epochs, "1", 1, 1e9, NULL, "epochs to train"),
    F(optim, steps, T_INT, optim.steps, "0", 0, 1e9, NULL, "steps to train (0 = from epochs)"),
    F(optim, clip_grad, T_FLOAT, optim.clip_grad, "0", 0, 1e9, NULL, "clip the global gradient norm (0 = off)"),

    F(train, precision, T_ENUM, train.precision, "fp32", 0, 0, "fp32|bf16", "CUDA matmul precision (CPU is always fp32)"),
    F(train, checkpoint_every, T_INT, train.checkpoint_every, "0", 0, 1e9, NULL, "steps between checkpoints (0 = at the end)"),
    F(train, slots, T_INT, train.slots, "4", 2, 1024, NULL, "batch slots the input feed fills ahead of the steps (pinned on CUDA)"),
    F(train, activations, T_ENUM, train.activations, "fp32", 0, 0, "fp32|bf16", "storage of each block's activations that only feed matrix products (LayerNorm, qkv, attention, fc1, GELU outputs); bf16 needs precision = bf16 and a backend with bf16 activations (CUDA; the CPU stays fp32)"),
    F(train, recompute, T_BOOL, train.recompute, "false", 0, 0, NULL, "recompute each block's LayerNorm and GELU outputs in the backward pass instead of saving them (less activation memory, a few % more compute; same bits)"),
};
#define NFIELDS (sizeof schema / sizeof schema[0])

static const field *find(const char *section, const char *key) {
    for (size_t i = 0; i < NFIELDS; i++)
        if (!strcmp(schema[i].section, section) && !strcmp(schema[i].key, key)) return &schema[i];
    return NULL;
}

static int section_known(const char *section) {
    for (size_t i = 0; i < NFIELDS; i++)
        if (!strcmp(schema[i].section, section)) return 1;
    return 0;
}

// Key list of a section (or the section list), for "allowed" messages.
static void known_names(const char *section, char *buf, size_t cap) {
    size_t n = 0;
    buf[0] = 0;
    for (size_t i = 0; i < NFIELDS && n + 1 < cap; i++) {
        const char *name = section ? schema[i].key : schema[i].section;
        if (section && strcmp(schema[i].section, section)) continue;
        if (!section && i > 0 && !strcmp(schema[i - 1].section, name)) continue;
        n += snprintf(buf + n, cap - n, "%s%s", n ? ", " : "", name);
    }
}

static int enum_index(const char *choices, const char *value) {
    size_t len = strlen(value);
    int idx = 0;
    for (const char *p = choices; *p; idx++) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && !strncasecmp(p, value, n)) return idx;
        if (!bar) break;
        p = bar + 1;
    }
    return -1;
}

static void enum_name(const char *choices, int idx, char *out, size_t cap) {
    const char *p = choices;
    for (int i = 0; i < idx && p; i++) {
        p = strchr(p, '|');
        if (p) p++;
    }
    if (!p) { snprintf(out, cap, "?"); return; }
    const char *bar = strchr(p, '|');
    size_t n = bar ? (size_t)(bar - p) : strlen(p);
    snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), p);
}

static int set_field(vm_config *cfg, const field *f, const char *value, const char *origin, vm_error *err) {
    char *base = (char *)cfg + f->offset;
    char *end = NULL;
    switch (f->type) {
    case T_INT:
    case T_LONG: {
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end || v < f->min || v > f->max)
            return vm_fail(err, VM_EINVAL, "%s: [%s] %s = '%s': expected an integer in [%.0f, %.0f]", origin,
                           f->section, f->key, value, f->min, f->max);
        if (f->type == T_INT) *(int *)base = (int)v;
        else *(long *)base = (long)v;
        return 0;
    }
    case T_FLOAT: {
        errno = 0;
        double v = strtod(value, &end);
        if (errno || end == value || *end || !isfinite(v) || v < f->min || v > f->max)
            return vm_fail(err, VM_EINVAL, "%s: [%s] %s = '%s': expected a number in [%g, %g]", origin, f->section,
                           f->key, value, f->min, f->max);
        *(double *)base = v;
        return 0;
    }
    case T_BOOL: {
        static const char *yes[] = {"1", "true", "yes", "on"}, *no[] = {"0", "false", "no", "off"};
        for (int i = 0; i < 4; i++) {
            if (!strcasecmp(value, yes[i])) { *(int *)base = 1; return 0; }
            if (!strcasecmp(value, no[i])) { *(int *)base = 0; return 0; }
        }
        return vm_fail(err, VM_EINVAL, "%s: [%s] %s = '%s': expected true or false", origin, f->section, f->key, value);
    }
    case T_STR:
        if (strlen(value) >= f->size)
            return vm_fail(err, VM_EINVAL, "%s: [%s] %s: value longer than %zu characters", origin, f->section, f->key,
                           f->size - 1);
        snprintf(base, f->size, "%s", value);
        return 0;
    case T_ENUM: {
        int idx = enum_index(f->choices, value);
        if (idx < 0)
            return vm_fail(err, VM_EINVAL, "%s: [%s] %s = '%s': allowed values are %s", origin, f->section, f->key,
                           value, f->choices);
        *(int *)base = idx;
        return 0;
    }
    }
    return vm_fail(err, VM_EINVAL, "internal: bad field type");
}

void vm_config_defaults(vm_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < NFIELDS; i++) {
        int rc = set_field(cfg, &schema[i], schema[i].def, "default", NULL);
        (void)rc;  // defaults are checked by the config tests
    }
}

int vm_config_set(vm_config *cfg, const char *section, const char *key, const char *value, const char *origin,
                  vm_error *err) {
    const field *f = find(section, key);
    if (!f) {
        char names[2048];
        if (!section_known(section)) {
            known_names(NULL, names, sizeof names);
            return vm_fail(err, VM_EINVAL, "%s: unknown section [%s]; sections are: %s", origin, section, names);
        }
        known_names(section, names, sizeof names);
        return vm_fail(err, VM_EINVAL, "%s: unknown key '%s' in [%s]; keys are: %s", origin, key, section, names);
    }
    return set_field(cfg, f, value, origin, err);
}

typedef struct {
    vm_config *cfg;
    const char *path;
    vm_error *err;
    int failed;
    FILE *fp;          // source: a file, or
    const char *text;  // a string (advanced as it is read)
    int lineno;        // lines read so far: Debian's inih does not pass line numbers to the handler
    int seen[NFIELDS]; // line that set each key (0: not yet): a key set twice is an error
} load_ctx;

static char *count_lines_reader(char *buf, int size, void *stream) {
    load_ctx *ctx = stream;
    char *r;
    if (ctx->fp) {
        r = fgets(buf, size, ctx->fp);
    } else {
        if (!*ctx->text || size < 2) return NULL;
        const char *nl = strchr(ctx->text, '\n');
        size_t n = nl ? (size_t)(nl - ctx->text) + 1 : strlen(ctx->text);
        if (n > (size_t)size - 1) n = (size_t)size - 1;
        memcpy(buf, ctx->text, n);
        buf[n] = 0;
        ctx->text += n;
        r = buf;
    }
    if (r) ctx->lineno++;
    // inih calls no handler for a section header: an unknown section without keys (a typo of a
    // section the keys below were meant for, or commented-out keys) would pass unnoticed.
    if (r && r[0] == '[' && !ctx->failed) {
        const char *end = strchr(r, ']');
        char name[64];
        if (end && (size_t)(end - r - 1) < sizeof name) {
            snprintf(name, sizeof name, "%.*s", (int)(end - r - 1), r + 1);
            if (!section_known(name)) {
                char names[256];
                known_names(NULL, names, sizeof names);
                vm_fail(ctx->err, VM_EINVAL, "%s:%d: unknown section [%s]; sections are: %s", ctx->path, ctx->lineno,
                        name, names);
                ctx->failed = 1;
            }
        }
    }
    return r;
}

static int on_key(void *user, const char *section, const char *name, const char *value) {
    load_ctx *ctx = user;
    int lineno = ctx->lineno;
    if (ctx->failed) return 1;  // report only the first error
    char origin[VM_PATH_MAX + 32];
    snprintf(origin, sizeof origin, "%s:%d", ctx->path, lineno);
    if (!name) return 1;  // a section header alone
    if (!*section) {
        vm_fail(ctx->err, VM_EINVAL, "%s: key '%s' outside any [section]", origin, name);
        ctx->failed = 1;
        return 1;
    }
    // A key given twice in one file is refused: the first value would be silently lost (a
    // copy-and-edit slip, or an indented line that inih reads as a continuation of the key above).
    const field *f = find(section, name);
    if (f && ctx->seen[f - schema]) {
        vm_fail(ctx->err, VM_EINVAL, "%s: [%s] %s is set again (first on line %d); a key may appear once per file",
                origin, section, name, ctx->seen[f - schema]);
        ctx->failed = 1;
        return 1;
    }
    if (vm_config_set(ctx->cfg, section, name, value, origin, ctx->err)) ctx->failed = 1;
    else ctx->seen[f - schema] = lineno;
    return 1;
}

int vm_config_load(vm_config *cfg, const char *path, vm_error *err) {
    FILE *fp = fopen(path, "r");
    if (!fp) return vm_fail(err, VM_EIO, "%s: %s", path, strerror(errno));
    load_ctx ctx = {cfg, path, err, 0, fp, NULL, 0, {0}};
    int rc = ini_parse_stream(count_lines_reader, &ctx, on_key, &ctx);
    fclose(fp);
    if (ctx.failed) return VM_EINVAL;
    if (rc > 0) return vm_fail(err, VM_EINVAL, "%s:%d: syntax error (expected [section] or key = value)", path, rc);
    if (rc < 0) return vm_fail(err, VM_EIO, "%s: could not be read", path);
    return 0;
}

int vm_config_load_text(vm_config *cfg, const char *text, const char *origin, vm_error *err) {
    load_ctx ctx = {cfg, origin, err, 0, NULL, text, 0, {0}};
    int rc = ini_parse_stream(count_lines_reader, &ctx, on_key, &ctx);
    if (ctx.failed) return VM_EINVAL;
    if (rc > 0) return vm_fail(err, VM_EINVAL, "%s:%d: syntax error (expected [section] or key = value)", origin, rc);
    return 0;
}

int vm_config_from_text(vm_config *cfg, const char *text, const char *origin, vm_error *err) {
    vm_config_defaults(cfg);
    int rc = vm_config_load_text(cfg, text, origin, err);
    return rc ? rc : vm_config_validate(cfg, err);
}

int vm_config_to_text(const vm_config *cfg, char **text, size_t *len, vm_error *err) {
    size_t n = 0;
    *text = NULL;
    FILE *fp = open_memstream(text, &n);
    if (!fp) return vm_fail(err, VM_ENOMEM, "config text: out of memory");
    vm_config_print(cfg, fp);
    if (fclose(fp) != 0 || !*text) {
        free(*text);
        *text = NULL;
        return vm_fail(err, VM_ENOMEM, "config text: out of memory");
    }
    if (len) *len = n;
    return 0;
}

int vm_config_override(vm_config *cfg, const char *assignment, vm_error *err) {
    char buf[VM_PATH_MAX + 256];
    snprintf(buf, sizeof buf, "%s", assignment);
    char *eq = strchr(buf, '='), *dot = strchr(buf, '.');
    if (!eq || !dot || dot > eq)
        return vm_fail(err, VM_EINVAL, "--set '%s': expected section.key=value", assignment);
    *eq = 0;
    *dot = 0;
    char origin[VM_PATH_MAX + 300];
    snprintf(origin, sizeof origin, "--set %s", assignment);
    return vm_config_set(cfg, buf, dot + 1, eq + 1, origin, err);
}

int vm_config_validate(const vm_config *c, vm_error *err) {
    if (c->model.img_size % c->model.patch_size)
        return vm_fail(err, VM_EINVAL, "[model] img_size %d is not a multiple of patch_size %d", c->model.img_size,
                       c->model.patch_size);
    if (c->model.embed_dim % c->model.num_heads)
        return vm_fail(err, VM_EINVAL, "[model] embed_dim %d is not a multiple of num_heads %d", c->model.embed_dim,
                       c->model.num_heads);
    if (c->model.decoder_embed_dim % c->model.decoder_num_heads)
        return vm_fail(err, VM_EINVAL, "[model] decoder_embed_dim %d is not a multiple of decoder_num_heads %d",
                       c->model.decoder_embed_dim, c->model.decoder_num_heads);
    int L = (c->model.img_size / c->model.patch_size) * (c->model.img_size / c->model.patch_size);
    if ((int)(L * (1.0 - c->model.mask_ratio)) < 1)
        return vm_fail(err, VM_EINVAL, "[model] mask_ratio %g keeps no patch of %d", c->model.mask_ratio, L);
    if (c->sampler.gap_min > c->sampler.gap_max)
        return vm_fail(err, VM_EINVAL, "[sampler] gap_min %g is larger than gap_max %g", c->sampler.gap_min,
                       c->sampler.gap_max);
    if (c->sampler.scale_min > c->sampler.scale_max)
        return vm_fail(err, VM_EINVAL, "[sampler] scale_min %g is larger than scale_max %g", c->sampler.scale_min,
                       c->sampler.scale_max);
    if (c->sampler.ratio_min > c->sampler.ratio_max)
        return vm_fail(err, VM_EINVAL, "[sampler] ratio_min %g is larger than ratio_max %g", c->sampler.ratio_min,
                       c->sampler.ratio_max);
    if (c->train.activations == VM_ACT_BF16 && c->train.precision != VM_PREC_BF16)
        return vm_fail(err, VM_EINVAL, "[train] activations = bf16 needs precision = bf16 (bf16 activations feed bf16 "
                       "matrix products)");
    if (c->pipeline.curve_clients[0] && !c->pipeline.curve_secret_key[0])
        return vm_fail(err, VM_EINVAL, "[pipeline] curve_clients is set but curve_secret_key is empty: worker keys are "
                       "checked only when CURVE is on (set curve_secret_key to the trainer's .key_secret file from "
                       "`vicmae keygen`)");
    if (c->loss.contrastive == VM_CON_INFONCE && c->optim.batch_size < 2)
        return vm_fail(err, VM_EINVAL, "[optim] batch_size %d: InfoNCE needs at least 2 pairs for negatives",
                       c->optim.batch_size);
    return 0;
}

static void format_value(const vm_config *cfg, const field *f, char *out, size_t cap) {
    const char *base = (const char *)cfg + f->offset;
    switch (f->type) {
    case T_INT: snprintf(out, cap, "%d", *(const int *)base); break;
    case T_LONG: snprintf(out, cap, "%ld", *(const long *)base); break;
    case T_FLOAT: {  // shortest text that reads back to the same double
        double v = *(const double *)base;
        for (int prec = 6; prec <= 17; prec++) {
            snprintf(out, cap, "%.*g", prec, v);
            if (strtod(out, NULL) == v) break;
        }
        break;
    }
    case T_BOOL: snprintf(out, cap, "%s", *(const int *)base ? "true" : "false"); break;
    case T_STR: snprintf(out, cap, "%s", base); break;
    case T_ENUM: enum_name(f->choices, *(const int *)base, out, cap); break;
    }
}

void vm_config_print(const vm_config *cfg, FILE *out) {
    const char *section = "";
    for (size_t i = 0; i < NFIELDS; i++) {
        const field *f = &schema[i];
        if (strcmp(section, f->section)) {
            fprintf(out, "%s[%s]\n", i ? "\n" : "", f->section);
            section = f->section;
        }
        char v[VM_PATH_MAX];
        format_value(cfg, f, v, sizeof v);
        fprintf(out, "%s = %s\n", f->key, v);
    }
}

void vm_config_print_schema(FILE *out) {
    static const char *tn[] = {"int", "int", "float", "bool", "string", "enum"};
    for (size_t i = 0; i < NFIELDS; i++) {
        const field *f = &schema[i];
        char allowed[256];
        if (f->type == T_ENUM) snprintf(allowed, sizeof allowed, "%s", f->choices);
        else if (f->type == T_INT || f->type == T_LONG) snprintf(allowed, sizeof allowed, "[%.0f, %.0f]", f->min, f->max);
        else if (f->type == T_FLOAT) snprintf(allowed, sizeof allowed, "[%g, %g]", f->min, f->max);
        else if (f->type == T_BOOL) snprintf(allowed, sizeof allowed, "true|false");
        else snprintf(allowed, sizeof allowed, "text");
        fprintf(out, "%s.%s\t%s\tdefault %s\t%s\t%s\n", f->section, f->key, tn[f->type], f->def[0] ? f->def : "\"\"",
                allowed, f->help);
    }
}

const char *vm_config_enum_name(const char *section, const char *key, int value) {
    static __thread char buf[64];
    const field *f = find(section, key);
    if (!f || f->type != T_ENUM) return "?";
    enum_name(f->choices, value, buf, sizeof buf);
    return buf;
}
