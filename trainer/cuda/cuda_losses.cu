// trainer/cuda/cuda_losses.cu — the losses (forward and gradient together), the sum of squares
// for gradient clipping and the fused AdamW update.  All in fp32 with double sums, whatever the
// precision of the matrix products; the scalar results are read back to the host (one small
// synchronising copy per call).
#include <stdlib.h>
#include <string.h>
#include "trainer/cuda/cuda_internal.cuh"

// ---- deterministic sum -----------------------------------------------------------------------------
#define REDUCE_BLOCKS 256
// partial[blockIdx] = sum over this block's grid-stride share of (squares ? x^2 : x)
__global__ void reduce_partial_kernel(double *partial, const float *x, size_t n, int squares) {
    double s = 0.0;
    GRID_STRIDE(i, n) { double v = x[i]; s += squares ? v * v : v; }
    s = block_sum_d(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}
__global__ void reduce_finish_kernel(float *out, const double *partial, int nparts, float scale) {
    double s = 0.0;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) s += partial[i];
    s = block_sum_d(s);
    if (threadIdx.x == 0) out[0] = (float)(s * scale);
}

// dev_out[0] = scale * sum (x or x^2).  Uses the workspace from *off.
static void reduce_sum(float *dev_out, const float *x, size_t n, int squares, float scale, size_t *off,
                       const char *op) {
    double *partial = (double *)cuda_ws(off, REDUCE_BLOCKS * sizeof(double), op);
    reduce_partial_kernel<<<REDUCE_BLOCKS, 512, 0, g_cu.stream>>>(partial, x, n, squares);
    LAUNCH_CHECK(op);
    reduce_finish_kernel<<<1, 256, 0, g_cu.stream>>>(dev_out, partial, REDUCE_BLOCKS, scale);
    LAUNCH_CHECK(op);
}

void cuda_reduce_sum(float *dev_out, const float *x, size_t n, int squares, float scale, const char *op) {
    size_t off = 0;
    reduce_sum(dev_out, x, n, squares, scale, &off, op);
}

void cu_sumsq(float *out, const float *x, size_t N) {
    const char *op = "sumsq";
    size_t off = 0;
    float *dev = (float *)cuda_ws(&off, sizeof(float), op);
    reduce_sum(dev, x, N, 1, 1.0f, &off, op);
    *out = cuda_read_scalar(dev, op);
}

// ---- AdamW -------------------------------------------------------------------------------------------
// torch.optim.AdamW's order of operations (as the CPU reference): param *= 1 - lr wd;
// m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; param -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps),
// with the bias corrections computed in double on the host.
struct adamw_step {  // the scalars of one step (bias corrections in double on the host)
    float beta1, beta2, eps, step_size, bc2_sqrt, grad_scale;
};

static adamw_step adamw_step_of(float lr, float beta1, float beta2, float eps, int t, float grad_scale) {
    double bc1 = 1.0 - pow((double)beta1, (double)t), bc2 = 1.0 - pow((double)beta2, (double)t);
    return adamw_step{beta1, beta2, eps, (float)((double)lr / bc1), (float)sqrt(bc2), grad_scale};
}

__device__ __forceinline__ void adamw_element(float *param, const float *grad, float *m, float *v, size_t i,
                                              const adamw_step &s, float decay) {
    float g = s.grad_scale == 1.0f ? grad[i] : grad[i] * s.grad_scale;
    float mi = m[i] * s.beta1 + g * (1.0f - s.beta1);
    float vi = v[i] * s.beta2 + g * g * (1.0f - s.beta2);
    m[i] = mi;
    v[i] = vi;
    param[i] = param[i] * decay - s.step_size * (mi / (sqrtf(vi) / s.bc2_sqrt + s.eps));
}

__global__ void adamw_kernel(float *param, const float *grad, float *m, float *v, size_t n, adamw_step s,
                             float decay) {
    GRID_STRIDE(i, n) adamw_element(param, grad, m, v, i, s, decay);
}

