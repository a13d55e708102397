// tests/test_trainer_resume_run.c — `vicmae run` end to end with the trainer (the `make run` path on
// a small generated dataset): batches from real workers over ZeroMQ, metrics, loss plot and
// checkpoints written; Ctrl-C stops the run with a checkpoint at the step reached, which `vicmae
// train --resume` then continues.  Resumed from the pipeline with ordered delivery, a run continues at
// the exact sample: the same losses and model as a run that never stopped, also with a corrupt video.
// Runs the full `vicmae` binary ($VICMAE_BIN, GStreamer inside); skips with the reason where it is
// absent (a GPU node).
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "common/io.h"
#include "pipeline/coordinator.h"
#include "tests/harness.h"
#include "tests/test_binary_util.h"
#include "tests/test_trainer_util.h"
#include "trainer/safetensors.h"
#include "trainer/state.h"

static int metrics_lines(const char *run) {
    char path[1100];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run);
    char *s = read_whole_file(path, NULL);
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
    int st = run_logged(argv, path, 300);
    CHECK(st == 0, "vicmae run exited with status %d (-1: killed after 300 s; see %s)", st, path);
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
    char ep[64], set_ep[128], until[32], log[1200];
    free_endpoint(ep, sizeof ep);
    snprintf(set_ep, sizeof set_ep, "pipeline.endpoint=%s", ep);
    snprintf(until, sizeof until, "%d", n + 4);
    char *targv[] = {access(trainer, X_OK) == 0 ? trainer : (char *)bin, "train", "--resume", run, "--set", set_ep,
                     "--stop-after", until, NULL};
    char *wargv[] = {(char *)bin, "worker", "--connect", ep, NULL};
    snprintf(log, sizeof log, "%s.resume.log", run);
    pid_t tp = spawn_logged(targv, log);
    snprintf(log, sizeof log, "%s.worker.log", run);
    pid_t wp = spawn_logged(wargv, log);
    st = reap(tp, 60);
    for (int k = 0; k < 100 && waitpid(wp, NULL, WNOHANG) == 0; k++) usleep(20000);
    if (kill(wp, SIGTERM) == 0) waitpid(wp, NULL, 0);
    CHECK(st == 0, "resumed trainer: status %d (-1: killed after 60 s; see %s.resume.log)", st, run);
    CHECK_EQ_INT(metrics_lines(run), n + 4);
    CHECK_OK(vm_state_peek(path, &ts, NULL, &err), err);
    CHECK_EQ_INT(ts.step, n + 4);
}

// ---- resume from the pipeline at the exact sample (ordered delivery) ------------------------------

// `vicmae train` from the pipeline (resuming run when resume is set) until `until` steps, with
// `workers` workers of its own; data is the --set of the dataset.  6 pairs per step: with 4 pairs
// per video in chunks of 3, steps end inside units and inside chunks.
static void train_segment(const char *bin, const char *run, const char *data, int resume, int until, int workers) {
    char ep[64], set_ep[128], set_run[1200], stop[32], log[1300];
    free_endpoint(ep, sizeof ep);  // the trainer binds it, its workers connect
    snprintf(set_ep, sizeof set_ep, "pipeline.endpoint=%s", ep);
    snprintf(set_run, sizeof set_run, "run.out_dir=%s", run);
    snprintf(stop, sizeof stop, "%d", until);
    char *targv[40] = {(char *)bin, "train"};
    int n = 2;
    if (resume) targv[n++] = "--resume", targv[n++] = (char *)run;
    const char *sets[] = {data, set_run, set_ep, "run.backend=cpu", "optim.batch_size=6", "optim.steps=10",
                          "pipeline.chunk_samples=3", "pipeline.ordered=true", "sampler.gap_min=0.1",
                          "sampler.gap_max=0.5", "run.log_every=1"};
    targv[n++] = "--config", targv[n++] = "configs/demo.ini";
    for (size_t i = 0; i < sizeof sets / sizeof *sets; i++) targv[n++] = "--set", targv[n++] = (char *)sets[i];
    targv[n++] = "--stop-after", targv[n++] = stop;
    targv[n] = NULL;
    snprintf(log, sizeof log, "%s.%d.log", run, until);
    pid_t tp = spawn_logged(targv, log);
    pid_t wp[2];
    for (int i = 0; i < workers; i++) {
        char *wargv[] = {(char *)bin, "worker", "--connect", ep, NULL};
        char wlog[1400];
        snprintf(wlog, sizeof wlog, "%s.%d.worker%d.log", run, until, i);
        wp[i] = spawn_logged(wargv, wlog);
    }
    int st = reap(tp, 90);
    for (int i = 0; i < workers; i++) {  // they got STOP; a straggler is told again
        for (int k = 0; k < 100 && waitpid(wp[i], NULL, WNOHANG) == 0; k++) usleep(20000);
        if (kill(wp[i], SIGTERM) == 0) waitpid(wp[i], NULL, 0);
    }
    CHECK(st == 0, "trainer up to step %d: status %d (-1: killed after 90 s; see %s)", until, st, log);
}

