// trainer/cuda/cuda_internal.cuh — shared by the backend's .cu files: the backend state, error
// checks, the private workspace and small device helpers.  Not a public header.
//
// Why a process-wide state: the op table of trainer/backend.h has no context argument, so the
// stream, the cuBLAS handles and the workspace live in one struct (g_cu) set up once by
// vm_backend_cuda().  Ops are issued from one host thread (the trainer's), in order, on g_cu.stream.
//
// Errors: the op contract says ops never fail (shapes are validated by the model), so a CUDA or
// cuBLAS error inside an op is a bug or a dead device; it is reported as one line naming the op,
// the call and the reason, and the process aborts (there is no caller to return it to).
#pragma once
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cublas_v2.h>
#include <stddef.h>
#include <stdint.h>
extern "C" {  // backend.h is a C header without C++ guards
#include "trainer/backend.h"
}

struct vm_cuda_state {
    int ready;
    int device;
    int bf16;                  // precision of the matrix products (vm_backend_cuda_set_precision)
    int bf16_fast;             // bf16 path: 0 = our bf16 copies + bf16 GEMM, 1 = cuBLAS FAST_16BF on fp32
    int fast_ok;               // this cuBLAS accepts CUBLAS_COMPUTE_32F_FAST_16BF (probed at start)
    int fused_attention;       // bf16 convert path: VM_ATTENTION_* (cuda_backend.h), default auto
    int num_sms;
    cudaStream_t stream;       // every op runs here, in issue order
    cublasHandle_t blas;
    void *blas_ws;             // cuBLAS workspace (set once so that cuBLAS never allocates)
    void *ws;                  // private workspace, grow-only (see cuda_ws)
    size_t ws_bytes;
    float *host_scalar;        // pinned: scalars read back by the losses and sumsq
    char device_name[256];
};
extern struct vm_cuda_state g_cu;

// Abort with "cuda backend: <op>: <what>: <reason>" (see the note on errors above).
__attribute__((noreturn)) void cuda_fatal(const char *op, const char *what, const char *reason);
const char *cublas_status_name(cublasStatus_t s);

