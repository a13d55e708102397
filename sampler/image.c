// sampler/image.c — crop + resize + flip and the colour operations, on packed RGB uint8.
//
// The resize is PIL's BILINEAR resampling (what torchvision's RandomResizedCrop applies to PIL
// images, and to tensors with antialias=True): a triangle filter whose support widens with the
// shrink factor, so that shrinking averages every source pixel instead of aliasing, and enlarging
// is half-pixel-centred bilinear.  Taps stay inside the crop (torchvision crops, then resizes).
// Separable, in fixed point: horizontal pass into int16 (Q7), vertical pass from it.
//
// Why our own kernel and not libyuv or libswscale: libyuv's bilinear maps corners to corners when
// enlarging (a half-pixel shift against torchvision) and its RGB path goes through ARGB rows; it is
// about 1.25x faster than this kernel but off by 2.5 levels on average (up to 113 at edges) from the
// exact filter, where this kernel is within 1 (bench/bench_sampler.sh measures both, and OpenCV,
// which this kernel beats about 3x).  libswscale needs a context per (crop size, output size) pair,
// and every random crop has its own size.
//
// SIMD: SSE2 (x86-64's baseline) pmaddwd loops, plus SSSE3 and AVX2 versions chosen at run time;
// all give the same bytes as the scalar loops (tests/test_sampler.c checks).
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "sampler/internal.h"

#define WBITS 14   // weight precision: weights sum to 1 << WBITS
#define HBITS 7    // fractional bits kept by the horizontal pass (int16: 255 << 7 fits)

void vm_scratch_free(vm_scratch *s) {
    if (!s) return;
    free(s->p);
    s->p = NULL;
    s->cap = 0;
}

static void *scratch_get(vm_scratch *s, size_t n) {
    if (s->cap >= n) return s->p;
    void *p = realloc(s->p, n);
    if (!p) return NULL;
    s->p = p;
    s->cap = n;
    return p;
}

// Taps of one axis: out_len outputs, each reading K consecutive inputs from start[o] with Q14
// weights w[o * KP + k] (zero-padded so that every output has exactly K taps, and to KP, a multiple
// of 4, so that the SIMD loops take taps in pairs or fours).
typedef struct {
    int K, KP;
    int32_t *start;   // [out_len]
    int16_t *w;       // [out_len * KP]
} axis_taps;

// PIL's bound on the taps of one output (before trimming zero-weight ends).
static int taps_bound(int in_len, int out_len) {
    double scale = (double)in_len / out_len, fs = scale > 1 ? scale : 1;
    int K = (int)ceil(fs) * 2 + 1;
    return K < in_len ? K : in_len;
}

// PIL precompute_coeffs for one output of the bilinear (triangle, support 1) filter, with the
// zero-weight taps at either end trimmed: tmp[0 .. n) (unnormalised) over inputs xmin .. xmin+n-1.
static int taps_one(int in_len, int out_len, int o, double *tmp, int *xmin_out) {
    double scale = (double)in_len / out_len, fs = scale > 1 ? scale : 1, support = fs, ss = 1.0 / fs;
    double center = (o + 0.5) * scale;
    int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
    if (xmin < 0) xmin = 0;
    if (xmax > in_len) xmax = in_len;
    int n = xmax - xmin, bound = taps_bound(in_len, out_len);
    if (n > bound) n = bound;  // cannot happen; keeps the writes in range regardless
    for (int x = 0; x < n; x++) {
        double t = fabs((x + xmin - center + 0.5) * ss);
        tmp[x] = t < 1 ? 1 - t : 0;
    }
    int lead = 0;
    while (lead < n - 1 && tmp[lead] == 0) lead++;
    while (n - 1 > lead && tmp[n - 1] == 0) n--;
    if (lead) memmove(tmp, tmp + lead, sizeof(double) * (n - lead));
    *xmin_out = xmin + lead;
    return n - lead;
}

// Taps per output after trimming: the inputs strictly inside the triangle's support, an open
// interval of length 2 * fs, number at most ceil(2 * fs) (and the input length).
static int taps_count(int in_len, int out_len) {
    double scale = (double)in_len / out_len, fs = scale > 1 ? scale : 1;
    int K = (int)ceil(2 * fs - 1e-9);
    return K < 1 ? 1 : K < in_len ? K : in_len;
}

