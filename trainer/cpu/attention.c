// trainer/cpu/attention.c — non-causal multi-head self-attention core, as timm's Attention:
// att = softmax(q k^T * hs^-0.5), out = att v.  One OpenMP task per (batch, head); the head's
// q/k/v rows are hs-contiguous slices of the (B, T, 3C) qkv tensor, read in place.
#ifndef VM_GENERIC_PASS
#define VM_GENERIC_FILE "trainer/cpu/attention.c"
#include "trainer/cpu/generic.h"
#else

// out (B, T, C); att (B, NH, T, T) softmax probabilities; qkv (B, T, 3C) = [q | k | v]
void FN(attention_forward)(real *out, real *att, const real *qkv, int B, int T, int C, int NH) {
    const int hs = C / NH;
    const size_t C3 = (size_t)3 * C;
    const real scale = (real)1 / sqrt((real)hs);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const real *base = qkv + (size_t)b * T * C3 + (size_t)h * hs;
            real *A = att + ((size_t)b * NH + h) * T * T;
            for (int t = 0; t < T; t++) {
                const real *q = base + t * C3;
                real *arow = A + (size_t)t * T;
                real maxv = -INFINITY;
                for (int t2 = 0; t2 < T; t2++) {
                    const real *k = base + t2 * C3 + C;
                    real s = 0;
#pragma omp simd reduction(+ : s)
                    for (int i = 0; i < hs; i++) s += q[i] * k[i];
                    s *= scale;
                    arow[t2] = s;
                    if (s > maxv) maxv = s;
                }
                acc_t sum = 0;
                for (int t2 = 0; t2 < T; t2++) {
                    arow[t2] = exp(arow[t2] - maxv);
                    sum += arow[t2];
                }
                real inv = (real)(1 / sum);
                for (int t2 = 0; t2 < T; t2++) arow[t2] *= inv;
                real *o = out + ((size_t)b * T + t) * C + (size_t)h * hs;
                for (int i = 0; i < hs; i++) o[i] = 0;
                for (int t2 = 0; t2 < T; t2++) {
                    const real *v = base + t2 * C3 + 2 * C;
                    real a = arow[t2];
#pragma omp simd
                    for (int i = 0; i < hs; i++) o[i] += a * v[i];
                }
            }
        }
}

// dqkv (B, T, 3C) = ; scratch (B, NH, T, T) holds d(pre-softmax scores) row by row.
void FN(attention_backward)(real *dqkv, real *scratch, const real *dout, const real *qkv,
                            const real *att, int B, int T, int C, int NH) {
    const int hs = C / NH;
    const size_t C3 = (size_t)3 * C;
    const real scale = (real)1 / sqrt((real)hs);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const real *base = qkv + (size_t)b * T * C3 + (size_t)h * hs;
            real *dbase = dqkv + (size_t)b * T * C3 + (size_t)h * hs;
            const real *A = att + ((size_t)b * NH + h) * T * T;
            real *D = scratch + ((size_t)b * NH + h) * T * T;
            for (int t = 0; t < T; t++)  // this task owns the head's slices of dq, dk, dv
                for (int j = 0; j < 3; j++) memset(dbase + t * C3 + (size_t)j * C, 0, hs * sizeof(real));
            for (int t = 0; t < T; t++) {
                const real *arow = A + (size_t)t * T;
                const real *dy = dout + ((size_t)b * T + t) * C + (size_t)h * hs;
                real *drow = D + (size_t)t * T;
                // datt[t2] = dy . v[t2];  dv[t2] += att[t, t2] dy
                acc_t s = 0;
                for (int t2 = 0; t2 < T; t2++) {
                    const real *v = base + t2 * C3 + 2 * C;
                    real *dv = dbase + t2 * C3 + 2 * C;
                    real a = arow[t2], d = 0;
#pragma omp simd reduction(+ : d)
                    for (int i = 0; i < hs; i++) {
                        d += dy[i] * v[i];
                        dv[i] += a * dy[i];
                    }
                    drow[t2] = d;
                    s += (acc_t)a * d;
                }
                // softmax backward, with the score scale folded in
                for (int t2 = 0; t2 < T; t2++) drow[t2] = arow[t2] * (drow[t2] - (real)s) * scale;
                // dq[t] = sum_t2 dpre[t2] k[t2];  dk[t2] += dpre[t2] q[t]
                const real *q = base + t * C3;
                real *dq = dbase + t * C3;
                for (int t2 = 0; t2 < T; t2++) {
                    const real *k = base + t2 * C3 + C;
                    real *dk = dbase + t2 * C3 + C;
                    real g = drow[t2];
#pragma omp simd
                    for (int i = 0; i < hs; i++) {
                        dq[i] += g * k[i];
                        dk[i] += g * q[i];
                    }
                }
            }
        }
}

#endif