#define CUDA_CHECK(op, call)                                                                 \
    do { cudaError_t e_ = (call); if (e_ != cudaSuccess) cuda_fatal(op, #call, cudaGetErrorString(e_)); } while (0)
#define CUBLAS_CHECK(op, call)                                                               \
    do { cublasStatus_t s_ = (call); if (s_ != CUBLAS_STATUS_SUCCESS) cuda_fatal(op, #call, cublas_status_name(s_)); } while (0)
// After each kernel launch: launch errors (bad configuration, no kernel image) surface here;
// asynchronous faults surface at the next synchronising call.
#define LAUNCH_CHECK(op) CUDA_CHECK(op, cudaGetLastError())

// Carve `bytes` (rounded to 256) out of the private workspace at offset *off, growing the
// workspace first if needed.  All carvings of one op must be requested before the op launches
// anything that uses them (growing frees the old buffer after a device sync).
void *cuda_ws(size_t *off, size_t bytes, const char *op);
// Ensure the workspace holds `bytes`; returns its base.
void *cuda_ws_reserve(size_t bytes, const char *op);

static inline unsigned int ceil_div(size_t a, size_t b) { return (unsigned int)((a + b - 1) / b); }
static inline unsigned int grid_for(size_t n, int block) {
    size_t g = (n + block - 1) / block;
    if (g > 65535u * 32u) g = 65535u * 32u;  // grid-stride loops cover the rest
    return (unsigned int)(g ? g : 1);
}

// ---- device helpers -------------------------------------------------------------------------
#define GRID_STRIDE(i, n) \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
// Sum over a block of up to 1024 threads (all threads must call; result valid in every thread).
__device__ __forceinline__ double block_sum_d(double v) {
    __shared__ double part[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = (blockDim.x + 31) / 32;
    v = warp_sum_d(v);
    __syncthreads();  // part[] may still be read by a previous call
    if (lane == 0) part[warp] = v;
    __syncthreads();
    v = lane < nw ? part[lane] : 0.0;
    return warp_sum_d(v);
}

// Element access for kernels templated on the storage type of an activation (float, or bf16 for
// the bf16-activation ops of trainer/backend.h): values are computed in fp32, a bf16 store rounds
// once to nearest even, a bf16 load is exact.
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ void store_as(float *p, float v) { *p = v; }
__device__ __forceinline__ void store_as(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }
// Eight consecutive elements at p (16-byte aligned) through 16-byte vector loads and stores; the
// same values and rounding as to_float / store_as one by one.  Plain loads, not __ldg: the
// pointwise ops may run in place.
__device__ __forceinline__ void load8(float (&v)[8], const float *p) {
    float4 a = reinterpret_cast<const float4 *>(p)[0], b = reinterpret_cast<const float4 *>(p)[1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ void load8(float (&v)[8], const __nv_bfloat16 *p) {
    uint4 u = *reinterpret_cast<const uint4 *>(p);
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
    for (int k = 0; k < 4; k++) {
        float2 f = __bfloat1622float2(h[k]);
        v[2 * k] = f.x, v[2 * k + 1] = f.y;
    }
}
__device__ __forceinline__ void store8(float *p, const float (&v)[8]) {
    reinterpret_cast<float4 *>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4 *>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
__device__ __forceinline__ void store8(__nv_bfloat16 *p, const float (&v)[8]) {
    uint4 u;
    __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&u);
    for (int k = 0; k < 4; k++) h[k] = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
    *reinterpret_cast<uint4 *>(p) = u;
}
// cnt (1..8) elements at p: vectors when vec (every pointer of the kernel 16-byte aligned) and the
// chunk is whole, else one by one.
template <typename T>
__device__ __forceinline__ void load_upto8(float (&v)[8], const T *p, int cnt, bool vec) {
    if (vec && cnt == 8) load8(v, p);
    else for (int k = 0; k < 8; k++) v[k] = k < cnt ? to_float(p[k]) : 0.0f;
}
template <typename T>
__device__ __forceinline__ void store_upto8(T *p, const float (&v)[8], int cnt, bool vec) {
    if (vec && cnt == 8) store8(p, v);
    else for (int k = 0; k < cnt; k++) store_as(p + k, v[k]);
}
// 1 when every pointer given is 16-byte aligned (host side: picks the vector path above).
static inline bool aligned16(const void *a, const void *b, const void *c = nullptr) {
    return (((uintptr_t)a | (uintptr_t)b | (uintptr_t)c) & 15) == 0;
}

// ---- shared between files ----------------------------------------------------------------------
// Float -> bf16 copy (n elements) on the stream.
void cuda_to_bf16(__nv_bfloat16 *dst, const float *src, size_t n, const char *op);
// Deterministic sum of n doubles-in-float (two passes, fixed order) into dev_out[0] (device).
void cuda_reduce_sum(float *dev_out, const float *x, size_t n, int squares, float scale, const char *op);
// The device's opt-in limit of dynamic shared memory per block (bytes; 48 KB if it cannot be read).
int cuda_smem_optin(void);
// More than 48 KB of dynamic shared memory needs an opt-in per kernel: raised once per kernel to the
// largest size launched so far.
void cuda_allow_smem(const void *kernel, size_t smem, const char *op);
// Copy one device float to the host (synchronises the stream).
float cuda_read_scalar(const float *dev, const char *op);
// C (m x n, col-major, ldc) = alpha * op(A) op(B) + beta * C in fp32 with fp32 operands (always fp32:
// the losses use it).
void cuda_sgemm(const char *op, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                float alpha, const float *A, int lda, const float *B, int ldb, float beta, float *C,
                int ldc);

// Auto mode runs the fused backward only from this sequence length on (measured faster there: the
// decoder; see cuda_attention.cu).
#define FUSED_BACKWARD_MIN_T 128
// Fused bf16 attention (cuda_attention.cu): 1 when it ran the op, 0 when fused attention is off or
// the shape is not one it takes (the caller then uses the cuBLAS path).  qkv and out fp32 (rounded
// to bf16 inside), or bf16 (the bf16-activation ops: qkv read as is, out rounded once).
int cuda_attention_fused_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH,
                                 const char *op);
int cuda_attention_fused_forward(__nv_bfloat16 *out, float *att, const __nv_bfloat16 *qkv, int B, int T, int C,
                                 int NH, const char *op);
int cuda_attention_fused_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int B,
                                  int T, int C, int NH, const char *op);
int cuda_attention_fused_backward(float *dqkv, const float *dout, const __nv_bfloat16 *qkv, const float *att,
                                  int B, int T, int C, int NH, const char *op);
// Flash attention (cuda_attention_flash.cu; modes VM_ATTENTION_AUTO and VM_ATTENTION_FLASH): 1 when
// it ran the op, 0 when the mode is another or vm_backend_cuda_flash_attention_takes(T, C, NH) is 0
// (the caller then tries the fused kernels, then cuBLAS).  One predicate for both directions: the
// forward saves only row statistics in att (B, NH, T, 2 of its floats), which only the flash
// backward reads.  Same element types as the fused entries.
int cuda_attention_flash_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH,
                                 const char *op);
int cuda_attention_flash_forward(__nv_bfloat16 *out, float *att, const __nv_bfloat16 *qkv, int B, int T, int C,
                                 int NH, const char *op);
int cuda_attention_flash_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int B,
                                  int T, int C, int NH, const char *op);
int cuda_attention_flash_backward(float *dqkv, const float *dout, const __nv_bfloat16 *qkv, const float *att,
                                  int B, int T, int C, int NH, const char *op);
// Op entry points defined in the other files, collected into the table by cuda_backend.cu.
#define VM_CU_OPS(X)                                                                               \
    X(patchify) X(matmul_forward) X(matmul_backward) X(layernorm_forward) X(layernorm_backward)    \
    X(batchnorm_forward) X(batchnorm_backward) X(attention_forward) X(attention_backward)          \
    X(gelu_forward) X(gelu_backward) X(relu_forward) X(relu_backward) X(add) X(accumulate) X(scale) \
    X(add_rows) X(add_rows_backward) X(gather_tokens) X(gather_tokens_backward) X(unshuffle_tokens) \
    X(unshuffle_tokens_backward) X(drop_first_token) X(drop_first_token_backward) X(pool_forward)  \
    X(pool_backward) X(mae_loss) X(infonce_loss) X(simsiam_loss) X(vicreg_loss) X(sumsq) X(adamw) X(adamw_ranges) \
    X(layernorm_forward_bf16) X(matmul_forward_bf16) X(matmul_backward_bf16) X(attention_forward_bf16)      \
    X(attention_backward_bf16) X(gelu_forward_bf16) X(gelu_backward_bf16) X(add_bf16)

void cu_patchify(float *out, const uint8_t *img, int B, int H, int W, int P, int conv_order,
                 const float mean[3], const float std[3]);
void cu_matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N,
                       int C, int OC);
void cu_matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int N, int C, int OC);
void cu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, int N, int C, float eps);
void cu_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const float *mean,
                           const float *rstd, int N, int C);
