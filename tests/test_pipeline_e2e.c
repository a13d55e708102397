// tests/test_pipeline_e2e.c — the real pipeline: generated videos, `vicmae worker` processes
// (decoder + sampler), corrupt inputs, `vicmae run --sink` and Ctrl-C, two network namespaces.
#include <fcntl.h>
#include <stdarg.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common/io.h"
#include "pipeline/receiver.h"
#include "pipeline/synth.h"
#include "pipeline/worker.h"
#include "tests/harness.h"
#include "tests/test_binary_util.h"

// A small generated dataset (once per binary).
static const char *synth_dir(void) {
    static char dir[700];
    if (dir[0]) return dir;
    snprintf(dir, sizeof dir, "%s/synth", vt_tmpdir());
    vm_synth_opts o;
    vm_synth_opts_default(&o);
    o.out_dir = dir;
    o.videos = 8;
    o.width = o.height = 64;
    o.frames = 24;
    vm_error err = {0};
    int rc = vm_synth_generate(&o, &err);
    if (rc == VM_EUNSUPPORTED) { dir[0] = 0; SKIP("%s", err.msg); }
    CHECK_OK(rc, err);
    return dir;
}

TEST(synth_is_deterministic_labeled_and_decodable) {
    alarm(120);
    const char *d = synth_dir();
    char again[700];
    snprintf(again, sizeof again, "%s/synth2", vt_tmpdir());
    vm_synth_opts o;
    vm_synth_opts_default(&o);
    o.out_dir = again;
    o.videos = 2;
    o.width = o.height = 64;
    o.frames = 24;
    vm_error err = {0};
    CHECK_OK(vm_synth_generate(&o, &err), err);
    for (int i = 0; i < 2; i++) {
        char a[800], b[800];
        snprintf(a, sizeof a, "%s/%s/%04d.mp4", d, vm_synth_class_name(i), i);
        snprintf(b, sizeof b, "%s/%s/%04d.mp4", again, vm_synth_class_name(i), i);
        size_t xl, yl;
        char *x = read_whole_file(a, &xl), *y = read_whole_file(b, &yl);
        CHECK(x && y);
        CHECK(xl == yl && !memcmp(x, y, xl), "video %d differs between two runs with the same seed", i);
        CHECK(xl > 1000);
        free(x);
        free(y);
    }
    char man[800];
    snprintf(man, sizeof man, "%s/manifest.txt", d);
    char *m = read_whole_file(man, NULL);
    CHECK(m);
    CHECK(strstr(m, "0-disc/0000.mp4 0 0\n") && strstr(m, "3-cross/0007.mp4 3 7\n"), "%s", m);
    free(m);
    // Classes differ in what they show: frame 0 of a disc video and of a square video differ.
    uint8_t *f0 = malloc(64 * 64 * 3), *f1 = malloc(64 * 64 * 3);
    o.width = o.height = 64;
    vm_synth_render(&o, 0, 0, f0);
    vm_synth_render(&o, 0, 5, f1);
    CHECK(memcmp(f0, f1, 64 * 64 * 3) != 0, "the scene does not move");
    free(f0);
    free(f1);
}

static void e2e_config(vm_config *cfg, const char *manifest) {
    vm_config_defaults(cfg);
    snprintf(cfg->data.path, sizeof cfg->data.path, "%s", manifest);
    snprintf(cfg->pipeline.endpoint, sizeof cfg->pipeline.endpoint, "tcp://127.0.0.1:*");
    snprintf(cfg->decoder.index_cache, sizeof cfg->decoder.index_cache, "%s/index-cache", vt_tmpdir());
    cfg->model.img_size = 32;
    cfg->model.patch_size = 8;
    cfg->decoder.decode_short_side = 48;
    cfg->sampler.pairs_per_video = 2;
    cfg->sampler.gap_min = 0.2;
    cfg->sampler.gap_max = 1.0;
    cfg->pipeline.chunk_samples = 2;
    cfg->pipeline.credits = 4;
    cfg->pipeline.heartbeat_ms = 100;
    cfg->pipeline.lease_timeout_ms = 8000;
    cfg->decoder.timeout_ms = 3000;  // the decoder waits this long for a stream in the truncated file
    vm_error err = {0};
    CHECK_OK(vm_config_validate(cfg, &err), err);
}

