// tests/test_pipeline_order.c — ordered delivery ([pipeline] ordered = true): samples come out in
// the coordinator's unit order whatever the number of workers and their timing; failed units are
// skipped in order; a stalled head-of-line worker cannot deadlock the line; `vicmae run --sink
// --save-batches` and CPU training from the pipeline are identical with 1, 2 or 3 workers.
//
// The receiver-level tests fork workers running vm_worker_run with a synthetic source whose pixels
// are a pure function of (video, epoch, draw, view); the last two run the full binary ($VICMAE_BIN)
// on a generated dataset and skip where it is absent.
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>
#include "common/io.h"
#include "pipeline/coordinator.h"
#include "pipeline/receiver.h"
#include "pipeline/worker.h"
#include "tests/harness.h"
#include "tests/test_binary_util.h"
#include "tests/test_pipeline_util.h"

// ---- helpers ------------------------------------------------------------------------------------

// videos, corrupt_every, stall: the manifest (synthetic_manifest names the videos by them).
static void base_config(vm_config *cfg, int videos, int corrupt_every, int stall) {
    vm_config_defaults(cfg);
    synthetic_manifest(cfg, videos, corrupt_every, stall);
    cfg->model.img_size = 16;
    cfg->model.patch_size = 8;
    cfg->sampler.pairs_per_video = 3;
    cfg->pipeline.chunk_samples = 2;  // 2 chunks per unit: chunk order inside a unit matters too
    cfg->pipeline.credits = 2;
    cfg->pipeline.heartbeat_ms = 50;
    cfg->pipeline.lease_timeout_ms = 2000;
    cfg->pipeline.epochs = 1;
    cfg->pipeline.ordered = 1;
    vm_error err = {0};
    CHECK_OK(vm_config_validate(cfg, &err), err);
    alarm(90);  // a hang anywhere below kills the binary (a failure), never stalls CI
}

// The state letter of pid in /proc ('T': stopped), '?' where it cannot be read.
static char proc_state(pid_t pid) {
    char p[64], buf[512];
    snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(p, "r");
    if (!f) return '?';
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *e = strrchr(buf, ')');  // "pid (comm) S ..."
    return e && e[1] == ' ' ? e[2] : '?';
}

// Wait (up to 30 s) until pid is stopped: a loaded machine (ASan, 2 cores) may delay its stop by
// seconds.
static void wait_stopped(pid_t pid) {
    for (int i = 0; i < 6000 && proc_state(pid) != 'T'; i++) usleep(5000);
}

// A worker process, forked before the receiver starts its threads; it connects and retries until
// the receiver binds.
static pid_t spawn_worker(const char *endpoint, int jitter, int stall, pid_t after_stop) {
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        // Dies with the test, stopped or not: an orphan stopped worker would hold the test's output
        // pipe open forever.
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        fake_jitter = jitter;
        fake_stall = stall;
        vm_worker_opts o;
        child_worker_opts(&o, endpoint, fake_factory);  // (SIGTERM stops it from here on)
        // after_stop: connect only once that worker is stopped (on the head unit), so which worker
        // leases the head unit does not depend on how fast each one starts on a loaded machine
        if (after_stop) wait_stopped(after_stop);
        vm_error err = {0};
        int rc = vm_worker_run(&o, NULL, &err);
        if (rc) fprintf(stderr, "worker: %s\n", err.msg);
        _exit(rc ? 1 : 0);
    }
    return pid;
}

static vm_receiver *start_at(const vm_config *cfg, int drop_last, long epoch, long unit, long sample) {
    vm_receiver_opts o;
    quiet_receiver_opts(&o, drop_last);
    o.start_epoch = epoch, o.start_unit = unit, o.start_sample = sample;
    vm_receiver *r;
    vm_error err = {0};
    CHECK_OK(vm_receiver_start(&r, cfg, &o, &err), err);
    return r;
}

static vm_receiver *start(const vm_config *cfg, int drop_last) { return start_at(cfg, drop_last, 0, 0, 0); }