void cu_batchnorm_forward(float *out, float *mean, float *rstd, float *running_mean,
                          float *running_var, const float *inp, const float *weight,
                          const float *bias, int N, int C, float eps, float momentum);
void cu_batchnorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const float *mean,
                           const float *rstd, int N, int C);
void cu_attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH);
void cu_attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv,
                           const float *att, int B, int T, int C, int NH);
void cu_gelu_forward(float *out, const float *inp, size_t N);
void cu_gelu_backward(float *dinp, const float *inp, const float *dout, size_t N);
void cu_relu_forward(float *out, const float *inp, size_t N);
void cu_relu_backward(float *dinp, const float *inp, const float *dout, size_t N);
void cu_add(float *out, const float *a, const float *b, size_t N);
void cu_accumulate(float *dst, const float *src, size_t N);
void cu_scale(float *x, float s, size_t N);
void cu_add_rows(float *out, const float *inp, const float *pos, int B, int T, int C);
void cu_add_rows_backward(float *dpos, const float *dout, int B, int T, int C);
void cu_gather_tokens(float *out, const float *x, const float *cls, const int32_t *ids_keep, int B,
                      int L, int K, int C);
void cu_gather_tokens_backward(float *dx, float *dcls, const float *dout, const int32_t *ids_keep,
                               int B, int L, int K, int C);
