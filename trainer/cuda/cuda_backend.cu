// trainer/cuda/cuda_backend.cu — the CUDA backend: device set-up, memory, the private workspace,
// the op table, and the matrix products (linear layers and attention) through cuBLAS.
//
// Layout note.  Tensors are row-major; cuBLAS is column-major.  A row-major (R, K) matrix is the
// column-major (K, R) matrix with leading dimension K, so every product below is written for the
// transposed problem: out (N, OC) = inp (N, C) @ W (OC, C)^T becomes, column-major,
// out^T (OC x N) = W^T... i.e. gemm(T, N, m=OC, n=N, k=C, A=W lda=C, B=inp ldb=C, C=out ldc=OC).
#include "trainer/cuda/cuda_internal.cuh"
#include "trainer/cuda/cuda_backend.h"
#include <cublasLt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vm_cuda_state g_cu;

#define CUBLAS_WS_BYTES (32u << 20)  // cuBLAS workspace: enough for its split-K / Hopper kernels

// ---- errors ----------------------------------------------------------------------------------
void cuda_fatal(const char *op, const char *what, const char *reason) {
    fprintf(stderr, "cuda backend: %s: %s: %s\n", op, what, reason);
    fflush(stderr);
    abort();
}

const char *cublas_status_name(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "cuBLAS not initialised";
    case CUBLAS_STATUS_ALLOC_FAILED: return "cuBLAS allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "cuBLAS invalid value (unsupported shape or type)";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "cuBLAS architecture mismatch";
    case CUBLAS_STATUS_MAPPING_ERROR: return "cuBLAS mapping error";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "cuBLAS kernel failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "cuBLAS internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "cuBLAS: not supported";
    case CUBLAS_STATUS_LICENSE_ERROR: return "cuBLAS license error";
    default: return "cuBLAS unknown status";
    }
}

// ---- workspace ---------------------------------------------------------------------------------
// Grow-only.  Growing does not free the old buffer at once: kernels already queued (possibly of
// the same op) may still use carvings from it.  Old buffers are retired and freed at the next
// stream synchronisation (sync, to_host, free).
#define MAX_RETIRED 32
static void *retired[MAX_RETIRED];
static int nretired;

static void free_retired(void) {
    if (!nretired) return;
    CUDA_CHECK("workspace", cudaStreamSynchronize(g_cu.stream));
    for (int i = 0; i < nretired; i++) CUDA_CHECK("workspace", cudaFree(retired[i]));
    nretired = 0;
}

void *cuda_ws_reserve(size_t bytes, const char *op) {
    if (bytes <= g_cu.ws_bytes) return g_cu.ws;
    size_t want = bytes + bytes / 4;  // headroom: shapes of the next layers are often a bit larger
    if (nretired == MAX_RETIRED) free_retired();
    if (g_cu.ws) retired[nretired++] = g_cu.ws;
    g_cu.ws = NULL;
    g_cu.ws_bytes = 0;
    cudaError_t e = cudaMalloc(&g_cu.ws, want);
    if (e != cudaSuccess) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s (workspace of %.1f MiB)", cudaGetErrorString(e), want / 1048576.0);
        cuda_fatal(op, "cudaMalloc", msg);
    }
    g_cu.ws_bytes = want;
    return g_cu.ws;
}

void *cuda_ws(size_t *off, size_t bytes, const char *op) {
    size_t start = (*off + 255) & ~(size_t)255;
    size_t end = start + ((bytes + 255) & ~(size_t)255);
    char *base = (char *)cuda_ws_reserve(end, op);
    *off = end;
    return base + start;
}

extern "C" size_t vm_backend_cuda_workspace_bytes(void) { return g_cu.ws_bytes; }

// ---- memory ------------------------------------------------------------------------------------
static void *cu_alloc(size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        (void)cudaGetLastError();  // clear the sticky-free allocation error; the caller sees NULL
        return NULL;
    }
    CUDA_CHECK("alloc", cudaMemsetAsync(p, 0, bytes, g_cu.stream));
    CUDA_CHECK("alloc", cudaStreamSynchronize(g_cu.stream));
    return p;
}

static void cu_free(void *p) {
    if (!p) return;
    free_retired();
    CUDA_CHECK("free", cudaStreamSynchronize(g_cu.stream));
    CUDA_CHECK("free", cudaFree(p));
}

static void cu_to_device(void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    // From pageable memory the copy is staged before this returns; from pinned memory it is truly
    // asynchronous, so wait: the caller may reuse its buffer when we return.  (The input ring
    // uses its own copy stream and events instead of this entry.)
    cudaPointerAttributes attr;
    int pinned = cudaPointerGetAttributes(&attr, src) == cudaSuccess && attr.type == cudaMemoryTypeHost;
    (void)cudaGetLastError();
    CUDA_CHECK("to_device", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, g_cu.stream));
    if (pinned) CUDA_CHECK("to_device", cudaStreamSynchronize(g_cu.stream));
}

static void cu_to_host(void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK("to_host", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, g_cu.stream));
    CUDA_CHECK("to_host", cudaStreamSynchronize(g_cu.stream));
}

static void cu_copy(void *dst, const void *src, size_t bytes) {
    if (!bytes || dst == src) return;
    CUDA_CHECK("copy", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, g_cu.stream));
}

static void cu_copy_rows(void *dst, size_t dst_pitch, const void *src, size_t src_pitch, size_t bytes, size_t rows) {
    if (!bytes || !rows) return;
    CUDA_CHECK("copy_rows", cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, bytes, rows, cudaMemcpyDeviceToDevice,
                                              g_cu.stream));
}

static void cu_zero(void *p, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK("zero", cudaMemsetAsync(p, 0, bytes, g_cu.stream));
}

static void cu_sync(void) {
    CUDA_CHECK("sync", cudaStreamSynchronize(g_cu.stream));
    free_retired();
}

int cuda_smem_optin(void) {
    static int bytes = -1;
    if (bytes < 0 && cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, g_cu.device) != cudaSuccess)
        bytes = 48 * 1024;
    return bytes;
}

