// tests/test_trainer_resume.c — checkpoints and resume: N steps straight and N/2 + resume + N/2 give
// bitwise the same metrics, parameters and optimiser state (CPU, replayed batches, epochs crossed
// mid-way); `vicmae train --resume` does the same from the command line; corrupt or mismatched
// checkpoints are refused with the reason.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "tests/harness.h"
#include "tests/test_trainer_util.h"
#include "trainer/loop.h"
#include "trainer/state.h"

// 7 files x 3 pairs, batches of 4: 5 steps per epoch (1 pair dropped), 3 epochs = 15 steps; the
// interruption at step 7 is inside epoch 1 and inside a file, and a checkpoint every 4 steps leaves
// metrics lines past the checkpoint that the resumed run must rewrite.
static void straight_vs_resumed(int contrastive, int threads) {
    char name[64], resumed[1024];
    snprintf(name, sizeof name, "straight-%d-%d", contrastive, threads);
    loop_replay t;  // its run directory: the straight run
    loop_replay_setup(&t, name);
    snprintf(name, sizeof name, "resumed-%d-%d", contrastive, threads);
    loop_subdir(resumed, sizeof resumed, name);
    loop_write_batches(t.data, 7, 3, 32, 5);
    t.cfg.optim.epochs = 3, t.cfg.run.threads = threads, t.cfg.loss.contrastive = contrastive;
    t.cfg.optim.clip_grad = 0.5;
    vm_train_result r = loop_replay_train(&t);
    CHECK_EQ_INT(r.steps, 15);

    t.o.stop_after = 7;
    r = loop_replay_train_in(&t, resumed);
    CHECK_EQ_INT(r.steps, 7);
    // What a crash after step 9 leaves: the step-7 state and metrics lines up to 9 (a checkpoint
    // every 4 steps would have written one at 8; here the lines 8 and 9 are simply appended).
    char path[1100];
    snprintf(path, sizeof path, "%s/metrics.jsonl", resumed);
    FILE *fp = fopen(path, "a");
    CHECK(fp);
    fputs("{\"step\": 8, \"epoch\": 1, \"loss\": 123}\n{\"step\": 9, \"epoch\": 1, \"loss\": 456}\n", fp);
    fclose(fp);
    char state[1100];
    vm_train_state_path(resumed, state, sizeof state);
    t.o.stop_after = 0, t.o.resume = state;
    r = loop_replay_train(&t);
    CHECK_EQ_INT(r.steps, 15);

    loop_same_metrics(t.run, resumed, 15);
    loop_same_run_file(t.run, resumed, "model.safetensors");
    loop_same_run_file(t.run, resumed, "train_state.safetensors");
}

TEST(resume_is_bitwise_identical_infonce) { straight_vs_resumed(VM_CON_INFONCE, 1); }
TEST(resume_is_bitwise_identical_vicreg_2_threads) { straight_vs_resumed(VM_CON_VICREG, 2); }

// Periodic checkpoints: resuming from the step-4 checkpoint of a run that went on to step 6.
TEST(resume_from_a_periodic_checkpoint) {
    char b[1024], path[1100];
    loop_replay t;
    loop_replay_setup(&t, "periodic");
    loop_subdir(b, sizeof b, "periodic-b");
    loop_write_batches(t.data, 4, 4, 32, 6);
    t.cfg.optim.epochs = 3, t.cfg.train.checkpoint_every = 4;  // 4 steps per epoch, 12 in all
    loop_replay_train(&t);
    t.o.stop_after = 4;
    loop_replay_train_in(&t, b);
    // Keep the step-4 checkpoint aside, run on to 6, come back to it.
    char saved[1100], cmd[4000];
    snprintf(saved, sizeof saved, "%s/ckpt4", vt_tmpdir());
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s/train_state.safetensors %s/", saved, b, saved);
    CHECK(system(cmd) == 0);
    vm_train_state_path(b, path, sizeof path);
    t.o.stop_after = 6, t.o.resume = path;
    loop_replay_train(&t);
    vm_train_state_path(saved, path, sizeof path);
    t.o.stop_after = 0;
    loop_replay_train(&t);
    loop_same_metrics(t.run, b, 12);
    loop_same_run_file(t.run, b, "train_state.safetensors");
}

// The command line: train --stop-after, then --resume RUN_DIR without --config (the stored one).
TEST(cli_resume_matches_straight_run) {
    char trainer[4096];
    loop_trainer_bin(trainer, sizeof trainer);
    char data[1024], a[1024], b[1024], cmd[8192];
    loop_subdir(data, sizeof data, "cli-data");
    loop_subdir(a, sizeof a, "cli-a");
    loop_subdir(b, sizeof b, "cli-b");
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
    loop_same_metrics(a, b, 10);
    loop_same_run_file(a, b, "model.safetensors");
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
    char path[1100], bad[1100];
    loop_replay t;
    loop_replay_setup(&t, "corrupt");
    loop_write_batches(t.data, 2, 4, 32, 3);
    loop_replay_train(&t);
    snprintf(path, sizeof path, "%s/train_state.safetensors", t.run);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", vt_tmpdir());
    size_t n;
    char *orig = loop_slurp(path, &n);
    CHECK(orig && n > 4096);
    vm_model *m;
    vm_error err = {0};
    CHECK_OK(vm_model_create(&m, &t.cfg, vm_backend_cpu(1), 4, &err), err);
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
    snprintf(path, sizeof path, "%s/model.safetensors", t.run);
    CHECK(vm_state_load(m, path, &st, &err) == VM_ECORRUPT && strstr(err.msg, "not a training-state file"), "%s",
          err.msg);
    // Another model shape.
    vm_config wide = t.cfg;
    wide.model.embed_dim = 48;
    vm_model *w;
    CHECK_OK(vm_model_create(&w, &wide, vm_backend_cpu(1), 4, &err), err);
    snprintf(path, sizeof path, "%s/train_state.safetensors", t.run);
    CHECK(vm_state_load(w, path, &st, &err) == VM_EINVAL && strstr(err.msg, "shape"), "%s", err.msg);
    vm_model_free(w);
    // The training loop refuses too, and with another seed.
    vm_train_result r;
    t.o.resume = bad;
    CHECK(vm_train(&t.cfg, &t.o, &r, &err) != 0 && strstr(err.msg, bad), "%s", err.msg);
    t.o.resume = path;
    t.cfg.run.seed = 99;
    CHECK(vm_train(&t.cfg, &t.o, &r, &err) == VM_EINVAL && strstr(err.msg, "seed"), "%s", err.msg);
    // The intact file still loads.
    CHECK_OK(vm_state_load(m, path, &st, &err), err);
    CHECK_EQ_INT(st.step, 4);
    vm_model_free(m);
    free(orig);
}
