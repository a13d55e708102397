// tools/pkgconfig_example.c — the decoder and the sampler from an installed libvicmae-video, built
// outside this tree with nothing but pkg-config (tests/test_install.py builds and runs it so):
//
//   make && sudo make install && sudo ldconfig       # PREFIX=/usr/local
//   cc -o pkgconfig_example pkgconfig_example.c $(pkg-config --cflags --libs vicmae-video)
//   ./pkgconfig_example clip.mp4                     # tests/test_install.py's 160x120 test clip:
//     frames 30 size 128x96
//     clip 4 x 64 x 64 x 3 frames 21 23 25 27 crop 9 0 87 96 flip 0 mean 141.551 hash 08022a042099fe0a
//
// Opens VIDEO (decoded with the short side at 96), prints its frame count and decoded size, draws
// one training clip (T = 4 frames 2 apart, one RandomResizedCrop + flip shared by the clip, resized
// to 64 x 64) and prints its shape, frames, crop, and the mean and FNV-1a hash of its pixels.
// tools/clip_example.c is the longer example (train and multi-view test clips written as .npy).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <vicmae/common/config.h>
#include <vicmae/sampler/sampler.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s VIDEO\n", argv[0]);
        return 2;
    }
    vm_config cfg;
    vm_config_defaults(&cfg);
    cfg.sampler.policy = VM_POLICY_CLIP;
    cfg.sampler.clip_len = 4;
    cfg.sampler.clip_stride = 2;
    cfg.model.img_size = 64;
    cfg.decoder.decode_short_side = 96;
    snprintf(cfg.decoder.index_cache, sizeof cfg.decoder.index_cache, "off"); // no ~/.cache/vicmae
    vm_error err = {0};
    vm_sampler *s = NULL;
    vm_decoder *dec = NULL;
    uint8_t *px = NULL;
    vm_view_meta *views = NULL;
    vm_decoder_options opt;
    int rc = vm_sampler_create(&cfg, &s, &err);
    if (!rc) {
        vm_sampler_decoder_options(s, &opt);
        dec = vm_decoder_open(argv[1], &opt, &err);
        rc = dec ? 0 : err.code;
    }
    const int V = s ? vm_sampler_views(s) : 0, S = s ? vm_sampler_size(s) : 0;
    const size_t bytes = (size_t)V * S * S * 3;
    if (!rc) {
        const vm_video_info *vi = vm_decoder_info(dec);
        printf("frames %lld size %dx%d\n", (long long)vi->frames, vi->out_width, vi->out_height);
        px = malloc(bytes);
        views = malloc(sizeof *views * V);
        rc = px && views ? 0 : vm_fail(&err, VM_ENOMEM, "out of memory");
    }
    vm_sample_meta sample;
    // video id 0, epoch 0, draw 0: the same arguments give the same clip (seeded by run.seed)
    if (!rc) rc = vm_sampler_draw(s, dec, 0, 0, 0, 1, px, &sample, views, NULL, &err);
    if (!rc) {
        double sum = 0;
        uint64_t hash = 14695981039346656037ull;
        for (size_t i = 0; i < bytes; i++) {
            sum += px[i];
            hash = (hash ^ px[i]) * 1099511628211ull;
        }
        printf("clip %d x %d x %d x 3 frames", V, S, S);
        for (int t = 0; t < V; t++) printf(" %lld", (long long)views[t].frame);
        printf(" crop %d %d %d %d flip %d mean %.3f hash %016llx\n", views[0].crop_x, views[0].crop_y,
               views[0].crop_w, views[0].crop_h, views[0].flip, sum / (double)bytes, (unsigned long long)hash);
    }
    if (rc) fprintf(stderr, "pkgconfig_example: %s\n", err.msg);
    free(px);
    free(views);
    vm_decoder_close(dec);
    vm_sampler_free(s);
    return rc ? 1 : 0;
}
