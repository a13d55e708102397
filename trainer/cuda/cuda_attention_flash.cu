// trainer/cuda/cuda_attention_flash.cu — "flash" attention for the bf16 convert path and the
// bf16-activation ops (VM_ATTENTION_FLASH): FlashAttention-2 style, register resident.  The two
// products are mma.sync.m16n8k16 (bf16 operands, fp32 accumulation) issued through inline PTX, whose
// fragment layouts are specified (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point
// type"), so the softmax runs on the score accumulators in registers and the probabilities become
// the A fragments of P @ V without passing through memory (cuda_attention.cu's WMMA fragments are
// opaque, which is why that kernel stages every score row in shared memory).
//
// Forward: one block per (sample, head, group of FWD_WARPS query tiles of 16 rows).  K and V^T of
// the head and the group's Q rows are loaded once into shared memory as bf16; each warp computes
// the whole score row block of its tile (16 x Tp, Tp = T rounded up to 16: at most 128 fp32 per
// lane), the row max, exp and sum (no online rescaling: a row fits), then P @ V.  No (T, T) matrix
// reaches global memory: what the forward saves for the backward is the per-row softmax statistics,
// (row max, 1 / row sum) as two floats per query row in the first B*NH*T*2 floats of the op's att
// buffer (B, NH, T, T) — the model treats att as opaque, but att no longer holds probabilities in
// this mode, so forward and backward must both run flash (they do: one predicate, takes(T, C, NH)).
//
// Backward: one block per (sample, head); Q, K, V, dO of the head in shared memory (bf16, row major,
// plus transposed copies of Q, K, dO for the B operands of dK, dQ, dV).  Phase 1, warps own query
// tiles: S and dP = dO V^T recomputed 16 keys at a time; P from S and the saved statistics, bit for
// bit the forward's; pass 1 sums rowsum(P * dP) in fp32, pass 2 recomputes S and dP and makes
// dS = P (dP - rowsum) scale, rounded to bf16 straight into the A fragments of dQ = dS K.  The row
// sums go to shared memory; after a block barrier, phase 2, warps own key tiles: S^T = K Q^T and
// dP^T = V dO^T per 16 queries, P^T and dS^T from the same statistics and row sums, into the A
// fragments of dV = P^T dO and dK = dS^T Q.  Every output element is summed by one warp in a fixed
// order: no atomics, bit-for-bit deterministic.
//
// Numerics: the rounding points of the convert path, the fused kernels and cpu-bf16 — q, k, v, dout
// rounded to bf16 (nearest even) as loaded (a bf16 qkv is read as is); scores = scale * (q . k), the
// scale applied to the fp32 sum; softmax in fp32; probabilities rounded to bf16 for P @ V and dV;
// dpre = att (datt - sum(att * datt)) scale in fp32 from the fp32 probabilities, rounded to bf16 for
// dQ and dK.  Only the fp32 summation order differs.  The scale product, the subtraction of the row
// max and the dS products use explicitly rounded operations (no FMA contraction), so the backward
// recomputes exactly the forward's fp32 probabilities.
//
// Shapes taken: head size 16, 32 or 64, 2 <= T <= 256, both kernels' shared memory within the
// device's opt-in limit (backward: ~110 KB for the decoder, T 197 and hs 32).  Anything else returns
// 0 and the caller uses the fused kernels or cuBLAS (cuda_backend.cu).
//
// The part up to VM_FLASH_HELPERS_ONLY is host-and-device code (fragment coordinates, bf16 rounding,
// the softmax steps, load_head): a host emulation of the kernels can include just that part and run
// the same index math for 32 lanes.
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define FLASH_HD __host__ __device__ __forceinline__
// #pragma unroll in host-and-device code: the host compiler does not know it (-Werror unknown-pragmas)
#ifdef __CUDA_ARCH__
#define FLASH_UNROLL _Pragma("unroll")
#else
#define FLASH_UNROLL
#endif

