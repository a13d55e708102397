// Tests of the ViC-MAE model (trainer/model.c) on the CPU backend, tiny configuration:
// tensor table and param groups, MAE initialisation, sin-cos embeddings, schedules, a directional
// finite-difference check of the whole model's gradient, bitwise determinism, checkpoints (round
// trip, corrupt files refused), learning on a fixed batch, and `debug-step` on a proto batch file.
// The exact comparison against PyTorch is tests/test_trainer_torch.py.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common/io.h"
#include "common/rng.h"
#include "proto/proto.h"
#include "tests/harness.h"
#include "trainer/model.h"
#include "trainer/safetensors.h"

#define B 4

static vm_config tiny(const char *contrastive) {
    vm_config cfg;
    vm_error err = {0};
    vm_config_defaults(&cfg);
    CHECK_OK(vm_config_load(&cfg, "configs/tiny.ini", &err), err);
    CHECK_OK(vm_config_set(&cfg, "loss", "contrastive", contrastive, "test", &err), err);
    CHECK_OK(vm_config_set(&cfg, "optim", "batch_size", "4", "test", &err), err);
    CHECK_OK(vm_config_set(&cfg, "run", "seed", "11", "test", &err), err);
    return cfg;
}

static vm_model *make(const vm_config *cfg, const vm_backend_ops *be, uint64_t seed) {
    vm_model *m = NULL;
    vm_error err = {0};
    CHECK_OK(vm_model_create(&m, cfg, be, B, &err), err);
    vm_model_init(m, seed);
    return m;
}

// Smooth random images (B, 2, S, S, 3) from a seed.
static uint8_t *make_views(int S, uint64_t seed) {
    uint8_t *v = malloc((size_t)B * 2 * S * S * 3);
    CHECK(v != NULL);
    vm_rng r;
    vm_rng_init(&r, seed, 1);
    for (int i = 0; i < B * 2; i++) {
        double ph[3] = {vm_rng_uniform(&r) * 6, vm_rng_uniform(&r) * 6, vm_rng_uniform(&r) * 6};
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++)
                for (int c = 0; c < 3; c++) {
                    double val = 128 + 80 * sin(0.3 * x + ph[c]) + 2 * y + 20 * (vm_rng_uniform(&r) - 0.5);
                    v[(((size_t)i * S + y) * S + x) * 3 + c] = (uint8_t)(val < 0 ? 0 : val > 255 ? 255 : val);
                }
    }
    return v;
}

static float *host_copy(vm_model *m, float *dev) {
    size_t bytes = vm_model_num_floats(m) * sizeof(float);
    float *h = malloc(bytes);
    CHECK(h != NULL);
    vm_model_backend(m)->to_host(h, dev, bytes);
    return h;
}

static const vm_tensor_info *must_find(vm_model *m, const char *name) {
    const vm_tensor_info *t = vm_model_find(m, name);
    CHECK(t != NULL, "tensor %s missing", name);
    return t;
}

TEST(table_order_shapes_and_param_groups) {
    vm_config cfg = tiny("simsiam");
    vm_model *m = make(&cfg, vm_backend_cpu(1), 1);
    const char *first[] = {"cls_token", "pos_embed", "mask_token", "decoder_pos_embed", "patch_embed.proj.weight",
                           "patch_embed.proj.bias", "blocks.0.norm1.weight"};
    for (int i = 0; i < 7; i++) CHECK(!strcmp(vm_model_tensor(m, i)->name, first[i]), "tensor %d is %s", i, vm_model_tensor(m, i)->name);
    int depth = cfg.model.depth, dd = cfg.model.decoder_depth;
    // 6 + blocks + norm 2 + decoder_embed 2 + decoder blocks + decoder_norm 2 + decoder_pred 2
    // + projector (2 + 5 + 2 + 5 + 2) + predictor (1 + 5 + 2)
    CHECK_EQ_INT(vm_model_num_tensors(m), 6 + 12 * depth + 2 + 2 + 12 * dd + 2 + 2 + 16 + 8);
    CHECK(!strcmp(vm_model_tensor(m, vm_model_num_tensors(m) - 1)->name, "predictor.3.bias"));
    const vm_tensor_info *pe = must_find(m, "patch_embed.proj.weight");
    CHECK(pe->ndim == 4 && pe->shape[0] == 32 && pe->shape[1] == 3 && pe->shape[2] == 8 && pe->shape[3] == 8);
    const vm_tensor_info *qkv = must_find(m, "blocks.1.attn.qkv.weight");
    CHECK(qkv->ndim == 2 && qkv->shape[0] == 96 && qkv->shape[1] == 32);
    CHECK(must_find(m, "pos_embed")->shape[1] == 17);
    // MAE's groups: decay for matrices and the (1,1,C) tokens; none for biases and 1-D tensors.
    struct { const char *name; int kind, decay; } want[] = {
        {"cls_token", VM_TENSOR_PARAM, 1}, {"mask_token", VM_TENSOR_PARAM, 1}, {"pos_embed", VM_TENSOR_FIXED, 0},
        {"decoder_pos_embed", VM_TENSOR_FIXED, 0}, {"patch_embed.proj.weight", VM_TENSOR_PARAM, 1},
        {"patch_embed.proj.bias", VM_TENSOR_PARAM, 0}, {"blocks.0.norm1.weight", VM_TENSOR_PARAM, 0},
        {"blocks.0.attn.qkv.bias", VM_TENSOR_PARAM, 0}, {"decoder_blocks.0.mlp.fc2.weight", VM_TENSOR_PARAM, 1},
        {"projector.1.weight", VM_TENSOR_PARAM, 0}, {"projector.1.running_var", VM_TENSOR_RUNNING, 0},
        {"projector.4.num_batches_tracked", VM_TENSOR_COUNTER, 0}, {"predictor.0.weight", VM_TENSOR_PARAM, 1},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const vm_tensor_info *t = must_find(m, want[i].name);
        CHECK(t->kind == want[i].kind && t->decay == want[i].decay, "%s: kind %d decay %d", t->name, t->kind, t->decay);
    }
    CHECK(vm_model_find(m, "predictor.0.bias") == NULL, "SimSiam's first predictor layer has no bias");
    // Tensors do not overlap and lie in the buffer; the trainable count adds up.
    size_t end = 0, trainable = 0;
    for (int i = 0; i < vm_model_num_tensors(m); i++) {
        const vm_tensor_info *t = vm_model_tensor(m, i);
        if (t->kind == VM_TENSOR_COUNTER) continue;
        CHECK(t->offset >= end && t->offset + t->numel <= vm_model_num_floats(m), "%s overlaps", t->name);
        end = t->offset + t->numel;
        if (t->kind == VM_TENSOR_PARAM) trainable += t->numel;
    }
    CHECK_EQ_INT(trainable, vm_model_num_trainable(m));
    vm_model_free(m);
    // Without SimSiam there is no predictor.
    cfg = tiny("infonce");
    m = make(&cfg, vm_backend_cpu(1), 1);
    CHECK(vm_model_find(m, "predictor.0.weight") == NULL);
    vm_model_free(m);
}

