// tests/test_trainer_resume.c — checkpoints and resume: N steps straight and N/2 + resume + N/2 give
// bitwise the same metrics, parameters and optimiser state (CPU, replayed batches, epochs crossed
// mid-way); `vicmae train --resume` does the same from the command line; corrupt or mismatched
// checkpoints are refused with the reason.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "tests/harness.h"
#include "tests/test_trainer_resume_util.h"
#include "trainer/loop.h"
#include "trainer/state.h"

static void subdir(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", vt_tmpdir(), name); }

static void same_file(const char *a_dir, const char *b_dir, const char *name) {
    char pa[1100], pb[1100];
    snprintf(pa, sizeof pa, "%s/%s", a_dir, name);
    snprintf(pb, sizeof pb, "%s/%s", b_dir, name);
    loop_same_checkpoint(pa, pb);
}

static void same_metrics(const char *a_dir, const char *b_dir, int lines) {
    char *a = loop_metrics_without_times(a_dir), *b = loop_metrics_without_times(b_dir);
    CHECK(a && b);
    CHECK_EQ_INT(loop_count_lines(a), lines);
    CHECK(!strcmp(a, b), "metrics differ:\n%s---\n%s", a, b);
    free(a), free(b);
}

// 7 files x 3 pairs, batches of 4: 5 steps per epoch (1 pair dropped), 3 epochs = 15 steps; the
// interruption at step 7 is inside epoch 1 and inside a file, and a checkpoint every 4 steps leaves
// metrics lines past the checkpoint that the resumed run must rewrite.
static void straight_vs_resumed(int contrastive, int threads) {
    char data[1024], a[1024], b[1024];
    char name[64];
    snprintf(name, sizeof name, "data-%d-%d", contrastive, threads);
    subdir(data, sizeof data, name);
    snprintf(name, sizeof name, "straight-%d-%d", contrastive, threads);
    subdir(a, sizeof a, name);
    snprintf(name, sizeof name, "resumed-%d-%d", contrastive, threads);
    subdir(b, sizeof b, name);
    loop_write_batches(data, 7, 3, 32, 5);
    vm_config cfg = loop_tiny(a);
    cfg.optim.epochs = 3, cfg.run.threads = threads, cfg.loss.contrastive = contrastive;
    cfg.optim.clip_grad = 0.5;
    vm_train_opts o;
    vm_train_opts_default(&o);
    o.replay_dir = data, o.quiet = 1;
    vm_train_result r;
    vm_error err = {0};
    CHECK_OK(vm_train(&cfg, &o, &r, &err), err);
    CHECK_EQ_INT(r.steps, 15);

    snprintf(cfg.run.out_dir, sizeof cfg.run.out_dir, "%s", b);
    o.stop_after = 7;
    CHECK_OK(vm_train(&cfg, &o, &r, &err), err);
    CHECK_EQ_INT(r.steps, 7);
    // What a crash after step 9 leaves: the step-7 state and metrics lines up to 9 (a checkpoint
    // every 4 steps would have written one at 8; here the lines 8 and 9 are simply appended).
    char path[1100];
    snprintf(path, sizeof path, "%s/metrics.jsonl", b);
    FILE *fp = fopen(path, "a");
    CHECK(fp);
    fputs("{\"step\": 8, \"epoch\": 1, \"loss\": 123}\n{\"step\": 9, \"epoch\": 1, \"loss\": 456}\n", fp);
    fclose(fp);
    char state[1100];
    vm_train_state_path(b, state, sizeof state);
    o.stop_after = 0, o.resume = state;
    CHECK_OK(vm_train(&cfg, &o, &r, &err), err);
    CHECK_EQ_INT(r.steps, 15);

    same_metrics(a, b, 15);
    same_file(a, b, "model.safetensors");
    same_file(a, b, "train_state.safetensors");
}

TEST(resume_is_bitwise_identical_infonce) { straight_vs_resumed(VM_CON_INFONCE, 1); }
TEST(resume_is_bitwise_identical_vicreg_2_threads) { straight_vs_resumed(VM_CON_VICREG, 2); }

// Periodic checkpoints: resuming from the step-4 checkpoint of a run that went on to step 6.
TEST(resume_from_a_periodic_checkpoint) {
    char data[1024], a[1024], b[1024], path[1100];
    subdir(data, sizeof data, "periodic-data");
    subdir(a, sizeof a, "periodic-a");
    subdir(b, sizeof b, "periodic-b");
    loop_write_batches(data, 4, 4, 32, 6);
    vm_config cfg = loop_tiny(a);
    cfg.optim.epochs = 3, cfg.train.checkpoint_every = 4;  // 4 steps per epoch, 12 in all
    vm_train_opts o;
    vm_train_opts_default(&o);
    o.replay_dir = data, o.quiet = 1;
    vm_train_result r;
    vm_error err = {0};
    CHECK_OK(vm_train(&cfg, &o, &r, &err), err);
    snprintf(cfg.run.out_dir, sizeof cfg.run.out_dir, "%s", b);
    o.stop_after = 4;
    CHECK_OK(vm_train(&cfg, &o, &r, &err), err);
    // Keep the step-4 checkpoint aside, run on to 6, come back to it.
    char saved[1100], cmd[4000];
    snprintf(saved, sizeof saved, "%s/ckpt4", vt_tmpdir());
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s/train_state.safetensors %s/", saved, b, saved);
    CHECK(system(cmd) == 0);
    vm_train_state_path(b, path, sizeof path);
    o.stop_after = 6, o.resume = path;
    CHECK_OK(vm_train(&cfg, &o, &r, &err), err);
    vm_train_state_path(saved, path, sizeof path);
    o.stop_after = 0;
    CHECK_OK(vm_train(&cfg, &o, &r, &err), err);
    same_metrics(a, b, 12);
    same_file(a, b, "train_state.safetensors");
}

// The command line: train --stop-after, then --resume RUN_DIR without --config (the stored one).
TEST(cli_resume_matches_straight_run) {
    const char *bin = getenv("VICMAE_BIN");
    if (!bin) SKIP("VICMAE_BIN not set (tests/run.sh sets it)");
    char trainer[4096];
    snprintf(trainer, sizeof trainer, "%.*s/vicmae-trainer", (int)(strrchr(bin, '/') ? strrchr(bin, '/') - bin : 1), bin);
    if (access(trainer, X_OK) != 0) SKIP("%s not built", trainer);
    char data[1024], a[1024], b[1024], cmd[8192];
    subdir(data, sizeof data, "cli-data");
    subdir(a, sizeof a, "cli-a");
    subdir(b, sizeof b, "cli-b");
    loop_write_batches(data, 5, 4, 32, 9);
    const char *sets = "--set run.threads=1 --set optim.epochs=2 --set run.log_every=3 --set model.mask_ratio=0.5";
    snprintf(cmd, sizeof cmd, "%s train --config configs/tiny.ini %s --set run.out_dir=%s --replay %s --backend cpu >/dev/null 2>&1",
             trainer, sets, a, data);
    CHECK(system(cmd) == 0, "%s", cmd);
    snprintf(cmd, sizeof cmd,
             "%s train --config configs/tiny.ini %s --set run.out_dir=%s --replay %s --backend cpu --stop-after 3 >/dev/null 2>&1",
             trainer, sets, b, data);
    CHECK(system(cmd) == 0, "%s", cmd);
    snprintf(cmd, sizeof cmd, "%s train --resume %s --replay %s --backend cpu >/dev/null 2>&1", trainer, b, data);
    CHECK(system(cmd) == 0, "%s", cmd);
    same_metrics(a, b, 10);
    same_file(a, b, "model.safetensors");
    // A corrupt checkpoint: the command refuses it and says why.
    char path[1100];
    snprintf(path, sizeof path, "%s/train_state.safetensors", b);
    FILE *fp = fopen(path, "r+b");
    CHECK(fp);
    fseek(fp, -100, SEEK_END);
    int c = fgetc(fp);
    fseek(fp, -100, SEEK_END);
    fputc(c ^ 1, fp);
    fclose(fp);
    snprintf(cmd, sizeof cmd, "%s train --resume %s --replay %s --backend cpu 2>&1", trainer, b, data);
    FILE *p = popen(cmd, "r");
    CHECK(p);
    char out[8192] = "";
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int status = pclose(p);
    CHECK(status != 0 && strstr(out, "checksum mismatch"), "status %d, output:\n%s", status, out);
}

// Corrupt, truncated, foreign and mismatched checkpoints are refused with the reason.
TEST(corrupt_checkpoints_are_refused) {
    char data[1024], run[1024], path[1100], bad[1100];
    subdir(data, sizeof data, "corrupt-data");
    subdir(run, sizeof run, "corrupt-run");
    loop_write_batches(data, 2, 4, 32, 3);
    vm_config cfg = loop_tiny(run);
    vm_train_opts o;
    vm_train_opts_default(&o);
    o.replay_dir = data, o.quiet = 1;
    vm_train_result r;
    vm_error err = {0};
    CHECK_OK(vm_train(&cfg, &o, &r, &err), err);
    snprintf(path, sizeof path, "%s/train_state.safetensors", run);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", vt_tmpdir());
    size_t n;
    char *orig = loop_slurp(path, &n);
    CHECK(orig && n > 4096);
    vm_model *m;
    CHECK_OK(vm_model_create(&m, &cfg, vm_backend_cpu(1), 4, &err), err);
    vm_train_state st;
    FILE *fp;

    // One flipped bit in the tensor data: only the checksum sees it.
    orig[n - 1000] ^= 0x04;
    fp = fopen(bad, "wb"), fwrite(orig, 1, n, fp), fclose(fp);
    orig[n - 1000] ^= 0x04;
    CHECK(vm_state_load(m, bad, &st, &err) == VM_ECORRUPT && strstr(err.msg, "checksum mismatch"), "%s", err.msg);
    // Truncated.
    fp = fopen(bad, "wb"), fwrite(orig, 1, n - 8, fp), fclose(fp);
    CHECK(vm_state_load(m, bad, &st, &err) != 0 && strstr(err.msg, bad), "%s", err.msg);
    // A model checkpoint is not a training state.
    snprintf(path, sizeof path, "%s/model.safetensors", run);
    CHECK(vm_state_load(m, path, &st, &err) == VM_ECORRUPT && strstr(err.msg, "not a training-state file"), "%s",
          err.msg);
    // Another model shape.
    vm_config wide = cfg;
    wide.model.embed_dim = 48;
    vm_model *w;
    CHECK_OK(vm_model_create(&w, &wide, vm_backend_cpu(1), 4, &err), err);
    snprintf(path, sizeof path, "%s/train_state.safetensors", run);
    CHECK(vm_state_load(w, path, &st, &err) == VM_EINVAL && strstr(err.msg, "shape"), "%s", err.msg);
    vm_model_free(w);
    // The training loop refuses too, and with another seed.
    o.resume = bad;
    CHECK(vm_train(&cfg, &o, &r, &err) != 0 && strstr(err.msg, bad), "%s", err.msg);
    o.resume = path;
    cfg.run.seed = 99;
    CHECK(vm_train(&cfg, &o, &r, &err) == VM_EINVAL && strstr(err.msg, "seed"), "%s", err.msg);
    // The intact file still loads.
    CHECK_OK(vm_state_load(m, path, &st, &err), err);
    CHECK_EQ_INT(st.step, 4);
    vm_model_free(m);
    free(orig);
}
