// vicmae debug-step --config FILE --batch BATCH_FILE --out STEP.safetensors [--backend cpu|cuda]
//                   [--steps N]
//
// One forward and backward pass of the configured model (initialised from run.seed) on a stored
// batch, written as safetensors so that any external reference (tests/test_trainer_torch.py) can
// check the step:
//   <state_dict name>          parameters and buffers before the step (official names)
//   input.views                U8  (B, 2, H, W, 3)
//   mask.ids_keep              I32 (B, 2, K)   kept patches of every view, in MAE's keep order
//   mask.ids_restore           I32 (B, 2, L)
//   loss.total, loss.rec, loss.con, loss.w_rec, loss.w_con   F32 scalars; loss.con_terms F32 (3)
//   grad.<name>                gradient of loss.total for every trained tensor
// With --steps N > 1 it goes on with AdamW for N steps on the same batch and adds
//   steps.loss (N, 4) [total, rec, con, w_con], steps.lr (N), steps.grad_norm (N),
//   steps.ids_keep (N, B, 2, K), steps.ids_restore (N, B, 2, L), final.<name> after the N steps.
// Metadata: "config" (the effective INI), "backend", "precision" (CUDA follows [train] precision),
// "activations" (bf16 with [train] activations = bf16 on CUDA, else fp32), "steps", "total_steps".
// BATCH_FILE is a proto batch message (vicmae --save-batches) or a .npy of uint8 (B, 2, H, W, 3).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli/cli.h"
#include "common/io.h"
#include "proto/proto.h"
#include "trainer/cuda/cuda_backend.h"
#include "trainer/model.h"
#include "trainer/safetensors.h"

// Absent from builds without the CUDA backend (resolved at link time).
extern const vm_backend_ops *vm_backend_cuda(char *why, size_t why_cap) __attribute__((weak));

static int usage_to(FILE *f) {
    fprintf(f, "usage: vicmae debug-step --config FILE --batch BATCH_FILE --out STEP.safetensors\n"
               "                         [--backend cpu|cuda] [--steps N] [--set section.key=value]...\n");
    return 2;
}
static int usage(void) { return usage_to(stderr); }

// Minimal .npy reader for uint8 (B, 2, H, W, 3) C-order arrays (numpy format 1.0 / 2.0).
static int read_npy_u8(const unsigned char *buf, size_t len, const char *path, uint8_t **pix, int shape[5],
                       vm_error *err) {
    if (len < 10 || memcmp(buf, "\x93NUMPY", 6))
        return vm_fail(err, VM_ECORRUPT, "%s: neither a proto batch message nor a .npy file", path);
    size_t hlen, hstart;
    if (buf[6] == 1) hlen = buf[8] | (size_t)buf[9] << 8, hstart = 10;
    else if (len >= 12) hlen = buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24, hstart = 12;
    else return vm_fail(err, VM_ECORRUPT, "%s: truncated .npy header", path);
    if (hstart + hlen > len) return vm_fail(err, VM_ECORRUPT, "%s: truncated .npy header", path);
    char hdr[1024];
    if (hlen >= sizeof hdr) return vm_fail(err, VM_EUNSUPPORTED, "%s: .npy header too long", path);
    memcpy(hdr, buf + hstart, hlen);
    hdr[hlen] = 0;
    if (!strstr(hdr, "'|u1'") || !strstr(hdr, "'fortran_order': False"))
        return vm_fail(err, VM_EUNSUPPORTED, "%s: .npy must be uint8 ('|u1') in C order: %s", path, hdr);
    const char *s = strstr(hdr, "'shape': (");
    if (!s || sscanf(s, "'shape': (%d, %d, %d, %d, %d)", &shape[0], &shape[1], &shape[2], &shape[3], &shape[4]) != 5)
        return vm_fail(err, VM_EUNSUPPORTED, "%s: .npy shape must be (B, 2, H, W, 3): %s", path, hdr);
    size_t n = (size_t)shape[0] * shape[1] * shape[2] * shape[3] * shape[4];
    if (shape[0] < 1 || shape[2] < 1 || shape[3] < 1 || hstart + hlen + n != len)
        return vm_fail(err, VM_ECORRUPT, "%s: .npy holds %zu data bytes, shape needs %zu", path, len - hstart - hlen, n);
    *pix = malloc(n);
    if (!*pix) return vm_fail(err, VM_ENOMEM, "%s: out of memory", path);
    memcpy(*pix, buf + hstart + hlen, n);
    return 0;
}

