// trainer/cpu/cpu_ops.h — the CPU backend's ops, declared for float (vm_cpu_<op>_f for baseline
// x86-64, vm_cpu_<op>_f_avx2 compiled for AVX2 + FMA: the two backend tables) and double
// (vm_cpu_<op>_d, for the finite-difference tests).  The semantics of each op are those of the
// same-named entry of trainer/backend.h.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "trainer/backend.h"  // vm_adamw_range

#define real float
#define FN(name) vm_cpu_##name##_f
#include "trainer/cpu/ops_proto.h"
#undef real
#undef FN

#define real float
#define FN(name) vm_cpu_##name##_f_avx2
#include "trainer/cpu/ops_proto.h"
#undef real
#undef FN

#define real double
#define FN(name) vm_cpu_##name##_d
#include "trainer/cpu/ops_proto.h"
#undef real
#undef FN

// ---- the CUDA backend's bf16 numerics (trainer/cpu/bf16.c, vm_backend_cpu_bf16) ----------------
// x rounded to the nearest bfloat16 (ties to even), returned as the float it represents, as CUDA's
// __float2bfloat16_rn: finite values beyond the largest bf16 round to +-Inf, Inf stays Inf, NaN
// stays NaN (quietened), subnormals are rounded, not flushed.
static inline float vm_bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) u |= 0x00400000u;  // NaN: keep it (quiet), drop low bits
    else u += 0x7fffu + ((u >> 16) & 1u);                     // round half to even on bit 16
    u &= 0xffff0000u;
    memcpy(&x, &u, sizeof x);
    return x;
}

// x rounded as vm_bf16_round, as its bits (the storage of bf16 activations), and back.
static inline vm_bf16 vm_bf16_from_float(float x) {
    float r = vm_bf16_round(x);
    uint32_t u;
    memcpy(&u, &r, sizeof u);
    return (vm_bf16)(u >> 16);
}
static inline float vm_bf16_to_float(vm_bf16 h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

// The bf16-activation ops of trainer/backend.h, written once over the op f that computes the same
// on fp32 storage: bf16 inputs widened exactly, f, each bf16 output rounded once; a linear bias is
// rounded to bf16 before f (as autocast and the CUDA backend's cuBLASLt epilogue take it).
// cpu-bf16's table passes its bf16 products (trainer/cpu/bf16.c); tools/bf16_diag perturbed ones.
// Scratch is malloc'd per call (abort on failure): a test reference, not a production path.
#define VM_OP_T(op) typeof(((vm_backend_ops *)0)->op)
void vm_act16_layernorm_forward(VM_OP_T(layernorm_forward) f, vm_bf16 *out, float *mean, float *rstd,
                                const float *inp, const float *weight, const float *bias, int N, int C, float eps);
void vm_act16_matmul_forward(VM_OP_T(matmul_forward) f, vm_bf16 *out, const vm_bf16 *inp, const float *weight,
                             const float *bias, int N, int C, int OC);
void vm_act16_matmul_backward(VM_OP_T(matmul_backward) f, float *dinp, float *dweight, float *dbias,
                              const float *dout, const vm_bf16 *inp, const float *weight, int N, int C, int OC);
void vm_act16_attention_forward(VM_OP_T(attention_forward) f, vm_bf16 *out, float *att, const vm_bf16 *qkv, int B,
                                int T, int C, int NH);
void vm_act16_attention_backward(VM_OP_T(attention_backward) f, float *dqkv, float *scratch, const float *dout,
                                 const vm_bf16 *qkv, const float *att, int B, int T, int C, int NH);
void vm_act16_gelu_forward(VM_OP_T(gelu_forward) f, vm_bf16 *out, const vm_bf16 *inp, size_t N);
void vm_act16_gelu_backward(VM_OP_T(gelu_backward) f, float *dinp, const vm_bf16 *inp, const float *dout, size_t N);

// OpenBLAS (the pthreads build Debian ships) runs its own thread pool; the ops issue their GEMMs
// from inside OpenMP parallel regions, single-threaded, so that only OpenMP's pool runs.  begin()
// switches OpenBLAS to one thread (process-wide) and returns the previous count, end() restores
// it, so other users of OpenBLAS (eval/) keep their threads.
int vm_cpu_blas_serial_begin(void);
void vm_cpu_blas_serial_end(int prev_threads);

// The CPU backend table of one instruction set: "baseline" (x86-64) or "avx2" (AVX2 + FMA);
// NULL if this CPU cannot run it or the name is unknown.  vm_backend_cpu() picks the best, unless
// the environment variable VICMAE_CPU_ISA names one.
typedef struct vm_backend vm_backend_ops;
const vm_backend_ops *vm_cpu_backend_isa(const char *isa);
