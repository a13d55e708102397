// tests/test_pipeline_net.c — the transport end to end on loopback TCP with synthetic sources:
// full epochs, exactly-once under kill -9, rejected messages, receiver restart, bounded memory.
//
// Workers are forked child processes running vm_worker_run with a synthetic source whose pixels
// are a pure function of (video, epoch, draw, view), so every received sample can be checked.
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>
#include "common/io.h"
#include "common/log.h"
#include "pipeline/receiver.h"
#include "pipeline/wire.h"
#include "pipeline/worker.h"
#include "tests/harness.h"
#include "tests/test_pipeline_util.h"

// ---- helpers ------------------------------------------------------------------------------------

static void base_config(vm_config *cfg, int videos, int corrupt_every) {
    vm_config_defaults(cfg);
    synthetic_manifest(cfg, videos, corrupt_every, -1);
    snprintf(cfg->pipeline.endpoint, sizeof cfg->pipeline.endpoint, "tcp://127.0.0.1:*");
    cfg->model.img_size = 16;
    cfg->sampler.pairs_per_video = 3;
    cfg->pipeline.chunk_samples = 2;  // 2 chunks per unit: chunk boundaries are exercised
    cfg->pipeline.credits = 4;
    cfg->pipeline.heartbeat_ms = 50;
    cfg->pipeline.lease_timeout_ms = 600;
    cfg->pipeline.epochs = 1;
    cfg->model.patch_size = 8;
    vm_error err = {0};
    CHECK_OK(vm_config_validate(cfg, &err), err);
    alarm(60);  // a hang anywhere below kills the binary (a failure), never stalls CI
}

static pid_t spawn_worker(const char *endpoint, int sleep_ms) {
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        fake_sleep_ms = sleep_ms;
        vm_worker_opts o;
        child_worker_opts(&o, endpoint, fake_factory);
        vm_error err = {0};
        vm_worker_stats st;
        int rc = vm_worker_run(&o, &st, &err);
        if (rc) fprintf(stderr, "worker: %s\n", err.msg);
        // Exit status: 0 = clean stop after exactly one session, 10 + n = n sessions.
        _exit(rc ? 1 : st.sessions == 1 ? 0 : 10 + (int)(st.sessions < 100 ? st.sessions : 99));
    }
    return pid;
}

// Consume the whole run; count each (video, draw) and check every pixel.  counts[video * 8 + draw].
typedef struct {
    int *counts;
    int videos, batches, samples;
    int bad_pixels;
} consumed;

static int consume(vm_receiver *r, int B, int max_batches, double sleep_s, consumed *c) {
    int V = vm_receiver_views(r), S = vm_receiver_size(r);
    size_t sb = (size_t)V * S * S * 3;
    uint8_t *px = malloc(B * sb);
    vm_sample_meta *meta = calloc(B, sizeof *meta);
    vm_view_meta *vmeta = calloc((size_t)B * V, sizeof *vmeta);
    vm_error err = {0};
    int n = 0;
    while (max_batches < 0 || c->batches < max_batches) {
        uint32_t epoch = 0;
        n = vm_receiver_next_batch_ex(r, px, meta, vmeta, B, &epoch, NULL, &err);
        if (n <= 0) break;
        c->batches++;
        for (int b = 0; b < n; b++) {
            uint64_t vid = meta[b].video_id;
            int draw = (int)vmeta[b * V].frame;
            CHECK(vid < (uint64_t)c->videos && draw >= 0 && draw < 8, "video %llu draw %d", (unsigned long long)vid, draw);
            c->counts[vid * 8 + draw]++;
            c->samples++;
            for (int v = 0; v < V; v++)
                for (size_t i = 0; i < (size_t)S * S * 3; i += 97)
                    c->bad_pixels += px[b * sb + v * (size_t)S * S * 3 + i] != pix(vid, epoch, draw, v, i);
        }
        if (sleep_s > 0) usleep((useconds_t)(sleep_s * 1e6));
    }
    free(px);
    free(meta);
    free(vmeta);
    CHECK(n >= 0, "next_batch: %s", err.msg);
    return n;
}

