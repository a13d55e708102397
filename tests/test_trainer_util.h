// tests/test_trainer_util.h — helpers of the training-loop tests (test_trainer_loop.c,
// test_trainer_resume.c, test_trainer_resume_run.c, test_cuda_train.c): a tiny configuration, a
// directory of stored proto batch files whose pixels have structure the model can learn, the set-up
// of a run that replays them, and comparisons of two run directories.
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common/config.h"
#include "common/rng.h"
#include "proto/proto.h"
#include "tests/harness.h"
#include "tests/test_binary_util.h"
#include "trainer/loop.h"
#include "trainer/safetensors.h"

// <test's temporary directory>/name into out.
static __attribute__((unused)) void loop_subdir(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", vt_tmpdir(), name);
}

// configs/tiny.ini values (tests must not depend on the working directory), 1 thread, no warmups.
static __attribute__((unused)) vm_config loop_tiny(const char *out_dir) {
    vm_config c;
    vm_config_defaults(&c);
    c.run.threads = 1, c.run.seed = 7, c.run.log_every = 1000;
    snprintf(c.run.out_dir, sizeof c.run.out_dir, "%s", out_dir);
    c.model.img_size = 32, c.model.patch_size = 8, c.model.embed_dim = 32, c.model.depth = 2;
    c.model.num_heads = 2, c.model.decoder_embed_dim = 16, c.model.decoder_depth = 1;
    c.model.decoder_num_heads = 2, c.model.mlp_ratio = 2.0, c.model.proj_hidden_dim = 32;
    c.model.proj_out_dim = 16, c.model.pred_hidden_dim = 16;
    c.optim.batch_size = 4, c.optim.base_lr = 1e-3, c.optim.epochs = 2, c.optim.warmup_steps = 2;
    c.loss.con_warmup_steps = 3;
    return c;
}

// Pair n of seed: a smooth two-colour gradient with a bright square whose place moves a little
// between the two views (what a video's frames do), so that reconstruction has something to learn.
static __attribute__((unused)) void loop_pair(uint8_t *px, int S, uint64_t seed, int n) {
    vm_rng g;
    vm_rng_init(&g, seed, (uint64_t)n);
    int c0[3], c1[3];
    for (int c = 0; c < 3; c++) c0[c] = (int)vm_rng_int(&g, 0, 255), c1[c] = (int)vm_rng_int(&g, 0, 255);
    int sq = S / 4, x0 = (int)vm_rng_int(&g, 0, S - sq - 2), y0 = (int)vm_rng_int(&g, 0, S - sq - 2);
    for (int v = 0; v < 2; v++)
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++)
                for (int c = 0; c < 3; c++) {
                    int val = c0[c] + (c1[c] - c0[c]) * (x + y) / (2 * S - 2);
                    if (x >= x0 + v && x < x0 + v + sq && y >= y0 + v && y < y0 + v + sq) val = 255 - val / 4;
                    px[(((size_t)v * S + y) * S + x) * 3 + c] = (uint8_t)val;
                }
}

// Write nfiles proto batch files of per_file pairs of S x S into dir (created).
static __attribute__((unused)) void loop_write_batches(const char *dir, int nfiles, int per_file, int S, uint64_t seed) {
    mkdir(dir, 0755);
    vm_batch_header h = {.batch = (uint32_t)per_file, .views = 2, .height = (uint32_t)S, .width = (uint32_t)S,
                         .codec = VM_BATCH_CODEC_LZ4};
    size_t sb = (size_t)2 * S * S * 3, cap = vm_batch_max_size(&h), len;
    uint8_t *px = malloc(sb * per_file), *msg = malloc(cap);
    vm_sample_meta *sm = calloc((size_t)per_file, sizeof *sm);
    vm_view_meta *vmeta = calloc((size_t)per_file * 2, sizeof *vmeta);
    CHECK(px && msg && sm && vmeta);
    vm_error err = {0};
    for (int f = 0; f < nfiles; f++) {
        for (int b = 0; b < per_file; b++) loop_pair(px + b * sb, S, seed, f * per_file + b);
        h.sequence = (uint64_t)f;
        CHECK_OK(vm_batch_encode(&h, sm, vmeta, px, msg, cap, &len, &err), err);
        char path[1024];
        snprintf(path, sizeof path, "%s/batch-%04d.vmb", dir, f);
        CHECK_OK(vm_batch_file_write(path, msg, len, &err), err);
    }
    free(px), free(msg), free(sm), free(vmeta);
}

// read_whole_file (test_binary_util.h) under the name test_trainer_loop.c and test_trainer_resume.c
// still call it by.
static __attribute__((unused)) char *loop_slurp(const char *path, size_t *len) { return read_whole_file(path, len); }

// metrics.jsonl with the timing fields ("step_s", "wait_s", "time_s": the rest of each line) cut off,
// so that two runs can be compared byte for byte.
static __attribute__((unused)) char *loop_metrics_without_times(const char *run_dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    char *s = read_whole_file(path, NULL);
    if (!s) return NULL;
    char *out = malloc(strlen(s) + 1), *o = out;
    for (char *line = s; *line;) {
        char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        char *cut = strstr(line, ", \"step_s\"");
        if (cut && cut < line + n) n = (size_t)(cut - line);
        memcpy(o, line, n), o += n, *o++ = '\n';
        line += nl ? (size_t)(nl - line) + 1 : strlen(line);
    }
    *o = 0;
    free(s);
    return out;
}

