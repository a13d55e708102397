// tests/test_trainer_resume_run.c — `vicmae run` end to end with the trainer (the `make run` path on
// a small generated dataset): batches from real workers over ZeroMQ, metrics, loss plot and
// checkpoints written; Ctrl-C stops the run with a checkpoint at the step reached, which `vicmae
// train --resume` then continues.  Runs the full `vicmae` binary ($VICMAE_BIN, GStreamer inside);
// skips with the reason where it is absent (a GPU node).
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "common/io.h"
#include "tests/harness.h"
#include "tests/test_trainer_resume_util.h"
#include "trainer/state.h"

extern char **environ;

// The full binary and a generated dataset of 8 short videos (shared by the tests of this file).
static const char *bin_and_data(char *synth, size_t cap) {
    const char *bin = getenv("VICMAE_BIN");
    if (!bin || access(bin, X_OK) != 0) SKIP("VICMAE_BIN (the full vicmae binary) not set or not built");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s run --help >/dev/null 2>&1", bin);
    if (system(cmd) != 0) SKIP("%s has no `run` command (built without the pipeline)", bin);
    snprintf(synth, cap, "%s/synth", vt_tmpdir());
    char manifest[1100];
    snprintf(manifest, sizeof manifest, "%s/manifest.txt", synth);
    if (access(manifest, R_OK) != 0) {
        snprintf(cmd, sizeof cmd, "%s synth --out %s --videos 8 --size 64x64 --frames 16 --fps 8 >/dev/null 2>&1", bin,
                 synth);
        if (system(cmd) != 0) SKIP("`vicmae synth` failed here (no H.264 encoder?): %s", cmd);
    }
    return bin;
}

// Start argv with stdout and stderr in LOG (kept with the test directory for a failing test).
static pid_t spawn_logged(char **argv, const char *log) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    CHECK(rc == 0, "cannot start %s", argv[0]);
    return pid;
}

static int metrics_lines(const char *run) {
    char path[1100];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run);
    char *s = loop_slurp(path, NULL);
    int n = s ? loop_count_lines(s) : 0;
    free(s);
    return n;
}

// The --set options of a small, quick run of configs/demo.ini on the generated data.
#define RUN_SETS(synth, run)                                                                                   \
    "--config", "configs/demo.ini", "--set", synth, "--set", run, "--set", "optim.batch_size=8", "--set",      \
        "pipeline.endpoint=tcp://127.0.0.1:*", "--set", "sampler.gap_min=0.1", "--set", "sampler.gap_max=0.5", \
        "--set", "run.log_every=2", "--workers", "1"

TEST(run_trains_from_workers_and_writes_metrics_plot_checkpoint) {
    char synth[1024], run[1024], s_synth[1100], s_run[1100], path[1200];
    const char *bin = bin_and_data(synth, sizeof synth);
    snprintf(run, sizeof run, "%s/run-a", vt_tmpdir());
    snprintf(s_synth, sizeof s_synth, "data.synth_dir=%s", synth);
    snprintf(s_run, sizeof s_run, "run.out_dir=%s", run);
    char *argv[] = {(char *)bin, "run", RUN_SETS(s_synth, s_run), "--set", "optim.steps=6", NULL};
    snprintf(path, sizeof path, "%s.log", run);
    pid_t pid = spawn_logged(argv, path);
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "vicmae run exited with status %d (see %s)", st, path);
    CHECK_EQ_INT(metrics_lines(run), 6);
    vm_train_state ts;
    vm_error err = {0};
    snprintf(path, sizeof path, "%s/train_state.safetensors", run);
    CHECK_OK(vm_state_peek(path, &ts, NULL, &err), err);
    CHECK_EQ_INT(ts.step, 6);
    CHECK_EQ_INT(ts.samples, 48);
    snprintf(path, sizeof path, "%s/model.safetensors", run);
    CHECK(access(path, R_OK) == 0);
    if (system("command -v gnuplot >/dev/null 2>&1") == 0) {
        snprintf(path, sizeof path, "%s/loss.png", run);
        CHECK(access(path, R_OK) == 0, "no %s", path);
    }
}

