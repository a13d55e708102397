// trainer/model.c — ViC-MAE forward, backward, AdamW and checkpoints over the backend op table.
//
// Shapes below use NB = 2B (both views of B pairs, view-major), L = patches per view,
// K = kept patches, Te = 1 + K encoder tokens, Td = 1 + L decoder tokens, D encoder width,
// Dd decoder width, PD = 3*P*P pixels per patch.
#include "trainer/model.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/rng.h"
#include "trainer/safetensors.h"

#define LN_EPS 1e-6f         // MAE's norm_layer = partial(nn.LayerNorm, eps=1e-6)
#define BN_EPS 1e-5f         // nn.BatchNorm1d defaults
#define BN_MOMENTUM 0.1f
#define ALIGN_FLOATS 16      // tensor offsets aligned to 64 bytes (vector loads, cuBLAS)

static const float IMNET_MEAN[3] = {0.485f, 0.456f, 0.406f};
static const float IMNET_STD[3] = {0.229f, 0.224f, 0.225f};

// Offsets (floats into the parameter buffer) of one transformer block's tensors.
typedef struct { size_t ln1w, ln1b, qkvw, qkvb, projw, projb, ln2w, ln2b, fc1w, fc1b, fc2w, fc2b; } blk_p;
typedef struct { size_t w, b, rm, rv; } bn_p;

// Saved activations of one block over N = NB*T rows of width C.  The two LayerNorm outputs and
// the GELU output are saved by default; with [train] recompute = true they are not (ln1, ln2,
// gelu NULL): the backward pass recomputes them from the saved inputs, mean and rstd (pointwise or
// per row, bitwise the same values), which saves about a quarter of the activation memory (llm.c
// does the same with GELU) for a few % more work per step (6.6% of a ViT-B step on an H100).
// The tensors typed void * are those that only feed matrix products (and GELU): fp32, or bf16
// (vm_bf16) when the model runs with bf16 activations; see the act_* wrappers below.
typedef struct {
    float *ln1_mean, *ln1_rstd;        // (N), (N)
    void *ln1;                         // (N, C) norm1 output (NULL: recomputed)
    void *qkv;                         // (N, 3C)
    float *att;                        // (NB, NH, T, T)
    void *atty;                        // (N, C) attention output before proj
    float *res1;                       // (N, C) x + proj(atty)
    float *ln2_mean, *ln2_rstd;        // (N), (N)
    void *ln2;                         // (N, C) norm2 output (NULL: recomputed)
    void *fc1;                         // (N, HD) before GELU
    void *gelu;                        // (N, HD) GELU output (NULL: recomputed)
    float *res2;                       // (N, C) block output
} blk_a;

struct noise_idx { float noise; int32_t idx; };

struct vm_model {
    vm_config cfg;
    const vm_backend_ops *be;
    int max_batch;
    int img, P, G, L, K, PD;
    int D, depth, NH, HD;
    int Dd, ddepth, DNH, HDd;
    int ph, po, qh;           // projector hidden/out, predictor hidden
    int con, pool_cls, norm_pix;
    int act16;                // block activations stored as bf16 (the backend's bf16-activation ops)
    size_t enc_rows, enc_att, keep_cap;  // planned capacities: encoder token rows, attention, ids_keep
    long total_steps;
    int64_t bn_batches;

    vm_tensor_info *tab;
    int ntab, captab;
    size_t nfloats, ntrain;
    vm_adamw_range *runs;  // the trainable floats in runs of one weight decay, for AdamW
    int nruns;

    // parameter offsets
    size_t cls, pos, mask_tok, dpos, pe_w, pe_b;
    blk_p *enc, *dec;
    size_t norm_w, norm_b, de_w, de_b, dn_w, dn_b, dp_w, dp_b;
    size_t pj0_w, pj0_b, pj3_w, pj3_b, pj6_w, pj6_b;
    bn_p pj1, pj4;
    size_t pr0_w, pr3_w, pr3_b;
    bn_p pr1;

    float *params, *grads, *m, *v;  // backend buffers of nfloats
    void *acts;                     // one backend allocation for everything below

    // inputs (backend memory)
    uint8_t *img_in;                // (B, 2, H, W, 3) as the caller gives it
    uint8_t *img_u8;                // (NB, H, W, 3) view-major
    int32_t *ids_keep;              // (NB, K)
    int32_t *ids_restore;           // (NB, L)
    float *mask;                    // (NB, L) 1 = masked
    // encoder
    float *patches, *target;        // (NB, L, PD) conv order / MAE patchify order
    float *pe;                      // (NB, L, D) patch embedding + pos
    float *x0;                      // (NB, Te, D)
    blk_a *ea;
    float *enc_out, *enc_mean, *enc_rstd;  // (NB, Te, D), (NB*Te) x2
    // decoder
    float *dec_emb;                 // (NB, Te, Dd)
    float *dec_x0;                  // (NB, Td, Dd)
    blk_a *da;
    float *dec_out, *dec_mean, *dec_rstd;  // (NB, Td, Dd), (NB*Td) x2
    float *dec_drop;                // (NB, L, Dd)
    float *pred, *dpred;            // (NB, L, PD)
    // global feature, projector, predictor
    float *pooled;                  // (NB, D)
    float *j_h1, *j_bn1, *j_a1, *j_h2, *j_bn2, *j_a2;  // (NB, ph)
    float *j_m1, *j_r1, *j_m2, *j_r2;                  // (2, ph) per-view batch mean / rstd
    float *z;                       // (NB, po)
    float *q_h, *q_bn, *q_a;        // (NB, qh)
    float *q_m, *q_r;               // (2, qh)
    float *p;                       // (NB, po)
    // backward scratch
    float *dz, *dp;                 // (NB, po)
    float *s_a, *s_b;               // (NB, max(ph, qh))
    float *dpooled;                 // (NB, D)
    float *denc;                    // (NB, Te, D) gradient w.r.t. enc_out
    float *dres, *dln, *tmp;        // (NBmax*Tmax, Cmax)
    float *dqkv;                    // (.., 3Cmax)
    float *dh1, *dh2;               // (.., HDmax)
    float *datt;                    // (NB, NHmax, Tmax, Tmax)

    // host staging
    int32_t *h_keep, *h_restore;    // (NB, K), (NB, L)
    float *h_mask;                  // (NB, L)
    struct noise_idx *h_sort;       // (L) argsort of the masking noise
    float *h_tensor;                // (largest tensor) initialisation staging
    int last_B;
};

// ---- the tensor table ---------------------------------------------------------------------------

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

// MAE's param groups (timm add_weight_decay): no decay for 1-D tensors and biases.
static int mae_decay(const char *name, int ndim) { return !(ndim <= 1 || ends_with(name, ".bias")); }

static size_t add_tensor(vm_model *m, int kind, int ndim, const int64_t *shape, const char *fmt, ...) {
    vm_tensor_info *t = &m->tab[m->ntab++];
    memset(t, 0, sizeof *t);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->ndim = ndim;
    size_t n = 1;
    for (int d = 0; d < ndim; d++) {
        t->shape[d] = shape[d];
        n *= (size_t)shape[d];
    }
    t->kind = kind;
    if (kind == VM_TENSOR_COUNTER) return 0;
    m->nfloats = (m->nfloats + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
    t->offset = m->nfloats;
    t->numel = n;
    t->decay = kind == VM_TENSOR_PARAM && mae_decay(t->name, ndim);
    m->nfloats += n;
    if (kind == VM_TENSOR_PARAM) m->ntrain += n;
    return t->offset;
}

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})
#define PARAM1(a, ...) add_tensor(m, VM_TENSOR_PARAM, 1, SHAPE(a), __VA_ARGS__)
#define PARAM2(a, b, ...) add_tensor(m, VM_TENSOR_PARAM, 2, SHAPE(a, b), __VA_ARGS__)

static size_t linear(vm_model *m, size_t *bias, int out, int in, const char *prefix) {
    size_t w = PARAM2(out, in, "%s.weight", prefix);
    if (bias) *bias = PARAM1(out, "%s.bias", prefix);
    return w;
}