// Everything next_batch returned, as bytes (per batch: n, epoch, sample and view records, pixels),
// checked on the way against the expected order: the epoch's unit order, draws 0..spu-1, the failed
// (corrupt) videos left out.
typedef struct {
    uint8_t *bytes;
    size_t len, cap;
    int samples, batches, bad_pixels, out_of_order;
} record;

static void rec_add(record *c, const void *p, size_t n) {
    if (c->len + n > c->cap) {
        c->cap = (c->len + n) * 2;
        c->bytes = realloc(c->bytes, c->cap);
        CHECK(c->bytes);
    }
    memcpy(c->bytes + c->len, p, n);
    c->len += n;
}

static int is_corrupt(int video, int corrupt_every) {
    return corrupt_every && video % corrupt_every == corrupt_every - 1;
}

// In arrival order (cfg ordered = false) only the multiset is checked: every expected sample once.
// from: the expected samples before it are not delivered (a receiver started at a resume position).
static int consume_ordered_from(vm_receiver *r, const vm_config *cfg, int B, int epochs, int corrupt_every, int from,
                                record *c) {
    int V = vm_receiver_views(r), S = vm_receiver_size(r), n_units = vm_receiver_dataset_size(r);
    int spu = cfg->sampler.pairs_per_video;
    size_t sb = (size_t)V * S * S * 3;
    uint8_t *px = malloc(B * sb);
    vm_sample_meta *meta = calloc(B, sizeof *meta);
    vm_view_meta *vmeta = calloc((size_t)B * V, sizeof *vmeta);
    uint32_t *order = malloc((size_t)n_units * sizeof *order);
    // The expected sequence of (epoch, video, draw).
    int total = 0;
    int *want = malloc((size_t)epochs * n_units * spu * 3 * sizeof *want);
    for (int e = 0; e < epochs; e++) {
        vm_coord_unit_order((uint64_t)cfg->run.seed, (uint32_t)e, n_units, order);
        for (int p = 0; p < n_units; p++) {
            if (is_corrupt((int)order[p], corrupt_every)) continue;
            for (int d = 0; d < spu; d++, total++) {
                want[total * 3] = e;
                want[total * 3 + 1] = (int)order[p];
                want[total * 3 + 2] = d;
            }
        }
    }
    int *seen = calloc((size_t)epochs * n_units * spu, sizeof *seen);
    vm_error err = {0};
    int n;
    for (;;) {
        uint32_t epoch = 0;
        n = vm_receiver_next_batch_ex(r, px, meta, vmeta, B, &epoch, NULL, &err);
        if (n <= 0) break;
        c->batches++;
        rec_add(c, &n, sizeof n);
        rec_add(c, &epoch, sizeof epoch);
        rec_add(c, meta, n * sizeof *meta);
        rec_add(c, vmeta, (size_t)n * V * sizeof *vmeta);
        rec_add(c, px, n * sb);
        for (int b = 0; b < n; b++, c->samples++) {
            uint64_t vid = meta[b].video_id;
            int draw = (int)vmeta[b * V].frame, k = c->samples + from;
            if (epoch < (uint32_t)epochs && vid < (uint64_t)n_units && draw >= 0 && draw < spu)
                seen[((size_t)epoch * n_units + vid) * spu + draw]++;
            if (cfg->pipeline.ordered && (k >= total || want[k * 3] != (int)epoch || want[k * 3 + 1] != (int)vid || want[k * 3 + 2] != draw)) {
                if (!c->out_of_order++)
                    fprintf(stderr, "    sample %d: epoch %u video %llu draw %d, expected epoch %d video %d draw %d\n", k,
                            epoch, (unsigned long long)vid, draw, k < total ? want[k * 3] : -1,
                            k < total ? want[k * 3 + 1] : -1, k < total ? want[k * 3 + 2] : -1);
            }
            for (int v = 0; v < V; v++)
                for (size_t i = 0; i < (size_t)S * S * 3; i += 31)
                    c->bad_pixels += px[b * sb + v * (size_t)S * S * 3 + i] != pix(vid, epoch, draw, v, i);
        }
    }
    CHECK(n == 0, "next_batch: %s", err.msg);
    CHECK_EQ_INT(c->samples, total - from);
    for (int k = from; k < total; k++) {
        int e = want[k * 3], v = want[k * 3 + 1], d = want[k * 3 + 2], m = seen[((size_t)e * n_units + v) * spu + d];
        CHECK(m == 1, "epoch %d video %d draw %d seen %d times", e, v, d, m);
    }
    free(seen);
    free(px);
    free(meta);
    free(vmeta);
    free(order);
    free(want);
    return n;
}

