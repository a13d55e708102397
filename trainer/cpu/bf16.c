// trainer/cpu/bf16.c — the CUDA backend's bf16 numerics on the CPU: the four ops whose matrix
// products the CUDA backend runs on bf16 operands (linear forward/backward, attention
// forward/backward), with the operands rounded to bfloat16 (round to nearest even) exactly where
// trainer/cuda/cuda_backend.cu's "convert" path rounds them, and the products accumulated in fp32
// (sgemm on the rounded copies).  Everything else stays the fp32 CPU op.  vm_backend_cpu_bf16()
// puts these into the CPU table, so that a bf16 CUDA run can be compared against a reference that
// makes the same rounding errors: what is left is accumulation order (tests/test_cuda_model.c).
//
// Where the CUDA convert path rounds (and so do these):
//   matmul forward:   inp, weight -> bf16; bias added in fp32.
//   matmul backward:  dout, inp -> bf16 for dweight; dout, weight -> bf16 for dinp; dbias = column
//                     sums of the fp32 dout.
//   attention fwd:    q, k, v -> bf16; scores in fp32 (scale applied to the fp32 sum); softmax in
//                     fp32, saved fp32 in att; the probabilities -> bf16 for att @ v.
//   attention bwd:    q, k, v, dout -> bf16; datt = dO v^T from those; dpre = att (datt - sum) scale
//                     in fp32 from the fp32 att; dpre -> bf16 for dQ = dpre K and dK = dpre^T Q;
//                     att -> bf16 for dV = att^T dO.
//
// This is a reference/test backend, not a fast one: the rounded copies are malloc'd inside the
// ops (the rule "ops never allocate" of trainer/backend.h is the production backends'), and an
// allocation failure aborts (ops cannot fail).  Per (batch, head) work is as in attention.c, so
// the results do not depend on the thread count either.
#ifndef VM_GENERIC_PASS
#include <stdio.h>
#include <stdlib.h>
#include "trainer/cpu/cpu_ops.h"

// malloc or abort: the op table has no way to report a failure, and this backend is for tests.
static void *bf16_scratch(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "cpu-bf16: out of memory (%zu bytes of scratch)\n", bytes);
        abort();
    }
    return p;
}

// ---- bf16 activations, written once over the op that computes on fp32 storage ----------------
// (cpu_ops.h): bf16 inputs widened exactly, the op, each bf16 output rounded once.

// A float copy of n bf16 values (the caller frees it).
static float *widened(const vm_bf16 *src, size_t n) {
    float *x = bf16_scratch(n * sizeof(float));
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) x[i] = vm_bf16_to_float(src[i]);
    return x;
}

// dst = bf16(src), then src is freed.
static void narrowed(vm_bf16 *dst, float *src, size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) dst[i] = vm_bf16_from_float(src[i]);
    free(src);
}

void vm_act16_layernorm_forward(VM_OP_T(layernorm_forward) f, vm_bf16 *out, float *mean, float *rstd,
                                const float *inp, const float *weight, const float *bias, int N, int C, float eps) {
    size_t n = (size_t)N * C;
    float *y = bf16_scratch(n * sizeof(float));
    f(y, mean, rstd, inp, weight, bias, N, C, eps);
    narrowed(out, y, n);
}

// The bias is rounded to bf16 too (as PyTorch's autocast casts it, and as the CUDA backend's
// cuBLASLt epilogue takes it), then added in fp32 before the output's one rounding.
void vm_act16_matmul_forward(VM_OP_T(matmul_forward) f, vm_bf16 *out, const vm_bf16 *inp, const float *weight,
                             const float *bias, int N, int C, int OC) {
    if (N <= 0 || OC <= 0) return;
    float *x = widened(inp, (size_t)N * C), *y = bf16_scratch(((size_t)N * OC + OC) * sizeof(float));
    float *b16 = bias ? y + (size_t)N * OC : NULL;
    for (int o = 0; b16 && o < OC; o++) b16[o] = vm_bf16_round(bias[o]);
    f(y, x, weight, b16, N, C, OC);
    narrowed(out, y, (size_t)N * OC);
    free(x);
}

void vm_act16_matmul_backward(VM_OP_T(matmul_backward) f, float *dinp, float *dweight, float *dbias,
                              const float *dout, const vm_bf16 *inp, const float *weight, int N, int C, int OC) {
    float *x = widened(inp, (size_t)N * C);
    f(dinp, dweight, dbias, dout, x, weight, N, C, OC);
    free(x);
}

void vm_act16_attention_forward(VM_OP_T(attention_forward) f, vm_bf16 *out, float *att, const vm_bf16 *qkv, int B,
                                int T, int C, int NH) {
    size_t n = (size_t)B * T * C;
    float *x = widened(qkv, 3 * n), *y = bf16_scratch(n * sizeof(float));
    f(y, att, x, B, T, C, NH);
    narrowed(out, y, n);
    free(x);
}

