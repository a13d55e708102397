// trainer/cpu/generic.h — compile one CPU op file twice: for float and for double.
//
// The ops are written once over a type `real`.  The float instantiation (suffix _f) is what the
// backend table holds; the double one (suffix _d) exists so that tests/test_trainer_ops.c can
// check every backward against central finite differences in double precision, and then check
// that the float ops agree with the double ones.  An op file starts with
//
//   #ifndef VM_GENERIC_PASS
//   #define VM_GENERIC_FILE "trainer/cpu/<file>.c"
//   #include "trainer/cpu/generic.h"
//   #else
//   ... ops written with real, FN(name), GEMM ...
//   #endif
//
// Inside: `real` is the element type, FN(op) names the op for this type, GEMM is cblas_sgemm or
// cblas_dgemm, and acc_t (double) is the accumulator of sums (so that float and double agree
// closely and results do not depend on the thread count).  <tgmath.h> makes sqrt/exp/erf/log
// follow the argument type; write constants as (real)x to keep float arithmetic in float.
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>
#include "trainer/cpu/cpu_ops.h"

#define VM_GENERIC_PASS 1
typedef double acc_t;

#define real float
#define FN(name) vm_cpu_##name##_f
#define GEMM cblas_sgemm
#include VM_GENERIC_FILE
#undef real
#undef FN
#undef GEMM

#define real double
#define FN(name) vm_cpu_##name##_d
#define GEMM cblas_dgemm
#include VM_GENERIC_FILE
#undef real
#undef FN
#undef GEMM