static void block_table(vm_model *m, blk_p *b, const char *prefix, int i, int C, int HD) {
    char p[64];
    snprintf(p, sizeof p, "%s.%d", prefix, i);
    b->ln1w = PARAM1(C, "%s.norm1.weight", p);
    b->ln1b = PARAM1(C, "%s.norm1.bias", p);
    b->qkvw = PARAM2(3 * C, C, "%s.attn.qkv.weight", p);
    b->qkvb = PARAM1(3 * C, "%s.attn.qkv.bias", p);
    b->projw = PARAM2(C, C, "%s.attn.proj.weight", p);
    b->projb = PARAM1(C, "%s.attn.proj.bias", p);
    b->ln2w = PARAM1(C, "%s.norm2.weight", p);
    b->ln2b = PARAM1(C, "%s.norm2.bias", p);
    b->fc1w = PARAM2(HD, C, "%s.mlp.fc1.weight", p);
    b->fc1b = PARAM1(HD, "%s.mlp.fc1.bias", p);
    b->fc2w = PARAM2(C, HD, "%s.mlp.fc2.weight", p);
    b->fc2b = PARAM1(C, "%s.mlp.fc2.bias", p);
}

static void batchnorm_table(vm_model *m, bn_p *b, const char *prefix, int C) {
    b->w = PARAM1(C, "%s.weight", prefix);
    b->b = PARAM1(C, "%s.bias", prefix);
    b->rm = add_tensor(m, VM_TENSOR_RUNNING, 1, SHAPE(C), "%s.running_mean", prefix);
    b->rv = add_tensor(m, VM_TENSOR_RUNNING, 1, SHAPE(C), "%s.running_var", prefix);
    add_tensor(m, VM_TENSOR_COUNTER, 0, NULL, "%s.num_batches_tracked", prefix);
}

