// pipeline/worker_source.c — the real unit source: open the video, draw its samples (sampler/).
#include <pthread.h>
#include <stdlib.h>
#include "pipeline/worker.h"
#include "sampler/sampler.h"

typedef struct {
    vm_sampler *s;
    pthread_mutex_t mu;     // stats are read by the IO thread while the compute thread draws
    vm_sampler_stats st;
} sampler_source;

static int produce(void *ctx, const char *path, uint64_t video_id, uint32_t epoch, int n, uint8_t *pixels,
                   vm_sample_meta *samples, vm_view_meta *views, vm_error *err) {
    sampler_source *ss = ctx;
    vm_sampler_stats st = {0};
    int rc = vm_sampler_draw_path(ss->s, path, video_id, epoch, 0, n, pixels, samples, views, &st, err);
    pthread_mutex_lock(&ss->mu);
    ss->st.decode_s += st.decode_s;
    ss->st.render_s += st.render_s;
    ss->st.samples += st.samples;
    ss->st.frames_decoded += st.frames_decoded;
    ss->st.frames_needed += st.frames_needed;
    pthread_mutex_unlock(&ss->mu);
    return rc < 0 ? rc : 0;
}

static void times(void *ctx, double *decode_s, double *render_s) {
    sampler_source *ss = ctx;
    pthread_mutex_lock(&ss->mu);
    *decode_s = ss->st.decode_s;
    *render_s = ss->st.render_s;
    pthread_mutex_unlock(&ss->mu);
}

static void destroy(void *ctx) {
    sampler_source *ss = ctx;
    vm_sampler_free(ss->s);
    pthread_mutex_destroy(&ss->mu);
    free(ss);
}

int vm_worker_sampler_source(const vm_config *cfg, vm_unit_source *out, vm_error *err) {
    sampler_source *ss = calloc(1, sizeof *ss);
    if (!ss) return vm_fail(err, VM_ENOMEM, "worker: out of memory");
    int rc = vm_sampler_create(cfg, &ss->s, err);
    if (rc) { free(ss); return rc; }
    pthread_mutex_init(&ss->mu, NULL);
    *out = (vm_unit_source){ss, produce, times, destroy};
    return 0;
}
