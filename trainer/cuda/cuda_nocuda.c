// trainer/cuda/cuda_nocuda.c — the CUDA backend's entry points when nvcc was not available
// (make CUDA=0, or no CUDA toolkit): they link, and say why there is no backend.
#ifndef VM_HAVE_CUDA
#include <stdio.h>
#include "trainer/backend.h"
#include "trainer/cuda/cuda_backend.h"

const vm_backend_ops *vm_backend_cuda(char *why, size_t why_cap) {
    if (why && why_cap) snprintf(why, why_cap, "built without CUDA");
    return NULL;
}

void vm_backend_cuda_set_precision(int bf16) { (void)bf16; }
int vm_backend_cuda_precision(void) { return 0; }
void vm_backend_cuda_set_bf16_path(int fast) { (void)fast; }
int vm_backend_cuda_bf16_path(void) { return 0; }
int vm_backend_cuda_device_name(char *buf, size_t cap) {
    if (buf && cap) snprintf(buf, cap, "none (built without CUDA)");
    return -1;
}
size_t vm_backend_cuda_workspace_bytes(void) { return 0; }
double vm_backend_cuda_gemm_tflops(int bf16, int n, int iters) { (void)bf16, (void)n, (void)iters; return -1; }
#else
// Built with CUDA: the real definitions are in trainer/cuda/*.cu.
typedef int vm_cuda_nocuda_unused;
#endif