// A table of the kernels raised so far (the attention kernels: 16 fused, 30 flash instantiations).
void cuda_allow_smem(const void *kernel, size_t smem, const char *op) {
    constexpr int MAX_KERNELS = 64;
    static struct { const void *kernel; size_t bytes; } allowed[MAX_KERNELS];
    int i = 0;
    while (i < MAX_KERNELS && allowed[i].kernel && allowed[i].kernel != kernel) i++;
    if (i < MAX_KERNELS && allowed[i].kernel == kernel && allowed[i].bytes >= smem) return;
    CUDA_CHECK(op, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    if (i < MAX_KERNELS) allowed[i].kernel = kernel, allowed[i].bytes = smem;
}

float cuda_read_scalar(const float *dev, const char *op) {
    CUDA_CHECK(op, cudaMemcpyAsync(g_cu.host_scalar, dev, sizeof(float), cudaMemcpyDeviceToHost, g_cu.stream));
    CUDA_CHECK(op, cudaStreamSynchronize(g_cu.stream));
    return g_cu.host_scalar[0];
}

// ---- bf16 conversion ---------------------------------------------------------------------------
__global__ void to_bf16_kernel(__nv_bfloat16 *dst, const float *src, size_t n) {
    // 4 elements per thread when aligned (the common case: tensors start at cudaMalloc'd offsets
    // that are multiples of 16 bytes); a scalar tail otherwise.
    size_t n4 = ((uintptr_t)src % 16 == 0 && (uintptr_t)dst % 8 == 0) ? n / 4 : 0;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += stride) {
        float4 v = ((const float4 *)src)[i];
        __nv_bfloat162 a = __floats2bfloat162_rn(v.x, v.y), b = __floats2bfloat162_rn(v.z, v.w);
        ((__nv_bfloat162 *)dst)[2 * i] = a;
        ((__nv_bfloat162 *)dst)[2 * i + 1] = b;
    }
    for (size_t i = n4 * 4 + (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dst[i] = __float2bfloat16_rn(src[i]);
}

void cuda_to_bf16(__nv_bfloat16 *dst, const float *src, size_t n, const char *op) {
    if (!n) return;
    to_bf16_kernel<<<grid_for((n + 3) / 4, 256), 256, 0, g_cu.stream>>>(dst, src, n);
    LAUNCH_CHECK(op);
}

// ---- GEMM helpers ------------------------------------------------------------------------------
void cuda_sgemm(const char *op, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                float alpha, const float *A, int lda, const float *B, int ldb, float beta, float *C,
                int ldc) {
    CUBLAS_CHECK(op, cublasSgemm(g_cu.blas, ta, tb, m, n, k, &alpha, A, lda, B, ldb, &beta, C, ldc));
}

// The compute type of a product whose operands have type t: plain fp32 (no TF32) for fp32 operands,
// except in bf16 mode on the "fast" path, where cuBLAS rounds the fp32 operands to bf16 itself
// (CUBLAS_COMPUTE_32F_FAST_16BF) instead of us writing bf16 copies first.
static cublasComputeType_t compute_type(cudaDataType_t t) {
    return t == CUDA_R_32F && g_cu.bf16 && g_cu.bf16_fast ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F;
}

// Column-major C (m x n, fp32) = alpha op(A) op(B) + beta C, with A, B fp32 or bf16 (type t).
static void gemm_ex(const char *op, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                    float alpha, const void *A, int lda, const void *B, int ldb, float beta, float *C,
                    int ldc, cudaDataType_t t) {
    CUBLAS_CHECK(op, cublasGemmEx(g_cu.blas, ta, tb, m, n, k, &alpha, A, t, lda, B, t, ldb, &beta, C,
                                  CUDA_R_32F, ldc, compute_type(t), CUBLAS_GEMM_DEFAULT));
}

// bf16 operands written by us (1), or none (fp32, or bf16 on the fast path)
static int convert_bf16(void) { return g_cu.bf16 && !g_cu.bf16_fast; }

// ---- cuBLASLt: linear forward with the bias added in the GEMM's epilogue ----------------------------
// On by default (vm_backend_cuda_set_lt / VICMAE_CUDA_LT=0|1): it saves one pass over the output
// per biased linear layer.  The output D is fp32 with an fp32 bias, or (bf16 activations) bf16
// with a bf16 bias (cuBLASLt's bias has D's type).  A plan (descriptors + the heuristic's
// algorithm) is cached per shape, operand type, output type, compute type and pointer alignment
// (the heuristic takes the alignment of A, B, D and of the bias pointer into account).
static cublasLtHandle_t g_lt;
static int g_use_lt;
static long g_lt_runs, g_lt_fallbacks;  // vm_backend_cuda_lt_counts
struct lt_plan {
    int used, ok;
    int N, C, OC, al_w, al_x, al_d, al_b;
    cudaDataType_t t, dt;
    cublasComputeType_t ct;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulAlgo_t algo;
};
#define LT_PLANS 128
static struct lt_plan lt_plans[LT_PLANS];
static int lt_next;

static int align_of(const void *p) {
    uintptr_t x = (uintptr_t)p;
    int a = 1;
    while (a < 16 && x % (2 * a) == 0) a *= 2;
    return a;
}

static void lt_plan_destroy(struct lt_plan *p) {
    if (p->op) cublasLtMatmulDescDestroy(p->op);
    if (p->a) cublasLtMatrixLayoutDestroy(p->a);
    if (p->b) cublasLtMatrixLayoutDestroy(p->b);
    if (p->d) cublasLtMatrixLayoutDestroy(p->d);
    memset(p, 0, sizeof *p);
}

// t: the operands' type; dt: the output's (and the bias's) type.
static struct lt_plan *lt_plan_get(const char *op, int N, int C, int OC, cudaDataType_t t, cudaDataType_t dt,
                                   cublasComputeType_t ct, const void *W, const void *X, const void *out,
                                   const void *bias) {
    int aw = align_of(W), ax = align_of(X), ad = align_of(out), ab = align_of(bias);
    for (int i = 0; i < LT_PLANS; i++) {
        struct lt_plan *p = &lt_plans[i];
        if (p->used && p->N == N && p->C == C && p->OC == OC && p->t == t && p->dt == dt && p->ct == ct &&
            p->al_w == aw && p->al_x == ax && p->al_d == ad && p->al_b == ab)
            return p;
    }
    struct lt_plan *p = &lt_plans[lt_next];
    lt_next = (lt_next + 1) % LT_PLANS;
    lt_plan_destroy(p);
    p->used = 1, p->N = N, p->C = C, p->OC = OC, p->t = t, p->dt = dt, p->ct = ct;
    p->al_w = aw, p->al_x = ax, p->al_d = ad, p->al_b = ab;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    cudaDataType_t bt = dt;
    CUBLAS_CHECK(op, cublasLtMatmulDescCreate(&p->op, ct, CUDA_R_32F));
    CUBLAS_CHECK(op, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CUBLAS_CHECK(op, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    CUBLAS_CHECK(op, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    CUBLAS_CHECK(op, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
    CUBLAS_CHECK(op, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    // column-major: W^T stored as (C x OC) ld C, transposed; inp as (C x N) ld C; out (OC x N) ld OC
    CUBLAS_CHECK(op, cublasLtMatrixLayoutCreate(&p->a, t, C, OC, C));
    CUBLAS_CHECK(op, cublasLtMatrixLayoutCreate(&p->b, t, C, N, C));
    CUBLAS_CHECK(op, cublasLtMatrixLayoutCreate(&p->d, dt, OC, N, OC));
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(op, cublasLtMatmulPreferenceCreate(&pref));
    uint64_t wsb = CUBLAS_WS_BYTES;
    uint32_t a32[4] = {(uint32_t)aw, (uint32_t)ax, (uint32_t)ad, (uint32_t)ad};
    CUBLAS_CHECK(op, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
    CUBLAS_CHECK(op, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &a32[0], 4));
    CUBLAS_CHECK(op, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &a32[1], 4));
    CUBLAS_CHECK(op, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &a32[2], 4));
    CUBLAS_CHECK(op, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &a32[3], 4));
    cublasLtMatmulHeuristicResult_t res;
    int nres = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(g_lt, p->op, p->a, p->b, p->d, p->d, pref, 1, &res, &nres);
    cublasLtMatmulPreferenceDestroy(pref);
    p->ok = st == CUBLAS_STATUS_SUCCESS && nres > 0;  // else: this shape takes the cublasGemmEx path
    if (p->ok) p->algo = res.algo;
    return p;
}

// Run plan p (p->ok): out = W^T-product + bias.
static void lt_run(const char *op, struct lt_plan *p, void *out, const void *W, const void *X, const void *bias) {
    float one = 1.0f, zero = 0.0f;
    g_lt_runs++;
    CUBLAS_CHECK(op, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    CUBLAS_CHECK(op, cublasLtMatmul(g_lt, p->op, &one, W, p->a, X, p->b, &zero, out, p->d, out, p->d, &p->algo,
                                    g_cu.blas_ws, CUBLAS_WS_BYTES, g_cu.stream));
}

// The plan of this product (operands of type t, out and bias of type dt) when cuBLASLt has an
// algorithm for it; else NULL, counted as a fallback (the caller takes the GEMM + bias path).
static struct lt_plan *lt_plan_usable(const char *op, int N, int C, int OC, cudaDataType_t t, cudaDataType_t dt,
                                      const void *W, const void *X, const void *out, const void *bias) {
    struct lt_plan *p = lt_plan_get(op, N, C, OC, t, dt, compute_type(t), W, X, out, bias);
    if (p->ok) return p;
    g_lt_fallbacks++;
    return NULL;
}

// out = W^T-product + bias through cuBLASLt (out and bias of type dt); 0 when no cuBLASLt algorithm
// fits (the caller falls back).
static int lt_matmul_bias(const char *op, void *out, cudaDataType_t dt, const void *W, const void *X, const void *bias,
                          int N, int C, int OC, cudaDataType_t t) {
    struct lt_plan *p = lt_plan_usable(op, N, C, OC, t, dt, W, X, out, bias);
    if (p) lt_run(op, p, out, W, X, bias);
    return p != NULL;
}

extern "C" void vm_backend_cuda_set_lt(int on) { g_use_lt = on && g_lt ? 1 : 0; }
extern "C" int vm_backend_cuda_lt(void) { return g_use_lt; }
extern "C" void vm_backend_cuda_lt_counts(long *runs, long *fallbacks) {
    if (runs) *runs = g_lt_runs;
    if (fallbacks) *fallbacks = g_lt_fallbacks;
}

// ---- matmul ------------------------------------------------------------------------------------
// out (N, OC) row-major, bias (OC): out[n, o] += bias[o].
__global__ void matmul_forward_bias_kernel(float *out, const float *bias, size_t total, int OC) {
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride)
        out[i] += bias[i % OC];
}

void cu_matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N,
                       int C, int OC) {
    const char *op = "matmul_forward";
    const void *W = weight, *X = inp;
    cudaDataType_t t = CUDA_R_32F;
    if (convert_bf16()) {
        size_t off = 0;
        __nv_bfloat16 *w16 = (__nv_bfloat16 *)cuda_ws(&off, (size_t)OC * C * 2, op);
        __nv_bfloat16 *x16 = (__nv_bfloat16 *)cuda_ws(&off, (size_t)N * C * 2, op);
        cuda_to_bf16(w16, weight, (size_t)OC * C, op);
        cuda_to_bf16(x16, inp, (size_t)N * C, op);
        W = w16, X = x16, t = CUDA_R_16BF;
    }
    if (bias && g_use_lt && lt_matmul_bias(op, out, CUDA_R_32F, W, X, bias, N, C, OC, t)) return;
    gemm_ex(op, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, 1.0f, W, C, X, C, 0.0f, out, OC, t);
    if (bias) {
        size_t total = (size_t)N * OC;
        matmul_forward_bias_kernel<<<grid_for(total, 256), 256, 0, g_cu.stream>>>(out, bias, total, OC);
        LAUNCH_CHECK(op);
    }
}

// out16 (N, OC) = bf16(ws + bias16): the fp32 product (ws, row-major N x OC) and the bf16 bias
// [may be NULL] summed in fp32, then rounded once.
__global__ void matmul_round_bias_kernel(__nv_bfloat16 *out, const float *ws, const __nv_bfloat16 *bias, size_t total,
                                         int OC) {
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        float v = ws[i];
        if (bias) v += __bfloat162float(bias[i % OC]);
        out[i] = __float2bfloat16_rn(v);
    }
}

// bf16 activations: inp is bf16 already; the weight and the bias are rounded into the workspace
// (the bias to bf16 as PyTorch's autocast casts it: cuBLASLt's bias has the output's type).  With
// cuBLASLt, the bf16 GEMM (fp32 accumulation) adds the bias in its epilogue and writes bf16 out
// directly; without it (or when no algorithm fits) the GEMM writes fp32 into the workspace and one
// kernel adds the bias and rounds once (cublasGemmEx with a bf16 C would round before the bias).
void cu_matmul_forward_bf16(vm_bf16 *out, const vm_bf16 *inp, const float *weight, const float *bias, int N, int C,
                            int OC) {
    const char *op = "matmul_forward_bf16";
    size_t off = 0, total = (size_t)N * OC;
    if (!total) return;
    __nv_bfloat16 *w16 = (__nv_bfloat16 *)cuda_ws(&off, (size_t)OC * C * 2, op);
    __nv_bfloat16 *b16 = bias ? (__nv_bfloat16 *)cuda_ws(&off, (size_t)OC * 2, op) : NULL;
    // (the plan is looked up before anything is launched: the fallback's workspace is carved only
    // when no cuBLASLt algorithm fits, and every carving must precede the op's launches)
    struct lt_plan *p = b16 && g_use_lt ? lt_plan_usable(op, N, C, OC, CUDA_R_16BF, CUDA_R_16BF, w16, inp, out, b16)
                                        : NULL;
    float *prod = p ? NULL : (float *)cuda_ws(&off, total * sizeof(float), op);
    cuda_to_bf16(w16, weight, (size_t)OC * C, op);
    if (b16) cuda_to_bf16(b16, bias, OC, op);
    if (p) {
        lt_run(op, p, out, w16, inp, b16);
        return;
    }
    gemm_ex(op, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, 1.0f, w16, C, as_bf16(inp), C, 0.0f, prod, OC, CUDA_R_16BF);
    matmul_round_bias_kernel<<<grid_for(total, 256), 256, 0, g_cu.stream>>>(as_bf16(out), prod, b16, total, OC);
    LAUNCH_CHECK(op);
}

struct ColOf {  // f(r, c) = x[r * ld + c]
    const float *x;
    int ld;
    __device__ float operator()(int r, int c) const { return x[(size_t)r * ld + c]; }
};
// f(r, c) = x[r * ld + c], and on the way x16[r * ld + c] = bf16(x[r * ld + c]): the column sum
// visits every element once, so it makes the bf16 copy too (one read of dout instead of two).
struct ColOfToBf16 {
    const float *x;
    __nv_bfloat16 *x16;
    int ld;
    __device__ float operator()(int r, int c) const {
        size_t i = (size_t)r * ld + c;
        // __ldg: x is read-only for the kernel and x16 never overlaps it; a plain load could alias
        // the previous row's store, so the compiler would not hoist the four rows' loads above it
        // (SASS: load, convert, store, one row at a time)
        float v = __ldg(x + i);
        x16[i] = __float2bfloat16_rn(v);
        return v;
    }
};

// The backward of both linear entries: inp fp32 (inp32; rounded to bf16 here in bf16 convert mode)
// or bf16 (inp16: the bf16-activation op, always bf16 products).  Exactly one of them is set.
static void matmul_backward_impl(const char *op, float *dinp, float *dweight, float *dbias, const float *dout,
                                 const float *inp32, const __nv_bfloat16 *inp16, const float *weight, int N, int C,
                                 int OC) {
    size_t off = 0;
    if (inp16 || convert_bf16()) {
        __nv_bfloat16 *g16 = (__nv_bfloat16 *)cuda_ws(&off, (size_t)N * OC * 2, op);
        __nv_bfloat16 *x_copy = inp16 ? NULL : (__nv_bfloat16 *)cuda_ws(&off, (size_t)N * C * 2, op);
        __nv_bfloat16 *w16 = dinp ? (__nv_bfloat16 *)cuda_ws(&off, (size_t)OC * C * 2, op) : NULL;
        // dbias (OC) += column sums of the fp32 dout, making the bf16 copy of dout in the same pass
        if (dbias) cuda_colsum(dbias, 1, N, OC, ColOfToBf16{dout, g16, OC}, &off, op);
        else cuda_to_bf16(g16, dout, (size_t)N * OC, op);
        if (x_copy) cuda_to_bf16(x_copy, inp32, (size_t)N * C, op);
        const __nv_bfloat16 *x16 = inp16 ? inp16 : x_copy;
        if (dinp) {
            cuda_to_bf16(w16, weight, (size_t)OC * C, op);
            // dinp^T (C x N) = W^T (C x OC, lda C) @ dout^T (OC x N, ldb OC)
            gemm_ex(op, CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, 1.0f, w16, C, g16, OC, 0.0f, dinp, C, CUDA_R_16BF);
        }
        // dweight^T (C x OC) += inp^T (C x N) @ dout (N x OC)
        gemm_ex(op, CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, 1.0f, x16, C, g16, OC, 1.0f, dweight, C, CUDA_R_16BF);
    } else {
        if (dinp) gemm_ex(op, CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, 1.0f, weight, C, dout, OC, 0.0f, dinp, C, CUDA_R_32F);
        gemm_ex(op, CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, 1.0f, inp32, C, dout, OC, 1.0f, dweight, C, CUDA_R_32F);
        if (dbias) cuda_colsum(dbias, 1, N, OC, ColOf{dout, OC}, &off, op);
    }
}

void cu_matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int N, int C, int OC) {
    matmul_backward_impl("matmul_backward", dinp, dweight, dbias, dout, inp, NULL, weight, N, C, OC);
}

void cu_matmul_backward_bf16(float *dinp, float *dweight, float *dbias, const float *dout, const vm_bf16 *inp,
                             const float *weight, int N, int C, int OC) {
    matmul_backward_impl("matmul_backward_bf16", dinp, dweight, dbias, dout, NULL, as_bf16(inp), weight, N, C, OC);
}

// ---- attention ---------------------------------------------------------------------------------
// The per-(batch, head) matrices are strided views into qkv (B, T, 3C): q of head h of sample b
// starts at qkv + b*T*3C + h*hs with row stride 3C (k at +C, v at +2C).  One batched GEMM covers
// all B*NH heads through tables of pointers, so nothing is permuted or copied (in bf16 mode the
// operands are first rounded into bf16 copies with the same layout; with bf16 activations qkv is
// bf16 already and the tables point into it).

// Pointer tables for one batched product: table[i] = base + (i / NH) * bstride + (i % NH) * hstride
// (elements of `esize` bytes).
__global__ void attention_ptrs_kernel(const void **table, const char *base, int count, int NH,
                                      size_t bstride, size_t hstride, int esize) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) table[i] = base + ((size_t)(i / NH) * bstride + (size_t)(i % NH) * hstride) * esize;
}

