// trainer/cuda/cuda_kernels.cu — the CUDA backend's own kernels for the input, normalisation,
// pointwise and token-plumbing ops.  Each kernel is named after its op (see trainer/backend.h for
// the semantics); sums that feed parameter gradients go through cuda_colsum, which adds in a
// fixed order, so a step gives the same bits every time.
#include "trainer/cuda/cuda_internal.cuh"

__global__ void colsum_finish_kernel(float *dst, const double *partial, int chunks, int cols, int accumulate) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    double s = accumulate ? (double)dst[c] : 0.0;
    double p = 0.0;
    for (int i = 0; i < chunks; i++) p += partial[(size_t)i * cols + c];
    dst[c] = (float)(s + p);
}

// ---- patchify -----------------------------------------------------------------------------------
struct Norm3 { float mean[3], inv_std[3], std[3]; };

__global__ void patchify_kernel(float *out, const uint8_t *img, int B, int H, int W, int P, int conv_order,
                                Norm3 nm) {
    int GW = W / P, L = (H / P) * GW, D = 3 * P * P;
    size_t total = (size_t)B * L * D;
    GRID_STRIDE(i, total) {
        int e = (int)(i % D);
        size_t bl = i / D;
        int l = (int)(bl % L), b = (int)(bl / L);
        int c, py, px;
        if (conv_order) { c = e / (P * P); py = (e / P) % P; px = e % P; }
        else { c = e % 3; px = (e / 3) % P; py = e / (3 * P); }
        int y = (l / GW) * P + py, x = (l % GW) * P + px;
        float v = img[(((size_t)b * H + y) * W + x) * 3 + c];
        out[i] = (v / 255.0f - nm.mean[c]) / nm.std[c];
    }
}

void cu_patchify(float *out, const uint8_t *img, int B, int H, int W, int P, int conv_order,
                 const float mean[3], const float std[3]) {
    Norm3 nm;
    for (int c = 0; c < 3; c++) nm.mean[c] = mean[c], nm.std[c] = std[c], nm.inv_std[c] = 1.0f / std[c];
    size_t total = (size_t)B * (H / P) * (W / P) * 3 * P * P;
    patchify_kernel<<<grid_for(total, 256), 256, 0, g_cu.stream>>>(out, img, B, H, W, P, conv_order, nm);
    LAUNCH_CHECK("patchify");
}

// ---- LayerNorm ------------------------------------------------------------------------------------
// One warp per row; two passes over the row (mean, then centred variance) as the CPU does.
// out fp32, or bf16 (layernorm_forward_bf16: the fp32 value rounded once).
template <typename TO>
__global__ void layernorm_forward_kernel(TO *out, float *mean, float *rstd, const float *inp,
                                         const float *w, const float *bias, int N, int C, float eps) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const float *x = inp + (size_t)row * C;
    float s = 0.0f;
    for (int i = lane; i < C; i += 32) s += x[i];
    float m = warp_sum(s) / C;
    float v = 0.0f;
    for (int i = lane; i < C; i += 32) { float d = x[i] - m; v += d * d; }
    float r = rsqrtf(warp_sum(v) / C + eps);
    TO *o = out + (size_t)row * C;
    for (int i = lane; i < C; i += 32) {
        float n = (x[i] - m) * r;
        store_as(o + i, n * (w ? w[i] : 1.0f) + (bias ? bias[i] : 0.0f));
    }
    if (lane == 0) { if (mean) mean[row] = m; if (rstd) rstd[row] = r; }
}

void cu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                          const float *bias, int N, int C, float eps) {
    layernorm_forward_kernel<<<ceil_div(N, 8), 256, 0, g_cu.stream>>>(out, mean, rstd, inp, weight, bias, N, C, eps);
    LAUNCH_CHECK("layernorm_forward");
}
void cu_layernorm_forward_bf16(vm_bf16 *out, float *mean, float *rstd, const float *inp, const float *weight,
                               const float *bias, int N, int C, float eps) {
    layernorm_forward_kernel<<<ceil_div(N, 8), 256, 0, g_cu.stream>>>(as_bf16(out), mean, rstd, inp, weight, bias, N,
                                                                       C, eps);
    LAUNCH_CHECK("layernorm_forward_bf16");
}