void cu_adamw(float *param, const float *grad, float *m, float *v, size_t N, float lr, float beta1, float beta2,
              float eps, float weight_decay, int t, float grad_scale) {
    if (!N) return;
    float decay = (float)(1.0 - (double)lr * weight_decay);
    adamw_kernel<<<grid_for(N, 256), 256, 0, g_cu.stream>>>(param, grad, m, v, N,
                                                            adamw_step_of(lr, beta1, beta2, eps, t, grad_scale), decay);
    LAUNCH_CHECK("adamw");
}

// ---- AdamW over many ranges in one kernel ------------------------------------------------------------
// Each block updates one chunk of ADAMW_CHUNK floats of one range, from a table of (range, start)
// built once per range table and kept on the device with the ranges (the model passes the same
// table every step).
#define ADAMW_CHUNK 4096
struct adamw_chunk {
    unsigned range;
    unsigned start;  // first float of the chunk within its range
};
static struct {
    vm_adamw_range *host;  // the table the device copies were made from
    int nranges, nchunks;
    vm_adamw_range *ranges;
    adamw_chunk *chunks;
} g_adamw;

__global__ void adamw_ranges_kernel(float *param, const float *grad, float *m, float *v,
                                    const vm_adamw_range *ranges, const adamw_chunk *chunks, adamw_step s,
                                    float decay) {
    adamw_chunk c = chunks[blockIdx.x];
    vm_adamw_range r = ranges[c.range];
    size_t end = min((size_t)c.start + ADAMW_CHUNK, r.n);
    float d = r.decay ? decay : 1.0f;
    for (size_t i = c.start + threadIdx.x; i < end; i += blockDim.x) adamw_element(param, grad, m, v, r.off + i, s, d);
}

// Device copies of the range table and its chunk table, rebuilt when the table differs.
static void adamw_upload(const vm_adamw_range *ranges, int nranges, const char *op) {
    if (g_adamw.host && g_adamw.nranges == nranges && !memcmp(g_adamw.host, ranges, nranges * sizeof *ranges)) return;
    size_t nchunks = 0;
    for (int i = 0; i < nranges; i++) {
        if (ranges[i].n > 0xffffffffu) cuda_fatal(op, "range", "a range of more than 2^32 floats");
        nchunks += (ranges[i].n + ADAMW_CHUNK - 1) / ADAMW_CHUNK;
    }
    adamw_chunk *chunks = (adamw_chunk *)malloc((nchunks ? nchunks : 1) * sizeof *chunks);
    vm_adamw_range *host = (vm_adamw_range *)malloc(nranges * sizeof *ranges);
    if (!chunks || !host) cuda_fatal(op, "malloc", "out of host memory");
    size_t k = 0;
    for (int i = 0; i < nranges; i++)
        for (size_t st = 0; st < ranges[i].n; st += ADAMW_CHUNK) chunks[k++] = adamw_chunk{(unsigned)i, (unsigned)st};
    memcpy(host, ranges, nranges * sizeof *ranges);
    CUDA_CHECK(op, cudaStreamSynchronize(g_cu.stream));  // the old tables may still be in use
    cudaFree(g_adamw.ranges), cudaFree(g_adamw.chunks), free(g_adamw.host);
    CUDA_CHECK(op, cudaMalloc((void **)&g_adamw.ranges, nranges * sizeof *ranges));
    CUDA_CHECK(op, cudaMalloc((void **)&g_adamw.chunks, (nchunks ? nchunks : 1) * sizeof *chunks));
    CUDA_CHECK(op, cudaMemcpy(g_adamw.ranges, ranges, nranges * sizeof *ranges, cudaMemcpyHostToDevice));
    CUDA_CHECK(op, cudaMemcpy(g_adamw.chunks, chunks, nchunks * sizeof *chunks, cudaMemcpyHostToDevice));
    free(chunks);
    g_adamw.host = host, g_adamw.nranges = nranges, g_adamw.nchunks = (int)nchunks;
}

