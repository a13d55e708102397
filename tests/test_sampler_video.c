// tests/test_sampler_video.c — the sampler on decoded video: tiny videos generated with
// gst-launch-1.0 (even, odd-sized, 1-frame), the union-of-frames draw against frame-by-frame
// decoding, determinism with 1 and 3 threads, short-video handling, one real clip when present.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sampler/sampler.h"
#include "tests/harness.h"

// Generate <tmp>/<name> with gst-launch-1.0: `frames` frames of videotestsrc `pattern` at w x h
// through `encoder_mux` (e.g. "x264enc ! mp4mux").  SKIPs when gst-launch-1.0 is missing.
static const char *make_video(const char *name, int frames, int w, int h, const char *pattern, const char *enc) {
    static char path[8][1024];
    static int next;
    if (system("command -v gst-launch-1.0 >/dev/null 2>&1") != 0) SKIP("gst-launch-1.0 not installed");
    char *p = path[next++ % 8];
    snprintf(p, sizeof path[0], "%s/%s", vt_tmpdir(), name);
    if (access(p, R_OK) == 0) return p;
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "gst-launch-1.0 -q videotestsrc num-buffers=%d pattern=%s ! video/x-raw,width=%d,height=%d,framerate=30/1 "
             "! %s ! filesink location='%s' >/dev/null 2>&1",
             frames, pattern, w, h, enc, p);
    CHECK(system(cmd) == 0, "generating %s failed: %s", name, cmd);
    return p;
}

static vm_config video_config(void) {
    vm_config c;
    vm_config_defaults(&c);
    c.run.seed = 77;
    c.model.img_size = 32;
    c.decoder.decode_short_side = 48;
    snprintf(c.decoder.index_cache, sizeof c.decoder.index_cache, "off");
    c.sampler.mode = VM_PAIR_UNIFORM;
    c.sampler.gap_unit = VM_UNIT_FRAMES;
    c.sampler.gap_min = 3;
    c.sampler.gap_max = 20;
    return c;
}

static vm_sampler *make(const vm_config *c) {
    vm_sampler *s = NULL;
    vm_error err = {0};
    CHECK_OK(vm_sampler_create(c, &s, &err), err);
    return s;
}

// K pairs in one sorted pass give the same views and metadata as planning each view and decoding
// its frame alone; frames decoded per pair is reported.
TEST(draw_equals_frame_by_frame_reference) {
    const char *path = make_video("ball.mp4", 60, 96, 64, "ball", "x264enc ! mp4mux");
    vm_config c = video_config();
    vm_sampler *s = make(&c);
    enum { K = 10 };  // up to 20 distinct frames: more than one decoding chunk (16)
    const int V = vm_sampler_views(s), S = vm_sampler_size(s);
    size_t vb = (size_t)S * S * 3;
    uint8_t *px = malloc(K * V * vb), *ref = malloc(vb);
    vm_sample_meta sm[K];
    vm_view_meta vm[K * 2];
    vm_sampler_stats st = {0};
    vm_error err = {0};
    CHECK_OK(vm_sampler_draw_path(s, path, 12, 1, 100, K, px, sm, vm, &st, &err), err);
    CHECK_EQ_INT(st.samples, K);
    CHECK(st.frames_needed <= 2 * K && st.frames_decoded >= st.frames_needed);
    printf("    %d pairs: %lld distinct frames, %lld decoded (%.2f per pair)\n", K, (long long)st.frames_needed,
           (long long)st.frames_decoded, st.frames_decoded / (double)K);

    vm_decoder_options o;
    vm_sampler_decoder_options(s, &o);
    vm_decoder *d = vm_decoder_open(path, &o, &err);
    CHECK(d, "%s", err.msg);
    const vm_video_info *vi = vm_decoder_info(d);
    CHECK_EQ_INT(vi->out_height, 48);  // short side 48 of 96x64
    CHECK_EQ_INT(vi->out_width, 72);
    uint8_t *frame = malloc((size_t)vi->out_width * vi->out_height * 3);
    for (int b = 0; b < K; b++) {
        CHECK_EQ_INT(sm[b].video_id, 12);
        CHECK_EQ_INT(sm[b].src_width, 72);
        CHECK_EQ_INT(sm[b].src_height, 48);
        vm_view_plan plan[2];
        CHECK_OK(vm_sampler_plan(s, 12, 1, 100 + (uint64_t)b, vi->frames, vi->pts, vi->out_width, vi->out_height, plan,
                                 &err), err);
        for (int j = 0; j < 2; j++) {
            const vm_view_meta *m = &vm[b * 2 + j];
            CHECK_EQ_INT(m->frame, plan[j].frame);
            CHECK_EQ_INT(m->pts_ns, vi->pts[plan[j].frame]);
            CHECK(m->crop_x == plan[j].crop_x && m->crop_y == plan[j].crop_y && m->crop_w == plan[j].crop_w &&
                  m->crop_h == plan[j].crop_h && m->flip == plan[j].flip);
            CHECK(m->crop_x >= 0 && m->crop_y >= 0 && m->crop_x + m->crop_w <= 72 && m->crop_y + m->crop_h <= 48);
            int gap = (int)(vm[b * 2 + 1].frame - vm[b * 2].frame);
            CHECK(gap >= 3 && gap <= 20, "gap %d", gap);
            int64_t idx = plan[j].frame;
            uint8_t *dst[1] = {frame};
            CHECK_OK(vm_decoder_read_frames(d, &idx, 1, dst, NULL, &err), err);
            CHECK_OK(vm_sampler_render(s, frame, vi->out_width, vi->out_height, &plan[j], ref, NULL, &err), err);
            CHECK(!memcmp(ref, px + (size_t)(b * 2 + j) * vb, vb), "sample %d view %d differs from the reference", b, j);
        }
    }
    free(frame);
    vm_decoder_close(d);
    free(px);
    free(ref);
    vm_sampler_free(s);
}

