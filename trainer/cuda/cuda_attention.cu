// trainer/cuda/cuda_attention.cu — fused attention for the bf16 "convert" path: one thread block per
// (sample, head) keeps that head's Q, K, V (and dO) in shared memory as bf16 and does both products
// on tensor cores (WMMA 16x16x16, fp32 accumulation), with the softmax (forward) or its backward in
// fp32 in between.
//
// Why: the sequences are short (1 + 49 tokens in the encoder, 1 + 196 in the decoder), so the
// batched-GEMM path spends its time moving (B, NH, T, T) score matrices through memory (written in
// fp32 by one GEMM, read and rewritten by the softmax, converted, read again) rather than
// multiplying.  Here the scores of a 16-row query tile live in shared memory only; what reaches
// global memory is the op's contract: out, the fp32 probabilities att (saved for backward), dqkv.
//
// Numerics: exactly the rounding points of the cuBLAS convert path and of the cpu-bf16 reference —
// q, k, v, dout rounded to bf16; scores = scale * (q . k) in fp32; softmax and its backward in fp32
// from the fp32 scores / the saved fp32 att; the probabilities rounded to bf16 for att @ v and dV;
// dpre rounded to bf16 for dQ and dK.  Only the fp32 summation order differs.  The bf16-activation
// ops (attention_forward_bf16 / attention_backward_bf16) run the same kernels instantiated for a
// bf16 qkv, read as is, and (forward) a bf16 out, the fp32 staging value rounded once.
//
// Shapes taken: head size 16, 32, 64 or 128, T <= 256, and (backward) at most 32 (key tile, column
// tile) pairs per head, within the device's shared memory; anything else returns 0 and the caller
// uses the cuBLAS path.  In the default mode (auto) the backward runs fused only for T >= 128,
// where it measured faster; the forward wherever it is taken.
#include <mma.h>
#include "trainer/cuda/cuda_internal.cuh"
#include "trainer/cuda/cuda_backend.h"

using namespace nvcuda;

