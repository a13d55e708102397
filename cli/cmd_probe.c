// vicmae probe FILE... [--json] [--no-cache]: frame count, duration, rate, size, codec and index
// source of each file, one line (or one JSON object) per file.  Every file is reported; the exit
// status is 1 when any of them failed.
#include <stdio.h>
#include <string.h>
#include "cli/cli.h"
#include "decoder/decoder.h"

static void json_str(FILE *out, const char *s) {
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(out, "\\%c", c);
        else if (c < 0x20) fprintf(out, "\\u%04x", c);
        else fputc(c, out);
    }
    fputc('"', out);
}

#define USAGE "usage: vicmae probe FILE... [--json] [--no-cache] [--config F] [--set decoder.k=v]\n"

int cmd_probe(int argc, char **argv) {
    vm_config cfg;
    int rc = vm_cli_config(&argc, argv, &cfg);
    if (rc) return rc;
    int json = 0, nocache = 0, nfiles = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--no-cache")) nocache = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("%s", USAGE);
            return 0;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "vicmae probe: unknown option '%s'\n%s", argv[i], USAGE);
            return 2;
        } else nfiles++;
    }
    if (!nfiles) {
        fprintf(stderr, "%s", USAGE);
        return 2;
    }
    vm_decoder_options o;
    vm_decoder_options_default(&o);
    o.hw = cfg.decoder.hw;
    o.timeout_ms = cfg.decoder.timeout_ms;
    o.index_cache = nocache ? "off" : cfg.decoder.index_cache;
    int failed = 0;
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-') continue;
        vm_error err = {0};
        vm_decoder *d = vm_decoder_open(argv[i], &o, &err);
        if (!d) {
            failed++;
            if (json) {
                printf("{\"file\": ");
                json_str(stdout, argv[i]);
                printf(", \"error\": ");
                json_str(stdout, err.msg);
                printf(", \"code\": \"%s\"}\n", vm_strerror(err.code));
            } else {
                printf("%s: error: %s\n", argv[i], err.msg);
            }
            fflush(stdout);
            continue;
        }
        const vm_video_info *v = vm_decoder_info(d);
        vm_decoder_stats st;
        vm_decoder_stats_get(d, &st);
        if (json) {
            printf("{\"file\": ");
            json_str(stdout, argv[i]);
            printf(", \"frames\": %lld, \"duration\": %.6f, \"rate\": %.6f, \"width\": %d, \"height\": %d, "
                   "\"rotation\": %d, \"flip\": %d, \"codec\": ",
                   (long long)v->frames, v->duration_ns / 1e9, v->avg_fps, v->width, v->height, v->rotation, v->flip);
            json_str(stdout, v->codec);
            printf(", \"container\": ");
            json_str(stdout, v->container);
            long long keys = 0;
            for (int64_t k = 0; k < v->frames; k++) keys += v->keyframe[k];
            printf(", \"first_pts\": %.6f, \"keyframes\": %lld, \"index\": ", v->pts[0] / 1e9, keys);
            json_str(stdout, v->index_source);
            printf(", \"unreadable\": %lld, \"index_seconds\": %.4f}\n", (long long)v->unreadable, st.index_seconds);
        } else {
            char bad[64] = "";
            if (v->unreadable) snprintf(bad, sizeof bad, " (%lld unreadable)", (long long)v->unreadable);
            // The stored size, then the orientation read_frames applies (the frames come out upright):
            // " rot90", " flip" (mirrored left-right), " flip+rot90" (mirrored, then turned).
            char orient[32] = "";
            if (v->flip) snprintf(orient, sizeof orient, " flip");
            if (v->rotation)
                snprintf(orient + strlen(orient), sizeof orient - strlen(orient), "%srot%d", v->flip ? "+" : " ", v->rotation);
            printf("%s: %lld frames%s, %.3f s, %.3f fps, %dx%d%s, %s, %s, index %s (%.3f s)\n", argv[i],
                   (long long)v->frames, bad, v->duration_ns / 1e9, v->avg_fps, v->width, v->height, orient,
                   v->codec, v->container[0] ? v->container : "?", v->index_source, st.index_seconds);
        }
        fflush(stdout);
        vm_decoder_close(d);
    }
    return failed ? 1 : 0;
}