void cu_adamw_ranges(float *param, const float *grad, float *m, float *v, const vm_adamw_range *ranges,
                     int nranges, float lr, float beta1, float beta2, float eps, float weight_decay, int t,
                     float grad_scale) {
    const char *op = "adamw_ranges";
    if (nranges <= 0) return;
    adamw_upload(ranges, nranges, op);
    if (!g_adamw.nchunks) return;
    float decay = (float)(1.0 - (double)lr * weight_decay);
    adamw_ranges_kernel<<<g_adamw.nchunks, 256, 0, g_cu.stream>>>(param, grad, m, v, g_adamw.ranges, g_adamw.chunks,
                                                                  adamw_step_of(lr, beta1, beta2, eps, t, grad_scale),
                                                                  decay);
    LAUNCH_CHECK(op);
}

// ---- MAE reconstruction loss ---------------------------------------------------------------------------
// One warp per patch row (b, l): normalise the target (norm_pix), rowloss = mask * mean_d (p - t)^2,
// dpred = dloss * mask * 2 (p - t) / (D * sum mask).  msum (device) = sum of mask, computed first.
__global__ void mae_loss_kernel(float *rowloss, float *dpred, const float *pred, const float *target,
                                const float *mask, const float *msum, int rows, int D, int norm_pix,
                                float dloss) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows) return;
    const float *p = pred + (size_t)row * D, *t = target + (size_t)row * D;
    float *dp = dpred + (size_t)row * D;
    float mu = 0.0f, inv = 1.0f;
    if (norm_pix) {
        float s = 0.0f;
        for (int i = lane; i < D; i += 32) s += t[i];
        mu = warp_sum(s) / D;
        float v = 0.0f;
        for (int i = lane; i < D; i += 32) { float d = t[i] - mu; v += d * d; }
        v = warp_sum(v) / (D > 1 ? D - 1 : 1);
        inv = 1.0f / sqrtf(v + 1e-6f);
    }
    float mk = mask[row];
    float denom = msum[0] > 0.0f ? msum[0] : 1.0f;
    float g = dloss * mk * 2.0f / ((float)D * denom);
    float l = 0.0f;
    for (int i = lane; i < D; i += 32) {
        float d = p[i] - (t[i] - mu) * inv;
        l += d * d;
        dp[i] = g * d;
    }
    l = warp_sum(l);
    if (lane == 0) rowloss[row] = mk * l / D;
}

__global__ void mae_loss_finish_kernel(float *loss, const float *lsum, const float *msum) {
    loss[0] = msum[0] > 0.0f ? lsum[0] / msum[0] : 0.0f;
}

void cu_mae_loss(float *loss, float *dpred, const float *pred, const float *target, const float *mask, int B,
                 int L, int D, int norm_pix, float dloss) {
    const char *op = "mae_loss";
    int rows = B * L;
    size_t off = 0;
    float *sc = (float *)cuda_ws(&off, 4 * sizeof(float), op);  // [0] msum [1] lsum [2] loss
    float *rowloss = (float *)cuda_ws(&off, (size_t)rows * sizeof(float), op);
    reduce_sum(sc + 0, mask, rows, 0, 1.0f, &off, op);
    mae_loss_kernel<<<ceil_div(rows, 8), 256, 0, g_cu.stream>>>(rowloss, dpred, pred, target, mask, sc, rows, D,
                                                                 norm_pix, dloss);
    LAUNCH_CHECK(op);
    reduce_sum(sc + 1, rowloss, rows, 0, 1.0f, &off, op);
    mae_loss_finish_kernel<<<1, 1, 0, g_cu.stream>>>(sc + 2, sc + 1, sc + 0);
    LAUNCH_CHECK(op);
    *loss = cuda_read_scalar(sc + 2, op);
}

