// trainer/cpu/attention.c — non-causal multi-head self-attention core, as timm's Attention:
// att = softmax(q k^T * hs^-0.5), out = att v.  One OpenMP task per (batch, head); each product
// is a single-threaded GEMM reading the head's q/k/v in place (rows of the (B, T, 3C) qkv tensor,
// leading dimension 3C) and writing the head's columns of out / dqkv directly.
#ifndef VM_GENERIC_PASS
#define VM_GENERIC_FILE "trainer/cpu/attention.c"
#include "trainer/cpu/generic.h"
#else

// out (B, T, C); att (B, NH, T, T) softmax probabilities; qkv (B, T, 3C) = [q | k | v]
void FN(attention_forward)(real *out, real *att, const real *qkv, int B, int T, int C, int NH) {
    const int hs = C / NH, C3 = 3 * C;
    const real scale = (real)1 / sqrt((real)hs);
    int blas_threads = vm_cpu_blas_serial_begin();
#pragma omp parallel for schedule(dynamic, 1)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        const real *q = qkv + (size_t)b * T * C3 + (size_t)h * hs, *k = q + C, *v = q + 2 * C;
        real *A = att + (size_t)bh * T * T;
        // A (T, T) = scale * q (T, hs) @ k^T
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, scale, q, C3, k, C3, 0, A, T);
        for (int t = 0; t < T; t++) {  // row softmax (vectorised: fixed order, reproducible)
            real *a = A + (size_t)t * T, mx = a[0], sum = 0;
#pragma omp simd reduction(max : mx)
            for (int u = 1; u < T; u++) mx = a[u] > mx ? a[u] : mx;
#pragma omp simd reduction(+ : sum)
            for (int u = 0; u < T; u++) {
                a[u] = VEXP(a[u] - mx);
                sum += a[u];
            }
            real inv = 1 / sum;
#pragma omp simd
            for (int u = 0; u < T; u++) a[u] *= inv;
        }
        // out[b, :, h*hs:(h+1)*hs] (T, hs) = A @ v
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1, A, T, v, C3, 0,
             out + (size_t)b * T * C + (size_t)h * hs, C);
    }
    vm_cpu_blas_serial_end(blas_threads);
}

// dqkv (B, T, 3C) = ; scratch (B, NH, T, T) holds d(scores) of each head.
void FN(attention_backward)(real *dqkv, real *scratch, const real *dout, const real *qkv,
                            const real *att, int B, int T, int C, int NH) {
    const int hs = C / NH, C3 = 3 * C;
    const real scale = (real)1 / sqrt((real)hs);
    int blas_threads = vm_cpu_blas_serial_begin();
#pragma omp parallel for schedule(dynamic, 1)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        const real *q = qkv + (size_t)b * T * C3 + (size_t)h * hs, *k = q + C, *v = q + 2 * C;
        real *dq = dqkv + (size_t)b * T * C3 + (size_t)h * hs, *dk = dq + C, *dv = dq + 2 * C;
        const real *A = att + (size_t)bh * T * T;
        const real *dy = dout + (size_t)b * T * C + (size_t)h * hs;
        real *D = scratch + (size_t)bh * T * T;
        // dv (T, hs) = A^T @ dy;  D (T, T) = dA = dy @ v^T
        GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1, A, T, dy, C, 0, dv, C3);
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, 1, dy, C, v, C3, 0, D, T);
        for (int t = 0; t < T; t++) {  // softmax backward, score scale folded in
            const real *a = A + (size_t)t * T;
            real *d = D + (size_t)t * T;
            real s = 0;
#pragma omp simd reduction(+ : s)
            for (int u = 0; u < T; u++) s += a[u] * d[u];
#pragma omp simd
            for (int u = 0; u < T; u++) d[u] = a[u] * (d[u] - s) * scale;
        }
        // dq (T, hs) = D @ k;  dk (T, hs) = D^T @ q
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1, D, T, k, C3, 0, dq, C3);
        GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1, D, T, q, C3, 0, dk, C3);
    }
    vm_cpu_blas_serial_end(blas_threads);
}

#endif
