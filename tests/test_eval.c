// tests/test_eval.c — ImageFolder reading, resize + crop, k-NN and linear probe on known answers,
// feature extraction with its cache on a generated ImageFolder, and the timm export filter.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <jpeglib.h>
#include "common/io.h"
#include "common/rng.h"
#include "eval/eval.h"
#include "eval/export.h"
#include "tests/harness.h"
#include "trainer/safetensors.h"

static void write_jpeg(const char *path, const uint8_t *rgb, int w, int h) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    FILE *fp = fopen(path, "wb");
    CHECK(fp, "%s", path);
    jpeg_stdio_dest(&c, fp);
    c.image_width = (JDIMENSION)w, c.image_height = (JDIMENSION)h, c.input_components = 3, c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 95, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(rgb + (size_t)c.next_scanline * w * 3);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    fclose(fp);
}

static void mkdir_p(const char *p) {
    vm_error err = {0};
    CHECK_OK(vm_mkdirs(p, &err), err);
}

// A generated ImageFolder: class "c0_red" images are reddish, "c1_green" greenish, "c2_blue"
// bluish, each with per-pixel noise and a random size (so the resize path runs); the dominant
// colour is the known feature that separates the classes.  Even indices PNG, odd JPEG.
static void make_folder(const char *root, int per_class, uint64_t seed) {
    static const char *cls[3] = {"c0_red", "c1_green", "c2_blue"};
    vm_rng r;
    vm_rng_init(&r, seed, 1);
    for (int c = 0; c < 3; c++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/%s", root, cls[c]);
        mkdir_p(dir);
        for (int i = 0; i < per_class; i++) {
            int w = 24 + (int)vm_rng_int(&r, 0, 40), h = 24 + (int)vm_rng_int(&r, 0, 40);
            uint8_t *img = malloc((size_t)w * h * 3);
            for (int p = 0; p < w * h; p++)
                for (int ch = 0; ch < 3; ch++) {
                    int base = ch == c ? 170 : 60;
                    img[p * 3 + ch] = (uint8_t)(base + vm_rng_int(&r, -50, 50));
                }
            char path[1100];
            vm_error err = {0};
            if (i % 2 == 0) {
                snprintf(path, sizeof path, "%s/img%03d.png", dir, i);
                CHECK_OK(vm_png_write(path, img, w, h, &err), err);
            } else {
                snprintf(path, sizeof path, "%s/img%03d.JPG", dir, i);
                write_jpeg(path, img, w, h);
            }
            free(img);
        }
        // Not images: ignored by the scan.
        char junk[1100];
        snprintf(junk, sizeof junk, "%s/notes.txt", dir);
        FILE *fp = fopen(junk, "w");
        fputs("x", fp);
        fclose(fp);
    }
}

TEST(scan_orders_classes_and_limits) {
    char root[1024];
    snprintf(root, sizeof root, "%s/train", vt_tmpdir());
    make_folder(root, 5, 1);
    vm_imagefolder f;
    vm_error err = {0};
    CHECK_OK(vm_imagefolder_scan(&f, root, 0, NULL, &err), err);
    CHECK_EQ_INT(f.nclasses, 3);
    CHECK_EQ_INT(f.n, 15);
    CHECK(!strcmp(f.classes[0], "c0_red") && !strcmp(f.classes[2], "c2_blue"));
    CHECK(strstr(f.paths[0], "c0_red/img000.png") && strstr(f.paths[1], "c0_red/img001.JPG"), "%s %s", f.paths[0], f.paths[1]);
    CHECK_EQ_INT(f.labels[14], 2);
    vm_imagefolder g;
    CHECK_OK(vm_imagefolder_scan(&g, root, 2, &f, &err), err);
    CHECK_EQ_INT(g.n, 6);
    CHECK_EQ_INT(g.labels[2], 1);
    vm_imagefolder_free(&g);
    // A folder with a class the reference lacks is refused with the class named.
    char other[1024];
    snprintf(other, sizeof other, "%s/val", vt_tmpdir());
    snprintf(root, sizeof root, "%s/zebra", other);
    mkdir_p(root);
    CHECK(vm_imagefolder_scan(&g, other, 0, &f, &err) == VM_EINVAL && strstr(err.msg, "zebra"), "%s", err.msg);
    // No images at all.
    CHECK(vm_imagefolder_scan(&g, other, 0, NULL, &err) == VM_ENOTFOUND, "%s", err.msg);
    CHECK(vm_imagefolder_scan(&g, "/nonexistent/dir", 0, NULL, &err) == VM_EIO);
    vm_imagefolder_free(&f);
}

