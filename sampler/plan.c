// sampler/plan.c — the sampling policies and augmentation draws: pure functions of
// (seed, epoch, video id, draw) and the video's frame count, timestamps and size.  No pixels.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "common/rng.h"
#include "sampler/internal.h"

// ---- create -------------------------------------------------------------------------------------

static void preset(vm_sampler *s) {
    const vm_config *c = &s->cfg;
    vm_color_params p = {c->sampler.jitter_p, c->sampler.jitter_brightness, c->sampler.jitter_contrast,
                         c->sampler.jitter_saturation, c->sampler.jitter_hue, c->sampler.grayscale_p,
                         c->sampler.blur_p, c->sampler.solarize_p};
    s->color[0] = s->color[1] = p;
    if (c->sampler.aug_preset == VM_AUG_SIMCLR) {
        // SimCLR (Chen et al. 2020, colour distortion strength 1.0; blur 0.5 as in MoCo v2 / SimCLR).
        vm_color_params q = {0.8, 0.8, 0.8, 0.8, 0.2, 0.2, 0.5, 0.0};
        s->color[0] = s->color[1] = q;
    } else if (c->sampler.aug_preset == VM_AUG_BYOL) {
        // BYOL (Grill et al. 2020, table 6): asymmetric blur and solarisation between the views.
        vm_color_params q0 = {0.8, 0.4, 0.4, 0.2, 0.1, 0.2, 1.0, 0.0};
        vm_color_params q1 = {0.8, 0.4, 0.4, 0.2, 0.1, 0.2, 0.1, 0.2};
        s->color[0] = q0;
        s->color[1] = q1;
    }
}

int vm_sampler_create(const vm_config *cfg, vm_sampler **out, vm_error *err) {
    *out = NULL;
    const int S = cfg->model.img_size;
    if (S < 1) return vm_fail(err, VM_EINVAL, "[model] img_size %d: must be positive", S);
    if (cfg->sampler.gap_min > cfg->sampler.gap_max)
        return vm_fail(err, VM_EINVAL, "[sampler] gap_min %g is larger than gap_max %g", cfg->sampler.gap_min,
                       cfg->sampler.gap_max);
    if (cfg->sampler.scale_min > cfg->sampler.scale_max || cfg->sampler.scale_min <= 0)
        return vm_fail(err, VM_EINVAL, "[sampler] scale range [%g, %g] is empty", cfg->sampler.scale_min,
                       cfg->sampler.scale_max);
    if (cfg->sampler.ratio_min > cfg->sampler.ratio_max || cfg->sampler.ratio_min <= 0)
        return vm_fail(err, VM_EINVAL, "[sampler] ratio range [%g, %g] is empty", cfg->sampler.ratio_min,
                       cfg->sampler.ratio_max);
    int views;
    switch (cfg->sampler.policy) {
    case VM_POLICY_PAIR: views = 2; break;
    case VM_POLICY_CLIP: views = cfg->sampler.clip_len; break;
    case VM_POLICY_MULTIVIEW: views = cfg->sampler.num_clips * cfg->sampler.num_crops * cfg->sampler.clip_len; break;
    default: return vm_fail(err, VM_EINVAL, "[sampler] policy %d: unknown", cfg->sampler.policy);
    }
    if (views < 1 || views > VM_BATCH_MAX_VIEWS)
        return vm_fail(err, VM_EINVAL,
                       "[sampler] policy %s gives %d views per sample; a batch carries 1 to %d "
                       "(clip_len x num_clips x num_crops)",
                       vm_config_enum_name("sampler", "policy", cfg->sampler.policy), views, VM_BATCH_MAX_VIEWS);
    vm_sampler *s = calloc(1, sizeof *s);
    if (!s) return vm_fail(err, VM_ENOMEM, "sampler: out of memory");
    s->cfg = *cfg;
    s->policy = cfg->sampler.policy;
    s->views = views;
    s->size = S;
    s->seed = (uint64_t)cfg->run.seed;
    preset(s);
    s->blur_ksize = (int)(0.1 * S) | 1;  // torchvision/BYOL: kernel about 10% of the image, odd
    *out = s;
    return 0;
}

void vm_sampler_free(vm_sampler *s) { free(s); }
int vm_sampler_views(const vm_sampler *s) { return s->views; }
int vm_sampler_size(const vm_sampler *s) { return s->size; }

// ---- augmentation draws ---------------------------------------------------------------------------