static int consume_ordered(vm_receiver *r, const vm_config *cfg, int B, int epochs, int corrupt_every, record *c) {
    return consume_ordered_from(r, cfg, B, epochs, corrupt_every, 0, c);
}

// One run of the synthetic pipeline with `workers` workers into *c.
static void ordered_run(int workers, int ordered, record *c, vm_receiver_stats *st) {
    vm_config cfg;
    base_config(&cfg, 30, 7, -1);  // videos 6, 13, 20, 27 fail
    cfg.pipeline.epochs = 2;
    cfg.pipeline.ordered = ordered;
    pick_endpoint(&cfg);
    pid_t pids[3];
    for (int i = 0; i < workers; i++) pids[i] = spawn_worker(cfg.pipeline.endpoint, 1 + i, 0, 0);
    vm_receiver *r = start(&cfg, 0);
    wait_joined(r, workers);
    consume_ordered(r, &cfg, 5, 2, 7, c);  // B = 5 cuts chunks of 2 and units of 3
    vm_receiver_get_stats(r, st);
    vm_receiver_stop(r);
    for (int i = 0; i < workers; i++) CHECK_EQ_INT(reap(pids[i], 10), 0);
}

// ---- tests ----------------------------------------------------------------------------------------

TEST(ordered_batches_identical_for_1_and_3_workers_failed_units_skipped_in_order) {
    record one = {0}, three = {0};
    vm_receiver_stats s1, s3;
    ordered_run(1, 1, &one, &s1);
    ordered_run(3, 1, &three, &s3);
    CHECK_EQ_INT(one.out_of_order, 0);
    CHECK_EQ_INT(three.out_of_order, 0);
    CHECK_EQ_INT(one.bad_pixels, 0);
    CHECK_EQ_INT(three.bad_pixels, 0);
    CHECK_EQ_INT(one.samples, 2 * 26 * 3);
    CHECK_EQ_INT(one.batches, three.batches);
    CHECK(one.len == three.len && !memcmp(one.bytes, three.bytes, one.len),
          "batches differ between 1 and 3 workers (%zu vs %zu bytes)", one.len, three.len);
    CHECK_EQ_INT(s1.units_failed, 8);
    CHECK_EQ_INT(s3.units_failed, 8);
    CHECK_EQ_INT(s3.workers_joined, 3);
    CHECK_EQ_INT(s3.epochs_done, 2);
    free(one.bytes);
    free(three.bytes);
}

TEST(arrival_order_every_sample_once_failed_units_counted) {
    record c = {0};
    vm_receiver_stats s;
    ordered_run(3, 0, &c, &s);  // ordered = false: chunks as they arrive (checked as a multiset)
    CHECK_EQ_INT(c.bad_pixels, 0);
    CHECK_EQ_INT(c.samples, 2 * 26 * 3);
    CHECK_EQ_INT(s.units_failed, 8);
    CHECK_EQ_INT(s.epochs_done, 2);
    free(c.bytes);
}

