// eval/export.h — the encoder of a checkpoint as a timm VisionTransformer state_dict.
//
// Our tensor names already are timm's (trainer/model.h), so the export is a filter: it keeps
//   cls_token, pos_embed, patch_embed.proj.{weight,bias}, blocks.<i>.*, norm.{weight,bias}
// and drops mask_token, the decoder, the projector/predictor and any optimiser state.  The file
// loads with load_state_dict into
//   timm.create_model("vit_<size>_patch16_224", img_size=S, patch_size=P, num_classes=0,
//                     global_pool="avg" (mean) or "token" (cls), fc_norm=False)
// (for img_size 224 / patch 16 the stock model; else the same class with those kwargs).  With
// fc_norm=False timm applies `norm` to every token and then pools, which is what
// vm_model_features computes.  Metadata records the architecture (keys below) and the config.
#pragma once
#include "common/error.h"
#include "trainer/model.h"

// 1 when name is an encoder tensor that the export keeps.
int vm_export_is_encoder(const char *name);

// timm's name for the ViT of this width ("vit_tiny_patch16_224" for embed_dim 192, small 384,
// base 768, large 1024, huge 1280; "vit_custom" otherwise).
const char *vm_export_timm_name(const vm_config *cfg);

// Write m's encoder to path (safetensors, F32, atomically).  Metadata: format=pt, timm_model,
// img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio, global_pool (avg|token), config.
int vm_export_timm(vm_model *m, const char *path, vm_error *err);

// The "config" metadata (effective INI text) stored in a checkpoint by the training loop: a
// malloc'ed copy in *ini, or VM_ENOTFOUND when the file has none.
int vm_ckpt_config(const char *ckpt, char **ini, vm_error *err);