TEST(image_read_png_jpeg_and_corrupt) {
    const char *d = vt_tmpdir();
    int w = 13, h = 7;
    uint8_t img[13 * 7 * 3];
    for (int i = 0; i < w * h * 3; i++) img[i] = (uint8_t)(i * 7);
    char png[1100], jpg[1100], bad[1100];
    snprintf(png, sizeof png, "%s/a.png", d), snprintf(jpg, sizeof jpg, "%s/a.jpg", d), snprintf(bad, sizeof bad, "%s/b.jpg", d);
    vm_error err = {0};
    CHECK_OK(vm_png_write(png, img, w, h, &err), err);
    uint8_t *out = NULL;
    int ow, oh;
    CHECK_OK(vm_image_read(png, &out, &ow, &oh, &err), err);
    CHECK(ow == w && oh == h && !memcmp(out, img, sizeof img));
    free(out);
    // A flat JPEG decodes close to its colour (lossy).
    for (int i = 0; i < w * h; i++) img[3 * i] = 200, img[3 * i + 1] = 100, img[3 * i + 2] = 30;
    write_jpeg(jpg, img, w, h);
    CHECK_OK(vm_image_read(jpg, &out, &ow, &oh, &err), err);
    CHECK(ow == w && oh == h);
    for (int i = 0; i < w * h * 3; i++) CHECK(abs(out[i] - img[i]) <= 4, "pixel %d: %d vs %d", i, out[i], img[i]);
    free(out);
    // Truncated JPEG: an error naming the file, no crash; not an image at all: unsupported.
    FILE *in = fopen(jpg, "rb"), *o = fopen(bad, "wb");
    char buf[64];
    size_t n = fread(buf, 1, sizeof buf, in);
    fwrite(buf, 1, n, o);
    fclose(in), fclose(o);
    int rc = vm_image_read(bad, &out, &ow, &oh, &err);
    CHECK(rc == VM_ECORRUPT && strstr(err.msg, "b.jpg"), "rc %d: %s", rc, err.msg);
    o = fopen(bad, "wb");
    fputs("hello", o);
    fclose(o);
    CHECK(vm_image_read(bad, &out, &ow, &oh, &err) == VM_EUNSUPPORTED);
}

TEST(resize_crop_geometry) {
    // Same size: exact copy.
    uint8_t src[48 * 32 * 3], dst[16 * 16 * 3], same[8 * 8 * 3];
    for (int i = 0; i < 8 * 8 * 3; i++) src[i] = (uint8_t)(i * 31);
    CHECK_OK(vm_image_resize_crop(src, 8, 8, same, 8), (vm_error){0});
    CHECK(!memcmp(src, same, sizeof same));
    // A constant image stays constant through any resize.
    memset(src, 77, sizeof src);
    CHECK_OK(vm_image_resize_crop(src, 48, 32, dst, 16), (vm_error){0});
    for (size_t i = 0; i < sizeof dst; i++) CHECK_EQ_INT(dst[i], 77);
    // 48x32 -> shorter side 16: 24x16, centre crop drops 4 columns each side.  A vertical stripe
    // pattern that is 255 in the middle 32 source columns and 0 elsewhere must come out 255 in the
    // crop's columns that map fully inside the stripe (source x in [8, 40) -> output 4..19 -> crop 0..15).
    for (int y = 0; y < 32; y++)
        for (int x = 0; x < 48; x++)
            for (int c = 0; c < 3; c++) src[(y * 48 + x) * 3 + c] = (uint8_t)(x >= 8 && x < 40 ? 255 : 0);
    CHECK_OK(vm_image_resize_crop(src, 48, 32, dst, 16), (vm_error){0});
    for (int x = 1; x < 15; x++) CHECK_EQ_INT(dst[(5 * 16 + x) * 3], 255);
    // 2x2 checkerboard downscaled by 2 with antialiasing averages to mid-grey, not aliasing to 0/255.
    for (int y = 0; y < 32; y++)
        for (int x = 0; x < 32; x++)
            for (int c = 0; c < 3; c++) src[(y * 32 + x) * 3 + c] = (uint8_t)(((x + y) & 1) ? 255 : 0);
    CHECK_OK(vm_image_resize_crop(src, 32, 32, dst, 16), (vm_error){0});
    for (int i = 16 * 3; i < 15 * 16 * 3; i++) CHECK(abs(dst[i] - 128) <= 2, "pixel %d = %d", i, dst[i]);
}