static void taps_build(axis_taps *a, int in_len, int out_len, double *tmp) {
    const int K = a->K, KP = a->KP;
    for (int o = 0; o < out_len; o++) {
        int xmin, n = taps_one(in_len, out_len, o, tmp, &xmin);
        if (n > K) n = K;  // cannot happen (taps_count bounds it); keeps the writes in range regardless
        double sum = 0;
        for (int x = 0; x < n; x++) sum += tmp[x];
        int start = xmin + K > in_len ? in_len - K : xmin, off = xmin - start;
        int16_t *w = a->w + (size_t)o * KP;
        memset(w, 0, sizeof(int16_t) * KP);
        int isum = 0, big = off;
        for (int x = 0; x < n; x++) {
            int q = (int)(tmp[x] / sum * (1 << WBITS) + 0.5);  // positive: rounds half up, like lround
            w[off + x] = (int16_t)q;
            isum += q;
            if (q > w[big]) big = off + x;
        }
        w[big] += (int16_t)((1 << WBITS) - isum);  // exact unit sum: flat areas stay flat
        a->start[o] = start;
    }
}

// Horizontal pass of one row: s = the crop's row (3 bytes per pixel), t = dw * 3 int16 in Q7.
static void hrow_scalar(const uint8_t *s, const axis_taps *ax, int dw, int flip, int16_t *t, int o0, int o1) {
    const int32_t rnd = 1 << (WBITS - HBITS - 1);
    for (int o = o0; o < o1; o++) {
        const uint8_t *p = s + (size_t)ax->start[o] * 3;
        const int16_t *wk = ax->w + (size_t)o * ax->KP;
        int32_t a0 = rnd, a1 = rnd, a2 = rnd;
        for (int k = 0; k < ax->K; k++) {
            a0 += wk[k] * p[3 * k];
            a1 += wk[k] * p[3 * k + 1];
            a2 += wk[k] * p[3 * k + 2];
        }
        int16_t *q = t + (size_t)(flip ? dw - 1 - o : o) * 3;
        q[0] = (int16_t)(a0 >> (WBITS - HBITS));
        q[1] = (int16_t)(a1 >> (WBITS - HBITS));
        q[2] = (int16_t)(a2 >> (WBITS - HBITS));
    }
}

// Vertical pass of one output row: K rows of tmp (stride `row` int16) weighted into d (row bytes).
static void vrow_scalar(const int16_t *t0, size_t row, const int16_t *wk, int K, uint8_t *d, size_t e0) {
    const int shift = WBITS + HBITS;
    for (size_t e = e0; e < row; e++) {
        int32_t a = 1 << (shift - 1);
        for (int k = 0; k < K; k++) a += wk[k] * t0[(size_t)k * row + e];
        a >>= shift;
        d[e] = (uint8_t)(a < 0 ? 0 : a > 255 ? 255 : a);
    }
}

#ifdef __SSE2__
#include <immintrin.h>  // SSE2 always; SSSE3 and AVX2 parts are compiled per function and used after a CPU check
// The same arithmetic (bit-exact) with SSE2 pmaddwd taking two taps at once, as Pillow-SIMD does:
// 16-bit lanes [p_k, p_k+1] per channel times the weight pair [w_k, w_k+1].

static inline __m128i load_px(const uint8_t *p) {  // 4 bytes: R G B and the next pixel's R
    int32_t v;
    memcpy(&v, p, 4);
    return _mm_cvtsi32_si128(v);
}

static inline __m128i wpair(const int16_t *w) {
    int32_t v;
    memcpy(&v, w, 4);
    return _mm_set1_epi32(v);
}

// limit: the end of the source buffer; a 4-byte load must not pass it, so outputs whose last tap
// touches the very last pixel fall back to the scalar loop.
static void hrow_sse2(const uint8_t *s, const uint8_t *limit, const axis_taps *ax, int dw, int flip, int16_t *t) {
    const __m128i z = _mm_setzero_si128(), rnd = _mm_set1_epi32(1 << (WBITS - HBITS - 1));
    const int K = ax->K;
    for (int o = 0; o < dw; o++) {
        const uint8_t *p = s + (size_t)ax->start[o] * 3;
        if (p + 3 * K + 1 > limit) {
            hrow_scalar(s, ax, dw, flip, t, o, o + 1);
            continue;
        }
        const int16_t *wk = ax->w + (size_t)o * ax->KP;
        __m128i acc = rnd;
        for (int k = 0; k < K; k += 2) {
            __m128i a = load_px(p + 3 * k), b = k + 1 < K ? load_px(p + 3 * k + 3) : z;
            __m128i ab = _mm_unpacklo_epi8(_mm_unpacklo_epi8(a, b), z);  // [Ra Rb Ga Gb Ba Bb x x]
            acc = _mm_add_epi32(acc, _mm_madd_epi16(ab, wpair(wk + k)));  // padded weight is 0
        }
        acc = _mm_srai_epi32(acc, WBITS - HBITS);
        uint64_t v = (uint64_t)_mm_cvtsi128_si64(_mm_packs_epi32(acc, acc));
        memcpy(t + (size_t)(flip ? dw - 1 - o : o) * 3, &v, 6);
    }
}