TEST(init_follows_mae) {
    vm_config cfg = tiny("infonce");
    vm_model *m = make(&cfg, vm_backend_cpu(1), 3);
    float *h = host_copy(m, vm_model_params(m));
    for (int i = 0; i < vm_model_num_tensors(m); i++) {
        const vm_tensor_info *t = vm_model_tensor(m, i);
        const float *w = h + t->offset;
        size_t n = t->numel;
        size_t len = strlen(t->name);
        if (t->kind == VM_TENSOR_COUNTER || t->kind == VM_TENSOR_FIXED) continue;
        double s = 0, ss = 0, mx = 0;
        for (size_t k = 0; k < n; k++) s += w[k], ss += (double)w[k] * w[k], mx = fmax(mx, fabs(w[k]));
        if (len > 5 && !strcmp(t->name + len - 5, ".bias")) {
            CHECK(mx == 0, "%s not zero", t->name);
        } else if (len > 12 && !strcmp(t->name + len - 12, "running_mean")) {
            CHECK(mx == 0, "%s", t->name);
        } else if (t->ndim == 1) {  // LayerNorm / BatchNorm weight, running_var
            CHECK(s == (double)n && ss == (double)n, "%s not ones", t->name);
        } else if (!strcmp(t->name, "cls_token") || !strcmp(t->name, "mask_token")) {
            double sd = sqrt(ss / n);
            CHECK(sd > 0.01 && sd < 0.03, "%s std %g, want ~0.02", t->name, sd);
        } else {
            double fan_out = (double)t->shape[0], fan_in = (double)n / fan_out, a = sqrt(6 / (fan_in + fan_out));
            double sd = sqrt(ss / n - (s / n) * (s / n));
            CHECK(mx <= a, "%s exceeds the xavier bound", t->name);
            CHECK(fabs(sd - a / sqrt(3)) < 0.1 * a / sqrt(3), "%s std %g, xavier uniform wants %g", t->name, sd, a / sqrt(3));
        }
    }
    // Sin-cos: row 0 zeros; patch (i, j): first half encodes the column j, second half the row i.
    const vm_tensor_info *pos = must_find(m, "pos_embed");
    int C = 32, G = 4;
    const float *pe = h + pos->offset;
    for (int k = 0; k < C; k++) CHECK(pe[k] == 0);
    for (int i = 0; i < G; i++)
        for (int j = 0; j < G; j++) {
            const float *row = pe + (size_t)(1 + i * G + j) * C;
            CHECK_NEAR(row[0], sin(j), 1e-6);
            CHECK_NEAR(row[C / 4], cos(j), 1e-6);
            CHECK_NEAR(row[C / 2], sin(i), 1e-6);
            CHECK_NEAR(row[3 * C / 4 + 1], cos(i / pow(10000, 1.0 / (C / 4))), 1e-6);
        }
    // A different seed gives different weights, the same seed the same.
    vm_model *m2 = make(&cfg, vm_backend_cpu(1), 3), *m3 = make(&cfg, vm_backend_cpu(1), 4);
    float *h2 = host_copy(m2, vm_model_params(m2)), *h3 = host_copy(m3, vm_model_params(m3));
    size_t bytes = vm_model_num_floats(m) * sizeof(float);
    CHECK(memcmp(h, h2, bytes) == 0);
    CHECK(memcmp(h, h3, bytes) != 0);
    free(h), free(h2), free(h3);
    vm_model_free(m), vm_model_free(m2), vm_model_free(m3);
}

TEST(schedules) {
    vm_config cfg = tiny("infonce");
    cfg.optim.base_lr = 1e-3, cfg.optim.batch_size = 512, cfg.optim.warmup_steps = 10, cfg.optim.min_lr = 1e-5;
    double peak = 1e-3 * 2;
    CHECK(vm_model_lr(&cfg, 0, 110) == 0);
    CHECK_NEAR(vm_model_lr(&cfg, 5, 110), peak / 2, 1e-12);
    CHECK_NEAR(vm_model_lr(&cfg, 10, 110), peak, 1e-12);
    CHECK_NEAR(vm_model_lr(&cfg, 60, 110), 1e-5 + (peak - 1e-5) * 0.5, 1e-12);
    CHECK_NEAR(vm_model_lr(&cfg, 110, 110), 1e-5, 1e-12);
    CHECK_NEAR(vm_model_lr(&cfg, 500, 0), peak, 1e-12);  // no total: constant after warmup
    cfg.loss.w_con = 0.03, cfg.loss.con_warmup_steps = 0;
    CHECK(vm_model_w_con(&cfg, 0) == 0.03);
    cfg.loss.con_warmup_steps = 100;
    CHECK(vm_model_w_con(&cfg, 0) == 0);
    CHECK_NEAR(vm_model_w_con(&cfg, 25), 0.0075, 1e-12);
    CHECK(vm_model_w_con(&cfg, 100) == 0.03 && vm_model_w_con(&cfg, 1000) == 0.03);
    cfg.loss.con_warmup_shape = VM_WARMUP_COSINE;
    CHECK_NEAR(vm_model_w_con(&cfg, 50), 0.015, 1e-12);
    CHECK_NEAR(vm_model_w_con(&cfg, 25), 0.03 * 0.5 * (1 - cos(M_PI / 4)), 1e-12);
}

static float loss_at(vm_model *m, const uint8_t *views, const float *theta) {
    vm_error err = {0};
    vm_losses ls;
    vm_model_backend(m)->to_device(vm_model_params(m), theta, vm_model_num_floats(m) * sizeof(float));
    CHECK_OK(vm_model_forward_backward(m, views, B, 0, &ls, &err), err);
    return ls.total;
}

