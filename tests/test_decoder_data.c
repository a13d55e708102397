// decoder/ against ffmpeg on every real clip of ../shared/data/videos (H.264 MP4/MKV, MS-MPEG4v3 and
// Cinepak AVI, odd frame rates, a damaged first keyframe):
//   - the frame count equals `ffprobe -count_frames` (frames out of a full decode), and
//   - at random indices i, among ffmpeg's frames i-1, i, i+1 scaled to the same size, the best match
//     of our frame i is ffmpeg's frame i, at PSNR > 30 dB: exact, not approximately right.
// The comparison is at the native size: the scalers differ (swscale bicubic vs videoconvertscale),
// the colours must not (untagged streams are converted as swscale does, BT.601; typically 40+ dB).
// Scaled output is checked bit by bit on the generated videos of test_decoder.c.
// ffprobe runs beside our decoder and ffmpeg (which stops after the last wanted frame).
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/rng.h"
#include "decoder/decoder.h"
#include "tests/harness.h"

#define PER_FILE 3 // random frames per file
// Files are split between two binaries (this one and test_decoder_data2.c) so that each stays well
// under a minute on a shared 2-core machine; ffprobe and ffmpeg each decode every file once.
#ifndef SHARD
#define SHARD 0
#endif
#define NSHARDS 2

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double psnr(const uint8_t *a, const uint8_t *b, size_t n) {
    double se = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        se += d * d;
    }
    if (se == 0) return 99.0;
    return 10 * log10(255.0 * 255.0 / (se / n));
}

static int has_tool(const char *name) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", name);
    return system(cmd) == 0;
}