static const void **make_ptrs(size_t *off, const void *base, int B, int NH, size_t bstride,
                              size_t hstride, int esize, const char *op) {
    int count = B * NH;
    const void **t = (const void **)cuda_ws(off, (size_t)count * sizeof(void *), op);
    attention_ptrs_kernel<<<ceil_div(count, 256), 256, 0, g_cu.stream>>>(t, (const char *)base, count,
                                                                          NH, bstride, hstride, esize);
    LAUNCH_CHECK(op);
    return t;
}

// A and B of type ab, C of type ct (fp32, or bf16 for the bf16-activation attention output); the
// compute type follows the operands (compute_type: fp32 accumulation either way).
static void gemm_batched(const char *op, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                         int k, float alpha, const void **A, int lda, const void **B, int ldb,
                         float beta, const void **C, int ldc, int count, cudaDataType_t ab, cudaDataType_t ct) {
    CUBLAS_CHECK(op, cublasGemmBatchedEx(g_cu.blas, ta, tb, m, n, k, &alpha, A, ab, lda, B, ab, ldb,
                                         &beta, (void *const *)C, ct, ldc, count,
                                         compute_type(ab), CUBLAS_GEMM_DEFAULT));
}

// Row softmax in place over rows of length T (rows = B*NH*T).  One warp per row; fp32 statistics.
// att16 (optional): the probabilities rounded to bf16 as well, for the next product (one pass
// instead of a separate conversion over B*NH*T*T values).
__global__ void attention_softmax_kernel(float *att, __nv_bfloat16 *att16, size_t rows, int T) {
    size_t row = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    float *x = att + row * T;
    float mx = -INFINITY;
    for (int j = lane; j < T; j += 32) mx = fmaxf(mx, x[j]);
    mx = warp_max(mx);
    float s = 0.0f;
    for (int j = lane; j < T; j += 32) s += expf(x[j] - mx);
    s = warp_sum(s);
    float inv = 1.0f / s;
    for (int j = lane; j < T; j += 32) {
        float p = expf(x[j] - mx) * inv;
        x[j] = p;
        if (att16) att16[row * T + j] = __float2bfloat16_rn(p);
    }
}