namespace {

constexpr int MAX_T = 256;       // longest sequence (a lane holds MAX_T / 32 scores of a row)
constexpr int FWD_WARPS = 4;     // forward: warps per block, each a 16-row query tile at a time
constexpr int BWD_WARPS = 8;     // backward: warps per block
constexpr int BWD_TILES = 4;     // backward: (key tile, column tile) accumulators of dK and dV per warp

typedef __nv_bfloat16 bf16;
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc_frag;
typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a_row;
typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::col_major> a_col;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> b_row;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b_col;

__host__ __device__ constexpr size_t align128(size_t n) { return (n + 127) / 128 * 128; }

// Layout of one block's shared memory.  Tp = T rounded up to 16 (padding rows and columns are
// zero, so they add nothing to any product).  ldh = hs + 8: row stride of the bf16 Q, K, V, dO
// copies (keeps every 16x16 tile 32-byte aligned, as WMMA loads need, and staggers the banks).
// ldf / ldb: row stride (floats) of a warp's 16 score rows in the forward / backward kernel; the
// bf16 rows that replace them (P in the forward; dS at bf16 column 0 and P at bf16 column ldb in
// the backward) alias the same bytes row by row, so a row is read whole before it is overwritten.
// ldf = 4 mod 32 and ldb = 16 mod 32 (ldb must stay a multiple of 16 so that P's tiles are
// 32-byte aligned): rows that start on the same bank would make every WMMA store and load of a
// tile a 16-way bank conflict.
struct layout {
    int Tp, ldh, ldf, ldb, ldo;
    size_t fwd, bwd;  // dynamic shared memory bytes of each kernel
};

__host__ __device__ layout layout_of(int T, int hs) {
    layout l;
    l.Tp = (T + 15) / 16 * 16;
    l.ldh = hs + 8;
    int w = (l.Tp > hs ? l.Tp : hs);  // a multiple of 16
    l.ldf = w + (w % 32 == 0 ? 4 : 20);
    l.ldb = w + (w % 32 == 0 ? 16 : 32);
    l.ldo = hs + 4;  // backward: a warp's fp32 staging rows for dQ, dK, dV tiles
    size_t heads = (size_t)l.Tp * l.ldh * sizeof(bf16);
    l.fwd = align128(2 * heads + (size_t)FWD_WARPS * 16 * l.ldh * sizeof(bf16)) +
            (size_t)FWD_WARPS * 16 * l.ldf * sizeof(float);
    l.bwd = align128(4 * heads) + (size_t)BWD_WARPS * 16 * l.ldb * sizeof(float) +
            (size_t)BWD_WARPS * 16 * l.ldo * sizeof(float);
    return l;
}

// Rows first..first+rows-1 of one head's slice of x (row stride ld elements of type TS: float, or
// bf16 for the bf16-activation ops, read exactly) into bf16 rows of stride ldh; rows at or past T
// are zero.  Threads tid of nthreads take part (a block or a warp).
// Each thread issues LOADS independent loads before it converts any: the loads are what a head's
// block waits on, so they must be in flight together rather than one latency each.
template <int HS, typename TS>
__device__ void load_rows(bf16 *dst, const TS *src, size_t ld, int first, int rows, int T, int ldh, int tid,
                          int nthreads) {
    constexpr int LOADS = 16;
    const int n = rows * HS;
    for (int i0 = tid; i0 < n; i0 += LOADS * nthreads) {
        float v[LOADS];
#pragma unroll
        for (int u = 0; u < LOADS; u++) {
            int i = i0 + u * nthreads, t = first + i / HS;
            v[u] = i < n && t < T ? to_float(__ldg(src + (size_t)t * ld + i % HS)) : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < LOADS; u++) {
            int i = i0 + u * nthreads;
            if (i < n) dst[(i / HS) * ldh + i % HS] = __float2bfloat16_rn(v[u]);
        }
    }
}

// The two tensor-core products of a warp's 16-row tile, shared by both kernels (bf16 operands in
// shared memory, fp32 accumulation).
// S (16, 16 * ntiles; row stride lds) = A (16, HS) @ B^T, B's 16 * ntiles rows of HS (stride ldh):
// the scores Q K^T of a query tile, or dP = dO V^T.
template <int HS>
__device__ __forceinline__ void tile_times_rows_t(float *S, int lds, const bf16 *A, const bf16 *B, int ldh,
                                                  int ntiles) {
    a_row a[HS / 16];
#pragma unroll
    for (int kk = 0; kk < HS / 16; kk++) wmma::load_matrix_sync(a[kk], A + kk * 16, ldh);
    for (int j = 0; j < ntiles; j++) {
        acc_frag s;
        wmma::fill_fragment(s, 0.0f);
#pragma unroll
        for (int kk = 0; kk < HS / 16; kk++) {
            b_col b;
            wmma::load_matrix_sync(b, B + j * 16 * ldh + kk * 16, ldh);
            wmma::mma_sync(s, a[kk], b, s);
        }
        wmma::store_matrix_sync(S + j * 16, s, lds, wmma::mem_row_major);
    }
}

// o (16, 16) = P (16, 16 * ntiles; row stride ldp) @ the 16 columns of B's 16 * ntiles rows that
// start at B (row stride ldh): one column tile of P V, or of dQ = dS K.
__device__ __forceinline__ void tile_times_cols(acc_frag &o, const bf16 *P, int ldp, const bf16 *B, int ldh, int ntiles) {
    wmma::fill_fragment(o, 0.0f);
    for (int kk = 0; kk < ntiles; kk++) {
        a_row pa;
        b_row b;
        wmma::load_matrix_sync(pa, P + kk * 16, ldp);
        wmma::load_matrix_sync(b, B + kk * 16 * ldh, ldh);
        wmma::mma_sync(o, pa, b, o);
    }
}

// out (B, T, C), att (B, NH, T, T) from qkv (B, T, 3C).  Grid: B * NH blocks of FWD_WARPS warps.
// TA: the type of qkv and out, float or bf16 (out rounded once from the fp32 staging).
template <int HS, typename TA>
__global__ void __launch_bounds__(FWD_WARPS * 32)
attention_fused_forward_kernel(TA *out, float *att, const TA *qkv, int T, int C, int NH, float scale) {
    extern __shared__ __align__(128) unsigned char smem[];
    const layout l = layout_of(T, HS);
    const int bh = blockIdx.x, b = bh / NH, h = bh % NH, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int ntiles = l.Tp / 16, ldP = 2 * l.ldf;
    bf16 *Ks = (bf16 *)smem, *Vs = Ks + l.Tp * l.ldh, *Qs = Vs + l.Tp * l.ldh + warp * 16 * l.ldh;
    float *Sw = (float *)(smem + align128((size_t)(2 * l.Tp + FWD_WARPS * 16) * l.ldh * sizeof(bf16))) +
                (size_t)warp * 16 * l.ldf;
    bf16 *Pw = (bf16 *)Sw;  // row r of P over the first half of score row r
    const size_t ld = 3 * (size_t)C;
    const TA *head = qkv + (size_t)b * T * ld + (size_t)h * HS;
    load_rows<HS>(Ks, head + C, ld, 0, l.Tp, T, l.ldh, threadIdx.x, blockDim.x);
    load_rows<HS>(Vs, head + 2 * C, ld, 0, l.Tp, T, l.ldh, threadIdx.x, blockDim.x);
    __syncthreads();
    float *att_bh = att + (size_t)bh * T * T;

    for (int qt = warp; qt < ntiles; qt += FWD_WARPS) {
        load_rows<HS>(Qs, head, ld, qt * 16, 16, T, l.ldh, lane, 32);
        __syncwarp();
        tile_times_rows_t<HS>(Sw, l.ldf, Qs, Ks, l.ldh, ntiles);  // S (16, Tp) = Q_tile (16, hs) @ K^T
        __syncwarp();
        // softmax per row, in fp32: att (global) and P (bf16, over the row's own bytes).  Two rows
        // at a time, so that their reductions overlap; a padding row (t >= T) gets P = 0.
        for (int r0 = 0; r0 < 16; r0 += 2) {
            float x[2][MAX_T / 32], inv[2];
#pragma unroll
            for (int k = 0; k < 2; k++) {
                const bool row = qt * 16 + r0 + k < T;
                float mx = -INFINITY, sum = 0.0f;
#pragma unroll
                for (int i = 0; i < MAX_T / 32; i++) {
                    int c = lane + 32 * i;
                    x[k][i] = row && c < T ? Sw[(r0 + k) * l.ldf + c] * scale : -INFINITY;
                    mx = fmaxf(mx, x[k][i]);
                }
                mx = warp_max(mx);
#pragma unroll
                for (int i = 0; i < MAX_T / 32; i++) {
                    x[k][i] = row && lane + 32 * i < T ? expf(x[k][i] - mx) : 0.0f;
                    sum += x[k][i];
                }
                sum = warp_sum(sum);
                inv[k] = row ? 1.0f / sum : 0.0f;
            }
            __syncwarp();  // both rows are read whole before P overwrites them
#pragma unroll
            for (int k = 0; k < 2; k++) {
                const int t = qt * 16 + r0 + k;
#pragma unroll
                for (int i = 0; i < MAX_T / 32; i++) {
                    int c = lane + 32 * i;
                    if (c >= l.Tp) continue;
                    float p = x[k][i] * inv[k];
                    Pw[(r0 + k) * ldP + c] = __float2bfloat16_rn(p);
                    if (t < T && c < T) att_bh[(size_t)t * T + c] = p;
                }
            }
        }
        __syncwarp();
        // O_tile (16, hs) = P (16, Tp) @ V (Tp, hs)
        acc_frag o[HS / 16];
#pragma unroll
        for (int cc = 0; cc < HS / 16; cc++) tile_times_cols(o[cc], Pw, ldP, Vs + cc * 16, l.ldh, ntiles);
        __syncwarp();  // P is read: its rows become the staging of O
#pragma unroll
        for (int cc = 0; cc < HS / 16; cc++) wmma::store_matrix_sync(Sw + cc * 16, o[cc], l.ldf, wmma::mem_row_major);
        __syncwarp();
        for (int i = lane; i < 16 * HS; i += 32) {
            int r = i / HS, d = i % HS, t = qt * 16 + r;
            if (t < T) store_as(out + ((size_t)b * T + t) * C + (size_t)h * HS + d, Sw[r * l.ldf + d]);
        }
        __syncwarp();
    }
}

// Rows t < T of a warp's 16x(16*ncols) fp32 staging (stride ldo) to dst rows first.. (stride ld).
__device__ void store_rows(float *dst, size_t ld, const float *stage, int ldo, int first, int T, int cols, int lane) {
    for (int i = lane; i < 16 * cols; i += 32) {
        int r = i / cols, d = i % cols, t = first + r;
        if (t < T) dst[(size_t)t * ld + d] = stage[r * ldo + d];
    }
}

// The saved probabilities of rows first and first + 1 (columns lane, lane + 32, ...; zero past T).
__device__ __forceinline__ void load_att_pair(float (&a)[2][MAX_T / 32], const float *att_bh, int first, int T,
                                              int lane) {
#pragma unroll
    for (int k = 0; k < 2; k++)
#pragma unroll
        for (int i = 0; i < MAX_T / 32; i++) {
            int t = first + k, c = lane + 32 * i;
            a[k][i] = t < T && c < T ? __ldg(att_bh + (size_t)t * T + c) : 0.0f;
        }
}

// dqkv (B, T, 3C) = from dout (B, T, C), qkv and the saved att.  Grid: B * NH blocks of BWD_WARPS
// warps.  Query tiles are taken BWD_WARPS at a time (a round): each warp makes its tile's dP, then
// dS and P (bf16, in its score rows) and dQ; after a block barrier every warp adds the round's
// contribution to the dK and dV tiles it owns (accumulators kept in registers across rounds).
// TA: the type of qkv, float or bf16 (dout and dqkv are fp32 either way).
template <int HS, typename TA>
__global__ void __launch_bounds__(BWD_WARPS * 32)
attention_fused_backward_kernel(float *dqkv, const float *dout, const TA *qkv, const float *att, int T, int C,
                                int NH, float scale) {
    extern __shared__ __align__(128) unsigned char smem[];
    constexpr int NC = HS / 16;
    const layout l = layout_of(T, HS);
    const int bh = blockIdx.x, b = bh / NH, h = bh % NH, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int ntiles = l.Tp / 16, ld16 = 2 * l.ldb, nkv = ntiles * NC;
    bf16 *Qs = (bf16 *)smem, *Ks = Qs + l.Tp * l.ldh, *Vs = Ks + l.Tp * l.ldh, *dOs = Vs + l.Tp * l.ldh;
    float *S0 = (float *)(smem + align128((size_t)4 * l.Tp * l.ldh * sizeof(bf16)));
    float *Sw = S0 + (size_t)warp * 16 * l.ldb;
    float *stage = S0 + (size_t)BWD_WARPS * 16 * l.ldb + (size_t)warp * 16 * l.ldo;
    const size_t ld = 3 * (size_t)C;
    const TA *head = qkv + (size_t)b * T * ld + (size_t)h * HS;
    float *dhead = dqkv + (size_t)b * T * ld + (size_t)h * HS;
    load_rows<HS>(Qs, head, ld, 0, l.Tp, T, l.ldh, threadIdx.x, blockDim.x);
    load_rows<HS>(Ks, head + C, ld, 0, l.Tp, T, l.ldh, threadIdx.x, blockDim.x);
    load_rows<HS>(Vs, head + 2 * C, ld, 0, l.Tp, T, l.ldh, threadIdx.x, blockDim.x);
    load_rows<HS>(dOs, dout + (size_t)b * T * C + (size_t)h * HS, C, 0, l.Tp, T, l.ldh, threadIdx.x, blockDim.x);
    __syncthreads();
    const float *att_bh = att + (size_t)bh * T * T;
    acc_frag dk[BWD_TILES], dv[BWD_TILES];
#pragma unroll
    for (int u = 0; u < BWD_TILES; u++) wmma::fill_fragment(dk[u], 0.0f), wmma::fill_fragment(dv[u], 0.0f);

    for (int round = 0; round * BWD_WARPS < ntiles; round++) {
        const int qt = round * BWD_WARPS + warp;
        if (qt < ntiles) {
            bf16 *S16 = (bf16 *)Sw;  // row r: dS at bf16 columns [0, Tp), P at [ldb, ldb + Tp)
            // The att rows of the first two query rows are in flight while dP is made; from then on
            // the next pair's loads overlap the current pair's arithmetic.
            float an[2][MAX_T / 32];
            load_att_pair(an, att_bh, qt * 16, T, lane);
            // dP (16, Tp) = dO_tile (16, hs) @ V^T
            tile_times_rows_t<HS>(Sw, l.ldb, dOs + qt * 16 * l.ldh, Vs, l.ldh, ntiles);
            __syncwarp();
            // softmax backward per row: dS = att * (dP - sum(att * dP)) * scale, two rows at a time.
            // Padding rows and columns get dS = P = 0.
            for (int r0 = 0; r0 < 16; r0 += 2) {
                float a[2][MAX_T / 32], g[2][MAX_T / 32], dot[2];
#pragma unroll
                for (int k = 0; k < 2; k++)
#pragma unroll
                    for (int i = 0; i < MAX_T / 32; i++) a[k][i] = an[k][i];
                if (r0 + 2 < 16) load_att_pair(an, att_bh, qt * 16 + r0 + 2, T, lane);
#pragma unroll
                for (int k = 0; k < 2; k++) {
                    const int t = qt * 16 + r0 + k;
#pragma unroll
                    for (int i = 0; i < MAX_T / 32; i++) {
                        int c = lane + 32 * i;
                        g[k][i] = t < T && c < T ? Sw[(r0 + k) * l.ldb + c] : 0.0f;
                    }
                }
#pragma unroll
                for (int k = 0; k < 2; k++) {
                    float d = 0.0f;
#pragma unroll
                    for (int i = 0; i < MAX_T / 32; i++) d += a[k][i] * g[k][i];
                    dot[k] = warp_sum(d);
                }
                __syncwarp();  // both rows are read whole before dS and P overwrite them
#pragma unroll
                for (int k = 0; k < 2; k++)
#pragma unroll
                    for (int i = 0; i < MAX_T / 32; i++) {
                        int c = lane + 32 * i;
                        if (c >= l.Tp) continue;
                        S16[(r0 + k) * ld16 + c] = __float2bfloat16_rn(a[k][i] * (g[k][i] - dot[k]) * scale);
                        S16[(r0 + k) * ld16 + l.ldb + c] = __float2bfloat16_rn(a[k][i]);
                    }
            }
            __syncwarp();
            // dQ_tile (16, hs) = dS (16, Tp) @ K (Tp, hs)
#pragma unroll
            for (int cc = 0; cc < NC; cc++) {
                acc_frag q;
                tile_times_cols(q, S16, ld16, Ks + cc * 16, l.ldh, ntiles);
                wmma::store_matrix_sync(stage + cc * 16, q, l.ldo, wmma::mem_row_major);
            }
            __syncwarp();
            store_rows(dhead, ld, stage, l.ldo, qt * 16, T, HS, lane);
            __syncwarp();
        }
        __syncthreads();  // dS and P of every tile of the round are in shared memory
        const int nq = min(BWD_WARPS, ntiles - round * BWD_WARPS);
#pragma unroll
        for (int u = 0; u < BWD_TILES; u++) {
            int tile = warp + u * BWD_WARPS;
            if (tile >= nkv) continue;
            int j = tile / NC, cc = tile % NC;
            for (int w = 0; w < nq; w++) {
                const bf16 *S16w = (const bf16 *)(S0 + (size_t)w * 16 * l.ldb);
                int qrow = (round * BWD_WARPS + w) * 16;
                // dV_j += P^T (keys j, the tile's queries) @ dO_tile;  dK_j += dS^T @ Q_tile
                a_col pa, sa;
                b_row gb, qb;
                wmma::load_matrix_sync(pa, S16w + l.ldb + j * 16, ld16);
                wmma::load_matrix_sync(sa, S16w + j * 16, ld16);
                wmma::load_matrix_sync(gb, dOs + qrow * l.ldh + cc * 16, l.ldh);
                wmma::load_matrix_sync(qb, Qs + qrow * l.ldh + cc * 16, l.ldh);
                wmma::mma_sync(dv[u], pa, gb, dv[u]);
                wmma::mma_sync(dk[u], sa, qb, dk[u]);
            }
        }
        __syncthreads();  // the next round overwrites the score rows
    }
#pragma unroll
    for (int u = 0; u < BWD_TILES; u++) {
        int tile = warp + u * BWD_WARPS;
        if (tile >= nkv) continue;
        int j = tile / NC, cc = tile % NC;
        wmma::store_matrix_sync(stage, dk[u], l.ldo, wmma::mem_row_major);
        __syncwarp();
        store_rows(dhead + C + cc * 16, ld, stage, l.ldo, j * 16, T, 16, lane);
        __syncwarp();
        wmma::store_matrix_sync(stage, dv[u], l.ldo, wmma::mem_row_major);
        __syncwarp();
        store_rows(dhead + 2 * C + cc * 16, ld, stage, l.ldo, j * 16, T, 16, lane);
        __syncwarp();
    }
}

}  // namespace