// The head-of-line unit's worker stops (SIGSTOP: no heartbeat, no data) after the other worker has
// sent more early chunks than it has credits.  Were credits returned only on consumption, the other
// worker could not send the re-issued head unit and the line would wait forever.
TEST(stalled_head_of_line_worker_reissued_no_deadlock_every_sample_once_in_order) {
    vm_config cfg;
    base_config(&cfg, 16, 0, -1);
    uint32_t order[16];
    vm_coord_unit_order((uint64_t)cfg.run.seed, 0, 16, order);
    base_config(&cfg, 16, 0, (int)order[0]);  // the first unit of epoch 0 stalls its first worker
    pick_endpoint(&cfg);
    // a joins alone and leases the first units; b joins once a is stopped and takes the next ones.
    pid_t a = spawn_worker(cfg.pipeline.endpoint, 0, 1, 0), b = spawn_worker(cfg.pipeline.endpoint, 0, 0, a);
    // a comes back well after it was declared lost (lease_timeout): its stale chunks must be refused or
    // dropped, not delivered.  Forked here, before the receiver's threads exist.
    fflush(NULL);
    pid_t resumer = fork();
    CHECK(resumer >= 0);
    if (resumer == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        wait_stopped(a);  // counted from a's stop
        usleep((useconds_t)(cfg.pipeline.lease_timeout_ms + 1500) * 1000);
        kill(a, SIGCONT);
        _exit(0);
    }
    double t0 = vm_now();
    vm_receiver *r = start(&cfg, 0);
    wait_joined(r, 2);
    // The scenario: a stopped on the head unit, b's early chunks held beyond its credits, no re-issue yet.
    vm_receiver_stats s;
    int held_max = 0;
    wait_stopped(a);  // a reaches the head unit
    for (int i = 0; i < 300; i++) {  // then 1.5 s, well inside the lease timeout, for b's early chunks
        vm_receiver_get_stats(r, &s);
        if (s.queued > held_max) held_max = s.queued;
        if (proc_state(a) == 'T' && held_max >= 2 * cfg.pipeline.credits) break;  // b's whole window
        usleep(5000);
    }
    CHECK(proc_state(a) == 'T', "worker a did not stall on the head unit (state %c)", proc_state(a));
    // More early chunks than b has credits: with credits returned on consumption b would now be blocked.
    CHECK(held_max > cfg.pipeline.credits, "only %d early chunks held (credits %d)", held_max, cfg.pipeline.credits);
    CHECK_EQ_INT(s.workers_lost, 0);
    record c = {0};
    consume_ordered(r, &cfg, 4, 1, 0, &c);
    double dt = vm_now() - t0;
    vm_receiver_get_stats(r, &s);
    CHECK_EQ_INT(reap(resumer, 10), 0);
    usleep(300 * 1000);  // a's stale chunks reach the receiver (counted below when they did)
    vm_receiver_stop(r);
    kill(a, SIGCONT);
    CHECK(reap(a, 10) >= 0, "worker a did not exit after STOP");
    CHECK_EQ_INT(reap(b, 10), 0);
    CHECK_EQ_INT(c.out_of_order, 0);
    CHECK_EQ_INT(c.bad_pixels, 0);
    CHECK_EQ_INT(c.samples, 16 * 3);
    CHECK_EQ_INT(s.workers_lost, 1);
    CHECK_EQ_INT(s.units_failed, 0);
    CHECK_EQ_INT(s.epochs_done, 1);
    CHECK_EQ_INT(s.samples, 16 * 3);  // accepted once each: a's late copies were refused or dropped
    CHECK(dt < 30, "the epoch took %.1f s", dt);
    fprintf(stderr, "    stall: %d early chunks held at most before the re-issue, epoch in %.1f s, %lld rejected, "
                    "%lld duplicates\n",
            held_max, dt, (long long)s.rejected, (long long)s.duplicates);
    free(c.bytes);
}

// ---- the full binary: sink batch files and CPU training -------------------------------------------

static int count_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

