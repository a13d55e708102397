// sampler/sampler.c — rendering planned views and drawing samples from a decoder.
#include <stdlib.h>
#include <string.h>
#include "common/io.h"
#include "sampler/internal.h"

void vm_sampler_decoder_options(const vm_sampler *s, vm_decoder_options *opt) {
    vm_decoder_options_default(opt);
    const vm_config *c = &s->cfg;
    opt->size_mode = c->decoder.decode_short_side > 0 ? VM_DEC_SHORT_SIDE : VM_DEC_NATIVE;
    opt->short_side = c->decoder.decode_short_side;
    opt->hw = c->decoder.hw == VM_HW_OFF ? VM_DEC_HW_OFF : VM_DEC_HW_AUTO;
    opt->timeout_ms = c->decoder.timeout_ms;
    opt->index_cache = c->decoder.index_cache[0] ? c->decoder.index_cache : NULL;
}

typedef struct {
    int64_t frame;
    int view;  // index into the n * V plans
} frame_ref;

static int cmp_ref(const void *a, const void *b) {
    const frame_ref *x = a, *y = b;
    if (x->frame != y->frame) return x->frame < y->frame ? -1 : 1;
    return x->view - y->view;
}

// Frames held in memory at once: bounds the working set for long clips and many pairs (at most
// CHUNK_FRAMES frames and, above one frame, CHUNK_BYTES), at the price of a decoder call per chunk
// (the decoder continues forward from where the previous call stopped, without seeking).
#define CHUNK_FRAMES 16
#define CHUNK_BYTES ((size_t)64 << 20)

int vm_sampler_draw(const vm_sampler *s, vm_decoder *dec, uint64_t video_id, uint32_t epoch, uint64_t first_draw,
                    int n, uint8_t *pixels, vm_sample_meta *samples, vm_view_meta *views, vm_sampler_stats *stats,
                    vm_error *err) {
    if (n < 1) return vm_fail(err, VM_EINVAL, "video %llu: %d samples requested", (unsigned long long)video_id, n);
    const vm_video_info *vi = vm_decoder_info(dec);
    const int V = s->views, S = s->size, W = vi->out_width, H = vi->out_height;
    const size_t nv = (size_t)n * V, view_bytes = (size_t)S * S * 3, frame_bytes = (size_t)W * H * 3;
    vm_view_plan *plans = malloc(sizeof *plans * nv);
    frame_ref *refs = malloc(sizeof *refs * nv);
    const int chunk = frame_bytes * CHUNK_FRAMES <= CHUNK_BYTES ? CHUNK_FRAMES
                      : frame_bytes >= CHUNK_BYTES                ? 1
                                                                  : (int)(CHUNK_BYTES / frame_bytes);
    int64_t *want = malloc(sizeof *want * CHUNK_FRAMES);
    uint8_t *fbuf = NULL;
    vm_scratch scratch = {0};
    int rc = 0;
    if (!plans || !refs || !want) {
        rc = vm_fail(err, VM_ENOMEM, "video %llu: out of memory for %d samples", (unsigned long long)video_id, n);
        goto done;
    }
    for (int b = 0; b < n; b++) {
        rc = vm_sampler_plan(s, video_id, epoch, first_draw + (uint64_t)b, vi->frames, vi->pts, W, H,
                             plans + (size_t)b * V, err);
        if (rc) {
            if (rc == VM_ERANGE && stats) stats->skipped_short += n;
            goto done;
        }
    }
    for (size_t k = 0; k < nv; k++) refs[k] = (frame_ref){plans[k].frame, (int)k};
    qsort(refs, nv, sizeof *refs, cmp_ref);
    int64_t ndistinct = 0;
    for (size_t k = 0; k < nv; k++) ndistinct += !k || refs[k].frame != refs[k - 1].frame;
    const int nbuf = ndistinct < chunk ? (int)ndistinct : chunk;
    fbuf = malloc(frame_bytes * nbuf);
    if (!fbuf) {
        rc = vm_fail(err, VM_ENOMEM, "out of memory for %d frames of %dx%d", nbuf, W, H);
        goto done;
    }

    vm_decoder_stats d0, d1;
    vm_decoder_stats_get(dec, &d0);
    double t_dec = 0, t_ren = 0;
    int64_t distinct = 0;
    for (size_t k = 0; k < nv;) {
        // The next chunk: up to nbuf distinct frames, in ascending order.
        int m = 0;
        size_t end = k;
        while (end < nv && (m < nbuf || refs[end].frame == want[m - 1])) {
            if (!m || refs[end].frame != want[m - 1]) want[m++] = refs[end].frame;
            end++;
        }
        uint8_t *dst[CHUNK_FRAMES];
        for (int i = 0; i < m; i++) dst[i] = fbuf + frame_bytes * i;
        double t0 = vm_now();
        rc = vm_decoder_read_frames(dec, want, m, dst, NULL, err);
        t_dec += vm_now() - t0;
        if (rc) goto done;
        distinct += m;
        t0 = vm_now();
        for (int i = 0; k < end; k++) {
            while (want[i] != refs[k].frame) i++;
            const vm_view_plan *p = &plans[refs[k].view];
            rc = vm_sampler_render(s, dst[i], W, H, p, pixels + view_bytes * refs[k].view, &scratch, err);
            if (rc) goto done;
            vm_view_meta *vmeta = &views[refs[k].view];
            memset(vmeta, 0, sizeof *vmeta);
            vmeta->frame = p->frame;
            vmeta->pts_ns = vi->pts[p->frame];
            vmeta->crop_x = p->crop_x;
            vmeta->crop_y = p->crop_y;
            vmeta->crop_w = p->crop_w;
            vmeta->crop_h = p->crop_h;
            vmeta->flip = p->flip;
        }
        t_ren += vm_now() - t0;
    }
    for (int b = 0; b < n; b++) {
        memset(&samples[b], 0, sizeof samples[b]);
        samples[b].video_id = video_id;
        samples[b].src_width = (uint32_t)W;
        samples[b].src_height = (uint32_t)H;
    }
    vm_decoder_stats_get(dec, &d1);
    if (stats) {
        stats->samples += n;
        stats->frames_needed += distinct;
        stats->frames_decoded += d1.frames_decoded - d0.frames_decoded;
        stats->decode_s += t_dec;
        stats->render_s += t_ren;
    }
done:
    if (rc && err && rc != VM_ERANGE) vm_error_prefix(err, "video %llu: ", (unsigned long long)video_id);
    vm_scratch_free(&scratch);
    free(fbuf);
    free(want);
    free(refs);
    free(plans);
    return rc;
}

int vm_sampler_draw_path(const vm_sampler *s, const char *path, uint64_t video_id, uint32_t epoch,
                         uint64_t first_draw, int n, uint8_t *pixels, vm_sample_meta *samples, vm_view_meta *views,
                         vm_sampler_stats *stats, vm_error *err) {
    vm_decoder_options opt;
    vm_sampler_decoder_options(s, &opt);
    vm_decoder *d = vm_decoder_open(path, &opt, err);
    if (!d) return err ? err->code : VM_EIO;
    int rc = vm_sampler_draw(s, d, video_id, epoch, first_draw, n, pixels, samples, views, stats, err);
    if (rc == VM_ERANGE && err) vm_error_prefix(err, "%s: ", path);
    if (stats && (rc == 0 || rc == VM_ERANGE)) stats->videos++;
    vm_decoder_close(d);
    return rc;
}