// Four consecutive rows at once (none of them the image's last row, so no 4-byte load passes the
// buffer): the weights and positions of an output are loaded once for the four rows, and the four
// independent accumulators keep the pipeline busy.
static void hrow4_sse2(const uint8_t *s, size_t sstride, const axis_taps *ax, int dw, int flip, int16_t *t,
                       size_t row, int o0, int o1) {
    const __m128i z = _mm_setzero_si128(), rnd = _mm_set1_epi32(1 << (WBITS - HBITS - 1));
    const int K = ax->K;
    for (int o = o0; o < o1; o++) {
        const uint8_t *p = s + (size_t)ax->start[o] * 3;
        const int16_t *wk = ax->w + (size_t)o * ax->KP;
        __m128i a0 = rnd, a1 = rnd, a2 = rnd, a3 = rnd;
        for (int k = 0; k < K; k += 2) {
            const __m128i w = wpair(wk + k);
            const uint8_t *q = p + 3 * k;
            __m128i b0 = k + 1 < K ? load_px(q + 3) : z, b1 = k + 1 < K ? load_px(q + sstride + 3) : z;
            __m128i b2 = k + 1 < K ? load_px(q + 2 * sstride + 3) : z, b3 = k + 1 < K ? load_px(q + 3 * sstride + 3) : z;
            a0 = _mm_add_epi32(a0, _mm_madd_epi16(_mm_unpacklo_epi8(_mm_unpacklo_epi8(load_px(q), b0), z), w));
            a1 = _mm_add_epi32(a1, _mm_madd_epi16(_mm_unpacklo_epi8(_mm_unpacklo_epi8(load_px(q + sstride), b1), z), w));
            a2 = _mm_add_epi32(a2, _mm_madd_epi16(_mm_unpacklo_epi8(_mm_unpacklo_epi8(load_px(q + 2 * sstride), b2), z), w));
            a3 = _mm_add_epi32(a3, _mm_madd_epi16(_mm_unpacklo_epi8(_mm_unpacklo_epi8(load_px(q + 3 * sstride), b3), z), w));
        }
        __m128i v01 = _mm_packs_epi32(_mm_srai_epi32(a0, WBITS - HBITS), _mm_srai_epi32(a1, WBITS - HBITS));
        __m128i v23 = _mm_packs_epi32(_mm_srai_epi32(a2, WBITS - HBITS), _mm_srai_epi32(a3, WBITS - HBITS));
        int16_t *d = t + (size_t)(flip ? dw - 1 - o : o) * 3;
        uint64_t v;
        v = (uint64_t)_mm_cvtsi128_si64(v01);
        memcpy(d, &v, 6);
        v = (uint64_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(v01, v01));
        memcpy(d + row, &v, 6);
        v = (uint64_t)_mm_cvtsi128_si64(v23);
        memcpy(d + 2 * row, &v, 6);
        v = (uint64_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(v23, v23));
        memcpy(d + 3 * row, &v, 6);
    }
}