// dpre = att * (datt - sum_j att * datt) * scale over rows of length T.  fp32: written in place
// over datt (dpre32 == datt).  bf16: only the bf16 operands the next products need are written,
// dpre16 and the probabilities att16 (the fp32 dpre is never read again).
__global__ void attention_softmax_backward_kernel(float *dpre32, __nv_bfloat16 *dpre16, __nv_bfloat16 *att16,
                                                  const float *datt, const float *att, size_t rows, int T,
                                                  float scale) {
    size_t row = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const float *d = datt + row * T, *a = att + row * T;
    float s = 0.0f;
    for (int j = lane; j < T; j += 32) s += a[j] * d[j];
    s = warp_sum(s);
    for (int j = lane; j < T; j += 32) {
        float aj = a[j], v = aj * (d[j] - s) * scale;
        if (dpre32) dpre32[row * T + j] = v;
        if (dpre16) dpre16[row * T + j] = __float2bfloat16_rn(v);
        if (att16) att16[row * T + j] = __float2bfloat16_rn(aj);
    }
}

// The attention entries, fp32 and bf16 activations.  io16 = 0: qkv (and out) fp32, the bf16 products
// (bf16 convert mode) from bf16 copies made here; io16 = 1 (attention_forward_bf16 / _backward_bf16):
// qkv bf16, read as is, the forward's out bf16 (the att @ v product writes bf16 C, rounded once from
// its fp32 accumulation), and always the bf16 products whatever the precision and bf16 path.
static void attention_forward_impl(const char *op, void *out, float *att, const void *qkv, int io16, int B, int T,
                                   int C, int NH) {
    if (io16 ? cuda_attention_flash_forward((__nv_bfloat16 *)out, att, (const __nv_bfloat16 *)qkv, B, T, C, NH, op) ||
                   cuda_attention_fused_forward((__nv_bfloat16 *)out, att, (const __nv_bfloat16 *)qkv, B, T, C, NH, op)
             : convert_bf16() && (cuda_attention_flash_forward((float *)out, att, (const float *)qkv, B, T, C, NH, op) ||
                                  cuda_attention_fused_forward((float *)out, att, (const float *)qkv, B, T, C, NH, op)))
        return;
    int hs = C / NH, count = B * NH;
    float scale = 1.0f / sqrtf((float)hs);
    size_t off = 0;
    int bf = io16 || convert_bf16(), es = bf ? 2 : 4, eo = io16 ? 2 : 4;
    cudaDataType_t ab = bf ? CUDA_R_16BF : CUDA_R_32F, ot = io16 ? CUDA_R_16BF : CUDA_R_32F;
    const void *src = qkv;
    __nv_bfloat16 *att16 = NULL;
    if (bf) {
        __nv_bfloat16 *qkv16 = io16 ? NULL : (__nv_bfloat16 *)cuda_ws(&off, (size_t)B * T * 3 * C * 2, op);
        att16 = (__nv_bfloat16 *)cuda_ws(&off, (size_t)count * T * T * 2, op);
        if (qkv16) {
            cuda_to_bf16(qkv16, (const float *)qkv, (size_t)B * T * 3 * C, op);
            src = qkv16;
        }
    }
    size_t bq = (size_t)T * 3 * C;
    const void **q = make_ptrs(&off, src, B, NH, bq, hs, es, op);
    const void **k = make_ptrs(&off, (const char *)src + (size_t)C * es, B, NH, bq, hs, es, op);
    const void **v = make_ptrs(&off, (const char *)src + (size_t)2 * C * es, B, NH, bq, hs, es, op);
    const void **a = make_ptrs(&off, att, B, NH, (size_t)NH * T * T, (size_t)T * T, 4, op);
    const void **o = make_ptrs(&off, out, B, NH, (size_t)T * C, hs, eo, op);
    // att^T (T x T, col-major) = K (as hs x T, ld 3C)^T @ Q (hs x T, ld 3C), times scale
    gemm_batched(op, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hs, scale, k, 3 * C, q, 3 * C, 0.0f, a, T, count, ab, CUDA_R_32F);
    size_t rows = (size_t)count * T;
    attention_softmax_kernel<<<ceil_div(rows, 8), 256, 0, g_cu.stream>>>(att, att16, rows, T);
    LAUNCH_CHECK(op);
    const void **a_in = bf ? make_ptrs(&off, att16, B, NH, (size_t)NH * T * T, (size_t)T * T, 2, op) : a;
    // out^T (hs x T, ld C) = V (hs x T, ld 3C) @ att^T (T x T, ld T)
    gemm_batched(op, CUBLAS_OP_N, CUBLAS_OP_N, hs, T, T, 1.0f, v, 3 * C, a_in, T, 0.0f, o, C, count, ab, ot);
}