// ---- row helpers for the contrastive losses ---------------------------------------------------------------
// u[r] = z[r] / max(||z[r]||, 1e-12) for the rows of [z1; z2] (2N, D); norm[r] = max(||z||, 1e-12).
__global__ void l2_normalize_rows_kernel(float *u, float *norm, const float *z1, const float *z2, int N, int D) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= 2 * N) return;
    const float *z = row < N ? z1 + (size_t)row * D : z2 + (size_t)(row - N) * D;
    float s = 0.0f;
    for (int i = lane; i < D; i += 32) s += z[i] * z[i];
    float nr = fmaxf(sqrtf(warp_sum(s)), 1e-12f);
    for (int i = lane; i < D; i += 32) u[(size_t)row * D + i] = z[i] / nr;
    if (lane == 0) norm[row] = nr;
}

// ---- InfoNCE / NT-Xent ------------------------------------------------------------------------------------
// S = U U^T / tau (M x M, M = 2N).  Row i: loss_i = logsumexp_{j != i} S_ij - S_i,p(i), p(i) = (i + N) % M.
// G_ij = dloss / M * (softmax_ij - [j = p(i)]), G_ii = 0, written over S.  One warp per row.
__global__ void infonce_rows_kernel(float *S, float *rowloss, int N, float dloss) {
    int M = 2 * N;
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= M) return;
    float *s = S + (size_t)row * M;
    int pos = (row + N) % M;
    float mx = -INFINITY;
    for (int j = lane; j < M; j += 32) if (j != row) mx = fmaxf(mx, s[j]);
    mx = warp_max(mx);
    float z = 0.0f;
    for (int j = lane; j < M; j += 32) if (j != row) z += expf(s[j] - mx);
    z = warp_sum(z);
    float spos = s[pos];
    __syncwarp();
    float k = dloss / M;
    for (int j = lane; j < M; j += 32) {
        float g = j == row ? 0.0f : expf(s[j] - mx) / z;
        if (j == pos) g -= 1.0f;
        s[j] = k * g;
    }
    if (lane == 0) rowloss[row] = logf(z) + mx - spos;
}
// H = (G + G^T) / tau (symmetric), into H (M x M)
__global__ void symmetrize_kernel(float *H, const float *G, int M, float inv_tau) {
    size_t n = (size_t)M * M;
    GRID_STRIDE(i, n) {
        size_t r = i / M, c = i % M;
        H[i] = (G[i] + G[c * M + r]) * inv_tau;
    }
}
// dz[r] = (dU[r] - u[r] (u[r] . dU[r])) / norm[r], rows of [dz1; dz2]
__global__ void l2_normalize_backward_kernel(float *dz1, float *dz2, const float *dU, const float *u,
                                             const float *norm, int N, int D) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= 2 * N) return;
    const float *g = dU + (size_t)row * D, *uu = u + (size_t)row * D;
    float s = 0.0f;
    for (int i = lane; i < D; i += 32) s += uu[i] * g[i];
    s = warp_sum(s);
    float *dz = row < N ? dz1 + (size_t)row * D : dz2 + (size_t)(row - N) * D;
    float inv = 1.0f / norm[row];
    for (int i = lane; i < D; i += 32) dz[i] = (g[i] - uu[i] * s) * inv;
}