namespace flash {

// ---- mma.m16n8k16 fragments (bf16 A and B, fp32 C): lane = 4 * groupID + threadID_in_group ------
// A (16 x 16, row major): register r holds the elements (a_row, a_col) and (a_row, a_col + 1), the
// lower column in the low 16 bits.
FLASH_HD int a_row(int lane, int r) { return (lane >> 2) + 8 * (r & 1); }
FLASH_HD int a_col(int lane, int r) { return 2 * (lane & 3) + 8 * (r >> 1); }
// B (16 x 8, "col"): register r holds (b_k, b_n) and (b_k + 1, b_n).
FLASH_HD int b_k(int lane, int r) { return 2 * (lane & 3) + 8 * r; }
FLASH_HD int b_n(int lane) { return lane >> 2; }
// C / D (16 x 8): element e (0..3) at (c_row, c_col).
FLASH_HD int c_row(int lane, int e) { return (lane >> 2) + 8 * (e >> 1); }
FLASH_HD int c_col(int lane, int e) { return 2 * (lane & 3) + (e & 1); }
// The FA2 register reuse: A register r of a 16-column chunk is C elements a_elem(r) and a_elem(r) + 1
// of the chunk's 8-column block a_block(r) (0 or 1).  (a_row(r) == c_row(a_elem(r)), a_col(r) ==
// 8 * a_block(r) + c_col(a_elem(r)).)
FLASH_HD int a_block(int r) { return r >> 1; }
FLASH_HD int a_elem(int r) { return 2 * (r & 1); }

// ---- bf16 --------------------------------------------------------------------------------------
FLASH_HD float bits_float(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
FLASH_HD uint16_t bf16_bits(float x) {  // round to nearest even
#ifdef __CUDA_ARCH__
    return __bfloat16_as_ushort(__float2bfloat16_rn(x));
#else
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
#endif
}
FLASH_HD float bf16_float(uint16_t b) { return bits_float((uint32_t)b << 16); }
// Two values rounded to bf16 in one register, lo in the low 16 bits (an operand register's order).
FLASH_HD uint32_t pack_bf16(float lo, float hi) {
#ifdef __CUDA_ARCH__
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    uint32_t u;
    memcpy(&u, &v, 4);
    return u;
#else
    return (uint32_t)bf16_bits(lo) | (uint32_t)bf16_bits(hi) << 16;
#endif
}

// ---- fragments from bf16 matrices in shared memory (uint16_t bits, row stride ld, even) ---------
// A: the 16 x 16 tile whose (0, 0) is at base.
FLASH_HD uint32_t load_pair(const uint16_t *base, int ld, int row, int col) {
    return *(const uint32_t *)(base + row * ld + col);
}
FLASH_HD void load_a(uint32_t (&a)[4], const uint16_t *base, int ld, int lane) {
    a[0] = load_pair(base, ld, a_row(lane, 0), a_col(lane, 0));
    a[1] = load_pair(base, ld, a_row(lane, 1), a_col(lane, 1));
    a[2] = load_pair(base, ld, a_row(lane, 2), a_col(lane, 2));
    a[3] = load_pair(base, ld, a_row(lane, 3), a_col(lane, 3));
}
// B: element (k, n) at base[n * ld + k] — B's columns are rows in memory (K for Q K^T, V^T for P V).
FLASH_HD void load_b(uint32_t (&b)[2], const uint16_t *base, int ld, int lane) {
    b[0] = load_pair(base, ld, b_n(lane), b_k(lane, 0));
    b[1] = load_pair(base, ld, b_n(lane), b_k(lane, 1));
}

// ---- the softmax steps, shared by the forward, both backward phases and the emulation ----------
FLASH_HD float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
FLASH_HD float sub_rn(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}
// score = scale * (q . k), the scale applied to the fp32 sum
FLASH_HD float score(float acc, float scale) { return mul_rn(acc, scale); }
// exp(score - row max), before the division by the row sum
FLASH_HD float softmax_exp(float x, float mx) { return expf(sub_rn(x, mx)); }
// the fp32 probability from the score and the row statistics (max, 1 / sum)
FLASH_HD float prob(float x, float mx, float inv) { return mul_rn(softmax_exp(x, mx), inv); }
// dpre = att * (datt - sum(att * datt)) * scale
FLASH_HD float dscore(float p, float dp, float dot, float scale) { return mul_rn(mul_rn(p, sub_rn(dp, dot)), scale); }

// ---- shared memory ------------------------------------------------------------------------------
// Tp = T rounded up to 16 (padding rows are zero).  Row-major bf16 copies (Tp rows of hs) have row
// stride ldr = hs + 8 and transposed ones (hs rows of Tp) ldt = Tp + 8: both are 4 mod 8 words, so
// the 32-bit fragment loads of a warp (8 rows x 4 consecutive words) hit 32 distinct banks.
constexpr int FWD_WARPS = 4;  // forward: query tiles per block, one per warp
constexpr int BWD_WARPS = 8;  // backward: warps per block at most (one block per head)
constexpr int MAX_T = 256;

struct layout {
    int Tp, ldr, ldt;
    size_t fwd, bwd;  // dynamic shared memory bytes of each kernel
};
FLASH_HD layout layout_of(int T, int hs) {
    layout l;
    l.Tp = (T + 15) / 16 * 16;
    l.ldr = hs + 8;
    l.ldt = l.Tp + 8;
    size_t rows = (size_t)l.Tp * l.ldr * 2, cols = (size_t)hs * l.ldt * 2;
    // forward: K (row major), V^T, the block's Q rows
    l.fwd = rows + cols + (size_t)FWD_WARPS * 16 * l.ldr * 2;
    // backward: Q, K, V, dO (row major), Q^T, K^T, dO^T, then row max, 1 / row sum, rowsum(P dP)
    l.bwd = 4 * rows + 3 * cols + 3 * (size_t)l.Tp * sizeof(float);
    return l;
}

// ---- global -> shared: one head's rows as bf16 (load_head) ---------------------------------------
// Four consecutive elements as floats: vector loads when the caller found the base 16-byte
// (fp32) / 8-byte (bf16) aligned (every row and head offset is a multiple of 4 elements).  On the
// host (the emulation) plain element loads.
FLASH_HD void load4(float (&v)[4], const float *p, int vec) {
#ifdef __CUDA_ARCH__
    if (vec) {
        float4 x = __ldg((const float4 *)p);
        v[0] = x.x, v[1] = x.y, v[2] = x.z, v[3] = x.w;
    } else {
#pragma unroll
        for (int e = 0; e < 4; e++) v[e] = __ldg(p + e);
    }
#else
    (void)vec;
    for (int e = 0; e < 4; e++) v[e] = p[e];
#endif
}
FLASH_HD void load4(float (&v)[4], const __nv_bfloat16 *p, int vec) {
#ifdef __CUDA_ARCH__
    if (vec) {
        uint2 x = __ldg((const uint2 *)p);
        v[0] = bits_float(x.x << 16), v[1] = bits_float(x.x & 0xffff0000u);
        v[2] = bits_float(x.y << 16), v[3] = bits_float(x.y & 0xffff0000u);
    } else {
#pragma unroll
        for (int e = 0; e < 4; e++) v[e] = __bfloat162float(p[e]);
    }
#else
    (void)vec;
    for (int e = 0; e < 4; e++) v[e] = __bfloat162float(p[e]);
#endif
}
// Four values rounded to bf16 into p[0..3] (8-byte aligned): one 64-bit store (memcpy on the host).
FLASH_HD void store4(uint16_t *p, const float (&v)[4]) {
#ifdef __CUDA_ARCH__
    *(uint2 *)p = make_uint2(pack_bf16(v[0], v[1]), pack_bf16(v[2], v[3]));
#else
    const uint32_t u[2] = {pack_bf16(v[0], v[1]), pack_bf16(v[2], v[3])};
    memcpy(p, u, 8);
#endif
}

// Rows first..first+rows-1 of one head's slice src (row stride ld elements of TS) as bf16 (rounded
// to nearest even; a bf16 source is copied exactly) into rm (row-major, stride ldr; row r - first)
// and/or tr (transposed, stride ldt: element (r, d) at tr[d * ldt + r - first]).  Rows at or past T
// are zero.  Threads tid of nthreads; each issues LOADS loads before converting any (the loads are
// what the block waits on).
template <int HS, typename TS>
__host__ __device__ void load_head(uint16_t *rm, int ldr, uint16_t *tr, int ldt, const TS *src, size_t ld, int first,
                          int rows, int T, int vec, int tid, int nthreads) {
    constexpr int LOADS = 8, Q4 = HS / 4;
    const int n = rows * Q4;
    for (int i0 = tid; i0 < n; i0 += LOADS * nthreads) {
        float v[LOADS][4];
        FLASH_UNROLL
        for (int u = 0; u < LOADS; u++) {
            int i = i0 + u * nthreads, t = first + i / Q4;
            if (i < n && t < T) load4(v[u], src + (size_t)t * ld + (i % Q4) * 4, vec);
            else v[u][0] = v[u][1] = v[u][2] = v[u][3] = 0.0f;
        }
        FLASH_UNROLL
        for (int u = 0; u < LOADS; u++) {
            int i = i0 + u * nthreads, r = i / Q4, d = (i % Q4) * 4;
            if (i >= n) continue;
            if (rm) store4(rm + r * ldr + d, v[u]);
            if (tr)
                FLASH_UNROLL
                for (int e = 0; e < 4; e++) tr[(d + e) * ldt + r] = bf16_bits(v[u][e]);
        }
    }
}

}  // namespace flash

#ifndef VM_FLASH_HELPERS_ONLY
#include "trainer/cuda/cuda_internal.cuh"
#include "trainer/cuda/cuda_backend.h"

namespace flash {
namespace {

__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
// This lane's share of row `half` (C rows c_row(lane, 2 * half)) of a 16 x (8 * N) accumulator
// tile, stored at row[n * 8 + c_col] (type T: rounded once by store_as).
template <int N, typename T>
__device__ __forceinline__ void store_tile_row(T *row, const float (&acc)[N][4], int half, int lane) {
#pragma unroll
    for (int n = 0; n < N; n++)
#pragma unroll
        for (int e = 2 * half; e < 2 * half + 2; e++) store_as(row + n * 8 + c_col(lane, e), acc[n][e]);
}
// max / sum over the 4 lanes of a quad (the lanes that hold one row of a C fragment)
__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// out (B, T, C) and the row statistics (B, NH, T, 2) = (max, 1 / sum) from qkv (B, T, 3C).
// Grid: B * NH * groups blocks (the groups of one head adjacent), FWD_WARPS warps, warp w of group g
// the query tile FWD_WARPS * g + w.  KT: key tiles the score registers are sized for (>= Tp / 16).
// TA: the type of qkv and out, float or bf16 (out rounded once from the fp32 accumulators).
template <int HS, int KT, typename TA>
__global__ void __launch_bounds__(FWD_WARPS * 32)
flash_forward_kernel(TA *out, float *stats, const TA *qkv, int T, int C, int NH, float scale, int vec) {
    extern __shared__ __align__(16) unsigned char smem[];
    const layout l = layout_of(T, HS);
    const int ntiles = l.Tp / 16, groups = (ntiles + FWD_WARPS - 1) / FWD_WARPS;
    const int bh = blockIdx.x / groups, grp = blockIdx.x % groups, b = bh / NH, h = bh % NH;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    uint16_t *Ks = (uint16_t *)smem, *Vt = Ks + l.Tp * l.ldr, *Qs = Vt + HS * l.ldt;
    const size_t ld = 3 * (size_t)C;
    const TA *head = qkv + (size_t)b * T * ld + (size_t)h * HS;
    load_head<HS>(Ks, l.ldr, (uint16_t *)nullptr, 0, head + C, ld, 0, l.Tp, T, vec, threadIdx.x, blockDim.x);
    load_head<HS>((uint16_t *)nullptr, 0, Vt, l.ldt, head + 2 * C, ld, 0, l.Tp, T, vec, threadIdx.x, blockDim.x);
    load_head<HS>(Qs, l.ldr, (uint16_t *)nullptr, 0, head, ld, grp * FWD_WARPS * 16, FWD_WARPS * 16, T, vec,
                  threadIdx.x, blockDim.x);
    __syncthreads();
    const int qt = grp * FWD_WARPS + warp;
    if (qt >= ntiles) return;

    uint32_t qa[HS / 16][4];
#pragma unroll
    for (int kk = 0; kk < HS / 16; kk++) load_a(qa[kk], Qs + warp * 16 * l.ldr + kk * 16, l.ldr, lane);
    // S (16, 8 * 2KT): 8-key block j in s[j]; blocks past Tp stay zero (and are masked below)
    float s[2 * KT][4];
#pragma unroll
    for (int j = 0; j < 2 * KT; j++) {
        s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
        if (j < 2 * ntiles)
#pragma unroll
            for (int kk = 0; kk < HS / 16; kk++) {
                uint32_t kb[2];
                load_b(kb, Ks + j * 8 * l.ldr + kk * 16, l.ldr, lane);
                mma(s[j], qa[kk], kb);
            }
    }
    // softmax of rows c_row(lane, 0) (elements 0, 1) and c_row(lane, 2) (elements 2, 3); columns
    // at or past T are out (score -inf, probability 0)
    float mx[2] = {-INFINITY, -INFINITY}, sum[2] = {0.0f, 0.0f}, inv[2];
#pragma unroll
    for (int j = 0; j < 2 * KT; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            s[j][e] = 8 * j + c_col(lane, e) < T ? score(s[j][e], scale) : -INFINITY;
            mx[e >> 1] = fmaxf(mx[e >> 1], s[j][e]);
        }
    mx[0] = quad_max(mx[0]), mx[1] = quad_max(mx[1]);
#pragma unroll
    for (int j = 0; j < 2 * KT; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            s[j][e] = 8 * j + c_col(lane, e) < T ? softmax_exp(s[j][e], mx[e >> 1]) : 0.0f;
            sum[e >> 1] += s[j][e];
        }
    inv[0] = 1.0f / quad_sum(sum[0]), inv[1] = 1.0f / quad_sum(sum[1]);
    // O (16, HS) = bf16(P) @ V, 16 keys at a time; P's A fragments straight from the accumulators
    float o[HS / 8][4];
#pragma unroll
    for (int n = 0; n < HS / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
#pragma unroll
    for (int kc = 0; kc < KT; kc++) {
        if (kc >= ntiles) break;
        uint32_t pa[4];
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const float *c = s[2 * kc + a_block(r)];
            const int e = a_elem(r), half = e >> 1;
            pa[r] = pack_bf16(mul_rn(c[e], inv[half]), mul_rn(c[e + 1], inv[half]));
        }
#pragma unroll
        for (int n = 0; n < HS / 8; n++) {
            uint32_t vb[2];
            load_b(vb, Vt + n * 8 * l.ldt + kc * 16, l.ldt, lane);
            mma(o[n], pa, vb);
        }
    }
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int t = qt * 16 + c_row(lane, 2 * half);
        if (t >= T) continue;
        store_tile_row(out + ((size_t)b * T + t) * C + (size_t)h * HS, o, half, lane);
        if ((lane & 3) == 0) {
            stats[((size_t)bh * T + t) * 2] = mx[half];
            stats[((size_t)bh * T + t) * 2 + 1] = inv[half];
        }
    }
}

// S (for the 16 rows of qa) and dP (for the rows of ga) of the 16 columns whose B operands are rows
// kr.. of Bs and Ds (row major, stride ldr): s[blk], dp[blk] for the two 8-column blocks.
template <int HS>
__device__ __forceinline__ void two_products(float (&s)[2][4], float (&dp)[2][4], const uint32_t (&qa)[HS / 16][4],
                                             const uint32_t (&ga)[HS / 16][4], const uint16_t *Bs,
                                             const uint16_t *Ds, int ldr, int lane) {
#pragma unroll
    for (int blk = 0; blk < 2; blk++) {
#pragma unroll
        for (int e = 0; e < 4; e++) s[blk][e] = dp[blk][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < HS / 16; kk++) {
            uint32_t bb[2], db[2];
            load_b(bb, Bs + blk * 8 * ldr + kk * 16, ldr, lane);
            load_b(db, Ds + blk * 8 * ldr + kk * 16, ldr, lane);
            mma(s[blk], qa[kk], bb);
            mma(dp[blk], ga[kk], db);
        }
    }
}

// dqkv (B, T, 3C) from dout (B, T, C), qkv and the forward's row statistics.  Grid: B * NH blocks of
// min(BWD_WARPS, Tp / 16) warps (no warp without a tile in either phase).  TA: the type of qkv (dout
// and dqkv are fp32 either way).
template <int HS, typename TA>
__global__ void __launch_bounds__(BWD_WARPS * 32)
flash_backward_kernel(float *dqkv, const float *dout, const TA *qkv, const float *stats, int T, int C, int NH,
                      float scale, int vec) {
    extern __shared__ __align__(16) unsigned char smem[];
    constexpr int NK = HS / 16, NN = HS / 8;
    const layout l = layout_of(T, HS);
    const int ntiles = l.Tp / 16, bh = blockIdx.x, b = bh / NH, h = bh % NH;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
    const size_t rows = (size_t)l.Tp * l.ldr, cols = (size_t)HS * l.ldt;
    uint16_t *Qs = (uint16_t *)smem, *Ks = Qs + rows, *Vs = Ks + rows, *Gs = Vs + rows;  // G: dO
    uint16_t *Qt = Gs + rows, *Kt = Qt + cols, *Gt = Kt + cols;
    float *rmax = (float *)(Gt + cols), *rinv = rmax + l.Tp, *rdot = rinv + l.Tp;
    const size_t ld = 3 * (size_t)C;
    const TA *head = qkv + (size_t)b * T * ld + (size_t)h * HS;
    const float *ghead = dout + (size_t)b * T * C + (size_t)h * HS;
    float *dhead = dqkv + (size_t)b * T * ld + (size_t)h * HS;
    load_head<HS>(Qs, l.ldr, Qt, l.ldt, head, ld, 0, l.Tp, T, vec & 1, threadIdx.x, blockDim.x);
    load_head<HS>(Ks, l.ldr, Kt, l.ldt, head + C, ld, 0, l.Tp, T, vec & 1, threadIdx.x, blockDim.x);
    load_head<HS>(Vs, l.ldr, (uint16_t *)nullptr, 0, head + 2 * C, ld, 0, l.Tp, T, vec & 1, threadIdx.x, blockDim.x);
    load_head<HS>(Gs, l.ldr, Gt, l.ldt, ghead, C, 0, l.Tp, T, vec & 2, threadIdx.x, blockDim.x);
    for (int i = threadIdx.x; i < l.Tp; i += blockDim.x) {  // padding rows: P = 0 (masked below as well)
        rmax[i] = i < T ? stats[((size_t)bh * T + i) * 2] : 0.0f;
        rinv[i] = i < T ? stats[((size_t)bh * T + i) * 2 + 1] : 0.0f;
    }
    __syncthreads();

    // phase 1: warps own query tiles — rowsum(P * dP), then dS and dQ = bf16(dS) @ K
    for (int qt = warp; qt < ntiles; qt += nwarps) {
        uint32_t qa[NK][4], ga[NK][4];
#pragma unroll
        for (int kk = 0; kk < NK; kk++) {
            load_a(qa[kk], Qs + qt * 16 * l.ldr + kk * 16, l.ldr, lane);
            load_a(ga[kk], Gs + qt * 16 * l.ldr + kk * 16, l.ldr, lane);
        }
        int t[2];
        float m[2], iv[2], dot[2] = {0.0f, 0.0f};
#pragma unroll
        for (int half = 0; half < 2; half++) {
            t[half] = qt * 16 + c_row(lane, 2 * half);
            m[half] = rmax[t[half]], iv[half] = rinv[t[half]];
        }
        for (int kc = 0; kc < ntiles; kc++) {
            float s[2][4], dp[2][4];
            two_products<HS>(s, dp, qa, ga, Ks + kc * 16 * l.ldr, Vs + kc * 16 * l.ldr, l.ldr, lane);
#pragma unroll
            for (int blk = 0; blk < 2; blk++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int half = e >> 1;
                    bool in = t[half] < T && kc * 16 + blk * 8 + c_col(lane, e) < T;
                    if (in) dot[half] += prob(score(s[blk][e], scale), m[half], iv[half]) * dp[blk][e];
                }
        }
        dot[0] = quad_sum(dot[0]), dot[1] = quad_sum(dot[1]);
        if ((lane & 3) == 0) rdot[t[0]] = dot[0], rdot[t[1]] = dot[1];
        float dq[NN][4];
#pragma unroll
        for (int n = 0; n < NN; n++) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;
        for (int kc = 0; kc < ntiles; kc++) {
            float s[2][4], dp[2][4];
            two_products<HS>(s, dp, qa, ga, Ks + kc * 16 * l.ldr, Vs + kc * 16 * l.ldr, l.ldr, lane);
#pragma unroll
            for (int blk = 0; blk < 2; blk++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int half = e >> 1;
                    bool in = t[half] < T && kc * 16 + blk * 8 + c_col(lane, e) < T;
                    s[blk][e] = in ? dscore(prob(score(s[blk][e], scale), m[half], iv[half]), dp[blk][e], dot[half], scale)
                                   : 0.0f;
                }
            uint32_t sa[4];
#pragma unroll
            for (int r = 0; r < 4; r++) sa[r] = pack_bf16(s[a_block(r)][a_elem(r)], s[a_block(r)][a_elem(r) + 1]);
#pragma unroll
            for (int n = 0; n < NN; n++) {
                uint32_t kb[2];
                load_b(kb, Kt + n * 8 * l.ldt + kc * 16, l.ldt, lane);
                mma(dq[n], sa, kb);
            }
        }
#pragma unroll
        for (int half = 0; half < 2; half++) {
            if (t[half] < T) store_tile_row(dhead + (size_t)t[half] * ld, dq, half, lane);
        }
    }
    __syncthreads();  // every row's rowsum(P * dP) is in rdot

    // phase 2: warps own key tiles — S^T, dP^T per 16 queries; dV = bf16(P)^T dO, dK = bf16(dS)^T Q
    for (int kt = warp; kt < ntiles; kt += nwarps) {
        uint32_t ka[NK][4], va[NK][4];
#pragma unroll
        for (int kk = 0; kk < NK; kk++) {
            load_a(ka[kk], Ks + kt * 16 * l.ldr + kk * 16, l.ldr, lane);
            load_a(va[kk], Vs + kt * 16 * l.ldr + kk * 16, l.ldr, lane);
        }
        const int key[2] = {kt * 16 + c_row(lane, 0), kt * 16 + c_row(lane, 2)};
        float dk[NN][4], dv[NN][4];
#pragma unroll
        for (int n = 0; n < NN; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) dk[n][e] = dv[n][e] = 0.0f;
        for (int qc = 0; qc < ntiles; qc++) {
            float s[2][4], dp[2][4];
            two_products<HS>(s, dp, ka, va, Qs + qc * 16 * l.ldr, Gs + qc * 16 * l.ldr, l.ldr, lane);
#pragma unroll
            for (int blk = 0; blk < 2; blk++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int q = qc * 16 + blk * 8 + c_col(lane, e);
                    const bool in = q < T && key[e >> 1] < T;
                    const float p = in ? prob(score(s[blk][e], scale), rmax[q], rinv[q]) : 0.0f;
                    s[blk][e] = in ? dscore(p, dp[blk][e], rdot[q], scale) : 0.0f;  // dS^T
                    dp[blk][e] = p;                                                  // P^T
                }
            uint32_t pa[4], sa[4];
#pragma unroll
            for (int r = 0; r < 4; r++) {
                pa[r] = pack_bf16(dp[a_block(r)][a_elem(r)], dp[a_block(r)][a_elem(r) + 1]);
                sa[r] = pack_bf16(s[a_block(r)][a_elem(r)], s[a_block(r)][a_elem(r) + 1]);
            }
#pragma unroll
            for (int n = 0; n < NN; n++) {
                uint32_t gb[2], qb[2];
                load_b(gb, Gt + n * 8 * l.ldt + qc * 16, l.ldt, lane);
                load_b(qb, Qt + n * 8 * l.ldt + qc * 16, l.ldt, lane);
                mma(dv[n], pa, gb);
                mma(dk[n], sa, qb);
            }
        }
#pragma unroll
        for (int half = 0; half < 2; half++) {
            if (key[half] >= T) continue;
            float *row = dhead + (size_t)key[half] * ld;
            store_tile_row(row + C, dk, half, lane);
            store_tile_row(row + 2 * C, dv, half, lane);
        }
    }
}

// load_head's vec: p aligned for 4-element vector loads (the kernels' vec: bit 0 qkv, bit 1 dout)
template <typename TA>
int vec4(const TA *p) {
    return (uintptr_t)p % (4 * sizeof(TA)) == 0;
}

template <int HS, int KT, typename TA>
void launch_forward(TA *out, float *stats, const TA *qkv, int B, int T, int C, int NH, const char *op) {
    const layout l = layout_of(T, HS);
    const int groups = (l.Tp / 16 + FWD_WARPS - 1) / FWD_WARPS;
    cuda_allow_smem((const void *)flash_forward_kernel<HS, KT, TA>, l.fwd, op);
    flash_forward_kernel<HS, KT, TA><<<B * NH * groups, FWD_WARPS * 32, l.fwd, g_cu.stream>>>(
        out, stats, qkv, T, C, NH, 1.0f / sqrtf((float)HS), vec4(qkv));
    LAUNCH_CHECK(op);
}

// the forward's score registers sized for the sequence: 4, 8, 13 (the decoder, T 197) or 16 key tiles
template <int HS, typename TA>
void forward_hs(TA *out, float *stats, const TA *qkv, int B, int T, int C, int NH, const char *op) {
    const int nt = (T + 15) / 16;
    if (nt <= 4) launch_forward<HS, 4>(out, stats, qkv, B, T, C, NH, op);
    else if (nt <= 8) launch_forward<HS, 8>(out, stats, qkv, B, T, C, NH, op);
    else if (nt <= 13) launch_forward<HS, 13>(out, stats, qkv, B, T, C, NH, op);
    else launch_forward<HS, 16>(out, stats, qkv, B, T, C, NH, op);
}

template <int HS, typename TA>
void backward_hs(float *dqkv, const float *dout, const TA *qkv, const float *stats, int B, int T, int C, int NH,
                 const char *op) {
    const size_t smem = layout_of(T, HS).bwd;
    // one warp per tile up to BWD_WARPS: the encoder (T 50, 4 tiles) would otherwise hold 8 warps'
    // registers (hs 64: 172 a thread, one block per SM) with 4 of them idle in both phases
    const int tiles = (T + 15) / 16, warps = tiles < BWD_WARPS ? tiles : BWD_WARPS;
    cuda_allow_smem((const void *)flash_backward_kernel<HS, TA>, smem, op);
    flash_backward_kernel<HS, TA><<<B * NH, warps * 32, smem, g_cu.stream>>>(
        dqkv, dout, qkv, stats, T, C, NH, 1.0f / sqrtf((float)HS), vec4(qkv) | vec4(dout) << 1);
    LAUNCH_CHECK(op);
}

// Flash runs in modes FLASH and AUTO (measured faster than fused in both directions on every shape
// of the ViT configs: docs/GPU.md), on the shapes it takes.  One answer for both directions: its
// forward leaves only row statistics in att, which no other backward can read.
int selected(int T, int C, int NH) {
    return (g_cu.fused_attention == VM_ATTENTION_FLASH || g_cu.fused_attention == VM_ATTENTION_AUTO) &&
           vm_backend_cuda_flash_attention_takes(T, C, NH);
}

template <typename TA>
int forward(TA *out, float *att, const TA *qkv, int B, int T, int C, int NH, const char *op) {
    if (!selected(T, C, NH)) return 0;
    switch (C / NH) {
    case 16: forward_hs<16>(out, att, qkv, B, T, C, NH, op); break;
    case 32: forward_hs<32>(out, att, qkv, B, T, C, NH, op); break;
    default: forward_hs<64>(out, att, qkv, B, T, C, NH, op); break;
    }
    return 1;
}

template <typename TA>
int backward(float *dqkv, const float *dout, const TA *qkv, const float *att, int B, int T, int C, int NH,
             const char *op) {
    if (!selected(T, C, NH)) return 0;
    switch (C / NH) {
    case 16: backward_hs<16>(dqkv, dout, qkv, att, B, T, C, NH, op); break;
    case 32: backward_hs<32>(dqkv, dout, qkv, att, B, T, C, NH, op); break;
    default: backward_hs<64>(dqkv, dout, qkv, att, B, T, C, NH, op); break;
    }
    return 1;
}

}  // namespace
}  // namespace flash

