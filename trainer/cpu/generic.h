// trainer/cpu/generic.h — compile one CPU op file for float, float on AVX2, and double.
//
// The ops are written once over a type `real`.  The float instantiations are what the backend
// tables hold: suffix _f for baseline x86-64, _f_avx2 compiled for AVX2 + FMA (vm_backend_cpu
// picks it when the CPU has them).  The double one (suffix _d) exists so that
// tests/test_trainer_ops.c can check every backward against central finite differences in double
// precision, and then check that the float ops agree with the double ones.  An op file is
//
//   #ifndef VM_GENERIC_PASS
//   #define VM_GENERIC_FILE "trainer/cpu/<file>.c"
//   #include "trainer/cpu/generic.h"
//   #else
//   ... ops written with real, FN(name), GEMM ...
//   #endif
//
// Inside: `real` is the element type (REAL_IS_FLOAT says which), FN(op) names the op for this
// instantiation, GEMM is cblas_sgemm or cblas_dgemm, and acc_t (double) accumulates long sums (so
// that float and double agree closely).  VEXP and VERF are exp and erf: trainer/cpu/fastmath.h's
// vectorisable ones in float, libm's in double.  <tgmath.h> makes sqrt/exp/log follow the
// argument type; write constants as (real)x to keep float arithmetic in float.
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>
#include "trainer/cpu/cpu_ops.h"
#include "trainer/cpu/fastmath.h"

#define VM_GENERIC_PASS 1
typedef double acc_t;

// Sums over rows (bias and LayerNorm weight gradients, batch reductions) go by column chunks, each
// column summed over the rows in order, so any chunking gives the same bits.  A chunk is about
// one thread's share of the columns (contiguous row segments stream well), at most
// VM_COL_CHUNK_MAX columns (its accumulators live on the stack).
enum { VM_COL_CHUNK_MAX = 512 };
static inline size_t vm_cpu_col_chunk(size_t M) {
    size_t t = (size_t)omp_get_max_threads(), w = (M + t - 1) / t;
    w = (w + 15) / 16 * 16;
    return w < 16 ? 16 : w > VM_COL_CHUNK_MAX ? VM_COL_CHUNK_MAX : w;
}

#define real float
#define REAL_IS_FLOAT 1
#define VEXP vm_fast_expf
#define VERF vm_fast_erff
#define FN(name) vm_cpu_##name##_f
#define GEMM cblas_sgemm
#include VM_GENERIC_FILE
#undef real
#undef REAL_IS_FLOAT
#undef VEXP
#undef VERF
#undef FN
#undef GEMM

// float again, for CPUs with AVX2 and FMA (chosen at run time by vm_backend_cpu): 8-wide vectors
// and fused multiply-adds make the exp/erf/normalisation loops 2-3x faster than baseline x86-64.
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define real float
#define REAL_IS_FLOAT 1
#define VEXP vm_fast_expf
#define VERF vm_fast_erff
#define FN(name) vm_cpu_##name##_f_avx2
#define GEMM cblas_sgemm
#include VM_GENERIC_FILE
#undef real
#undef REAL_IS_FLOAT
#undef VEXP
#undef VERF
#undef FN
#undef GEMM
#pragma GCC pop_options

#define real double
#define REAL_IS_FLOAT 0
#define VEXP exp
#define VERF erf
#define FN(name) vm_cpu_##name##_d
#define GEMM cblas_dgemm
#include VM_GENERIC_FILE
#undef real
#undef REAL_IS_FLOAT
#undef VEXP
#undef VERF
#undef FN
#undef GEMM