// With SSSE3, one 16-byte load holds 4 taps (5 pixels) of an output and two pshufb spread them into
// the [p_k, p_k+1] 16-bit pairs per channel, instead of 4 loads and 4 unpacks.  Taps come in groups
// of 4 (weights padded with zeros to KP, a multiple of 4); the caller guarantees that every 16-byte
// load of the 4 rows stays inside the source buffer.
__attribute__((target("ssse3"))) static void hrow4_ssse3(const uint8_t *s, size_t sstride, const axis_taps *ax,
                                                          int dw, int flip, int16_t *t, size_t row, int o0, int o1) {
    const __m128i rnd = _mm_set1_epi32(1 << (WBITS - HBITS - 1));
    const __m128i m01 = _mm_setr_epi8(0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1);
    const __m128i m23 = _mm_setr_epi8(6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1, -1, -1, -1, -1);
    const int KG = ax->KP, K = ax->K;
    for (int oi = o0; oi < o1; oi++) {
        const int o = flip ? o1 - 1 - (oi - o0) : oi;  // positions ascend (see hrow8_avx2)
        const uint8_t *p = s + (size_t)ax->start[o] * 3;
        const int16_t *wk = ax->w + (size_t)o * ax->KP;
        __m128i a0 = rnd, a1 = rnd, a2 = rnd, a3 = rnd;
        for (int k = 0; k < KG; k += 4) {
            const __m128i w01 = wpair(wk + k), w23 = wpair(wk + k + 2);
            const uint8_t *q = p + 3 * k;
#define TAP4(acc, ptr)                                                                       \
    do {                                                                                     \
        __m128i px = _mm_loadu_si128((const __m128i *)(ptr));                                \
        __m128i m = _mm_madd_epi16(_mm_shuffle_epi8(px, m01), w01);                          \
        if (K - k > 2) m = _mm_add_epi32(m, _mm_madd_epi16(_mm_shuffle_epi8(px, m23), w23)); \
        acc = _mm_add_epi32(acc, m);                                                         \
    } while (0)
            TAP4(a0, q);
            TAP4(a1, q + sstride);
            TAP4(a2, q + 2 * sstride);
            TAP4(a3, q + 3 * sstride);
#undef TAP4
        }
        __m128i v01 = _mm_packs_epi32(_mm_srai_epi32(a0, WBITS - HBITS), _mm_srai_epi32(a1, WBITS - HBITS));
        __m128i v23 = _mm_packs_epi32(_mm_srai_epi32(a2, WBITS - HBITS), _mm_srai_epi32(a3, WBITS - HBITS));
        const int pos = flip ? dw - 1 - o : o;
        int16_t *d = t + (size_t)pos * 3;
        uint64_t v[4] = {(uint64_t)_mm_cvtsi128_si64(v01), (uint64_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(v01, v01)),
                         (uint64_t)_mm_cvtsi128_si64(v23), (uint64_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(v23, v23))};
        for (int r4 = 0; r4 < 4; r4++) {
            if (pos != dw - 1) memcpy(d + (size_t)r4 * row, &v[r4], 8);  // spills into the next position
            else memcpy(d + (size_t)r4 * row, &v[r4], 6);
        }
    }
}

__attribute__((target("avx2"))) static inline __m256i z256(void) { return _mm256_setzero_si256(); }

static void vrow_sse2(const int16_t *t0, size_t row, const int16_t *wk, int K, uint8_t *d) {
    const int shift = WBITS + HBITS;
    const __m128i rnd = _mm_set1_epi32(1 << (shift - 1)), z = _mm_setzero_si128();
    size_t e = 0;
    for (; e + 8 <= row; e += 8) {
        __m128i lo = rnd, hi = rnd;
        for (int k = 0; k < K; k += 2) {
            __m128i a = _mm_loadu_si128((const __m128i *)(t0 + (size_t)k * row + e));
            __m128i b = k + 1 < K ? _mm_loadu_si128((const __m128i *)(t0 + (size_t)(k + 1) * row + e)) : z;
            __m128i w = wpair(wk + k);
            lo = _mm_add_epi32(lo, _mm_madd_epi16(_mm_unpacklo_epi16(a, b), w));
            hi = _mm_add_epi32(hi, _mm_madd_epi16(_mm_unpackhi_epi16(a, b), w));
        }
        __m128i v = _mm_packs_epi32(_mm_srai_epi32(lo, shift), _mm_srai_epi32(hi, shift));
        _mm_storel_epi64((__m128i *)(d + e), _mm_packus_epi16(v, v));
    }
    vrow_scalar(t0, row, wk, K, d, e);
}