void vm_act16_attention_backward(VM_OP_T(attention_backward) f, float *dqkv, float *scratch, const float *dout,
                                 const vm_bf16 *qkv, const float *att, int B, int T, int C, int NH) {
    float *x = widened(qkv, (size_t)B * T * 3 * C);
    f(dqkv, scratch, dout, x, att, B, T, C, NH);
    free(x);
}

void vm_act16_gelu_forward(VM_OP_T(gelu_forward) f, vm_bf16 *out, const vm_bf16 *inp, size_t N) {
    float *x = widened(inp, N);
    f(x, x, N);  // elementwise: in place is fine
    narrowed(out, x, N);
}

void vm_act16_gelu_backward(VM_OP_T(gelu_backward) f, float *dinp, const vm_bf16 *inp, const float *dout, size_t N) {
    float *x = widened(inp, N);
    f(dinp, x, dout, N);
    free(x);
}

#define VM_GENERIC_FILE "trainer/cpu/bf16.c"
#include "trainer/cpu/generic.h"
#else

// x rounded to bf16 (through float in the double instantiation: the inputs are floats anyway)
#define BF16R(x) ((real)vm_bf16_round((float)(x)))

// dst (n) = bf16(src); elementwise, so the thread split changes nothing
static void FN(bf16_copy)(real *dst, const real *src, size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) dst[i] = BF16R(src[i]);
}

// out (N, OC) = bf16(inp) (N, C) @ bf16(weight) (OC, C)^T + bias (OC), fp32 accumulation
void FN(bf16_matmul_forward)(real *out, const real *inp, const real *weight, const real *bias, int N,
                             int C, int OC) {
    if (N <= 0 || OC <= 0) return;
    size_t nx = (size_t)N * C, nw = (size_t)OC * C;
    real *x16 = bf16_scratch((nx + nw) * sizeof(real)), *w16 = x16 + nx;
    FN(bf16_copy)(x16, inp, nx);
    FN(bf16_copy)(w16, weight, nw);
    FN(matmul_forward)(out, x16, w16, bias, N, C, OC);
    free(x16);
}

// dinp (N, C) = bf16(dout) @ bf16(weight); dweight (OC, C) += bf16(dout)^T @ bf16(inp);
// dbias (OC) += column sums of the fp32 dout (the CUDA backend's colsum reads the fp32 tensor).
void FN(bf16_matmul_backward)(real *dinp, real *dweight, real *dbias, const real *dout,
                              const real *inp, const real *weight, int N, int C, int OC) {
    if (N <= 0 || OC <= 0) return;
    size_t ng = (size_t)N * OC, nx = (size_t)N * C, nw = dinp ? (size_t)OC * C : 0;
    real *g16 = bf16_scratch((ng + nx + nw) * sizeof(real)), *x16 = g16 + ng, *w16 = x16 + nx;
    FN(bf16_copy)(g16, dout, ng);
    FN(bf16_copy)(x16, inp, nx);
    if (dinp) FN(bf16_copy)(w16, weight, nw);
    FN(matmul_backward)(dinp, dweight, NULL, g16, x16, dinp ? w16 : weight, N, C, OC);
    free(g16);
    if (dbias) FN(add_rows_backward)(dbias, dout, N, 1, OC);
}

// out (B, T, C); att (B, NH, T, T) fp32 probabilities; qkv (B, T, 3C) = [q | k | v]
void FN(bf16_attention_forward)(real *out, real *att, const real *qkv, int B, int T, int C, int NH) {
    const int hs = C / NH, C3 = 3 * C;
    const real scale = (real)1 / sqrt((real)hs);
    size_t nq = (size_t)B * T * C3;
    real *qkv16 = bf16_scratch(nq * sizeof(real));
    FN(bf16_copy)(qkv16, qkv, nq);
    int blas_threads = vm_cpu_blas_serial_begin();
#pragma omp parallel
    {
        real *P = bf16_scratch((size_t)T * T * sizeof(real));  // (T, T) bf16 probabilities of a head
#pragma omp for schedule(dynamic, 1)
        for (int bh = 0; bh < B * NH; bh++) {
            int b = bh / NH, h = bh % NH;
            const real *q = qkv16 + (size_t)b * T * C3 + (size_t)h * hs, *k = q + C, *v = q + 2 * C;
            real *A = att + (size_t)bh * T * T;
            // A (T, T) = scale * q (T, hs) @ k^T, fp32 sums of bf16 products
            GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, scale, q, C3, k, C3, 0, A, T);
            for (int t = 0; t < T; t++) {  // row softmax in fp32, as attention.c
                real *a = A + (size_t)t * T, mx = a[0], sum = 0;
                for (int u = 1; u < T; u++) mx = a[u] > mx ? a[u] : mx;
                for (int u = 0; u < T; u++) {
                    a[u] = VEXP(a[u] - mx);
                    sum += a[u];
                }
                real inv = 1 / sum;
                for (int u = 0; u < T; u++) {
                    a[u] *= inv;
                    P[(size_t)t * T + u] = BF16R(a[u]);
                }
            }
            // out[b, :, h*hs:(h+1)*hs] (T, hs) = bf16(A) @ v
            GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1, P, T, v, C3, 0,
                 out + (size_t)b * T * C + (size_t)h * hs, C);
        }
        free(P);
    }
    vm_cpu_blas_serial_end(blas_threads);
    free(qkv16);
}

