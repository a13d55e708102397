// Tests of common/: configuration schema and errors, counter-based RNG, file helpers.
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/config.h"
#include "common/io.h"
#include "common/rng.h"
#include "tests/harness.h"

static const char *write_tmp(const char *name, const char *text) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", vt_tmpdir(), name);
    FILE *fp = fopen(path, "w");
    CHECK(fp != NULL);
    fputs(text, fp);
    fclose(fp);
    return path;
}

TEST(config_defaults_are_valid) {
    vm_config cfg;
    vm_config_defaults(&cfg);
    vm_error err = {0};
    CHECK_OK(vm_config_validate(&cfg, &err), err);
    CHECK_EQ_INT(cfg.model.img_size, 224);
    CHECK_NEAR(cfg.loss.w_rec, 0.97, 1e-12);
    CHECK_EQ_INT(cfg.loss.contrastive, VM_CON_INFONCE);
    CHECK_EQ_INT(cfg.model.norm_pix_loss, 1);
}

TEST(config_shipped_files_load) {
    const char *files[] = {"configs/demo.ini", "configs/tiny.ini", "configs/vit_s16.ini", "configs/vit_b16.ini"};
    for (int i = 0; i < 4; i++) {
        vm_config cfg;
        vm_config_defaults(&cfg);
        vm_error err = {0};
        CHECK_OK(vm_config_load(&cfg, files[i], &err), err);
        CHECK_OK(vm_config_validate(&cfg, &err), err);
    }
}

TEST(config_unknown_key_names_file_line_key) {
    const char *p = write_tmp("bad.ini", "[model]\nimg_size = 64\nembed_dimm = 3\n");
    vm_config cfg;
    vm_config_defaults(&cfg);
    vm_error err = {0};
    CHECK(vm_config_load(&cfg, p, &err) == VM_EINVAL);
    CHECK(strstr(err.msg, "bad.ini:3") != NULL, "%s", err.msg);
    CHECK(strstr(err.msg, "embed_dimm") != NULL, "%s", err.msg);
    CHECK(strstr(err.msg, "embed_dim,") != NULL, "known keys listed: %s", err.msg);
}

TEST(config_bad_values_name_allowed) {
    vm_config cfg;
    vm_config_defaults(&cfg);
    vm_error err = {0};
    const char *p = write_tmp("enum.ini", "[loss]\ncontrastive = moco\n");
    CHECK(vm_config_load(&cfg, p, &err) == VM_EINVAL);
    CHECK(strstr(err.msg, "enum.ini:2") && strstr(err.msg, "infonce|simsiam|vicreg|none"), "%s", err.msg);
    p = write_tmp("range.ini", "[model]\nmask_ratio = 1.5\n");
    CHECK(vm_config_load(&cfg, p, &err) == VM_EINVAL);
    CHECK(strstr(err.msg, "mask_ratio") && strstr(err.msg, "[0, 0.99]"), "%s", err.msg);
    p = write_tmp("int.ini", "[optim]\nbatch_size = 12x\n");
    CHECK(vm_config_load(&cfg, p, &err) == VM_EINVAL);
    CHECK(strstr(err.msg, "integer"), "%s", err.msg);
    p = write_tmp("sec.ini", "[modle]\nx = 1\n");
    CHECK(vm_config_load(&cfg, p, &err) == VM_EINVAL);
    CHECK(strstr(err.msg, "sec.ini:1: unknown section [modle]"), "%s", err.msg);
    // a section without keys is refused too (inih reports no header to the handler)
    p = write_tmp("empty-sec.ini", "[optim]\nbatch_size = 8\n\n[optimiser]\n; warmup_steps = 10\n");
    CHECK(vm_config_load(&cfg, p, &err) == VM_EINVAL);
    CHECK(strstr(err.msg, "empty-sec.ini:4: unknown section [optimiser]") && strstr(err.msg, "optim,"), "%s", err.msg);
    CHECK(vm_config_load(&cfg, "/nonexistent/x.ini", &err) == VM_EIO);
    CHECK(strstr(err.msg, "/nonexistent/x.ini"), "%s", err.msg);
}