// Feature sets whose answers are known by construction.
static void set_alloc(vm_feature_set *s, int n, int dim, int nclasses) {
    s->n = n, s->dim = dim, s->nclasses = nclasses;
    s->x = calloc((size_t)n * dim, sizeof *s->x);
    s->labels = calloc((size_t)n, sizeof *s->labels);
}

TEST(knn_weighted_votes) {
    // Train: class c sits at angle-direction e_c, plus one far "decoy" of class 0 near e_1 in dim 2.
    vm_feature_set tr, te;
    set_alloc(&tr, 7, 3, 3);
    set_alloc(&te, 3, 3, 3);
    for (int i = 0; i < 6; i++) tr.x[i * 3 + i / 2] = 1.0f + 0.1f * (i % 2), tr.labels[i] = i / 2;
    tr.x[6 * 3 + 1] = 1, tr.x[6 * 3 + 0] = 0.2f, tr.labels[6] = 0;  // class 0 point near e_1
    for (int i = 0; i < 3; i++) te.x[i * 3 + i] = 2.0f, te.labels[i] = i;  // scale must not matter (cosine)
    vm_eval_result r;
    vm_error err = {0};
    // k = 2: each query's two nearest are its own class's pair: 100%.
    CHECK_OK(vm_knn(&tr, &te, 2, 0.07, &r, &err), err);
    CHECK_NEAR(r.top1, 100.0, 1e-9);
    // k = 3 for the e_1 query: neighbours = two class-1 points (sim 1) and the decoy (sim 0.98):
    // exp(1/T)*2 beats exp(0.98/T), so still class 1; top-1 stays 100.
    CHECK_OK(vm_knn(&tr, &te, 3, 0.07, &r, &err), err);
    CHECK_NEAR(r.top1, 100.0, 1e-9);
    // Query the decoy direction with labels claiming class 0: the nearest (k=1) is the decoy itself.
    vm_feature_set q;
    set_alloc(&q, 1, 3, 3);
    q.x[0] = 0.2f, q.x[1] = 1, q.labels[0] = 0;
    CHECK_OK(vm_knn(&tr, &q, 1, 0.07, &r, &err), err);
    CHECK_NEAR(r.top1, 100.0, 1e-9);
    // k = 3: two class-1 votes outweigh the decoy: a miss at top-1, a hit at top-5 (3 classes).
    CHECK_OK(vm_knn(&tr, &q, 3, 0.07, &r, &err), err);
    CHECK_NEAR(r.top1, 0.0, 1e-9);
    CHECK_NEAR(r.top5, 100.0, 1e-9);
    // With a huge temperature votes are nearly equal counts: still 2 vs 1.  Bad arguments refused.
    CHECK(vm_knn(&tr, &q, 0, 0.07, &r, &err) == VM_EINVAL);
    q.labels[0] = 5;
    CHECK(vm_knn(&tr, &q, 1, 0.07, &r, &err) == VM_EINVAL && strstr(err.msg, "label 5"));
    vm_feature_set_free(&tr), vm_feature_set_free(&te), vm_feature_set_free(&q);
}