// The state_dict order of models_vicmae.ViCMAE: the module's own parameters in registration order
// (cls_token, pos_embed, mask_token, decoder_pos_embed), then the submodules in order.
static void build_table(vm_model *m) {
    int D = m->D, Dd = m->Dd;
    m->cls = add_tensor(m, VM_TENSOR_PARAM, 3, SHAPE(1, 1, D), "cls_token");
    m->pos = add_tensor(m, VM_TENSOR_FIXED, 3, SHAPE(1, m->L + 1, D), "pos_embed");
    m->mask_tok = add_tensor(m, VM_TENSOR_PARAM, 3, SHAPE(1, 1, Dd), "mask_token");
    m->dpos = add_tensor(m, VM_TENSOR_FIXED, 3, SHAPE(1, m->L + 1, Dd), "decoder_pos_embed");
    m->pe_w = add_tensor(m, VM_TENSOR_PARAM, 4, SHAPE(D, 3, m->P, m->P), "patch_embed.proj.weight");
    m->pe_b = PARAM1(D, "patch_embed.proj.bias");
    for (int i = 0; i < m->depth; i++) block_table(m, &m->enc[i], "blocks", i, D, m->HD);
    m->norm_w = PARAM1(D, "norm.weight");
    m->norm_b = PARAM1(D, "norm.bias");
    m->de_w = linear(m, &m->de_b, Dd, D, "decoder_embed");
    for (int i = 0; i < m->ddepth; i++) block_table(m, &m->dec[i], "decoder_blocks", i, Dd, m->HDd);
    m->dn_w = PARAM1(Dd, "decoder_norm.weight");
    m->dn_b = PARAM1(Dd, "decoder_norm.bias");
    m->dp_w = linear(m, &m->dp_b, m->PD, Dd, "decoder_pred");
    m->pj0_w = linear(m, &m->pj0_b, m->ph, D, "projector.0");
    batchnorm_table(m, &m->pj1, "projector.1", m->ph);
    m->pj3_w = linear(m, &m->pj3_b, m->ph, m->ph, "projector.3");
    batchnorm_table(m, &m->pj4, "projector.4", m->ph);
    m->pj6_w = linear(m, &m->pj6_b, m->po, m->ph, "projector.6");
    if (m->con == VM_CON_SIMSIAM) {
        // SimSiam's predictor: Linear(out, pred_hidden, bias=False), BN, ReLU, Linear(pred_hidden, out).
        m->pr0_w = linear(m, NULL, m->qh, m->po, "predictor.0");
        batchnorm_table(m, &m->pr1, "predictor.1", m->qh);
        m->pr3_w = linear(m, &m->pr3_b, m->po, m->qh, "predictor.3");
    }
    m->nfloats = (m->nfloats + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
    // Coalesce neighbouring trainable tensors of the same decay into one range each.
    m->runs = calloc((size_t)m->ntab, sizeof *m->runs);
    for (int i = 0; i < m->ntab; i++) {
        const vm_tensor_info *t = &m->tab[i];
        if (t->kind != VM_TENSOR_PARAM) continue;
        vm_adamw_range *r = m->nruns ? &m->runs[m->nruns - 1] : NULL;
        if (r && r->decay == t->decay && i > 0 && m->tab[i - 1].kind == VM_TENSOR_PARAM) {
            r->n = t->offset + t->numel - r->off;
        } else {
            m->runs[m->nruns++] = (vm_adamw_range){t->offset, t->numel, t->decay};
        }
    }
}

// ---- activation plan ----------------------------------------------------------------------------

typedef struct { size_t bytes; int dry; char *base; size_t act_size; } planner;

// Carve n elements of size es from the activation block (sizes only when dry).
static void *carve(planner *p, size_t n, size_t es) {
    size_t at = (p->bytes + 255) / 256 * 256;
    p->bytes = at + n * es;
    return p->dry ? NULL : p->base + at;
}
#define FL(n) ((float *)carve(pl, (size_t)(n), sizeof(float)))
#define ACT(n) carve(pl, (size_t)(n), pl->act_size)  // a block activation: fp32 or bf16

// save: keep the LayerNorm and GELU outputs for the backward pass (not [train] recompute)
static void plan_block(planner *pl, blk_a *a, size_t N, size_t natt, int C, int HD, int save) {
    a->ln1_mean = FL(N);
    a->ln1_rstd = FL(N);
    a->ln1 = save ? ACT(N * C) : NULL;
    a->qkv = ACT(N * 3 * C);
    a->att = FL(natt);
    a->atty = ACT(N * C);
    a->res1 = FL(N * C);
    a->ln2_mean = FL(N);
    a->ln2_rstd = FL(N);
    a->ln2 = save ? ACT(N * C) : NULL;
    a->fc1 = ACT(N * HD);
    a->gelu = save ? ACT(N * HD) : NULL;
    a->res2 = FL(N * C);
}

static size_t maxz(size_t a, size_t b) { return a > b ? a : b; }

static void plan(vm_model *m, planner *pl) {
    int NB = 2 * m->max_batch, Te = 1 + m->K, Td = 1 + m->L;
    // The encoder also takes one unmasked image at least (vm_model_features): 1 + L tokens.
    size_t Ne = maxz((size_t)NB * Te, (size_t)Td), Nd = (size_t)NB * Td;
    size_t Ae = maxz((size_t)NB * m->NH * Te * Te, (size_t)m->NH * Td * Td);
    m->enc_rows = Ne, m->enc_att = Ae, m->keep_cap = maxz((size_t)NB * m->K, (size_t)m->L);
    m->img_in = carve(pl, (size_t)NB * m->img * m->img * 3, 1);
    m->img_u8 = carve(pl, (size_t)NB * m->img * m->img * 3, 1);
    m->ids_keep = carve(pl, m->keep_cap, sizeof(int32_t));
    m->ids_restore = carve(pl, (size_t)NB * m->L, sizeof(int32_t));
    m->mask = FL((size_t)NB * m->L);
    m->patches = FL((size_t)NB * m->L * m->PD);
    m->target = FL((size_t)NB * m->L * m->PD);
    m->pe = FL((size_t)NB * m->L * m->D);
    m->x0 = FL(Ne * m->D);
    const int save = !m->cfg.train.recompute;
    for (int i = 0; i < m->depth; i++) plan_block(pl, &m->ea[i], Ne, Ae, m->D, m->HD, save);
    m->enc_out = FL(Ne * m->D);
    m->enc_mean = FL(Ne);
    m->enc_rstd = FL(Ne);
    m->dec_emb = FL(Ne * m->Dd);
    m->dec_x0 = FL(Nd * m->Dd);
    for (int i = 0; i < m->ddepth; i++)
        plan_block(pl, &m->da[i], Nd, (size_t)NB * m->DNH * Td * Td, m->Dd, m->HDd, save);
    m->dec_out = FL(Nd * m->Dd);
    m->dec_mean = FL(Nd);
    m->dec_rstd = FL(Nd);
    m->dec_drop = FL((size_t)NB * m->L * m->Dd);
    m->pred = FL((size_t)NB * m->L * m->PD);
    m->dpred = FL((size_t)NB * m->L * m->PD);
    m->pooled = FL((size_t)NB * m->D);
    m->j_h1 = FL((size_t)NB * m->ph);
    m->j_bn1 = FL((size_t)NB * m->ph);
    m->j_a1 = FL((size_t)NB * m->ph);
    m->j_h2 = FL((size_t)NB * m->ph);
    m->j_bn2 = FL((size_t)NB * m->ph);
    m->j_a2 = FL((size_t)NB * m->ph);
    m->j_m1 = FL(2 * m->ph);
    m->j_r1 = FL(2 * m->ph);
    m->j_m2 = FL(2 * m->ph);
    m->j_r2 = FL(2 * m->ph);
    m->z = FL((size_t)NB * m->po);
    m->q_h = FL((size_t)NB * m->qh);
    m->q_bn = FL((size_t)NB * m->qh);
    m->q_a = FL((size_t)NB * m->qh);
    m->q_m = FL(2 * m->qh);
    m->q_r = FL(2 * m->qh);
    m->p = FL((size_t)NB * m->po);
    m->dz = FL((size_t)NB * m->po);
    m->dp = FL((size_t)NB * m->po);
    size_t hmax = maxz((size_t)m->ph, (size_t)m->qh);
    m->s_a = FL((size_t)NB * hmax);
    m->s_b = FL((size_t)NB * hmax);
    m->dpooled = FL((size_t)NB * m->D);
    m->denc = FL(Ne * m->D);
    size_t nc = maxz(Ne * m->D, Nd * m->Dd);
    nc = maxz(nc, (size_t)NB * m->L * m->D);  // tmp also holds d(pe)
    m->dres = FL(nc);
    m->dln = FL(nc);
    m->tmp = FL(nc);
    m->dqkv = FL(3 * maxz(Ne * m->D, Nd * m->Dd));
    size_t nh = maxz(Ne * m->HD, Nd * m->HDd);
    m->dh1 = FL(nh);
    m->dh2 = FL(nh);
    m->datt = FL(maxz(Ae, (size_t)NB * m->DNH * Td * Td));
}

// ---- create / free --------------------------------------------------------------------------------

// Dimensions and the tensor table of a model for cfg (no backend memory).
static int setup(vm_model *m, const vm_config *cfg, int max_batch, vm_error *err) {
    const typeof(cfg->model) *c = &cfg->model;
    if (max_batch < 1) return vm_fail(err, VM_EINVAL, "model: max_batch %d must be at least 1", max_batch);
    if (c->img_size % c->patch_size)
        return vm_fail(err, VM_EINVAL, "[model] img_size %d is not a multiple of patch_size %d", c->img_size, c->patch_size);
    if (c->embed_dim % c->num_heads || c->decoder_embed_dim % c->decoder_num_heads)
        return vm_fail(err, VM_EINVAL, "[model] embed_dim / decoder_embed_dim must be multiples of their num_heads");
    if (c->embed_dim % 4 || c->decoder_embed_dim % 4)
        return vm_fail(err, VM_EINVAL, "[model] embed_dim %d and decoder_embed_dim %d must be multiples of 4 "
                       "(2D sin-cos position embedding)", c->embed_dim, c->decoder_embed_dim);
    m->cfg = *cfg;
    m->max_batch = max_batch;
    m->img = c->img_size;
    m->P = c->patch_size;
    m->G = c->img_size / c->patch_size;
    m->L = m->G * m->G;
    m->K = (int)(m->L * (1.0 - c->mask_ratio));  // MAE: len_keep = int(L * (1 - mask_ratio))
    if (m->K < 1) m->K = 1;
    m->PD = 3 * m->P * m->P;
    m->D = c->embed_dim;
    m->depth = c->depth;
    m->NH = c->num_heads;
    m->HD = (int)(c->embed_dim * c->mlp_ratio);  // timm: int(dim * mlp_ratio)
    m->Dd = c->decoder_embed_dim;
    m->ddepth = c->decoder_depth;
    m->DNH = c->decoder_num_heads;
    m->HDd = (int)(c->decoder_embed_dim * c->mlp_ratio);
    m->ph = c->proj_hidden_dim;
    m->po = c->proj_out_dim;
    m->qh = c->pred_hidden_dim;
    m->con = cfg->loss.contrastive;
    m->pool_cls = c->pool == VM_POOL_CLS;
    m->norm_pix = c->norm_pix_loss;
    m->total_steps = cfg->optim.steps;
    m->captab = 64 + 12 * (m->depth + m->ddepth);
    m->tab = calloc((size_t)m->captab, sizeof *m->tab);
    m->enc = calloc((size_t)m->depth, sizeof *m->enc);
    m->dec = calloc((size_t)m->ddepth, sizeof *m->dec);
    m->ea = calloc((size_t)m->depth, sizeof *m->ea);
    m->da = calloc((size_t)m->ddepth, sizeof *m->da);
    if (!m->tab || !m->enc || !m->dec || !m->ea || !m->da) return vm_fail(err, VM_ENOMEM, "model: out of host memory");
    build_table(m);
    return 0;
}

// [train] activations = bf16 (with the bf16 products it needs; vm_config_validate refuses it alone)
static int wants_bf16_activations(const vm_config *cfg) {
    return cfg->train.activations == VM_ACT_BF16 && cfg->train.precision == VM_PREC_BF16;
}
static size_t act_size(const vm_model *m) { return m->act16 ? sizeof(vm_bf16) : sizeof(float); }

int vm_model_memory(const vm_config *cfg, int max_batch, size_t *param_bytes, size_t *act_bytes, vm_error *err) {
    vm_model *m = calloc(1, sizeof *m);
    if (!m) return vm_fail(err, VM_ENOMEM, "model: out of memory");
    int rc = setup(m, cfg, max_batch, err);
    if (!rc) {
        m->act16 = wants_bf16_activations(cfg);  // as on a backend that has them
        planner pl = {0, 1, NULL, act_size(m)};
        plan(m, &pl);
        if (param_bytes) *param_bytes = 4 * m->nfloats * sizeof(float);
        if (act_bytes) *act_bytes = pl.bytes;
    }
    vm_model_free(m);
    return rc;
}

static int has_bf16_activations(const vm_backend_ops *be) {
    return be->layernorm_forward_bf16 && be->matmul_forward_bf16 && be->matmul_backward_bf16 &&
           be->attention_forward_bf16 && be->attention_backward_bf16 && be->gelu_forward_bf16 &&
           be->gelu_backward_bf16 && be->add_bf16;
}

int vm_model_create(vm_model **out, const vm_config *cfg, const vm_backend_ops *be, int max_batch, vm_error *err) {
    *out = NULL;
    vm_model *m = calloc(1, sizeof *m);
    if (!m) return vm_fail(err, VM_ENOMEM, "model: out of memory");
    int rc = setup(m, cfg, max_batch, err);
    if (rc) {
        vm_model_free(m);
        return rc;
    }
    m->be = be;
    int NB = 2 * max_batch;
    m->h_keep = malloc((size_t)NB * m->K * sizeof(int32_t));
    m->h_restore = malloc((size_t)NB * m->L * sizeof(int32_t));
    m->h_mask = malloc((size_t)NB * m->L * sizeof(float));
    m->h_sort = malloc((size_t)m->L * sizeof *m->h_sort);
    if (!m->h_keep || !m->h_restore || !m->h_mask || !m->h_sort) {
        vm_model_free(m);
        return vm_fail(err, VM_ENOMEM, "model: out of host memory");
    }
    size_t biggest = 1;
    for (int i = 0; i < m->ntab; i++) biggest = maxz(biggest, m->tab[i].numel);
    m->h_tensor = malloc(biggest * sizeof(float));
    if (!m->h_tensor) {
        vm_model_free(m);
        return vm_fail(err, VM_ENOMEM, "model: out of host memory");
    }
    size_t pbytes = m->nfloats * sizeof(float);
    m->params = be->alloc(pbytes);
    m->grads = be->alloc(pbytes);
    m->m = be->alloc(pbytes);
    m->v = be->alloc(pbytes);
    m->act16 = wants_bf16_activations(cfg) && has_bf16_activations(be);
    planner pl = {0, 1, NULL, act_size(m)};
    plan(m, &pl);
    size_t abytes = pl.bytes;
    m->acts = be->alloc(abytes);
    if (!m->params || !m->grads || !m->m || !m->v || !m->acts) {
        vm_model_free(m);
        return vm_fail(err, VM_ENOMEM, "model: %s backend could not allocate %.1f MB of parameters and optimizer state "
                       "and %.1f MB of activations for batch %d", be->name, 4.0 * pbytes / 1e6, abytes / 1e6, max_batch);
    }
    pl = (planner){0, 0, m->acts, pl.act_size};
    plan(m, &pl);
    *out = m;
    return 0;
}

int vm_model_bf16_activations(const vm_model *m) { return m->act16; }

void vm_model_free(vm_model *m) {
    if (!m) return;
    if (m->be) {
        if (m->params) m->be->free(m->params);
        if (m->grads) m->be->free(m->grads);
        if (m->m) m->be->free(m->m);
        if (m->v) m->be->free(m->v);
        if (m->acts) m->be->free(m->acts);
    }
    free(m->tab);
    free(m->runs);
    free(m->enc);
    free(m->dec);
    free(m->ea);
    free(m->da);
    free(m->h_keep);
    free(m->h_restore);
    free(m->h_mask);
    free(m->h_sort);
    free(m->h_tensor);
    free(m);
}

// ---- initialisation ---------------------------------------------------------------------------------

// MAE's get_2d_sincos_pos_embed(C, G, cls_token=True): row 0 zeros; patch l = (i, j) in row-major
// grid order.  MAE builds np.meshgrid(grid_w, grid_h), so the first half of the channels encodes
// the column j and the second half the row i; each half is [sin(pos*w_k), cos(pos*w_k)],
// w_k = 1 / 10000^(k / (C/4)), k < C/4, computed in float64 as numpy does.
static void sincos_2d(float *out, int C, int G) {
    memset(out, 0, (size_t)C * sizeof(float));
    int q = C / 4;
    for (int i = 0; i < G; i++)
        for (int j = 0; j < G; j++) {
            float *row = out + (size_t)(1 + i * G + j) * C;
            for (int half = 0; half < 2; half++) {
                double pos = half == 0 ? j : i;
                float *h = row + half * (C / 2);
                for (int k = 0; k < q; k++) {
                    double omega = (double)k / (C / 4.0);  // np.arange(D/2) / (D/2.) with D = C/2
                    omega = 1.0 / pow(10000.0, omega);
                    double a = pos * omega;
                    h[k] = (float)sin(a);
                    h[q + k] = (float)cos(a);
                }
            }
        }
}

void vm_model_init(vm_model *m, uint64_t seed) {
    size_t bytes = m->nfloats * sizeof(float);
    m->be->zero(m->params, bytes);  // alignment gaps stay zero
    for (int i = 0; i < m->ntab; i++) {
        const vm_tensor_info *t = &m->tab[i];
        float *w = m->h_tensor;
        vm_rng r;
        vm_rng_init(&r, seed, vm_rng_stream(VM_RNG_INIT, (uint64_t)i, 0, 0));
        if (t->kind == VM_TENSOR_COUNTER) continue;
        memset(w, 0, t->numel * sizeof(float));
        if (t->kind == VM_TENSOR_FIXED) {
            sincos_2d(w, (int)t->shape[2], m->G);
        } else if (t->kind == VM_TENSOR_RUNNING) {
            float val = ends_with(t->name, "running_var") ? 1.0f : 0.0f;
            for (size_t k = 0; k < t->numel; k++) w[k] = val;
        } else if (!strcmp(t->name, "cls_token") || !strcmp(t->name, "mask_token")) {
            for (size_t k = 0; k < t->numel; k++) w[k] = (float)(0.02 * vm_rng_normal(&r));
        } else if (ends_with(t->name, ".bias")) {
            // zero (calloc)
        } else if (t->ndim == 1) {
            for (size_t k = 0; k < t->numel; k++) w[k] = 1.0f;  // LayerNorm / BatchNorm weight
        } else {
            // xavier_uniform on the weight viewed as (fan_out, fan_in)
            double fan_out = (double)t->shape[0], fan_in = (double)t->numel / fan_out;
            double a = sqrt(6.0 / (fan_in + fan_out));
            for (size_t k = 0; k < t->numel; k++) w[k] = (float)(a * (2.0 * vm_rng_uniform(&r) - 1.0));
        }
        m->be->to_device(m->params + t->offset, w, t->numel * sizeof(float));
    }
    m->be->zero(m->grads, bytes);
    m->be->zero(m->m, bytes);
    m->be->zero(m->v, bytes);
    m->be->sync();  // w is reused per tensor: an asynchronous upload must have read it (CUDA copies
                    // from pageable memory are synchronous, but do not rely on it)
    m->bn_batches = 0;
}

// ---- schedules ------------------------------------------------------------------------------------

double vm_model_lr(const vm_config *cfg, long step, long total_steps) {
    double peak = cfg->optim.base_lr * cfg->optim.batch_size / 256.0, lo = cfg->optim.min_lr;
    long warm = cfg->optim.warmup_steps;
    if (step < warm) return peak * (double)step / (double)warm;
    if (total_steps <= warm) return peak;
    double t = (double)(step - warm) / (double)(total_steps - warm);
    if (t > 1) t = 1;
    return lo + (peak - lo) * 0.5 * (1.0 + cos(M_PI * t));
}

double vm_model_w_con(const vm_config *cfg, long step) {
    double w = cfg->loss.w_con;
    long n = cfg->loss.con_warmup_steps;
    if (n <= 0 || step >= n) return w;
    double t = (double)step / (double)n;
    return cfg->loss.con_warmup_shape == VM_WARMUP_COSINE ? w * 0.5 * (1.0 - cos(M_PI * t)) : w * t;
}

void vm_model_set_total_steps(vm_model *m, long total_steps) {
    m->total_steps = m->cfg.optim.steps > 0 ? m->cfg.optim.steps : total_steps;
}

// ---- masking (host) -------------------------------------------------------------------------------

static int cmp_noise(const void *a, const void *b) {
    const struct noise_idx *x = a, *y = b;
    if (x->noise != y->noise) return x->noise < y->noise ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);  // ties by index: a stable argsort
}

