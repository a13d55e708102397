// trainer/cuda/cuda_backend.h — what the CUDA backend offers beyond the op table of
// trainer/backend.h (vm_backend_cuda() itself is declared there).
//
// Precision.  fp32 (default): every op in float32, cuBLAS SGEMM without TF32, so results match the
// CPU reference to ~1e-6.  bf16: the operands of every matrix product (linear layers and the two
// attention products) are rounded to bfloat16 on the GPU right before the product, which
// accumulates in fp32 (cublasGemmEx, CUBLAS_COMPUTE_32F) into float32 outputs; weights, optimiser
// state, norms, softmax statistics and losses stay fp32.  The tensors the model holds are float32
// in both modes, so checkpoints and debug-step files are the same.
#pragma once
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// Select the precision of the matrix products (0 = fp32, 1 = bf16).  Takes effect for ops issued
// afterwards; may be called before or after vm_backend_cuda().
void vm_backend_cuda_set_precision(int bf16);
int vm_backend_cuda_precision(void);

// How bf16 products are made:
// 0 "convert" (default): a kernel writes bf16 copies of the operands, then a bf16 cuBLAS GEMM
//   with fp32 accumulation; every product is rounded exactly where the CPU's cpu-bf16 reference
//   (vm_backend_cpu_bf16) rounds, so the two agree up to accumulation order;
// 1 "fast": fp32 operands handed to cuBLAS with CUBLAS_COMPUTE_32F_FAST_16BF, which MAY round
//   them to bf16 (no copies; cuBLAS decides per product and kernel).  Its results lie between fp32
//   and all-bf16: on an H100 its tiny-model gradients were 0.005 from fp32 where convert's are 0.2.  The environment variable
// VICMAE_CUDA_BF16=convert|fast sets it when the backend starts; the benchmark measures both.
// "fast" is ignored (the path stays 0) when the device's cuBLAS refused it in a probe at start, or
// before vm_backend_cuda() has set the backend up: call it after.
void vm_backend_cuda_set_bf16_path(int fast);
int vm_backend_cuda_bf16_path(void);

// Linear layers with a bias through cuBLASLt, the bias added in the GEMM's epilogue (1, default:
// ViT-B/16 steps 9% faster on an H100, bench/gpu.sh), or cublasGemmEx + a bias kernel (0).
// VICMAE_CUDA_LT=0|1 sets it when the backend starts.  Shapes no cuBLASLt algorithm takes fall back.
// Like set_bf16_path, effective only after vm_backend_cuda() (vm_backend_cuda_lt() says).
void vm_backend_cuda_set_lt(int on);
int vm_backend_cuda_lt(void);
// How many biased linear forwards (fp32 and bf16 out) ran through cuBLASLt, and how many found no
// cuBLASLt algorithm and fell back, since the process started: the tests and the benchmark check
// that the epilogue path really ran.
void vm_backend_cuda_lt_counts(long *runs, long *fallbacks);

// Attention in bf16 "convert" mode and in the bf16-activation ops: batched cuBLAS GEMMs around a
// softmax kernel; fused kernels (trainer/cuda/cuda_attention.cu: one block per sample and head,
// scores in shared memory, WMMA products); or flash kernels (trainer/cuda/cuda_attention_flash.cu:
// FA2-style, scores and softmax in registers, mma.sync through inline PTX).  All three have the same
// rounding points.  Modes:
//   VM_ATTENTION_AUTO (default): flash wherever vm_backend_cuda_flash_attention_takes (2.1x faster
//     forward, 1.5-2.1x faster backward than fused on the ViT-B shapes, H100: docs/GPU.md); else
//     the fused forward, the fused backward where it measured faster than cuBLAS (T >= 128);
//   VM_ATTENTION_FLASH: as AUTO, but the fused backward wherever it takes the shape;
//   VM_ATTENTION_FUSED: fused wherever taken;  VM_ATTENTION_CUBLAS: cuBLAS only.
// Shapes no kernel takes (head size other than 16/32/64/128, T > 256, too little shared memory) use
// cuBLAS in every mode.  The fused and cuBLAS forwards save the fp32 probabilities in att, so their
// forward and backward mix freely; the flash forward saves no probabilities: att holds the per-row
// softmax statistics (row max, 1 / row sum) in its first B*NH*T*2 floats, the rest is left as it
// was, and only the flash backward can read it (the model treats att as opaque; one predicate
// decides both directions).
// VICMAE_CUDA_ATTENTION=cublas|auto|fused|flash sets the mode when the backend starts.
enum { VM_ATTENTION_CUBLAS = 0, VM_ATTENTION_AUTO = 1, VM_ATTENTION_FUSED = 2, VM_ATTENTION_FLASH = 3 };
void vm_backend_cuda_set_fused_attention(int mode);
int vm_backend_cuda_fused_attention(void);
// Would the fused kernels take this shape (backward = 0: forward, 1: backward)?  0 before
// vm_backend_cuda() has set the backend up.
int vm_backend_cuda_fused_attention_takes(int T, int C, int NH, int backward);
// Would the flash kernels take this shape (both directions: head size 16, 32 or 64, 2 <= T <= 256,
// within the device's shared memory)?  0 before vm_backend_cuda() has set the backend up.
int vm_backend_cuda_flash_attention_takes(int T, int C, int NH);

// Name of the device in use ("NVIDIA H100 80GB HBM3, sm_90, 79 GiB") into buf; 0 on success,
// -1 when the backend is not initialised (or built without CUDA).
int vm_backend_cuda_device_name(char *buf, size_t cap);
// The paths the current settings take, in words, into buf ("bf16 products (bf16 operand copies),
// attention auto (flash where the shape allows; ...), linear biases in the cuBLASLt epilogue"), for
// logs and benchmarks.  The bf16-activation ops always make bf16 products.
void vm_backend_cuda_describe(char *buf, size_t cap);

// Bytes of the backend's private device workspace (bf16 operand copies, attention pointer
// tables, loss scratch).  It grows on demand the first time a larger shape is seen and never
// shrinks, so after the first training step the ops no longer allocate.
size_t vm_backend_cuda_workspace_bytes(void);

// Measured throughput of one square cuBLAS product (n x n x n) in TFLOP/s: bf16 operands with fp32
// accumulation (bf16 = 1, the rate MFU is quoted against) or fp32.  Allocates and frees its own
// buffers; returns a negative value when the backend is not initialised or the run failed.
double vm_backend_cuda_gemm_tflops(int bf16, int n, int iters);

#ifdef __cplusplus
}
#endif