static pid_t spawn(char *const argv[]) {
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0 && !getenv("VICMAE_TEST_VERBOSE")) dup2(fd, 2), dup2(fd, 1);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

TEST(real_workers_deliver_every_video_corrupt_ones_fail_with_reason) {
    alarm(120);
    const char *b = vicmae_bin_or_skip();
    const char *d = synth_dir();
    char man[800], corrupt[800], trunc[800], src[800];
    snprintf(corrupt, sizeof corrupt, "%s/corrupt.mp4", vt_tmpdir());
    snprintf(trunc, sizeof trunc, "%s/truncated.mp4", vt_tmpdir());
    snprintf(src, sizeof src, "%s/0-disc/0000.mp4", d);
    uint8_t junk[4096];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)(i * 2654435761u >> 13);
    vm_error err = {0};
    CHECK_OK(vm_write_file_atomic(corrupt, junk, sizeof junk, &err), err);
    size_t vl;
    char *v = read_whole_file(src, &vl);
    CHECK(v);
    CHECK_OK(vm_write_file_atomic(trunc, v, vl / 3, &err), err);
    free(v);
    snprintf(man, sizeof man, "%s/e2e.txt", vt_tmpdir());
    FILE *f = fopen(man, "w");
    for (int i = 0; i < 8; i++) fprintf(f, "%s/%s/%04d.mp4 %d\n", d, vm_synth_class_name(i % 4), i, i % 4);
    fprintf(f, "%s -1\n%s -1\n", corrupt, trunc);
    fclose(f);
    vm_config cfg;
    e2e_config(&cfg, man);
    cfg.pipeline.epochs = 2;
    vm_receiver_opts o;
    vm_receiver_opts_default(&o);
    o.quiet = 1;
    o.stats_every_s = 0;
    o.drop_last = 0;
    vm_receiver *r;
    CHECK_OK(vm_receiver_start(&r, &cfg, &o, &err), err);
    char ep[256];
    snprintf(ep, sizeof ep, "%s", vm_receiver_endpoint(r));
    char *wargv[] = {(char *)b, "worker", "--connect", ep, "--idle-exit", "30", NULL};
    pid_t w1 = spawn(wargv), w2 = spawn(wargv);
    int B = 3, V = vm_receiver_views(r), S = vm_receiver_size(r);
    uint8_t *px = malloc((size_t)B * V * S * S * 3);
    vm_sample_meta meta[3];
    int counts[10] = {0}, total = 0, n, nonzero = 0;
    while ((n = vm_receiver_next_batch(r, px, meta, B, NULL, &err)) > 0) {
        for (int i = 0; i < n; i++) counts[meta[i].video_id < 10 ? meta[i].video_id : 9]++;
        total += n;
        for (size_t i = 0; i < (size_t)n * V * S * S * 3; i += 101) nonzero += px[i] != 0;
    }
    CHECK(n == 0, "next_batch: %s", err.msg);
    vm_receiver_stats s;
    vm_receiver_get_stats(r, &s);
    vm_receiver_stop(r);
    // A worker that joined got STOP and exits 0.  On a loaded machine the other worker may have done
    // the whole run before the second one started; that one never joined and is simply ended.
    int r1 = reap(w1, s.workers_joined == 2 ? 10 : 3), r2 = reap(w2, s.workers_joined == 2 ? 10 : 3);
    CHECK(s.workers_joined >= 1 && s.workers_joined <= 2);
    CHECK((r1 == 0) + (r2 == 0) >= s.workers_joined, "worker exits %d %d, %lld joined", r1, r2, (long long)s.workers_joined);
    free(px);
    CHECK_EQ_INT(total, 8 * 2 * 2);
    for (int i = 0; i < 8; i++) CHECK_EQ_INT(counts[i], 4);
    CHECK_EQ_INT(counts[8] + counts[9], 0);
    CHECK(nonzero > 0, "all pixels zero");
    CHECK_EQ_INT(s.epochs_done, 2);
    CHECK_EQ_INT(s.units_failed, 4);  // two bad files, two epochs
    CHECK_EQ_INT(s.rejected, 0);
}