// MAE's random_masking for every (view, pair): argsort uniform noise, keep the K smallest.
static void draw_masks(vm_model *m, int B, long step, int first_pair) {
    int L = m->L, K = m->K;
    struct noise_idx *shuffle = m->h_sort;
    for (int v = 0; v < 2; v++)
        for (int b = 0; b < B; b++) {
            int s = v * B + b;
            vm_rng r;
            vm_rng_init(&r, (uint64_t)m->cfg.run.seed, vm_rng_stream(VM_RNG_MASK, (uint64_t)step, (uint64_t)(first_pair + b), (uint64_t)v));
            for (int l = 0; l < L; l++) shuffle[l] = (struct noise_idx){vm_rng_uniformf(&r), l};
            qsort(shuffle, (size_t)L, sizeof *shuffle, cmp_noise);
            int32_t *keep = m->h_keep + (size_t)s * K, *restore = m->h_restore + (size_t)s * L;
            float *mask = m->h_mask + (size_t)s * L;
            for (int k = 0; k < L; k++) {
                if (k < K) keep[k] = shuffle[k].idx;
                restore[shuffle[k].idx] = k;
            }
            for (int l = 0; l < L; l++) mask[l] = restore[l] >= K ? 1.0f : 0.0f;
        }
}

// ---- transformer block ----------------------------------------------------------------------------

