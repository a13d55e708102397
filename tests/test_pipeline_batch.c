// tests/test_pipeline_batch.c — batch assembly in the receiver: batches that need more chunks than
// the workers hold credits (no deadlock), and large batches decoded in parallel (checked pixel by
// pixel; the decode rate is printed).  Its own binary: the parallel decode starts OpenMP threads,
// and the other pipeline tests fork children that must not inherit them.
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/io.h"
#include "pipeline/receiver.h"
#include "pipeline/worker.h"
#include "tests/harness.h"
#include "tests/test_binary_util.h"

static int fake_V, fake_S;

static uint8_t pix(uint64_t video, uint32_t epoch, int draw, int view, size_t i) {
    return (uint8_t)(video * 31 + epoch * 7 + draw * 13 + view * 5 + i % 17 + i / 4099);
}

static int fake_produce(void *ctx, const char *path, uint64_t video_id, uint32_t epoch, int n, uint8_t *px,
                        vm_sample_meta *sm, vm_view_meta *vmeta, vm_error *err) {
    size_t view = (size_t)fake_S * fake_S * 3;
    for (int d = 0; d < n; d++) {
        sm[d] = (vm_sample_meta){.video_id = video_id, .src_width = 1, .src_height = 1};
        for (int v = 0; v < fake_V; v++) {
            uint8_t *p = px + ((size_t)d * fake_V + v) * view;
            for (size_t i = 0; i < view; i++) p[i] = pix(video_id, epoch, d, v, i);
            vmeta[d * fake_V + v] = (vm_view_meta){.frame = d};
        }
    }
    return 0;
}

static int fake_factory(const vm_config *cfg, vm_unit_source *out, vm_error *err) {
    fake_V = vm_pipeline_views(cfg);
    fake_S = cfg->model.img_size;
    *out = (vm_unit_source){NULL, fake_produce, NULL, NULL};
    return 0;
}

static void config(vm_config *cfg, int videos, int img, int pairs, int chunk, int credits) {
    vm_config_defaults(cfg);
    char path[700];
    snprintf(path, sizeof path, "%s/m%d.txt", vt_tmpdir(), videos);
    FILE *f = fopen(path, "w");
    CHECK(f);
    for (int i = 0; i < videos; i++) fprintf(f, "v%d.mp4\n", i);
    fclose(f);
    snprintf(cfg->data.path, sizeof cfg->data.path, "%s", path);
    cfg->model.img_size = img;
    cfg->model.patch_size = 8;
    cfg->sampler.pairs_per_video = pairs;
    cfg->pipeline.chunk_samples = chunk;
    cfg->pipeline.credits = credits;
    cfg->pipeline.heartbeat_ms = 50;
    cfg->pipeline.lease_timeout_ms = 2000;
    cfg->pipeline.epochs = 1;
    free_endpoint(cfg->pipeline.endpoint, sizeof cfg->pipeline.endpoint);
    vm_error err = {0};
    CHECK_OK(vm_config_validate(cfg, &err), err);
    alarm(60);
}

static pid_t spawn_worker(const char *endpoint) {
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        vm_worker_opts o;
        vm_worker_opts_default(&o);
        o.connect = endpoint;
        o.make_source = fake_factory;
        o.idle_exit_s = 20;
        o.stats_every_s = 0;
        o.quiet = 1;
        vm_error err = {0};
        _exit(vm_worker_run(&o, NULL, &err) ? 1 : 0);
    }
    return pid;
}

// Consume everything with batch size B; returns bad pixels; counts[video * 8 + draw].
static long consume_all(const vm_config *cfg, int B, int *counts, int *samples, double *decode_mb_s) {
    vm_receiver_opts o;
    vm_receiver_opts_default(&o);
    o.quiet = 1;
    o.stats_every_s = 0;
    o.drop_last = 0;
    vm_receiver *r;
    vm_error err = {0};
    CHECK_OK(vm_receiver_start(&r, cfg, &o, &err), err);
    int V = vm_receiver_views(r), S = vm_receiver_size(r);
    size_t sb = (size_t)V * S * S * 3;
    uint8_t *px = malloc((size_t)B * sb);
    vm_sample_meta *meta = calloc(B, sizeof *meta);
    vm_view_meta *vm = calloc((size_t)B * V, sizeof *vm);
    long bad = 0;
    int n;
    double busy = 0, bytes = 0;
    while (1) {
        double wait = 0, t0 = vm_now();
        n = vm_receiver_next_batch_ex(r, px, meta, vm, B, NULL, &wait, &err);
        busy += vm_now() - t0 - wait;
        if (n <= 0) break;
        bytes += (double)n * sb;
        *samples += n;
        for (int b = 0; b < n; b++) {
            int d = (int)vm[b * V].frame;
            counts[meta[b].video_id * 8 + d]++;
            for (int v = 0; v < V; v++)
                for (size_t i = 0; i < (size_t)S * S * 3; i += 31)
                    bad += px[b * sb + v * (size_t)S * S * 3 + i] != pix(meta[b].video_id, 0, d, v, i);
        }
    }
    vm_receiver_stop(r);
    free(px);
    free(meta);
    free(vm);
    CHECK(n == 0, "next_batch: %s", err.msg);
    if (decode_mb_s) *decode_mb_s = busy > 0 ? bytes / busy / 1e6 : 0;
    return bad;
}

TEST(batch_needing_more_chunks_than_credits_does_not_deadlock) {
    vm_config cfg;
    config(&cfg, 12, 16, 3, 1, 1);  // one-sample chunks, one credit, batches of 5
    pid_t w = spawn_worker(cfg.pipeline.endpoint);
    int counts[12 * 8] = {0}, samples = 0;
    CHECK_EQ_INT(consume_all(&cfg, 5, counts, &samples, NULL), 0);
    CHECK_EQ_INT(samples, 36);
    for (int v = 0; v < 12; v++)
        for (int d = 0; d < 3; d++) CHECK_EQ_INT(counts[v * 8 + d], 1);
    CHECK_EQ_INT(reap(w, 10), 0);
}

TEST(large_batches_decode_in_parallel_exactly) {
    vm_config cfg;
    config(&cfg, 16, 224, 4, 4, 8);  // 32-sample batches of 224 x 224 pairs: 9.6 MB each
    pid_t w = spawn_worker(cfg.pipeline.endpoint);
    int counts[16 * 8] = {0}, samples = 0;
    double rate = 0;
    CHECK_EQ_INT(consume_all(&cfg, 32, counts, &samples, &rate), 0);
    CHECK_EQ_INT(samples, 64);
    for (int v = 0; v < 16; v++)
        for (int d = 0; d < 4; d++) CHECK_EQ_INT(counts[v * 8 + d], 1);
    CHECK_EQ_INT(reap(w, 10), 0);
    fprintf(stderr, "    receiver assembled batches at %.0f MB/s of pixels (LZ4 decode + metadata, excluding waits)\n", rate);
}