void cu_attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH) {
    attention_forward_impl("attention_forward", out, att, qkv, 0, B, T, C, NH);
}

void cu_attention_forward_bf16(vm_bf16 *out, float *att, const vm_bf16 *qkv, int B, int T, int C, int NH) {
    attention_forward_impl("attention_forward_bf16", out, att, qkv, 1, B, T, C, NH);
}

// qkv16_in: qkv is bf16 (see attention_forward_impl); dout, dqkv, scratch and att are fp32 either way.
static void attention_backward_impl(const char *op, float *dqkv, float *scratch, const float *dout, const void *qkv,
                                    int qkv16_in, const float *att, int B, int T, int C, int NH) {
    if (qkv16_in ? cuda_attention_flash_backward(dqkv, dout, (const __nv_bfloat16 *)qkv, att, B, T, C, NH, op) ||
                       cuda_attention_fused_backward(dqkv, dout, (const __nv_bfloat16 *)qkv, att, B, T, C, NH, op)
                 : convert_bf16() && (cuda_attention_flash_backward(dqkv, dout, (const float *)qkv, att, B, T, C, NH, op) ||
                                      cuda_attention_fused_backward(dqkv, dout, (const float *)qkv, att, B, T, C, NH, op)))
        return;
    int hs = C / NH, count = B * NH;
    float scale = 1.0f / sqrtf((float)hs);
    size_t off = 0;
    int bf = qkv16_in || convert_bf16(), es = bf ? 2 : 4;
    cudaDataType_t ab = bf ? CUDA_R_16BF : CUDA_R_32F;
    const void *src = qkv, *g = dout;
    __nv_bfloat16 *dpre16 = NULL, *att16 = NULL;
    if (bf) {
        __nv_bfloat16 *qkv16 = qkv16_in ? NULL : (__nv_bfloat16 *)cuda_ws(&off, (size_t)B * T * 3 * C * 2, op);
        __nv_bfloat16 *g16 = (__nv_bfloat16 *)cuda_ws(&off, (size_t)B * T * C * 2, op);
        att16 = (__nv_bfloat16 *)cuda_ws(&off, (size_t)count * T * T * 2, op);
        dpre16 = (__nv_bfloat16 *)cuda_ws(&off, (size_t)count * T * T * 2, op);
        if (qkv16) {
            cuda_to_bf16(qkv16, (const float *)qkv, (size_t)B * T * 3 * C, op);
            src = qkv16;
        }
        cuda_to_bf16(g16, dout, (size_t)B * T * C, op);
        g = g16;
    }
    size_t bq = (size_t)T * 3 * C, batt = (size_t)NH * T * T;
    const void **q = make_ptrs(&off, src, B, NH, bq, hs, es, op);
    const void **k = make_ptrs(&off, (const char *)src + (size_t)C * es, B, NH, bq, hs, es, op);
    const void **v = make_ptrs(&off, (const char *)src + (size_t)2 * C * es, B, NH, bq, hs, es, op);
    const void **dO = make_ptrs(&off, g, B, NH, (size_t)T * C, hs, es, op);
    const void **a = bf ? make_ptrs(&off, att16, B, NH, batt, (size_t)T * T, 2, op)
                        : make_ptrs(&off, att, B, NH, batt, (size_t)T * T, 4, op);
    const void **ds = make_ptrs(&off, scratch, B, NH, batt, (size_t)T * T, 4, op);
    const void **dp = bf ? make_ptrs(&off, dpre16, B, NH, batt, (size_t)T * T, 2, op) : ds;
    const void **dq = make_ptrs(&off, dqkv, B, NH, bq, hs, 4, op);
    const void **dk = make_ptrs(&off, dqkv + C, B, NH, bq, hs, 4, op);
    const void **dv = make_ptrs(&off, dqkv + 2 * C, B, NH, bq, hs, 4, op);
    // datt[i][j] = dO_i . V_j:   datt^T (T x T) = V (hs x T)^T @ dO (hs x T)   (fp32, into scratch)
    gemm_batched(op, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hs, 1.0f, v, 3 * C, dO, C, 0.0f, ds, T, count, ab, CUDA_R_32F);
    // softmax backward; in bf16 mode it also writes the bf16 probabilities the dV product reads
    size_t rows = (size_t)count * T;
    attention_softmax_backward_kernel<<<ceil_div(rows, 8), 256, 0, g_cu.stream>>>(
        bf ? NULL : scratch, dpre16, att16, scratch, att, rows, T, scale);
    LAUNCH_CHECK(op);
    // dV[j] = sum_i att[i][j] dO_i:   dV (hs x T) = dO (hs x T) @ att^T(T x T)^T
    gemm_batched(op, CUBLAS_OP_N, CUBLAS_OP_T, hs, T, T, 1.0f, dO, C, a, T, 0.0f, dv, 3 * C, count, ab, CUDA_R_32F);
    // dQ_i = sum_j dpre[i][j] K_j:   dQ (hs x T) = K (hs x T) @ dpre^T (T x T)
    gemm_batched(op, CUBLAS_OP_N, CUBLAS_OP_N, hs, T, T, 1.0f, k, 3 * C, dp, T, 0.0f, dq, 3 * C, count, ab, CUDA_R_32F);
    // dK_j = sum_i dpre[i][j] Q_i:   dK (hs x T) = Q (hs x T) @ (dpre^T)^T
    gemm_batched(op, CUBLAS_OP_N, CUBLAS_OP_T, hs, T, T, 1.0f, q, 3 * C, dp, T, 0.0f, dk, 3 * C, count, ab, CUDA_R_32F);
}