#define PW(o) (m->params + (o))
#define GW(o) (m->grads + (o))

// The block's ops on its activations (the void * tensors of blk_a): the fp32 ops, or with bf16
// activations the backend's bf16-activation ops on the same buffers.
static void act_layernorm(vm_model *m, void *out, float *mean, float *rstd, const float *x, size_t w, size_t b, int N,
                          int C) {
    if (m->act16) m->be->layernorm_forward_bf16(out, mean, rstd, x, PW(w), PW(b), N, C, LN_EPS);
    else m->be->layernorm_forward(out, mean, rstd, x, PW(w), PW(b), N, C, LN_EPS);
}
static void act_matmul_forward(vm_model *m, void *out, const void *inp, size_t w, size_t b, int N, int C, int OC) {
    if (m->act16) m->be->matmul_forward_bf16(out, inp, PW(w), PW(b), N, C, OC);
    else m->be->matmul_forward(out, inp, PW(w), PW(b), N, C, OC);
}
// dinp (N, C) = ; gradients of the weight w and bias b +=
static void act_matmul_backward(vm_model *m, float *dinp, const float *dout, const void *inp, size_t w, size_t b, int N,
                                int C, int OC) {
    if (m->act16) m->be->matmul_backward_bf16(dinp, GW(w), GW(b), dout, inp, PW(w), N, C, OC);
    else m->be->matmul_backward(dinp, GW(w), GW(b), dout, inp, PW(w), N, C, OC);
}
static void act_gelu_forward(vm_model *m, void *out, const void *inp, size_t n) {
    if (m->act16) m->be->gelu_forward_bf16(out, inp, n);
    else m->be->gelu_forward(out, inp, n);
}

// The LayerNorm and GELU outputs go to the block's saved buffers, or with [train] recompute to
// scratch: the LayerNorm outputs to dln and the GELU output to dh2 (both free until the backward
// pass).  The attention projection and fc2 outputs go to tmp.
static void block_forward(vm_model *m, const blk_p *p, blk_a *a, const float *x, int NB, int T, int C, int NH, int HD) {
    const vm_backend_ops *be = m->be;
    int N = NB * T;
    size_t NC = (size_t)N * C;
    void *ln1 = a->ln1 ? a->ln1 : m->dln, *ln2 = a->ln2 ? a->ln2 : m->dln, *gelu = a->gelu ? a->gelu : m->dh2;
    act_layernorm(m, ln1, a->ln1_mean, a->ln1_rstd, x, p->ln1w, p->ln1b, N, C);
    act_matmul_forward(m, a->qkv, ln1, p->qkvw, p->qkvb, N, C, 3 * C);
    if (m->act16) be->attention_forward_bf16(a->atty, a->att, a->qkv, NB, T, C, NH);
    else be->attention_forward(a->atty, a->att, a->qkv, NB, T, C, NH);
    act_matmul_forward(m, m->tmp, a->atty, p->projw, p->projb, N, C, C);
    if (m->act16) be->add_bf16(a->res1, x, (const vm_bf16 *)m->tmp, NC);
    else be->add(a->res1, x, m->tmp, NC);
    act_layernorm(m, ln2, a->ln2_mean, a->ln2_rstd, a->res1, p->ln2w, p->ln2b, N, C);
    act_matmul_forward(m, a->fc1, ln2, p->fc1w, p->fc1b, N, C, HD);
    act_gelu_forward(m, gelu, a->fc1, (size_t)N * HD);
    act_matmul_forward(m, m->tmp, gelu, p->fc2w, p->fc2b, N, HD, C);
    if (m->act16) be->add_bf16(a->res2, a->res1, (const vm_bf16 *)m->tmp, NC);
    else be->add(a->res2, a->res1, m->tmp, NC);
}

// dres (N, C) holds d(block output) on entry and d(block input x) on return.  The LayerNorm and
// GELU outputs are the saved ones, or with [train] recompute recomputed: the GELU output into dh2
// and the LayerNorm outputs into tmp (their saved mean/rstd are rewritten with the same values).
static void block_backward(vm_model *m, blk_a *a, const blk_p *p, const float *x, int NB, int T, int C, int NH,
                           int HD) {
    const vm_backend_ops *be = m->be;
    int N = NB * T;
    const void *gelu = a->gelu, *ln2 = a->ln2, *ln1 = a->ln1;
    if (!gelu) {
        act_gelu_forward(m, m->dh2, a->fc1, (size_t)N * HD);
        gelu = m->dh2;
    }
    act_matmul_backward(m, m->dh1, m->dres, gelu, p->fc2w, p->fc2b, N, HD, C);
    if (m->act16) be->gelu_backward_bf16(m->dh2, a->fc1, m->dh1, (size_t)N * HD);
    else be->gelu_backward(m->dh2, a->fc1, m->dh1, (size_t)N * HD);
    if (!ln2) {
        act_layernorm(m, m->tmp, a->ln2_mean, a->ln2_rstd, a->res1, p->ln2w, p->ln2b, N, C);
        ln2 = m->tmp;
    }
    act_matmul_backward(m, m->dln, m->dh2, ln2, p->fc1w, p->fc1b, N, C, HD);
    be->layernorm_backward(m->dres, GW(p->ln2w), GW(p->ln2b), m->dln, a->res1, PW(p->ln2w), a->ln2_mean, a->ln2_rstd, N, C);
    act_matmul_backward(m, m->dln, m->dres, a->atty, p->projw, p->projb, N, C, C);
    if (m->act16) be->attention_backward_bf16(m->dqkv, m->datt, m->dln, a->qkv, a->att, NB, T, C, NH);
    else be->attention_backward(m->dqkv, m->datt, m->dln, a->qkv, a->att, NB, T, C, NH);
    if (!ln1) {
        act_layernorm(m, m->tmp, a->ln1_mean, a->ln1_rstd, x, p->ln1w, p->ln1b, N, C);
        ln1 = m->tmp;
    }
    act_matmul_backward(m, m->dln, m->dqkv, ln1, p->qkvw, p->qkvb, N, C, 3 * C);
    be->layernorm_backward(m->dres, GW(p->ln1w), GW(p->ln1b), m->dln, x, PW(p->ln1w), a->ln1_mean, a->ln1_rstd, N, C);
}

// ---- projector / predictor ------------------------------------------------------------------------

// BatchNorm1d over each view's B rows separately (the official code calls projector(u1), projector(u2)).
static void bn_views_forward(vm_model *m, const bn_p *p, float *out, float *mean, float *rstd, const float *inp, int B,
                             int C) {
    for (int v = 0; v < 2; v++)
        m->be->batchnorm_forward(out + (size_t)v * B * C, mean + (size_t)v * C, rstd + (size_t)v * C, PW(p->rm), PW(p->rv),
                                 inp + (size_t)v * B * C, PW(p->w), PW(p->b), B, C, BN_EPS, BN_MOMENTUM);
}

static void bn_views_backward(vm_model *m, const bn_p *p, float *dinp, const float *dout, const float *inp,
                              const float *mean, const float *rstd, int B, int C) {
    for (int v = 0; v < 2; v++)
        m->be->batchnorm_backward(dinp + (size_t)v * B * C, GW(p->w), GW(p->b), dout + (size_t)v * B * C,
                                  inp + (size_t)v * B * C, PW(p->w), mean + (size_t)v * C, rstd + (size_t)v * C, B, C);
}

// ---- forward + backward -----------------------------------------------------------------------------

