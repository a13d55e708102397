// trainer/cpu/ops_proto.h — prototypes of the CPU ops over `real`; included by cpu_ops.h once per
// type (no include guard on purpose).  See trainer/backend.h for what each op computes.
void FN(patchify)(real *out, const uint8_t *img, int B, int H, int W, int P, int conv_order,
                  const real mean[3], const real std[3]);

void FN(matmul_forward)(real *out, const real *inp, const real *weight, const real *bias, int N,
                        int C, int OC);
void FN(matmul_backward)(real *dinp, real *dweight, real *dbias, const real *dout,
                         const real *inp, const real *weight, int N, int C, int OC);

void FN(layernorm_forward)(real *out, real *mean, real *rstd, const real *inp, const real *weight,
                           const real *bias, int N, int C, real eps);
void FN(layernorm_backward)(real *dinp, real *dweight, real *dbias, const real *dout,
                            const real *inp, const real *weight, const real *mean,
                            const real *rstd, int N, int C);
void FN(batchnorm_forward)(real *out, real *mean, real *rstd, real *running_mean,
                           real *running_var, const real *inp, const real *weight,
                           const real *bias, int N, int C, real eps, real momentum);
void FN(batchnorm_backward)(real *dinp, real *dweight, real *dbias, const real *dout,
                            const real *inp, const real *weight, const real *mean,
                            const real *rstd, int N, int C);

void FN(attention_forward)(real *out, real *att, const real *qkv, int B, int T, int C, int NH);
void FN(attention_backward)(real *dqkv, real *scratch, const real *dout, const real *qkv,
                            const real *att, int B, int T, int C, int NH);

void FN(gelu_forward)(real *out, const real *inp, size_t N);
void FN(gelu_backward)(real *dinp, const real *inp, const real *dout, size_t N);
void FN(relu_forward)(real *out, const real *inp, size_t N);
void FN(relu_backward)(real *dinp, const real *inp, const real *dout, size_t N);
void FN(add)(real *out, const real *a, const real *b, size_t N);
void FN(accumulate)(real *dst, const real *src, size_t N);
void FN(scale)(real *x, real s, size_t N);
void FN(add_rows)(real *out, const real *inp, const real *pos, int B, int T, int C);
void FN(add_rows_backward)(real *dpos, const real *dout, int B, int T, int C);

void FN(gather_tokens)(real *out, const real *x, const real *cls, const int32_t *ids_keep, int B,
                       int L, int K, int C);
void FN(gather_tokens_backward)(real *dx, real *dcls, const real *dout, const int32_t *ids_keep,
                                int B, int L, int K, int C);
void FN(unshuffle_tokens)(real *out, const real *x, const real *mask_token,
                          const int32_t *ids_restore, int B, int L, int K, int C);
void FN(unshuffle_tokens_backward)(real *dx, real *dmask_token, const real *dout,
                                   const int32_t *ids_restore, int B, int L, int K, int C);
void FN(drop_first_token)(real *out, const real *inp, int B, int T, int C);
void FN(drop_first_token_backward)(real *dinp, const real *dout, int B, int T, int C);
void FN(pool_forward)(real *out, const real *inp, int B, int T, int C, int pool_cls);
void FN(pool_backward)(real *dinp, const real *dout, int B, int T, int C, int pool_cls);

void FN(mae_loss)(real *loss, real *dpred, const real *pred, const real *target,
                  const real *mask, int B, int L, int D, int norm_pix, real dloss);
void FN(infonce_loss)(real *loss, real *dz1, real *dz2, const real *z1, const real *z2, int N,
                      int D, real temperature, real dloss);
void FN(simsiam_loss)(real *loss, real *dp1, real *dp2, const real *p1, const real *p2,
                      const real *z1, const real *z2, int N, int D, real dloss);
void FN(vicreg_loss)(real *loss, real *terms, real *dz1, real *dz2, const real *z1,
                     const real *z2, int N, int D, real w_sim, real w_var, real w_cov,
                     real dloss);

void FN(sumsq)(real *out, const real *x, size_t N);
void FN(adamw)(real *param, const real *grad, real *m, real *v, size_t N, real lr, real beta1,
               real beta2, real eps, real weight_decay, int t, real grad_scale);
void FN(adamw_ranges)(real *param, const real *grad, real *m, real *v, const vm_adamw_range *ranges, int nranges,
                      real lr, real beta1, real beta2, real eps, real weight_decay, int t, real grad_scale);

// trainer/cpu/bf16.c: the four products with bf16-rounded operands (the CUDA backend's bf16
// numerics, vm_backend_cpu_bf16); semantics as the same-named fp32 op otherwise.
void FN(bf16_matmul_forward)(real *out, const real *inp, const real *weight, const real *bias, int N,
                             int C, int OC);
void FN(bf16_matmul_backward)(real *dinp, real *dweight, real *dbias, const real *dout,
                              const real *inp, const real *weight, int N, int C, int OC);
void FN(bf16_attention_forward)(real *out, real *att, const real *qkv, int B, int T, int C, int NH);
void FN(bf16_attention_backward)(real *dqkv, real *scratch, const real *dout, const real *qkv,
                                 const real *att, int B, int T, int C, int NH);

// trainer/cpu/bf16.c: the bf16-activation ops of trainer/backend.h, defined for the float builds
// only (their storage is bf16, so a double instantiation would test nothing more).
void FN(layernorm_forward_bf16)(vm_bf16 *out, float *mean, float *rstd, const float *inp, const float *weight,
                                const float *bias, int N, int C, float eps);
void FN(matmul_forward_bf16)(vm_bf16 *out, const vm_bf16 *inp, const float *weight, const float *bias, int N, int C,
                             int OC);
void FN(matmul_backward_bf16)(float *dinp, float *dweight, float *dbias, const float *dout, const vm_bf16 *inp,
                              const float *weight, int N, int C, int OC);
void FN(attention_forward_bf16)(vm_bf16 *out, float *att, const vm_bf16 *qkv, int B, int T, int C, int NH);
void FN(attention_backward_bf16)(float *dqkv, float *scratch, const float *dout, const vm_bf16 *qkv,
                                 const float *att, int B, int T, int C, int NH);
void FN(gelu_forward_bf16)(vm_bf16 *out, const vm_bf16 *inp, size_t N);
void FN(gelu_backward_bf16)(float *dinp, const vm_bf16 *inp, const float *dout, size_t N);
void FN(add_bf16)(float *out, const float *a, const vm_bf16 *b, size_t N);