// Central differences of the whole model along random directions of the trainable parameters
// versus the gradient's dot product with them (float32 model: a loose but meaningful check; the
// tight one is the PyTorch comparison).
static void directional_check(const char *contrastive) {
    vm_config cfg = tiny(contrastive);
    // InfoNCE's loss is O(1): a large weight makes its branch weigh in.  VICReg's is O(10) (weights
    // 25/25/1): its default weight keeps float32 rounding of the loss below the difference step.
    if (!strcmp(contrastive, "infonce")) cfg.loss.w_con = 0.5;
    vm_model *m = make(&cfg, vm_backend_cpu(1), 5);
    uint8_t *views = make_views(cfg.model.img_size, 9);
    vm_error err = {0};
    vm_losses ls;
    CHECK_OK(vm_model_forward_backward(m, views, B, 0, &ls, &err), err);
    float *theta = host_copy(m, vm_model_params(m)), *g = host_copy(m, vm_model_grads(m));
    size_t n = vm_model_num_floats(m);
    float *d = calloc(n, sizeof(float)), *tp = malloc(n * sizeof(float));
    CHECK(d && tp);
    for (int trial = 0; trial < 3; trial++) {
        vm_rng r;
        vm_rng_init(&r, 100 + trial, 0);
        double gd = 0, dn = 0;
        for (int i = 0; i < vm_model_num_tensors(m); i++) {
            const vm_tensor_info *t = vm_model_tensor(m, i);
            if (t->kind != VM_TENSOR_PARAM) continue;
            for (size_t k = 0; k < t->numel; k++) {
                d[t->offset + k] = (float)vm_rng_normal(&r);
                dn += (double)d[t->offset + k] * d[t->offset + k];
            }
        }
        dn = sqrt(dn);
        for (size_t k = 0; k < n; k++) d[k] = (float)(d[k] / dn), gd += (double)g[k] * d[k];
        const double eps = 2e-3;
        for (size_t k = 0; k < n; k++) tp[k] = theta[k] + (float)eps * d[k];
        double fp = loss_at(m, views, tp);
        for (size_t k = 0; k < n; k++) tp[k] = theta[k] - (float)eps * d[k];
        double fm = loss_at(m, views, tp);
        double fd = (fp - fm) / (2 * eps);
        CHECK(fabs(fd - gd) <= 2e-2 * fabs(gd) + 1e-3, "%s trial %d: finite difference %.6g vs gradient %.6g", contrastive,
              trial, fd, gd);
    }
    free(theta), free(g), free(d), free(tp), free(views);
    vm_model_free(m);
}

TEST(gradient_matches_finite_differences_infonce) { directional_check("infonce"); }
// (Not SimSiam: its stop-gradient makes the gradient differ from the loss's derivative on purpose.)
TEST(gradient_matches_finite_differences_no_contrastive) { directional_check("none"); }
TEST(gradient_matches_finite_differences_vicreg) { directional_check("vicreg"); }

// Run n steps; returns the losses of every step in out (n).
static void train(vm_model *m, const uint8_t *views, int n, vm_losses *out) {
    vm_error err = {0};
    for (int s = 0; s < n; s++) {
        CHECK_OK(vm_model_forward_backward(m, views, B, s, &out[s], &err), err);
        float lr, norm;
        vm_model_optimizer_step(m, s, &lr, &norm);
        CHECK(isfinite(norm) && norm > 0, "step %d: grad norm %g", s, norm);
    }
}

TEST(same_seed_bitwise_same_losses) {
    vm_config cfg = tiny("infonce");
    cfg.optim.clip_grad = 1.0;
    uint8_t *views = make_views(cfg.model.img_size, 2);
    vm_losses a[4], b[4], c[4];
    vm_model *m1 = make(&cfg, vm_backend_cpu(1), 21), *m2 = make(&cfg, vm_backend_cpu(1), 21);
    train(m1, views, 4, a);
    train(m2, views, 4, b);
    CHECK(memcmp(a, b, sizeof a) == 0, "losses differ between identical runs");
    float *p1 = host_copy(m1, vm_model_params(m1)), *p2 = host_copy(m2, vm_model_params(m2));
    CHECK(memcmp(p1, p2, vm_model_num_floats(m1) * sizeof(float)) == 0, "parameters differ between identical runs");
    // Another run.seed draws other masks: other losses.
    cfg.run.seed = 12;
    vm_model *m3 = make(&cfg, vm_backend_cpu(1), 21);
    train(m3, views, 4, c);
    CHECK(c[0].rec != a[0].rec, "mask seed had no effect");
    // The masks keep K = int(L * 0.25) = 4 of 16 patches, distinct, and restore inverts the shuffle.
    const int32_t *keep, *restore;
    int bb, K, L;
    vm_model_last_masks(m3, &keep, &restore, &bb, &K, &L);
    CHECK(bb == B && K == 4 && L == 16);
    for (int s = 0; s < 2 * B; s++) {
        int seen[16] = {0};
        for (int k = 0; k < K; k++) {
            CHECK(keep[s * K + k] >= 0 && keep[s * K + k] < L && !seen[keep[s * K + k]]++);
            CHECK_EQ_INT(restore[s * L + keep[s * K + k]], k);
        }
    }
    free(p1), free(p2), free(views);
    vm_model_free(m1), vm_model_free(m2), vm_model_free(m3);
}

TEST(optimizer_touches_only_trainable_tensors) {
    vm_config cfg = tiny("infonce");
    vm_model *m = make(&cfg, vm_backend_cpu(1), 8);
    uint8_t *views = make_views(cfg.model.img_size, 4);
    float *before = host_copy(m, vm_model_params(m));
    vm_losses ls[1];
    train(m, views, 1, ls);
    float *after = host_copy(m, vm_model_params(m));
    for (int i = 0; i < vm_model_num_tensors(m); i++) {
        const vm_tensor_info *t = vm_model_tensor(m, i);
        if (t->kind == VM_TENSOR_COUNTER) continue;
        int same = memcmp(before + t->offset, after + t->offset, t->numel * sizeof(float)) == 0;
        if (t->kind == VM_TENSOR_FIXED) CHECK(same, "%s changed", t->name);
        else CHECK(!same, "%s did not change", t->name);  // params by AdamW, running stats by BatchNorm
    }
    CHECK_EQ_INT(vm_model_bn_batches(m), 2);
    free(before), free(after), free(views);
    vm_model_free(m);
}