// dinp += rstd * (g - mean(g) - xhat * mean(g * xhat)),  g = dout * weight
__global__ void layernorm_backward_kernel(float *dinp, const float *dout, const float *inp, const float *w,
                                          const float *mean, const float *rstd, int N, int C) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const float *x = inp + (size_t)row * C, *g = dout + (size_t)row * C;
    float m = mean[row], r = rstd[row];
    float sg = 0.0f, sgx = 0.0f;
    for (int i = lane; i < C; i += 32) {
        float gi = g[i] * (w ? w[i] : 1.0f);
        sg += gi;
        sgx += gi * (x[i] - m) * r;
    }
    sg = warp_sum(sg) / C;
    sgx = warp_sum(sgx) / C;
    float *d = dinp + (size_t)row * C;
    for (int i = lane; i < C; i += 32) {
        float gi = g[i] * (w ? w[i] : 1.0f);
        d[i] += r * (gi - sg - (x[i] - m) * r * sgx);
    }
}

struct LnParamGrads {  // (dout * xhat, dout): the summands of dweight and dbias
    const float *dout, *inp, *mean, *rstd;
    int C;
    __device__ colsums<2> operator()(int r, int c) const {
        size_t i = (size_t)r * C + c;
        float g = dout[i];
        return colsums<2>{{g * (inp[i] - mean[r]) * rstd[r], g}};
    }
};
struct ColOfK {  // f(r, c) = x[r * ld + c]
    const float *x;
    size_t ld;
    __device__ float operator()(int r, int c) const { return x[(size_t)r * ld + c]; }
};

void cu_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                           const float *weight, const float *mean, const float *rstd, int N, int C) {
    const char *op = "layernorm_backward";
    size_t off = 0;
    if (dinp) {
        layernorm_backward_kernel<<<ceil_div(N, 8), 256, 0, g_cu.stream>>>(dinp, dout, inp, weight, mean, rstd, N, C);
        LAUNCH_CHECK(op);
    }
    // dweight and dbias (both required, as on the CPU) in one pass over dout
    float *const d[2] = {dweight, dbias};
    cuda_colsums<2>(d, 1, N, C, LnParamGrads{dout, inp, mean, rstd, C}, &off, op);
}

// ---- BatchNorm1d (batch statistics over N) -------------------------------------------------------
// One block of (32 columns x 8 row lanes); N is a batch size (hundreds), so each block reads its
// columns twice (mean, variance) and once more to write.
__global__ void batchnorm_forward_kernel(float *out, float *mean, float *rstd, float *rmean, float *rvar,
                                         const float *inp, const float *w, const float *bias, int N, int C,
                                         float eps, float momentum) {
    __shared__ double sh[8][33];
    __shared__ float stat[2][32];
    int c = blockIdx.x * 32 + threadIdx.x;
    double s = 0.0;
    if (c < C) for (int r = threadIdx.y; r < N; r += 8) s += inp[(size_t)r * C + c];
    sh[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0) {
        double t = 0.0;
        for (int i = 0; i < 8; i++) t += sh[i][threadIdx.x];
        stat[0][threadIdx.x] = (float)(t / N);
    }
    __syncthreads();
    float m = stat[0][threadIdx.x];
    double v = 0.0;
    if (c < C) for (int r = threadIdx.y; r < N; r += 8) { double d = inp[(size_t)r * C + c] - m; v += d * d; }
    __syncthreads();
    sh[threadIdx.y][threadIdx.x] = v;
    __syncthreads();
    if (threadIdx.y == 0) {
        double t = 0.0;
        for (int i = 0; i < 8; i++) t += sh[i][threadIdx.x];
        float var = (float)(t / N);
        float rs = 1.0f / sqrtf(var + eps);
        stat[1][threadIdx.x] = rs;
        if (c < C) {
            if (mean) mean[c] = m;
            if (rstd) rstd[c] = rs;
            float unbiased = N > 1 ? (float)(t / (N - 1)) : var;
            if (rmean) rmean[c] = (1.0f - momentum) * rmean[c] + momentum * m;
            if (rvar) rvar[c] = (1.0f - momentum) * rvar[c] + momentum * unbiased;
        }
    }
    __syncthreads();
    float rs = stat[1][threadIdx.x];
    if (c < C) {
        float ww = w ? w[c] : 1.0f, bb = bias ? bias[c] : 0.0f;
        for (int r = threadIdx.y; r < N; r += 8) {
            size_t i = (size_t)r * C + c;
            out[i] = (inp[i] - m) * rs * ww + bb;
        }
    }
}