// torchvision RandomResizedCrop.get_params, draw for draw (Python's round() is round-half-even,
// which nearbyint gives in the default rounding mode).
static void random_resized_crop(vm_rng *r, int W, int H, double smin, double smax, double rmin, double rmax,
                                vm_view_plan *p) {
    double area = (double)W * H, lr0 = log(rmin), lr1 = log(rmax);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target = area * vm_rng_range(r, smin, smax);
        double aspect = exp(vm_rng_range(r, lr0, lr1));
        int w = (int)nearbyint(sqrt(target * aspect)), h = (int)nearbyint(sqrt(target / aspect));
        if (0 < w && w <= W && 0 < h && h <= H) {
            p->crop_y = (int32_t)vm_rng_int(r, 0, H - h);
            p->crop_x = (int32_t)vm_rng_int(r, 0, W - w);
            p->crop_w = w;
            p->crop_h = h;
            return;
        }
    }
    double in_ratio = (double)W / H;
    int w, h;
    if (in_ratio < rmin) {
        w = W;
        h = (int)nearbyint(w / rmin);
    } else if (in_ratio > rmax) {
        h = H;
        w = (int)nearbyint(h * rmax);
    } else {
        w = W;
        h = H;
    }
    if (w > W) w = W;  // rounding can overshoot by one on tiny frames
    if (h > H) h = H;
    if (w < 1) w = 1;
    if (h < 1) h = 1;
    p->crop_w = w;
    p->crop_h = h;
    p->crop_y = (H - h) / 2;
    p->crop_x = (W - w) / 2;
}

