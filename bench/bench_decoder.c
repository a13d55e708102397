// bench/bench_decoder.c — the measuring half of bench/bench_decoder.sh.
//
//   bench_decoder index FILE...                           build each index (cache "off"), time it
//   bench_decoder seq   --short-side N [--list OUT] FILE...  every frame of every file, in order;
//        OUT gets "file w h" lines (the output sizes, for the ffmpeg baseline)
//   bench_decoder pairs --short-side N --pairs K --seed S --list OUT FILE...
//        K random pairs per file: frame a uniform, frame b the frame shown 0.5-2 s later (by
//        timestamps); one read_frames call per pair on a decoder kept open per file, as a worker
//        does.  OUT gets "file pts_a pts_b w h" lines so PyAV can replay the very same pairs.
// Prints "key value" lines: frames, seconds, fps, decoded, returned, seeks.  One thread (one
// decoder per core is the deployment), index from a fresh cache directory built beforehand.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "common/io.h"
#include "common/rng.h"
#include "decoder/decoder.h"

// CPU seconds of the whole process (every GStreamer streaming thread): robust to a shared machine.
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_decoder seq|pairs [--short-side N] [--pairs K] [--seed S] [--list F] FILE...\n");
        return 2;
    }
    const char *mode = argv[1], *list = NULL;
    int ss = 256, pairs = 8, seed = 0, first = 2;
    for (; first < argc && argv[first][0] == '-' && first + 1 < argc; first += 2) {
        if (!strcmp(argv[first], "--short-side")) ss = atoi(argv[first + 1]);
        else if (!strcmp(argv[first], "--pairs")) pairs = atoi(argv[first + 1]);
        else if (!strcmp(argv[first], "--seed")) seed = atoi(argv[first + 1]);
        else if (!strcmp(argv[first], "--list")) list = argv[first + 1];
        else { fprintf(stderr, "bench_decoder: unknown option %s\n", argv[first]); return 2; }
    }
    vm_decoder_options o;
    vm_decoder_options_default(&o);
    o.size_mode = VM_DEC_SHORT_SIDE;
    o.short_side = ss;
    o.index_cache = !strcmp(mode, "index") ? "off" : getenv("VICMAE_BENCH_CACHE");
    FILE *lf = list ? fopen(list, "w") : NULL;
    vm_rng rng;
    vm_rng_init(&rng, seed, 0);
    int64_t frames = 0, decoded = 0, returned = 0, seeks = 0, skipped = 0, undecoded = 0;
    double seconds = 0, cpu = 0;
    for (int f = first; f < argc; f++) {
        vm_error err = {0};
        vm_decoder *d = vm_decoder_open(argv[f], &o, &err); // index cached beforehand: not timed below
        if (!d) { fprintf(stderr, "bench_decoder: %s\n", err.msg); return 1; }
        const vm_video_info *vi = vm_decoder_info(d);
        size_t fsz = (size_t)vi->out_width * vi->out_height * 3;
        enum { CHUNK = 32 };
        uint8_t *buf = malloc(fsz * CHUNK);
        uint8_t *dst[CHUNK];
        int64_t idx[CHUNK];
        for (int k = 0; k < CHUNK; k++) dst[k] = buf + fsz * k;
        double t0 = vm_now(), c0 = cpu_now();
        int rc = 0;
        if (!strcmp(mode, "index")) {
            vm_decoder_stats st;
            vm_decoder_stats_get(d, &st);
            seconds += st.index_seconds;
            frames += vi->frames;
        } else if (!strcmp(mode, "seq")) {
            int64_t got = 0;
            for (int64_t i = 0; i < vi->frames && !rc; i += CHUNK) {
                int n = 0;
                for (int64_t q = i; q < vi->frames && q < i + CHUNK; q++)
                    if (!vi->unreadable_at || !vi->unreadable_at[q]) idx[n++] = q; // opencv-box's damaged start
                rc = vm_decoder_read_frames(d, idx, n, dst, NULL, &err);
                got += n;
            }
            if (!rc) frames += got;
        } else {
            for (int p = 0; p < pairs && !rc; p++) {
                // a uniform among frames that have a partner 0.5-2 s later (or the whole video if short)
                int64_t last_ok = vm_decoder_frame_at(d, vi->pts[vi->frames - 1] - 500000000LL);
                int64_t a = vm_rng_int(&rng, 0, last_ok > 0 ? last_ok : 0);
                int64_t gap = (int64_t)(vm_rng_range(&rng, 0.5, 2.0) * 1e9);
                int64_t b = vm_decoder_frame_at(d, vi->pts[a] + gap);
                idx[0] = a;
                idx[1] = b;
                rc = vm_decoder_read_frames(d, idx, 2, dst, NULL, &err);
                frames += 2;
                if (lf) fprintf(lf, "%s %.9f %.9f %d %d\n", argv[f], vi->pts[a] / 1e9, vi->pts[b] / 1e9, vi->out_width,
                                vi->out_height);
            }
        }
        if (rc && !strcmp(mode, "seq")) { // e.g. opencv-box.mp4's damaged start: left out of both sides
            fprintf(stderr, "bench_decoder: left out: %s\n", err.msg);
            skipped++;
            free(buf);
            vm_decoder_close(d);
            continue;
        }
        seconds += vm_now() - t0;
        cpu += cpu_now() - c0;
        if (rc) { fprintf(stderr, "bench_decoder: %s\n", err.msg); return 1; }
        if (lf && !strcmp(mode, "seq")) fprintf(lf, "%s %d %d\n", argv[f], vi->out_width, vi->out_height);
        vm_decoder_stats st;
        vm_decoder_stats_get(d, &st);
        decoded += st.frames_decoded;
        returned += st.frames_returned;
        seeks += st.seeks;
        undecoded += st.frames_skipped;
        free(buf);
        vm_decoder_close(d);
    }
    if (lf) fclose(lf);
    printf("skipped %lld\nframes %lld\nseconds %.3f\ncpu %.3f\nfps %.1f\ncpu_fps %.1f\ndecoded %lld\nreturned %lld\nseeks %lld\nundecoded %lld\n", (long long)skipped, (long long)frames, seconds, cpu,
           frames / seconds, frames / cpu, (long long)decoded, (long long)returned, (long long)seeks, (long long)undecoded);
    return 0;
}