// ---- determinism across threads ------------------------------------------------------------------

typedef struct {
    const vm_sampler *s;
    const char *const *paths;
    uint8_t *px;
    int first, step, units, failed;
    char msg[1024];
} job;

enum { DRAWS = 3 };  // samples per work unit (one video, one epoch)

static void *worker(void *arg) {
    job *j = arg;
    const size_t sb = (size_t)vm_sampler_views(j->s) * vm_sampler_size(j->s) * vm_sampler_size(j->s) * 3;
    for (int u = j->first; u < j->units; u += j->step) {
        vm_sample_meta sm[DRAWS];
        vm_view_meta vm[DRAWS * 2];
        vm_error err = {0};
        // unit u: video u % 3 in epoch u / 3
        if (vm_sampler_draw_path(j->s, j->paths[u % 3], (uint64_t)(u % 3), (uint32_t)(u / 3), 0, DRAWS,
                                 j->px + (size_t)u * DRAWS * sb, sm, vm, NULL, &err)) {
            j->failed = 1;
            snprintf(j->msg, sizeof j->msg, "%s", err.msg);
            return NULL;
        }
    }
    return NULL;
}

static void run(const vm_sampler *s, const char *const *paths, int threads, uint8_t *px, int units) {
    pthread_t th[3];
    job jobs[3];
    for (int t = 0; t < threads; t++) {
        jobs[t] = (job){.s = s, .paths = paths, .px = px, .first = t, .step = threads, .units = units};
        CHECK(pthread_create(&th[t], NULL, worker, &jobs[t]) == 0);
    }
    for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
    for (int t = 0; t < threads; t++) CHECK(!jobs[t].failed, "thread %d: %s", t, jobs[t].msg);
}

TEST(same_seed_same_bytes_with_1_and_3_threads_from_video) {
    const char *paths[3] = {make_video("ball.mp4", 60, 96, 64, "ball", "x264enc ! mp4mux"),
                            make_video("snow.mkv", 40, 80, 60, "snow", "x264enc ! matroskamux"),
                            make_video("odd.avi", 25, 37, 23, "smpte", "jpegenc ! avimux")};
    vm_config c = video_config();
    c.sampler.aug_preset = VM_AUG_SIMCLR;
    vm_sampler *s = make(&c);
    const int units = 6;
    size_t n = (size_t)units * DRAWS * 2 * 32 * 32 * 3;
    uint8_t *a = calloc(1, n), *b = calloc(1, n);
    run(s, paths, 1, a, units);
    run(s, paths, 3, b, units);
    CHECK(!memcmp(a, b, n), "1 and 3 threads give different bytes");
    free(a);
    free(b);
    vm_sampler_free(s);
}

