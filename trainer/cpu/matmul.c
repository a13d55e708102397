// trainer/cpu/matmul.c — linear layers on OpenBLAS: out = inp @ weight^T + bias, and both
// backward products, GEMMs with the right transposes (no copies, no transposed buffers).
//
// Threads: OpenBLAS (Debian's pthreads build) has its own thread pool, and its threads and
// OpenMP's would take turns spinning on the same cores between ops.  So each product is split
// into blocks of output rows, each block a single-threaded GEMM, and OpenMP's threads take blocks.
//
// Reproducibility: OpenBLAS's value for an output element is not just its dot product over K in
// a fixed order: it depends on the shape of the GEMM call that computes it.  Rows are computed in
// groups of the kernel's unroll, the groups left over at the end of a call by other code (another
// summation order), and some kernels take other code paths for small calls.  Measured with
// OpenBLAS 0.3.21, single-threaded sgemm, the first M rows of a 203-row product computed by a call
// of M rows against the 203-row call: the Haswell/Zen kernels agree only when M is a multiple of
// 12, Core2/Prescott when it is a multiple of 4, SkylakeX when the call is not small (NN, 100 x
// 100: M > 100).  So blocks may not follow the thread count: one block per thread (as this file
// once did) changed a quarter of the values between 1 and 3 threads under the Haswell kernels.
// Block boundaries depend only on the shape (vm_matmul_block_rows), so every GEMM call, and so
// every bit, is the same whatever the number of threads (tests/test_trainer_ops.c compares 1, 2,
// 3 and 5 threads; run it under OPENBLAS_CORETYPE=Haswell, Zen, SkylakeX, Core2, ...).  The same
// holds for the row blocks of dweight in the backward pass.
//
// Block size: each call packs the whole weight (forward, dinp) or the whole input (dweight)
// again, so small blocks cost time on one thread (blocks of 64 rows made a demo training step,
// configs/demo.ini on one thread, about 8% slower than one call per product; blocks of up to 384
// rows 0.5-3%, the noise of the shared machine it was measured on), while blocks larger than a
// thread's share leave threads idle.  Blocks of at most VM_MATMUL_ROWS rows, as equal as
// possible, are the compromise.
#ifndef VM_GENERIC_PASS
#define VM_GENERIC_FILE "trainer/cpu/matmul.c"
// A product of n rows is cut into ceil(n / VM_MATMUL_ROWS) blocks of r rows each, r rounded up
// to a multiple of 16 (the last block takes the rest): a function of n alone.
enum { VM_MATMUL_ROWS = 384 };
static inline int vm_matmul_block_rows(int n) {
    int blocks = (n + VM_MATMUL_ROWS - 1) / VM_MATMUL_ROWS, r = (n + blocks - 1) / blocks;
    return (r + 15) / 16 * 16;
}
#include "trainer/cpu/generic.h"
#else

// out (N, OC) = inp (N, C) @ weight (OC, C)^T + bias (OC)
void FN(matmul_forward)(real *out, const real *inp, const real *weight, const real *bias, int N,
                        int C, int OC) {
    if (N <= 0 || OC <= 0) return;
    const int R = vm_matmul_block_rows(N), blocks = (N + R - 1) / R;
    const int blas_threads = vm_cpu_blas_serial_begin();
#pragma omp parallel for schedule(dynamic, 1) if (blocks > 1)
    for (int blk = 0; blk < blocks; blk++) {
        int lo = blk * R, hi = N - lo < R ? N : lo + R;
        real *o = out + (size_t)lo * OC;
        if (bias)  // preload the bias so that the GEMM adds onto it (beta = 1)
            for (int n = lo; n < hi; n++) memcpy(out + (size_t)n * OC, bias, (size_t)OC * sizeof(real));
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, hi - lo, OC, C, 1, inp + (size_t)lo * C, C,
             weight, C, bias ? 1 : 0, o, OC);
    }
    vm_cpu_blas_serial_end(blas_threads);
}

// dinp (N, C) = dout (N, OC) @ weight (OC, C); dweight (OC, C) += dout^T @ inp; dbias += colsum.
// Tasks 0..nw-1 are the row blocks of dweight (first: each sums over all N rows, the larger
// tasks), tasks nw.. the row blocks of dinp (none when dinp is NULL).
void FN(matmul_backward)(real *dinp, real *dweight, real *dbias, const real *dout,
                         const real *inp, const real *weight, int N, int C, int OC) {
    if (N <= 0 || OC <= 0) return;
    const int RX = vm_matmul_block_rows(N), RW = vm_matmul_block_rows(OC);
    const int nw = (OC + RW - 1) / RW, nx = dinp ? (N + RX - 1) / RX : 0;
    const int blas_threads = vm_cpu_blas_serial_begin();
#pragma omp parallel for schedule(dynamic, 1) if (nw + nx > 1)
    for (int task = 0; task < nw + nx; task++) {
        if (task < nw) {
            int lo = task * RW, hi = OC - lo < RW ? OC : lo + RW;
            GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, hi - lo, C, N, 1, dout + lo, OC,
                 inp, C, 1, dweight + (size_t)lo * C, C);
        } else {
            int lo = (task - nw) * RX, hi = N - lo < RX ? N : lo + RX;
            GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, hi - lo, C, OC, 1,
                 dout + (size_t)lo * OC, OC, weight, C, 0, dinp + (size_t)lo * C, C);
        }
    }
    vm_cpu_blas_serial_end(blas_threads);
    if (dbias) FN(add_rows_backward)(dbias, dout, N, 1, OC);  // column sums of dout
}

#endif