// Read a batch file (proto message or .npy) into pixels (B, V, H, W, 3); shape = {B, V, H, W, 3}.
static int read_batch(const char *path, uint8_t **pix, int shape[5], vm_error *err) {
    void *msg = NULL;
    size_t len = 0;
    int rc = vm_batch_file_read(path, &msg, &len, err);
    if (rc) return rc;
    uint32_t magic = 0;
    if (len >= 4) memcpy(&magic, msg, 4);
    if (magic != VM_BATCH_MAGIC) {
        rc = read_npy_u8(msg, len, path, pix, shape, err);
        free(msg);
        return rc;
    }
    vm_batch_view v;
    rc = vm_batch_parse(msg, len, &v, err);
    if (!rc) {
        shape[0] = (int)v.h.batch, shape[1] = (int)v.h.views, shape[2] = (int)v.h.height, shape[3] = (int)v.h.width;
        shape[4] = 3;
        *pix = malloc(v.h.raw_size ? v.h.raw_size : 1);
        if (!*pix) rc = vm_fail(err, VM_ENOMEM, "%s: out of memory", path);
        else rc = vm_batch_decode_pixels(&v, *pix, v.h.raw_size, err);
        if (rc) free(*pix), *pix = NULL;
    }
    free(msg);
    if (rc) vm_error_prefix(err, "%s: ", path);
    return rc;
}

// Gather a (2, B, X) view-major host array into (B, 2, X) sample-major at dst.
static void to_sample_major(int32_t *dst, const int32_t *src, int B, int X) {
    for (int v = 0; v < 2; v++)
        for (int b = 0; b < B; b++)
            memcpy(dst + ((size_t)b * 2 + v) * X, src + ((size_t)v * B + b) * X, (size_t)X * sizeof *dst);
}

