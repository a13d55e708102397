// trainer/cpu/backend_cpu.c — the CPU reference backend: the float ops of trainer/cpu/ in the op
// table of trainer/backend.h, host memory, OpenBLAS and OpenMP thread counts, and the choice
// between the baseline x86-64 build of the ops and the AVX2 + FMA one.
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include "trainer/backend.h"
#include "trainer/cpu/cpu_ops.h"

static void *cpu_alloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 1) != 0) return NULL;  // cache-line aligned
    memset(p, 0, bytes);
    return p;
}
static void cpu_free(void *ptr) { free(ptr); }
static void cpu_copy(void *dst, const void *src, size_t bytes) { memmove(dst, src, bytes); }
static void cpu_copy_rows(void *dst, size_t dst_pitch, const void *src, size_t src_pitch, size_t bytes, size_t rows) {
    for (size_t r = 0; r < rows; r++) memmove((char *)dst + r * dst_pitch, (const char *)src + r * src_pitch, bytes);
}
static void cpu_zero(void *ptr, size_t bytes) { memset(ptr, 0, bytes); }
static void cpu_sync(void) {}

int vm_cpu_blas_serial_begin(void) {
    int prev = openblas_get_num_threads();
    if (prev != 1) openblas_set_num_threads(1);
    return prev;
}
void vm_cpu_blas_serial_end(int prev_threads) {
    if (prev_threads != 1) openblas_set_num_threads(prev_threads);
}

// Every op of the table, X(name): one list for all tables.  The products (matmul, attention) are
// listed apart because the bf16 tables take them from trainer/cpu/bf16.c.
#define VM_CPU_PRODUCT_OPS(X) X(matmul_forward) X(matmul_backward) X(attention_forward) X(attention_backward)
#define VM_CPU_OTHER_OPS(X)                                                                     \
    X(patchify) X(layernorm_forward) X(layernorm_backward)                                      \
    X(batchnorm_forward) X(batchnorm_backward)                                                  \
    X(gelu_forward) X(gelu_backward) X(relu_forward) X(relu_backward) X(add) X(accumulate)       \
    X(scale) X(add_rows) X(add_rows_backward) X(gather_tokens) X(gather_tokens_backward)         \
    X(unshuffle_tokens) X(unshuffle_tokens_backward) X(drop_first_token)                         \
    X(drop_first_token_backward) X(pool_forward) X(pool_backward) X(mae_loss) X(infonce_loss)     \
    X(simsiam_loss) X(vicreg_loss) X(sumsq) X(adamw) X(adamw_ranges)

// The bf16-activation group (trainer/backend.h): in the cpu-bf16 tables only.
#define VM_CPU_BF16_ACT_OPS(X)                                                                  \
    X(layernorm_forward_bf16) X(matmul_forward_bf16) X(matmul_backward_bf16)                    \
    X(attention_forward_bf16) X(attention_backward_bf16) X(gelu_forward_bf16)                   \
    X(gelu_backward_bf16) X(add_bf16)

#define MEMORY_OPS                                                                              \
    .alloc = cpu_alloc, .free = cpu_free, .to_device = cpu_copy, .to_host = cpu_copy,            \
    .copy = cpu_copy, .copy_rows = cpu_copy_rows, .zero = cpu_zero, .sync = cpu_sync

#define BASELINE_OP(name) .name = vm_cpu_##name##_f,
#define AVX2_OP(name) .name = vm_cpu_##name##_f_avx2,
#define BASELINE_BF16_OP(name) .name = vm_cpu_bf16_##name##_f,
#define AVX2_BF16_OP(name) .name = vm_cpu_bf16_##name##_f_avx2,
static const vm_backend_ops cpu_baseline = {
    .name = "cpu", MEMORY_OPS, VM_CPU_PRODUCT_OPS(BASELINE_OP) VM_CPU_OTHER_OPS(BASELINE_OP)};
static const vm_backend_ops cpu_avx2 = {
    .name = "cpu", MEMORY_OPS, VM_CPU_PRODUCT_OPS(AVX2_OP) VM_CPU_OTHER_OPS(AVX2_OP)};
static const vm_backend_ops cpu_bf16_baseline = {
    .name = "cpu-bf16", MEMORY_OPS, VM_CPU_PRODUCT_OPS(BASELINE_BF16_OP) VM_CPU_OTHER_OPS(BASELINE_OP)
        VM_CPU_BF16_ACT_OPS(BASELINE_OP)};
static const vm_backend_ops cpu_bf16_avx2 = {
    .name = "cpu-bf16", MEMORY_OPS, VM_CPU_PRODUCT_OPS(AVX2_BF16_OP) VM_CPU_OTHER_OPS(AVX2_OP)
        VM_CPU_BF16_ACT_OPS(AVX2_OP)};

const vm_backend_ops *vm_cpu_backend_isa(const char *isa) {
    if (strcmp(isa, "baseline") == 0) return &cpu_baseline;
    if (strcmp(isa, "avx2") == 0) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? &cpu_avx2 : NULL;
    }
    return NULL;
}

// The thread count is process-wide state of OpenMP and OpenBLAS; set it for both so that GEMMs
// and our loops use the same cores.
const vm_backend_ops *vm_backend_cpu(int threads) {
    if (threads > 0) {
        omp_set_num_threads(threads);
        openblas_set_num_threads(threads);
    }
    const char *want = getenv("VICMAE_CPU_ISA");
    const vm_backend_ops *be = want && *want ? vm_cpu_backend_isa(want) : NULL;
    if (!be) be = vm_cpu_backend_isa("avx2");
    return be ? be : &cpu_baseline;
}

// The same instruction set as vm_backend_cpu's choice, with the bf16 products of trainer/cpu/bf16.c.
const vm_backend_ops *vm_backend_cpu_bf16(int threads) {
    return vm_backend_cpu(threads) == &cpu_avx2 ? &cpu_bf16_avx2 : &cpu_bf16_baseline;
}