// A sample depends on its draw number only, not on how draws are grouped into calls (the pipeline
// splits a video's samples into chunks); another epoch gives other samples.
TEST(samples_do_not_depend_on_grouping_and_change_with_epoch) {
    const char *path = make_video("ball.mp4", 60, 96, 64, "ball", "x264enc ! mp4mux");
    vm_config c = video_config();
    vm_sampler *s = make(&c);
    const size_t sb = 2 * 32 * 32 * 3;
    uint8_t *a = malloc(4 * sb), *b = malloc(4 * sb), *e = malloc(4 * sb);
    vm_sample_meta sm[4];
    vm_view_meta va[8], vb[8], ve[8];
    vm_error err = {0};
    CHECK_OK(vm_sampler_draw_path(s, path, 5, 2, 0, 4, a, sm, va, NULL, &err), err);
    CHECK_OK(vm_sampler_draw_path(s, path, 5, 2, 0, 1, b, sm, vb, NULL, &err), err);
    CHECK_OK(vm_sampler_draw_path(s, path, 5, 2, 1, 3, b + sb, sm, vb + 2, NULL, &err), err);
    CHECK(!memcmp(a, b, 4 * sb), "draws 0..3 in one call differ from 0 + 1..3");
    CHECK(!memcmp(va, vb, sizeof va));
    CHECK_OK(vm_sampler_draw_path(s, path, 5, 3, 0, 4, e, sm, ve, NULL, &err), err);
    CHECK(memcmp(va, ve, sizeof va) != 0, "epoch 3 repeats epoch 2");
    free(a);
    free(b);
    free(e);
    vm_sampler_free(s);
}

// ---- short, 1-frame and odd-sized videos ---------------------------------------------------------

TEST(one_frame_video_clamps_or_skips) {
    const char *path = make_video("one.mp4", 1, 64, 48, "smpte", "x264enc ! mp4mux");
    vm_config c = video_config();
    vm_sampler *s = make(&c);
    uint8_t *px = malloc(2 * 2 * 32 * 32 * 3);
    vm_sample_meta sm[2];
    vm_view_meta vm[4];
    vm_sampler_stats st = {0};
    vm_error err = {0};
    CHECK_OK(vm_sampler_draw_path(s, path, 1, 0, 0, 2, px, sm, vm, &st, &err), err);
    for (int i = 0; i < 4; i++) CHECK_EQ_INT(vm[i].frame, 0);
    CHECK_EQ_INT(st.frames_needed, 1);
    vm_sampler_free(s);
    c.sampler.short_video = VM_SHORT_SKIP;
    s = make(&c);
    CHECK_EQ_INT(vm_sampler_draw_path(s, path, 1, 0, 0, 2, px, sm, vm, &st, &err), VM_ERANGE);
    CHECK(strstr(err.msg, "one.mp4") && strstr(err.msg, "short_video = skip"), "message: %s", err.msg);
    CHECK_EQ_INT(st.skipped_short, 2);
    CHECK_EQ_INT(st.samples, 2);  // unchanged by the skipped draw
    vm_sampler_free(s);
    free(px);
}

// Gap 1 to 3 s on a 0.5 s video: clamped to the video's span (first and last frame).
TEST(short_video_in_seconds_clamps_to_its_span) {
    const char *path = make_video("half.mp4", 15, 64, 48, "ball", "x264enc ! mp4mux");
    vm_config c = video_config();
    c.sampler.gap_unit = VM_UNIT_SECONDS;
    c.sampler.gap_min = 1;
    c.sampler.gap_max = 3;
    vm_sampler *s = make(&c);
    uint8_t *px = malloc(3 * 2 * 32 * 32 * 3);
    vm_sample_meta sm[3];
    vm_view_meta vm[6];
    vm_error err = {0};
    CHECK_OK(vm_sampler_draw_path(s, path, 2, 0, 0, 3, px, sm, vm, NULL, &err), err);
    for (int b = 0; b < 3; b++) CHECK(vm[2 * b].frame == 0 && vm[2 * b + 1].frame == 14);
    vm_sampler_free(s);
    free(px);
}