// Pairs first_pair .. first_pair + B - 1 of the step's batch; gradients of scale * total are added
// to the gradient buffer (zeroed first when zero_grads).
// views_on_backend: views is backend memory (else host memory, uploaded first).
static int forward_backward(vm_model *m, const uint8_t *views, int views_on_backend, int B, long step, int first_pair,
                            float scale, int zero_grads, vm_losses *out, vm_error *err) {
    const vm_backend_ops *be = m->be;
    if (B < 1 || B > m->max_batch)
        return vm_fail(err, VM_EINVAL, "model: batch of %d pairs outside [1, %d]", B, m->max_batch);
    if (m->con != VM_CON_NONE && B < 2)
        return vm_fail(err, VM_EINVAL, "model: the %s loss and BatchNorm need at least 2 pairs, got %d",
                       vm_config_enum_name("loss", "contrastive", m->con), B);
    int NB = 2 * B, L = m->L, K = m->K, Te = 1 + K, Td = 1 + L, D = m->D, Dd = m->Dd, PD = m->PD;
    int S = m->img;
    size_t img_bytes = (size_t)S * S * 3;

    // Inputs: views (B, 2, S, S, 3) uploaded straight from the caller's buffer (pinned memory
    // uploads fast) unless already on the backend, reordered view-major (2, B, S, S, 3) there;
    // masks drawn and uploaded.
    const uint8_t *in = views;
    if (!views_on_backend) {
        be->to_device(m->img_in, views, (size_t)NB * img_bytes);
        in = m->img_in;
    }
    for (int v = 0; v < 2; v++)  // view v of every pair: B images, 2 images apart in the input
        be->copy_rows(m->img_u8 + (size_t)v * B * img_bytes, img_bytes, in + (size_t)v * img_bytes, 2 * img_bytes,
                      img_bytes, (size_t)B);
    draw_masks(m, B, step, first_pair);
    m->last_B = B;
    be->to_device(m->ids_keep, m->h_keep, (size_t)NB * K * sizeof(int32_t));
    be->to_device(m->ids_restore, m->h_restore, (size_t)NB * L * sizeof(int32_t));
    be->to_device(m->mask, m->h_mask, (size_t)NB * L * sizeof(float));
    if (zero_grads) be->zero(m->grads, m->nfloats * sizeof(float));

    float w_rec = (float)m->cfg.loss.w_rec, w_con = (float)vm_model_w_con(&m->cfg, step);
    vm_losses ls = {0};
    ls.w_rec = w_rec;
    ls.w_con = w_con;

    // ---- encoder: patch embedding (+ pos) of all L patches, then keep K (MAE order) ----
    be->patchify(m->patches, m->img_u8, NB, S, S, m->P, 1, IMNET_MEAN, IMNET_STD);
    be->patchify(m->target, m->img_u8, NB, S, S, m->P, 0, IMNET_MEAN, IMNET_STD);
    be->matmul_forward(m->pe, m->patches, PW(m->pe_w), PW(m->pe_b), NB * L, PD, D);
    be->add_rows(m->pe, m->pe, PW(m->pos) + D, NB, L, D);  // pos_embed[:, 1:]
    // cls_token + pos_embed[:, :1]: the cls row of pos_embed is zero, so the token is cls_token.
    be->gather_tokens(m->x0, m->pe, PW(m->cls), m->ids_keep, NB, L, K, D);
    const float *x = m->x0;
    for (int i = 0; i < m->depth; i++) {
        block_forward(m, &m->enc[i], &m->ea[i], x, NB, Te, D, m->NH, m->HD);
        x = m->ea[i].res2;
    }
    const float *enc_in_norm = x;
    be->layernorm_forward(m->enc_out, m->enc_mean, m->enc_rstd, x, PW(m->norm_w), PW(m->norm_b), NB * Te, D, LN_EPS);

    // ---- decoder ----
    be->matmul_forward(m->dec_emb, m->enc_out, PW(m->de_w), PW(m->de_b), NB * Te, D, Dd);
    be->unshuffle_tokens(m->dec_x0, m->dec_emb, PW(m->mask_tok), m->ids_restore, NB, L, K, Dd);
    be->add_rows(m->dec_x0, m->dec_x0, PW(m->dpos), NB, Td, Dd);
    x = m->dec_x0;
    for (int i = 0; i < m->ddepth; i++) {
        block_forward(m, &m->dec[i], &m->da[i], x, NB, Td, Dd, m->DNH, m->HDd);
        x = m->da[i].res2;
    }
    const float *dec_in_norm = x;
    be->layernorm_forward(m->dec_out, m->dec_mean, m->dec_rstd, x, PW(m->dn_w), PW(m->dn_b), NB * Td, Dd, LN_EPS);
    // decoder_pred then x[:, 1:]: dropping the class token first computes the same rows.
    be->drop_first_token(m->dec_drop, m->dec_out, NB, Td, Dd);
    be->matmul_forward(m->pred, m->dec_drop, PW(m->dp_w), PW(m->dp_b), NB * L, Dd, PD);
    // Reconstruction loss over both views at once: every view masks L - K patches, so the mean
    // over all masked patches equals 0.5 * (loss(view 1) + loss(view 2)).
    be->mae_loss(&ls.rec, m->dpred, m->pred, m->target, m->mask, NB, L, PD, m->norm_pix, w_rec * scale);

    // ---- global feature, projector, contrastive loss ----
    int ph = m->ph, po = m->po, qh = m->qh;
    if (m->con != VM_CON_NONE) {
        be->pool_forward(m->pooled, m->enc_out, NB, Te, D, m->pool_cls);
        be->matmul_forward(m->j_h1, m->pooled, PW(m->pj0_w), PW(m->pj0_b), NB, D, ph);
        bn_views_forward(m, &m->pj1, m->j_bn1, m->j_m1, m->j_r1, m->j_h1, B, ph);
        be->relu_forward(m->j_a1, m->j_bn1, (size_t)NB * ph);
        be->matmul_forward(m->j_h2, m->j_a1, PW(m->pj3_w), PW(m->pj3_b), NB, ph, ph);
        bn_views_forward(m, &m->pj4, m->j_bn2, m->j_m2, m->j_r2, m->j_h2, B, ph);
        be->relu_forward(m->j_a2, m->j_bn2, (size_t)NB * ph);
        be->matmul_forward(m->z, m->j_a2, PW(m->pj6_w), PW(m->pj6_b), NB, ph, po);
        float *z1 = m->z, *z2 = m->z + (size_t)B * po, *dz1 = m->dz, *dz2 = m->dz + (size_t)B * po;
        if (m->con == VM_CON_INFONCE) {
            be->infonce_loss(&ls.con, dz1, dz2, z1, z2, B, po, (float)m->cfg.loss.temperature, w_con * scale);
        } else if (m->con == VM_CON_VICREG) {
            be->vicreg_loss(&ls.con, ls.con_terms, dz1, dz2, z1, z2, B, po, (float)m->cfg.loss.vicreg_sim,
                            (float)m->cfg.loss.vicreg_var, (float)m->cfg.loss.vicreg_cov, w_con * scale);
        } else {  // SimSiam: p = predictor(z); loss on (p, stop-grad z)
            be->matmul_forward(m->q_h, m->z, PW(m->pr0_w), NULL, NB, po, qh);
            bn_views_forward(m, &m->pr1, m->q_bn, m->q_m, m->q_r, m->q_h, B, qh);
            be->relu_forward(m->q_a, m->q_bn, (size_t)NB * qh);
            be->matmul_forward(m->p, m->q_a, PW(m->pr3_w), PW(m->pr3_b), NB, qh, po);
            be->simsiam_loss(&ls.con, m->dp, m->dp + (size_t)B * po, m->p, m->p + (size_t)B * po, z1, z2, B, po,
                             w_con * scale);
            be->matmul_backward(m->s_a, GW(m->pr3_w), GW(m->pr3_b), m->dp, m->q_a, PW(m->pr3_w), NB, qh, po);
            be->relu_backward(m->s_b, m->q_bn, m->s_a, (size_t)NB * qh);
            bn_views_backward(m, &m->pr1, m->s_a, m->s_b, m->q_h, m->q_m, m->q_r, B, qh);
            be->matmul_backward(m->dz, GW(m->pr0_w), NULL, m->s_a, m->z, PW(m->pr0_w), NB, po, qh);
        }
        m->bn_batches += 2;
    }
    ls.total = w_rec * ls.rec + w_con * ls.con;

    // ---- backward: decoder ----
    be->matmul_backward(m->dln, GW(m->dp_w), GW(m->dp_b), m->dpred, m->dec_drop, PW(m->dp_w), NB * L, Dd, PD);
    be->drop_first_token_backward(m->tmp, m->dln, NB, Td, Dd);
    be->zero(m->dres, (size_t)NB * Td * Dd * sizeof(float));
    be->layernorm_backward(m->dres, GW(m->dn_w), GW(m->dn_b), m->tmp, dec_in_norm, PW(m->dn_w), m->dec_mean, m->dec_rstd,
                           NB * Td, Dd);
    for (int i = m->ddepth - 1; i >= 0; i--)
        block_backward(m, &m->da[i], &m->dec[i], i ? m->da[i - 1].res2 : m->dec_x0, NB, Td, Dd, m->DNH, m->HDd);
    // decoder_pos_embed is fixed: its gradient is not needed.  dres = d(dec_x0) = d(unshuffled).
    be->unshuffle_tokens_backward(m->dln, GW(m->mask_tok), m->dres, m->ids_restore, NB, L, K, Dd);
    be->matmul_backward(m->denc, GW(m->de_w), GW(m->de_b), m->dln, m->enc_out, PW(m->de_w), NB * Te, D, Dd);

    // ---- backward: projector into the pooled feature ----
    if (m->con != VM_CON_NONE) {
        be->matmul_backward(m->s_a, GW(m->pj6_w), GW(m->pj6_b), m->dz, m->j_a2, PW(m->pj6_w), NB, ph, po);
        be->relu_backward(m->s_b, m->j_bn2, m->s_a, (size_t)NB * ph);
        bn_views_backward(m, &m->pj4, m->s_a, m->s_b, m->j_h2, m->j_m2, m->j_r2, B, ph);
        be->matmul_backward(m->s_b, GW(m->pj3_w), GW(m->pj3_b), m->s_a, m->j_a1, PW(m->pj3_w), NB, ph, ph);
        be->relu_backward(m->s_a, m->j_bn1, m->s_b, (size_t)NB * ph);
        bn_views_backward(m, &m->pj1, m->s_b, m->s_a, m->j_h1, m->j_m1, m->j_r1, B, ph);
        be->matmul_backward(m->dpooled, GW(m->pj0_w), GW(m->pj0_b), m->s_b, m->pooled, PW(m->pj0_w), NB, D, ph);
        be->pool_backward(m->denc, m->dpooled, NB, Te, D, m->pool_cls);
    }

    // ---- backward: encoder ----
    be->zero(m->dres, (size_t)NB * Te * D * sizeof(float));
    be->layernorm_backward(m->dres, GW(m->norm_w), GW(m->norm_b), m->denc, enc_in_norm, PW(m->norm_w), m->enc_mean,
                           m->enc_rstd, NB * Te, D);
    for (int i = m->depth - 1; i >= 0; i--)
        block_backward(m, &m->ea[i], &m->enc[i], i ? m->ea[i - 1].res2 : m->x0, NB, Te, D, m->NH, m->HD);
    be->gather_tokens_backward(m->tmp, GW(m->cls), m->dres, m->ids_keep, NB, L, K, D);
    // pos_embed is fixed; the patch projection's input needs no gradient.
    be->matmul_backward(NULL, GW(m->pe_w), GW(m->pe_b), m->tmp, m->patches, PW(m->pe_w), NB * L, PD, D);
    be->sync();
    if (out) *out = ls;
    if (!isfinite(ls.total))
        return vm_fail(err, VM_ERANGE, "model: step %ld: loss is not finite (rec %g, con %g)", step, ls.rec, ls.con);
    return 0;
}