void cu_unshuffle_tokens(float *out, const float *x, const float *mask_token,
                         const int32_t *ids_restore, int B, int L, int K, int C);
void cu_unshuffle_tokens_backward(float *dx, float *dmask_token, const float *dout,
                                  const int32_t *ids_restore, int B, int L, int K, int C);
void cu_drop_first_token(float *out, const float *inp, int B, int T, int C);
void cu_drop_first_token_backward(float *dinp, const float *dout, int B, int T, int C);
void cu_pool_forward(float *out, const float *inp, int B, int T, int C, int pool_cls);
void cu_pool_backward(float *dinp, const float *dout, int B, int T, int C, int pool_cls);
void cu_mae_loss(float *loss, float *dpred, const float *pred, const float *target,
                 const float *mask, int B, int L, int D, int norm_pix, float dloss);
void cu_infonce_loss(float *loss, float *dz1, float *dz2, const float *z1, const float *z2, int N,
                     int D, float temperature, float dloss);
void cu_simsiam_loss(float *loss, float *dp1, float *dp2, const float *p1, const float *p2,
                     const float *z1, const float *z2, int N, int D, float dloss);
void cu_vicreg_loss(float *loss, float *terms, float *dz1, float *dz2, const float *z1,
                    const float *z2, int N, int D, float w_sim, float w_var, float w_cov,
                    float dloss);
void cu_sumsq(float *out, const float *x, size_t N);
void cu_adamw(float *param, const float *grad, float *m, float *v, size_t N, float lr, float beta1,
              float beta2, float eps, float weight_decay, int t, float grad_scale);
void cu_adamw_ranges(float *param, const float *grad, float *m, float *v, const vm_adamw_range *ranges,
                     int nranges, float lr, float beta1, float beta2, float eps, float weight_decay, int t,
                     float grad_scale);
// The bf16-activation ops (trainer/backend.h): vm_bf16 is the bit pattern of an __nv_bfloat16.
void cu_layernorm_forward_bf16(vm_bf16 *out, float *mean, float *rstd, const float *inp, const float *weight,
                               const float *bias, int N, int C, float eps);
void cu_matmul_forward_bf16(vm_bf16 *out, const vm_bf16 *inp, const float *weight, const float *bias, int N, int C,
                            int OC);
void cu_matmul_backward_bf16(float *dinp, float *dweight, float *dbias, const float *dout, const vm_bf16 *inp,
                             const float *weight, int N, int C, int OC);
void cu_attention_forward_bf16(vm_bf16 *out, float *att, const vm_bf16 *qkv, int B, int T, int C, int NH);
void cu_attention_backward_bf16(float *dqkv, float *scratch, const float *dout, const vm_bf16 *qkv,
                                const float *att, int B, int T, int C, int NH);
void cu_gelu_forward_bf16(vm_bf16 *out, const vm_bf16 *inp, size_t N);
void cu_gelu_backward_bf16(float *dinp, const vm_bf16 *inp, const float *dout, size_t N);
void cu_add_bf16(float *out, const float *a, const vm_bf16 *b, size_t N);
static inline __nv_bfloat16 *as_bf16(vm_bf16 *p) { return reinterpret_cast<__nv_bfloat16 *>(p); }
static inline const __nv_bfloat16 *as_bf16(const vm_bf16 *p) { return reinterpret_cast<const __nv_bfloat16 *>(p); }
static_assert(sizeof(vm_bf16) == sizeof(__nv_bfloat16), "vm_bf16 holds the bits of an __nv_bfloat16");

// Column sums in a fixed order (deterministic, double accumulation):
//   dst[c] = (accumulate ? dst[c] : 0) + sum over r < rows of f(r, c)      (c < cols)
// f is a device functor (float operator()(int r, int c) const).  Reads are coalesced when f reads
// row-major data at [r * cols + c].  Rows are split into chunks whose partial sums go to the
// workspace at *off, then one pass adds the chunks in order.  cuda_colsums makes NOUT such sums of
// the same rows in one pass (f returns colsums<NOUT>, value k summed into dst[k]): e.g. LayerNorm's
// weight and bias gradients, which read the same dout.  Each sum adds in the same order either way.
template <int NOUT>
struct colsums {
    float v[NOUT];
};