static vm_receiver *start(const vm_config *cfg, int drop_last) {
    vm_receiver_opts o;
    quiet_receiver_opts(&o, drop_last);
    vm_receiver *r;
    vm_error err = {0};
    CHECK_OK(vm_receiver_start(&r, cfg, &o, &err), err);
    return r;
}

// ---- tests ----------------------------------------------------------------------------------------

TEST(two_workers_two_epochs_every_sample_once_batches_across_chunks) {
    vm_config cfg;
    base_config(&cfg, 24, 0);
    cfg.pipeline.epochs = 2;
    pick_endpoint(&cfg);
    pid_t w1 = spawn_worker(cfg.pipeline.endpoint, 0), w2 = spawn_worker(cfg.pipeline.endpoint, 0);
    vm_receiver *r = start(&cfg, 0);
    wait_joined(r, 2);  // both must join to be told STOP (the test checks their clean exit)
    consumed c = {.counts = calloc(24 * 8, sizeof(int)), .videos = 24};
    CHECK_EQ_INT(consume(r, 5, -1, 0, &c), 0);  // B = 5: batches cut chunks of 2 and units of 3
    vm_receiver_stats s;
    vm_receiver_get_stats(r, &s);
    vm_receiver_stop(r);
    CHECK_EQ_INT(reap(w1, 10), 0);
    CHECK_EQ_INT(reap(w2, 10), 0);
    for (int v = 0; v < 24; v++)
        for (int d = 0; d < 3; d++) CHECK(c.counts[v * 8 + d] == 2, "video %d draw %d seen %d times", v, d, c.counts[v * 8 + d]);
    CHECK_EQ_INT(c.samples, 24 * 3 * 2);
    CHECK_EQ_INT(c.bad_pixels, 0);
    CHECK_EQ_INT(s.epochs_done, 2);
    CHECK_EQ_INT(s.samples, 144);
    CHECK_EQ_INT(s.chunks, 24 * 2 * 2);
    CHECK_EQ_INT(s.rejected, 0);
    CHECK_EQ_INT(s.workers_joined, 2);
    free(c.counts);
}

TEST(corrupt_videos_fail_with_reason_and_epoch_completes) {
    vm_config cfg;
    base_config(&cfg, 12, 4);  // videos 3, 7, 11 fail
    pick_endpoint(&cfg);
    pid_t w = spawn_worker(cfg.pipeline.endpoint, 0);
    vm_receiver *r = start(&cfg, 0);
    consumed c = {.counts = calloc(12 * 8, sizeof(int)), .videos = 12};
    CHECK_EQ_INT(consume(r, 4, -1, 0, &c), 0);
    vm_receiver_stats s;
    vm_receiver_get_stats(r, &s);
    vm_receiver_stop(r);
    CHECK_EQ_INT(reap(w, 10), 0);
    CHECK_EQ_INT(s.units_failed, 3);
    CHECK_EQ_INT(s.failed_by_code[-VM_ECORRUPT], 3);
    CHECK_EQ_INT(c.samples, 9 * 3);
    for (int v = 0; v < 12; v++) CHECK_EQ_INT(c.counts[v * 8], v % 4 == 3 ? 0 : 1);
    free(c.counts);
}

TEST(drop_last_keeps_batches_full) {
    vm_config cfg;
    base_config(&cfg, 5, 0);  // 15 samples, B = 4: 3 full batches, 3 samples dropped
    pick_endpoint(&cfg);
    pid_t w = spawn_worker(cfg.pipeline.endpoint, 0);
    vm_receiver *r = start(&cfg, 1);
    consumed c = {.counts = calloc(5 * 8, sizeof(int)), .videos = 5};
    CHECK_EQ_INT(consume(r, 4, -1, 0, &c), 0);
    vm_receiver_stats s;
    vm_receiver_get_stats(r, &s);
    vm_receiver_stop(r);
    CHECK_EQ_INT(reap(w, 10), 0);
    CHECK_EQ_INT(c.batches, 3);
    CHECK_EQ_INT(c.samples, 12);
    CHECK_EQ_INT(s.dropped_tail, 3);
    free(c.counts);
}