static __attribute__((unused)) int loop_count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

// Two safetensors files hold the same tensors bitwise and the same metadata except "config" (which
// names the run directory).
static __attribute__((unused)) void loop_same_checkpoint(const char *pa, const char *pb) {
    vm_st_file *a, *b;
    vm_error err = {0};
    CHECK_OK(vm_st_read(&a, pa, &err), err);
    CHECK_OK(vm_st_read(&b, pb, &err), err);
    CHECK_EQ_INT(vm_st_count(a), vm_st_count(b));
    for (int i = 0; i < vm_st_count(a); i++) {
        const vm_st_tensor *ta = vm_st_get(a, i), *tb = vm_st_find(b, ta->name);
        CHECK(tb && !strcmp(ta->dtype, tb->dtype) && ta->nbytes == tb->nbytes, "%s: %s differs", pb, ta->name);
        CHECK(!memcmp(ta->data, tb->data, ta->nbytes), "%s and %s: tensor %s differs", pa, pb, ta->name);
    }
    static const char *keys[] = {"format", "step", "total_steps", "seed", "data_epoch", "data_epoch_sample",
                                 "data_samples", "checksum"};
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
        const char *ma = vm_st_meta(a, keys[k]), *mb = vm_st_meta(b, keys[k]);
        CHECK((!ma && !mb) || (ma && mb && !strcmp(ma, mb)), "%s: metadata %s differs", pb, keys[k]);
    }
    vm_st_close(a), vm_st_close(b);
}

// Two run directories hold the same file name (a safetensors checkpoint), as loop_same_checkpoint says.
static __attribute__((unused)) void loop_same_run_file(const char *a_dir, const char *b_dir, const char *name) {
    char pa[1100], pb[1100];
    snprintf(pa, sizeof pa, "%s/%s", a_dir, name);
    snprintf(pb, sizeof pb, "%s/%s", b_dir, name);
    loop_same_checkpoint(pa, pb);
}

// Two run directories wrote the same metrics.jsonl but for the timing fields; with lines > 0, that
// many steps each.
static __attribute__((unused)) void loop_same_metrics(const char *a_dir, const char *b_dir, int lines) {
    char *a = loop_metrics_without_times(a_dir), *b = loop_metrics_without_times(b_dir);
    CHECK(a && b);
    if (lines > 0) CHECK_EQ_INT(loop_count_lines(a), lines);
    CHECK(!strcmp(a, b), "metrics differ:\n%s---\n%s", a, b);
    free(a), free(b);
}

// A training run on replayed batch files, as most loop tests set one up.  The test writes the
// batches into data (loop_write_batches), may change cfg and o, then trains (loop_replay_train).
typedef struct {
    char data[1024];    // <tmpdir>/<name>-data: the batch files (not created here)
    char run[1024];     // <tmpdir>/<name>-run: the run directory, cfg.run.out_dir to begin with
    vm_config cfg;      // loop_tiny(run)
    vm_train_opts o;    // the defaults, replaying data, quiet (o.replay_dir points into this struct)
} loop_replay;

static __attribute__((unused)) void loop_replay_setup(loop_replay *t, const char *name) {
    char sub[1024];
    snprintf(sub, sizeof sub, "%s-data", name);
    loop_subdir(t->data, sizeof t->data, sub);
    snprintf(sub, sizeof sub, "%s-run", name);
    loop_subdir(t->run, sizeof t->run, sub);
    t->cfg = loop_tiny(t->run);
    vm_train_opts_default(&t->o);
    t->o.replay_dir = t->data, t->o.quiet = 1;
}

// Train t->cfg with t->o; a failure ends the test with the reason.  The result of the run.
static __attribute__((unused)) vm_train_result loop_replay_train(const loop_replay *t) {
    vm_train_result r;
    vm_error err = {0};
    CHECK_OK(vm_train(&t->cfg, &t->o, &r, &err), err);
    return r;
}

// The same into another run directory (which stays cfg.run.out_dir for the runs after).
static __attribute__((unused)) vm_train_result loop_replay_train_in(loop_replay *t, const char *run_dir) {
    snprintf(t->cfg.run.out_dir, sizeof t->cfg.run.out_dir, "%s", run_dir);
    return loop_replay_train(t);
}

// The vicmae-trainer binary beside $VICMAE_BIN into out (for the command-line tests); skips the
// test where it is not set or not built.
static __attribute__((unused)) void loop_trainer_bin(char *out, size_t cap) {
    const char *bin = getenv("VICMAE_BIN");
    if (!bin) SKIP("VICMAE_BIN not set (tests/run.sh sets it)");
    snprintf(out, cap, "%.*s/vicmae-trainer", (int)(strrchr(bin, '/') ? strrchr(bin, '/') - bin : 1), bin);
    if (access(out, X_OK) != 0) SKIP("%s not built", out);
}
