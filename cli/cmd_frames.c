// vicmae frames FILE --at 0,17,250 [--size WxH | --short-side N] --out DIR [--stats]
// Writes the frames at those presentation-order indices as DIR/000017.png.  Indices may come in
// any order; they are decoded in sorted order (one seek, then forward).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli/cli.h"
#include "common/io.h"
#include "decoder/decoder.h"

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int usage_to(FILE *f) {
    fprintf(f, "usage: vicmae frames FILE --at I,J,... [--size WxH | --short-side N] --out DIR [--stats]\n"
               "       (--config F / --set decoder.k=v as everywhere; indices are 0-based, presentation order)\n");
    return 2;
}
static int usage(void) { return usage_to(stderr); }

int cmd_frames(int argc, char **argv) {
    vm_config cfg;
    int rc = vm_cli_config(&argc, argv, &cfg);
    if (rc) return rc;
    const char *file = NULL, *at = NULL, *out = NULL;
    int w = 0, h = 0, ss = 0, stats = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(a, "--at") && more) at = argv[++i];
        else if (!strcmp(a, "--out") && more) out = argv[++i];
        else if (!strcmp(a, "--size") && more) {
            if (sscanf(argv[++i], "%dx%d", &w, &h) != 2 || w <= 0 || h <= 0) {
                fprintf(stderr, "vicmae frames: --size wants WxH, got '%s'\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--short-side") && more) {
            if (vm_cli_int("frames", "--short-side", argv[++i], 1, 16384, &ss)) return 2;
        } else if (!strcmp(a, "--stats")) stats = 1;
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage_to(stdout); return 0; }
        else if (a[0] != '-' && !file) file = a;
        else { fprintf(stderr, "vicmae frames: unexpected argument '%s'\n", a); return usage(); }
    }
    if (!file || !at || !out) return usage();
    int cap = 16, n = 0;
    int64_t *idx = malloc(cap * sizeof *idx);
    if (!idx) return 1;
    for (const char *p = at; *p;) {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || (*end && *end != ',')) {
            fprintf(stderr, "vicmae frames: --at wants comma-separated indices, got '%s'\n", at);
            free(idx);
            return 2;
        }
        if (n == cap) {
            int64_t *grown = realloc(idx, (size_t)(cap *= 2) * sizeof *idx);
            if (!grown) {
                fprintf(stderr, "vicmae frames: out of memory for %d indices\n", cap);
                free(idx);
                return 1;
            }
            idx = grown;
        }
        idx[n++] = v;
        p = *end ? end + 1 : end;
    }
    qsort(idx, n, sizeof *idx, cmp_i64);
    vm_decoder_options o;
    vm_decoder_options_default(&o);
    o.hw = cfg.decoder.hw;
    o.timeout_ms = cfg.decoder.timeout_ms;
    o.index_cache = cfg.decoder.index_cache;
    if (w) { o.size_mode = VM_DEC_EXACT; o.width = w; o.height = h; }
    else if (ss) { o.size_mode = VM_DEC_SHORT_SIDE; o.short_side = ss; }
    vm_error err = {0};
    vm_decoder *d = vm_decoder_open(file, &o, &err);
    if (!d) {
        fprintf(stderr, "vicmae frames: %s\n", err.msg);
        free(idx);
        return 1;
    }
    const vm_video_info *v = vm_decoder_info(d);
    size_t fsz = (size_t)v->out_width * v->out_height * 3;
    uint8_t *buf = malloc(fsz * n);
    uint8_t **dst = malloc(n * sizeof *dst);
    int64_t *pts = malloc(n * sizeof *pts);
    for (int k = 0; k < n; k++) dst[k] = buf + fsz * k;
    rc = 0;
    if (vm_decoder_read_frames(d, idx, n, dst, pts, &err) || vm_mkdirs(out, &err)) {
        fprintf(stderr, "vicmae frames: %s\n", err.msg);
        rc = 1;
    }
    for (int k = 0; k < n && !rc; k++) {
        if (k && idx[k] == idx[k - 1]) continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%06lld.png", out, (long long)idx[k]);
        if (vm_png_write(path, dst[k], v->out_width, v->out_height, &err)) {
            fprintf(stderr, "vicmae frames: %s\n", err.msg);
            rc = 1;
        } else {
            printf("%s  frame %lld  pts %.6f s  %dx%d\n", path, (long long)idx[k], pts[k] / 1e9, v->out_width,
                   v->out_height);
        }
    }
    if (stats) {
        vm_decoder_stats st;
        vm_decoder_stats_get(d, &st);
        printf("decoded %lld, returned %lld, seeks %lld, index %s %.3f s\n", (long long)st.frames_decoded,
               (long long)st.frames_returned, (long long)st.seeks, v->index_source, st.index_seconds);
    }
    vm_decoder_close(d);
    free(buf);
    free(dst);
    free(pts);
    free(idx);
    return rc;
}