template <int NOUT, typename F>
__global__ void colsum_partial_kernel(double *partial, int rows, int cols, int rows_per_chunk, F f) {
    __shared__ double sh[NOUT][8][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    int r0 = blockIdx.y * rows_per_chunk;
    int r1 = min(rows, r0 + rows_per_chunk);
    double acc[NOUT];
#pragma unroll
    for (int k = 0; k < NOUT; k++) acc[k] = 0.0;
    if (c < cols) {
        // Rows r, r + 8, ... in order.  Four rows' values are read before any is added, so that
        // each thread has four loads in flight (the kernel waits on memory, not on the adds); the
        // additions keep the row order, so the sums are the same bits as one row at a time.
        int r = r0 + threadIdx.y;
        for (; r + 24 < r1; r += 32) {
            colsums<NOUT> v[4] = {f(r, c), f(r + 8, c), f(r + 16, c), f(r + 24, c)};
#pragma unroll
            for (int u = 0; u < 4; u++)
#pragma unroll
                for (int k = 0; k < NOUT; k++) acc[k] += (double)v[u].v[k];
        }
        for (; r < r1; r += 8) {
            colsums<NOUT> v = f(r, c);
#pragma unroll
            for (int k = 0; k < NOUT; k++) acc[k] += (double)v.v[k];
        }
    }
#pragma unroll
    for (int k = 0; k < NOUT; k++) sh[k][threadIdx.y][threadIdx.x] = acc[k];
    __syncthreads();
    if (threadIdx.y == 0 && c < cols)
#pragma unroll
        for (int k = 0; k < NOUT; k++) {
            double s = 0.0;
            for (int i = 0; i < 8; i++) s += sh[k][i][threadIdx.x];
            partial[((size_t)k * gridDim.y + blockIdx.y) * cols + c] = s;  // (NOUT, chunks, cols)
        }
}
__global__ void colsum_finish_kernel(float *dst, const double *partial, int chunks, int cols, int accumulate);

template <int NOUT, typename F>
void cuda_colsums(float *const (&dst)[NOUT], int accumulate, int rows, int cols, F f, size_t *off, const char *op) {
    if (cols <= 0) return;
    int col_blocks = (int)ceil_div(cols, 32);
    int chunks = (4 * g_cu.num_sms + col_blocks - 1) / col_blocks;
    int max_chunks = (int)ceil_div(rows > 0 ? rows : 1, 32);  // at least 32 rows per chunk
    if (chunks > max_chunks) chunks = max_chunks;
    if (chunks > 256) chunks = 256;
    if (chunks < 1) chunks = 1;
    int per = (int)ceil_div(rows > 0 ? rows : 1, chunks);
    double *partial = (double *)cuda_ws(off, (size_t)NOUT * chunks * cols * sizeof(double), op);
    colsum_partial_kernel<NOUT><<<dim3(col_blocks, chunks), dim3(32, 8), 0, g_cu.stream>>>(partial, rows, cols, per, f);
    LAUNCH_CHECK(op);
    for (int k = 0; k < NOUT; k++) {
        colsum_finish_kernel<<<ceil_div(cols, 256), 256, 0, g_cu.stream>>>(dst[k], partial + (size_t)k * chunks * cols,
                                                                           chunks, cols, accumulate);
        LAUNCH_CHECK(op);
    }
}

template <typename F>
struct colsum_one {  // a float functor as a colsums<1> one
    F f;
    __device__ colsums<1> operator()(int r, int c) const { return colsums<1>{{f(r, c)}}; }
};

template <typename F>
void cuda_colsum(float *dst, int accumulate, int rows, int cols, F f, size_t *off, const char *op) {
    float *const d[1] = {dst};
    cuda_colsums<1>(d, accumulate, rows, cols, colsum_one<F>{f}, off, op);
}
