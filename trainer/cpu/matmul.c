// trainer/cpu/matmul.c — linear layers on OpenBLAS: out = inp @ weight^T + bias, and both
// backward products, GEMMs with the right transposes (no copies, no transposed buffers).
//
// Threads: OpenBLAS (Debian's pthreads build) has its own thread pool, and its threads and
// OpenMP's would take turns spinning on the same cores between ops.  So each product is split
// into one block of output rows per OpenMP thread, each block a single-threaded GEMM.  Every output
// element is still one dot product over K in OpenBLAS's order, so the split changes no bit
// (tests/test_trainer_ops.c compares 1 and 3 threads).
#ifndef VM_GENERIC_PASS
#define VM_GENERIC_FILE "trainer/cpu/matmul.c"
#include "trainer/cpu/generic.h"
#else

// out (N, OC) = inp (N, C) @ weight (OC, C)^T + bias (OC)
void FN(matmul_forward)(real *out, const real *inp, const real *weight, const real *bias, int N,
                        int C, int OC) {
    if (N <= 0 || OC <= 0) return;
    const int parts = omp_get_max_threads(), blas_threads = vm_cpu_blas_serial_begin();
#pragma omp parallel for schedule(static)
    for (int p = 0; p < parts; p++) {
        int lo = (int)((long)N * p / parts), hi = (int)((long)N * (p + 1) / parts);
        if (hi <= lo) continue;
        real *o = out + (size_t)lo * OC;
        if (bias)  // preload the bias so that the GEMM adds onto it (beta = 1)
            for (int n = lo; n < hi; n++) memcpy(out + (size_t)n * OC, bias, (size_t)OC * sizeof(real));
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, hi - lo, OC, C, 1, inp + (size_t)lo * C, C,
             weight, C, bias ? 1 : 0, o, OC);
    }
    vm_cpu_blas_serial_end(blas_threads);
}

// dinp (N, C) = dout (N, OC) @ weight (OC, C); dweight (OC, C) += dout^T @ inp; dbias += colsum.
// Tasks 0..parts-1 take row blocks of dinp, tasks parts..2*parts-1 row blocks of dweight.
void FN(matmul_backward)(real *dinp, real *dweight, real *dbias, const real *dout,
                         const real *inp, const real *weight, int N, int C, int OC) {
    if (N <= 0 || OC <= 0) return;
    const int parts = omp_get_max_threads(), blas_threads = vm_cpu_blas_serial_begin();
#pragma omp parallel for schedule(static)
    for (int task = 0; task < 2 * parts; task++) {
        int p = task % parts;
        if (task < parts) {
            int lo = (int)((long)N * p / parts), hi = (int)((long)N * (p + 1) / parts);
            if (dinp && hi > lo)
                GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, hi - lo, C, OC, 1,
                     dout + (size_t)lo * OC, OC, weight, C, 0, dinp + (size_t)lo * C, C);
        } else {
            int lo = (int)((long)OC * p / parts), hi = (int)((long)OC * (p + 1) / parts);
            if (hi > lo)
                GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, hi - lo, C, N, 1, dout + lo, OC,
                     inp, C, 1, dweight + (size_t)lo * C, C);
        }
    }
    vm_cpu_blas_serial_end(blas_threads);
    if (dbias) FN(add_rows_backward)(dbias, dout, N, 1, OC);  // column sums of dout
}

#endif