TEST(kill9_worker_mid_epoch_every_unit_exactly_once) {
    vm_config cfg;
    base_config(&cfg, 40, 0);
    pick_endpoint(&cfg);
    pid_t a = spawn_worker(cfg.pipeline.endpoint, 15), b = spawn_worker(cfg.pipeline.endpoint, 15);
    vm_receiver *r = start(&cfg, 0);
    wait_joined(r, 2);  // a must hold leases when it dies
    consumed c = {.counts = calloc(40 * 8, sizeof(int)), .videos = 40};
    consume(r, 3, 8, 0, &c);  // mid-epoch: 24 of 120 samples
    CHECK(kill(a, SIGKILL) == 0);
    CHECK_EQ_INT(consume(r, 3, -1, 0, &c), 0);
    vm_receiver_stats s;
    vm_receiver_get_stats(r, &s);
    vm_receiver_stop(r);
    CHECK_EQ_INT(reap(a, 5), 128 + SIGKILL);
    CHECK_EQ_INT(reap(b, 10), 0);
    for (int v = 0; v < 40; v++)
        for (int d = 0; d < 3; d++) CHECK(c.counts[v * 8 + d] == 1, "video %d draw %d seen %d times", v, d, c.counts[v * 8 + d]);
    CHECK_EQ_INT(c.bad_pixels, 0);
    CHECK_EQ_INT(s.workers_lost, 1);
    CHECK_EQ_INT(s.units_failed, 0);
    CHECK_EQ_INT(s.epochs_done, 1);
    free(c.counts);
}

// A raw DEALER speaking the protocol by hand.
static void *raw_connect(void *ctx, const char *ep) {
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0, tmo = 2000;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    CHECK(zmq_connect(s, ep) == 0);
    return s;
}

static void raw_send(void *s, const vm_wire_msg *m, int major, const void *body, size_t blen) {
    uint8_t h[VM_WIRE_HDR_SIZE];
    vm_wire_encode(m, h);
    h[4] = (uint8_t)major;
    zmq_send(s, h, sizeof h, body ? ZMQ_SNDMORE : 0);
    if (body) zmq_send(s, body, blen, 0);
}

// Next message of the given type (skipping others); returns its body length or -1 on timeout.
static int raw_expect(void *s, int type, vm_wire_msg *m, char *body, size_t cap) {
    for (int tries = 0; tries < 50; tries++) {
        uint8_t h[VM_WIRE_HDR_SIZE];
        int n = zmq_recv(s, h, sizeof h, 0);
        if (n < 0) return -1;
        int more = 0;
        size_t ml = sizeof more;
        zmq_getsockopt(s, ZMQ_RCVMORE, &more, &ml);
        int bl = 0;
        if (body) body[0] = 0;
        if (more) {
            bl = zmq_recv(s, body, cap - 1, 0);
            if (bl >= 0 && body) body[bl < (int)cap - 1 ? bl : (int)cap - 1] = 0;
        }
        vm_error e;
        if (vm_wire_decode(h, n, m, &e) == 0 && m->type == type) return bl;
    }
    return -1;
}

