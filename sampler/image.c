// sampler/image.c — crop + resize + flip and the colour operations, on packed RGB uint8.
//
// The resize is PIL's BILINEAR resampling (what torchvision's RandomResizedCrop applies to PIL
// images, and to tensors with antialias=True): a triangle filter whose support widens with the
// shrink factor, so that shrinking averages every source pixel instead of aliasing, and enlarging
// is half-pixel-centred bilinear.  Taps stay inside the crop (torchvision crops, then resizes).
// Separable, in fixed point: horizontal pass into int16 (Q7), vertical pass from it.
//
// Why our own kernel and not libyuv or libswscale: libyuv's bilinear maps corners to corners when
// enlarging (a half-pixel shift against torchvision), its RGB path goes through ARGB copies and it
// only box-filters planes; libswscale needs a context per (crop size, output size) pair, and every
// random crop has its own size.  bench/bench_sampler.sh measures this kernel against OpenCV.
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
// weights w[o * K + k] (zero-padded so that every output has exactly K taps: branch-free loops).
typedef struct {
    int K;
    int32_t *start;   // [out_len]
    int16_t *w;       // [out_len * K]
} axis_taps;

static int taps_count(int in_len, int out_len) {
    double scale = (double)in_len / out_len, fs = scale > 1 ? scale : 1;
    int K = (int)ceil(fs) * 2 + 1;  // PIL's bound on the taps of one output
    return K < in_len ? K : in_len;
}

// PIL precompute_coeffs for the bilinear (triangle, support 1) filter.
static void taps_build(axis_taps *a, int in_len, int out_len, double *tmp /*[K]*/) {
    double scale = (double)in_len / out_len, fs = scale > 1 ? scale : 1, support = fs, ss = 1.0 / fs;
    int K = a->K;
    for (int o = 0; o < out_len; o++) {
        double center = (o + 0.5) * scale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_len) xmax = in_len;
        int n = xmax - xmin;
        if (n > K) n = K;  // cannot happen (K bounds it); keeps the writes in range regardless
        double sum = 0;
        for (int x = 0; x < n; x++) {
            double t = fabs((x + xmin - center + 0.5) * ss);
            tmp[x] = t < 1 ? 1 - t : 0;
            sum += tmp[x];
        }
        int start = xmin + K > in_len ? in_len - K : xmin, off = xmin - start;
        int16_t *w = a->w + (size_t)o * K;
        memset(w, 0, sizeof(int16_t) * K);
        int isum = 0, big = off;
        for (int x = 0; x < n; x++) {
            int q = (int)lround(tmp[x] / sum * (1 << WBITS));
            w[off + x] = (int16_t)q;
            isum += q;
            if (q > w[big]) big = off + x;
        }
        w[big] += (int16_t)((1 << WBITS) - isum);  // exact unit sum: flat areas stay flat
        a->start[o] = start;
    }
}

