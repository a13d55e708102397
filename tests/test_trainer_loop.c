// tests/test_trainer_loop.c — the training loop (trainer/loop.h) on replayed batch files: plan,
// epochs and dropped tails, metrics, checkpoints that load, determinism, learning, bad inputs.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/io.h"
#include "tests/harness.h"
#include "tests/test_trainer_util.h"
#include "trainer/loop.h"
#include "trainer/model.h"
#include "trainer/safetensors.h"
#include "trainer/state.h"

// 5 files x 3 pairs = 15 pairs per epoch; batches of 4: 3 steps per epoch (3 pairs dropped), 2 epochs.
TEST(replay_plans_epochs_and_writes_the_run_directory) {
    loop_replay t;
    loop_replay_setup(&t, "plan");
    loop_write_batches(t.data, 5, 3, 32, 1);
    vm_train_result r = loop_replay_train(&t);
    CHECK_EQ_INT(r.total_steps, 6);
    CHECK_EQ_INT(r.steps, 6);
    CHECK(r.first.rec > 0 && r.last.rec > 0 && r.first.w_con == 0.0f, "w_con starts at 0 (warmup)");

    char *m = loop_metrics_without_times(t.run);
    CHECK(m != NULL);
    CHECK_EQ_INT(loop_count_lines(m), 6);
    long step, epoch;
    char *line = m;
    for (int i = 0; i < 6; i++) {
        CHECK(sscanf(line, "{\"step\": %ld, \"epoch\": %ld", &step, &epoch) == 2, "line %d: %.80s", i, line);
        CHECK_EQ_INT(step, i + 1);
        CHECK_EQ_INT(epoch, i / 3);
        CHECK(strstr(line, "\"loss\": ") && strstr(line, "\"lr\": ") && strstr(line, "\"grad_norm\": "));
        line = strchr(line, '\n') + 1;
    }
    free(m);

    vm_train_state st;
    vm_error err = {0};
    char *ini = NULL, path[1100];
    snprintf(path, sizeof path, "%s/train_state.safetensors", t.run);
    CHECK(!strcmp(r.checkpoint, path), "checkpoint %s", r.checkpoint);
    CHECK_OK(vm_state_peek(path, &st, &ini, &err), err);
    CHECK_EQ_INT(st.step, 6);
    CHECK_EQ_INT(st.total_steps, 6);
    CHECK_EQ_INT(st.epoch, 1);
    CHECK_EQ_INT(st.epoch_sample, 12);
    CHECK_EQ_INT(st.samples, 24);
    CHECK(strstr(ini, "embed_dim = 32"), "stored config:\n%s", ini);
    free(ini);

    // model.safetensors is the plain state_dict: loads into a fresh model, equal to the state file's.
    vm_model *a, *b;
    const vm_backend_ops *be = vm_backend_cpu(1);
    CHECK_OK(vm_model_create(&a, &t.cfg, be, 4, &err), err);
    CHECK_OK(vm_model_create(&b, &t.cfg, be, 4, &err), err);
    snprintf(path, sizeof path, "%s/model.safetensors", t.run);
    CHECK_OK(vm_model_load(a, path, 0, &err), err);
    snprintf(path, sizeof path, "%s/train_state.safetensors", t.run);
    CHECK_OK(vm_state_load(b, path, &st, &err), err);
    CHECK(!memcmp(vm_model_params(a), vm_model_params(b), vm_model_num_floats(a) * sizeof(float)));
    vm_model_init(a, 7);  // and training moved the parameters away from the initialisation
    CHECK(memcmp(vm_model_params(a), vm_model_params(b), vm_model_num_floats(a) * sizeof(float)));
    vm_st_file *f;
    snprintf(path, sizeof path, "%s/model.safetensors", t.run);
    CHECK_OK(vm_st_read(&f, path, &err), err);
    CHECK(vm_st_find(f, "blocks.0.attn.qkv.weight") && !vm_st_find(f, "optim.m.blocks.0.attn.qkv.weight"));
    CHECK(vm_st_meta(f, "step") && !strcmp(vm_st_meta(f, "step"), "6"));
    vm_st_close(f);
    vm_model_free(a), vm_model_free(b);
    snprintf(path, sizeof path, "%s/config.ini", t.run);
    CHECK(access(path, R_OK) == 0);
}