TEST(cli_run_sink_full_epoch_saves_batches_and_stops_on_ctrl_c) {
    alarm(120);
    const char *b = vicmae_bin_or_skip();
    const char *d = synth_dir();
    char setdata[800], setcache[800], save[700];
    snprintf(setdata, sizeof setdata, "data.path=%s", d);
    snprintf(setcache, sizeof setcache, "decoder.index_cache=%s/index-cache", vt_tmpdir());
    snprintf(save, sizeof save, "%s/batches", vt_tmpdir());
    char *argv[] = {(char *)b, "run", "--sink", "--workers", "2", "--epochs", "1", "--batch", "4", "--save-batches", save,
                    "--set", setdata, "--set", setcache, "--set", "pipeline.endpoint=tcp://127.0.0.1:*",
                    "--set", "model.img_size=32", "--set", "model.patch_size=8", "--set", "sampler.pairs_per_video=2",
                    "--set", "decoder.decode_short_side=48", NULL};
    CHECK_EQ_INT(reap(spawn(argv), 60), 0);
    // 8 videos x 2 pairs = 16 samples = 4 batch files.
    for (int i = 0; i < 4; i++) {
        char p[800];
        snprintf(p, sizeof p, "%s/batch-%06d.vmb", save, i);
        struct stat st;
        CHECK(stat(p, &st) == 0 && st.st_size > 128, "missing %s", p);
    }
    char p[800];
    snprintf(p, sizeof p, "%s/batch-000004.vmb", save);
    CHECK(access(p, F_OK) != 0, "more batches than samples");
    // Ctrl-C: an endless run stops cleanly (status 130) and takes its workers with it.
    char *argv2[] = {(char *)b, "run", "--sink", "--workers", "2", "--epochs", "1000", "--set", setdata, "--set", setcache,
                     "--set", "pipeline.endpoint=tcp://127.0.0.1:*", "--set", "model.img_size=32", "--set",
                     "model.patch_size=8", NULL};
    pid_t pid = spawn(argv2);
    usleep(2500 * 1000);
    CHECK(kill(pid, SIGINT) == 0);
    CHECK_EQ_INT(reap(pid, 15), 130);
    // No worker of that run is left (they were its children: now reparented or gone).
    char cmd[300];
    snprintf(cmd, sizeof cmd, "pgrep -P %d >/dev/null 2>&1", (int)pid);
    CHECK(system(cmd) != 0, "children of the run are still alive");
}

// ---- two network namespaces joined by a veth pair --------------------------------------------------

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    char full[1100];
    snprintf(full, sizeof full, "%s >/dev/null 2>&1", cmd);
    return system(full);
}

static int enter_netns(const char *name) {
    char p[256];
    snprintf(p, sizeof p, "/var/run/netns/%s", name);
    int fd = open(p, O_RDONLY);
    if (fd < 0) return -1;
    int rc = setns(fd, CLONE_NEWNET);
    close(fd);
    return rc;
}