void cu_attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv,
                           const float *att, int B, int T, int C, int NH) {
    attention_backward_impl("attention_backward", dqkv, scratch, dout, qkv, 0, att, B, T, C, NH);
}

void cu_attention_backward_bf16(float *dqkv, float *scratch, const float *dout, const vm_bf16 *qkv,
                                const float *att, int B, int T, int C, int NH) {
    attention_backward_impl("attention_backward_bf16", dqkv, scratch, dout, qkv, 1, att, B, T, C, NH);
}

// ---- set-up and the table --------------------------------------------------------------------------
static vm_backend_ops cuda_ops;

extern "C" void vm_backend_cuda_set_precision(int bf16) { g_cu.bf16 = bf16 ? 1 : 0; }
extern "C" void vm_backend_cuda_set_bf16_path(int fast) { g_cu.bf16_fast = fast && g_cu.fast_ok ? 1 : 0; }
extern "C" int vm_backend_cuda_bf16_path(void) { return g_cu.bf16_fast; }
extern "C" int vm_backend_cuda_precision(void) { return g_cu.bf16; }
extern "C" void vm_backend_cuda_set_fused_attention(int mode) {
    g_cu.fused_attention =
        mode == VM_ATTENTION_FUSED || mode == VM_ATTENTION_AUTO || mode == VM_ATTENTION_FLASH ? mode : VM_ATTENTION_CUBLAS;
}
extern "C" int vm_backend_cuda_fused_attention(void) { return g_cu.fused_attention; }
extern "C" void vm_backend_cuda_describe(char *buf, size_t cap) {
    if (!buf || !cap) return;
    const char *products = !g_cu.bf16 ? "fp32 products"
                           : g_cu.bf16_fast ? "bf16 products (cuBLAS FAST_16BF)" : "bf16 products (bf16 operand copies)";
    // the fused kernels serve the bf16 convert path and the bf16-activation ops (whatever the path)
    char mode[112], att[192];
    if (g_cu.fused_attention == VM_ATTENTION_AUTO)
        snprintf(mode, sizeof mode, "auto (flash where the shape allows; else fused forward, fused backward for T >= %d)",
                 FUSED_BACKWARD_MIN_T);
    else if (g_cu.fused_attention == VM_ATTENTION_FLASH)
        snprintf(mode, sizeof mode, "flash where the shape allows (else fused, else cuBLAS)");
    else
        snprintf(mode, sizeof mode, "%s",
                 g_cu.fused_attention == VM_ATTENTION_FUSED ? "fused where the shape allows" : "batched cuBLAS");
    if (convert_bf16() || g_cu.fused_attention == VM_ATTENTION_CUBLAS) snprintf(att, sizeof att, "%s", mode);
    else snprintf(att, sizeof att, "batched cuBLAS (with bf16 activations: %s)", mode);
    snprintf(buf, cap, "%s, attention %s, linear biases %s", products, att,
             g_use_lt ? "in the cuBLASLt epilogue" : "by a kernel");
}
extern "C" int vm_backend_cuda_device_name(char *buf, size_t cap) {
    if (!g_cu.ready) {
        if (buf && cap) snprintf(buf, cap, "none (CUDA backend not initialised)");
        return -1;
    }
    if (buf && cap) snprintf(buf, cap, "%s", g_cu.device_name);
    return 0;
}

