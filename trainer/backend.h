// trainer/backend.h — the op interface: the seam between the model and a compute backend.
//
// The model (trainer/model.c) is written once against this table; the CPU reference backend
// (trainer/cpu/, OpenBLAS + OpenMP) and the CUDA backend (trainer/cuda/, cuBLAS + our kernels)
// each fill it.  All tensor pointers are the backend's memory (host for CPU, device for CUDA),
// float32, row-major, with shapes written as comments: (B, T, C) means B*T*C floats, C innermost.
// Linear weights use PyTorch's layout (OC, C), so checkpoints map one to one.
//
// Conventions
// - Backward functions ACCUMULATE (+=) into parameter gradients (dweight, dbias), so that shared
//   parameters and micro-batches add up, and WRITE (=) input gradients (dinp) unless the comment
//   says "+=" (residual paths accumulate).  The model zeroes parameter gradients once per step.
// - Ops never allocate; scratch is passed in.  Ops never fail: shapes are validated by the model.
// - Everything runs on the backend's stream in order; `sync` waits for it.
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef struct vm_backend vm_backend_ops;

// bfloat16 bits: the top 16 bits of a float32, rounded to nearest even (CUDA's __nv_bfloat16).
// The storage of the block activations that only feed matrix products when the model runs with
// bf16 activations (trainer/model.h).
typedef uint16_t vm_bf16;

// A range of the flat parameter buffers that one AdamW call updates: floats [off, off + n), with or
// without weight decay.
typedef struct {
    size_t off, n;
    int decay;
} vm_adamw_range;

struct vm_backend {
    const char *name;  // "cpu", "cpu-bf16" or "cuda"

    // ---- memory ------------------------------------------------------------------------
    void *(*alloc)(size_t bytes);                  // zero-filled; NULL on failure
    void (*free)(void *ptr);
    void (*to_device)(void *dst, const void *src_host, size_t bytes);
    void (*to_host)(void *dst_host, const void *src, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes);  // device to device
    // rows blocks of `bytes` each, block r from src + r * src_pitch to dst + r * dst_pitch (device to
    // device): one call where a layout change would take `rows` copies.
    void (*copy_rows)(void *dst, size_t dst_pitch, const void *src, size_t src_pitch, size_t bytes, size_t rows);
    void (*zero)(void *ptr, size_t bytes);
    void (*sync)(void);

    // ---- input --------------------------------------------------------------------------
    // uint8 images -> normalised patches.  img (B, H, W, 3) uint8; out (B, L, 3*P*P) with
    // L = (H/P)*(W/P), patches in row-major grid order.  x = (img/255 - mean[c]) / std[c].
    // conv_order=1: each patch flattened as (c, py, px), the Conv2d weight order of the patch
    // embedding; conv_order=0: as (py, px, c), MAE's patchify() order of reconstruction targets.
    void (*patchify)(float *out, const uint8_t *img, int B, int H, int W, int P, int conv_order,
                     const float mean[3], const float std[3]);

    // ---- dense ----------------------------------------------------------------------------
    // out (N, OC) = inp (N, C) @ weight (OC, C)^T + bias (OC) [bias may be NULL]
    void (*matmul_forward)(float *out, const float *inp, const float *weight, const float *bias,
                           int N, int C, int OC);
    // dinp (N, C) = dout @ weight  [dinp may be NULL: not needed]; dweight (OC, C) += dout^T @ inp;
    // dbias (OC) += sum over N of dout [dbias may be NULL]
    void (*matmul_backward)(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, int N, int C, int OC);

    // ---- normalisation ----------------------------------------------------------------------
    // LayerNorm over C.  out, inp (N, C); mean, rstd (N) saved for backward; weight, bias (C).
    void (*layernorm_forward)(float *out, float *mean, float *rstd, const float *inp,
                              const float *weight, const float *bias, int N, int C, float eps);
    // dinp (N, C) +=; dweight, dbias (C) +=
    void (*layernorm_backward)(float *dinp, float *dweight, float *dbias, const float *dout,
                               const float *inp, const float *weight, const float *mean,
                               const float *rstd, int N, int C);
    // BatchNorm1d over N (batch statistics).  out, inp (N, C); mean, rstd (C) saved (rstd uses the
    // biased variance, as PyTorch normalises); running_mean/var (C) updated with momentum using
    // the unbiased variance, as PyTorch does.  weight/bias may be NULL (affine=False).
    void (*batchnorm_forward)(float *out, float *mean, float *rstd, float *running_mean,
                              float *running_var, const float *inp, const float *weight,
                              const float *bias, int N, int C, float eps, float momentum);
    // dinp (N, C) = ; dweight, dbias (C) += (may be NULL)
    void (*batchnorm_backward)(float *dinp, float *dweight, float *dbias, const float *dout,
                               const float *inp, const float *weight, const float *mean,
                               const float *rstd, int N, int C);

