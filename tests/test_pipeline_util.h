// tests/test_pipeline_util.h — what the receiver-level pipeline tests (test_pipeline_net.c,
// test_pipeline_order.c, test_pipeline_curve.c) share: the synthetic pixel rule, samples and unit
// source and its manifest, a free endpoint in the configuration, forked-worker plumbing (reaping them:
// test_binary_util.h), a quiet receiver.
#pragma once
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "common/config.h"
#include "common/io.h"
#include "pipeline/receiver.h"
#include "pipeline/worker.h"
#include "tests/harness.h"
#include "tests/test_binary_util.h"

// The synthetic source's pixel i of (video, epoch, draw, view): what the consumer checks.
static __attribute__((unused)) uint8_t pix(uint64_t video, uint32_t epoch, int draw, int view, size_t i) {
    return (uint8_t)(video * 31 + epoch * 7 + draw * 13 + view * 5 + i % 17);
}

// What a synthetic source produces for a unit: n samples of video_id in epoch, each of V views of
// S x S RGB pixels by the rule above, with their metadata (frame = draw, pts_ns = epoch).
static __attribute__((unused)) void synthetic_samples(uint64_t video_id, uint32_t epoch, int n, int V, int S,
                                                      uint8_t *px, vm_sample_meta *sm, vm_view_meta *vmeta) {
    size_t view = (size_t)S * S * 3;
    for (int d = 0; d < n; d++) {
        sm[d] = (vm_sample_meta){.video_id = video_id, .src_width = 100, .src_height = 80};
        for (int v = 0; v < V; v++) {
            uint8_t *p = px + ((size_t)d * V + v) * view;
            for (size_t i = 0; i < view; i++) p[i] = pix(video_id, epoch, d, v, i);
            vmeta[d * V + v] = (vm_view_meta){.frame = d, .pts_ns = epoch, .crop_w = 10, .crop_h = 10};
        }
    }
}

// The unit source of forked workers: synthetic_samples for every unit, except that
// - a path containing "corrupt" fails as a corrupt video would;
// - with fake_stall, the worker stops its whole process (heartbeats included) on the "stall" video,
//   once: the coordinator then presumes it lost and re-issues the unit;
// - each unit first sleeps fake_sleep_ms, plus with fake_jitter an unequal time per unit (which
//   scrambles the arrival order between workers).
static __attribute__((unused)) int fake_V, fake_S, fake_sleep_ms, fake_jitter, fake_stall, fake_stalled;
static __attribute__((unused)) int fake_produce(void *ctx, const char *path, uint64_t video_id, uint32_t epoch,
                                                int n, uint8_t *px, vm_sample_meta *sm, vm_view_meta *vmeta,
                                                vm_error *err) {
    (void)ctx;
    if (strstr(path, "corrupt")) return vm_fail(err, VM_ECORRUPT, "%s: not a video (synthetic failure)", path);
    if (fake_stall && !fake_stalled && strstr(path, "stall")) {
        fake_stalled = 1;
        raise(SIGSTOP);
    }
    if (fake_sleep_ms) usleep((useconds_t)fake_sleep_ms * 1000);
    if (fake_jitter) usleep((useconds_t)((video_id * 7 + epoch * 3) % 5) * 1000 * fake_jitter);
    synthetic_samples(video_id, epoch, n, fake_V, fake_S, px, sm, vmeta);
    return 0;
}
static __attribute__((unused)) int fake_factory(const vm_config *cfg, vm_unit_source *out, vm_error *err) {
    (void)err;
    fake_V = vm_pipeline_views(cfg);
    fake_S = cfg->model.img_size;
    *out = (vm_unit_source){NULL, fake_produce, NULL, NULL};
    return 0;
}

// The receiver options of these tests: quiet, no periodic statistics, drop_last as given.
static __attribute__((unused)) void quiet_receiver_opts(vm_receiver_opts *o, int drop_last) {
    vm_receiver_opts_default(o);
    o->quiet = 1;
    o->stats_every_s = 0;
    o->drop_last = drop_last;
}

// The manifest of `videos` synthetic videos (label i % 3), written into the test's directory and set
// as cfg's data.path: "v<i>.mp4", but "corrupt<i>.mp4" every corrupt_every-th (0: none) and
// "stall<i>.mp4" for i == stall (-1: none); fake_produce acts on these names.
static __attribute__((unused)) void synthetic_manifest(vm_config *cfg, int videos, int corrupt_every, int stall) {
    char path[1100];
    snprintf(path, sizeof path, "%s/manifest-%d-%d-%d.txt", vt_tmpdir(), videos, corrupt_every, stall);
    FILE *f = fopen(path, "w");
    CHECK(f, "cannot create %s", path);
    for (int i = 0; i < videos; i++)
        fprintf(f, "%s%d.mp4 %d\n",
                i == stall ? "stall" : corrupt_every && i % corrupt_every == corrupt_every - 1 ? "corrupt" : "v", i, i % 3);
    fclose(f);
    snprintf(cfg->data.path, sizeof cfg->data.path, "%s", path);
}

// A forked worker stops cleanly on SIGTERM through its stop flag.
static volatile int child_stop;
static __attribute__((unused)) void child_on_term(int sig) { (void)sig; child_stop = 1; }

// In a forked worker: stop cleanly on SIGTERM, and the options of a quiet worker that connects to
// endpoint, takes its samples from make_source and stops with child_stop (or after 20 s without an
// answer from a coordinator).
static __attribute__((unused)) void child_worker_opts(vm_worker_opts *o, const char *endpoint,
                                                      vm_source_factory make_source) {
    struct sigaction sa = {.sa_handler = child_on_term};
    sigaction(SIGTERM, &sa, NULL);
    vm_worker_opts_default(o);
    o->stop_flag = &child_stop;
    o->connect = endpoint;
    o->make_source = make_source;
    o->idle_exit_s = 20;
    o->stats_every_s = 0;
    o->quiet = 1;
}

// A free loopback port, written into cfg.  Workers are forked BEFORE the receiver starts its
// threads (fork in a threaded process can copy a held lock into the child); they connect and retry
// until the receiver binds.
static __attribute__((unused)) void pick_endpoint(vm_config *cfg) {
    free_endpoint(cfg->pipeline.endpoint, sizeof cfg->pipeline.endpoint);
}

// Wait until n workers have joined (a loaded machine may take a while to schedule a new child).
static __attribute__((unused)) void wait_joined(vm_receiver *r, int n) {
    for (int i = 0; i < 1000; i++) {
        vm_receiver_stats s;
        vm_receiver_get_stats(r, &s);
        if (s.workers_joined >= n) return;
        usleep(10000);
    }
    CHECK(0, "fewer than %d workers joined in 10 s", n);
}
