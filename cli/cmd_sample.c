// vicmae sample --video FILE --count N --out DIR [--epoch E] [--first-draw D] [--video-id ID]
// Draws N samples of FILE with the configured sampler ([sampler], [decoder], [model] img_size,
// [run] seed) in one sorted decoding pass and writes, for eyeballing:
//   DIR/s0000_v0.png ...       every view, img_size x img_size RGB
//   DIR/samples.jsonl          one line per view: sample, view, png, video, video_id, epoch, draw,
//                              frame, pts_ns, time_s, crop [x, y, w, h] in decoded pixels, flip, src [w, h]
// Same seed, epoch, video id and draw number give the same samples as the pipeline's workers.
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli/cli.h"
#include "common/io.h"
#include "sampler/sampler.h"

static int usage_to(FILE *f) {
    fprintf(f, "usage: vicmae sample [--config FILE] [--set k=v] --video FILE --count N --out DIR\n"
               "                     [--epoch E] [--first-draw D] [--video-id ID]\n"
               "       writes DIR/sNNNN_vJ.png per view and DIR/samples.jsonl (one JSON line per view)\n");
    return 2;
}
static int usage(void) { return usage_to(stderr); }

// A JSON string body: quotes, backslashes and control characters escaped.
static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

int cmd_sample(int argc, char **argv) {
    vm_config cfg;
    int rc = vm_cli_config(&argc, argv, &cfg);
    if (rc) return rc;
    const char *video = NULL, *out = NULL;
    int count = 0, epoch = 0, first = 0, vid = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc, bad = 0;
        if (!strcmp(a, "--video") && more) video = argv[++i];
        else if (!strcmp(a, "--out") && more) out = argv[++i];
        else if (!strcmp(a, "--count") && more) bad = vm_cli_int("sample", a, argv[++i], 1, 100000, &count);
        else if (!strcmp(a, "--epoch") && more) bad = vm_cli_int("sample", a, argv[++i], 0, INT_MAX, &epoch);
        else if (!strcmp(a, "--first-draw") && more) bad = vm_cli_int("sample", a, argv[++i], 0, INT_MAX, &first);
        else if (!strcmp(a, "--video-id") && more) bad = vm_cli_int("sample", a, argv[++i], 0, INT_MAX, &vid);
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage_to(stdout); return 0; }
        else { fprintf(stderr, "vicmae sample: unexpected argument '%s'\n", a); return usage(); }
        if (bad) return bad;
    }
    if (!video || !out) return usage();
    if (count < 1) {
        fprintf(stderr, "vicmae sample: --count N is required\n");
        return usage();
    }
    vm_error err = {0};
    vm_sampler *s = NULL;
    if (vm_sampler_create(&cfg, &s, &err) || vm_mkdirs(out, &err)) {
        fprintf(stderr, "vicmae sample: %s\n", err.msg);
        vm_sampler_free(s);
        return 1;
    }
    const int V = vm_sampler_views(s), S = vm_sampler_size(s), n = (int)count;
    const size_t vb = (size_t)S * S * 3;
    uint8_t *px = malloc(vb * V * n);
    vm_sample_meta *sm = malloc(sizeof *sm * n);
    vm_view_meta *vm = malloc(sizeof *vm * n * V);
    vm_sampler_stats st = {0};
    char path[VM_PATH_MAX + 64];
    FILE *jl = NULL;
    rc = 1;
    if (!px || !sm || !vm) {
        fprintf(stderr, "vicmae sample: out of memory for %d samples of %d views\n", n, V);
        goto done;
    }
    if (vm_sampler_draw_path(s, video, (uint64_t)vid, (uint32_t)epoch, (uint64_t)first, n, px, sm, vm, &st, &err)) {
        fprintf(stderr, "vicmae sample: %s\n", err.msg);
        goto done;
    }
    snprintf(path, sizeof path, "%s/samples.jsonl", out);
    jl = fopen(path, "w");
    if (!jl) { perror(path); goto done; }
    for (int b = 0; b < n; b++)
        for (int j = 0; j < V; j++) {
            const vm_view_meta *m = &vm[(size_t)b * V + j];
            char png[64];
            snprintf(png, sizeof png, "s%04d_v%d.png", b, j);
            snprintf(path, sizeof path, "%s/%s", out, png);
            if (vm_png_write(path, px + ((size_t)b * V + j) * vb, S, S, &err)) {
                fprintf(stderr, "vicmae sample: %s\n", err.msg);
                goto done;
            }
            fprintf(jl, "{\"sample\": %d, \"view\": %d, \"png\": \"%s\", \"video\": ", b, j, png);
            json_str(jl, video);
            fprintf(jl,
                    ", \"video_id\": %llu, \"epoch\": %d, \"draw\": %lld, \"frame\": %lld, \"pts_ns\": %lld, "
                    "\"time_s\": %.6f, \"crop\": [%d, %d, %d, %d], \"flip\": %s, \"src\": [%u, %u]}\n",
                    (unsigned long long)sm[b].video_id, epoch, (long long)first + b, (long long)m->frame, (long long)m->pts_ns,
                    m->pts_ns / 1e9, m->crop_x, m->crop_y, m->crop_w, m->crop_h, m->flip ? "true" : "false",
                    sm[b].src_width, sm[b].src_height);
        }
    if (fclose(jl)) { jl = NULL; perror(path); goto done; }
    jl = NULL;
    printf("%d samples x %d views of %dx%d -> %s (policy %s): %lld distinct frames, %lld decoded, "
           "decode %.1f ms, crop/resize/augment %.1f ms\n",
           n, V, S, S, out, vm_config_enum_name("sampler", "policy", cfg.sampler.policy), (long long)st.frames_needed,
           (long long)st.frames_decoded, st.decode_s * 1e3, st.render_s * 1e3);
    rc = 0;
done:
    if (jl) fclose(jl);
    free(px);
    free(sm);
    free(vm);
    vm_sampler_free(s);
    return rc;
}