// A key set twice in one file is refused (naming both lines), not silently overridden by the last
// value; so is an indented line, which inih reads as a continuation of the key above.  Sections may
// be repeated; --set still overrides a key of the file.
TEST(config_duplicate_key_refused) {
    vm_config cfg;
    vm_config_defaults(&cfg);
    vm_error err = {0};
    const char *p = write_tmp("dup.ini", "[optim]\nbatch_size = 16\nbase_lr = 1e-3\n\n[optim]\nbatch_size = 32\n");
    CHECK(vm_config_load(&cfg, p, &err) == VM_EINVAL);
    CHECK(strstr(err.msg, "dup.ini:6") && strstr(err.msg, "batch_size") && strstr(err.msg, "line 2"), "%s", err.msg);
    vm_config_defaults(&cfg);
    p = write_tmp("cont.ini", "[data]\npath = /videos\n  /more\n");
    CHECK(vm_config_load(&cfg, p, &err) == VM_EINVAL);
    CHECK(strstr(err.msg, "cont.ini:3") && strstr(err.msg, "path"), "%s", err.msg);
    vm_config_defaults(&cfg);
    CHECK(vm_config_load_text(&cfg, "[model]\ndepth = 2\ndepth = 3\n", "stored", &err) == VM_EINVAL);
    CHECK(strstr(err.msg, "stored:3") && strstr(err.msg, "depth"), "%s", err.msg);
    vm_config_defaults(&cfg);
    p = write_tmp("twosec.ini", "[optim]\nbatch_size = 16\n[model]\ndepth = 2\n[optim]\nbase_lr = 1e-3\n");
    CHECK_OK(vm_config_load(&cfg, p, &err), err);
    CHECK_EQ_INT(cfg.optim.batch_size, 16);
    CHECK_OK(vm_config_override(&cfg, "optim.batch_size=8", &err), err);
    CHECK_EQ_INT(cfg.optim.batch_size, 8);
    // two files (or a stored config and a file) each set it once: the later one wins
    p = write_tmp("again.ini", "[optim]\nbatch_size = 24\n");
    CHECK_OK(vm_config_load(&cfg, p, &err), err);
    CHECK_EQ_INT(cfg.optim.batch_size, 24);
}

TEST(config_load_text_names_origin_and_line) {
    vm_config cfg;
    vm_config_defaults(&cfg);
    vm_error err = {0};
    CHECK_OK(vm_config_load_text(&cfg, "[model]\nembed_dim = 64\n[loss]\ncontrastive = vicreg\n", "ckpt", &err), err);
    CHECK_EQ_INT(cfg.model.embed_dim, 64);
    CHECK_EQ_INT(cfg.loss.contrastive, VM_CON_VICREG);
    CHECK(vm_config_load_text(&cfg, "[model]\n\ndepth = -3", "m.safetensors (stored config)", &err) == VM_EINVAL);
    CHECK(strstr(err.msg, "m.safetensors (stored config):3") && strstr(err.msg, "depth"), "%s", err.msg);
}

TEST(config_override_and_validate) {
    vm_config cfg;
    vm_config_defaults(&cfg);
    vm_error err = {0};
    CHECK_OK(vm_config_override(&cfg, "data.path=/videos/k400", &err), err);
    CHECK(!strcmp(cfg.data.path, "/videos/k400"));
    CHECK_OK(vm_config_override(&cfg, "sampler.mode=same", &err), err);
    CHECK_EQ_INT(cfg.sampler.mode, VM_PAIR_SAME);
    CHECK(vm_config_override(&cfg, "nodot=1", &err) == VM_EINVAL);
    CHECK_OK(vm_config_override(&cfg, "model.patch_size=15", &err), err);
    CHECK(vm_config_validate(&cfg, &err) == VM_EINVAL);
    CHECK(strstr(err.msg, "patch_size"), "%s", err.msg);
}