// Same seed, same data: the same losses and parameters bitwise; another seed: different ones.
TEST(replay_is_deterministic) {
    char r2[1024], r3[1024];
    loop_replay t;
    loop_replay_setup(&t, "det");
    loop_subdir(r2, sizeof r2, "det-b");
    loop_subdir(r3, sizeof r3, "det-c");
    loop_write_batches(t.data, 4, 4, 32, 2);
    t.cfg.run.threads = 2;
    loop_replay_train(&t);
    loop_replay_train_in(&t, r2);
    t.cfg.run.seed = 8;
    loop_replay_train_in(&t, r3);
    loop_same_metrics(t.run, r2, 0);
    char *m1 = loop_metrics_without_times(t.run), *m3 = loop_metrics_without_times(r3);
    CHECK(m1 && m3);
    CHECK(strcmp(m1, m3), "another seed gave the same metrics");
    free(m1), free(m3);
    loop_same_run_file(t.run, r2, "train_state.safetensors");
}

// [train] recompute (set as a user would, through the config) trains the same run: the same
// metrics and checkpoint bitwise as the default (saved activations), also when a run stopped with
// one setting is resumed with the other; the run directory's config says which was used.
TEST(replay_recompute_changes_no_bit) {
    char r2[1024], r3[1024], path[1100];
    loop_replay t;  // its run directory: activations saved
    loop_replay_setup(&t, "rc");
    loop_subdir(r2, sizeof r2, "rc-recomputed");
    loop_subdir(r3, sizeof r3, "rc-resumed");
    loop_write_batches(t.data, 4, 4, 32, 5);
    t.cfg.run.threads = 2;
    loop_replay_train(&t);
    vm_error err = {0};
    CHECK_OK(vm_config_override(&t.cfg, "train.recompute=true", &err), err);
    loop_replay_train_in(&t, r2);
    loop_same_metrics(t.run, r2, 0);
    loop_same_run_file(t.run, r2, "train_state.safetensors");
    snprintf(path, sizeof path, "%s/config.ini", r2);
    char *ini = loop_slurp(path, NULL);
    CHECK(ini && strstr(ini, "recompute = true"), "config.ini:\n%s", ini ? ini : "(unreadable)");
    free(ini);
    // 3 of the 8 steps saving, the rest recomputing
    t.cfg.train.recompute = 0, t.o.stop_after = 3;
    vm_train_result r = loop_replay_train_in(&t, r3);
    CHECK_EQ_INT(r.steps, 3);
    char state[1100];
    vm_train_state_path(r3, state, sizeof state);
    t.cfg.train.recompute = 1, t.o.stop_after = 0, t.o.resume = state;
    r = loop_replay_train(&t);
    CHECK_EQ_INT(r.steps, 8);
    loop_same_metrics(t.run, r3, 0);
    loop_same_run_file(t.run, r3, "train_state.safetensors");
}

// The reconstruction loss falls on structured images (the loop trains, it does not just run).
TEST(replay_learns) {
    loop_replay t;
    loop_replay_setup(&t, "learn");
    loop_write_batches(t.data, 8, 8, 32, 3);
    t.cfg.optim.batch_size = 8, t.cfg.optim.base_lr = 0.05, t.cfg.optim.epochs = 8, t.cfg.optim.warmup_steps = 5;
    t.cfg.run.threads = 2;
    vm_train_result r = loop_replay_train(&t);
    CHECK_EQ_INT(r.steps, 64);
    // Mean rec of the first and last 8 steps (one epoch each: the same images).
    char *m = loop_metrics_without_times(t.run), *line = m;
    double first = 0, last = 0;
    for (int i = 0; i < 64; i++) {
        double rec;
        char *p = strstr(line, "\"rec\": ");
        CHECK(p && sscanf(p, "\"rec\": %lf", &rec) == 1);
        if (i < 8) first += rec / 8;
        if (i >= 56) last += rec / 8;
        line = strchr(line, '\n') + 1;
    }
    free(m);
    CHECK(last < 0.8 * first, "reconstruction loss %.4f -> %.4f: not learning", first, last);
}