TEST(malformed_and_wrong_version_messages_rejected_counted_and_told) {
    vm_config cfg;
    base_config(&cfg, 4, 0);
    vm_receiver *r = start(&cfg, 0);
    void *ctx = zmq_ctx_new();
    void *s = raw_connect(ctx, vm_receiver_endpoint(r));
    vm_wire_msg m, got;
    char body[4096];
    // 1. garbage
    zmq_send(s, "hello?", 6, 0);
    CHECK(raw_expect(s, VM_MSG_REJECT, &got, body, sizeof body) >= 0, "no REJECT for garbage");
    CHECK_EQ_INT(got.arg, VM_WIRE_R_MALFORMED);
    // 2. a worker of protocol 2.x
    m = (vm_wire_msg){.type = VM_MSG_HELLO};
    raw_send(s, &m, VM_WIRE_MAJOR + 1, "host=x pid=1", 12);
    CHECK(raw_expect(s, VM_MSG_REJECT, &got, body, sizeof body) >= 0);
    CHECK_EQ_INT(got.arg, VM_WIRE_R_VERSION);
    CHECK(strstr(body, "version 2.0"), "%s", body);
    // 3. DATA from a session the coordinator never issued
    m = (vm_wire_msg){.type = VM_MSG_DATA, .session = 12345, .count = 1};
    raw_send(s, &m, VM_WIRE_MAJOR, "xx", 2);
    CHECK(raw_expect(s, VM_MSG_REJECT, &got, body, sizeof body) >= 0);
    CHECK_EQ_INT(got.arg, VM_WIRE_R_SESSION);
    // 4. a proper HELLO, a lease, then a DATA whose proto body is garbage
    m = (vm_wire_msg){.type = VM_MSG_HELLO};
    raw_send(s, &m, VM_WIRE_MAJOR, "host=raw pid=2", 14);
    CHECK(raw_expect(s, VM_MSG_WELCOME, &got, body, sizeof body) >= 0);
    uint64_t session = got.session;
    CHECK(strstr(body, "[pipeline]"), "WELCOME carries the configuration");
    m = (vm_wire_msg){.type = VM_MSG_REQUEST, .count = 1, .session = session};
    raw_send(s, &m, VM_WIRE_MAJOR, NULL, 0);
    CHECK(raw_expect(s, VM_MSG_LEASE, &got, body, sizeof body) >= 0);
    CHECK(strstr(body, ".mp4"), "LEASE carries the path: %s", body);
    char junk[300];
    memset(junk, 0x5a, sizeof junk);
    m = (vm_wire_msg){.type = VM_MSG_DATA, .epoch = got.epoch, .unit = got.unit, .count = 2, .session = session};
    raw_send(s, &m, VM_WIRE_MAJOR, junk, sizeof junk);
    CHECK(raw_expect(s, VM_MSG_REJECT, &got, body, sizeof body) >= 0);
    CHECK_EQ_INT(got.arg, VM_WIRE_R_BADDATA);
    // 5. three frames after the header frame
    zmq_send(s, "a", 1, ZMQ_SNDMORE);
    zmq_send(s, "b", 1, ZMQ_SNDMORE);
    zmq_send(s, "c", 1, 0);
    CHECK(raw_expect(s, VM_MSG_REJECT, &got, body, sizeof body) >= 0);
    vm_receiver_stats st;
    vm_receiver_get_stats(r, &st);
    CHECK_EQ_INT(st.rejected_malformed, 2);
    CHECK_EQ_INT(st.rejected_version, 1);
    CHECK_EQ_INT(st.rejected_session, 1);
    CHECK_EQ_INT(st.rejected_baddata, 1);
    CHECK_EQ_INT(st.rejected, 5);
    CHECK_EQ_INT(st.samples, 0);
    zmq_close(s);
    zmq_ctx_term(ctx);
    vm_receiver_stop(r);
}