// 37 x 23 MJPEG at native size: crops inside the odd frame; clip and multiview policies.
TEST(odd_sized_video_clip_and_multiview) {
    const char *path = make_video("odd.avi", 25, 37, 23, "smpte", "jpegenc ! avimux");
    vm_config c = video_config();
    c.decoder.decode_short_side = 0;
    c.sampler.policy = VM_POLICY_CLIP;
    c.sampler.clip_len = 4;
    c.sampler.clip_stride = 3;
    vm_sampler *s = make(&c);
    uint8_t *px = malloc(2 * 4 * 32 * 32 * 3);
    vm_sample_meta sm[2];
    vm_view_meta vm[8];
    vm_error err = {0};
    CHECK_OK(vm_sampler_draw_path(s, path, 3, 0, 0, 2, px, sm, vm, NULL, &err), err);
    CHECK_EQ_INT(sm[0].src_width, 37);
    CHECK_EQ_INT(sm[0].src_height, 23);
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < 4; t++) {
            const vm_view_meta *m = &vm[b * 4 + t];
            CHECK(m->crop_x >= 0 && m->crop_y >= 0 && m->crop_x + m->crop_w <= 37 && m->crop_y + m->crop_h <= 23);
            if (t) CHECK_EQ_INT(m->frame - vm[b * 4 + t - 1].frame, 3);
        }
    vm_sampler_free(s);
    c.sampler.policy = VM_POLICY_MULTIVIEW;
    c.sampler.num_clips = 2;
    c.sampler.num_crops = 3;
    c.sampler.clip_len = 2;
    s = make(&c);
    CHECK_EQ_INT(vm_sampler_views(s), 12);
    uint8_t *mv = malloc(12 * 32 * 32 * 3);
    vm_view_meta m12[12];
    CHECK_OK(vm_sampler_draw_path(s, path, 3, 0, 0, 1, mv, sm, m12, NULL, &err), err);
    CHECK(m12[0].crop_x == 0 && m12[2].crop_x == 7 && m12[4].crop_x == 14 && m12[0].crop_w == 23);
    CHECK_EQ_INT(m12[11].frame, 24);
    free(mv);
    vm_sampler_free(s);
    free(px);
}

// One real clip (H.264 in Matroska, no frame count in its header) with the default configuration.
TEST(real_clip_default_config) {
    const char *data = vt_data_dir();
    if (!data) SKIP("no ../shared/data (set VICMAE_DATA)");
    char path[1024];
    snprintf(path, sizeof path, "%s/videos/asl-book.mkv", data);
    if (access(path, R_OK)) SKIP("%s missing", path);
    vm_config c;
    vm_config_defaults(&c);
    snprintf(c.decoder.index_cache, sizeof c.decoder.index_cache, "off");
    c.sampler.pairs_per_video = 4;
    vm_sampler *s = make(&c);
    const int S = vm_sampler_size(s);
    uint8_t *px = malloc((size_t)4 * 2 * S * S * 3);
    vm_sample_meta sm[4];
    vm_view_meta vm[8];
    vm_sampler_stats st = {0};
    vm_error err = {0};
    CHECK_OK(vm_sampler_draw_path(s, path, 0, 0, 0, 4, px, sm, vm, &st, &err), err);
    CHECK_EQ_INT(sm[0].src_height, 256);
    for (int b = 0; b < 4; b++) CHECK(vm[2 * b].frame < vm[2 * b + 1].frame, "distant: first half, second half");
    long sum = 0;
    for (size_t i = 0; i < (size_t)S * S * 3; i++) sum += px[i];
    CHECK(sum > 0, "the view is not black");
    printf("    4 pairs: decode %.1f ms, render %.1f ms, %lld frames decoded\n", st.decode_s * 1e3, st.render_s * 1e3,
           (long long)st.frames_decoded);
    free(px);
    vm_sampler_free(s);
}