int vm_model_forward_backward(vm_model *m, const uint8_t *views, int B, long step, vm_losses *out, vm_error *err) {
    return forward_backward(m, views, 0, B, step, 0, 1.0f, 1, out, err);
}

int vm_model_forward_backward_dev(vm_model *m, const uint8_t *views, int B, long step, vm_losses *out, vm_error *err) {
    return forward_backward(m, views, 1, B, step, 0, 1.0f, 1, out, err);
}

void vm_model_zero_grads(vm_model *m) { m->be->zero(m->grads, m->nfloats * sizeof(float)); }

int vm_model_forward_backward_micro(vm_model *m, const uint8_t *views, int B, long step, int first_pair, float scale,
                                    vm_losses *out, vm_error *err) {
    if (first_pair < 0) return vm_fail(err, VM_EINVAL, "model: first_pair %d", first_pair);
    return forward_backward(m, views, 0, B, step, first_pair, scale, 0, out, err);
}

// ---- features (no masking) ---------------------------------------------------------------------------

// The encoder over all L patches (mask ratio 0, as MAE's features for linear probing and kNN) in
// chunks that fit the activations planned for 2*max_batch masked views: a chunk of n images needs
// n*(1+L) token rows and n*NH*(1+L)^2 attention entries.
int vm_model_features(vm_model *m, const uint8_t *imgs, int N, float *out, vm_error *err) {
    const vm_backend_ops *be = m->be;
    int NB = 2 * m->max_batch, L = m->L, T = 1 + L, D = m->D, S = m->img;
    size_t n = m->enc_rows / T;
    if (n * m->NH * T * T > m->enc_att) n = m->enc_att / ((size_t)m->NH * T * T);
    if (n * L > m->keep_cap) n = m->keep_cap / L;
    if (n > (size_t)NB) n = NB;  // image and patch buffers
    if (N < 0) return vm_fail(err, VM_EINVAL, "model: %d images", N);
    size_t img_bytes = (size_t)S * S * 3;
    int32_t *ids = malloc(n * L * sizeof *ids);
    if (!ids) return vm_fail(err, VM_ENOMEM, "model: out of memory");
    for (size_t i = 0; i < n * L; i++) ids[i] = (int32_t)(i % L);
    be->to_device(m->ids_keep, ids, n * L * sizeof(int32_t));
    free(ids);
    for (int at = 0; at < N; at += (int)n) {
        int c = N - at < (int)n ? N - at : (int)n;
        be->to_device(m->img_u8, imgs + (size_t)at * img_bytes, (size_t)c * img_bytes);
        be->patchify(m->patches, m->img_u8, c, S, S, m->P, 1, IMNET_MEAN, IMNET_STD);
        be->matmul_forward(m->pe, m->patches, PW(m->pe_w), PW(m->pe_b), c * L, m->PD, D);
        be->add_rows(m->pe, m->pe, PW(m->pos) + D, c, L, D);
        be->gather_tokens(m->x0, m->pe, PW(m->cls), m->ids_keep, c, L, L, D);
        const float *x = m->x0;
        for (int i = 0; i < m->depth; i++) {
            block_forward(m, &m->enc[i], &m->ea[i], x, c, T, D, m->NH, m->HD);
            x = m->ea[i].res2;
        }
        be->layernorm_forward(m->enc_out, m->enc_mean, m->enc_rstd, x, PW(m->norm_w), PW(m->norm_b), c * T, D, LN_EPS);
        be->pool_forward(m->pooled, m->enc_out, c, T, D, m->pool_cls);
        be->to_host(out + (size_t)at * D, m->pooled, (size_t)c * D * sizeof(float));
    }
    be->sync();
    return 0;
}

// ---- optimizer ----------------------------------------------------------------------------------------

void vm_model_optimizer_step(vm_model *m, long step, float *lr_out, float *norm_out) {
    const vm_backend_ops *be = m->be;
    // One reduction over the whole buffer (one host round trip on CUDA): every gradient outside the
    // trainable tensors (fixed embeddings, running stats, alignment gaps) is zero, never written.
    float ss = 0;
    be->sumsq(&ss, m->grads, m->nfloats);
    float norm = sqrtf(ss);
    float scale = 1.0f;
    double clip = m->cfg.optim.clip_grad;
    // torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6), applied when < 1.
    if (clip > 0 && clip / (norm + 1e-6) < 1.0) scale = (float)(clip / (norm + 1e-6));
    float lr = (float)vm_model_lr(&m->cfg, step, m->total_steps);
    const typeof(m->cfg.optim) *o = &m->cfg.optim;
    be->adamw_ranges(m->params, m->grads, m->m, m->v, m->runs, m->nruns, lr, (float)o->beta1, (float)o->beta2,
                     (float)o->eps, (float)o->weight_decay, (int)(step + 1), scale);
    be->sync();
    if (lr_out) *lr_out = lr;
    if (norm_out) *norm_out = norm;
}