extern "C" int vm_backend_cuda_flash_attention_takes(int T, int C, int NH) {
    if (!g_cu.ready || T < 2 || T > flash::MAX_T || NH < 1 || C % NH) return 0;  // T >= 2: att holds 2 floats a row
    const int hs = C / NH;
    if (hs != 16 && hs != 32 && hs != 64) return 0;
    const flash::layout l = flash::layout_of(T, hs);
    return l.fwd <= (size_t)cuda_smem_optin() && l.bwd <= (size_t)cuda_smem_optin();
}

int cuda_attention_flash_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH, const char *op) {
    return flash::forward(out, att, qkv, B, T, C, NH, op);
}
int cuda_attention_flash_forward(__nv_bfloat16 *out, float *att, const __nv_bfloat16 *qkv, int B, int T, int C, int NH,
                                 const char *op) {
    return flash::forward(out, att, qkv, B, T, C, NH, op);
}
int cuda_attention_flash_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int B, int T,
                                  int C, int NH, const char *op) {
    return flash::backward(dqkv, dout, qkv, att, B, T, C, NH, op);
}
int cuda_attention_flash_backward(float *dqkv, const float *dout, const __nv_bfloat16 *qkv, const float *att, int B,
                                  int T, int C, int NH, const char *op) {
    return flash::backward(dqkv, dout, qkv, att, B, T, C, NH, op);
}
#endif  // VM_FLASH_HELPERS_ONLY