// metrics.jsonl of a run without the timings (step_s, wait_s, time_s), one line per step.
static char *metrics_losses(const char *run) {
    char path[1100];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run);
    char *s = read_whole_file(path, NULL);
    CHECK(s, "no %s", path);
    char *o = s;
    for (char *line = s; *line;) {
        char *nl = strchr(line, '\n'), *cut = strstr(line, ", \"step_s\"");
        if (!nl) nl = line + strlen(line);
        size_t keep = cut && cut < nl ? (size_t)(cut - line) : (size_t)(nl - line);
        memmove(o, line, keep);
        o += keep;
        *o++ = '\n';
        line = *nl ? nl + 1 : nl;
    }
    *o = 0;
    return s;
}

// Every tensor of a's and b's model.safetensors byte-identical; returns how many tensors.
static int same_model(const char *a, const char *b) {
    char pa[1100], pb[1100];
    snprintf(pa, sizeof pa, "%s/model.safetensors", a);
    snprintf(pb, sizeof pb, "%s/model.safetensors", b);
    vm_st_file *fa, *fb;
    vm_error err = {0};
    CHECK_OK(vm_st_read(&fa, pa, &err), err);
    CHECK_OK(vm_st_read(&fb, pb, &err), err);
    int n = vm_st_count(fa);
    CHECK_EQ_INT(vm_st_count(fb), n);
    for (int i = 0; i < n; i++) {
        const vm_st_tensor *ta = vm_st_get(fa, i), *tb = vm_st_find(fb, ta->name);
        CHECK(tb && ta->nbytes == tb->nbytes && !memcmp(ta->data, tb->data, ta->nbytes), "tensor %s differs", ta->name);
    }
    vm_st_close(fa);
    vm_st_close(fb);
    return n;
}

// Straight: 10 steps with 1 worker.  Split: stopped after 3, 5 and 7 steps and resumed, each
// segment with 1 or 2 workers.  Both must give the same losses at every step and the same model.
static void straight_vs_resumed(const char *bin, const char *data, const char *name, vm_train_state *mid) {
    char straight[1100], split[1100], path[1200];
    snprintf(straight, sizeof straight, "%s/%s-straight", vt_tmpdir(), name);
    snprintf(split, sizeof split, "%s/%s-split", vt_tmpdir(), name);
    double t0 = vm_now();
    train_segment(bin, straight, data, 0, 10, 1);
    const int stops[] = {3, 5, 7, 10}, workers[] = {2, 1, 2, 1};
    for (int k = 0; k < 4; k++) {
        train_segment(bin, split, data, k > 0, stops[k], workers[k]);
        if (k == 0) {
            vm_error err = {0};
            snprintf(path, sizeof path, "%s/train_state.safetensors", split);
            CHECK_OK(vm_state_peek(path, mid, NULL, &err), err);
        }
    }
    char *a = metrics_losses(straight), *b = metrics_losses(split);
    CHECK_EQ_INT(loop_count_lines(a), 10);
    CHECK(!strcmp(a, b), "losses differ between the straight and the resumed run:\n%s---\n%s", a, b);
    int nt = same_model(straight, split);
    fprintf(stderr, "    %s: 10 steps straight = 3 + 2 + 2 + 3 resumed (losses of 10 steps, %d tensors identical), %.1f s\n",
            name, nt, vm_now() - t0);
    free(a);
    free(b);
}

TEST(pipeline_resume_continues_at_the_exact_sample_same_losses_and_model) {
    char synth[1024], data[1100];
    const char *bin = bin_and_data(synth, sizeof synth);
    snprintf(data, sizeof data, "data.synth_dir=%s", synth);
    vm_train_state mid;
    straight_vs_resumed(bin, data, "exact", &mid);
    // 3 steps of 6 = 18 samples of 4-sample units: inside epoch 0, unit 4 of the order, sample 2 (of
    // its first chunk of 3): the resumed run skips 4 units and 2 samples.
    CHECK_EQ_INT(mid.epoch, 0);
    CHECK_EQ_INT(mid.unit, 4);
    CHECK_EQ_INT(mid.unit_sample, 2);
    CHECK_EQ_INT(mid.videos, 8);
}