TEST(shared_videos_match_ffmpeg) {
    const char *data = vt_data_dir();
    if (!data) SKIP("no shared data directory (../shared/data or $VICMAE_DATA)");
    if (!has_tool("ffmpeg") || !has_tool("ffprobe")) SKIP("ffmpeg/ffprobe not installed");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/videos", data);
    DIR *dp = opendir(dir);
    if (!dp) SKIP("%s: no videos directory", dir);
    char *names[256];
    int nfiles = 0;
    struct dirent *e;
    while ((e = readdir(dp)) && nfiles < 256) {
        const char *dot = strrchr(e->d_name, '.');
        if (dot && (!strcmp(dot, ".mp4") || !strcmp(dot, ".mkv") || !strcmp(dot, ".avi") || !strcmp(dot, ".webm") ||
                    !strcmp(dot, ".mov")))
            names[nfiles++] = strdup(e->d_name);
    }
    closedir(dp);
    CHECK(nfiles > 0, "%s has no videos", dir);
    qsort(names, nfiles, sizeof *names, cmp_str);

    char failures[8192] = "";
    int nfail = 0, nframes_checked = 0, decisive = 0;
    double worst = 99;
    vm_rng rng;
    vm_rng_init(&rng, 2024, 3);
    for (int f = SHARD; f < nfiles; f += NSHARDS) {
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, names[f]);
        // ffprobe -count_frames in the background while we decode and ffmpeg extracts frames.
        char cmd[8192];
        snprintf(cmd, sizeof cmd,
                 "ffprobe -v error -threads 1 -select_streams v:0 -count_frames -show_entries stream=nb_read_frames "
                 "-of csv=p=0 '%s'",
                 path);
        FILE *probe = popen(cmd, "r");
        CHECK(probe, "popen ffprobe");

        vm_decoder_options o;
        vm_decoder_options_default(&o);
        char cache[1100];
        snprintf(cache, sizeof cache, "%s/index-cache", vt_tmpdir());
        o.index_cache = cache;
        vm_error err = {0};
        vm_decoder *d = vm_decoder_open(path, &o, &err);
        if (!d) {
            char line[256];
            long long ff = fgets(line, sizeof line, probe) ? atoll(line) : -1;
            pclose(probe);
            snprintf(failures + strlen(failures), sizeof failures - strlen(failures), "\n  %s: open failed (ffprobe %lld frames): %s",
                     names[f], ff, err.msg);
            nfail++;
            continue;
        }
        const vm_video_info *vi = vm_decoder_info(d);
        int64_t n = vi->frames;
        int ow = vi->out_width, oh = vi->out_height;
        size_t fsz = (size_t)ow * oh * 3;

        // Frames read_frames refuses (a damaged start: opencv-box.mp4 frames 1-3) must stay rare.
        if (vi->unreadable * 100 > n) {
            snprintf(failures + strlen(failures), sizeof failures - strlen(failures), "\n  %s: %lld of %lld frames unreadable",
                     names[f], (long long)vi->unreadable, (long long)n);
            nfail++;
        }
        for (int64_t q = 0; vi->unreadable_at && q < n; q++)
            if (vi->unreadable_at[q]) { // refused with the reason, not returned as some other picture
                uint8_t *one = malloc(fsz);
                int urc = vm_decoder_read_frames(d, &q, 1, &one, NULL, &err);
                free(one);
                CHECK(urc == VM_ECORRUPT && strstr(err.msg, "cannot be identified"), "%s frame %lld: rc %d %s", names[f],
                      (long long)q, urc, err.msg);
                break;
            }
        int64_t idx[PER_FILE];
        for (int k = 0; k < PER_FILE; k++)
            do idx[k] = vm_rng_int(&rng, 0, n - 1);
            while (vi->unreadable_at && vi->unreadable_at[idx[k]]);
        if (f % 4 == 0) idx[0] = n - 1; // sometimes the last frame
        qsort(idx, PER_FILE, sizeof *idx, cmp_i64);
        uint8_t *ours = malloc(fsz * PER_FILE);
        uint8_t *dst[PER_FILE];
        for (int k = 0; k < PER_FILE; k++) dst[k] = ours + fsz * k;
        int rc = vm_decoder_read_frames(d, idx, PER_FILE, dst, NULL, &err);

        // ffmpeg's frames i-1, i, i+1 (decode order of output = presentation order, no dup/drop).
        int64_t want[3 * PER_FILE];
        int nw = 0;
        for (int k = 0; k < PER_FILE; k++)
            for (int64_t j = idx[k] - 1; j <= idx[k] + 1; j++)
                if (j >= 0 && j < n && (nw == 0 || want[nw - 1] < j)) want[nw++] = j;
        char sel[2048] = "";
        for (int k = 0; k < nw; k++)
            snprintf(sel + strlen(sel), sizeof sel - strlen(sel), "%seq(n\\,%lld)", k ? "+" : "", (long long)want[k]);
        char raw[1200];
        snprintf(raw, sizeof raw, "%s/ff.rgb", vt_tmpdir());
        snprintf(cmd, sizeof cmd,
                 "ffmpeg -nostdin -v error -threads 1 -i '%s' -map 0:v:0 -fps_mode passthrough "
                 "-vf \"select='%s',scale=%d:%d\" -frames:v %d -pix_fmt rgb24 -f rawvideo -y '%s' 2>/dev/null",
                 path, sel, ow, oh, nw, raw);
        int ffrc = system(cmd);
        char line[256];
        long long ffcount = fgets(line, sizeof line, probe) ? atoll(line) : -1;
        pclose(probe);

        if (ffcount != n) {
            snprintf(failures + strlen(failures), sizeof failures - strlen(failures),
                     "\n  %s: %lld frames, ffprobe -count_frames says %lld", names[f], (long long)n, ffcount);
            nfail++;
        } else if (rc) {
            snprintf(failures + strlen(failures), sizeof failures - strlen(failures), "\n  %s: %s", names[f], err.msg);
            nfail++;
        } else {
            uint8_t *ref = malloc(fsz * nw);
            FILE *fp = ffrc == 0 ? fopen(raw, "rb") : NULL;
            size_t got = fp ? fread(ref, fsz, nw, fp) : 0;
            if (fp) fclose(fp);
            CHECK(got == (size_t)nw, "%s: ffmpeg gave %zu of %d frames (rc %d)", names[f], got, nw, ffrc);
            for (int k = 0; k < PER_FILE; k++) {
                double best = -1, at_i = -1;
                int64_t best_j = -1;
                for (int q = 0; q < nw; q++) {
                    if (want[q] < idx[k] - 1 || want[q] > idx[k] + 1) continue;
                    double p = psnr(dst[k], ref + fsz * q, fsz);
                    if (want[q] == idx[k]) at_i = p;
                    if (p > best) { best = p; best_j = want[q]; }
                }
                nframes_checked++;
                if (at_i < worst) worst = at_i;
                // A neighbour must win by 0.5 dB: in a static scene (sleap, bottle-detection) frames
                // i-1, i, i+1 differ by coding noise only and score within a few 0.01 dB.
                double second = -1;
                for (int q = 0; q < nw; q++)
                    if (want[q] != idx[k] && want[q] >= idx[k] - 1 && want[q] <= idx[k] + 1) {
                        double p = psnr(dst[k], ref + fsz * q, fsz);
                        if (p > second) second = p;
                    }
                if (second < 0 || at_i - second > 3.0) decisive++;
                if (at_i < best - 0.5 || at_i <= 30.0) {
                    snprintf(failures + strlen(failures), sizeof failures - strlen(failures),
                             "\n  %s: frame %lld: PSNR %.1f dB vs ffmpeg's frame %lld, best %.1f dB at frame %lld",
                             names[f], (long long)idx[k], at_i, (long long)idx[k], best, (long long)best_j);
                    nfail++;
                }
            }
            free(ref);
        }
        free(ours);
        vm_decoder_close(d);
    }
    for (int f = 0; f < nfiles; f++) free(names[f]);
    printf("  %d of %d files, %d frames compared (%d decisive: neighbours > 3 dB worse), worst PSNR at the "
           "right frame %.1f dB\n", (nfiles - SHARD + NSHARDS - 1) / NSHARDS, nfiles, nframes_checked, decisive, worst);
    CHECK(nfail == 0, "%d mismatches:%s", nfail, failures);
}