// [train] recompute: a bool, false by default (save the activations); true/false/on/off/1/0 accepted,
// anything else refused naming the file, line, key and what is allowed; printed so that it reloads.
TEST(config_train_recompute) {
    vm_config cfg;
    vm_config_defaults(&cfg);
    vm_error err = {0};
    CHECK_EQ_INT(cfg.train.recompute, 0);
    CHECK_OK(vm_config_load(&cfg, write_tmp("rc.ini", "[train]\nrecompute = true\n"), &err), err);
    CHECK_EQ_INT(cfg.train.recompute, 1);
    CHECK_OK(vm_config_validate(&cfg, &err), err);
    CHECK_OK(vm_config_override(&cfg, "train.recompute=off", &err), err);
    CHECK_EQ_INT(cfg.train.recompute, 0);
    CHECK_OK(vm_config_override(&cfg, "train.recompute=1", &err), err);
    CHECK_EQ_INT(cfg.train.recompute, 1);
    CHECK(vm_config_load(&cfg, write_tmp("rc-bad.ini", "[train]\nprecision = fp32\nrecompute = sometimes\n"), &err) ==
          VM_EINVAL);
    CHECK(strstr(err.msg, "rc-bad.ini:3") && strstr(err.msg, "recompute") && strstr(err.msg, "sometimes") &&
              strstr(err.msg, "true or false"),
          "%s", err.msg);
    CHECK(vm_config_override(&cfg, "train.recompute=2", &err) == VM_EINVAL);
    CHECK(strstr(err.msg, "recompute") && strstr(err.msg, "true or false"), "%s", err.msg);
    CHECK_EQ_INT(cfg.train.recompute, 1);  // a refused value changes nothing
    char *text = NULL;
    CHECK_OK(vm_config_to_text(&cfg, &text, NULL, &err), err);
    CHECK(strstr(text, "recompute = true"), "printed config:\n%s", text);
    vm_config back;
    vm_config_defaults(&back);
    CHECK_OK(vm_config_load_text(&back, text, "printed", &err), err);
    CHECK_EQ_INT(back.train.recompute, 1);
    free(text);
}

// [train] activations: fp32 by default; bf16 only together with bf16 products.
TEST(config_train_activations) {
    vm_config cfg;
    vm_error err = {0};
    vm_config_defaults(&cfg);
    CHECK_EQ_INT(cfg.train.activations, VM_ACT_FP32);
    CHECK_OK(vm_config_load(&cfg, write_tmp("act.ini", "[train]\nprecision = bf16\nactivations = bf16\n"), &err), err);
    CHECK_EQ_INT(cfg.train.activations, VM_ACT_BF16);
    CHECK(vm_config_load(&cfg, write_tmp("act-bad.ini", "[train]\nactivations = fp16\n"), &err) == VM_EINVAL &&
              strstr(err.msg, "fp32|bf16"), "%s", err.msg);
    vm_config_defaults(&cfg);
    CHECK_OK(vm_config_load(&cfg, write_tmp("act-fp32.ini", "[train]\nprecision = fp32\nactivations = bf16\n"), &err),
             err);
    CHECK(vm_config_validate(&cfg, &err) == VM_EINVAL && strstr(err.msg, "needs precision = bf16"), "%s", err.msg);
}

TEST(config_print_round_trips) {
    vm_config a, b;
    vm_config_defaults(&a);
    vm_error err = {0};
    CHECK_OK(vm_config_load(&a, "configs/demo.ini", &err), err);
    char path[1024];
    snprintf(path, sizeof path, "%s/printed.ini", vt_tmpdir());
    FILE *fp = fopen(path, "w");
    vm_config_print(&a, fp);
    fclose(fp);
    vm_config_defaults(&b);
    CHECK_OK(vm_config_load(&b, path, &err), err);
    CHECK(memcmp(&a, &b, sizeof a) == 0, "printed config does not reload identically");
}

// Known-answer vectors of Philox4x32-10 from the Random123 distribution (kat_vectors).
TEST(rng_philox_known_answers) {
    uint32_t out[4];
    vm_philox4x32(0, 0, 0, out);
    CHECK(out[0] == 0x6627e8d5u && out[1] == 0xe169c58du && out[2] == 0xbc57ac4cu && out[3] == 0x9b00dbd8u);
    vm_philox4x32(~0ull, ~0ull, ~0ull, out);
    CHECK(out[0] == 0x408f276du && out[1] == 0x41c83b0eu && out[2] == 0xa20bc7c6u && out[3] == 0x6d5451fdu);
    vm_philox4x32(0x299f31d0a4093822ull, 0x0370734413198a2eull, 0x85a308d3243f6a88ull, out);
    CHECK(out[0] == 0xd16cfe09u && out[1] == 0x94fdccebu && out[2] == 0x5001e420u && out[3] == 0x24126ea1u);
}

