// trainer/model.h — the ViC-MAE model: parameters, forward + backward, losses, AdamW, checkpoints.
//
// Semantics follow the official ViC-MAE code (models_vicmae.py, itself MAE's models_mae.py plus a
// projector and InfoNCE) and tensor names are its state_dict names, so the official PyTorch model
// (or timm, for the encoder) loads our checkpoints with load_state_dict.
//
// Memory is llm.c style: parameters, gradients and the AdamW moments m and v are each ONE
// contiguous backend buffer of float32 with a table of named tensors at fixed offsets (in
// state_dict order); activations are planned once for max_batch pairs.  Every computation goes
// through the vm_backend_ops table (trainer/backend.h), so the same code runs on CPU and CUDA; the
// host only draws the random masks (Philox, common/rng.h) and uploads their indices.
//
// One step, as the training loop drives it:
//   vm_model_forward_backward(m, views, B, step, &losses, &err);   // gradients of the total loss
//   vm_model_optimizer_step(m, step, &lr, &grad_norm);             // AdamW with the schedules
//
// Conventions
// - A batch is B pairs: views (B, 2, H, W, 3) uint8, H = W = img_size, as the pipeline delivers.
//   Inside, the two views are stacked view-major as 2B samples [view 0 of every pair; view 1 ...],
//   which is how the encoder and decoder see them.  BatchNorm in the projector/predictor uses each
//   view's batch statistics separately (the official code calls projector(u1), projector(u2)).
// - `step` is the 0-based number of optimizer steps taken before this one.  Masks are keyed by
//   (run.seed, step, pair, view); AdamW's bias correction uses t = step + 1; lr and w_con are pure
//   functions of step, so a resumed run continues identically.
// - Param groups, exactly MAE's main_pretrain.py (timm add_weight_decay): NO weight decay for every
//   bias and every 1-D tensor (LayerNorm/BatchNorm weights and biases); decay for all matrices and
//   for cls_token and mask_token (they are 3-D (1,1,C), which timm's rule decays).  pos_embed,
//   decoder_pos_embed (fixed sin-cos) and BatchNorm running statistics are not trained.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "common/config.h"
#include "common/error.h"
#include "trainer/backend.h"

typedef enum {
    VM_TENSOR_PARAM = 0,    // trained by AdamW
    VM_TENSOR_FIXED = 1,    // in the state_dict, never trained (pos_embed, decoder_pos_embed)
    VM_TENSOR_RUNNING = 2,  // BatchNorm running_mean / running_var (updated in the forward pass)
    VM_TENSOR_COUNTER = 3,  // BatchNorm num_batches_tracked: int64 scalar, not in the float buffer
} vm_tensor_kind;

typedef struct vm_tensor_info {
    char name[80];          // state_dict name, e.g. "blocks.0.attn.qkv.weight"
    int ndim;
    int64_t shape[4];
    size_t offset;          // in floats from the start of the parameter buffer (0 for counters)
    size_t numel;           // floats in the buffer (0 for counters)
    int kind;               // vm_tensor_kind
    int decay;              // 1 = AdamW weight decay applies
} vm_tensor_info;

typedef struct vm_losses {
    float total;            // w_rec * rec + w_con * con
    float rec;              // reconstruction loss: mean of the two views' masked-patch MSE
    float con;              // contrastive loss (0 when contrastive = none)
    float w_rec, w_con;     // weights used at this step (w_con after its warmup ramp)
    float con_terms[3];     // VICReg: unweighted invariance, variance, covariance; else 0
} vm_losses;

typedef struct vm_model vm_model;

// Plan the model for batches of up to max_batch pairs; parameters are zero until init or load.
// Errors: shapes the model cannot take (embed dims not multiples of 4 for the 2D sin-cos
// embedding, ...), out of backend memory.
int vm_model_create(vm_model **out, const vm_config *cfg, const vm_backend_ops *be, int max_batch,
                    vm_error *err);
void vm_model_free(vm_model *m);
// 1 when the block activations that only feed matrix products (LayerNorm outputs, qkv, attention
// output, fc1 and GELU outputs, proj/fc2 outputs before the residual add) are stored as bf16:
// [train] activations = bf16 (which needs precision = bf16) on a backend with the bf16-activation
// ops of trainer/backend.h (CUDA, and the cpu-bf16 reference).  Elsewhere they stay fp32 (the CPU
// backend computes in fp32 whatever the config says).  The residual stream, LayerNorm statistics,
// softmax probabilities, losses, gradients, weights and optimizer state are fp32 in every case.
int vm_model_bf16_activations(const vm_model *m);
// What vm_model_create would allocate on the backend, without allocating: parameters + gradients +
// AdamW m and v (4 buffers), and activations for max_batch pairs (with each block's LayerNorm and
// GELU outputs unless cfg->train.recompute; the block activations in bf16 when
// cfg->train.activations = bf16, as on a backend that has bf16 activations).  E.g. to pick the
// largest micro-batch that fits a GPU.
int vm_model_memory(const vm_config *cfg, int max_batch, size_t *param_bytes, size_t *act_bytes, vm_error *err);