TEST(reconstruction_loss_falls_on_a_fixed_batch) {
    vm_config cfg = tiny("infonce");
    cfg.optim.base_lr = 0.3;  // lr 4.7e-3 at batch 4
    cfg.model.norm_pix_loss = 0;  // the noise in the images makes normalised patches hard to predict
    vm_model *m = make(&cfg, vm_backend_cpu(1), 6);
    uint8_t *views = make_views(cfg.model.img_size, 5);
    enum { N = 40 };
    vm_losses ls[N];
    train(m, views, N, ls);
    double first = 0, last = 0;
    for (int s = 0; s < 5; s++) first += ls[s].rec / 5, last += ls[N - 5 + s].rec / 5;
    CHECK(last < 0.8 * first, "reconstruction loss went from %.4f to %.4f", first, last);
    printf("    reconstruction loss %.4f -> %.4f over %d steps\n", first, last, N);
    free(views);
    vm_model_free(m);
}

TEST(checkpoint_round_trip_and_resume) {
    vm_config cfg = tiny("simsiam");
    uint8_t *views = make_views(cfg.model.img_size, 7);
    vm_model *a = make(&cfg, vm_backend_cpu(1), 30);
    vm_losses ls[3];
    train(a, views, 2, ls);
    char path[4096];
    snprintf(path, sizeof path, "%s/ckpt.safetensors", vt_tmpdir());
    vm_error err = {0};
    const char *meta[] = {"step", "2", NULL};
    CHECK_OK(vm_model_save(a, path, meta, 1, &err), err);
    vm_model *b = make(&cfg, vm_backend_cpu(1), 999);
    CHECK_OK(vm_model_load(b, path, 1, &err), err);
    size_t bytes = vm_model_num_floats(a) * sizeof(float);
    float *pa = host_copy(a, vm_model_params(a)), *pb = host_copy(b, vm_model_params(b));
    float *ma = host_copy(a, vm_model_adam_v(a)), *mb = host_copy(b, vm_model_adam_v(b));
    CHECK(memcmp(pa, pb, bytes) == 0 && memcmp(ma, mb, bytes) == 0);
    CHECK_EQ_INT(vm_model_bn_batches(b), 4);
    // Resuming continues bitwise identically.
    vm_losses la, lb;
    float lra, lrb, na, nb;
    CHECK_OK(vm_model_forward_backward(a, views, B, 2, &la, &err), err);
    vm_model_optimizer_step(a, 2, &lra, &na);
    CHECK_OK(vm_model_forward_backward(b, views, B, 2, &lb, &err), err);
    vm_model_optimizer_step(b, 2, &lrb, &nb);
    CHECK(memcmp(&la, &lb, sizeof la) == 0 && na == nb);
    // The file is plain safetensors with the official names and metadata.
    vm_st_file *f;
    CHECK_OK(vm_st_read(&f, path, &err), err);
    CHECK(!strcmp(vm_st_meta(f, "step"), "2"));
    // the configuration rides along and reads back to the same model
    const char *ini = vm_st_meta(f, "config");
    CHECK(ini && strstr(ini, "contrastive = simsiam"));
    char ipath[4096];
    snprintf(ipath, sizeof ipath, "%s/ckpt.ini", vt_tmpdir());
    CHECK_OK(vm_write_file_atomic(ipath, ini, strlen(ini), &err), err);
    vm_config back;
    vm_config_defaults(&back);
    CHECK_OK(vm_config_load(&back, ipath, &err), err);
    CHECK(!memcmp(&back.model, &cfg.model, sizeof cfg.model) && !memcmp(&back.loss, &cfg.loss, sizeof cfg.loss));
    const vm_st_tensor *t = vm_st_find(f, "blocks.0.attn.qkv.weight");
    CHECK(t && !strcmp(t->dtype, "F32") && t->ndim == 2 && t->shape[0] == 96 && t->shape[1] == 32);
    t = vm_st_find(f, "projector.1.num_batches_tracked");
    CHECK(t && !strcmp(t->dtype, "I64") && t->ndim == 0 && *(const int64_t *)t->data == 4);
    CHECK(vm_st_find(f, "optim.m.cls_token") && !vm_st_find(f, "optim.m.pos_embed"));
    CHECK(!strcmp(vm_st_get(f, 0)->name, "cls_token"));
    vm_st_close(f);
    free(pa), free(pb), free(ma), free(mb), free(views);
    vm_model_free(a), vm_model_free(b);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *fp = fopen(path, "wb");
    CHECK(fp != NULL);
    CHECK(fwrite(data, 1, n, fp) == n);
    fclose(fp);
}

static void *read_bytes(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    CHECK(fp != NULL);
    fseek(fp, 0, SEEK_END);
    *n = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    void *p = malloc(*n);
    CHECK(p && fread(p, 1, *n, fp) == *n);
    fclose(fp);
    return p;
}

// Loading `path` must fail with code and a message containing `why`, leaving the model as it was.
static void refuse(vm_model *m, const char *path, int code, const char *why) {
    vm_error err = {0};
    float *before = host_copy(m, vm_model_params(m));
    int rc = vm_model_load(m, path, 0, &err);
    CHECK(rc == code, "%s: rc %d (want %d): %s", path, rc, code, err.msg);
    CHECK(strstr(err.msg, why) != NULL, "message '%s' does not say '%s'", err.msg, why);
    float *after = host_copy(m, vm_model_params(m));
    CHECK(memcmp(before, after, vm_model_num_floats(m) * sizeof(float)) == 0, "a refused file changed the model");
    free(before), free(after);
}

