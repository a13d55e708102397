// tests/test_binary_util.h — what the tests that run processes share: the full `vicmae` binary and
// a dataset it generated (test_pipeline_order.c, test_trainer_resume_run.c), a process started with
// its output in a log file, a process reaped with a timeout, a free loopback endpoint (also the
// forked-worker tests: test_pipeline_util.h, test_pipeline_batch.c, test_pipeline_e2e.c), and a file
// read whole (test_trainer_util.h).
#pragma once
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include "common/io.h"
#include "tests/harness.h"

extern char **environ;

// The full binary ($VICMAE_BIN, set by tests/run.sh); skips the test where it is absent.
static __attribute__((unused)) const char *vicmae_bin_or_skip(void) {
    const char *b = getenv("VICMAE_BIN");
    if (!b || access(b, X_OK) != 0) SKIP("no vicmae binary ($VICMAE_BIN, set by tests/run.sh)");
    return b;
}

// The full binary ($VICMAE_BIN) and, in synth, a dataset of 8 short videos it generated into the
// test's temporary directory (once per binary: the tests of a file share it).  Skips the test with
// the reason where the binary is absent, has no pipeline or cannot encode the videos.
static __attribute__((unused)) const char *bin_and_data(char *synth, size_t cap) {
    const char *bin = vicmae_bin_or_skip();
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

// Start argv with stdout and stderr in log (kept with the test directory for a failing test).
static __attribute__((unused)) pid_t spawn_logged(char **argv, const char *log) {
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

// Exit status of pid (128 + signal when killed), or -1 after killing it once timeout_s passed.
static __attribute__((unused)) int reap(pid_t pid, double timeout_s) {
    double t0 = vm_now();
    int status;
    while (vm_now() - t0 < timeout_s) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

// Run argv to completion with its output in log; its exit status as reap gives it (-1: killed after
// timeout_s).
static __attribute__((unused)) int run_logged(char **argv, const char *log, double timeout_s) {
    return reap(spawn_logged(argv, log), timeout_s);
}

// A free loopback port as an endpoint "tcp://127.0.0.1:<port>" into buf: a server binds it, its
// workers connect (and retry until it does).
static __attribute__((unused)) void free_endpoint(char *buf, size_t cap) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &al) == 0);
    close(fd);
    snprintf(buf, cap, "tcp://127.0.0.1:%d", ntohs(a.sin_port));
}

// Whole file into memory (NUL-terminated), NULL where it cannot be read; *len (when len is given)
// its size.
static __attribute__((unused)) char *read_whole_file(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, fp) != (size_t)n) free(buf), buf = NULL;
    fclose(fp);
    if (buf) buf[n] = 0;
    if (len) *len = (size_t)n;
    return buf;
}