extern "C" double vm_backend_cuda_gemm_tflops(int bf16, int n, int iters) {
    if (!g_cu.ready || n <= 0 || iters <= 0) return -1;
    const char *op = "gemm_tflops";
    size_t es = bf16 ? 2 : 4, nn = (size_t)n * n;
    void *a = NULL, *b = NULL;
    float *c = NULL;
    cudaEvent_t e0, e1;
    if (cudaMalloc(&a, nn * es) != cudaSuccess || cudaMalloc(&b, nn * es) != cudaSuccess ||
        cudaMalloc((void **)&c, nn * 4) != cudaSuccess) {
        cudaFree(a), cudaFree(b), cudaFree(c);
        (void)cudaGetLastError();
        return -1;
    }
    // Values do not change the speed of a GEMM much, but keep them finite and non-zero.
    if (bf16) {
        float *tmp = NULL;
        CUDA_CHECK(op, cudaMalloc((void **)&tmp, nn * 4));
        CUDA_CHECK(op, cudaMemsetAsync(tmp, 0x3c, nn * 4, g_cu.stream));  // 0x3c3c3c3c ~ 0.0115
        cuda_to_bf16((__nv_bfloat16 *)a, tmp, nn, op);
        cuda_to_bf16((__nv_bfloat16 *)b, tmp, nn, op);
        CUDA_CHECK(op, cudaStreamSynchronize(g_cu.stream));
        CUDA_CHECK(op, cudaFree(tmp));
    } else {
        CUDA_CHECK(op, cudaMemsetAsync(a, 0x3c, nn * 4, g_cu.stream));
        CUDA_CHECK(op, cudaMemsetAsync(b, 0x3c, nn * 4, g_cu.stream));
    }
    cudaDataType_t t = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    CUDA_CHECK(op, cudaEventCreate(&e0));
    CUDA_CHECK(op, cudaEventCreate(&e1));
    for (int i = 0; i < 3; i++) gemm_ex(op, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n, t);
    CUDA_CHECK(op, cudaEventRecord(e0, g_cu.stream));
    for (int i = 0; i < iters; i++) gemm_ex(op, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n, t);
    CUDA_CHECK(op, cudaEventRecord(e1, g_cu.stream));
    CUDA_CHECK(op, cudaEventSynchronize(e1));
    float ms = 0;
    CUDA_CHECK(op, cudaEventElapsedTime(&ms, e0, e1));
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    cudaFree(a), cudaFree(b), cudaFree(c);
    return ms > 0 ? 2.0 * n * (double)n * n * iters / (ms * 1e-3) / 1e12 : -1;
}

__global__ void probe_kernel(int *x) { *x = 42; }