void cu_infonce_loss(float *loss, float *dz1, float *dz2, const float *z1, const float *z2, int N, int D,
                     float temperature, float dloss) {
    const char *op = "infonce_loss";
    int M = 2 * N;
    size_t off = 0;
    float *u = (float *)cuda_ws(&off, (size_t)M * D * sizeof(float), op);
    float *nrm = (float *)cuda_ws(&off, (size_t)M * sizeof(float), op);
    float *S = (float *)cuda_ws(&off, (size_t)M * M * sizeof(float), op);
    float *H = (float *)cuda_ws(&off, (size_t)M * M * sizeof(float), op);
    float *dU = (float *)cuda_ws(&off, (size_t)M * D * sizeof(float), op);
    float *rowloss = (float *)cuda_ws(&off, (size_t)M * sizeof(float), op);
    float *sc = (float *)cuda_ws(&off, sizeof(float), op);
    l2_normalize_rows_kernel<<<ceil_div(M, 8), 256, 0, g_cu.stream>>>(u, nrm, z1, z2, N, D);
    LAUNCH_CHECK(op);
    // S (M x M) = U U^T / tau: column-major S^T = U_c^T U_c with U_c (D x M) ld D (S is symmetric)
    cuda_sgemm(op, CUBLAS_OP_T, CUBLAS_OP_N, M, M, D, 1.0f / temperature, u, D, u, D, 0.0f, S, M);
    infonce_rows_kernel<<<ceil_div(M, 8), 256, 0, g_cu.stream>>>(S, rowloss, N, dloss);
    LAUNCH_CHECK(op);
    symmetrize_kernel<<<grid_for((size_t)M * M, 256), 256, 0, g_cu.stream>>>(H, S, M, 1.0f / temperature);
    LAUNCH_CHECK(op);
    // dU (M, D) = H (M, M) @ U (M, D): column-major dU_c (D x M) = U_c (D x M) @ H_c (M x M; H symmetric)
    cuda_sgemm(op, CUBLAS_OP_N, CUBLAS_OP_N, D, M, M, 1.0f, u, D, H, M, 0.0f, dU, D);
    l2_normalize_backward_kernel<<<ceil_div(M, 8), 256, 0, g_cu.stream>>>(dz1, dz2, dU, u, nrm, N, D);
    LAUNCH_CHECK(op);
    reduce_sum(sc, rowloss, M, 0, 1.0f / M, &off, op);
    *loss = cuda_read_scalar(sc, op);
}

// ---- SimSiam ---------------------------------------------------------------------------------------------
// Row n: cos(p, z) as F.cosine_similarity (norms clamped at 1e-8) for the pairs (p1, z2) (rows
// 0..N-1) and (p2, z1) (rows N..2N-1); loss = -mean cos / 2 per pair;
// dp = -dloss / (2N) * (z / (|p||z|) - cos * p / |p|^2)  (first term only when |p| is clamped).
__global__ void simsiam_rows_kernel(float *rowloss, float *dp1, float *dp2, const float *p1, const float *p2,
                                    const float *z1, const float *z2, int N, int D, float dloss) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= 2 * N) return;
    int n = row % N;
    const float *p = (row < N ? p1 : p2) + (size_t)n * D, *z = (row < N ? z2 : z1) + (size_t)n * D;
    float *dp = (row < N ? dp1 : dp2) + (size_t)n * D;
    float pp = 0.0f, zz = 0.0f, pz = 0.0f;
    for (int i = lane; i < D; i += 32) { pp += p[i] * p[i]; zz += z[i] * z[i]; pz += p[i] * z[i]; }
    pp = warp_sum(pp); zz = warp_sum(zz); pz = warp_sum(pz);
    float np_ = sqrtf(pp), nz = fmaxf(sqrtf(zz), 1e-8f);
    int clamped = np_ < 1e-8f;
    if (clamped) np_ = 1e-8f;
    float cs = pz / (np_ * nz);
    float k = -dloss / (2.0f * N);
    for (int i = lane; i < D; i += 32)
        dp[i] = k * (z[i] / (np_ * nz) - (clamped ? 0.0f : cs * p[i] / (np_ * np_)));
    if (lane == 0) rowloss[row] = -cs;
}

void cu_simsiam_loss(float *loss, float *dp1, float *dp2, const float *p1, const float *p2, const float *z1,
                     const float *z2, int N, int D, float dloss) {
    const char *op = "simsiam_loss";
    size_t off = 0;
    float *rowloss = (float *)cuda_ws(&off, (size_t)2 * N * sizeof(float), op);
    float *sc = (float *)cuda_ws(&off, sizeof(float), op);
    simsiam_rows_kernel<<<ceil_div(2 * N, 8), 256, 0, g_cu.stream>>>(rowloss, dp1, dp2, p1, p2, z1, z2, N, D, dloss);
    LAUNCH_CHECK(op);
    reduce_sum(sc, rowloss, 2 * N, 0, 1.0f / (2.0f * N), &off, op);
    *loss = cuda_read_scalar(sc, op);
}