// Linear probe: 4 classes separable only by a linear combination of two of 8 noisy dims (the
// others are large-scale noise that standardisation must tame); both optimisers reach ~100%.
TEST(linear_probe_separable) {
    vm_feature_set tr, te;
    int n = 2000, nt = 400, D = 8, C = 4;
    set_alloc(&tr, n, D, C);
    set_alloc(&te, nt, D, C);
    vm_rng r;
    vm_rng_init(&r, 5, 9);
    for (int s = 0; s < 2; s++) {
        vm_feature_set *f = s ? &te : &tr;
        for (int i = 0; i < f->n; i++) {
            int c = (int)vm_rng_int(&r, 0, C - 1);
            f->labels[i] = c;
            float *x = f->x + (size_t)i * D;
            for (int j = 0; j < D; j++) x[j] = (float)(vm_rng_normal(&r) * (j < 2 ? 0.3 : 50.0));
            x[0] += (c & 1) ? 2 : -2;  // class bit 0
            x[1] += (c & 2) ? 2 : -2;  // class bit 1
            x[2] += 1000;              // a large offset standardisation removes
        }
    }
    vm_probe_opts o;
    vm_probe_opts_default(&o);
    o.epochs = 20;
    vm_eval_result res;
    vm_error err = {0};
    CHECK_OK(vm_linear_probe(&tr, &te, &o, &res, &err), err);
    CHECK(res.top1 > 98.0, "sgd top-1 %.2f", res.top1);
    CHECK_NEAR(res.top5, 100.0, 1e-9);  // 4 classes
    o.optimizer = VM_PROBE_LBFGS;
    o.epochs = 50;
    CHECK_OK(vm_linear_probe(&tr, &te, &o, &res, &err), err);
    CHECK(res.top1 > 98.0, "lbfgs top-1 %.2f", res.top1);
    // Shuffled labels cannot be learned: near chance on the test set.
    for (int i = 0; i < n; i++) tr.labels[i] = (int32_t)vm_rng_int(&r, 0, C - 1);
    o.optimizer = VM_PROBE_SGD, o.epochs = 5;
    CHECK_OK(vm_linear_probe(&tr, &te, &o, &res, &err), err);
    CHECK(res.top1 < 40.0, "random labels top-1 %.2f", res.top1);
    vm_feature_set_free(&tr), vm_feature_set_free(&te);
}

static vm_model *tiny_model(vm_config *cfg, int max_batch) {
    vm_error err = {0};
    vm_config_defaults(cfg);
    CHECK_OK(vm_config_load(cfg, "configs/tiny.ini", &err), err);
    vm_model *m = NULL;
    CHECK_OK(vm_model_create(&m, cfg, vm_backend_cpu(1), max_batch, &err), err);
    vm_model_init(m, 3);
    return m;
}