// AVX2 horizontal: 8 rows, two per 256-bit register (one row per 128-bit lane, where pshufb and
// pmaddwd work), the same arithmetic as hrow4_ssse3.  Same load-safety contract, for 8 rows.
__attribute__((target("avx2"))) static void hrow8_avx2(const uint8_t *s, size_t sstride, const axis_taps *ax,
                                                        int dw, int flip, int16_t *t, size_t row, int o0, int o1) {
    const int K = ax->K;
    const __m256i rnd = _mm256_set1_epi32(1 << (WBITS - HBITS - 1));
    const __m256i m01 = _mm256_setr_epi8(0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1,
                                         0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1);
    const __m256i m23 = _mm256_setr_epi8(6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1, -1, -1, -1, -1,
                                         6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1, -1, -1, -1, -1);
    const int KG = ax->KP;
    for (int oi = o0; oi < o1; oi++) {
        const int o = flip ? o1 - 1 - (oi - o0) : oi;
        const uint8_t *p = s + (size_t)ax->start[o] * 3;
        const int16_t *wk = ax->w + (size_t)o * ax->KP;
        __m256i a[4] = {rnd, rnd, rnd, rnd};  // a[i]: rows i (low lane) and i + 4 (high lane)
        for (int k = 0; k < KG; k += 4) {
            int32_t v01, v23;
            memcpy(&v01, wk + k, 4);
            memcpy(&v23, wk + k + 2, 4);
            const __m256i w01 = _mm256_set1_epi32(v01), w23 = _mm256_set1_epi32(v23);
            const uint8_t *q = p + 3 * k;
            for (int i = 0; i < 4; i++) {
                __m256i px = _mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(q + i * sstride))),
                    _mm_loadu_si128((const __m128i *)(q + (i + 4) * sstride)), 1);
                __m256i m = _mm256_madd_epi16(_mm256_shuffle_epi8(px, m01), w01);
                if (K - k > 2) m = _mm256_add_epi32(m, _mm256_madd_epi16(_mm256_shuffle_epi8(px, m23), w23));
                a[i] = _mm256_add_epi32(a[i], m);  // (taps from K on have zero weight: skipped)
            }
        }
        const int pos = flip ? dw - 1 - o : o;
        int16_t *d = t + (size_t)pos * 3;
        // 8-byte stores spill one int16 into the next position, written after this one (positions
        // ascend: o ascends, or descends when flipped), except at the row's end: 6 bytes there.
        for (int i = 0; i < 4; i++) {
            __m256i v = _mm256_packs_epi32(_mm256_srai_epi32(a[i], WBITS - HBITS), z256());
            uint64_t lo = (uint64_t)_mm_cvtsi128_si64(_mm256_castsi256_si128(v));
            uint64_t hi = (uint64_t)_mm_cvtsi128_si64(_mm256_extracti128_si256(v, 1));
            if (pos != dw - 1) {
                memcpy(d + (size_t)i * row, &lo, 8);
                memcpy(d + (size_t)(i + 4) * row, &hi, 8);
            } else {
                memcpy(d + (size_t)i * row, &lo, 6);
                memcpy(d + (size_t)(i + 4) * row, &hi, 6);
            }
        }
    }
}

// AVX2: 16 outputs per step.  unpack and pack work within 128-bit lanes, so the packed int16 come
// out in order; the final byte pack leaves the two halves in qwords 0 and 2.
__attribute__((target("avx2"))) static void vrow_avx2(const int16_t *t0, size_t row, const int16_t *wk, int K,
                                                       uint8_t *d) {
    const int shift = WBITS + HBITS;
    const __m256i rnd = _mm256_set1_epi32(1 << (shift - 1)), z = _mm256_setzero_si256();
    size_t e = 0;
    for (; e + 16 <= row; e += 16) {
        __m256i lo = rnd, hi = rnd;
        for (int k = 0; k < K; k += 2) {
            __m256i a = _mm256_loadu_si256((const __m256i *)(t0 + (size_t)k * row + e));
            __m256i b = k + 1 < K ? _mm256_loadu_si256((const __m256i *)(t0 + (size_t)(k + 1) * row + e)) : z;
            int32_t wv;
            memcpy(&wv, wk + k, 4);
            __m256i w = _mm256_set1_epi32(wv);
            lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(a, b), w));
            hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(a, b), w));
        }
        __m256i v = _mm256_packs_epi32(_mm256_srai_epi32(lo, shift), _mm256_srai_epi32(hi, shift));
        v = _mm256_permute4x64_epi64(_mm256_packus_epi16(v, v), 0x08);
        _mm_storeu_si128((__m128i *)(d + e), _mm256_castsi256_si128(v));
    }
    vrow_scalar(t0, row, wk, K, d, e);
}
#endif