TEST(worker_in_another_network_namespace_over_veth) {
    alarm(120);
    const char *b = vicmae_bin_or_skip();
    const char *d = synth_dir();
    if (geteuid() != 0) SKIP("needs root for ip netns (running as uid %d)", (int)geteuid());
    if (sh("ip -V")) SKIP("no ip command (iproute2)");
    char na[32], nb[32], va[16], vb[16];
    snprintf(na, sizeof na, "vmt%d-a", (int)getpid());
    snprintf(nb, sizeof nb, "vmt%d-b", (int)getpid());
    snprintf(va, sizeof va, "vma%d", (int)getpid() % 100000);
    snprintf(vb, sizeof vb, "vmb%d", (int)getpid() % 100000);
    if (sh("ip netns add %s", na)) SKIP("ip netns add failed (no CAP_SYS_ADMIN or no netns support here)");
    int ok = !sh("ip netns add %s", nb) && !sh("ip link add %s type veth peer name %s", va, vb) &&
             !sh("ip link set %s netns %s", va, na) && !sh("ip link set %s netns %s", vb, nb) &&
             !sh("ip -n %s addr add 10.231.7.1/24 dev %s", na, va) && !sh("ip -n %s addr add 10.231.7.2/24 dev %s", nb, vb) &&
             !sh("ip -n %s link set %s up", na, va) && !sh("ip -n %s link set %s up", nb, vb) &&
             !sh("ip -n %s link set lo up", na) && !sh("ip -n %s link set lo up", nb);
    if (!ok) {
        sh("ip netns del %s", na);
        sh("ip netns del %s", nb);
        SKIP("could not build the veth pair between two namespaces");
    }
    char man[800];
    snprintf(man, sizeof man, "%s/manifest.txt", d);
    vm_config cfg;
    e2e_config(&cfg, man);
    cfg.pipeline.epochs = 1;
    // The trainer lives in namespace a (10.231.7.1), the worker in b (10.231.7.2).
    snprintf(cfg.pipeline.endpoint, sizeof cfg.pipeline.endpoint, "tcp://10.231.7.1:5557");
    fflush(NULL);
    pid_t trainer = fork();
    if (trainer == 0) {
        if (enter_netns(na)) _exit(2);
        vm_receiver_opts o;
        vm_receiver_opts_default(&o);
        o.quiet = 1;
        o.stats_every_s = 0;
        o.drop_last = 0;
        vm_receiver *r;
        vm_error err = {0};
        if (vm_receiver_start(&r, &cfg, &o, &err)) { fprintf(stderr, "%s\n", err.msg); _exit(3); }
        int V = vm_receiver_views(r), S = vm_receiver_size(r), n, total = 0;
        uint8_t *px = malloc((size_t)4 * V * S * S * 3);
        vm_sample_meta meta[4];
        while ((n = vm_receiver_next_batch(r, px, meta, 4, NULL, &err)) > 0) total += n;
        vm_receiver_stats s;
        vm_receiver_get_stats(r, &s);
        vm_receiver_stop(r);
        _exit(n == 0 && total == 16 && s.workers_joined == 1 ? 0 : 4);
    }
    char netns_cmd[200];
    snprintf(netns_cmd, sizeof netns_cmd, "/var/run/netns/%s", nb);
    char *wargv[] = {"/usr/sbin/ip", "netns", "exec", nb, (char *)b, "worker", "--connect", "tcp://10.231.7.1:5557",
                     "--idle-exit", "30", NULL};
    if (access(wargv[0], X_OK)) wargv[0] = "/sbin/ip";
    pid_t worker = spawn(wargv);
    int ts = reap(trainer, 60), ws = reap(worker, 15);
    sh("ip netns del %s", na);
    sh("ip netns del %s", nb);
    CHECK_EQ_INT(ts, 0);
    CHECK_EQ_INT(ws, 0);
}