// ---- VICReg ----------------------------------------------------------------------------------------------
// Per column j of z (N, D): xc = z - mean_j; std_j = sqrt(var_j + 1e-4) (unbiased var);
// hinge_j = relu(1 - std_j).  One thread per column (N is a batch size).
__global__ void vicreg_columns_kernel(float *xc, float *stdv, float *hinge, const float *z, int N, int D) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= D) return;
    double s = 0.0;
    for (int n = 0; n < N; n++) s += z[(size_t)n * D + j];
    float m = (float)(s / N);
    double v = 0.0;
    for (int n = 0; n < N; n++) {
        float d = z[(size_t)n * D + j] - m;
        xc[(size_t)n * D + j] = d;
        v += (double)d * d;
    }
    float sd = sqrtf((float)(v / (N > 1 ? N - 1 : 1)) + 1e-4f);
    stdv[j] = sd;
    hinge[j] = fmaxf(1.0f - sd, 0.0f);
}
// Off-diagonal: sq = cov^2 (0 on the diagonal); cov is overwritten by G = 4 cov_off / (D (N-1)),
// the gradient factor of cov_loss with respect to xc (dxc = xc @ G).
__global__ void vicreg_cov_kernel(float *cov, float *sq, int D, int N) {
    size_t n = (size_t)D * D;
    float k = 4.0f / ((float)D * (N > 1 ? N - 1 : 1));
    GRID_STRIDE(i, n) {
        float c = cov[i];
        int diag = i / D == i % D;
        sq[i] = diag ? 0.0f : c * c;
        cov[i] = diag ? 0.0f : k * c;
    }
}
// dz1 = dloss * (w_sim * 2 (z1 - z2) / (N D) + w_var * std grad + w_cov * dxc1); same for z2 with sign.
__global__ void vicreg_grad_kernel(float *dz1, float *dz2, const float *z1, const float *z2, const float *xc1,
                                   const float *xc2, const float *std1, const float *std2, const float *dxc1,
                                   const float *dxc2, int N, int D, float w_sim, float w_var, float w_cov,
                                   float dloss) {
    size_t n = (size_t)N * D;
    float ksim = 2.0f / ((float)N * D);
    float nm1 = (float)(N > 1 ? N - 1 : 1);
    GRID_STRIDE(i, n) {
        int j = (int)(i % D);
        float d = ksim * (z1[i] - z2[i]);
        // d relu(1 - std)/D/2 = -1/(2D) where std < 1; d std / d xc = xc / ((N-1) std)
        float g1 = std1[j] < 1.0f ? -0.5f / D * xc1[i] / (nm1 * std1[j]) : 0.0f;
        float g2 = std2[j] < 1.0f ? -0.5f / D * xc2[i] / (nm1 * std2[j]) : 0.0f;
        if (dz1) dz1[i] = dloss * (w_sim * d + w_var * g1 + w_cov * dxc1[i]);
        if (dz2) dz2[i] = dloss * (-w_sim * d + w_var * g2 + w_cov * dxc2[i]);
    }
}
__global__ void vicreg_finish_kernel(float *out, const float *sc, float w_sim, float w_var, float w_cov) {
    // sc: [0] sum (z1-z2)^2/(N D) [1] mean hinge1 [2] mean hinge2 [3] cov1 [4] cov2
    float sim = sc[0], var = 0.5f * sc[1] + 0.5f * sc[2], cov = sc[3] + sc[4];
    out[0] = w_sim * sim + w_var * var + w_cov * cov;
    out[1] = sim;
    out[2] = var;
    out[3] = cov;
}
__global__ void sqdiff_kernel(float *out, const float *a, const float *b, size_t n) {
    GRID_STRIDE(i, n) { float d = a[i] - b[i]; out[i] = d * d; }
}

