// trainer/cpu/norm.c — LayerNorm (over channels, per token) and BatchNorm1d (over the batch, per
// channel, training mode).  Sums over the batch are accumulated in double, per column chunk in a
// fixed row order, so results do not depend on the thread count.
#ifndef VM_GENERIC_PASS
#define VM_GENERIC_FILE "trainer/cpu/norm.c"
#include "trainer/cpu/generic.h"
#else

// out, inp (N, C); mean, rstd (N); weight, bias (C).  Biased variance, as nn.LayerNorm.  Row
// sums are vectorised reductions in real (C is a few hundred), two passes for the variance.
void FN(layernorm_forward)(real *out, real *mean, real *rstd, const real *inp, const real *weight,
                           const real *bias, int N, int C, real eps) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const real *x = inp + (size_t)n * C;
        real *y = out + (size_t)n * C;
        real s = 0, v = 0;
#pragma omp simd reduction(+ : s)
        for (int c = 0; c < C; c++) s += x[c];
        const real m = s / (real)C;
#pragma omp simd reduction(+ : v)
        for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
        const real r = (real)1 / sqrt(v / (real)C + eps);
#pragma omp simd
        for (int c = 0; c < C; c++) y[c] = (x[c] - m) * r * weight[c] + bias[c];
        mean[n] = m;
        rstd[n] = r;
    }
}

// dinp (N, C) += ; dweight, dbias (C) +=
void FN(layernorm_backward)(real *dinp, real *dweight, real *dbias, const real *dout,
                            const real *inp, const real *weight, const real *mean,
                            const real *rstd, int N, int C) {
    // input gradient, row by row: dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dout * weight
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const real *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
        real *dx = dinp + (size_t)n * C;
        const real m = mean[n], r = rstd[n];
        real sg = 0, sgx = 0;
#pragma omp simd reduction(+ : sg, sgx)
        for (int c = 0; c < C; c++) {
            real g = dy[c] * weight[c];
            sg += g;
            sgx += g * ((x[c] - m) * r);
        }
        const real mg = sg / (real)C, mgx = sgx / (real)C;
#pragma omp simd
        for (int c = 0; c < C; c++) dx[c] += (dy[c] * weight[c] - mg - (x[c] - m) * r * mgx) * r;
    }
    // parameter gradients, column chunks over all rows
    const int CH = (int)vm_cpu_col_chunk((size_t)C), nch = (C + CH - 1) / CH;
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < nch; ch++) {
        int lo = ch * CH, w = C - lo < CH ? C - lo : CH;
        acc_t sw[VM_COL_CHUNK_MAX], sb[VM_COL_CHUNK_MAX];
        for (int i = 0; i < w; i++) sw[i] = sb[i] = 0;
        for (int n = 0; n < N; n++) {
            const real *x = inp + (size_t)n * C + lo, *dy = dout + (size_t)n * C + lo;
            real m = mean[n], r = rstd[n];
#pragma omp simd
            for (int i = 0; i < w; i++) {
                sw[i] += (acc_t)dy[i] * ((x[i] - m) * r);
                sb[i] += dy[i];
            }
        }
        for (int i = 0; i < w; i++) {
            dweight[lo + i] += (real)sw[i];
            dbias[lo + i] += (real)sb[i];
        }
    }
}

// BatchNorm1d, training mode.  out, inp (N, C); mean, rstd (C): rstd = 1/sqrt(biased var + eps);
// running_mean/var (C) <- (1 - momentum) * running + momentum * (mean | unbiased var).
void FN(batchnorm_forward)(real *out, real *mean, real *rstd, real *running_mean,
                           real *running_var, const real *inp, const real *weight,
                           const real *bias, int N, int C, real eps, real momentum) {
    enum { CH = 64 };
    int nch = (C + CH - 1) / CH;
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < nch; ch++) {
        int lo = ch * CH, w = C - lo < CH ? C - lo : CH;
        acc_t s[CH] = {0}, v[CH] = {0};
        real m[CH], r[CH];
        for (int n = 0; n < N; n++) {
            const real *x = inp + (size_t)n * C + lo;
            for (int i = 0; i < w; i++) s[i] += x[i];
        }
        for (int i = 0; i < w; i++) m[i] = (real)(s[i] / N);
        for (int n = 0; n < N; n++) {
            const real *x = inp + (size_t)n * C + lo;
            for (int i = 0; i < w; i++) {
                acc_t d = (acc_t)x[i] - m[i];
                v[i] += d * d;
            }
        }
        for (int i = 0; i < w; i++) {
            int c = lo + i;
            r[i] = (real)(1 / sqrt(v[i] / N + (acc_t)eps));
            mean[c] = m[i];
            rstd[c] = r[i];
            if (running_mean) running_mean[c] = ((real)1 - momentum) * running_mean[c] + momentum * m[i];
            if (running_var) {
                real unbiased = (real)(N > 1 ? v[i] / (N - 1) : v[i]);
                running_var[c] = ((real)1 - momentum) * running_var[c] + momentum * unbiased;
            }
        }
        for (int n = 0; n < N; n++) {
            const real *x = inp + (size_t)n * C + lo;
            real *y = out + (size_t)n * C + lo;
            for (int i = 0; i < w; i++) {
                real yh = (x[i] - m[i]) * r[i];
                y[i] = weight ? yh * weight[lo + i] + (bias ? bias[lo + i] : 0) : yh;
            }
        }
    }
}

// dinp (N, C) = ; dweight, dbias (C) += (may be NULL)
void FN(batchnorm_backward)(real *dinp, real *dweight, real *dbias, const real *dout,
                            const real *inp, const real *weight, const real *mean,
                            const real *rstd, int N, int C) {
    enum { CH = 64 };
    int nch = (C + CH - 1) / CH;
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < nch; ch++) {
        int lo = ch * CH, w = C - lo < CH ? C - lo : CH;
        acc_t sdy[CH] = {0}, sdyx[CH] = {0};
        for (int n = 0; n < N; n++) {
            const real *x = inp + (size_t)n * C + lo, *dy = dout + (size_t)n * C + lo;
            for (int i = 0; i < w; i++) {
                sdy[i] += dy[i];
                sdyx[i] += (acc_t)dy[i] * (((acc_t)x[i] - mean[lo + i]) * rstd[lo + i]);
            }
        }
        // dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy * weight, evaluated in double and
        // rounded once: sum_n dx is zero in exact arithmetic (what a bias before BatchNorm sees),
        // and fewer roundings leave less noise there.
        acc_t a[CH], mg[CH], mgx[CH];
        for (int i = 0; i < w; i++) {
            a[i] = weight ? weight[lo + i] : 1;
            mg[i] = sdy[i] / N * a[i];
            mgx[i] = sdyx[i] / N * a[i];
            if (dweight) dweight[lo + i] += (real)sdyx[i];
            if (dbias) dbias[lo + i] += (real)sdy[i];
        }
        for (int n = 0; n < N; n++) {
            const real *x = inp + (size_t)n * C + lo, *dy = dout + (size_t)n * C + lo;
            real *dx = dinp + (size_t)n * C + lo;
            for (int i = 0; i < w; i++) {
                acc_t r = rstd[lo + i], xhat = ((acc_t)x[i] - mean[lo + i]) * r;
                dx[i] = (real)((dy[i] * a[i] - mg[i] - xhat * mgx[i]) * r);
            }
        }
    }
}

#endif