void cu_batchnorm_forward(float *out, float *mean, float *rstd, float *running_mean, float *running_var,
                          const float *inp, const float *weight, const float *bias, int N, int C, float eps,
                          float momentum) {
    batchnorm_forward_kernel<<<ceil_div(C, 32), dim3(32, 8), 0, g_cu.stream>>>(
        out, mean, rstd, running_mean, running_var, inp, weight, bias, N, C, eps, momentum);
    LAUNCH_CHECK("batchnorm_forward");
}

// dinp = w * rstd * (g - mean(g) - xhat * mean(g * xhat)); dweight += sum g*xhat; dbias += sum g
__global__ void batchnorm_backward_kernel(float *dinp, float *dweight, float *dbias, const float *dout,
                                          const float *inp, const float *w, const float *mean,
                                          const float *rstd, int N, int C) {
    __shared__ double sh[2][8][33];
    __shared__ float stat[2][32];
    int c = blockIdx.x * 32 + threadIdx.x;
    float m = c < C ? mean[c] : 0.0f, rs = c < C ? rstd[c] : 0.0f;
    double sg = 0.0, sgx = 0.0;
    if (c < C)
        for (int r = threadIdx.y; r < N; r += 8) {
            size_t i = (size_t)r * C + c;
            float g = dout[i];
            sg += g;
            sgx += (double)g * ((inp[i] - m) * rs);
        }
    sh[0][threadIdx.y][threadIdx.x] = sg;
    sh[1][threadIdx.y][threadIdx.x] = sgx;
    __syncthreads();
    if (threadIdx.y == 0) {
        double a = 0.0, b = 0.0;
        for (int i = 0; i < 8; i++) a += sh[0][i][threadIdx.x], b += sh[1][i][threadIdx.x];
        stat[0][threadIdx.x] = (float)(a / N);
        stat[1][threadIdx.x] = (float)(b / N);
        if (c < C) {
            if (dbias) dbias[c] += (float)a;
            if (dweight) dweight[c] += (float)b;
        }
    }
    __syncthreads();
    if (c < C && dinp) {
        float mg = stat[0][threadIdx.x], mgx = stat[1][threadIdx.x], k = (w ? w[c] : 1.0f) * rs;
        for (int r = threadIdx.y; r < N; r += 8) {
            size_t i = (size_t)r * C + c;
            dinp[i] = k * (dout[i] - mg - (inp[i] - m) * rs * mgx);
        }
    }
}