void cu_vicreg_loss(float *loss, float *terms, float *dz1, float *dz2, const float *z1, const float *z2, int N,
                    int D, float w_sim, float w_var, float w_cov, float dloss) {
    const char *op = "vicreg_loss";
    size_t off = 0, nd = (size_t)N * D, dd = (size_t)D * D;
    float *xc[2], *sd[2], *hinge[2], *cov[2], *dxc[2];
    for (int v = 0; v < 2; v++) {
        xc[v] = (float *)cuda_ws(&off, nd * sizeof(float), op);
        dxc[v] = (float *)cuda_ws(&off, nd * sizeof(float), op);
        sd[v] = (float *)cuda_ws(&off, D * sizeof(float), op);
        hinge[v] = (float *)cuda_ws(&off, D * sizeof(float), op);
        cov[v] = (float *)cuda_ws(&off, dd * sizeof(float), op);
    }
    float *sq = (float *)cuda_ws(&off, (dd > nd ? dd : nd) * sizeof(float), op);
    float *sc = (float *)cuda_ws(&off, 16 * sizeof(float), op);  // [0..4] sums, [8..11] results
    const float *z[2] = {z1, z2};
    sqdiff_kernel<<<grid_for(nd, 256), 256, 0, g_cu.stream>>>(sq, z1, z2, nd);
    LAUNCH_CHECK(op);
    reduce_sum(sc + 0, sq, nd, 0, 1.0f / (float)nd, &off, op);
    for (int v = 0; v < 2; v++) {
        vicreg_columns_kernel<<<ceil_div(D, 128), 128, 0, g_cu.stream>>>(xc[v], sd[v], hinge[v], z[v], N, D);
        LAUNCH_CHECK(op);
        reduce_sum(sc + 1 + v, hinge[v], D, 0, 1.0f / D, &off, op);
        // cov (D x D) = xc^T xc / (N-1): column-major xc_c (D x N) ld D; cov = xc_c xc_c^T
        cuda_sgemm(op, CUBLAS_OP_N, CUBLAS_OP_T, D, D, N, 1.0f / (N > 1 ? N - 1 : 1), xc[v], D, xc[v], D, 0.0f,
                   cov[v], D);
        vicreg_cov_kernel<<<grid_for(dd, 256), 256, 0, g_cu.stream>>>(cov[v], sq, D, N);
        LAUNCH_CHECK(op);
        reduce_sum(sc + 3 + v, sq, dd, 0, 1.0f / D, &off, op);
        // dxc (N, D) = xc (N, D) @ G (D, D): column-major dxc_c (D x N) = G (symmetric) @ xc_c
        cuda_sgemm(op, CUBLAS_OP_N, CUBLAS_OP_N, D, N, D, 1.0f, cov[v], D, xc[v], D, 0.0f, dxc[v], D);
    }
    vicreg_grad_kernel<<<grid_for(nd, 256), 256, 0, g_cu.stream>>>(dz1, dz2, z1, z2, xc[0], xc[1], sd[0], sd[1],
                                                                    dxc[0], dxc[1], N, D, w_sim, w_var, w_cov, dloss);
    LAUNCH_CHECK(op);
    vicreg_finish_kernel<<<1, 1, 0, g_cu.stream>>>(sc + 8, sc, w_sim, w_var, w_cov);
    LAUNCH_CHECK(op);
    CUDA_CHECK(op, cudaMemcpyAsync(g_cu.host_scalar, sc + 8, 4 * sizeof(float), cudaMemcpyDeviceToHost, g_cu.stream));
    CUDA_CHECK(op, cudaStreamSynchronize(g_cu.stream));
    *loss = g_cu.host_scalar[0];
    if (terms) for (int i = 0; i < 3; i++) terms[i] = g_cu.host_scalar[1 + i];
}