int vm_crop_resize_impl(const uint8_t *src, int sw, int sh, size_t sstride, int x, int y, int w, int h, uint8_t *dst,
                        int dw, int dh, int flip, int simd, vm_scratch *scratch, vm_error *err) {
    if (w < 1 || h < 1 || x < 0 || y < 0 || x + w > sw || y + h > sh || dw < 1 || dh < 1)
        return vm_fail(err, VM_EINVAL, "crop %dx%d+%d+%d of a %dx%d image to %dx%d: box outside the image or empty",
                       w, h, x, y, sw, sh, dw, dh);
    vm_scratch local = {0};
    if (!scratch) scratch = &local;
    int KB = taps_bound(w, dw) > taps_bound(h, dh) ? taps_bound(w, dw) : taps_bound(h, dh);
    // Scratch layout: tmp rows (h, dw*3) int16 | x starts | x weights | y starts | y weights | doubles
    const size_t row = (size_t)dw * 3, al = 64;
    size_t sz[6] = {(size_t)h * row * sizeof(int16_t), (size_t)dw * sizeof(int32_t), 0, (size_t)dh * sizeof(int32_t),
                    0, (size_t)KB * sizeof(double)};
    double *dtmp = scratch_get(scratch, sz[5]);
    if (!dtmp) return vm_fail(err, VM_ENOMEM, "crop resize %dx%d -> %dx%d: out of memory", w, h, dw, dh);
    int KX = taps_count(w, dw), KY = taps_count(h, dh);
    axis_taps ax = {KX, (KX + 3) & ~3, NULL, NULL}, ay = {KY, (KY + 3) & ~3, NULL, NULL};
    sz[2] = (size_t)dw * ax.KP * sizeof(int16_t);
    sz[4] = (size_t)dh * ay.KP * sizeof(int16_t);
    size_t off[6], total = 0;
    for (int i = 0; i < 6; i++) { off[i] = total; total += (sz[i] + al - 1) / al * al; }
    uint8_t *mem = scratch_get(scratch, total);
    if (!mem) return vm_fail(err, VM_ENOMEM, "crop resize %dx%d -> %dx%d: out of memory", w, h, dw, dh);
    int16_t *tmp = (int16_t *)(mem + off[0]);
    ax.start = (int32_t *)(mem + off[1]);
    ax.w = (int16_t *)(mem + off[2]);
    ay.start = (int32_t *)(mem + off[3]);
    ay.w = (int16_t *)(mem + off[4]);
    dtmp = (double *)(mem + off[5]);
    taps_build(&ax, w, dw, dtmp);
    taps_build(&ay, h, dh, dtmp);

    // Horizontal: every crop row -> tmp (h, dw, 3) in Q7; flip writes output column dw-1-o.
    const uint8_t *limit = src + (size_t)(sh - 1) * sstride + (size_t)sw * 3;
    int r = 0;
#ifdef __SSE2__
    if (simd) {
        const int ssse3 = __builtin_cpu_supports("ssse3");
        if (__builtin_cpu_supports("avx2")) {
            for (; r + 8 <= h && y + r + 7 < sh - 1; r += 8) {
                const uint8_t *s = src + (size_t)(y + r) * sstride + (size_t)x * 3;
                int safe = dw;  // as below, for the 8th row
                while (safe > 0 && s + 7 * sstride + (size_t)ax.start[safe - 1] * 3 + 3 * (ax.KP - 4) + 16 > limit)
                    safe--;
                hrow8_avx2(s, sstride, &ax, dw, flip, tmp + (size_t)r * row, row, 0, safe);
                hrow4_sse2(s, sstride, &ax, dw, flip, tmp + (size_t)r * row, row, safe, dw);
                hrow4_sse2(s + 4 * sstride, sstride, &ax, dw, flip, tmp + (size_t)(r + 4) * row, row, safe, dw);
            }
        }
        for (; r + 4 <= h && y + r + 3 < sh - 1; r += 4) {
            const uint8_t *s = src + (size_t)(y + r) * sstride + (size_t)x * 3;
            // Outputs [0, safe) have every 16-byte load of the 4th row inside the buffer (starts
            // ascend with o); those take SSSE3, the others SSE2's 4-byte loads (always inside: the
            // 4 rows end before the image's last row).
            int safe = 0;
            if (ssse3) {
                safe = dw;
                while (safe > 0 && s + 3 * sstride + (size_t)ax.start[safe - 1] * 3 + 3 * (ax.KP - 4) + 16 > limit)
                    safe--;
                hrow4_ssse3(s, sstride, &ax, dw, flip, tmp + (size_t)r * row, row, 0, safe);
            }
            hrow4_sse2(s, sstride, &ax, dw, flip, tmp + (size_t)r * row, row, safe, dw);
        }
    }
#endif
    for (; r < h; r++) {
        const uint8_t *s = src + (size_t)(y + r) * sstride + (size_t)x * 3;
        int16_t *t = tmp + (size_t)r * row;
#ifdef __SSE2__
        if (simd) { hrow_sse2(s, limit, &ax, dw, flip, t); continue; }
#endif
        (void)limit;
        hrow_scalar(s, &ax, dw, flip, t, 0, dw);
    }
    // Vertical: each output row is a weighted sum of KY consecutive tmp rows.
#ifdef __SSE2__
    const int avx2 = __builtin_cpu_supports("avx2");
#endif
    for (int o = 0; o < dh; o++) {
        const int16_t *wk = ay.w + (size_t)o * ay.KP, *t0 = tmp + (size_t)ay.start[o] * row;
        uint8_t *d = dst + (size_t)o * row;
#ifdef __SSE2__
        if (simd && avx2) { vrow_avx2(t0, row, wk, KY, d); continue; }
        if (simd) { vrow_sse2(t0, row, wk, KY, d); continue; }
#endif
        vrow_scalar(t0, row, wk, KY, d, 0);
    }
    (void)simd;
    vm_scratch_free(&local);
    return 0;
}