// dqkv (B, T, 3C) = ; scratch (B, NH, T, T) ends holding bf16(dpre) of each head.
void FN(bf16_attention_backward)(real *dqkv, real *scratch, const real *dout, const real *qkv,
                                 const real *att, int B, int T, int C, int NH) {
    const int hs = C / NH, C3 = 3 * C;
    const real scale = (real)1 / sqrt((real)hs);
    size_t nq = (size_t)B * T * C3, ng = (size_t)B * T * C;
    real *qkv16 = bf16_scratch((nq + ng) * sizeof(real)), *g16 = qkv16 + nq;
    FN(bf16_copy)(qkv16, qkv, nq);
    FN(bf16_copy)(g16, dout, ng);
    int blas_threads = vm_cpu_blas_serial_begin();
#pragma omp parallel for schedule(dynamic, 1)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        const real *q = qkv16 + (size_t)b * T * C3 + (size_t)h * hs, *k = q + C, *v = q + 2 * C;
        real *dq = dqkv + (size_t)b * T * C3 + (size_t)h * hs, *dk = dq + C, *dv = dq + 2 * C;
        const real *A = att + (size_t)bh * T * T;
        const real *dy = g16 + (size_t)b * T * C + (size_t)h * hs;
        real *D = scratch + (size_t)bh * T * T;
        // dv (T, hs) = bf16(A)^T @ dy, bf16(A) held in the head's scratch until D overwrites it
        for (size_t i = 0; i < (size_t)T * T; i++) D[i] = BF16R(A[i]);
        GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1, D, T, dy, C, 0, dv, C3);
        // D (T, T) = datt = dy @ v^T (fp32 sums)
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, 1, dy, C, v, C3, 0, D, T);
        for (int t = 0; t < T; t++) {  // softmax backward in fp32 from the fp32 att, then bf16
            const real *a = A + (size_t)t * T;
            real *d = D + (size_t)t * T;
            real s = 0;
            for (int u = 0; u < T; u++) s += a[u] * d[u];
            for (int u = 0; u < T; u++) d[u] = BF16R(a[u] * (d[u] - s) * scale);
        }
        // dq (T, hs) = bf16(dpre) @ k;  dk (T, hs) = bf16(dpre)^T @ q
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1, D, T, k, C3, 0, dq, C3);
        GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1, D, T, q, C3, 0, dk, C3);
    }
    vm_cpu_blas_serial_end(blas_threads);
    free(qkv16);
}

#if REAL_IS_FLOAT
// ---- bf16 activations: the ops of trainer/backend.h's group, over this build's products ----------
void FN(layernorm_forward_bf16)(vm_bf16 *out, float *mean, float *rstd, const float *inp, const float *weight,
                                const float *bias, int N, int C, float eps) {
    vm_act16_layernorm_forward(FN(layernorm_forward), out, mean, rstd, inp, weight, bias, N, C, eps);
}
void FN(matmul_forward_bf16)(vm_bf16 *out, const vm_bf16 *inp, const float *weight, const float *bias, int N, int C,
                             int OC) {
    vm_act16_matmul_forward(FN(bf16_matmul_forward), out, inp, weight, bias, N, C, OC);
}
void FN(matmul_backward_bf16)(float *dinp, float *dweight, float *dbias, const float *dout, const vm_bf16 *inp,
                              const float *weight, int N, int C, int OC) {
    vm_act16_matmul_backward(FN(bf16_matmul_backward), dinp, dweight, dbias, dout, inp, weight, N, C, OC);
}
void FN(attention_forward_bf16)(vm_bf16 *out, float *att, const vm_bf16 *qkv, int B, int T, int C, int NH) {
    vm_act16_attention_forward(FN(bf16_attention_forward), out, att, qkv, B, T, C, NH);
}
void FN(attention_backward_bf16)(float *dqkv, float *scratch, const float *dout, const vm_bf16 *qkv,
                                 const float *att, int B, int T, int C, int NH) {
    vm_act16_attention_backward(FN(bf16_attention_backward), dqkv, scratch, dout, qkv, att, B, T, C, NH);
}
void FN(gelu_forward_bf16)(vm_bf16 *out, const vm_bf16 *inp, size_t N) {
    vm_act16_gelu_forward(FN(gelu_forward), out, inp, N);
}
void FN(gelu_backward_bf16)(float *dinp, const vm_bf16 *inp, const float *dout, size_t N) {
    vm_act16_gelu_backward(FN(gelu_backward), dinp, inp, dout, N);
}
void FN(add_bf16)(float *out, const float *a, const vm_bf16 *b, size_t N) {
#pragma omp parallel for schedule(static) if (N > 65536)
    for (size_t i = 0; i < N; i++) out[i] = a[i] + vm_bf16_to_float(b[i]);
}
#endif

#undef BF16R
#endif