TEST(corrupt_checkpoints_are_refused) {
    vm_config cfg = tiny("infonce");
    vm_model *m = make(&cfg, vm_backend_cpu(1), 40);
    const char *dir = vt_tmpdir();
    char good[4096], bad[4096];
    snprintf(good, sizeof good, "%s/good.safetensors", dir);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    vm_error err = {0};
    CHECK_OK(vm_model_save(m, good, NULL, 0, &err), err);
    size_t n;
    unsigned char *buf = read_bytes(good, &n);
    vm_model *other = make(&cfg, vm_backend_cpu(1), 41);
    // truncated data
    write_bytes(bad, buf, n - 100);
    refuse(other, bad, VM_ECORRUPT, "outside");
    // truncated header / absurd header length
    write_bytes(bad, buf, 5);
    refuse(other, bad, VM_ECORRUPT, "8-byte");
    unsigned char *hb = malloc(n);
    memcpy(hb, buf, n);
    uint64_t huge = 1ull << 40;
    memcpy(hb, &huge, 8);
    write_bytes(bad, hb, n);
    refuse(other, bad, VM_ECORRUPT, "header length");
    // broken JSON
    memcpy(hb, buf, n);
    hb[8] = '[';
    hb[9] = '!';
    write_bytes(bad, hb, n);
    refuse(other, bad, VM_ECORRUPT, "JSON");
    // a shape that does not match its bytes
    memcpy(hb, buf, n);
    char *s = memmem(hb, n, "\"shape\":[1,1,32]", 16);
    CHECK(s != NULL);
    memcpy(s, "\"shape\":[1,2,32]", 16);
    write_bytes(bad, hb, n);
    refuse(other, bad, VM_ECORRUPT, "bytes for");
    // another model's checkpoint: shape mismatch named
    vm_config big = cfg;
    big.model.embed_dim = 64;
    vm_model *bm = make(&big, vm_backend_cpu(1), 1);
    CHECK_OK(vm_model_save(bm, bad, NULL, 0, &err), err);
    refuse(other, bad, VM_EINVAL, "cls_token has shape (1, 1, 64), the configured model needs (1, 1, 32)");
    // optimizer state requested but absent
    CHECK(vm_model_load(other, good, 1, &err) == VM_ECORRUPT && strstr(err.msg, "optim.m.cls_token"), "%s", err.msg);
    // not a file at all
    snprintf(bad, sizeof bad, "%s/missing.safetensors", dir);
    CHECK(vm_model_load(other, bad, 0, &err) == VM_EIO);
    // and the good one loads
    CHECK_OK(vm_model_load(other, good, 0, &err), err);
    free(buf), free(hb);
    vm_model_free(m), vm_model_free(other), vm_model_free(bm);
}

TEST(batch_validation) {
    vm_config cfg = tiny("infonce");
    vm_model *m = make(&cfg, vm_backend_cpu(1), 1);
    uint8_t *views = make_views(cfg.model.img_size, 1);
    vm_error err = {0};
    vm_losses ls;
    CHECK(vm_model_forward_backward(m, views, B + 1, 0, &ls, &err) == VM_EINVAL);
    CHECK(vm_model_forward_backward(m, views, 1, 0, &ls, &err) == VM_EINVAL && strstr(err.msg, "at least 2"));
    CHECK_OK(vm_model_forward_backward(m, views, 2, 0, &ls, &err), err);  // a smaller batch is fine
    vm_model_free(m);
    cfg.model.embed_dim = 30, cfg.model.num_heads = 2;
    CHECK(vm_model_create(&m, &cfg, vm_backend_cpu(1), B, &err) == VM_EINVAL && strstr(err.msg, "multiples of 4"));
    free(views);
}

// `vicmae debug-step` on a proto batch file gives the losses that the model API gives.
TEST(debug_step_reads_proto_batches) {
    const char *bin = getenv("VICMAE_BIN");
    char trainer[4096];
    if (!bin) SKIP("VICMAE_BIN not set (tests/run.sh sets it)");
    snprintf(trainer, sizeof trainer, "%.*s/vicmae-trainer", (int)(strrchr(bin, '/') ? strrchr(bin, '/') - bin : 1), bin);
    if (access(trainer, X_OK) != 0) SKIP("%s not built", trainer);
    vm_config cfg = tiny("vicreg");
    int S = cfg.model.img_size;
    uint8_t *views = make_views(S, 3);
    vm_batch_header h = {.batch = B, .views = 2, .height = (uint32_t)S, .width = (uint32_t)S, .codec = VM_BATCH_CODEC_LZ4};
    vm_sample_meta samples[B] = {{0}};
    vm_view_meta vmeta[2 * B] = {{0}};
    size_t cap = vm_batch_max_size(&h), len;
    void *msg = malloc(cap);
    vm_error err = {0};
    CHECK_OK(vm_batch_encode(&h, samples, vmeta, views, msg, cap, &len, &err), err);
    const char *dir = vt_tmpdir();
    char batch[4096], out[4096], cmd[16384];
    snprintf(batch, sizeof batch, "%s/b.vmb", dir);
    snprintf(out, sizeof out, "%s/step.safetensors", dir);
    CHECK_OK(vm_batch_file_write(batch, msg, len, &err), err);
    snprintf(cmd, sizeof cmd,
             "%s debug-step --config configs/tiny.ini --set loss.contrastive=vicreg --set optim.batch_size=4 "
             "--set run.seed=11 --batch %s --out %s --backend cpu > /dev/null",
             trainer, batch, out);
    CHECK(system(cmd) == 0, "%s failed", cmd);
    vm_st_file *f;
    CHECK_OK(vm_st_read(&f, out, &err), err);
    vm_model *m = make(&cfg, vm_backend_cpu(1), (uint64_t)cfg.run.seed);
    vm_losses ls;
    CHECK_OK(vm_model_forward_backward(m, views, B, 0, &ls, &err), err);
    const vm_st_tensor *t = vm_st_find(f, "loss.total");
    CHECK(t && *(const float *)t->data == ls.total, "debug-step loss %g, model %g", t ? *(const float *)t->data : 0, ls.total);
    t = vm_st_find(f, "input.views");
    CHECK(t && t->nbytes == (size_t)B * 2 * S * S * 3 && memcmp(t->data, views, t->nbytes) == 0);
    t = vm_st_find(f, "grad.blocks.0.attn.qkv.weight");
    float *g = host_copy(m, vm_model_grads(m));
    CHECK(t && memcmp(t->data, g + must_find(m, "blocks.0.attn.qkv.weight")->offset, t->nbytes) == 0);
    CHECK(vm_st_find(f, "mask.ids_keep") && !vm_st_find(f, "grad.pos_embed"));
    vm_st_close(f);
    free(g), free(msg), free(views);
    vm_model_free(m);
}

