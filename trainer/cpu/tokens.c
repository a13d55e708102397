// trainer/cpu/tokens.c — input patches and MAE's token plumbing: gather the kept tokens behind
// the class token, put them back in patch order with mask tokens, drop the class token, pool.
#ifndef VM_GENERIC_PASS
#define VM_GENERIC_FILE "trainer/cpu/tokens.c"
#include "trainer/cpu/generic.h"
#else

// img (B, H, W, 3) uint8 -> out (B, L, 3*P*P), L = (H/P)*(W/P) in row-major grid order.
// x = (v/255 - mean[c]) / std[c] computed as torchvision's ToTensor + Normalize (in real).
// conv_order=1: patch flattened (c, py, px); 0: (py, px, c), MAE's patchify().
void FN(patchify)(real *out, const uint8_t *img, int B, int H, int W, int P, int conv_order,
                  const real mean[3], const real std[3]) {
    const int gh = H / P, gw = W / P, L = gh * gw, D = 3 * P * P;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int l = 0; l < L; l++) {
            int gy = l / gw, gx = l % gw;
            real *o = out + ((size_t)b * L + l) * D;
            for (int py = 0; py < P; py++) {
                const uint8_t *px = img + (((size_t)b * H + gy * P + py) * W + (size_t)gx * P) * 3;
                for (int x = 0; x < P; x++)
                    for (int c = 0; c < 3; c++) {
                        real v = ((real)px[x * 3 + c] / (real)255 - mean[c]) / std[c];
                        int j = conv_order ? (c * P + py) * P + x : (py * P + x) * 3 + c;
                        o[j] = v;
                    }
            }
        }
}

// out (B, 1+K, C): row 0 = cls, row 1+k = x[b, ids_keep[b, k]]
void FN(gather_tokens)(real *out, const real *x, const real *cls, const int32_t *ids_keep, int B,
                       int L, int K, int C) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int k = 0; k <= K; k++) {
            const real *src = k == 0 ? cls : x + ((size_t)b * L + ids_keep[(size_t)b * K + k - 1]) * C;
            memcpy(out + ((size_t)b * (K + 1) + k) * C, src, (size_t)C * sizeof(real));
        }
}

// dx (B, L, C) = scatter of dout rows 1..K, zero elsewhere; dcls (C) += sum over b of row 0
void FN(gather_tokens_backward)(real *dx, real *dcls, const real *dout, const int32_t *ids_keep,
                                int B, int L, int K, int C) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        memset(dx + (size_t)b * L * C, 0, (size_t)L * C * sizeof(real));
        for (int k = 0; k < K; k++)
            memcpy(dx + ((size_t)b * L + ids_keep[(size_t)b * K + k]) * C,
                   dout + ((size_t)b * (K + 1) + 1 + k) * C, (size_t)C * sizeof(real));
    }
    for (int b = 0; b < B; b++) {  // B rows of C: serial, in order
        const real *d = dout + (size_t)b * (K + 1) * C;
        for (int c = 0; c < C; c++) dcls[c] += d[c];
    }
}

// out (B, 1+L, C): row 0 = x row 0; row 1+l = x[b, 1+ids_restore[b,l]] if < K else mask_token
void FN(unshuffle_tokens)(real *out, const real *x, const real *mask_token,
                          const int32_t *ids_restore, int B, int L, int K, int C) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int l = -1; l < L; l++) {
            const real *src;
            if (l < 0) src = x + (size_t)b * (K + 1) * C;
            else {
                int k = ids_restore[(size_t)b * L + l];
                src = k < K ? x + ((size_t)b * (K + 1) + 1 + k) * C : mask_token;
            }
            memcpy(out + ((size_t)b * (L + 1) + 1 + l) * C, src, (size_t)C * sizeof(real));
        }
}