extern "C" int vm_backend_cuda_fused_attention_takes(int T, int C, int NH, int backward) {
    if (!g_cu.ready || T < 1 || T > MAX_T || NH < 1 || C % NH) return 0;
    int hs = C / NH;
    if (hs != 16 && hs != 32 && hs != 64 && hs != 128) return 0;
    layout l = layout_of(T, hs);
    if (!backward) return l.fwd <= (size_t)cuda_smem_optin();
    return (l.Tp / 16) * (hs / 16) <= BWD_WARPS * BWD_TILES && l.bwd <= (size_t)cuda_smem_optin();
}

// KERNEL<hs, TA> for the head size hs, TA the element type of qkv.
#define FUSED_DISPATCH(KERNEL, TA, SMEM, WARPS, ...)                                                   \
    switch (hs) {                                                                                     \
    case 16: cuda_allow_smem((const void *)KERNEL<16, TA>, SMEM, op); KERNEL<16, TA><<<B * NH, WARPS * 32, SMEM, g_cu.stream>>>(__VA_ARGS__); break; \
    case 32: cuda_allow_smem((const void *)KERNEL<32, TA>, SMEM, op); KERNEL<32, TA><<<B * NH, WARPS * 32, SMEM, g_cu.stream>>>(__VA_ARGS__); break; \
    case 64: cuda_allow_smem((const void *)KERNEL<64, TA>, SMEM, op); KERNEL<64, TA><<<B * NH, WARPS * 32, SMEM, g_cu.stream>>>(__VA_ARGS__); break; \
    default: cuda_allow_smem((const void *)KERNEL<128, TA>, SMEM, op); KERNEL<128, TA><<<B * NH, WARPS * 32, SMEM, g_cu.stream>>>(__VA_ARGS__); break; \
    }