int cmd_debug_step(int argc, char **argv) {
    vm_config cfg;
    int rc = vm_cli_config(&argc, argv, &cfg);
    if (rc) return rc;
    const char *batch_path = NULL, *out_path = NULL, *backend = NULL;
    int steps = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch_path = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out_path = argv[++i];
        else if (!strcmp(argv[i], "--backend") && i + 1 < argc) backend = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) {
            if (vm_cli_int("debug-step", "--steps", argv[++i], 1, 10000, &steps)) return 2;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage_to(stdout), 0;
        else {
            fprintf(stderr, "vicmae debug-step: unexpected argument '%s'\n", argv[i]);
            return usage();
        }
    }
    if (!batch_path || !out_path) return usage();

    const vm_backend_ops *be = NULL;
    char why[512] = "built without CUDA";
    int want_cuda = backend ? !strcmp(backend, "cuda") : cfg.run.backend == VM_BACKEND_CUDA;
    if (backend && strcmp(backend, "cpu") && strcmp(backend, "cuda")) {
        fprintf(stderr, "vicmae debug-step: --backend '%s': expected cpu or cuda\n", backend);
        return 2;
    }
    if (want_cuda || (!backend && cfg.run.backend == VM_BACKEND_AUTO)) {
        if (vm_backend_cuda) be = vm_backend_cuda(why, sizeof why);
        if (!be && want_cuda) {
            fprintf(stderr, "vicmae debug-step: CUDA backend unavailable: %s\n", why);
            return 1;
        }
    }
    if (!be) be = vm_backend_cpu(cfg.run.threads);
    int bf16 = !strcmp(be->name, "cuda") && cfg.train.precision == VM_PREC_BF16;
    if (!strcmp(be->name, "cuda")) vm_backend_cuda_set_precision(bf16);  // [train] precision (CPU: fp32)

    vm_error err = {0};
    uint8_t *views = NULL;
    int shape[5];
    if ((rc = read_batch(batch_path, &views, shape, &err))) {
        fprintf(stderr, "vicmae debug-step: %s\n", err.msg);
        return 1;
    }
    int B = shape[0], S = cfg.model.img_size;
    if (shape[1] != 2 || shape[2] != S || shape[3] != S || shape[4] != 3) {
        fprintf(stderr, "vicmae debug-step: %s: batch is (%d, %d, %d, %d, %d), the model needs (B, 2, %d, %d, 3)\n",
                batch_path, shape[0], shape[1], shape[2], shape[3], shape[4], S, S);
        free(views);
        return 2;
    }

    vm_model *m = NULL;
    if ((rc = vm_model_create(&m, &cfg, be, B, &err))) {
        fprintf(stderr, "vicmae debug-step: %s\n", err.msg);
        free(views);
        return 1;
    }
    vm_model_init(m, (uint64_t)cfg.run.seed);
    vm_model_set_total_steps(m, steps);
    int act16 = vm_model_bf16_activations(m);
    int ntab = vm_model_num_tensors(m), K, L;
    vm_model_last_masks(m, NULL, NULL, NULL, &K, &L);
    size_t nf = vm_model_num_floats(m), fbytes = nf * sizeof(float);
    float *before = malloc(fbytes), *grads = malloc(fbytes), *after = malloc(fbytes);
    int32_t *keep_all = malloc((size_t)steps * B * 2 * K * sizeof(int32_t));
    int32_t *restore_all = malloc((size_t)steps * B * 2 * L * sizeof(int32_t));
    float *steps_loss = calloc((size_t)steps * 4, sizeof(float)), *steps_lr = calloc((size_t)steps, sizeof(float));
    float *steps_norm = calloc((size_t)steps, sizeof(float));
    vm_st_tensor *t = calloc((size_t)ntab * 3 + 32, sizeof *t);
    char (*names)[96] = calloc((size_t)ntab * 2, sizeof *names);
    if (!before || !grads || !after || !keep_all || !restore_all || !steps_loss || !steps_lr || !steps_norm || !t || !names) {
        fprintf(stderr, "vicmae debug-step: out of memory\n");
        return 1;
    }
    be->to_host(before, vm_model_params(m), fbytes);
    int64_t counter_before = vm_model_bn_batches(m);
    vm_losses first = {0};
    for (int s = 0; s < steps && !rc; s++) {
        vm_losses ls;
        rc = vm_model_forward_backward(m, views, B, s, &ls, &err);
        if (rc) break;
        if (s == 0) {
            first = ls;
            be->to_host(grads, vm_model_grads(m), fbytes);
        }
        const int32_t *keep, *restore;
        vm_model_last_masks(m, &keep, &restore, NULL, NULL, NULL);
        to_sample_major(keep_all + (size_t)s * B * 2 * K, keep, B, K);
        to_sample_major(restore_all + (size_t)s * B * 2 * L, restore, B, L);
        steps_loss[4 * s + 0] = ls.total, steps_loss[4 * s + 1] = ls.rec;
        steps_loss[4 * s + 2] = ls.con, steps_loss[4 * s + 3] = ls.w_con;
        if (steps > 1) vm_model_optimizer_step(m, s, &steps_lr[s], &steps_norm[s]);
    }
    if (rc) {
        fprintf(stderr, "vicmae debug-step: %s\n", err.msg);
        return 1;
    }
    be->to_host(after, vm_model_params(m), fbytes);

    int n = 0, nn = 0;
    for (int pass = 0; pass < 3; pass++) {  // 0 params before, 1 gradients, 2 params after
        if (pass == 2 && steps == 1) break;
        for (int i = 0; i < ntab; i++) {
            const vm_tensor_info *ti = vm_model_tensor(m, i);
            if (pass == 1 && ti->kind != VM_TENSOR_PARAM) continue;
            if (pass == 2 && ti->kind == VM_TENSOR_COUNTER) continue;
            vm_st_tensor *o = &t[n++];
            o->ndim = ti->ndim;
            memcpy(o->shape, ti->shape, sizeof ti->shape);
            if (pass == 0) o->name = ti->name;
            else {
                snprintf(names[nn], sizeof names[nn], "%s.%s", pass == 1 ? "grad" : "final", ti->name);
                o->name = names[nn++];
            }
            if (ti->kind == VM_TENSOR_COUNTER) {
                o->dtype = "I64", o->data = &counter_before, o->nbytes = sizeof counter_before;
            } else {
                const float *src = pass == 0 ? before : pass == 1 ? grads : after;
                o->dtype = "F32", o->data = src + ti->offset, o->nbytes = ti->numel * sizeof(float);
            }
        }
    }
    int S2 = S;
    t[n++] = (vm_st_tensor){"input.views", "U8", 5, {B, 2, S2, S2, 3}, views, (size_t)B * 2 * S * S * 3};
    t[n++] = (vm_st_tensor){"mask.ids_keep", "I32", 3, {B, 2, K}, keep_all, (size_t)B * 2 * K * 4};
    t[n++] = (vm_st_tensor){"mask.ids_restore", "I32", 3, {B, 2, L}, restore_all, (size_t)B * 2 * L * 4};
    t[n++] = (vm_st_tensor){"loss.total", "F32", 0, {0}, &first.total, 4};
    t[n++] = (vm_st_tensor){"loss.rec", "F32", 0, {0}, &first.rec, 4};
    t[n++] = (vm_st_tensor){"loss.con", "F32", 0, {0}, &first.con, 4};
    t[n++] = (vm_st_tensor){"loss.w_rec", "F32", 0, {0}, &first.w_rec, 4};
    t[n++] = (vm_st_tensor){"loss.w_con", "F32", 0, {0}, &first.w_con, 4};
    t[n++] = (vm_st_tensor){"loss.con_terms", "F32", 1, {3}, first.con_terms, 12};
    if (steps > 1) {
        t[n++] = (vm_st_tensor){"steps.loss", "F32", 2, {steps, 4}, steps_loss, (size_t)steps * 16};
        t[n++] = (vm_st_tensor){"steps.lr", "F32", 1, {steps}, steps_lr, (size_t)steps * 4};
        t[n++] = (vm_st_tensor){"steps.grad_norm", "F32", 1, {steps}, steps_norm, (size_t)steps * 4};
        t[n++] = (vm_st_tensor){"steps.ids_keep", "I32", 4, {steps, B, 2, K}, keep_all, (size_t)steps * B * 2 * K * 4};
        t[n++] = (vm_st_tensor){"steps.ids_restore", "I32", 4, {steps, B, 2, L}, restore_all,
                                (size_t)steps * B * 2 * L * 4};
    }
    char *ini = NULL;  // an empty "config" entry on failure
    vm_config_to_text(&cfg, &ini, NULL, NULL);
    char nsteps[32], total[32];
    snprintf(nsteps, sizeof nsteps, "%d", steps);
    snprintf(total, sizeof total, "%d", cfg.optim.steps > 0 ? cfg.optim.steps : steps);
    const char *meta[] = {"format", "vicmae-debug-step-1", "config", ini ? ini : "", "backend", be->name,
                          "precision", bf16 ? "bf16" : "fp32", "activations", act16 ? "bf16" : "fp32", "steps", nsteps,
                          "total_steps", total, NULL};
    rc = vm_st_write(out_path, t, n, meta, &err);
    if (rc) fprintf(stderr, "vicmae debug-step: %s\n", err.msg);
    else
        printf("debug-step: %s backend, %d pairs, %d step%s: loss %.6f (rec %.6f, con %.6f, w_con %.4f) -> %s\n",
               be->name, B, steps, steps > 1 ? "s" : "", first.total, first.rec, first.con, first.w_con, out_path);
    free(ini);
    free(before), free(grads), free(after), free(keep_all), free(restore_all);
    free(steps_loss), free(steps_lr), free(steps_norm), free(t), free(names), free(views);
    vm_model_free(m);
    return rc ? 1 : 0;
}