TEST(sink_save_batches_byte_identical_for_1_and_3_workers) {
    char synth[1024], s_synth[1100], dir[2][1100], log[1200], wk[8];
    const char *bin = bin_and_data(synth, sizeof synth);
    alarm(300);
    snprintf(s_synth, sizeof s_synth, "data.synth_dir=%s", synth);
    const int workers[2] = {1, 3};
    for (int k = 0; k < 2; k++) {
        snprintf(dir[k], sizeof dir[k], "%s/sink-%dw", vt_tmpdir(), workers[k]);
        snprintf(wk, sizeof wk, "%d", workers[k]);
        snprintf(log, sizeof log, "%s.log", dir[k]);
        char *argv[] = {(char *)bin, "run", "--sink", "--config", "configs/demo.ini", "--set", s_synth,
                        "--set", "pipeline.endpoint=tcp://127.0.0.1:*", "--set", "pipeline.ordered=true",
                        "--set", "pipeline.chunk_samples=3", "--set", "sampler.gap_min=0.1", "--set",
                        "sampler.gap_max=0.5", "--workers", wk, "--epochs", "2", "--batch", "5",
                        "--save-batches", dir[k], NULL};
        int st = run_logged(argv, log, 120);
        CHECK_EQ_INT(st, 0);
    }
    int n = count_files(dir[0]);
    CHECK_EQ_INT(n, 14);  // 2 epochs of 8 videos x 4 pairs in batches of 5: 6 full + a short one each
    CHECK_EQ_INT(count_files(dir[1]), n);
    for (int i = 0; i < n; i++) {
        char a[1200], b[1200];
        snprintf(a, sizeof a, "%s/batch-%06d.vmb", dir[0], i);
        snprintf(b, sizeof b, "%s/batch-%06d.vmb", dir[1], i);
        size_t la, lb;
        char *x = read_whole_file(a, &la), *y = read_whole_file(b, &lb);
        CHECK(x && y, "missing %s or %s", a, b);
        CHECK(la == lb && !memcmp(x, y, la), "%s and %s differ", a, b);
        free(x);
        free(y);
    }
}

// The losses of metrics.jsonl (each line up to its timings) of a run dir, as one string.
static char *losses(const char *run) {
    char path[1200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run);
    size_t len;
    char *s = read_whole_file(path, &len);
    if (!s) return NULL;
    char *out = calloc(len + 1, 1), *o = out;
    for (char *line = s, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl) nl = line + strlen(line) - 1;
        char *cut = strstr(line, "\"step_s\"");
        size_t keep = cut && cut < nl ? (size_t)(cut - line) : (size_t)(nl - line);
        memcpy(o, line, keep);
        o += keep;
        *o++ = '\n';
        if (!nl[0] || !nl[1]) break;
    }
    free(s);
    return out;
}

TEST(cpu_training_from_the_pipeline_same_losses_with_1_and_2_workers) {
    char synth[1024], s_synth[1100], run[2][1100], s_run[2][1200], log[1300], wk[8];
    const char *bin = bin_and_data(synth, sizeof synth);
    alarm(300);
    snprintf(s_synth, sizeof s_synth, "data.synth_dir=%s", synth);
    for (int k = 0; k < 2; k++) {
        snprintf(run[k], sizeof run[k], "%s/train-%dw", vt_tmpdir(), k + 1);
        snprintf(s_run[k], sizeof s_run[k], "run.out_dir=%s", run[k]);
        snprintf(wk, sizeof wk, "%d", k + 1);
        snprintf(log, sizeof log, "%s.log", run[k]);
        // 8 steps of 8 pairs = 2 epochs of the 8 videos x 4 pairs.
        char *argv[] = {(char *)bin, "run", "--config", "configs/demo.ini", "--set", s_synth, "--set", s_run[k],
                        "--set", "run.backend=cpu", "--set", "optim.batch_size=8", "--set", "optim.steps=8",
                        "--set", "pipeline.endpoint=tcp://127.0.0.1:*", "--set", "pipeline.ordered=true",
                        "--set", "sampler.gap_min=0.1", "--set", "sampler.gap_max=0.5", "--workers", wk, NULL};
        int st = run_logged(argv, log, 200);
        CHECK(st == 0, "vicmae run with %d worker(s): status %d (see %s)", k + 1, st, log);
    }
    char *a = losses(run[0]), *b = losses(run[1]);
    CHECK(a && b);
    int lines = 0;
    for (const char *p = a; (p = strchr(p, '\n')); p++) lines++;
    CHECK_EQ_INT(lines, 8);
    CHECK(!strcmp(a, b), "metrics differ between 1 and 2 workers:\n%s---\n%s", a, b);
    free(a);
    free(b);
}