// Unmasked features: independent of how the images are chunked, and of the other images.
TEST(features_without_masking) {
    vm_config cfg = tiny("infonce");
    uint8_t *views = make_views(cfg.model.img_size, 12);  // 2B images of (S, S, 3)
    int N = 2 * B, D = cfg.model.embed_dim;
    vm_model *m = make(&cfg, vm_backend_cpu(1), 50);
    vm_model *one = NULL;
    vm_error err = {0};
    CHECK_OK(vm_model_create(&one, &cfg, vm_backend_cpu(1), 1, &err), err);
    vm_model_init(one, 50);
    float *fa = malloc((size_t)N * D * sizeof(float)), *fb = malloc((size_t)N * D * sizeof(float));
    CHECK_OK(vm_model_features(m, views, N, fa, &err), err);
    size_t img = (size_t)cfg.model.img_size * cfg.model.img_size * 3;
    for (int i = 0; i < N; i++) CHECK_OK(vm_model_features(one, views + i * img, 1, fb + (size_t)i * D, &err), err);
    double diff = 0, norm = 0;
    for (int i = 0; i < N * D; i++) diff = fmax(diff, fabs(fa[i] - fb[i])), norm = fmax(norm, fabs(fa[i]));
    CHECK(norm > 1e-3 && diff <= 1e-5 * norm, "features differ by %g (max %g)", diff, norm);
    CHECK(memcmp(fa, fa + D, D * sizeof(float)) != 0, "two images gave the same feature");
    free(fa), free(fb), free(views);
    vm_model_free(m), vm_model_free(one);
}

// ||a - b|| / ||b|| over the whole gradient buffers of two models.
static double grad_rel(vm_model *a, vm_model *b) {
    float *ga = host_copy(a, vm_model_grads(a)), *gb = host_copy(b, vm_model_grads(b));
    double dd = 0, nn = 0;
    for (size_t i = 0; i < vm_model_num_floats(a); i++) dd += pow((double)ga[i] - gb[i], 2), nn += (double)gb[i] * gb[i];
    free(ga), free(gb);
    return nn > 0 ? sqrt(dd / nn) : INFINITY;
}

// How many values of the two models' gradient buffers differ in their bits (0: bitwise the same).
static size_t grads_differing(vm_model *a, vm_model *b) {
    float *ga = host_copy(a, vm_model_grads(a)), *gb = host_copy(b, vm_model_grads(b));
    size_t diff = 0;
    for (size_t i = 0; i < vm_model_num_floats(a); i++) diff += memcmp(&ga[i], &gb[i], sizeof(float)) != 0;
    free(ga), free(gb);
    return diff;
}

// Two micro-batches with scale 1/2 accumulate the mean of their gradients; with the contrastive
// loss off (no cross-pair terms, BatchNorm unused) that is the full batch's gradient.
TEST(gradient_accumulation_matches_full_batch) {
    vm_config cfg = tiny("none");
    uint8_t *views = make_views(cfg.model.img_size, 13);
    vm_model *a = make(&cfg, vm_backend_cpu(1), 60), *b = make(&cfg, vm_backend_cpu(1), 60);
    vm_error err = {0};
    vm_losses full, h1, h2;
    CHECK_OK(vm_model_forward_backward(a, views, B, 3, &full, &err), err);
    vm_model_zero_grads(b);
    size_t half = (size_t)(B / 2) * 2 * cfg.model.img_size * cfg.model.img_size * 3;
    CHECK_OK(vm_model_forward_backward_micro(b, views, B / 2, 3, 0, 0.5f, &h1, &err), err);
    CHECK_OK(vm_model_forward_backward_micro(b, views + half, B / 2, 3, B / 2, 0.5f, &h2, &err), err);
    CHECK_NEAR(0.5 * (h1.rec + h2.rec), full.rec, 1e-6 * full.rec);
    double e = grad_rel(b, a);  // relative to the full batch's gradient
    CHECK(e < 1e-5, "accumulated gradient differs by %g relative", e);
    free(views);
    vm_model_free(a), vm_model_free(b);
}

// The memory plan's rows of block activations at batch B: encoder rows max(2B (1 + K), 1 + L)
// (L patches, K kept; the max: features of one unmasked image), decoder rows 2B (1 + L); and the
// MLP hidden widths of the encoder and decoder blocks.
typedef struct {
    size_t Ne, Nd, HD, HDd;
} plan_rows;

static plan_rows plan_rows_of(const vm_config *cfg) {
    const typeof(cfg->model) *c = &cfg->model;
    size_t L = (size_t)(c->img_size / c->patch_size) * (c->img_size / c->patch_size), K = (size_t)(L * (1 - c->mask_ratio));
    return (plan_rows){
        .Ne = 2 * B * (1 + K) > 1 + L ? 2 * B * (1 + K) : 1 + L,
        .Nd = 2 * B * (1 + L),
        .HD = (size_t)(c->embed_dim * c->mlp_ratio),
        .HDd = (size_t)(c->decoder_embed_dim * c->mlp_ratio),
    };
}