TEST(worker_refuses_coordinator_of_another_major_version) {
    vm_config cfg;
    base_config(&cfg, 1, 0);
    pick_endpoint(&cfg);
    char ep[256];
    snprintf(ep, sizeof ep, "%s", cfg.pipeline.endpoint);
    fflush(NULL);
    pid_t pid = fork();  // before any ZeroMQ thread exists here
    if (pid == 0) {
        vm_worker_opts o;
        vm_worker_opts_default(&o);
        o.connect = ep;
        o.make_source = fake_factory;
        o.idle_exit_s = 10;
        o.quiet = 1;
        vm_error err = {0};
        int rc = vm_worker_run(&o, NULL, &err);
        _exit(rc == VM_EVERSION && strstr(err.msg, "2.0") ? 42 : 1);
    }
    void *ctx = zmq_ctx_new();
    void *router = zmq_socket(ctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(router, ZMQ_LINGER, &linger, sizeof linger);
    CHECK(zmq_bind(router, ep) == 0);
    // Answer the HELLO with a WELCOME of protocol 2.0.
    uint8_t id[256], h[VM_WIRE_HDR_SIZE];
    int tmo = 5000;
    zmq_setsockopt(router, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    int idl = zmq_recv(router, id, sizeof id, 0);
    CHECK(idl > 0, "no HELLO from the worker");
    int more = 1;
    size_t ml = sizeof more;
    while (more) {
        zmq_recv(router, h, sizeof h, 0);
        zmq_getsockopt(router, ZMQ_RCVMORE, &more, &ml);
    }
    vm_wire_msg m = {.type = VM_MSG_WELCOME, .session = 1, .count = 4};
    vm_wire_encode(&m, h);
    h[4] = VM_WIRE_MAJOR + 1;
    zmq_send(router, id, idl, ZMQ_SNDMORE);
    zmq_send(router, h, sizeof h, 0);
    CHECK_EQ_INT(reap(pid, 10), 42);
    zmq_close(router);
    zmq_ctx_term(ctx);
}

// The trainer side in a child process, so it can be killed -9 like a crashed trainer.  Exit status:
// 0 = all samples of the epoch exactly once; 1 = something else.  With kill_after > 0 it blocks
// forever after that many batches (the parent kills it).
static pid_t spawn_trainer(const vm_config *cfg, int videos, int kill_after) {
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        vm_receiver_opts o;
        quiet_receiver_opts(&o, 0);
        vm_receiver *r;
        vm_error err = {0};
        // The port may still be held for a moment by the killed trainer: retry the bind briefly.
        int rc = -1;
        for (int i = 0; i < 50 && rc; i++) {
            rc = vm_receiver_start(&r, cfg, &o, &err);
            if (rc) usleep(100000);
        }
        if (rc) { fprintf(stderr, "trainer: %s\n", err.msg); _exit(1); }
        int V = vm_receiver_views(r), S = vm_receiver_size(r), B = 3;
        uint8_t *px = malloc((size_t)B * V * S * S * 3);
        vm_sample_meta meta[3];
        vm_view_meta vmeta[3 * 8];
        int *counts = calloc((size_t)videos * 8, sizeof(int)), batches = 0, n;
        while ((n = vm_receiver_next_batch_ex(r, px, meta, vmeta, B, NULL, NULL, &err)) > 0) {
            for (int b = 0; b < n; b++) counts[meta[b].video_id * 8 + vmeta[b * V].frame]++;
            if (kill_after && ++batches == kill_after) pause();
        }
        int ok = n == 0;
        for (int v = 0; v < videos; v++)
            for (int d = 0; d < 3; d++) ok &= counts[v * 8 + d] == 1;
        vm_receiver_stop(r);
        _exit(ok ? 0 : 1);
    }
    return pid;
}

TEST(receiver_restart_workers_reconnect_and_continue) {
    vm_config cfg;
    base_config(&cfg, 16, 0);
    // A fixed free port that both trainers bind.
    pick_endpoint(&cfg);
    char ep[256];
    snprintf(ep, sizeof ep, "%s", cfg.pipeline.endpoint);
    pid_t t1 = spawn_trainer(&cfg, 16, 3);
    pid_t w = spawn_worker(ep, 10);
    // Wait until the first trainer is mid-epoch (it blocks after 3 batches), then crash it.
    usleep(1500 * 1000);
    CHECK(kill(t1, SIGKILL) == 0);
    CHECK_EQ_INT(reap(t1, 5), 128 + SIGKILL);
    pid_t t2 = spawn_trainer(&cfg, 16, 0);
    CHECK_EQ_INT(reap(t2, 20), 0);        // the new trainer got a full epoch from the same worker
    int ws = reap(w, 10);
    CHECK(ws >= 12, "worker exit %d: expected a clean stop after >= 2 sessions", ws);
}

static long rss_kb(pid_t pid, const char *field) {
    char p[64], line[256];
    snprintf(p, sizeof p, "/proc/%d/status", (int)pid);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    long v = -1;
    size_t fl = strlen(field);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, fl)) v = atol(line + fl + 1);
    fclose(f);
    return v;
}