    // ---- attention ----------------------------------------------------------------------------
    // Non-causal multi-head self-attention core.  qkv (B, T, 3C) laid out [q | k | v], heads of
    // hs = C/NH; att (B, NH, T, T) softmax probabilities saved for backward; out (B, T, C) heads
    // concatenated.  scale = hs^-0.5.
    void (*attention_forward)(float *out, float *att, const float *qkv, int B, int T, int C, int NH);
    // dqkv (B, T, 3C) = ; scratch (B, NH, T, T)
    void (*attention_backward)(float *dqkv, float *scratch, const float *dout, const float *qkv,
                               const float *att, int B, int T, int C, int NH);

    // ---- pointwise -----------------------------------------------------------------------------
    void (*gelu_forward)(float *out, const float *inp, size_t N);          // exact erf GELU
    void (*gelu_backward)(float *dinp, const float *inp, const float *dout, size_t N);  // dinp =
    void (*relu_forward)(float *out, const float *inp, size_t N);
    void (*relu_backward)(float *dinp, const float *inp, const float *dout, size_t N);  // dinp =
    void (*add)(float *out, const float *a, const float *b, size_t N);     // out = a + b (residual)
    void (*accumulate)(float *dst, const float *src, size_t N);            // dst += src
    void (*scale)(float *x, float s, size_t N);                            // x *= s
    // out (B, T, C) = inp (B, T, C) + pos (T, C)   (in-place allowed)
    void (*add_rows)(float *out, const float *inp, const float *pos, int B, int T, int C);
    // dpos (T, C) += sum over B of dout (B, T, C)
    void (*add_rows_backward)(float *dpos, const float *dout, int B, int T, int C);

    // ---- token plumbing (MAE masking) ---------------------------------------------------------
    // Encoder input: out (B, 1+K, C): row 0 = cls (C), rows 1..K = x[b, ids_keep[b, k]] of
    // x (B, L, C).  (Position embeddings are added to x before, as MAE does.)
    void (*gather_tokens)(float *out, const float *x, const float *cls, const int32_t *ids_keep,
                          int B, int L, int K, int C);
    // dx (B, L, C) = scatter of dout rows 1..K (zero for masked rows); dcls (C) += sum of row 0
    void (*gather_tokens_backward)(float *dx, float *dcls, const float *dout, const int32_t *ids_keep,
                                   int B, int L, int K, int C);
    // Decoder input: out (B, 1+L, C): row 0 = x row 0 (cls); row 1+l = x[b, 1+k] if patch l is the
    // k-th kept patch (ids_restore[b, l] = k < K), else mask_token (C).
    void (*unshuffle_tokens)(float *out, const float *x, const float *mask_token,
                             const int32_t *ids_restore, int B, int L, int K, int C);
    // dx (B, 1+K, C) = ; dmask_token (C) +=
    void (*unshuffle_tokens_backward)(float *dx, float *dmask_token, const float *dout,
                                      const int32_t *ids_restore, int B, int L, int K, int C);
    // out (B, T-1, C) = inp[:, 1:, :] (drop the class token); backward writes dinp rows 1.., zero row 0
    void (*drop_first_token)(float *out, const float *inp, int B, int T, int C);
    void (*drop_first_token_backward)(float *dinp, const float *dout, int B, int T, int C);
    // Pooled feature.  pool_cls=0: out (B, C) = mean of inp (B, T, C) rows 1..T-1; pool_cls=1: row 0.
    void (*pool_forward)(float *out, const float *inp, int B, int T, int C, int pool_cls);
    void (*pool_backward)(float *dinp, const float *dout, int B, int T, int C, int pool_cls);  // dinp +=

    // ---- losses (forward and gradient together; the scalar loss is written to *loss on the host) ----
    // MAE reconstruction: pred, target (B, L, D) with D = P*P*3 in (py, px, c) order; mask (B, L)
    // 1 = masked (to reconstruct).  norm_pix: target normalised per patch by its mean and unbiased
    // variance (+1e-6, sqrt).  loss = sum_b,l mask * mean_d (pred - t)^2 / sum mask.
    // dpred (B, L, D) = gradient of loss (times dloss).
    void (*mae_loss)(float *loss, float *dpred, const float *pred, const float *target,
                     const float *mask, int B, int L, int D, int norm_pix, float dloss);
    // InfoNCE / NT-Xent over 2N L2-normalised rows of [z1; z2] (N, D) each: positives are the other
    // view of the pair, the other 2N-2 rows negatives, self excluded; mean over the 2N rows.
    // z are the raw projections: the op normalises them (F.normalize, eps 1e-12) and back-propagates
    // through that.
    void (*infonce_loss)(float *loss, float *dz1, float *dz2, const float *z1, const float *z2,
                         int N, int D, float temperature, float dloss);
    // SimSiam: loss = -(cos(p1, sg(z2)) + cos(p2, sg(z1))) / 2, averaged over N.  No gradient to z.
    // cos(a, b) = a.b / (max(|a|, 1e-8) max(|b|, 1e-8)).
    void (*simsiam_loss)(float *loss, float *dp1, float *dp2, const float *p1, const float *p2,
                         const float *z1, const float *z2, int N, int D, float dloss);
    // VICReg: sim * MSE(z1, z2) + var * (hinge std of each) + cov * (off-diagonal cov^2 / D of each).
    // terms[3] receives the three unweighted terms for logging (host memory).
    void (*vicreg_loss)(float *loss, float *terms, float *dz1, float *dz2, const float *z1,
                        const float *z2, int N, int D, float w_sim, float w_var, float w_cov, float dloss);

