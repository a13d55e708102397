// trainer/cpu/losses.c — the training losses, value and gradient in one pass each, computed as the
// official PyTorch code computes them (MAE forward_loss, SimCLR NT-Xent, SimSiam, VICReg).
// Each writes the scalar loss (host) and the gradient of dloss * loss.
//
// InfoNCE and VICReg need O(N^2) / O(D^2) temporaries that the op interface does not pass in; as
// the losses run once per step on small matrices, the CPU backend allocates them here.  On
// allocation failure the process aborts: ops cannot fail by contract.  Their GEMMs are small and
// run single-threaded (same bits for any thread count).
#ifndef VM_GENERIC_PASS
#define VM_GENERIC_FILE "trainer/cpu/losses.c"
#include <stdio.h>
#include "trainer/cpu/generic.h"
#else

static real *FN(loss_scratch)(size_t n) {
    real *p = calloc(n, sizeof(real));  // zeroed: GEMM reads some of it as input
    if (!p) {
        fprintf(stderr, "vicmae: cpu loss: out of memory for %zu values\n", n);
        abort();
    }
    return p;
}

// MAE: pred, target (B, L, D); mask (B, L), 1 = masked.  With norm_pix the target patch is
// (t - mean) / sqrt(var + 1e-6), var unbiased (torch .var()).  loss = sum(mask * mean_d (p - t)^2)
// / sum(mask).  Row losses go to fixed blocks that are summed in order (reproducible).
void FN(mae_loss)(real *loss, real *dpred, const real *pred, const real *target,
                  const real *mask, int B, int L, int D, int norm_pix, real dloss) {
    const size_t rows = (size_t)B * L;
    acc_t msum = 0;
    for (size_t r = 0; r < rows; r++) msum += mask[r];
    const real g = (real)(2 / (msum * D)) * dloss;  // d/dpred of mask * mean_d diff^2 / msum
    enum { NB = 64 };
    acc_t part[NB] = {0};
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < NB; blk++) {
        size_t lo = rows * blk / NB, hi = rows * (blk + 1) / NB;
        acc_t s = 0;
        for (size_t r = lo; r < hi; r++) {
            const real *p = pred + r * D, *t = target + r * D;
            real *dp = dpred + r * D;
            real m = 0, rs = 1;
            if (norm_pix) {
                acc_t sm = 0, sv = 0;
#pragma omp simd reduction(+ : sm)
                for (int d = 0; d < D; d++) sm += t[d];
                m = (real)(sm / D);
#pragma omp simd reduction(+ : sv)
                for (int d = 0; d < D; d++) {
                    acc_t e = (acc_t)t[d] - m;
                    sv += e * e;
                }
                real var = (real)(sv / (D - 1));
                rs = (real)1 / sqrt(var + (real)1e-6);
            }
            acc_t se = 0;
            real gm = g * mask[r];
#pragma omp simd reduction(+ : se)
            for (int d = 0; d < D; d++) {
                real diff = p[d] - (norm_pix ? (t[d] - m) * rs : t[d]);
                se += (acc_t)diff * diff;
                dp[d] = gm * diff;
            }
            s += mask[r] * (se / D);
        }
        part[blk] = s;
    }
    acc_t total = 0;
    for (int blk = 0; blk < NB; blk++) total += part[blk];
    *loss = (real)(total / msum);
}