// [train] recompute: the backward pass recomputes the LayerNorm and GELU outputs instead of reading
// the saved ones.  The same ops on the same inputs: losses, gradients (after every step) and
// parameters are bitwise those of the default, with every contrastive loss and with two threads;
// and the plan holds exactly the saved outputs less.
TEST(recompute_gives_the_same_bits) {
    const char *kinds[] = {"infonce", "simsiam", "vicreg", "none"};
    for (int k = 0; k < 4; k++) {
        vm_config cfg = tiny(kinds[k]);
        cfg.optim.clip_grad = 1.0;
        uint8_t *views = make_views(cfg.model.img_size, 30 + k);
        vm_model *m[2];
        vm_error err = {0};
        for (int r = 0; r < 2; r++) {
            cfg.train.recompute = r;
            m[r] = make(&cfg, vm_backend_cpu(k == 0 ? 2 : 1), 31);
        }
        size_t nf = vm_model_num_floats(m[0]);
        for (int s = 0; s < 3; s++) {
            vm_losses ls[2];
            for (int r = 0; r < 2; r++) CHECK_OK(vm_model_forward_backward(m[r], views, B, s, &ls[r], &err), err);
            CHECK(memcmp(&ls[0], &ls[1], sizeof ls[0]) == 0, "%s step %d: losses differ (%.9g vs %.9g)", kinds[k], s,
                  ls[0].total, ls[1].total);
            size_t diff = grads_differing(m[0], m[1]);
            CHECK(diff == 0, "%s step %d: %zu gradient values differ with recompute", kinds[k], s, diff);
            for (int r = 0; r < 2; r++) {
                float lr, norm;
                vm_model_optimizer_step(m[r], s, &lr, &norm);
            }
        }
        float *p0 = host_copy(m[0], vm_model_params(m[0])), *p1 = host_copy(m[1], vm_model_params(m[1]));
        CHECK(memcmp(p0, p1, nf * sizeof(float)) == 0, "%s: parameters differ after 3 steps", kinds[k]);
        free(p0), free(p1), free(views);
        vm_model_free(m[0]), vm_model_free(m[1]);
    }
    // Memory: saving adds the two LayerNorm outputs and the GELU output of every block, each
    // carved at a 256-byte boundary.
    vm_config cfg = tiny("infonce");
    size_t pb, saved, recomputed;
    vm_error err = {0};
    CHECK_OK(vm_model_memory(&cfg, B, &pb, &saved, &err), err);
    cfg.train.recompute = 1;
    CHECK_OK(vm_model_memory(&cfg, B, &pb, &recomputed, &err), err);
    const typeof(cfg.model) *c = &cfg.model;
    plan_rows rows = plan_rows_of(&cfg);
    size_t floats = c->depth * rows.Ne * (2 * c->embed_dim + rows.HD) +
                    c->decoder_depth * rows.Nd * (2 * c->decoder_embed_dim + rows.HDd);
    size_t pads = 3 * 256 * (size_t)(c->depth + c->decoder_depth);
    CHECK(saved - recomputed >= floats * sizeof(float) && saved - recomputed < floats * sizeof(float) + pads,
          "saved %zu, recomputed %zu bytes of activations: expected %zu more (+ padding)", saved, recomputed,
          floats * sizeof(float));
}

// The memory plan without allocating: agrees with a created model, grows with the batch; prints
// the figures of the ViT configurations for people sizing GPU batches.
TEST(memory_plan) {
    vm_config cfg = tiny("infonce");
    size_t pb, ab, pb2, ab2;
    vm_error err = {0};
    CHECK_OK(vm_model_memory(&cfg, B, &pb, &ab, &err), err);
    vm_model *m = make(&cfg, vm_backend_cpu(1), 1);
    CHECK_EQ_INT(pb, 4 * vm_model_num_floats(m) * sizeof(float));
    vm_model_free(m);
    CHECK_OK(vm_model_memory(&cfg, 2 * B, &pb2, &ab2, &err), err);
    CHECK(pb2 == pb && ab2 > ab * 3 / 2, "activations %zu -> %zu for twice the batch", ab, ab2);
    const char *cfgs[] = {"configs/vit_s16.ini", "configs/vit_b16.ini"};
    for (int i = 0; i < 2; i++) {
        vm_config c;
        vm_config_defaults(&c);
        if (vm_config_load(&c, cfgs[i], &err)) continue;  // optional files
        c.train.activations = VM_ACT_FP32;  // (the files say bf16)
        CHECK_OK(vm_model_memory(&c, 64, &pb, &ab, &err), err);
        c.train.recompute = 1;
        CHECK_OK(vm_model_memory(&c, 64, &pb2, &ab2, &err), err);
        size_t ab16;
        c.train.recompute = 0, c.train.precision = VM_PREC_BF16, c.train.activations = VM_ACT_BF16;
        CHECK_OK(vm_model_memory(&c, 64, &pb2, &ab16, &err), err);
        printf("    %s: %.1f M parameters (%.0f MB with grads and AdamW), activations %.2f GB for 64 pairs "
               "(%.2f GB with [train] recompute, %.2f GB with activations = bf16)\n", cfgs[i], pb / 16.0 / 1e6,
               pb / 1e6, ab / 1e9, ab2 / 1e9, ab16 / 1e9);
        CHECK(ab2 < ab && ab16 < ab);
        // MAE ViT-B/16 dec512d8b (~112M with its position embeddings) + projector 768-4096-4096-128 (~20.5M)
        if (i == 1) CHECK(pb / 16 > 128e6 && pb / 16 < 136e6, "ViT-B/16 ViC-MAE has ~132M values, got %zu", pb / 16);
    }
}

// The gradient norm is one reduction over the whole buffer: it relies on every value outside the
// trainable tensors staying zero.
TEST(gradients_outside_trainable_tensors_are_zero) {
    const char *kinds[] = {"infonce", "simsiam", "vicreg", "none"};
    for (int k = 0; k < 4; k++) {
        vm_config cfg = tiny(kinds[k]);
        vm_model *m = make(&cfg, vm_backend_cpu(1), 70);
        uint8_t *views = make_views(cfg.model.img_size, 14);
        vm_error err = {0};
        vm_losses ls;
        CHECK_OK(vm_model_forward_backward(m, views, B, 0, &ls, &err), err);
        float *g = host_copy(m, vm_model_grads(m));
        char *trainable = calloc(vm_model_num_floats(m), 1);
        for (int i = 0; i < vm_model_num_tensors(m); i++) {
            const vm_tensor_info *t = vm_model_tensor(m, i);
            if (t->kind == VM_TENSOR_PARAM) memset(trainable + t->offset, 1, t->numel);
        }
        for (size_t i = 0; i < vm_model_num_floats(m); i++)
            CHECK(trainable[i] || g[i] == 0, "%s: gradient %g at %zu outside the trainable tensors", kinds[k], g[i], i);
        free(g), free(trainable), free(views);
        vm_model_free(m);
    }
}

// ---- bf16 activations ([train] activations = bf16) ------------------------------------------------