// dx (B, 1+K, C) = ; dmask_token (C) += sum of the masked rows' gradients
void FN(unshuffle_tokens_backward)(real *dx, real *dmask_token, const real *dout,
                                   const int32_t *ids_restore, int B, int L, int K, int C) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        memcpy(dx + (size_t)b * (K + 1) * C, dout + (size_t)b * (L + 1) * C, (size_t)C * sizeof(real));
        for (int l = 0; l < L; l++) {
            int k = ids_restore[(size_t)b * L + l];
            if (k < K)
                memcpy(dx + ((size_t)b * (K + 1) + 1 + k) * C, dout + ((size_t)b * (L + 1) + 1 + l) * C,
                       (size_t)C * sizeof(real));
        }
    }
    enum { CH = 64 };
    int nch = (C + CH - 1) / CH;
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < nch; ch++) {  // mask token gradient: column chunks, rows in order
        int lo = ch * CH, w = C - lo < CH ? C - lo : CH;
        acc_t s[CH] = {0};
        for (int b = 0; b < B; b++)
            for (int l = 0; l < L; l++) {
                if (ids_restore[(size_t)b * L + l] < K) continue;
                const real *d = dout + ((size_t)b * (L + 1) + 1 + l) * C + lo;
                for (int i = 0; i < w; i++) s[i] += d[i];
            }
        for (int i = 0; i < w; i++) dmask_token[lo + i] += (real)s[i];
    }
}

// out (B, T-1, C) = inp[:, 1:, :]
void FN(drop_first_token)(real *out, const real *inp, int B, int T, int C) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++)
        memcpy(out + (size_t)b * (T - 1) * C, inp + ((size_t)b * T + 1) * C,
               (size_t)(T - 1) * C * sizeof(real));
}

// dinp (B, T, C) = : row 0 zero, rows 1.. from dout (B, T-1, C)
void FN(drop_first_token_backward)(real *dinp, const real *dout, int B, int T, int C) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        memset(dinp + (size_t)b * T * C, 0, (size_t)C * sizeof(real));
        memcpy(dinp + ((size_t)b * T + 1) * C, dout + (size_t)b * (T - 1) * C,
               (size_t)(T - 1) * C * sizeof(real));
    }
}

// out (B, C) = mean over rows 1..T-1 of inp (B, T, C) (pool_cls=0), or row 0 (pool_cls=1).
// Column chunks so that each row segment is read contiguously.
void FN(pool_forward)(real *out, const real *inp, int B, int T, int C, int pool_cls) {
    const int CH = VM_COL_CHUNK_MAX, nch = (C + CH - 1) / CH;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int ch = 0; ch < nch; ch++) {
            const real *x = inp + (size_t)b * T * C;
            real *o = out + (size_t)b * C;
            int lo = ch * CH, w = C - lo < CH ? C - lo : CH;
            if (pool_cls) {
                memcpy(o + lo, x + lo, (size_t)w * sizeof(real));
                continue;
            }
            acc_t s[VM_COL_CHUNK_MAX];
            for (int i = 0; i < w; i++) s[i] = 0;
            for (int t = 1; t < T; t++) {
                const real *row = x + (size_t)t * C + lo;
#pragma omp simd
                for (int i = 0; i < w; i++) s[i] += row[i];
            }
            for (int i = 0; i < w; i++) o[lo + i] = (real)(s[i] / (T - 1));
        }
}

// dinp (B, T, C) += the pooled gradient spread back
void FN(pool_backward)(real *dinp, const real *dout, int B, int T, int C, int pool_cls) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        real *dx = dinp + (size_t)b * T * C;
        const real *d = dout + (size_t)b * C;
        if (pool_cls) {
            for (int c = 0; c < C; c++) dx[c] += d[c];
            continue;
        }
        real inv = (real)1 / (real)(T - 1);
        for (int t = 1; t < T; t++)
            for (int c = 0; c < C; c++) dx[(size_t)t * C + c] += d[c] * inv;
    }
}

#endif