int vm_crop_resize_rgb(const uint8_t *src, int sw, int sh, size_t sstride, int x, int y, int w, int h,
                       uint8_t *dst, int dw, int dh, int flip, vm_scratch *scratch, vm_error *err) {
    return vm_crop_resize_impl(src, sw, sh, sstride, x, y, w, h, dst, dw, dh, flip, 1, scratch, err);
}

// ---- colour: torchvision.transforms.functional on uint8 tensors --------------------------------
// Results convert back to uint8 by truncation, as torchvision's `.to(torch.uint8)` does.

static inline uint8_t clamp_trunc(float v) { return (uint8_t)(v <= 0 ? 0 : v >= 255 ? 255 : v); }

// rgb_to_grayscale: 0.2989 R + 0.587 G + 0.114 B, truncated to uint8.
static inline uint8_t gray_of(const uint8_t *p) { return (uint8_t)(0.2989f * p[0] + 0.587f * p[1] + 0.114f * p[2]); }

void vm_grayscale_rgb(uint8_t *img, int w, int h) {
    for (size_t i = 0, n = (size_t)w * h; i < n; i++) {
        uint8_t g = gray_of(img + 3 * i);
        img[3 * i] = img[3 * i + 1] = img[3 * i + 2] = g;
    }
}

void vm_solarize_rgb(uint8_t *img, int w, int h, int threshold) {
    for (size_t i = 0, n = (size_t)w * h * 3; i < n; i++)
        if (img[i] >= threshold) img[i] = (uint8_t)(255 - img[i]);
}

static void adjust_brightness(uint8_t *img, size_t n, float f) {
    for (size_t i = 0; i < n * 3; i++) img[i] = clamp_trunc(f * img[i]);
}

static void adjust_contrast(uint8_t *img, size_t n, float f) {
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += gray_of(img + 3 * i);
    float mean = (float)(sum / (double)n), add = (1 - f) * mean;
    for (size_t i = 0; i < n * 3; i++) img[i] = clamp_trunc(f * img[i] + add);
}

static void adjust_saturation(uint8_t *img, size_t n, float f) {
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = img + 3 * i;
        float g = (1 - f) * gray_of(p);
        p[0] = clamp_trunc(f * p[0] + g);
        p[1] = clamp_trunc(f * p[1] + g);
        p[2] = clamp_trunc(f * p[2] + g);
    }
}

// torchvision _rgb2hsv / _hsv2rgb on [0, 1] floats, hue shifted by f (in turns).
static void adjust_hue(uint8_t *img, size_t n, float f) {
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = img + 3 * i;
        float r = p[0] / 255.f, g = p[1] / 255.f, b = p[2] / 255.f;
        float maxc = fmaxf(r, fmaxf(g, b)), minc = fminf(r, fminf(g, b)), cr = maxc - minc;
        float s = cr / (maxc == 0 ? 1 : maxc), hh = 0;
        if (cr > 0) {
            float rc = (maxc - r) / cr, gc = (maxc - g) / cr, bc = (maxc - b) / cr;
            if (maxc == r) hh = bc - gc;
            else if (maxc == g) hh = 2.f + rc - bc;
            else hh = 4.f + gc - rc;
            hh = fmodf(hh / 6.f + 1.f, 1.f);
        }
        hh = fmodf(hh + f + 1.f, 1.f);
        float v = maxc, h6 = hh * 6.f;
        int sec = (int)floorf(h6) % 6;
        float fr = h6 - floorf(h6);
        float pp = v * (1 - s), q = v * (1 - s * fr), t = v * (1 - s * (1 - fr));
        float o[3];
        switch (sec) {
        case 0: o[0] = v; o[1] = t; o[2] = pp; break;
        case 1: o[0] = q; o[1] = v; o[2] = pp; break;
        case 2: o[0] = pp; o[1] = v; o[2] = t; break;
        case 3: o[0] = pp; o[1] = q; o[2] = v; break;
        case 4: o[0] = t; o[1] = pp; o[2] = v; break;
        default: o[0] = v; o[1] = pp; o[2] = q; break;
        }
        for (int c = 0; c < 3; c++) p[c] = clamp_trunc(o[c] * 255.f);
    }
}

void vm_color_jitter_rgb(uint8_t *img, int w, int h, const vm_view_plan *p) {
    size_t n = (size_t)w * h;
    for (int i = 0; i < 4; i++) {
        switch (p->jitter_order[i]) {
        case 0: if (p->brightness != 1.f) adjust_brightness(img, n, p->brightness); break;
        case 1: if (p->contrast != 1.f) adjust_contrast(img, n, p->contrast); break;
        case 2: if (p->saturation != 1.f) adjust_saturation(img, n, p->saturation); break;
        case 3: if (p->hue != 0.f) adjust_hue(img, n, p->hue); break;
        }
    }
}