TEST(slow_consumer_bounds_worker_memory_and_queue) {
    vm_config cfg;
    base_config(&cfg, 400, 0);
    cfg.model.img_size = 64;             // 24 KiB per sample: growth would show
    cfg.sampler.pairs_per_video = 4;
    cfg.pipeline.chunk_samples = 4;
    cfg.pipeline.credits = 4;
    pick_endpoint(&cfg);
    pid_t w = spawn_worker(cfg.pipeline.endpoint, 0);  // produces as fast as it can
    vm_receiver *r = start(&cfg, 0);
    consumed c = {.counts = calloc(400 * 8, sizeof(int)), .videos = 400};
    consume(r, 4, 5, 0.2, &c);           // warm up: ~1 s at 5 batches/s
    long rss1 = rss_kb(w, "VmRSS:");
    consume(r, 4, 20, 0.2, &c);          // 3 more seconds of a slow trainer
    long rss2 = rss_kb(w, "VmRSS:"), hwm = rss_kb(w, "VmHWM:");
    vm_receiver_stats s;
    vm_receiver_get_stats(r, &s);
    vm_receiver_stop(r);
    reap(w, 10);
    size_t chunk_bytes = (size_t)4 * 2 * 64 * 64 * 3;
    fprintf(stderr, "    slow consumer: worker RSS %ld kB after 1 s, %ld kB after 4 s (peak %ld kB); "
                    "worker sent %lld samples, trainer took %d; queue %d chunks\n",
            rss1, rss2, hwm, (long long)s.worker_samples, c.samples, s.queued);
    CHECK(rss1 > 0 && rss2 > 0);
    CHECK(rss2 - rss1 < 2048, "worker RSS grew %ld kB while the trainer was slow", rss2 - rss1);
    // Its peak is its warm-up footprint plus at most a few chunks (a sanitizer runtime raises the
    // footprint, not the growth); a worker that kept producing would add ~100 MB/s here.
    CHECK(hwm - rss1 < 16 * 1024, "worker peak RSS %ld kB vs %ld kB after warm-up", hwm, rss1);
    // The receiver never holds more than the credits of the worker.
    CHECK(s.queued <= cfg.pipeline.credits, "%d chunks queued", s.queued);
    // What the worker sent beyond what the trainer took is bounded by its credits (the heartbeat
    // lags by up to one period, so allow one more window).
    CHECK(s.worker_samples <= c.samples + 2 * cfg.pipeline.credits * 4, "worker ran ahead: %lld vs %d",
          (long long)s.worker_samples, c.samples);
    CHECK(s.samples - c.samples <= cfg.pipeline.credits * 4, "receiver accepted %lld, consumed %d",
          (long long)s.samples, c.samples);
    (void)chunk_bytes;
    free(c.counts);
}

TEST(sigterm_worker_says_bye_and_its_units_are_reissued_at_once) {
    vm_config cfg;
    base_config(&cfg, 30, 0);
    cfg.pipeline.lease_timeout_ms = 30000;  // only the BYE can re-issue in time
    pick_endpoint(&cfg);
    pid_t a = spawn_worker(cfg.pipeline.endpoint, 20), b = spawn_worker(cfg.pipeline.endpoint, 20);
    vm_receiver *r = start(&cfg, 0);
    wait_joined(r, 2);
    consumed c = {.counts = calloc(30 * 8, sizeof(int)), .videos = 30};
    consume(r, 3, 6, 0, &c);
    double t0 = vm_now();
    CHECK(kill(a, SIGTERM) == 0);
    CHECK_EQ_INT(consume(r, 3, -1, 0, &c), 0);
    double dt = vm_now() - t0;
    vm_receiver_stats s;
    vm_receiver_get_stats(r, &s);
    vm_receiver_stop(r);
    CHECK_EQ_INT(reap(a, 5), 0);
    CHECK_EQ_INT(reap(b, 10), 0);
    for (int v = 0; v < 30; v++)
        for (int d = 0; d < 3; d++) CHECK(c.counts[v * 8 + d] == 1, "video %d draw %d seen %d times", v, d, c.counts[v * 8 + d]);
    CHECK(dt < 15, "the epoch took %.1f s after SIGTERM: leases waited for the timeout", dt);
    CHECK_EQ_INT(s.workers_lost, 0);
    free(c.counts);
}