// NT-Xent (SimCLR): z = [z1; z2] (2N, D), zn = z / max(|z|, 1e-12) (F.normalize), logits
// zn zn^T / temperature with the diagonal removed; row i's positive is i +- N; cross-entropy over
// the 2N-1 remaining logits, mean over the 2N rows.
void FN(infonce_loss)(real *loss, real *dz1, real *dz2, const real *z1, const real *z2, int N,
                      int D, real temperature, real dloss) {
    const int M = 2 * N;
    real *zn = FN(loss_scratch)((size_t)M * D * 2 + (size_t)M * M + M);
    const int blas_threads = vm_cpu_blas_serial_begin();
    real *dzn = zn + (size_t)M * D, *S = dzn + (size_t)M * D, *nrm = S + (size_t)M * M;
    for (int i = 0; i < M; i++) {
        const real *z = i < N ? z1 + (size_t)i * D : z2 + (size_t)(i - N) * D;
        acc_t ss = 0;
        for (int d = 0; d < D; d++) ss += (acc_t)z[d] * z[d];
        real n = (real)sqrt(ss);
        nrm[i] = n > (real)1e-12 ? n : (real)1e-12;
        for (int d = 0; d < D; d++) zn[(size_t)i * D + d] = z[d] / nrm[i];
    }
    const real invt = (real)1 / temperature;
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, M, M, D, invt, zn, D, zn, D, 0, S, M);
    // S[i, j] <- d loss / d logit[i, j] = (softmax_j - [j = pos]) * dloss / M, 0 on the diagonal
    acc_t total = 0;
    const real gs = dloss / (real)M;
    for (int i = 0; i < M; i++) {
        real *s = S + (size_t)i * M;
        int pos = i < N ? i + N : i - N;
        real mx = -INFINITY;
        for (int j = 0; j < M; j++)
            if (j != i && s[j] > mx) mx = s[j];
        acc_t se = 0;
        for (int j = 0; j < M; j++)
            if (j != i) se += exp((acc_t)s[j] - mx);
        acc_t lse = mx + log(se);
        total += lse - s[pos];
        for (int j = 0; j < M; j++) {
            real p = j == i ? 0 : (real)exp((acc_t)s[j] - lse);
            s[j] = (p - (j == pos ? (real)1 : (real)0)) * gs;
        }
    }
    *loss = (real)(total / M);
    // dzn = (G + G^T) zn / temperature
    GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, D, M, invt, S, M, zn, D, 0, dzn, D);
    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, M, D, M, invt, S, M, zn, D, 1, dzn, D);
    // through the normalisation: dz = (dzn - zn (zn . dzn)) / |z|   (dzn / eps when clamped)
    for (int i = 0; i < M; i++) {
        real *dz = i < N ? dz1 + (size_t)i * D : dz2 + (size_t)(i - N) * D;
        const real *u = zn + (size_t)i * D, *du = dzn + (size_t)i * D;
        acc_t dot = 0;
        for (int d = 0; d < D; d++) dot += (acc_t)u[d] * du[d];
        int clamped = nrm[i] <= (real)1e-12;
        for (int d = 0; d < D; d++)
            dz[d] = (clamped ? du[d] : du[d] - u[d] * (real)dot) / nrm[i];
    }
    vm_cpu_blas_serial_end(blas_threads);
    free(zn);
}

// SimSiam: loss = -(mean_n cos(p1, z2) + mean_n cos(p2, z1)) / 2, z stop-gradient.  cos as
// F.cosine_similarity: a.b / (max(|a|, 1e-8) max(|b|, 1e-8)).
static acc_t FN(neg_cos_rows)(real *dp, const real *p, const real *z, int N, int D, real g) {
    acc_t total = 0;
    for (int n = 0; n < N; n++) {
        const real *a = p + (size_t)n * D, *b = z + (size_t)n * D;
        real *da = dp + (size_t)n * D;
        acc_t aa = 0, bb = 0, ab = 0;
        for (int d = 0; d < D; d++) {
            aa += (acc_t)a[d] * a[d];
            bb += (acc_t)b[d] * b[d];
            ab += (acc_t)a[d] * b[d];
        }
        acc_t na = sqrt(aa), nb = sqrt(bb);
        int clamped = na < 1e-8;
        if (na < 1e-8) na = 1e-8;
        if (nb < 1e-8) nb = 1e-8;
        acc_t c = ab / (na * nb);
        total += c;
        // dc/da = b / (|a||b|) - c a / |a|^2   (only the first term when |a| is clamped)
        for (int d = 0; d < D; d++)
            da[d] = -g * (real)(b[d] / (na * nb) - (clamped ? 0 : c * a[d] / (na * na)));
    }
    return total;
}

void FN(simsiam_loss)(real *loss, real *dp1, real *dp2, const real *p1, const real *p2,
                      const real *z1, const real *z2, int N, int D, real dloss) {
    real g = dloss / (real)(2 * N);
    acc_t c1 = FN(neg_cos_rows)(dp1, p1, z2, N, D, g);
    acc_t c2 = FN(neg_cos_rows)(dp2, p2, z1, N, D, g);
    *loss = (real)(-(c1 / N + c2 / N) / 2);
}