// torchvision gaussian_blur: separable kernel exp(-x^2 / 2 sigma^2) over x = -(k-1)/2 .. (k-1)/2,
// reflect padding (mirror without repeating the edge), result rounded.
int vm_gaussian_blur_rgb(uint8_t *img, int w, int h, int ksize, float sigma, vm_scratch *scratch, vm_error *err) {
    if (ksize < 1 || !(ksize & 1) || sigma <= 0)
        return vm_fail(err, VM_EINVAL, "gaussian blur: kernel size %d must be odd and positive, sigma %g > 0", ksize,
                       sigma);
    int r = ksize / 2;
    if (r >= w || r >= h)
        return vm_fail(err, VM_EINVAL, "gaussian blur: kernel %d too large for a %dx%d image", ksize, w, h);
    vm_scratch local = {0};
    if (!scratch) scratch = &local;
    const size_t row = (size_t)w * 3, n = row * h, prow = (size_t)(w + 2 * r) * 3;
    float *mem = scratch_get(scratch, (n + prow + row + (size_t)ksize) * sizeof(float));
    if (!mem) return vm_fail(err, VM_ENOMEM, "gaussian blur %dx%d: out of memory", w, h);
    float *tmp = mem, *pad = tmp + n, *acc = pad + prow, *k = acc + row, sum = 0;
    for (int i = 0; i < ksize; i++) {
        float x = (float)(i - r) / sigma;
        k[i] = expf(-0.5f * x * x);
        sum += k[i];
    }
    for (int i = 0; i < ksize; i++) k[i] /= sum;
    // Horizontal into tmp: each row padded by reflection, then contiguous multiply-adds (vectorise).
    for (int yy = 0; yy < h; yy++) {
        const uint8_t *src = img + (size_t)yy * row;
        for (int xx = -r; xx < w + r; xx++) {
            int sx = xx < 0 ? -xx : xx >= w ? 2 * w - 2 - xx : xx;
            for (int c = 0; c < 3; c++) pad[(size_t)(xx + r) * 3 + c] = src[(size_t)sx * 3 + c];
        }
        float *t = tmp + (size_t)yy * row;
        for (size_t e = 0; e < row; e++) t[e] = 0;
        for (int i = 0; i < ksize; i++) {
            const float ki = k[i], *pp = pad + (size_t)i * 3;
            for (size_t e = 0; e < row; e++) t[e] += ki * pp[e];
        }
    }
    // Vertical back into img, rows reflected at the borders, rounded as torchvision does.
    for (int yy = 0; yy < h; yy++) {
        for (size_t e = 0; e < row; e++) acc[e] = 0;
        for (int i = -r; i <= r; i++) {
            int sy = yy + i < 0 ? -(yy + i) : yy + i >= h ? 2 * h - 2 - (yy + i) : yy + i;
            const float ki = k[i + r], *t = tmp + (size_t)sy * row;
            for (size_t e = 0; e < row; e++) acc[e] += ki * t[e];
        }
        uint8_t *d = img + (size_t)yy * row;
        for (size_t e = 0; e < row; e++) {
            float v = roundf(acc[e]);
            d[e] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
    vm_scratch_free(&local);
    return 0;
}

// ---- one planned view ---------------------------------------------------------------------------

int vm_sampler_render(const vm_sampler *s, const uint8_t *frame, int width, int height, const vm_view_plan *p,
                      uint8_t *out, vm_scratch *scratch, vm_error *err) {
    const int S = s->size;
    int rc = vm_crop_resize_rgb(frame, width, height, (size_t)width * 3, p->crop_x, p->crop_y, p->crop_w, p->crop_h,
                                out, S, S, p->flip, scratch, err);
    if (rc) return rc;
    // torchvision order of a SimCLR/BYOL pipeline: jitter, grayscale, blur, solarize.
    if (p->jitter) vm_color_jitter_rgb(out, S, S, p);
    if (p->grayscale) vm_grayscale_rgb(out, S, S);
    if (p->blur && s->blur_ksize > 1 && s->blur_ksize / 2 < S) {
        rc = vm_gaussian_blur_rgb(out, S, S, s->blur_ksize, p->blur_sigma, scratch, err);
        if (rc) return rc;
    }
    if (p->solarize) vm_solarize_rgb(out, S, S, 128);
    return 0;
}