TEST(cli_run_starts_trainer_and_workers_and_reports_a_dead_worker) {
    alarm(180);
    const char *b = vicmae_bin_or_skip();
    const char *d = synth_dir();
    if (access("configs/tiny.ini", R_OK)) SKIP("configs/tiny.ini not found (run from the repository root)");
    char *probe[] = {(char *)b, "train", "--help", NULL};
    if (reap(spawn(probe), 20) != 0) SKIP("this binary has no `vicmae train` yet");
    char setdata[800], setcache[800], setout[800], log[800];
    snprintf(setdata, sizeof setdata, "data.path=%s", d);
    snprintf(setcache, sizeof setcache, "decoder.index_cache=%s/index-cache", vt_tmpdir());
    snprintf(setout, sizeof setout, "run.out_dir=%s/run", vt_tmpdir());
    snprintf(log, sizeof log, "%s/run.log", vt_tmpdir());
    char *argv[] = {(char *)b, "run", "--config", "configs/tiny.ini", "--workers", "2", "--set", setdata, "--set", setcache,
                    "--set", setout, "--set", "pipeline.endpoint=tcp://127.0.0.1:*", "--set", "optim.steps=40",
                    "--set", "decoder.decode_short_side=48", "--set", "pipeline.lease_timeout_ms=1000",
                    "--set", "pipeline.credits=2", NULL};
    fflush(NULL);
    pid_t run = fork();
    CHECK(run >= 0);
    if (run == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) dup2(fd, 2), dup2(fd, 1);
        execv(argv[0], argv);
        _exit(127);
    }
    // Once the workers run (children of `run` named "vicmae worker"), kill one with SIGKILL.
    char cmd[1200];
    pid_t victim = 0;
    for (int i = 0; i < 300 && !victim; i++) {
        snprintf(cmd, sizeof cmd, "pgrep -P %d -f 'vicmae worker' | head -1", (int)run);
        FILE *p = popen(cmd, "r");
        int pid = 0;
        if (p && fscanf(p, "%d", &pid) == 1 && pid > 0) victim = pid;
        if (p) pclose(p);
        if (!victim) usleep(50000);
    }
    CHECK(victim > 0, "no worker process appeared under vicmae run (pid %d)", (int)run);
    usleep(1500 * 1000);  // let it join and take leases
    kill(victim, SIGKILL);
    CHECK_EQ_INT(reap(run, 150), 0);  // the trainer finished with the other worker
    snprintf(cmd, sizeof cmd, "grep -q 'worker-[0-9] died: Killed' %s", log);
    CHECK(system(cmd) == 0, "vicmae run did not report the dead worker (see %s)", log);
    snprintf(cmd, sizeof cmd, "test -s %s/run/metrics.jsonl", vt_tmpdir());
    CHECK(system(cmd) == 0, "the trainer wrote no metrics.jsonl in %s/run", vt_tmpdir());
}

// `vicmae run` hands the trainer every --config/--set option it was given, however many (it once
// kept the first 74 arguments and silently dropped the rest): the last of 50 run.out_dir settings
// is where the trainer writes.
TEST(cli_run_passes_every_option_to_the_trainer) {
    alarm(120);
    const char *b = vicmae_bin_or_skip();
    const char *d = synth_dir();
    if (access("configs/tiny.ini", R_OK)) SKIP("configs/tiny.ini not found (run from the repository root)");
    enum { DECOYS = 50 };
    static char sets[DECOYS + 4][800];
    char *argv[6 + 2 * (DECOYS + 4) + 4 + 1];  // run --config F --workers 1, the --set pairs, 2 more, NULL
    int n = 0;
    argv[n++] = (char *)b, argv[n++] = "run", argv[n++] = "--config", argv[n++] = "configs/tiny.ini";
    argv[n++] = "--workers", argv[n++] = "1";
    snprintf(sets[0], sizeof sets[0], "data.path=%s", d);
    snprintf(sets[1], sizeof sets[1], "decoder.index_cache=%s/index-cache", vt_tmpdir());
    snprintf(sets[2], sizeof sets[2], "optim.steps=2");
    for (int i = 0; i < DECOYS; i++) snprintf(sets[3 + i], sizeof sets[3 + i], "run.out_dir=%s/decoy", vt_tmpdir());
    snprintf(sets[3 + DECOYS], sizeof sets[3 + DECOYS], "run.out_dir=%s/last", vt_tmpdir());
    for (int i = 0; i < DECOYS + 4; i++) argv[n++] = "--set", argv[n++] = sets[i];
    argv[n++] = "--set", argv[n++] = "pipeline.endpoint=tcp://127.0.0.1:*";
    argv[n++] = "--set", argv[n++] = "decoder.decode_short_side=48";
    argv[n] = NULL;
    CHECK_EQ_INT(reap(spawn(argv), 100), 0);
    char cmd[1000];
    snprintf(cmd, sizeof cmd, "test -s %s/last/metrics.jsonl", vt_tmpdir());
    CHECK(system(cmd) == 0, "the trainer did not write into the last run.out_dir given (%s/last)", vt_tmpdir());
    snprintf(cmd, sizeof cmd, "test -e %s/decoy", vt_tmpdir());
    CHECK(system(cmd) != 0, "the trainer wrote into an earlier run.out_dir (%s/decoy)", vt_tmpdir());
}
