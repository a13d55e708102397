// tests/test_binary_util.h — what the tests that run the full `vicmae` binary on a generated
// dataset share (test_pipeline_order.c, test_trainer_resume_run.c): the binary and the dataset, and
// a process started with its output in a log file.
#pragma once
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>
#include "tests/harness.h"

extern char **environ;

// The full binary ($VICMAE_BIN) and, in synth, a dataset of 8 short videos it generated into the
// test's temporary directory (once per binary: the tests of a file share it).  Skips the test with
// the reason where the binary is absent, has no pipeline or cannot encode the videos.
static __attribute__((unused)) const char *bin_and_data(char *synth, size_t cap) {
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
