// common/config.h — the typed configuration of a vicmae run.
//
// INI files (configs/*.ini) read with inih; every key has a type, a default and a range or a set of
// allowed values, listed in one schema table (common/config.c, also printed by
// `vicmae config keys`).  An unknown key or bad value is an error naming file, line, key and what
// is allowed; so is a key set twice in one file (sections may repeat).  `--set section.key=value` overrides after the file.  Key names follow the official
// ViC-MAE/MAE code where it has one.
#pragma once
#include <stdio.h>
#include "common/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VM_PATH_MAX 1024

typedef enum { VM_BACKEND_AUTO, VM_BACKEND_CPU, VM_BACKEND_CUDA } vm_backend;
typedef enum { VM_HW_AUTO, VM_HW_OFF } vm_hw_mode;
typedef enum { VM_POLICY_PAIR, VM_POLICY_CLIP, VM_POLICY_MULTIVIEW } vm_sample_policy;
typedef enum { VM_PAIR_UNIFORM, VM_PAIR_DISTANT, VM_PAIR_SAME } vm_pair_mode;
typedef enum { VM_UNIT_SECONDS, VM_UNIT_FRAMES } vm_gap_unit;
typedef enum { VM_SHORT_CLAMP, VM_SHORT_SKIP } vm_short_video;
typedef enum { VM_AUG_NONE, VM_AUG_SIMCLR, VM_AUG_BYOL } vm_aug_preset;
typedef enum { VM_CODEC_LZ4, VM_CODEC_NONE } vm_codec;
typedef enum { VM_POOL_MEAN, VM_POOL_CLS } vm_pool;
typedef enum { VM_CON_INFONCE, VM_CON_SIMSIAM, VM_CON_VICREG, VM_CON_NONE } vm_contrastive;
typedef enum { VM_WARMUP_LINEAR, VM_WARMUP_COSINE } vm_warmup_shape;
typedef enum { VM_PREC_FP32, VM_PREC_BF16 } vm_precision;
typedef enum { VM_ACT_FP32, VM_ACT_BF16 } vm_act_dtype;

typedef struct vm_config {
    struct {
        long seed;
        char out_dir[VM_PATH_MAX];   // RUN_DIR: metrics.jsonl, checkpoints, plots
        int backend;                 // vm_backend
        int threads;                 // 0 = all cores
        int log_every;               // steps between progress lines
    } run;
    struct {
        char path[VM_PATH_MAX];      // directory (scanned recursively) or manifest file
        char synth_dir[VM_PATH_MAX]; // where `make run` generates the demo dataset
    } data;
    struct {
        int hw;                      // vm_hw_mode
        int timeout_ms;              // bus timeout for any decoder wait
        char index_cache[VM_PATH_MAX]; // "" = $XDG_CACHE_HOME/vicmae/index or ~/.cache/vicmae/index; "off" = none
        int decode_short_side;       // decode scaled so the short side is this (0 = native)
    } decoder;
    struct {
        int policy;                  // vm_sample_policy
        int mode;                    // vm_pair_mode
        double gap_min, gap_max;     // temporal gap range for pairs
        int gap_unit;                // vm_gap_unit
        int pairs_per_video;         // K pairs drawn from one opened video
        int short_video;             // vm_short_video
        int clip_len;                // T frames per clip
        int clip_stride;             // frames between clip frames (0 = spread over the video)
        int num_clips, num_crops;    // multiview: temporal clips x spatial crops
        double scale_min, scale_max; // RandomResizedCrop scale
        double ratio_min, ratio_max; // RandomResizedCrop aspect ratio
        double flip_p;
        int aug_preset;              // vm_aug_preset (colour jitter etc.; none for video)
        double jitter_p, jitter_brightness, jitter_contrast, jitter_saturation, jitter_hue;
        double grayscale_p, blur_p, solarize_p;
    } sampler;
    struct {
        char endpoint[256];          // coordinator endpoint the trainer binds, workers connect
        int workers;                 // local workers for `vicmae run` (0 = cores - 1, at least 1)
        int chunk_samples;           // samples per message from a worker
        int credits;                 // receive slots granted to workers (bounds memory)
        int heartbeat_ms;
        int lease_timeout_ms;        // a leased unit is re-issued after this long without heartbeat
        int codec;                   // vm_codec
        int epochs;                  // stop after this many epochs (0 = optim.epochs)
        int ordered;                 // bool: batches in the coordinator's unit order, whatever the workers
        char curve_secret_key[VM_PATH_MAX]; // the trainer's CURVE key pair file ("" = no encryption or authentication)
        char curve_clients[VM_PATH_MAX];    // admitted worker public keys: a file or a directory of *.key
    } pipeline;
    struct {
        int img_size, patch_size;
        int embed_dim, depth, num_heads;
        int decoder_embed_dim, decoder_depth, decoder_num_heads;
        double mlp_ratio, mask_ratio;
        int norm_pix_loss;
        int pool;                    // vm_pool
        int proj_hidden_dim, proj_out_dim;
        int pred_hidden_dim;         // SimSiam predictor hidden size
    } model;
    struct {
        int contrastive;             // vm_contrastive
        double temperature;
        double w_rec, w_con;
        int con_warmup_steps;
        int con_warmup_shape;        // vm_warmup_shape
        double vicreg_sim, vicreg_var, vicreg_cov;
    } loss;
    struct {
        int batch_size;              // pairs per step
        double base_lr, min_lr, weight_decay, beta1, beta2, eps;
        int warmup_steps;
        int epochs, steps;           // steps > 0 overrides epochs
        double clip_grad;            // 0 = off
    } optim;
    struct {
        int precision;               // vm_precision
        int checkpoint_every;        // steps (0 = only at the end)
        int slots;                   // pinned host slots of the input ring
        int recompute;               // bool: LayerNorm and GELU outputs recomputed in the backward pass, not saved
        int activations;             // vm_act_dtype: storage of the block activations that feed matrix products
    } train;
} vm_config;

// Fill every field with its schema default.
void vm_config_defaults(vm_config *cfg);
// Read an INI file over the current values.  Errors name file, line, key and the allowed values.
int vm_config_load(vm_config *cfg, const char *path, vm_error *err);
// The same from INI text held in memory (e.g. the configuration stored in a checkpoint); origin
// names it in messages.
int vm_config_load_text(vm_config *cfg, const char *text, const char *origin, vm_error *err);
// Defaults, then the text, then vm_config_validate (what a worker does with the coordinator's).
int vm_config_from_text(vm_config *cfg, const char *text, const char *origin, vm_error *err);
// The effective configuration as INI text (vm_config_print); *text is malloc'ed, caller frees;
// len may be NULL.
int vm_config_to_text(const vm_config *cfg, char **text, size_t *len, vm_error *err);
// Apply "section.key=value".
int vm_config_override(vm_config *cfg, const char *assignment, vm_error *err);
// Set one key from text (origin names where the text came from, for messages).
int vm_config_set(vm_config *cfg, const char *section, const char *key, const char *value,
                  const char *origin, vm_error *err);
// Checks across keys (img_size divisible by patch_size, gap_min <= gap_max, ...).
int vm_config_validate(const vm_config *cfg, vm_error *err);
// Write the effective configuration as INI (loadable again).
void vm_config_print(const vm_config *cfg, FILE *out);
// Write the schema: key, type, default, allowed values, help.
void vm_config_print_schema(FILE *out);
// Name of an enum value as written in INI files ("infonce"), for logs.
const char *vm_config_enum_name(const char *section, const char *key, int value);

#ifdef __cplusplus
}
#endif
