// trainer/cpu/matmul.c — linear layers on OpenBLAS: out = inp @ weight^T + bias, and both
// backward products, each one GEMM with the right transposes (no copies, no transposed buffers).
#ifndef VM_GENERIC_PASS
#define VM_GENERIC_FILE "trainer/cpu/matmul.c"
#include "trainer/cpu/generic.h"
#else

// out (N, OC) = inp (N, C) @ weight (OC, C)^T + bias (OC)
void FN(matmul_forward)(real *out, const real *inp, const real *weight, const real *bias, int N,
                        int C, int OC) {
    if (N <= 0 || OC <= 0) return;
    if (bias) {  // preload the bias so that the GEMM adds onto it (beta = 1)
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) memcpy(out + (size_t)n * OC, bias, (size_t)OC * sizeof(real));
    }
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1, inp, C, weight, C, bias ? 1 : 0,
         out, OC);
}

// dinp (N, C) = dout (N, OC) @ weight (OC, C); dweight (OC, C) += dout^T @ inp; dbias += colsum
void FN(matmul_backward)(real *dinp, real *dweight, real *dbias, const real *dout,
                         const real *inp, const real *weight, int N, int C, int OC) {
    if (N <= 0 || OC <= 0) return;
    if (dinp) GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1, dout, OC, weight, C, 0, dinp, C);
    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1, dout, OC, inp, C, 1, dweight, C);
    if (dbias) FN(add_rows_backward)(dbias, dout, N, 1, OC);  // column sums of dout
}

#endif