TEST(ctrl_c_checkpoints_and_train_resume_continues) {
    char synth[1024], run[1024], s_synth[1100], s_run[1100], path[1200], cmd[8192];
    const char *bin = bin_and_data(synth, sizeof synth);
    snprintf(run, sizeof run, "%s/run-b", vt_tmpdir());
    snprintf(s_synth, sizeof s_synth, "data.synth_dir=%s", synth);
    snprintf(s_run, sizeof s_run, "run.out_dir=%s", run);
    char *argv[] = {(char *)bin, "run", RUN_SETS(s_synth, s_run), "--set", "optim.steps=100000", NULL};
    snprintf(path, sizeof path, "%s.log", run);
    pid_t pid = spawn_logged(argv, path);
    double t0 = vm_now();
    int st;
    while (metrics_lines(run) < 3 && vm_now() - t0 < 60 && waitpid(pid, &st, WNOHANG) == 0) usleep(50000);
    kill(pid, SIGINT);
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "vicmae run after Ctrl-C: status %d (see %s)", st, path);
    int n = metrics_lines(run);
    CHECK(n >= 3, "only %d steps in 60 s", n);
    vm_train_state ts;
    vm_error err = {0};
    snprintf(path, sizeof path, "%s/train_state.safetensors", run);
    CHECK_OK(vm_state_peek(path, &ts, NULL, &err), err);
    CHECK_EQ_INT(ts.step, n);
    CHECK_EQ_INT(ts.total_steps, 100000);
    // Continue two more steps on stored batches (a replay of what the first test's workers made is
    // not needed: any batches of the right shape do), with the checkpoint's own configuration.
    char data[1100];
    snprintf(data, sizeof data, "%s/resume-batches", vt_tmpdir());
    loop_write_batches(data, 2, 8, 64, 1);
    char trainer[4096];
    snprintf(trainer, sizeof trainer, "%.*s/vicmae-trainer", (int)(strrchr(bin, '/') - bin), bin);
    snprintf(cmd, sizeof cmd, "%s train --resume %s --replay %s --stop-after %d >/dev/null 2>&1",
             access(trainer, X_OK) == 0 ? trainer : bin, run, data, n + 2);
    CHECK(system(cmd) == 0, "%s", cmd);
    CHECK_EQ_INT(metrics_lines(run), n + 2);
    CHECK_OK(vm_state_peek(path, &ts, NULL, &err), err);
    CHECK_EQ_INT(ts.step, n + 2);

    // And from the pipeline: the trainer resumes on a free port, one worker connects.
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &alen) == 0);
    close(fd);
    char ep[64], set_ep[128], until[32], log[1200];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", ntohs(a.sin_port));
    snprintf(set_ep, sizeof set_ep, "pipeline.endpoint=%s", ep);
    snprintf(until, sizeof until, "%d", n + 4);
    char *targv[] = {access(trainer, X_OK) == 0 ? trainer : (char *)bin, "train", "--resume", run, "--set", set_ep,
                     "--stop-after", until, NULL};
    char *wargv[] = {(char *)bin, "worker", "--connect", ep, NULL};
    snprintf(log, sizeof log, "%s.resume.log", run);
    pid_t tp = spawn_logged(targv, log);
    snprintf(log, sizeof log, "%s.worker.log", run);
    pid_t wp = spawn_logged(wargv, log);
    t0 = vm_now();
    while (waitpid(tp, &st, WNOHANG) == 0 && vm_now() - t0 < 60) usleep(50000);
    int done = vm_now() - t0 < 60;
    if (!done) kill(tp, SIGKILL), waitpid(tp, &st, 0);
    for (int k = 0; k < 100 && waitpid(wp, NULL, WNOHANG) == 0; k++) usleep(20000);
    if (kill(wp, SIGTERM) == 0) waitpid(wp, NULL, 0);
    CHECK(done && WIFEXITED(st) && WEXITSTATUS(st) == 0, "resumed trainer: status %d (see %s.resume.log)", st, run);
    CHECK_EQ_INT(metrics_lines(run), n + 4);
    CHECK_OK(vm_state_peek(path, &ts, NULL, &err), err);
    CHECK_EQ_INT(ts.step, n + 4);
}
