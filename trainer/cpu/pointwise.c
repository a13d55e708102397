// trainer/cpu/pointwise.c — elementwise ops (GELU, ReLU, residual adds) and row broadcasts,
// parallel with OpenMP.  Reductions over the batch go column-chunk by column-chunk so that each
// output element is summed in a fixed order whatever the thread count (bitwise reproducible).
#ifndef VM_GENERIC_PASS
#define VM_GENERIC_FILE "trainer/cpu/pointwise.c"
#include "trainer/cpu/generic.h"
#else

// exact GELU: 0.5 x (1 + erf(x / sqrt 2)), as nn.GELU() (approximate='none')
void FN(gelu_forward)(real *out, const real *inp, size_t N) {
    const real inv_sqrt2 = (real)0.70710678118654752440;
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < N; i++) {
        real x = inp[i];
        out[i] = (real)0.5 * x * ((real)1 + VERF(x * inv_sqrt2));
    }
}

// d/dx = Phi(x) + x phi(x) = 0.5 (1 + erf(x/sqrt2)) + x exp(-x^2/2) / sqrt(2 pi)
void FN(gelu_backward)(real *dinp, const real *inp, const real *dout, size_t N) {
    const real inv_sqrt2 = (real)0.70710678118654752440;
    const real inv_sqrt2pi = (real)0.39894228040143267794;
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < N; i++) {
        real x = inp[i];
        real cdf = (real)0.5 * ((real)1 + VERF(x * inv_sqrt2));
        real pdf = VEXP((real)-0.5 * x * x) * inv_sqrt2pi;
        dinp[i] = dout[i] * (cdf + x * pdf);
    }
}

void FN(relu_forward)(real *out, const real *inp, size_t N) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++) out[i] = inp[i] > 0 ? inp[i] : 0;
}

void FN(relu_backward)(real *dinp, const real *inp, const real *dout, size_t N) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++) dinp[i] = inp[i] > 0 ? dout[i] : 0;
}

void FN(add)(real *out, const real *a, const real *b, size_t N) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++) out[i] = a[i] + b[i];
}

void FN(accumulate)(real *dst, const real *src, size_t N) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++) dst[i] += src[i];
}

void FN(scale)(real *x, real s, size_t N) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++) x[i] *= s;
}

// out (B, T, C) = inp (B, T, C) + pos (T, C)
void FN(add_rows)(real *out, const real *inp, const real *pos, int B, int T, int C) {
    size_t M = (size_t)T * C;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            size_t o = (size_t)b * M + (size_t)t * C;
            const real *p = pos + (size_t)t * C;
            for (int c = 0; c < C; c++) out[o + c] = inp[o + c] + p[c];
        }
}

// dpos (M = T*C) += sum over b of dout (B, M): chunks of columns in parallel, rows in order.
void FN(add_rows_backward)(real *dpos, const real *dout, int B, int T, int C) {
    const size_t M = (size_t)T * C, CH = vm_cpu_col_chunk(M), nch = (M + CH - 1) / CH;
#pragma omp parallel for schedule(static)
    for (size_t ch = 0; ch < nch; ch++) {
        size_t lo = ch * CH, n = M - lo < CH ? M - lo : CH;
        acc_t s[VM_COL_CHUNK_MAX];
        for (size_t i = 0; i < n; i++) s[i] = 0;
        for (int b = 0; b < B; b++) {
            const real *row = dout + (size_t)b * M + lo;
#pragma omp simd
            for (size_t i = 0; i < n; i++) s[i] += row[i];
        }
        for (size_t i = 0; i < n; i++) dpos[lo + i] += (real)s[i];
    }
}

#endif