// One-time set-up; returns 0 or -1 with a reason.
static int cuda_init(char *why, size_t cap) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(why, cap, "no usable CUDA device (no GPU, or no NVIDIA driver): %s", cudaGetErrorString(e));
        (void)cudaGetLastError();
        return -1;
    }
    if (n == 0) { snprintf(why, cap, "no CUDA device"); return -1; }
    // Device 0 of those visible (choose with CUDA_VISIBLE_DEVICES): the current device is per host
    // thread in CUDA, and device 0 is what every thread starts with.
    int dev = 0;
    cudaDeviceProp p;
    if ((e = cudaGetDeviceProperties(&p, dev)) != cudaSuccess || (e = cudaSetDevice(dev)) != cudaSuccess) {
        snprintf(why, cap, "device %d: %s", dev, cudaGetErrorString(e));
        return -1;
    }
    if (p.major < 8) {
        snprintf(why, cap, "%s is sm_%d%d: bf16 and this build need sm_80 or newer", p.name, p.major, p.minor);
        return -1;
    }
    g_cu.device = dev;
    if (const char *s = getenv("VICMAE_CUDA_BF16")) {
        if (!strcmp(s, "fast")) g_cu.bf16_fast = 1;
        else if (!strcmp(s, "convert")) g_cu.bf16_fast = 0;
        else { snprintf(why, cap, "VICMAE_CUDA_BF16=%s: use convert or fast", s); return -1; }
    }
    g_cu.fused_attention = VM_ATTENTION_AUTO;
    if (const char *s = getenv("VICMAE_CUDA_ATTENTION")) {
        if (!strcmp(s, "auto")) g_cu.fused_attention = VM_ATTENTION_AUTO;
        else if (!strcmp(s, "fused")) g_cu.fused_attention = VM_ATTENTION_FUSED;
        else if (!strcmp(s, "cublas")) g_cu.fused_attention = VM_ATTENTION_CUBLAS;
        else if (!strcmp(s, "flash")) g_cu.fused_attention = VM_ATTENTION_FLASH;
        else { snprintf(why, cap, "VICMAE_CUDA_ATTENTION=%s: use auto, fused, flash or cublas", s); return -1; }
    }
    g_cu.num_sms = p.multiProcessorCount;
    snprintf(g_cu.device_name, sizeof g_cu.device_name, "%.180s, sm_%d%d, %d SMs, %.0f GiB", p.name, p.major,
             p.minor, p.multiProcessorCount, p.totalGlobalMem / 1073741824.0);
    if ((e = cudaStreamCreateWithFlags(&g_cu.stream, cudaStreamNonBlocking)) != cudaSuccess) {
        snprintf(why, cap, "cudaStreamCreate: %s", cudaGetErrorString(e));
        return -1;
    }
    // The kernels are compiled for one architecture (GPU_ARCH) plus its PTX: an older device
    // fails here, with the reason, rather than in the first op.
    int *probe = NULL, host = 0;
    if ((e = cudaMalloc(&probe, sizeof(int))) == cudaSuccess) {
        probe_kernel<<<1, 1, 0, g_cu.stream>>>(probe);
        e = cudaGetLastError();
        if (e == cudaSuccess) e = cudaMemcpyAsync(&host, probe, sizeof(int), cudaMemcpyDeviceToHost, g_cu.stream);
        if (e == cudaSuccess) e = cudaStreamSynchronize(g_cu.stream);
        cudaFree(probe);
    }
    if (e != cudaSuccess || host != 42) {
        snprintf(why, cap, "%s: test kernel failed: %s (built for GPU_ARCH of the Makefile)", p.name,
                 cudaGetErrorString(e));
        return -1;
    }
    cublasStatus_t s = cublasCreate(&g_cu.blas);
    if (s != CUBLAS_STATUS_SUCCESS) { snprintf(why, cap, "cublasCreate: %s", cublas_status_name(s)); return -1; }
    // Default math: no TF32, so fp32 products are true fp32 (the parity tests rely on it).
    if ((s = cublasSetMathMode(g_cu.blas, CUBLAS_DEFAULT_MATH)) != CUBLAS_STATUS_SUCCESS ||
        (s = cublasSetStream(g_cu.blas, g_cu.stream)) != CUBLAS_STATUS_SUCCESS) {
        snprintf(why, cap, "cuBLAS set-up: %s", cublas_status_name(s));
        return -1;
    }
    if ((s = cublasLtCreate(&g_lt)) != CUBLAS_STATUS_SUCCESS) {
        snprintf(why, cap, "cublasLtCreate: %s", cublas_status_name(s));
        return -1;
    }
    g_use_lt = 1;
    if (const char *v = getenv("VICMAE_CUDA_LT")) g_use_lt = strcmp(v, "0") != 0;
    if ((e = cudaMalloc(&g_cu.blas_ws, CUBLAS_WS_BYTES)) != cudaSuccess) {
        snprintf(why, cap, "cuBLAS workspace: %s", cudaGetErrorString(e));
        return -1;
    }
    if ((s = cublasSetWorkspace(g_cu.blas, g_cu.blas_ws, CUBLAS_WS_BYTES)) != CUBLAS_STATUS_SUCCESS) {
        snprintf(why, cap, "cublasSetWorkspace: %s", cublas_status_name(s));
        return -1;
    }
    // Does this cuBLAS take CUBLAS_COMPUTE_32F_FAST_16BF for both product kinds we use?  If not, the
    // "fast" bf16 path is unavailable and bf16 always goes through our operand copies.
    {
        float *buf = NULL;
        const void **ptrs = NULL;
        g_cu.fast_ok = 0;
        if (cudaMalloc((void **)&buf, 3 * 64 * 64 * sizeof(float)) == cudaSuccess &&
            cudaMemset(buf, 0, 3 * 64 * 64 * sizeof(float)) == cudaSuccess &&
            cudaMalloc((void **)&ptrs, 3 * sizeof(void *)) == cudaSuccess) {
            const void *host[3] = {buf, buf + 4096, buf + 8192};
            float one = 1.0f, zero = 0.0f;
            g_cu.fast_ok =
                cudaMemcpy(ptrs, host, sizeof host, cudaMemcpyHostToDevice) == cudaSuccess &&
                cublasGemmEx(g_cu.blas, CUBLAS_OP_T, CUBLAS_OP_N, 64, 64, 64, &one, buf, CUDA_R_32F, 64, buf + 4096,
                             CUDA_R_32F, 64, &zero, buf + 8192, CUDA_R_32F, 64, CUBLAS_COMPUTE_32F_FAST_16BF,
                             CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS &&
                cublasGemmBatchedEx(g_cu.blas, CUBLAS_OP_N, CUBLAS_OP_N, 64, 64, 64, &one, ptrs, CUDA_R_32F, 64,
                                    ptrs + 1, CUDA_R_32F, 64, &zero, (void *const *)(ptrs + 2), CUDA_R_32F, 64, 1,
                                    CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS &&
                cudaStreamSynchronize(g_cu.stream) == cudaSuccess;
        }
        cudaFree(buf);
        cudaFree(ptrs);
        (void)cudaGetLastError();
        if (!g_cu.fast_ok) g_cu.bf16_fast = 0;
    }
    if ((e = cudaMallocHost((void **)&g_cu.host_scalar, 64)) != cudaSuccess) {
        snprintf(why, cap, "cudaMallocHost: %s", cudaGetErrorString(e));
        return -1;
    }
    cuda_ops.name = "cuda";
    cuda_ops.alloc = cu_alloc;
    cuda_ops.free = cu_free;
    cuda_ops.to_device = cu_to_device;
    cuda_ops.to_host = cu_to_host;
    cuda_ops.copy = cu_copy;
    cuda_ops.copy_rows = cu_copy_rows;
    cuda_ops.zero = cu_zero;
    cuda_ops.sync = cu_sync;
#define SET(name) cuda_ops.name = cu_##name;
    VM_CU_OPS(SET)
#undef SET
    g_cu.ready = 1;
    return 0;
}

extern "C" const vm_backend_ops *vm_backend_cuda(char *why, size_t why_cap) {
    static int tried;
    static char reason[512];
    if (!tried) {
        tried = 1;
        if (cuda_init(reason, sizeof reason) != 0) g_cu.ready = 0;
    }
    if (g_cu.ready) return &cuda_ops;
    if (why && why_cap) snprintf(why, why_cap, "%s", reason);
    return NULL;
}
