// trainer/cpu/backend_cpu.c — the CPU reference backend: the float ops of trainer/cpu/ in the op
// table of trainer/backend.h, host memory, OpenBLAS and OpenMP thread counts.
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
static void cpu_zero(void *ptr, size_t bytes) { memset(ptr, 0, bytes); }
static void cpu_sync(void) {}

static const vm_backend_ops cpu_backend = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .to_device = cpu_copy,
    .to_host = cpu_copy,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .sync = cpu_sync,
    .patchify = vm_cpu_patchify_f,
    .matmul_forward = vm_cpu_matmul_forward_f,
    .matmul_backward = vm_cpu_matmul_backward_f,
    .layernorm_forward = vm_cpu_layernorm_forward_f,
    .layernorm_backward = vm_cpu_layernorm_backward_f,
    .batchnorm_forward = vm_cpu_batchnorm_forward_f,
    .batchnorm_backward = vm_cpu_batchnorm_backward_f,
    .attention_forward = vm_cpu_attention_forward_f,
    .attention_backward = vm_cpu_attention_backward_f,
    .gelu_forward = vm_cpu_gelu_forward_f,
    .gelu_backward = vm_cpu_gelu_backward_f,
    .relu_forward = vm_cpu_relu_forward_f,
    .relu_backward = vm_cpu_relu_backward_f,
    .add = vm_cpu_add_f,
    .accumulate = vm_cpu_accumulate_f,
    .scale = vm_cpu_scale_f,
    .add_rows = vm_cpu_add_rows_f,
    .add_rows_backward = vm_cpu_add_rows_backward_f,
    .gather_tokens = vm_cpu_gather_tokens_f,
    .gather_tokens_backward = vm_cpu_gather_tokens_backward_f,
    .unshuffle_tokens = vm_cpu_unshuffle_tokens_f,
    .unshuffle_tokens_backward = vm_cpu_unshuffle_tokens_backward_f,
    .drop_first_token = vm_cpu_drop_first_token_f,
    .drop_first_token_backward = vm_cpu_drop_first_token_backward_f,
    .pool_forward = vm_cpu_pool_forward_f,
    .pool_backward = vm_cpu_pool_backward_f,
    .mae_loss = vm_cpu_mae_loss_f,
    .infonce_loss = vm_cpu_infonce_loss_f,
    .simsiam_loss = vm_cpu_simsiam_loss_f,
    .vicreg_loss = vm_cpu_vicreg_loss_f,
    .sumsq = vm_cpu_sumsq_f,
    .adamw = vm_cpu_adamw_f,
};

// The thread count is process-wide state of OpenMP and OpenBLAS; set it for both so that GEMMs
// and our loops use the same cores.
const vm_backend_ops *vm_backend_cpu(int threads) {
    if (threads > 0) {
        omp_set_num_threads(threads);
        openblas_set_num_threads(threads);
    }
    return &cpu_backend;
}