TEST(replay_refuses_bad_inputs) {
    loop_replay t;  // its data directory is not there yet
    loop_replay_setup(&t, "bad");
    char path[1100];
    vm_train_result r;
    vm_error err = {0};
    // Missing directory, empty directory.
    CHECK(vm_train(&t.cfg, &t.o, &r, &err) == VM_EIO && strstr(err.msg, t.data), "%s", err.msg);
    mkdir(t.data, 0755);
    CHECK(vm_train(&t.cfg, &t.o, &r, &err) == VM_ENOTFOUND && strstr(err.msg, "no batch files"), "%s", err.msg);
    // Batches of another image size.
    loop_write_batches(t.data, 2, 4, 16, 1);
    CHECK(vm_train(&t.cfg, &t.o, &r, &err) == VM_EINVAL && strstr(err.msg, "16x16"), "%s", err.msg);
    // Fewer samples than one batch.
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "rm -f %s/*", t.data);
    CHECK(system(cmd) == 0);
    loop_write_batches(t.data, 1, 3, 32, 1);
    CHECK(vm_train(&t.cfg, &t.o, &r, &err) == VM_EINVAL && strstr(err.msg, "fewer than one batch"), "%s", err.msg);
    // A corrupt file (one flipped byte) is named.
    loop_write_batches(t.data, 2, 4, 32, 1);
    snprintf(path, sizeof path, "%s/batch-0001.vmb", t.data);
    FILE *fp = fopen(path, "r+b");
    CHECK(fp);
    fseek(fp, 300, SEEK_SET);
    int c = fgetc(fp);
    fseek(fp, 300, SEEK_SET);
    fputc(c ^ 0x10, fp);
    fclose(fp);
    CHECK(vm_train(&t.cfg, &t.o, &r, &err) == VM_ECORRUPT && strstr(err.msg, "batch-0001.vmb"), "%s", err.msg);
}

// `vicmae plot RUN_DIR` draws loss.png from metrics.jsonl (gnuplot); a run directory without
// metrics is refused with the reason.
TEST(cli_plot_draws_the_loss_curves) {
    char trainer[4096];
    loop_trainer_bin(trainer, sizeof trainer);
    if (system("command -v gnuplot >/dev/null 2>&1") != 0) SKIP("no gnuplot (apt-get install gnuplot-nox)");
    char cmd[4096], png[1100];
    loop_replay t;
    loop_replay_setup(&t, "plot");
    loop_write_batches(t.data, 4, 4, 32, 4);
    loop_replay_train(&t);
    snprintf(cmd, sizeof cmd, "%s plot %s >/dev/null 2>&1", trainer, t.run);
    CHECK(system(cmd) == 0, "%s", cmd);
    snprintf(png, sizeof png, "%s/loss.png", t.run);
    uint8_t *rgb = NULL;
    int w, h;
    vm_error err = {0};
    CHECK_OK(vm_png_read(png, &rgb, &w, &h, &err), err);
    CHECK(w == 1200 && h == 800, "%dx%d", w, h);
    long dark = 0;  // axes, labels and curves: the picture is not blank
    for (long i = 0; i < (long)w * h; i++) dark += rgb[3 * i] < 128 && rgb[3 * i + 1] < 128;
    CHECK(dark > 5000, "only %ld dark pixels", dark);
    free(rgb);
    snprintf(cmd, sizeof cmd, "%s plot %s/nothing-here >/dev/null 2>&1", trainer, vt_tmpdir());
    CHECK(system(cmd) != 0, "plot of a directory without metrics succeeded");
}