TEST(pipeline_resume_exact_with_a_corrupt_video_failing_again) {
    char synth[1024], dir[1100], manifest[1200], line[2400], data[1300];
    const char *bin = bin_and_data(synth, sizeof synth);
    // The 8 generated videos and a corrupt one placed so that it comes second in epoch 0's order
    // (run.seed 0 of configs/demo.ini): before the first stop, so a position counted in samples
    // would be off by a whole video.
    snprintf(dir, sizeof dir, "%s/corrupt-data", vt_tmpdir());
    mkdir(dir, 0755);
    uint32_t order[9];
    vm_coord_unit_order(0, 0, 9, order);
    int bad = (int)order[1];
    snprintf(line, sizeof line, "%s/corrupt.mp4", dir);
    FILE *fp = fopen(line, "w");
    CHECK(fp && fputs("this is not an mp4 file\n", fp) >= 0);
    fclose(fp);
    snprintf(line, sizeof line, "%s/manifest.txt", synth);
    char *src = read_whole_file(line, NULL);
    CHECK(src, "no %s", line);
    snprintf(manifest, sizeof manifest, "%s/manifest.txt", dir);
    fp = fopen(manifest, "w");
    CHECK(fp);
    int written = 0;  // manifest index = unit id
    for (char *l = src, *nl; *l; l = nl + 1) {
        if (written == bad) fprintf(fp, "%s/corrupt.mp4\t0\n", dir), written++;
        char p[1024];
        CHECK(sscanf(l, "%1023s", p) == 1);
        fprintf(fp, "%s/%s\t0\n", synth, p), written++;
        if (!(nl = strchr(l, '\n'))) break;
    }
    if (written == bad) fprintf(fp, "%s/corrupt.mp4\t0\n", dir), written++;
    CHECK_EQ_INT(written, 9);
    fclose(fp);
    free(src);
    snprintf(data, sizeof data, "data.path=%s", manifest);
    vm_train_state mid;
    straight_vs_resumed(bin, data, "corrupt", &mid);
    // 18 samples = the first unit, the corrupt one (no samples), 3 more units and 2 samples.
    CHECK_EQ_INT(mid.unit, 5);
    CHECK_EQ_INT(mid.unit_sample, 2);
    CHECK_EQ_INT(mid.videos, 9);
    char log[1300];
    snprintf(log, sizeof log, "%s/corrupt-split.5.log", vt_tmpdir());
    char *text = read_whole_file(log, NULL);
    CHECK(text && strstr(text, "video failed"), "the corrupt video did not fail again after the resume (see %s)", log);
    free(text);
}

// `vicmae run --stop-after` then `vicmae run --resume` (trainer + local workers, both times): the
// same losses and model as one `vicmae run` that never stopped.
TEST(run_stop_after_then_run_resume_equals_one_run) {
    char synth[1024], s_synth[1100], straight[1100], split[1100], s_run[1200], log[1300];
    const char *bin = bin_and_data(synth, sizeof synth);
    snprintf(s_synth, sizeof s_synth, "data.synth_dir=%s", synth);
    snprintf(straight, sizeof straight, "%s/run-straight", vt_tmpdir());
    snprintf(split, sizeof split, "%s/run-split", vt_tmpdir());
    const char *runs[3] = {straight, split, split};
    for (int k = 0; k < 3; k++) {
        snprintf(s_run, sizeof s_run, "run.out_dir=%s", runs[k]);
        char *argv[40] = {(char *)bin, "run", RUN_SETS(s_synth, s_run), "--set", "optim.steps=6"};
        int n = 0;
        while (argv[n]) n++;
        if (k == 1) argv[n++] = "--stop-after", argv[n++] = "3";
        if (k == 2) argv[n++] = "--resume", argv[n++] = split;
        argv[n] = NULL;
        snprintf(log, sizeof log, "%s.%d.log", runs[k], k);
        int st = run_logged(argv, log, 300);
        CHECK(st == 0, "vicmae run (%d) exited with status %d (-1: killed after 300 s; see %s)", k, st, log);
        CHECK_EQ_INT(metrics_lines(runs[k]), k == 1 ? 3 : 6);
        if (k == 2) {  // it continued from step 3 (a fresh run would also write 6 equal lines)
            char *text = read_whole_file(log, NULL);
            CHECK(text && strstr(text, "steps 3..6 of 6"), "the resumed run did not start at step 3 (see %s)", log);
            free(text);
        }
    }
    char *a = metrics_losses(straight), *b = metrics_losses(split);
    CHECK(!strcmp(a, b), "losses differ between one run and run --stop-after + run --resume:\n%s---\n%s", a, b);
    free(a);
    free(b);
    CHECK(same_model(straight, split) > 10);
}