TEST(rng_streams_are_pure_and_uniform) {
    vm_rng a, b;
    vm_rng_init(&a, 42, vm_rng_stream(VM_RNG_SAMPLER, 1, 2, 3));
    vm_rng_init(&b, 42, vm_rng_stream(VM_RNG_SAMPLER, 1, 2, 3));
    for (int i = 0; i < 100; i++) CHECK(vm_rng_u32(&a) == vm_rng_u32(&b));
    vm_rng_init(&b, 42, vm_rng_stream(VM_RNG_SAMPLER, 1, 2, 4));
    int same = 0;
    for (int i = 0; i < 100; i++) same += vm_rng_u32(&a) == vm_rng_u32(&b);
    CHECK(same < 3, "different streams agree %d/100 times", same);
    // Mean and variance of 200k uniforms; bucket counts of vm_rng_int.
    double s = 0, s2 = 0;
    int counts[7] = {0};
    const int n = 200000;
    for (int i = 0; i < n; i++) {
        double u = vm_rng_uniform(&a);
        CHECK(u >= 0 && u < 1);
        s += u;
        s2 += u * u;
        int64_t k = vm_rng_int(&a, 3, 9);
        CHECK(k >= 3 && k <= 9);
        counts[k - 3]++;
    }
    CHECK_NEAR(s / n, 0.5, 0.005);
    CHECK_NEAR(s2 / n - (s / n) * (s / n), 1.0 / 12, 0.002);
    for (int k = 0; k < 7; k++) CHECK_NEAR(counts[k], n / 7.0, 5 * sqrt(n / 7.0));
    double m = 0, v = 0;
    for (int i = 0; i < n; i++) { double z = vm_rng_normal(&a); m += z; v += z * z; }
    CHECK_NEAR(m / n, 0.0, 0.01);
    CHECK_NEAR(v / n, 1.0, 0.02);
    // Ranges wider than INT64_MAX (hi - lo overflows int64_t): both signs come out, within bounds.
    int neg = 0, pos = 0;
    for (int i = 0; i < 1000; i++) {
        int64_t k = vm_rng_int(&a, INT64_MIN, INT64_MAX);
        neg += k < 0, pos += k > 0;
        int64_t j = vm_rng_int(&a, -3, INT64_MAX);
        CHECK(j >= -3, "vm_rng_int(-3, INT64_MAX) gave %lld", (long long)j);
    }
    CHECK(neg > 400 && pos > 400, "full range: %d negative, %d positive of 1000", neg, pos);
}

TEST(io_png_and_npy) {
    uint8_t img[5 * 3 * 3];
    for (int i = 0; i < (int)sizeof img; i++) img[i] = (uint8_t)(i * 7);
    char path[1024];
    snprintf(path, sizeof path, "%s/x.png", vt_tmpdir());
    vm_error err = {0};
    CHECK_OK(vm_png_write(path, img, 5, 3, &err), err);
    uint8_t *back = NULL;
    int w = 0, h = 0;
    CHECK_OK(vm_png_read(path, &back, &w, &h, &err), err);
    CHECK(w == 5 && h == 3 && memcmp(back, img, sizeof img) == 0);
    free(back);
    snprintf(path, sizeof path, "%s/x.npy", vt_tmpdir());
    int64_t shape[3] = {3, 5, 3};
    CHECK_OK(vm_npy_write(path, img, "|u1", 1, shape, 3, &err), err);
    FILE *fp = fopen(path, "rb");
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fclose(fp);
    CHECK(size % 64 == (long)sizeof img % 64 && size == 128 + (long)sizeof img, "npy size %ld", size);
    CHECK(vm_png_read("/nonexistent.png", &back, &w, &h, &err) == VM_ECORRUPT);
}

// [pipeline] curve_secret_key / curve_clients: paths, empty (CURVE off) by default; admitted clients
// without a server key pair is refused at validation, naming both keys, and not at the first worker.
TEST(config_curve_clients_needs_secret_key) {
    vm_config cfg;
    vm_error err = {0};
    vm_config_defaults(&cfg);
    CHECK(!cfg.pipeline.curve_secret_key[0] && !cfg.pipeline.curve_clients[0], "CURVE is on by default");
    CHECK_OK(vm_config_load(&cfg, write_tmp("curve-bad.ini", "[pipeline]\ncurve_clients = keys/\n"), &err), err);
    CHECK(vm_config_validate(&cfg, &err) == VM_EINVAL, "curve_clients without curve_secret_key accepted");
    CHECK(strstr(err.msg, "curve_clients") && strstr(err.msg, "curve_secret_key is empty"), "%s", err.msg);
    CHECK_OK(vm_config_override(&cfg, "pipeline.curve_secret_key=trainer.key_secret", &err), err);
    CHECK_OK(vm_config_validate(&cfg, &err), err);
    vm_config_defaults(&cfg);  // a server key alone is valid here (vicmae run admits its own workers)
    CHECK_OK(vm_config_override(&cfg, "pipeline.curve_secret_key=trainer.key_secret", &err), err);
    CHECK_OK(vm_config_validate(&cfg, &err), err);
}