// One VICReg branch x (N, D): centre, std = sqrt(var + 1e-4) (unbiased var), std term
// mean_d relu(1 - std) / 2, cov = xc^T xc / (N-1), cov term sum_{i!=j} cov^2 / D.  Adds the
// gradients of w_var * std term + w_cov * cov term (times dloss) into dx.  scratch: N*D + D*D.
static void FN(vicreg_branch)(acc_t *std_term, acc_t *cov_term, real *dx, const real *x,
                              real *scratch, int N, int D, real w_var, real w_cov, real dloss) {
    real *xc = scratch, *cov = scratch + (size_t)N * D;
    for (int d = 0; d < D; d++) {
        acc_t s = 0;
        for (int n = 0; n < N; n++) s += x[(size_t)n * D + d];
        real m = (real)(s / N);
        for (int n = 0; n < N; n++) xc[(size_t)n * D + d] = x[(size_t)n * D + d] - m;
    }
    const real inv_n1 = (real)1 / (real)(N - 1);
    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, D, D, N, inv_n1, xc, D, xc, D, 0, cov, D);
    // cov term, and cov <- d term / d cov = 2 cov / D off the diagonal (times w_cov dloss)
    acc_t cs = 0;
    const real gc = (real)2 / (real)D * w_cov * dloss;
    for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++) {
            real c = cov[(size_t)i * D + j];
            if (i != j) cs += (acc_t)c * c;
            cov[(size_t)i * D + j] = i == j ? 0 : gc * c;
        }
    *cov_term = cs / D;
    // std term; d var_d = -[std < 1] / (2D) / (2 std) w_var dloss; var's own diagonal is cov's,
    // so fold it into the diagonal of dcov: d xc = 2 xc dcov / (N-1)  (dcov symmetric)
    acc_t ss = 0;
    for (int d = 0; d < D; d++) {
        acc_t v = 0;  // the diagonal of cov, recomputed (it was overwritten above)
        for (int n = 0; n < N; n++) v += (acc_t)xc[(size_t)n * D + d] * xc[(size_t)n * D + d];
        real stdv = (real)sqrt((real)(v / (N - 1)) + (real)1e-4);
        real h = (real)1 - stdv;
        if (h > 0) {
            ss += h;
            cov[(size_t)d * D + d] = -w_var * dloss / (real)(2 * D) / (2 * stdv);
        }
    }
    *std_term = ss / D / 2;
    // dxc (N, D) = 2 xc dvar_cov / (N-1); then through the centring: dx = dxc - mean_n dxc
    real *dxc = cov + (size_t)D * D;
    GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, D, D, 2 * inv_n1, xc, D, cov, D, 0, dxc, D);
    for (int d = 0; d < D; d++) {
        acc_t s = 0;
        for (int n = 0; n < N; n++) s += dxc[(size_t)n * D + d];
        real m = (real)(s / N);
        for (int n = 0; n < N; n++) dx[(size_t)n * D + d] += dxc[(size_t)n * D + d] - m;
    }
}

// VICReg (official code): repr = mse(z1, z2); std = the two branches' hinge terms summed (each
// halved); cov = the two branches' off-diagonal terms summed.  terms = {repr, std, cov} (host).
void FN(vicreg_loss)(real *loss, real *terms, real *dz1, real *dz2, const real *z1,
                     const real *z2, int N, int D, real w_sim, real w_var, real w_cov,
                     real dloss) {
    const size_t ND = (size_t)N * D;
    acc_t se = 0;
    const real gs = (real)2 / (real)ND * w_sim * dloss;
    for (size_t i = 0; i < ND; i++) {
        real diff = z1[i] - z2[i];
        se += (acc_t)diff * diff;
        dz1[i] = gs * diff;
        dz2[i] = -gs * diff;
    }
    real *scratch = FN(loss_scratch)(2 * ND + (size_t)D * D);
    const int blas_threads = vm_cpu_blas_serial_begin();
    acc_t std1, cov1, std2, cov2;
    FN(vicreg_branch)(&std1, &cov1, dz1, z1, scratch, N, D, w_var, w_cov, dloss);
    FN(vicreg_branch)(&std2, &cov2, dz2, z2, scratch, N, D, w_var, w_cov, dloss);
    vm_cpu_blas_serial_end(blas_threads);
    free(scratch);
    acc_t repr = se / ND, stdl = std1 + std2, covl = cov1 + cov2;
    terms[0] = (real)repr;
    terms[1] = (real)stdl;
    terms[2] = (real)covl;
    *loss = (real)(w_sim * repr + w_var * stdl + w_cov * covl);
}

#endif