void cu_batchnorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                           const float *weight, const float *mean, const float *rstd, int N, int C) {
    batchnorm_backward_kernel<<<ceil_div(C, 32), dim3(32, 8), 0, g_cu.stream>>>(
        dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
    LAUNCH_CHECK("batchnorm_backward");
}

// ---- pointwise -------------------------------------------------------------------------------------
#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT_2PI 0.39894228040143268f

// GELU and add are templated on the storage type of their activation input (and of the GELU
// output): float, or bf16 for the bf16-activation ops (read exactly, stored rounded once).  They
// are memory-bound: a thread takes 8 consecutive elements through 16-byte vectors (vec: every
// pointer aligned; one element per thread, the ViT-B/16 GELU forward took 2.27 ms a step on an
// H100, ~1.1 TB/s).
// (CHUNK_OF_8: element i and the count of the chunk a thread takes in a grid-stride loop over j)
#define CHUNK_OF_8(i, cnt, j, n)  \
    size_t i = 8 * (j);           \
    int cnt = (n) - i < 8 ? (int)((n) - i) : 8
__device__ __forceinline__ float gelu(float x) { return 0.5f * x * (1.0f + erff(x * INV_SQRT2)); }
__device__ __forceinline__ float gelu_grad(float x) {
    float cdf = 0.5f * (1.0f + erff(x * INV_SQRT2));
    float pdf = INV_SQRT_2PI * expf(-0.5f * x * x);
    return cdf + x * pdf;
}
template <typename TO, typename TI>
__global__ void gelu_forward_kernel(TO *out, const TI *inp, size_t n, bool vec) {
    GRID_STRIDE(j, (n + 7) / 8) {
        CHUNK_OF_8(i, cnt, j, n);
        float x[8];
        load_upto8(x, inp + i, cnt, vec);
        for (int k = 0; k < 8; k++) x[k] = gelu(x[k]);
        store_upto8(out + i, x, cnt, vec);
    }
}
// out = f(a, b) elementwise, 8 a thread as above: the GELU backward (a the GELU input) and add.
template <typename TA, typename TB, typename F>
__global__ void zip8_kernel(float *out, const TA *a, const TB *b, size_t n, bool vec, F f) {
    GRID_STRIDE(j, (n + 7) / 8) {
        CHUNK_OF_8(i, cnt, j, n);
        float x[8], y[8];
        load_upto8(x, a + i, cnt, vec);
        load_upto8(y, b + i, cnt, vec);
        for (int k = 0; k < 8; k++) x[k] = f(x[k], y[k]);
        store_upto8(out + i, x, cnt, vec);
    }
}
struct GeluBackward {  // (GELU input, dout) -> dinp
    __device__ float operator()(float x, float g) const { return g * gelu_grad(x); }
};
struct Add {
    __device__ float operator()(float x, float y) const { return x + y; }
};
__global__ void relu_forward_kernel(float *out, const float *inp, size_t n) {
    GRID_STRIDE(i, n) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}
__global__ void relu_backward_kernel(float *dinp, const float *inp, const float *dout, size_t n) {
    GRID_STRIDE(i, n) dinp[i] = inp[i] > 0.0f ? dout[i] : 0.0f;
}
__global__ void accumulate_kernel(float *dst, const float *src, size_t n) {
    GRID_STRIDE(i, n) dst[i] += src[i];
}
__global__ void scale_kernel(float *x, float s, size_t n) {
    GRID_STRIDE(i, n) x[i] *= s;
}
__global__ void add_rows_kernel(float *out, const float *inp, const float *pos, size_t n, size_t TC) {
    GRID_STRIDE(i, n) out[i] = inp[i] + pos[i % TC];
}

// Launch name_kernel over n elements for the op named opname (LAUNCH_1D: the op is name).
#define LAUNCH_1D_OP(name, opname, n, ...)                                                       \
    do {                                                                                         \
        if ((n) == 0) return;                                                                    \
        name##_kernel<<<grid_for((n), 256), 256, 0, g_cu.stream>>>(__VA_ARGS__);                  \
        LAUNCH_CHECK(opname);                                                                    \
    } while (0)
#define LAUNCH_1D(name, n, ...) LAUNCH_1D_OP(name, #name, n, __VA_ARGS__)

// The 8-per-thread pointwise kernels (GELU, add) over n elements.
#define LAUNCH_CHUNKS_OF_8(name, opname, n, ...)                                                  \
    do {                                                                                         \
        if ((n) == 0) return;                                                                    \
        name##_kernel<<<grid_for(((n) + 7) / 8, 256), 256, 0, g_cu.stream>>>(__VA_ARGS__);        \
        LAUNCH_CHECK(opname);                                                                    \
    } while (0)

void cu_gelu_forward(float *out, const float *inp, size_t N) {
    LAUNCH_CHUNKS_OF_8(gelu_forward, "gelu_forward", N, out, inp, N, aligned16(out, inp));
}
void cu_gelu_backward(float *dinp, const float *inp, const float *dout, size_t N) {
    LAUNCH_CHUNKS_OF_8(zip8, "gelu_backward", N, dinp, inp, dout, N, aligned16(dinp, inp, dout), GeluBackward{});
}
void cu_relu_forward(float *out, const float *inp, size_t N) { LAUNCH_1D(relu_forward, N, out, inp, N); }
void cu_relu_backward(float *dinp, const float *inp, const float *dout, size_t N) {
    LAUNCH_1D(relu_backward, N, dinp, inp, dout, N);
}
void cu_add(float *out, const float *a, const float *b, size_t N) {
    LAUNCH_CHUNKS_OF_8(zip8, "add", N, out, a, b, N, aligned16(out, a, b), Add{});
}
void cu_gelu_forward_bf16(vm_bf16 *out, const vm_bf16 *inp, size_t N) {
    LAUNCH_CHUNKS_OF_8(gelu_forward, "gelu_forward_bf16", N, as_bf16(out), as_bf16(inp), N, aligned16(out, inp));
}
void cu_gelu_backward_bf16(float *dinp, const vm_bf16 *inp, const float *dout, size_t N) {
    LAUNCH_CHUNKS_OF_8(zip8, "gelu_backward_bf16", N, dinp, as_bf16(inp), dout, N, aligned16(dinp, inp, dout),
                       GeluBackward{});
}
void cu_add_bf16(float *out, const float *a, const vm_bf16 *b, size_t N) {
    LAUNCH_CHUNKS_OF_8(zip8, "add_bf16", N, out, a, as_bf16(b), N, aligned16(out, a, b), Add{});
}
void cu_accumulate(float *dst, const float *src, size_t N) { LAUNCH_1D(accumulate, N, dst, src, N); }
void cu_scale(float *x, float s, size_t N) { LAUNCH_1D(scale, N, x, s, N); }
void cu_add_rows(float *out, const float *inp, const float *pos, int B, int T, int C) {
    size_t n = (size_t)B * T * C;
    LAUNCH_1D(add_rows, n, out, inp, pos, n, (size_t)T * C);
}
void cu_add_rows_backward(float *dpos, const float *dout, int B, int T, int C) {
    size_t off = 0;
    // dpos viewed as one row of T*C columns; dout as B rows of it.
    cuda_colsum(dpos, 1, B, T * C, ColOfK{dout, (size_t)T * C}, &off, "add_rows_backward");
}

// ---- token plumbing -------------------------------------------------------------------------------
__global__ void gather_tokens_kernel(float *out, const float *x, const float *cls, const int32_t *ids_keep,
                                     int B, int L, int K, int C) {
    size_t n = (size_t)B * (K + 1) * C;
    GRID_STRIDE(i, n) {
        int c = (int)(i % C);
        size_t bt = i / C;
        int t = (int)(bt % (K + 1)), b = (int)(bt / (K + 1));
        out[i] = t == 0 ? cls[c] : x[((size_t)b * L + ids_keep[(size_t)b * K + t - 1]) * C + c];
    }
}
void cu_gather_tokens(float *out, const float *x, const float *cls, const int32_t *ids_keep, int B, int L,
                      int K, int C) {
    size_t n = (size_t)B * (K + 1) * C;
    LAUNCH_1D(gather_tokens, n, out, x, cls, ids_keep, B, L, K, C);
}

// dx rows that are kept receive dout rows 1..K; the others are zero (written by a memset first).
__global__ void gather_tokens_backward_kernel(float *dx, const float *dout, const int32_t *ids_keep, int B,
                                              int L, int K, int C) {
    size_t n = (size_t)B * K * C;
    GRID_STRIDE(i, n) {
        int c = (int)(i % C);
        size_t bk = i / C;
        int k = (int)(bk % K), b = (int)(bk / K);
        dx[((size_t)b * L + ids_keep[(size_t)b * K + k]) * C + c] = dout[((size_t)b * (K + 1) + 1 + k) * C + c];
    }
}
void cu_gather_tokens_backward(float *dx, float *dcls, const float *dout, const int32_t *ids_keep, int B,
                               int L, int K, int C) {
    const char *op = "gather_tokens_backward";
    if (dx) {
        CUDA_CHECK(op, cudaMemsetAsync(dx, 0, (size_t)B * L * C * sizeof(float), g_cu.stream));
        size_t n = (size_t)B * K * C;
        if (n) {
            gather_tokens_backward_kernel<<<grid_for(n, 256), 256, 0, g_cu.stream>>>(dx, dout, ids_keep, B, L, K, C);
            LAUNCH_CHECK(op);
        }
    }
    size_t off = 0;
    if (dcls) cuda_colsum(dcls, 1, B, C, ColOfK{dout, (size_t)(K + 1) * C}, &off, op);
}

__global__ void unshuffle_tokens_kernel(float *out, const float *x, const float *mask_token,
                                        const int32_t *ids_restore, int B, int L, int K, int C) {
    size_t n = (size_t)B * (L + 1) * C;
    GRID_STRIDE(i, n) {
        int c = (int)(i % C);
        size_t bt = i / C;
        int t = (int)(bt % (L + 1)), b = (int)(bt / (L + 1));
        float v;
        if (t == 0) v = x[(size_t)b * (K + 1) * C + c];
        else {
            int k = ids_restore[(size_t)b * L + t - 1];
            v = k < K ? x[((size_t)b * (K + 1) + 1 + k) * C + c] : mask_token[c];
        }
        out[i] = v;
    }
}
void cu_unshuffle_tokens(float *out, const float *x, const float *mask_token, const int32_t *ids_restore,
                         int B, int L, int K, int C) {
    size_t n = (size_t)B * (L + 1) * C;
    LAUNCH_1D(unshuffle_tokens, n, out, x, mask_token, ids_restore, B, L, K, C);
}

// dx row 0 = dout row 0; dx row 1+k = dout row 1+l where ids_restore[b, l] = k < K.
__global__ void unshuffle_tokens_backward_kernel(float *dx, const float *dout, const int32_t *ids_restore,
                                                 int B, int L, int K, int C) {
    size_t n = (size_t)B * (L + 1) * C;
    GRID_STRIDE(i, n) {
        int c = (int)(i % C);
        size_t bt = i / C;
        int t = (int)(bt % (L + 1)), b = (int)(bt / (L + 1));
        if (t == 0) dx[(size_t)b * (K + 1) * C + c] = dout[i];
        else {
            int k = ids_restore[(size_t)b * L + t - 1];
            if (k < K) dx[((size_t)b * (K + 1) + 1 + k) * C + c] = dout[i];
        }
    }
}
struct MaskTokenGrad {  // rows r = b*L + l; dout row 1+l of sample b where the patch was masked
    const float *dout;
    const int32_t *ids_restore;
    int L, K, C;
    __device__ float operator()(int r, int c) const {
        int b = r / L, l = r % L;
        return ids_restore[r] >= K ? dout[((size_t)b * (L + 1) + 1 + l) * C + c] : 0.0f;
    }
};
void cu_unshuffle_tokens_backward(float *dx, float *dmask_token, const float *dout, const int32_t *ids_restore,
                                  int B, int L, int K, int C) {
    const char *op = "unshuffle_tokens_backward";
    size_t n = (size_t)B * (L + 1) * C;
    if (dx && n) {
        unshuffle_tokens_backward_kernel<<<grid_for(n, 256), 256, 0, g_cu.stream>>>(dx, dout, ids_restore, B, L, K, C);
        LAUNCH_CHECK(op);
    }
    size_t off = 0;
    if (dmask_token) cuda_colsum(dmask_token, 1, B * L, C, MaskTokenGrad{dout, ids_restore, L, K, C}, &off, op);
}

__global__ void drop_first_token_kernel(float *out, const float *inp, int B, int T, int C) {
    size_t n = (size_t)B * (T - 1) * C;
    GRID_STRIDE(i, n) {
        size_t row = i / C;  // b*(T-1) + t'
        size_t b = row / (T - 1), t = row % (T - 1) + 1;
        out[i] = inp[(b * T + t) * C + i % C];
    }
}
__global__ void drop_first_token_backward_kernel(float *dinp, const float *dout, int B, int T, int C) {
    size_t n = (size_t)B * T * C;
    GRID_STRIDE(i, n) {
        size_t row = i / C, b = row / T, t = row % T;
        dinp[i] = t == 0 ? 0.0f : dout[(b * (T - 1) + t - 1) * C + i % C];
    }
}
void cu_drop_first_token(float *out, const float *inp, int B, int T, int C) {
    size_t n = (size_t)B * (T - 1) * C;
    LAUNCH_1D(drop_first_token, n, out, inp, B, T, C);
}
void cu_drop_first_token_backward(float *dinp, const float *dout, int B, int T, int C) {
    size_t n = (size_t)B * T * C;
    LAUNCH_1D(drop_first_token_backward, n, dinp, dout, B, T, C);
}

// pool: out (B, C); T is small (~50), so one thread per (b, c) walks the rows.
__global__ void pool_forward_kernel(float *out, const float *inp, int B, int T, int C, int pool_cls) {
    size_t n = (size_t)B * C;
    GRID_STRIDE(i, n) {
        size_t b = i / C, c = i % C;
        const float *x = inp + b * T * C + c;
        if (pool_cls) { out[i] = x[0]; continue; }
        float s = 0.0f;
        for (int t = 1; t < T; t++) s += x[(size_t)t * C];
        out[i] = s / (T - 1);
    }
}
__global__ void pool_backward_kernel(float *dinp, const float *dout, int B, int T, int C, int pool_cls) {
    size_t n = (size_t)B * T * C;
    GRID_STRIDE(i, n) {
        size_t row = i / C, b = row / T, t = row % T, c = i % C;
        float g = dout[b * C + c];
        if (pool_cls) { if (t == 0) dinp[i] += g; }
        else if (t > 0) dinp[i] += g / (T - 1);
    }
}
void cu_pool_forward(float *out, const float *inp, int B, int T, int C, int pool_cls) {
    size_t n = (size_t)B * C;
    LAUNCH_1D(pool_forward, n, out, inp, B, T, C, pool_cls);
}
void cu_pool_backward(float *dinp, const float *dout, int B, int T, int C, int pool_cls) {
    size_t n = (size_t)B * T * C;
    LAUNCH_1D(pool_backward, n, dinp, dout, B, T, C, pool_cls);
}