namespace {
template <typename TA>
int fused_forward(TA *out, float *att, const TA *qkv, int B, int T, int C, int NH, const char *op) {
    if (!g_cu.fused_attention || !vm_backend_cuda_fused_attention_takes(T, C, NH, 0)) return 0;
    int hs = C / NH;
    size_t smem = layout_of(T, hs).fwd;
    float scale = 1.0f / sqrtf((float)hs);
    FUSED_DISPATCH(attention_fused_forward_kernel, TA, smem, FWD_WARPS, out, att, qkv, T, C, NH, scale)
    LAUNCH_CHECK(op);
    return 1;
}

template <typename TA>
int fused_backward(float *dqkv, const float *dout, const TA *qkv, const float *att, int B, int T, int C, int NH,
                   const char *op) {
    if (!g_cu.fused_attention || !vm_backend_cuda_fused_attention_takes(T, C, NH, 1)) return 0;
    // auto: the fused backward pays for long sequences only.  Measured on an H100 at 64 pairs
    // (gpu_bench --attention-alone): decoder T = 197, 0.91 ms fused vs 1.40 ms cuBLAS; encoder
    // T = 50, 0.28 ms fused vs 0.19 ms cuBLAS (half its warps idle with 4 query tiles of 16).
    if (g_cu.fused_attention == VM_ATTENTION_AUTO && T < FUSED_BACKWARD_MIN_T) return 0;
    int hs = C / NH;
    size_t smem = layout_of(T, hs).bwd;
    float scale = 1.0f / sqrtf((float)hs);
    FUSED_DISPATCH(attention_fused_backward_kernel, TA, smem, BWD_WARPS, dqkv, dout, qkv, att, T, C, NH, scale)
    LAUNCH_CHECK(op);
    return 1;
}
}  // namespace

int cuda_attention_fused_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH, const char *op) {
    return fused_forward(out, att, qkv, B, T, C, NH, op);
}
int cuda_attention_fused_forward(bf16 *out, float *att, const bf16 *qkv, int B, int T, int C, int NH, const char *op) {
    return fused_forward(out, att, qkv, B, T, C, NH, op);
}
int cuda_attention_fused_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int B, int T,
                                  int C, int NH, const char *op) {
    return fused_backward(dqkv, dout, qkv, att, B, T, C, NH, op);
}
int cuda_attention_fused_backward(float *dqkv, const float *dout, const bf16 *qkv, const float *att, int B, int T,
                                  int C, int NH, const char *op) {
    return fused_backward(dqkv, dout, qkv, att, B, T, C, NH, op);
}
