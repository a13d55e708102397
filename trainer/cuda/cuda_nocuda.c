// trainer/cuda/cuda_nocuda.c — the CUDA backend's entry points when nvcc was not available
// (make CUDA=0, or no CUDA toolkit): they link, and say why there is no backend.
#ifndef VM_HAVE_CUDA
#include <stdio.h>
#include "trainer/backend.h"
#include "trainer/cuda/cuda_backend.h"
#include "trainer/cuda/cuda_ring.h"

const vm_backend_ops *vm_backend_cuda(char *why, size_t why_cap) {
    if (why && why_cap) snprintf(why, why_cap, "built without CUDA");
    return NULL;
}

void vm_backend_cuda_set_precision(int bf16) { (void)bf16; }
int vm_backend_cuda_precision(void) { return 0; }
void vm_backend_cuda_set_bf16_path(int fast) { (void)fast; }
void vm_backend_cuda_set_lt(int on) { (void)on; }
int vm_backend_cuda_lt(void) { return 0; }
void vm_backend_cuda_lt_counts(long *runs, long *fallbacks) {
    if (runs) *runs = 0;
    if (fallbacks) *fallbacks = 0;
}
int vm_backend_cuda_bf16_path(void) { return 0; }
void vm_backend_cuda_set_fused_attention(int mode) { (void)mode; }
int vm_backend_cuda_fused_attention(void) { return 0; }
int vm_backend_cuda_fused_attention_takes(int T, int C, int NH, int backward) {
    (void)T, (void)C, (void)NH, (void)backward;
    return 0;
}
int vm_backend_cuda_flash_attention_takes(int T, int C, int NH) {
    (void)T, (void)C, (void)NH;
    return 0;
}
int vm_backend_cuda_device_name(char *buf, size_t cap) {
    if (buf && cap) snprintf(buf, cap, "none (built without CUDA)");
    return -1;
}
void vm_backend_cuda_describe(char *buf, size_t cap) {
    if (buf && cap) snprintf(buf, cap, "none (built without CUDA)");
}
size_t vm_backend_cuda_workspace_bytes(void) { return 0; }
double vm_backend_cuda_gemm_tflops(int bf16, int n, int iters) { (void)bf16, (void)n, (void)iters; return -1; }

int vm_cuda_ring_create(vm_cuda_ring **out, int slots, size_t slot_bytes, char *why, size_t why_cap) {
    (void)slots, (void)slot_bytes;
    *out = NULL;
    if (why && why_cap) snprintf(why, why_cap, "built without CUDA");
    return -1;
}
// Without CUDA no ring can exist, so these are never reached with a ring.
void vm_cuda_ring_free(vm_cuda_ring *r) { (void)r; }
void *vm_cuda_ring_acquire(vm_cuda_ring *r, int *slot) { (void)r, (void)slot; return NULL; }
void vm_cuda_ring_submit(vm_cuda_ring *r, int slot, size_t bytes) { (void)r, (void)slot, (void)bytes; }
void vm_cuda_ring_close(vm_cuda_ring *r) { (void)r; }
const void *vm_cuda_ring_next(vm_cuda_ring *r, int *slot, size_t *bytes) { (void)r, (void)slot, (void)bytes; return NULL; }
double vm_cuda_ring_release(vm_cuda_ring *r, int slot) { (void)r, (void)slot; return 0; }
void vm_cuda_ring_get_stats(vm_cuda_ring *r, vm_cuda_ring_stats *st) { (void)r; if (st) *st = (vm_cuda_ring_stats){0}; }
#else
// Built with CUDA: the real definitions are in trainer/cuda/*.cu.
typedef int vm_cuda_nocuda_unused;
#endif