// Who stores bf16: the cpu-bf16 reference (the only CPU table with the bf16-activation ops) does,
// the fp32 CPU backend does not (the CPU stays fp32); a config asking for bf16 activations with fp32
// products is refused.  The plan holds exactly half the bytes of every block activation that
// feeds a product.
TEST(bf16_activations_plan) {
    vm_config cfg = tiny("infonce");
    vm_error err = {0};
    CHECK_OK(vm_config_set(&cfg, "train", "activations", "bf16", "test", &err), err);
    CHECK(vm_config_validate(&cfg, &err) != 0 && strstr(err.msg, "precision = bf16"), "accepted: %s", err.msg);
    CHECK_OK(vm_config_set(&cfg, "train", "precision", "bf16", "test", &err), err);
    CHECK_OK(vm_config_validate(&cfg, &err), err);
    vm_model *m = NULL;
    CHECK_OK(vm_model_create(&m, &cfg, vm_backend_cpu(1), B, &err), err);
    CHECK(!vm_model_bf16_activations(m), "the fp32 CPU backend has no bf16 activations");
    vm_model_free(m);
    CHECK_OK(vm_model_create(&m, &cfg, vm_backend_cpu_bf16(1), B, &err), err);
    CHECK(vm_model_bf16_activations(m), "cpu-bf16 runs with bf16 activations");
    vm_model_free(m);
    for (int recompute = 0; recompute < 2; recompute++) {
        cfg.train.recompute = recompute;
        size_t pb, a16, a32;
        CHECK_OK(vm_model_memory(&cfg, B, &pb, &a16, &err), err);
        cfg.train.activations = VM_ACT_FP32;
        CHECK_OK(vm_model_memory(&cfg, B, &pb, &a32, &err), err);
        cfg.train.activations = VM_ACT_BF16;
        const typeof(cfg.model) *c = &cfg.model;
        plan_rows rows = plan_rows_of(&cfg);
        // qkv 3C, atty C, fc1 HD always; ln1 C, ln2 C, gelu HD when saved
        size_t ke = 4 * c->embed_dim + rows.HD + (recompute ? 0 : 2 * c->embed_dim + rows.HD);
        size_t kd = 4 * c->decoder_embed_dim + rows.HDd + (recompute ? 0 : 2 * c->decoder_embed_dim + rows.HDd);
        size_t values = c->depth * rows.Ne * ke + c->decoder_depth * rows.Nd * kd, pads = 6 * 256 * (size_t)(c->depth + c->decoder_depth);
        CHECK(a32 - a16 + pads >= values * 2 && a32 - a16 <= values * 2 + pads,
              "recompute %d: fp32 %zu, bf16 %zu bytes of activations: expected %zu less (+- padding)", recompute, a32,
              a16, values * 2);
    }
}

// Numerics on the cpu-bf16 reference: bf16 activations change the step by bf16 rounding only —
// losses and gradients near the fp32 CPU's, and measurably apart from bf16 products on fp32
// activations (or no activation was rounded); bitwise the same with [train] recompute and from run
// to run; 12 AdamW steps track the fp32 losses.  Gradients are held tightly without the contrastive
// head only: through InfoNCE's projector (BatchNorm over 4 samples, ReLU) a 1e-6 perturbation
// already moves tensors by 0.2 (tools/bf16_diag), so there only gross errors can be told.
static void bf16_activations_case(const char *contrastive, double grad_tol) {
    vm_config cfg = tiny(contrastive);
    cfg.optim.clip_grad = 1.0;
    cfg.train.precision = VM_PREC_BF16;
    uint8_t *views = make_views(cfg.model.img_size, 41);
    vm_error err = {0};
    // 0: fp32 CPU; 1: cpu-bf16, fp32 activations; 2: cpu-bf16, bf16 activations; 3: 2 with recompute
    vm_model *m[4];
    for (int i = 0; i < 4; i++) {
        cfg.train.activations = i >= 2 ? VM_ACT_BF16 : VM_ACT_FP32;
        cfg.train.recompute = i == 3;
        m[i] = make(&cfg, i == 0 ? vm_backend_cpu(1) : vm_backend_cpu_bf16(1), 42);
    }
    double worst_loss = 0;
    for (int s = 0; s < 12; s++) {
        vm_losses ls[4];
        for (int i = 0; i < 4; i++) CHECK_OK(vm_model_forward_backward(m[i], views, B, s, &ls[i], &err), err);
        if (s == 0) {
            double g32 = grad_rel(m[2], m[0]), g16 = grad_rel(m[2], m[1]), prod = grad_rel(m[1], m[0]);
            printf("    %s, step 0 gradients: bf16 activations vs fp32 %.3g, vs bf16 products only %.3g "
                   "(bf16 products vs fp32 %.3g)\n", contrastive, g32, g16, prod);
            CHECK(g32 < grad_tol, "bf16 activations: gradient %.3g from fp32", g32);
            CHECK(g16 > 1e-4, "bf16 activations: gradient within %.3g of fp32 activations: nothing rounded?", g16);
        }
        CHECK(memcmp(&ls[2], &ls[3], sizeof ls[2]) == 0, "step %d: recompute changed the losses", s);
        size_t diff = grads_differing(m[2], m[3]);
        CHECK(diff == 0, "step %d: recompute changed %zu gradient values", s, diff);
        double d = fabs(ls[2].total - ls[0].total) / fabs(ls[0].total);
        if (d > worst_loss) worst_loss = d;
        for (int i = 0; i < 4; i++) {
            float lr, norm;
            vm_model_optimizer_step(m[i], s, &lr, &norm);
        }
    }
    printf("    %s, 12 steps: total loss with bf16 activations within %.3g of fp32 (relative, worst step)\n",
           contrastive, worst_loss);
    CHECK(worst_loss < 1e-2, "losses drift %.3g from fp32", worst_loss);
    // run to run: a fresh model repeats the first step bitwise
    vm_model *r[2];
    cfg.train.activations = VM_ACT_BF16, cfg.train.recompute = 0;
    vm_losses l[2];
    for (int i = 0; i < 2; i++) {
        r[i] = make(&cfg, vm_backend_cpu_bf16(1), 42);
        CHECK_OK(vm_model_forward_backward(r[i], views, B, 0, &l[i], &err), err);
    }
    CHECK(memcmp(&l[0], &l[1], sizeof l[0]) == 0 && grads_differing(r[0], r[1]) == 0, "two runs differ");
    vm_model_free(r[0]), vm_model_free(r[1]);
    for (int i = 0; i < 4; i++) vm_model_free(m[i]);
    free(views);
}

TEST(bf16_activations_numerics) {
    bf16_activations_case("none", 2e-2);
    bf16_activations_case("infonce", 0.5);
}
