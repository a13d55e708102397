// tools/clip_example.c — the sampler reused for video classification, without the pipeline or
// the trainer: writes training clips and multi-view test clips as numpy .npy files.
//
//   build/tools/clip_example OUT_DIR VIDEO... 
//
// For each VIDEO (its position in the list is its video id and its class label, for the example):
//   OUT_DIR/train_<id>.npy  (2, T, S, S, 3) uint8: two random training clips (policy clip: T frames
//                           clip_stride apart, one RandomResizedCrop + flip shared by the clip)
//   OUT_DIR/test_<id>.npy   (C * K, T, S, S, 3) uint8: evaluation views (policy multiview: C clips
//                           evenly spaced x K crops: left/centre/right), as PySlowFast tests
//   OUT_DIR/labels.npy      (N,) int64: the label of each video
// In Python:  x = np.load("train_0.npy")  # -> torch.from_numpy(x).permute(0, 4, 1, 2, 3) for (B, C, T, H, W)
//
// The configuration is built in code here (T = 8, stride 4, S = 112, 3 x 3 test views); a program of
// your own would usually load an INI file with vm_config_load.
#include <stdio.h>
#include <stdlib.h>
#include "common/config.h"
#include "common/io.h"
#include "sampler/sampler.h"

// Draw `n` samples of video `id` with sampler s and write them as one .npy of shape (n * V/T, T, S, S, 3).
static int write_clips(const vm_sampler *s, const char *video, uint64_t id, int n, int T, const char *path,
                       vm_error *err) {
    const int V = vm_sampler_views(s), S = vm_sampler_size(s);
    uint8_t *px = malloc((size_t)n * V * S * S * 3);
    vm_sample_meta *sm = malloc(sizeof *sm * n);
    vm_view_meta *vm = malloc(sizeof *vm * n * V);
    int rc = px && sm && vm ? 0 : vm_fail(err, VM_ENOMEM, "out of memory");
    // epoch 0, draws 0 .. n-1: the same arguments always give the same clips (seeded by run.seed)
    if (!rc) rc = vm_sampler_draw_path(s, video, id, 0, 0, n, px, sm, vm, NULL, err);
    if (!rc) {
        // Views are laid out (n, V, S, S, 3) with V = clips x crops x T for multiview, so the T frames
        // of each clip are consecutive: the same bytes read as (n * V / T, T, S, S, 3).
        int64_t shape[5] = {(int64_t)n * V / T, T, S, S, 3};
        rc = vm_npy_write(path, px, "|u1", 1, shape, 5, err);
    }
    free(px);
    free(sm);
    free(vm);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s OUT_DIR VIDEO...\n", argv[0]);
        return 2;
    }
    const char *out = argv[1];
    vm_config cfg;
    vm_config_defaults(&cfg);
    cfg.run.seed = 1;
    cfg.model.img_size = 112;
    cfg.decoder.decode_short_side = 128;
    cfg.sampler.clip_len = 8;
    cfg.sampler.clip_stride = 4;
    cfg.sampler.scale_min = 0.35;  // milder crops than MAE's 0.2 for a supervised task
    vm_config test_cfg = cfg;
    cfg.sampler.policy = VM_POLICY_CLIP;
    test_cfg.sampler.policy = VM_POLICY_MULTIVIEW;
    test_cfg.sampler.num_clips = 3;
    test_cfg.sampler.num_crops = 3;
    vm_error err = {0};
    vm_sampler *train = NULL, *test = NULL;
    if (vm_sampler_create(&cfg, &train, &err) || vm_sampler_create(&test_cfg, &test, &err) || vm_mkdirs(out, &err)) {
        fprintf(stderr, "clip_example: %s\n", err.msg);
        return 1;
    }
    int n = argc - 2, rc = 0;
    int64_t *labels = malloc(sizeof *labels * n);
    for (int i = 0; i < n && !rc; i++) {
        char path[4096];
        labels[i] = i;
        snprintf(path, sizeof path, "%s/train_%d.npy", out, i);
        rc = write_clips(train, argv[i + 2], (uint64_t)i, 2, cfg.sampler.clip_len, path, &err);
        if (!rc) {
            snprintf(path, sizeof path, "%s/test_%d.npy", out, i);
            rc = write_clips(test, argv[i + 2], (uint64_t)i, 1, test_cfg.sampler.clip_len, path, &err);
        }
        if (!rc) printf("%s -> train_%d.npy (2 clips), test_%d.npy (9 views)\n", argv[i + 2], i, i);
    }
    if (!rc) {
        char path[4096];
        snprintf(path, sizeof path, "%s/labels.npy", out);
        int64_t shape[1] = {n};
        rc = vm_npy_write(path, labels, "<i8", 8, shape, 1, &err);
    }
    if (rc) fprintf(stderr, "clip_example: %s\n", err.msg);
    free(labels);
    vm_sampler_free(train);
    vm_sampler_free(test);
    return rc ? 1 : 0;
}