    // ---- optimiser --------------------------------------------------------------------------------
    // sum of squares of x (N) -> *out (host)
    void (*sumsq)(float *out, const float *x, size_t N);
    // AdamW (PyTorch semantics, decoupled decay, bias correction with step t >= 1):
    // param -= lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * param); grad scaled by grad_scale
    // first (gradient clipping).
    void (*adamw)(float *param, const float *grad, float *m, float *v, size_t N, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int t, float grad_scale);
    // The same step over many ranges of the flat buffers param, grad, m, v (each range [off, off + n);
    // weight_decay applies to the ranges with decay set, none to the others; floats outside every
    // range are not touched), in one call: one kernel on CUDA for the ~170 ranges of a ViT-B.
    // ranges: host memory; a backend may keep a copy while the caller passes the same table.
    void (*adamw_ranges)(float *param, const float *grad, float *m, float *v, const vm_adamw_range *ranges,
                         int nranges, float lr, float beta1, float beta2, float eps, float weight_decay, int t,
                         float grad_scale);

    // ---- bf16 activations (optional: all NULL in a backend without them) -----------------------
    // The block's ops again, with the activations that only feed matrix products stored as bf16
    // (LayerNorm outputs, qkv, the attention output, fc1 and GELU outputs, the proj / fc2 outputs
    // on their way into the residual).  Semantics are those of the fp32 op of the same name, with
    // every matrix product on bf16 operands and fp32 accumulation (as the backend's bf16 precision:
    // weights and dout rounded to bf16 too), each bf16 output the fp32 result rounded once (nearest
    // even), each bf16 input read exactly.  Statistics (mean, rstd), the softmax probabilities att,
    // the residual stream and every gradient stay fp32.
    void (*layernorm_forward_bf16)(vm_bf16 *out, float *mean, float *rstd, const float *inp,
                                   const float *weight, const float *bias, int N, int C, float eps);
    // out (N, OC) = bf16(inp @ weight^T + bf16(bias)): the bias rounded to bf16 (as PyTorch's autocast
    // casts it), added in fp32 to the fp32 sums before the one rounding of the output
    void (*matmul_forward_bf16)(vm_bf16 *out, const vm_bf16 *inp, const float *weight, const float *bias,
                                int N, int C, int OC);
    void (*matmul_backward_bf16)(float *dinp, float *dweight, float *dbias, const float *dout,
                                 const vm_bf16 *inp, const float *weight, int N, int C, int OC);
    void (*attention_forward_bf16)(vm_bf16 *out, float *att, const vm_bf16 *qkv, int B, int T, int C, int NH);
    void (*attention_backward_bf16)(float *dqkv, float *scratch, const float *dout, const vm_bf16 *qkv,
                                    const float *att, int B, int T, int C, int NH);
    void (*gelu_forward_bf16)(vm_bf16 *out, const vm_bf16 *inp, size_t N);
    void (*gelu_backward_bf16)(float *dinp, const vm_bf16 *inp, const float *dout, size_t N);  // dinp =
    void (*add_bf16)(float *out, const float *a, const vm_bf16 *b, size_t N);  // out = a + b
};

// The CPU reference backend (always present).  threads <= 0: all cores.
const vm_backend_ops *vm_backend_cpu(int threads);
// The CPU reference with the CUDA backend's bf16 numerics (name "cpu-bf16"): the table of
// vm_backend_cpu(threads) (same instruction set), except that matmul_forward/backward and
// attention_forward/backward round their matrix-product operands to bfloat16 (nearest even) exactly
// where the CUDA backend's bf16 "convert" path does, and accumulate in fp32: linear inp, weight
// and dout (dbias from the fp32 dout); attention q, k, v, dout, the probabilities for att @ v and
// dV (softmax and its backward in fp32, att saved fp32) and dpre for dQ, dK.  For tests: its
// products allocate scratch.  It also has the bf16-activation ops (the only CPU table that does):
// the same rounded products, with bf16 storage rounded as the CUDA backend rounds it.  See
// trainer/cpu/bf16.c.
const vm_backend_ops *vm_backend_cpu_bf16(int threads);
// The CUDA backend, or NULL with a reason in why (no GPU, built without CUDA, driver too old).
const vm_backend_ops *vm_backend_cuda(char *why, size_t why_cap);