// Every draw is made whether or not its augmentation is enabled, so that switching one on does not
// change the others' random numbers.
static void draw_augment(const vm_sampler *s, vm_rng *r, int W, int H, int slot, vm_view_plan *p) {
    const vm_config *c = &s->cfg;
    const vm_color_params *cp = &s->color[slot & 1];
    random_resized_crop(r, W, H, c->sampler.scale_min, c->sampler.scale_max, c->sampler.ratio_min,
                        c->sampler.ratio_max, p);
    p->flip = vm_rng_uniform(r) < c->sampler.flip_p;
    p->jitter = vm_rng_uniform(r) < cp->jitter_p;
    uint8_t perm[4] = {0, 1, 2, 3};
    for (int i = 3; i > 0; i--) {  // Fisher-Yates: torchvision's randperm(4) order of the four ops
        int j = (int)vm_rng_int(r, 0, i);
        uint8_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    memcpy(p->jitter_order, perm, 4);
    p->brightness = (float)vm_rng_range(r, fmax(0, 1 - cp->brightness), 1 + cp->brightness);
    p->contrast = (float)vm_rng_range(r, fmax(0, 1 - cp->contrast), 1 + cp->contrast);
    p->saturation = (float)vm_rng_range(r, fmax(0, 1 - cp->saturation), 1 + cp->saturation);
    p->hue = (float)vm_rng_range(r, -cp->hue, cp->hue);
    p->grayscale = vm_rng_uniform(r) < cp->grayscale_p;
    p->blur = vm_rng_uniform(r) < cp->blur_p;
    p->blur_sigma = (float)vm_rng_range(r, 0.1, 2.0);
    p->solarize = vm_rng_uniform(r) < cp->solarize_p;
    if (!p->jitter) {  // identity factors: the plan says exactly what render does
        p->brightness = p->contrast = p->saturation = 1.f;
        p->hue = 0.f;
    }
}

// ---- frame choice ---------------------------------------------------------------------------------

// Position of frame i on the gap axis: nanoseconds (seconds unit) or the index (frames unit).
static inline int64_t tpos(const int64_t *pts, int64_t i) { return pts ? pts[i] : i; }

// First index in [lo, n) with tpos >= t (n if none).
static int64_t lower_bound(const int64_t *pts, int64_t lo, int64_t n, int64_t t) {
    int64_t hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (tpos(pts, mid) < t) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

// Pair, uniform mode: uniform over all (i <= j) with gap in [g0, g1] (gap axis units).  Returns 0,
// or 1 when no pair qualifies.  Two passes over i (count, then locate the drawn pair) with two
// monotone pointers: O(frames), no allocation.
static int pair_uniform(vm_rng *r, const int64_t *pts, int64_t n, int64_t g0, int64_t g1, int64_t *fi, int64_t *fj) {
    int64_t total = 0;
    for (int pass = 0; pass < 2; pass++) {
        int64_t want = pass ? vm_rng_int(r, 0, total - 1) : 0, seen = 0, lo = 0, hi = 0;
        for (int64_t i = 0; i < n; i++) {
            if (lo < i) lo = i;
            while (lo < n && tpos(pts, lo) - tpos(pts, i) < g0) lo++;
            if (hi < lo) hi = lo;
            while (hi < n && tpos(pts, hi) - tpos(pts, i) <= g1) hi++;
            int64_t c = hi - lo;  // partners j in [lo, hi)
            if (pass && want < seen + c) {
                *fi = i;
                *fj = lo + (want - seen);
                return 0;
            }
            seen += c;
        }
        total = seen;
        if (!total) return 1;
    }
    return 1;  // not reached: pass 1 finds the pair
}

// Pair with a gap the video cannot hold: target gap g (already clamped to the span), a random first
// frame among those leaving room for g, the partner nearest t_i + g.
static void pair_clamped(vm_rng *r, const int64_t *pts, int64_t n, int64_t g, int64_t *fi, int64_t *fj) {
    int64_t last = tpos(pts, n - 1);
    int64_t room = lower_bound(pts, 0, n, last - g + 1);  // frames with t_i <= last - g: [0, room)
    if (room < 1) room = 1;
    int64_t i = vm_rng_int(r, 0, room - 1), t = tpos(pts, i) + g;
    int64_t j = lower_bound(pts, i, n, t);
    if (j >= n) j = n - 1;
    if (j > i && tpos(pts, j) - t > t - tpos(pts, j - 1)) j--;  // nearer neighbour below
    *fi = i;
    *fj = j;
}

static int plan_pair(const vm_sampler *s, vm_rng *r, int64_t n, const int64_t *pts, int64_t *f, vm_error *err) {
    const vm_config *c = &s->cfg;
    const int skip = c->sampler.short_video == VM_SHORT_SKIP;
    if (c->sampler.gap_unit == VM_UNIT_FRAMES) pts = NULL;  // gap axis = frame index
    switch (c->sampler.mode) {
    case VM_PAIR_SAME:
        f[0] = f[1] = vm_rng_int(r, 0, n - 1);
        return 0;
    case VM_PAIR_DISTANT: {
        if (n < 2) {
            if (skip) return vm_fail(err, VM_ERANGE, "1 frame: distant sampling needs 2 (short_video = skip)");
            f[0] = f[1] = 0;
            return 0;
        }
        int64_t t0 = tpos(pts, 0), t1 = tpos(pts, n - 1);
        int64_t h = lower_bound(pts, 0, n, t0 + (t1 - t0 + 1) / 2);  // first frame of the second half
        if (h < 1) h = 1;
        if (h > n - 1) h = n - 1;
        f[0] = vm_rng_int(r, 0, h - 1);
        f[1] = vm_rng_int(r, h, n - 1);
        return 0;
    }
    default: {  // uniform
        int64_t g0, g1;
        // Gap bounds on the gap axis, capped far beyond any video (the schema allows up to 1e18 s).
        const double unit = pts ? 1e9 : 1.0, cap = 4e18;
        g0 = (int64_t)(pts ? llround(fmin(c->sampler.gap_min * unit, cap)) : ceil(fmin(c->sampler.gap_min, cap)));
        g1 = (int64_t)(pts ? llround(fmin(c->sampler.gap_max * unit, cap)) : floor(fmin(c->sampler.gap_max, cap)));
        if (g1 >= g0 && !pair_uniform(r, pts, n, g0, g1, &f[0], &f[1])) return 0;
        int64_t span = tpos(pts, n - 1) - tpos(pts, 0);
        if (skip)
            return vm_fail(err, VM_ERANGE,
                           "%lld frames spanning %.3f %s: no pair with a gap in [%g, %g] (short_video = skip)",
                           (long long)n, pts ? span / 1e9 : (double)span, pts ? "s" : "frames",
                           c->sampler.gap_min, c->sampler.gap_max);
        double g = fmin(vm_rng_range(r, c->sampler.gap_min, c->sampler.gap_max) * unit, (double)span);
        int64_t gi = (int64_t)llround(g);
        if (gi > span) gi = span;
        pair_clamped(r, pts, n, gi, &f[0], &f[1]);
        return 0;
    }
    }
}

// Frames of one clip: T frames `stride` apart from `start`, the last frame repeated past the end.
static void clip_frames(int64_t n, int T, int stride, int64_t start, int64_t *f) {
    for (int t = 0; t < T; t++) {
        int64_t i = start + (int64_t)t * stride;
        f[t] = i < n ? i : n - 1;
    }
}

// TSN segments: segment t is [floor(t n / T), floor((t + 1) n / T)), at least one frame wide.
static void segment(int64_t n, int T, int t, int64_t *lo, int64_t *hi) {
    *lo = (int64_t)t * n / T;
    *hi = (int64_t)(t + 1) * n / T;
    if (*lo > n - 1) *lo = n - 1;
    if (*hi <= *lo) *hi = *lo + 1;
}

int vm_sampler_plan(const vm_sampler *s, uint64_t video_id, uint32_t epoch, uint64_t draw, int64_t frames,
                    const int64_t *pts_ns, int width, int height, vm_view_plan *views, vm_error *err) {
    const vm_config *c = &s->cfg;
    if (frames < 1 || width < 1 || height < 1)
        return vm_fail(err, VM_EINVAL, "video %llu: %lld frames of %dx%d: nothing to sample",
                       (unsigned long long)video_id, (long long)frames, width, height);
    if (s->policy == VM_POLICY_PAIR && c->sampler.gap_unit == VM_UNIT_SECONDS && !pts_ns &&
        c->sampler.mode != VM_PAIR_SAME)
        return vm_fail(err, VM_EINVAL, "video %llu: gap_unit = seconds needs the frame timestamps",
                       (unsigned long long)video_id);
    memset(views, 0, sizeof *views * s->views);
    vm_rng r;
    vm_rng_init(&r, s->seed, vm_rng_stream(VM_RNG_SAMPLER, epoch, video_id, draw));
    const int T = c->sampler.clip_len, stride = c->sampler.clip_stride;
    const int64_t span = (int64_t)(T - 1) * stride + 1;
    const int skip = c->sampler.short_video == VM_SHORT_SKIP;

    if (s->policy == VM_POLICY_PAIR) {
        int64_t f[2];
        int rc = plan_pair(s, &r, frames, pts_ns, f, err);
        if (rc) return rc;
        for (int j = 0; j < 2; j++) {
            vm_rng a;
            vm_rng_init(&a, s->seed, vm_rng_stream(VM_RNG_AUGMENT, epoch, video_id, draw << 16 | (uint64_t)j));
            views[j].frame = f[j];
            draw_augment(s, &a, width, height, j, &views[j]);
        }
        return 0;
    }
    if (s->policy == VM_POLICY_CLIP) {
        int64_t *f = malloc(sizeof(int64_t) * T);
        if (!f) return vm_fail(err, VM_ENOMEM, "sampler: out of memory");
        if (stride > 0) {
            if (frames < span && skip) {
                free(f);
                return vm_fail(err, VM_ERANGE, "%lld frames: a clip of %d frames %d apart needs %lld (short_video = skip)",
                               (long long)frames, T, stride, (long long)span);
            }
            int64_t start = frames > span ? vm_rng_int(&r, 0, frames - span) : 0;
            clip_frames(frames, T, stride, start, f);
        } else {
            for (int t = 0; t < T; t++) {
                int64_t lo, hi;
                segment(frames, T, t, &lo, &hi);
                f[t] = vm_rng_int(&r, lo, hi - 1);
            }
        }
        vm_rng a;
        vm_rng_init(&a, s->seed, vm_rng_stream(VM_RNG_AUGMENT, epoch, video_id, draw << 16));
        vm_view_plan shared = {0};
        draw_augment(s, &a, width, height, 0, &shared);  // one spatial/colour draw for the whole clip
        for (int t = 0; t < T; t++) {
            views[t] = shared;
            views[t].frame = f[t];
        }
        free(f);
        return 0;
    }
    // multiview: deterministic evaluation views
    const int NC = c->sampler.num_clips, NK = c->sampler.num_crops;
    const int side = width < height ? width : height, L = (width > height ? width : height) - side;
    for (int ci = 0; ci < NC; ci++) {
        for (int t = 0; t < T; t++) {
            int64_t fr;
            if (stride > 0) {
                int64_t room = frames > span ? frames - span : 0;
                int64_t start = NC > 1 ? (int64_t)llround((double)ci * room / (NC - 1)) : room / 2;
                int64_t i = start + (int64_t)t * stride;
                fr = i < frames ? i : frames - 1;
            } else {
                fr = (int64_t)floor((t + (ci + 0.5) / NC) * (double)frames / T);
                if (fr > frames - 1) fr = frames - 1;
            }
            for (int k = 0; k < NK; k++) {
                vm_view_plan *p = &views[((size_t)ci * NK + k) * T + t];
                int pos = NK > 1 ? (int)lround((double)k * L / (NK - 1)) : L / 2;
                p->frame = fr;
                p->crop_w = p->crop_h = side;
                p->crop_x = width > height ? pos : 0;
                p->crop_y = width > height ? 0 : pos;
                p->brightness = p->contrast = p->saturation = 1.f;
            }
        }
    }
    return 0;
}