// End to end on the generated colour folder: a random-init encoder's features already carry the
// mean colour, so k-NN and the linear probe must separate the three classes; the cache returns
// identical features and misses once the weights change.
TEST(features_knn_linear_on_generated_folder) {
    char trd[1024], vad[1024], cache[1024];
    snprintf(trd, sizeof trd, "%s/e2e/train", vt_tmpdir());
    snprintf(vad, sizeof vad, "%s/e2e/val", vt_tmpdir());
    snprintf(cache, sizeof cache, "%s/e2e/cache", vt_tmpdir());
    make_folder(trd, 30, 11);
    make_folder(vad, 10, 12);
    vm_config cfg;
    vm_model *m = tiny_model(&cfg, 4);
    vm_imagefolder tr, va;
    vm_error err = {0};
    CHECK_OK(vm_imagefolder_scan(&tr, trd, 0, NULL, &err), err);
    CHECK_OK(vm_imagefolder_scan(&va, vad, 0, &tr, &err), err);
    vm_feature_opts fo;
    vm_feature_opts_default(&fo);
    fo.batch = 16;  // several chunks (and vm_model_features chunks of 8 inside)
    fo.cache_dir = cache;
    vm_feature_set ftr, fva, again;
    CHECK_OK(vm_eval_features(m, &tr, &fo, &ftr, &err), err);
    CHECK_OK(vm_eval_features(m, &va, &fo, &fva, &err), err);
    CHECK_EQ_INT(ftr.n, 90);
    CHECK_EQ_INT(ftr.dim, cfg.model.embed_dim);
    // Batched features equal one-image features (chunking does not change results).
    uint8_t img[32 * 32 * 3];
    float one[64];
    CHECK_OK(vm_imagefolder_load(&tr, 37, 32, img, &err), err);
    CHECK_OK(vm_model_features(m, img, 1, one, &err), err);
    for (int j = 0; j < ftr.dim; j++) CHECK_NEAR(one[j], ftr.x[37 * ftr.dim + j], 1e-5);
    vm_eval_result r;
    CHECK_OK(vm_knn(&ftr, &fva, 20, 0.07, &r, &err), err);
    CHECK(r.top1 >= 90.0, "knn top-1 %.2f", r.top1);
    vm_probe_opts po;
    vm_probe_opts_default(&po);
    po.epochs = 30, po.batch = 32;
    CHECK_OK(vm_linear_probe(&ftr, &fva, &po, &r, &err), err);
    CHECK(r.top1 >= 90.0, "linear top-1 %.2f", r.top1);
    // The cache: a hit gives bit-identical features...
    CHECK_OK(vm_eval_features(m, &tr, &fo, &again, &err), err);
    CHECK(!memcmp(again.x, ftr.x, (size_t)ftr.n * ftr.dim * sizeof(float)));
    vm_feature_set_free(&again);
    // ...and other weights miss (a changed model must never read stale features).
    vm_model_init(m, 4);
    CHECK_OK(vm_eval_features(m, &tr, &fo, &again, &err), err);
    CHECK(memcmp(again.x, ftr.x, (size_t)ftr.n * ftr.dim * sizeof(float)), "stale cache hit");
    vm_feature_set_free(&again);
    // A cache that cannot be written (its directory would be under a regular file) is reported
    // through cache_err; the features still come back.
    char bad[1100];
    snprintf(bad, sizeof bad, "%s/c0_red/notes.txt/cache", vad);
    vm_error cerr = {0};
    fo.cache_dir = bad, fo.cache_err = &cerr;
    CHECK_OK(vm_eval_features(m, &va, &fo, &again, &err), err);
    CHECK(cerr.code != 0 && again.n == va.n, "cache error %d", cerr.code);
    vm_feature_set_free(&again);
    vm_feature_set_free(&ftr), vm_feature_set_free(&fva);
    vm_imagefolder_free(&tr), vm_imagefolder_free(&va);
    vm_model_free(m);
}

TEST(export_keeps_only_the_encoder) {
    vm_config cfg;
    vm_model *m = tiny_model(&cfg, 2);
    char path[1100];
    snprintf(path, sizeof path, "%s/enc.safetensors", vt_tmpdir());
    vm_error err = {0};
    CHECK_OK(vm_export_timm(m, path, &err), err);
    vm_st_file *f = NULL;
    CHECK_OK(vm_st_read(&f, path, &err), err);
    // Expected: cls_token, pos_embed, patch_embed (2), 12 per block, norm (2).
    CHECK_EQ_INT(vm_st_count(f), 2 + 2 + 12 * cfg.model.depth + 2);
    for (int i = 0; i < vm_st_count(f); i++) CHECK(vm_export_is_encoder(vm_st_get(f, i)->name), "%s", vm_st_get(f, i)->name);
    CHECK(!vm_st_find(f, "mask_token") && !vm_st_find(f, "decoder_embed.weight") && !vm_st_find(f, "projector.0.weight"));
    const vm_st_tensor *qkv = vm_st_find(f, "blocks.1.attn.qkv.weight");
    const vm_tensor_info *ti = vm_model_find(m, "blocks.1.attn.qkv.weight");
    CHECK(qkv && ti && qkv->shape[0] == 3 * cfg.model.embed_dim && qkv->shape[1] == cfg.model.embed_dim);
    float *p = malloc(ti->numel * sizeof *p);
    memcpy(p, vm_model_params(m) + ti->offset, ti->numel * sizeof *p);  // CPU backend: host memory
    CHECK(!memcmp(qkv->data, p, qkv->nbytes));
    free(p);
    CHECK(!strcmp(vm_st_meta(f, "global_pool"), "avg") && !strcmp(vm_st_meta(f, "patch_size"), "8"));
    CHECK(vm_st_meta(f, "config") && strstr(vm_st_meta(f, "config"), "embed_dim"));
    vm_st_close(f);
    // The stored configuration comes back for eval/export without --config.
    char *ini = NULL;
    CHECK_OK(vm_ckpt_config(path, &ini, &err), err);
    free(ini);
    vm_model_free(m);
}