// A resumed run's receiver: started inside epoch 0 at a unit of the order and a sample inside its
// second chunk, it delivers exactly the rest of the straight sequence (failed units skipped at
// their positions, before and after the start), and the units before the start are never leased:
// only the chunks from the start on are accepted.
TEST(ordered_start_position_delivers_the_rest_of_the_sequence_from_2_workers) {
    vm_config cfg;
    base_config(&cfg, 30, 7, -1);  // videos 6, 13, 20, 27 fail
    cfg.sampler.pairs_per_video = 5;  // chunks of 2: sample 3 lies in chunk 1, after 1 of its samples
    cfg.pipeline.epochs = 2;
    pick_endpoint(&cfg);
    uint32_t order[30];
    vm_coord_unit_order((uint64_t)cfg.run.seed, 0, 30, order);
    int pos = 12, from = 3, corrupt_before = 0;
    while (is_corrupt((int)order[pos], 7)) pos++;  // a position whose unit has samples
    for (int i = 0; i < pos; i++) corrupt_before += is_corrupt((int)order[i], 7);
    from += (pos - corrupt_before) * 5;
    CHECK(corrupt_before > 0, "no failed unit before the start position (order changed?)");
    pid_t pids[2];
    for (int i = 0; i < 2; i++) pids[i] = spawn_worker(cfg.pipeline.endpoint, 1 + i, 0, 0);
    vm_receiver *r = start_at(&cfg, 0, 0, pos, 3);
    vm_receiver_pos p;
    CHECK_EQ_INT(vm_receiver_position(r, &p), 1);
    CHECK(p.epoch == 0 && p.unit == pos && p.sample == 3);
    wait_joined(r, 2);
    record c = {0};
    consume_ordered_from(r, &cfg, 4, 2, 7, from, &c);
    vm_receiver_stats s;
    vm_receiver_get_stats(r, &s);
    vm_receiver_stop(r);
    for (int i = 0; i < 2; i++) CHECK_EQ_INT(reap(pids[i], 10), 0);
    CHECK_EQ_INT(c.out_of_order, 0);
    CHECK_EQ_INT(c.bad_pixels, 0);
    CHECK_EQ_INT(c.samples, 2 * 26 * 5 - from);
    CHECK_EQ_INT(s.samples, c.samples + 1);  // + the sample of chunk 1 consumed before the start
    CHECK_EQ_INT(s.epochs_done, 2);
    CHECK_EQ_INT(s.units_failed, 8 - corrupt_before);  // those before the start are not leased again
    fprintf(stderr, "    started at unit %d (after %d failed) sample 3: %d of %d samples delivered, in order\n", pos,
            corrupt_before, c.samples, 2 * 26 * 5);
    free(c.bytes);
}

TEST(start_position_refused_outside_the_dataset_or_in_arrival_order) {
    vm_config cfg;
    base_config(&cfg, 5, 0, -1);
    pick_endpoint(&cfg);
    vm_receiver_opts o;
    quiet_receiver_opts(&o, 1);
    vm_receiver *r = NULL;
    vm_error err = {0};
    o.start_unit = 6;
    CHECK_EQ_INT(vm_receiver_start(&r, &cfg, &o, &err), VM_ERANGE);
    CHECK(strstr(err.msg, "unit 6") && strstr(err.msg, "5 videos"), "%s", err.msg);
    o.start_unit = 1, o.start_sample = 3;  // pairs_per_video = 3
    CHECK_EQ_INT(vm_receiver_start(&r, &cfg, &o, &err), VM_ERANGE);
    cfg.pipeline.ordered = 0;
    o.start_sample = 0;
    CHECK_EQ_INT(vm_receiver_start(&r, &cfg, &o, &err), VM_EINVAL);
    CHECK(strstr(err.msg, "ordered"), "%s", err.msg);
    CHECK(r == NULL);
}
