// trainer/cpu/adamw.c — the optimiser: sum of squares (gradient norm) and one AdamW step.
#ifndef VM_GENERIC_PASS
#define VM_GENERIC_FILE "trainer/cpu/adamw.c"
#include "trainer/cpu/generic.h"
#else

// *out = sum x^2, in double over fixed blocks summed in order (same result for any thread count)
void FN(sumsq)(real *out, const real *x, size_t N) {
    enum { NB = 64 };
    acc_t part[NB] = {0};
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < NB; blk++) {
        size_t lo = N * blk / NB, hi = N * (blk + 1) / NB;
        acc_t s = 0;
#pragma omp simd reduction(+ : s)
        for (size_t i = lo; i < hi; i++) s += (acc_t)x[i] * x[i];
        part[blk] = s;
    }
    acc_t total = 0;
    for (int blk = 0; blk < NB; blk++) total += part[blk];
    *out = (real)total;
}

// torch.optim.AdamW (1.13, _single_tensor_adamw, amsgrad off), step by step in its order:
//   param *= 1 - lr wd; m = m b1 + g (1 - b1); v = v b2 + g g (1 - b2);
//   param += -(lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// The bias corrections are computed in double as Python does.  g = grad * grad_scale.
void FN(adamw)(real *param, const real *grad, real *m, real *v, size_t N, real lr, real beta1,
               real beta2, real eps, real weight_decay, int t, real grad_scale) {
    const double bc1 = 1 - pow((double)beta1, (double)t), bc2 = 1 - pow((double)beta2, (double)t);
    const real step_size = (real)((double)lr / bc1);
    const real bc2_sqrt = (real)sqrt(bc2);
    const real decay = (real)(1 - (double)lr * weight_decay);
    const real a1 = (real)1 - beta1, a2 = (real)1 - beta2;
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < N; i++) {
        real g = grad_scale == 1 ? grad[i] : grad[i] * grad_scale;
        real mi = m[i] * beta1 + g * a1;
        real vi = v[i] * beta2 + g * g * a2;
        real denom = sqrt(vi) / bc2_sqrt + eps;
        m[i] = mi;
        v[i] = vi;
        param[i] = param[i] * decay - step_size * (mi / denom);
    }
}

// The ranges one after the other: on the CPU a call per range costs nothing worth saving.
void FN(adamw_ranges)(real *param, const real *grad, real *m, real *v, const vm_adamw_range *ranges, int nranges,
                      real lr, real beta1, real beta2, real eps, real weight_decay, int t, real grad_scale) {
    for (int i = 0; i < nranges; i++) {
        const vm_adamw_range *r = &ranges[i];
        FN(adamw)(param + r->off, grad + r->off, m + r->off, v + r->off, r->n, lr, beta1, beta2, eps,
                  r->decay ? weight_decay : 0, t, grad_scale);
    }
}

#endif