int vm_crop_resize_rgb(const uint8_t *src, int sw, int sh, size_t sstride, int x, int y, int w, int h,
                       uint8_t *dst, int dw, int dh, int flip, vm_scratch *scratch, vm_error *err) {
    if (w < 1 || h < 1 || x < 0 || y < 0 || x + w > sw || y + h > sh || dw < 1 || dh < 1)
        return vm_fail(err, VM_EINVAL, "crop %dx%d+%d+%d of a %dx%d image to %dx%d: box outside the image or empty",
                       w, h, x, y, sw, sh, dw, dh);
    vm_scratch local = {0};
    if (!scratch) scratch = &local;
    int KX = taps_count(w, dw), KY = taps_count(h, dh), KM = KX > KY ? KX : KY;
    // Layout of the scratch block: tmp rows (h, dw*3) int16 | acc (dw*3) int32 | x taps | y taps | doubles
    size_t row = (size_t)dw * 3;
    size_t n_tmp = (size_t)h * row * sizeof(int16_t), n_acc = row * sizeof(int32_t);
    size_t n_xs = (size_t)dw * sizeof(int32_t), n_xw = (size_t)dw * KX * sizeof(int16_t);
    size_t n_ys = (size_t)dh * sizeof(int32_t), n_yw = (size_t)dh * KY * sizeof(int16_t);
    size_t al = 64, total = 0, off[7], sz[7] = {n_tmp, n_acc, n_xs, n_xw, n_ys, n_yw, KM * sizeof(double)};
    for (int i = 0; i < 7; i++) { off[i] = total; total += (sz[i] + al - 1) / al * al; }
    uint8_t *mem = scratch_get(scratch, total);
    if (!mem) return vm_fail(err, VM_ENOMEM, "crop resize %dx%d -> %dx%d: out of memory", w, h, dw, dh);
    int16_t *tmp = (int16_t *)(mem + off[0]);
    int32_t *acc = (int32_t *)(mem + off[1]);
    axis_taps ax = {KX, (int32_t *)(mem + off[2]), (int16_t *)(mem + off[3])};
    axis_taps ay = {KY, (int32_t *)(mem + off[4]), (int16_t *)(mem + off[5])};
    double *dtmp = (double *)(mem + off[6]);
    taps_build(&ax, w, dw, dtmp);
    taps_build(&ay, h, dh, dtmp);

    // Horizontal: every crop row -> tmp (h, dw, 3) in Q7.  Flip writes output column dw-1-o.
    for (int r = 0; r < h; r++) {
        const uint8_t *s = src + (size_t)(y + r) * sstride + (size_t)x * 3;
        int16_t *t = tmp + (size_t)r * row;
        for (int o = 0; o < dw; o++) {
            const uint8_t *p = s + (size_t)ax.start[o] * 3;
            const int16_t *wk = ax.w + (size_t)o * KX;
            int32_t a0 = 0, a1 = 0, a2 = 0;
            for (int k = 0; k < KX; k++) {
                a0 += wk[k] * p[3 * k];
                a1 += wk[k] * p[3 * k + 1];
                a2 += wk[k] * p[3 * k + 2];
            }
            int16_t *q = t + (size_t)(flip ? dw - 1 - o : o) * 3;
            const int32_t rnd = 1 << (WBITS - HBITS - 1);
            q[0] = (int16_t)((a0 + rnd) >> (WBITS - HBITS));
            q[1] = (int16_t)((a1 + rnd) >> (WBITS - HBITS));
            q[2] = (int16_t)((a2 + rnd) >> (WBITS - HBITS));
        }
    }
    // Vertical: each output row is a weighted sum of KY tmp rows (contiguous: vectorises).
    const int shift = WBITS + HBITS;
    const int32_t rnd = 1 << (shift - 1);
    for (int o = 0; o < dh; o++) {
        const int16_t *wk = ay.w + (size_t)o * KY;
        const int16_t *t0 = tmp + (size_t)ay.start[o] * row;
        for (size_t e = 0; e < row; e++) acc[e] = rnd;
        for (int k = 0; k < KY; k++) {
            const int32_t wv = wk[k];
            const int16_t *t = t0 + (size_t)k * row;
            if (!wv) continue;
            for (size_t e = 0; e < row; e++) acc[e] += wv * t[e];
        }
        uint8_t *d = dst + (size_t)o * row;
        for (size_t e = 0; e < row; e++) {
            int32_t v = acc[e] >> shift;
            d[e] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
    vm_scratch_free(&local);
    return 0;
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
    size_t n = (size_t)w * h * 3;
    float *mem = scratch_get(scratch, (n + (size_t)ksize) * sizeof(float));
    if (!mem) return vm_fail(err, VM_ENOMEM, "gaussian blur %dx%d: out of memory", w, h);
    float *tmp = mem, *k = mem + n, sum = 0;
    for (int i = 0; i < ksize; i++) {
        float x = (float)(i - r) / sigma;
        k[i] = expf(-0.5f * x * x);
        sum += k[i];
    }
    for (int i = 0; i < ksize; i++) k[i] /= sum;
#define REFLECT(i, n) ((i) < 0 ? -(i) : (i) >= (n) ? 2 * (n) - 2 - (i) : (i))
    for (int yy = 0; yy < h; yy++)  // horizontal into tmp
        for (int xx = 0; xx < w; xx++)
            for (int c = 0; c < 3; c++) {
                float a = 0;
                for (int i = -r; i <= r; i++) a += k[i + r] * img[((size_t)yy * w + REFLECT(xx + i, w)) * 3 + c];
                tmp[((size_t)yy * w + xx) * 3 + c] = a;
            }
    for (int yy = 0; yy < h; yy++)  // vertical back into img
        for (int xx = 0; xx < w; xx++)
            for (int c = 0; c < 3; c++) {
                float a = 0;
                for (int i = -r; i <= r; i++) a += k[i + r] * tmp[((size_t)REFLECT(yy + i, h) * w + xx) * 3 + c];
                float v = roundf(a);
                img[((size_t)yy * w + xx) * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
#undef REFLECT
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