// MAE initialisation from a seed (Philox, stream per tensor): xavier_uniform for every Linear and
// the patch projection viewed as (D, 3*P*P), zero biases, LayerNorm/BatchNorm (1, 0), running
// stats (0, 1), cls_token and mask_token normal(0, 0.02), fixed 2D sin-cos position embeddings.
// Optimizer moments are zeroed.
void vm_model_init(vm_model *m, uint64_t seed);

// One forward and backward pass on B pairs (2 <= B <= max_batch when a contrastive loss is on,
// 1 <= B otherwise).  Gradients of losses->total are left in the gradient buffer (zeroed first).
// views is host memory (pinned memory makes the CUDA upload faster), read before the call returns.
int vm_model_forward_backward(vm_model *m, const uint8_t *views, int B, long step, vm_losses *losses,
                              vm_error *err);
// The same with views already in backend memory (device memory on CUDA, e.g. a slot of the input
// ring of trainer/feed.h): nothing is uploaded; views is read by the ops issued before the return.
int vm_model_forward_backward_dev(vm_model *m, const uint8_t *views, int B, long step, vm_losses *losses,
                                  vm_error *err);

// Gradient accumulation (MAE's accum_iter) when a batch does not fit: zero the gradients, then
// for each micro-batch of B pairs (pairs first_pair .. first_pair+B-1 of the step's batch, which
// keys their masks) add the gradients of scale * total (scale = 1/accum_iter as MAE divides the
// loss), then one optimizer step.  Losses come back unscaled.  BatchNorm statistics and the
// contrastive negatives are those of each micro-batch, as in the official code with accum_iter.
void vm_model_zero_grads(vm_model *m);
int vm_model_forward_backward_micro(vm_model *m, const uint8_t *views, int B, long step, int first_pair, float scale,
                                    vm_losses *losses, vm_error *err);

// AdamW on every trainable tensor with the lr of this step; gradients clipped to optim.clip_grad
// by global norm when it is > 0.  *lr gets the lr used, *grad_norm the norm before clipping.
void vm_model_optimizer_step(vm_model *m, long step, float *lr, float *grad_norm);

// Global features of N single images (N, H, W, 3) uint8 without masking (the encoder over all
// patches, then the configured pool: mean of patch tokens or the class token) -> out (N, D) host
// floats.  Runs in chunks that fit the planned activations; overwrites the saved activations.
int vm_model_features(vm_model *m, const uint8_t *imgs, int N, float *out, vm_error *err);

// Schedules (pure functions of the config and step).
// lr = base_lr * batch_size / 256; linear warmup from 0 over warmup_steps, then a half-cycle
// cosine down to min_lr at total_steps (MAE's adjust_learning_rate, per step instead of per
// fractional epoch).  total_steps <= warmup_steps: constant after warmup.
double vm_model_lr(const vm_config *cfg, long step, long total_steps);
// w_con rising from 0 to loss.w_con over loss.con_warmup_steps (linear or cosine); 0 steps = constant.
double vm_model_w_con(const vm_config *cfg, long step);
// The total step count the cosine ends at (optim.steps when set, else what the caller says).
void vm_model_set_total_steps(vm_model *m, long total_steps);

// ---- the tensor table and buffers -------------------------------------------------------------
int vm_model_num_tensors(const vm_model *m);
const vm_tensor_info *vm_model_tensor(const vm_model *m, int i);
const vm_tensor_info *vm_model_find(const vm_model *m, const char *name);  // NULL if absent
size_t vm_model_num_floats(const vm_model *m);   // length of each of params, grads, m, v
size_t vm_model_num_trainable(const vm_model *m);
// Backend pointers (device memory for CUDA).
float *vm_model_params(vm_model *m);
float *vm_model_grads(vm_model *m);
float *vm_model_adam_m(vm_model *m);
float *vm_model_adam_v(vm_model *m);
// BatchNorm num_batches_tracked (the same for every BatchNorm layer: two calls per step).
int64_t vm_model_bn_batches(const vm_model *m);
void vm_model_set_bn_batches(vm_model *m, int64_t n);
const vm_config *vm_model_config(const vm_model *m);
const vm_backend_ops *vm_model_backend(const vm_model *m);
// Masks of the last forward pass (host): ids_keep (2, B, K) and ids_restore (2, B, L), view-major.
void vm_model_last_masks(const vm_model *m, const int32_t **ids_keep, const int32_t **ids_restore, int *B,
                         int *K, int *L);

// ---- checkpoints (safetensors; see trainer/safetensors.h) -------------------------------------
// The state_dict (params in table order, num_batches_tracked as I64) plus, with with_optimizer,
// the AdamW moments as "optim.m.<name>" / "optim.v.<name>" of every trainable tensor.  meta:
// NULL-terminated key, value pairs stored in "__metadata__" (strings; at most 63), plus "config",
// the model's effective configuration as INI text, unless meta has one.  Written atomically.
int vm_model_save(vm_model *m, const char *path, const char *const *meta, int with_optimizer, vm_error *err);
// Load tensors by name: every state_dict tensor must be present with its shape (other names are
// ignored); with_optimizer also requires the moments.  A corrupt or mismatched file is refused with
// the reason and leaves the model unchanged.
int vm_model_load(vm_model *m, const char *path, int with_optimizer, vm_error *err);