// ---- accessors --------------------------------------------------------------------------------------

int vm_model_num_tensors(const vm_model *m) { return m->ntab; }
const vm_tensor_info *vm_model_tensor(const vm_model *m, int i) { return i >= 0 && i < m->ntab ? &m->tab[i] : NULL; }
const vm_tensor_info *vm_model_find(const vm_model *m, const char *name) {
    for (int i = 0; i < m->ntab; i++)
        if (!strcmp(m->tab[i].name, name)) return &m->tab[i];
    return NULL;
}
size_t vm_model_num_floats(const vm_model *m) { return m->nfloats; }
size_t vm_model_num_trainable(const vm_model *m) { return m->ntrain; }
float *vm_model_params(vm_model *m) { return m->params; }
float *vm_model_grads(vm_model *m) { return m->grads; }
float *vm_model_adam_m(vm_model *m) { return m->m; }
float *vm_model_adam_v(vm_model *m) { return m->v; }
int64_t vm_model_bn_batches(const vm_model *m) { return m->bn_batches; }
void vm_model_set_bn_batches(vm_model *m, int64_t n) { m->bn_batches = n; }
const vm_config *vm_model_config(const vm_model *m) { return &m->cfg; }
const vm_backend_ops *vm_model_backend(const vm_model *m) { return m->be; }

void vm_model_last_masks(const vm_model *m, const int32_t **ids_keep, const int32_t **ids_restore, int *B, int *K,
                         int *L) {
    if (ids_keep) *ids_keep = m->h_keep;
    if (ids_restore) *ids_restore = m->h_restore;
    if (B) *B = m->last_B;
    if (K) *K = m->K;
    if (L) *L = m->L;
}

// ---- checkpoints --------------------------------------------------------------------------------------

int vm_model_save(vm_model *m, const char *path, const char *const *meta, int with_optimizer, vm_error *err) {
    size_t bytes = m->nfloats * sizeof(float);
    int nbuf = with_optimizer ? 3 : 1;
    float *h = malloc(bytes * nbuf);
    vm_st_tensor *t = calloc((size_t)m->ntab * 3, sizeof *t);
    char (*names)[96] = calloc((size_t)m->ntab * 2, sizeof *names);
    if (!h || !t || !names) {
        free(h), free(t), free(names);
        return vm_fail(err, VM_ENOMEM, "%s: out of memory", path);
    }
    m->be->to_host(h, m->params, bytes);
    if (with_optimizer) {
        m->be->to_host(h + m->nfloats, m->m, bytes);
        m->be->to_host(h + 2 * m->nfloats, m->v, bytes);
    }
    int n = 0, nn = 0;
    int64_t counter = m->bn_batches;
    for (int pass = 0; pass < nbuf; pass++)
        for (int i = 0; i < m->ntab; i++) {
            const vm_tensor_info *ti = &m->tab[i];
            if (pass && ti->kind != VM_TENSOR_PARAM) continue;
            vm_st_tensor *o = &t[n++];
            o->ndim = ti->ndim;
            memcpy(o->shape, ti->shape, sizeof ti->shape);
            if (pass) {
                snprintf(names[nn], sizeof names[nn], "optim.%s.%s", pass == 1 ? "m" : "v", ti->name);
                o->name = names[nn++];
            } else {
                o->name = ti->name;
            }
            if (ti->kind == VM_TENSOR_COUNTER) {
                o->dtype = "I64";
                o->data = &counter;
                o->nbytes = sizeof counter;
            } else {
                o->dtype = "F32";
                o->data = h + (size_t)pass * m->nfloats + ti->offset;
                o->nbytes = ti->numel * sizeof(float);
            }
        }
    // The effective configuration rides along as "config" (INI text) unless the caller gives one,
    // so that a checkpoint alone rebuilds its model (vicmae eval/export read it).
    const char *all[130];
    int nm = 0, has_config = 0;
    for (int i = 0; meta && meta[i] && meta[i + 1] && nm < 126; i += 2) {
        has_config |= !strcmp(meta[i], "config");
        all[nm++] = meta[i], all[nm++] = meta[i + 1];
    }
    char *ini = NULL;
    if (!has_config && vm_config_to_text(&m->cfg, &ini, NULL, NULL) == 0) all[nm++] = "config", all[nm++] = ini;
    all[nm] = NULL;
    int rc = vm_st_write(path, t, n, all, err);
    free(ini);
    free(h), free(t), free(names);
    return rc;
}

static int shape_equal(const vm_st_tensor *s, const vm_tensor_info *t) {
    if (s->ndim != t->ndim) return 0;
    for (int d = 0; d < t->ndim; d++)
        if (s->shape[d] != t->shape[d]) return 0;
    return 1;
}

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t n = snprintf(buf, cap, "(");
    for (int d = 0; d < ndim && n < cap; d++) n += snprintf(buf + n, cap - n, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (n < cap) snprintf(buf + n, cap - n, ")");
}

int vm_model_load(vm_model *m, const char *path, int with_optimizer, vm_error *err) {
    vm_st_file *f;
    int rc = vm_st_read(&f, path, err);
    if (rc) return rc;
    size_t bytes = m->nfloats * sizeof(float);
    int nbuf = with_optimizer ? 3 : 1;
    float *h = calloc(m->nfloats * nbuf, sizeof(float));
    if (!h) {
        vm_st_close(f);
        return vm_fail(err, VM_ENOMEM, "%s: out of memory", path);
    }
    int64_t counter = 0;
    for (int pass = 0; pass < nbuf && !rc; pass++)
        for (int i = 0; i < m->ntab && !rc; i++) {
            const vm_tensor_info *ti = &m->tab[i];
            if (pass && ti->kind != VM_TENSOR_PARAM) continue;
            char name[128];
            if (pass) snprintf(name, sizeof name, "optim.%s.%s", pass == 1 ? "m" : "v", ti->name);
            else snprintf(name, sizeof name, "%s", ti->name);
            const vm_st_tensor *s = vm_st_find(f, name);
            const char *want = ti->kind == VM_TENSOR_COUNTER ? "I64" : "F32";
            char a[96], b[96];
            if (!s) {
                rc = vm_fail(err, VM_ECORRUPT, "%s: tensor %s is missing (not a checkpoint of this model%s)", path, name,
                             pass ? " with optimizer state" : "");
            } else if (strcmp(s->dtype, want)) {
                rc = vm_fail(err, VM_ECORRUPT, "%s: tensor %s has dtype %s, expected %s", path, name, s->dtype, want);
            } else if (!shape_equal(s, ti)) {
                shape_str(a, sizeof a, s->ndim, s->shape);
                shape_str(b, sizeof b, ti->ndim, ti->shape);
                rc = vm_fail(err, VM_EINVAL, "%s: tensor %s has shape %s, the configured model needs %s", path, name, a, b);
            } else if (ti->kind == VM_TENSOR_COUNTER) {
                memcpy(&counter, s->data, sizeof counter);
            } else {
                const float *src = s->data;
                for (size_t k = 0; k < ti->numel && !rc; k++)
                    if (!isfinite(src[k]))
                        rc = vm_fail(err, VM_ECORRUPT, "%s: tensor %s holds a non-finite value at %zu", path, name, k);
                memcpy(h + (size_t)pass * m->nfloats + ti->offset, s->data, s->nbytes);
            }
        }
    vm_st_close(f);
    if (!rc) {
        m->be->to_device(m->params, h, bytes);
        if (with_optimizer) {
            m->be->to_device(m->m, h + m->nfloats, bytes);
            m->be->to_device(m->v, h + 2 * m->nfloats, bytes);
        }
        m->bn_batches = counter;
    }
    free(h);
    return rc;
}
