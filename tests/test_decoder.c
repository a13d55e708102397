// Tests of decoder/ on videos generated here: every frame shows its own number as a 4x3 grid of big
// black/white blocks (12 bits), pushed through appsrc -> encoder -> muxer, so a decoded frame says
// which frame it is.  Codecs and containers: H.264 in MP4 and Matroska with B-frames and GOP 1/30/250,
// VP8 and VP9 in WebM (the VP9 one streamable: no duration in the header), MJPEG, H.264 and MPEG-4 part 2
// with and without B-frames in AVI, and variable frame rate H.264.  Then the error cases.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <gst/gst.h>
#include "common/io.h"
#include "common/rng.h"
#include "decoder/decoder.h"
#include "tests/harness.h"
#include "tests/test_decoder_util.h"

#define W 160
#define H 120
#define BITS 12 // 4 columns x 3 rows of 40x40 blocks

static void draw_frame(uint8_t *rgb, int n) {
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            int bit = (y / 40) * 4 + x / 40;
            uint8_t v = (n >> bit) & 1 ? 255 : 0;
            uint8_t *p = rgb + (y * W + x) * 3;
            p[0] = p[1] = p[2] = v;
        }
}

// Read the number back from a decoded frame of any size.
static int read_number(const uint8_t *rgb, int w, int h) { return read_blocks(rgb, w, h, BITS / 4); }

// A video of `frames` numbered frames, encoded through "appsrc ! videoconvert ! <chain> ! filesink"
// into the test directory (once per binary: later tests reuse it); its path.
static const char *gen_video(const char *name, const char *chain, int frames, int vfr) {
    static char path[8][1024];
    static int slot;
    char *out = path[slot++ % 8];
    gst_init(NULL, NULL); // idempotent; the decoder does its own
    snprintf(out, 1024, "%s/%s", vt_tmpdir(), name);
    struct stat st;
    if (stat(out, &st) == 0 && st.st_size > 0) return out; // made by an earlier test in this run
    encode_frames(out, chain, W, H, frames, vfr, draw_frame);
    return out;
}

// Open, check the frame count and timestamps, then read random sorted sets and one full pass.
static void check_video(const char *path, int frames, int vfr, int mode, int a, int b, int ow, int oh) {
    vm_decoder_options o = opts(mode, a, b);
    vm_error err = {0};
    vm_decoder *d = vm_decoder_open(path, &o, &err);
    CHECK(d, "%s", err.msg);
    const vm_video_info *vi = vm_decoder_info(d);
    CHECK_EQ_INT(vi->frames, frames);
    CHECK_EQ_INT(vi->out_width, ow);
    CHECK_EQ_INT(vi->out_height, oh);
    CHECK_EQ_INT(vi->width, W);
    CHECK_EQ_INT(vi->height, H);
    for (int i = 0; i < frames; i++)
        CHECK(llabs(vi->pts[i] - vi->pts[0] - frame_time(i, vfr)) <= GST_MSECOND, "%s: pts[%d] = %lld", path, i,
              (long long)vi->pts[i]);
    size_t fsz = (size_t)ow * oh * 3;
    enum { K = 6 };
    uint8_t *buf = malloc(fsz * frames);
    uint8_t *dst[K];
    int64_t idx[K], pts[K];
    vm_rng rng;
    vm_rng_init(&rng, 1234, (uint64_t)strlen(path));
    for (int round = 0; round < 6; round++) {
        for (int k = 0; k < K; k++) idx[k] = vm_rng_u32(&rng) % frames;
        if (round == 0) idx[0] = frames - 1; // the last frame
        if (round == 1) idx[1] = idx[0];     // a duplicate
        for (int k = 1; k < K; k++) // insertion sort
            for (int j = k; j > 0 && idx[j] < idx[j - 1]; j--) { int64_t t = idx[j]; idx[j] = idx[j - 1]; idx[j - 1] = t; }
        for (int k = 0; k < K; k++) dst[k] = buf + fsz * k;
        CHECK_OK(vm_decoder_read_frames(d, idx, K, dst, pts, &err), err);
        for (int k = 0; k < K; k++) {
            CHECK_EQ_INT(read_number(dst[k], ow, oh), idx[k]);
            CHECK_EQ_INT(pts[k], vi->pts[idx[k]]);
        }
    }
    // Backwards one at a time: every call seeks.
    for (int64_t i = frames - 1; i >= 0; i -= frames / 5 + 1) {
        int64_t one = i;
        CHECK_OK(vm_decoder_read_frames(d, &one, 1, dst, NULL, &err), err);
        CHECK_EQ_INT(read_number(dst[0], ow, oh), i);
    }
    // Every frame in one call: one seek, then straight decoding.
    int64_t *all = malloc(frames * sizeof *all);
    uint8_t **alld = malloc(frames * sizeof *alld);
    for (int i = 0; i < frames; i++) { all[i] = i; alld[i] = buf + fsz * i; }
    vm_decoder_stats s0, s1;
    vm_decoder_stats_get(d, &s0);
    CHECK_OK(vm_decoder_read_frames(d, all, frames, alld, NULL, &err), err);
    vm_decoder_stats_get(d, &s1);
    for (int i = 0; i < frames; i++) CHECK_EQ_INT(read_number(alld[i], ow, oh), i);
    CHECK(s1.seeks - s0.seeks <= 1, "%lld seeks for a sequential read", (long long)(s1.seeks - s0.seeks));
    CHECK(s1.frames_decoded - s0.frames_decoded >= frames, "decoded %lld", (long long)(s1.frames_decoded - s0.frames_decoded));
    CHECK(s1.frames_decoded - s0.frames_decoded <= frames + 16, "decoded %lld for %d frames",
          (long long)(s1.frames_decoded - s0.frames_decoded), frames);
    CHECK_EQ_INT(s1.frames_returned - s0.frames_returned, frames);
    // Past the end is an error, not a clamp; nothing is read.
    int64_t bad = frames;
    CHECK_EQ_INT(vm_decoder_read_frames(d, &bad, 1, dst, NULL, &err), VM_ERANGE);
    CHECK(strstr(err.msg, "out of range") && strstr(err.msg, path), "%s", err.msg);
    bad = -1;
    CHECK_EQ_INT(vm_decoder_read_frames(d, &bad, 1, dst, NULL, &err), VM_ERANGE);
    free(all);
    free(alld);
    free(buf);
    vm_decoder_close(d);
}

#define X264(gop) "x264enc speed-preset=veryfast bframes=2 b-adapt=false key-int-max=" #gop " ! h264parse"

TEST(h264_mp4_gop30_bframes) {
    const char *p = gen_video("h264_gop30.mp4", X264(30) " ! mp4mux", 120, 0);
    check_video(p, 120, 0, VM_DEC_NATIVE, 0, 0, W, H);
}

TEST(h264_mp4_gop1_exact_size) {
    const char *p = gen_video("h264_gop1.mp4", X264(1) " ! mp4mux", 60, 0);
    check_video(p, 60, 0, VM_DEC_EXACT, 96, 64, 96, 64);
}

TEST(h264_mkv_gop250_short_side) {
    const char *p = gen_video("h264_gop250.mkv", X264(250) " ! matroskamux", 300, 0);
    check_video(p, 300, 0, VM_DEC_SHORT_SIDE, 90, 0, 120, 90);
}

TEST(h264_mkv_gop30) {
    const char *p = gen_video("h264_gop30.mkv", X264(30) " ! matroskamux", 90, 0);
    check_video(p, 90, 0, VM_DEC_NATIVE, 0, 0, W, H);
}

// Open GOPs: the B-frames after each I-frame in decode order show before it and reference the
// previous GOP, so reading them needs a seek one keyframe further back.
TEST(h264_mkv_open_gop) {
    const char *p = gen_video("h264_open_gop.mkv",
                              "x264enc speed-preset=veryfast bframes=3 b-adapt=false key-int-max=30 "
                              "option-string=\"open-gop=1:scenecut=0:min-keyint=30\" ! h264parse ! matroskamux",
                              150, 0);
    check_video(p, 150, 0, VM_DEC_NATIVE, 0, 0, W, H);
}

TEST(vp8_webm) {
    const char *p = gen_video("vp8.webm", "vp8enc deadline=1 keyframe-max-dist=30 ! webmmux", 90, 0);
    check_video(p, 90, 0, VM_DEC_NATIVE, 0, 0, W, H);
}

TEST(vp9_webm_streamable_no_duration) {
    const char *p = gen_video("vp9.webm", "vp9enc deadline=1 keyframe-max-dist=40 ! webmmux streamable=true", 90, 0);
    check_video(p, 90, 0, VM_DEC_NATIVE, 0, 0, W, H);
}

TEST(mjpeg_avi) {
    const char *p = gen_video("mjpeg.avi", "jpegenc ! avimux", 60, 0);
    check_video(p, 60, 0, VM_DEC_NATIVE, 0, 0, W, H);
}

TEST(mpeg4_part2_avi) {
    const char *p = gen_video("mpeg4.avi", "avenc_mpeg4 gop-size=30 bitrate=800000 ! avimux", 90, 0);
    check_video(p, 90, 0, VM_DEC_NATIVE, 0, 0, W, H);
}

// MPEG-4 Part 2 with B-frames in AVI (UCF-101, HMDB-51): AVI gives no PTS for reordered frames and
// GStreamer's decoder then repeats and shifts timestamps, so the decoder indexes these by display
// order from the VOP headers and counts pictures after a seek.  Numbered frames: every read shows
// its own number.  Open GOPs (ffmpeg's default: the B-frames after an I-frame show before it and
// reference the previous GOP) and closed ones, 1 and 2 B-frames, several GOP sizes, odd counts.
#define M4V_B(b, gop, extra) "avenc_mpeg4 max-bframes=" #b " gop-size=" #gop " bitrate=800000 " extra " ! avimux"
TEST(mpeg4_bframes_avi) {
    const char *p = gen_video("mpeg4_b.avi", M4V_B(2, 30, ""), 90, 0);
    check_video(p, 90, 0, VM_DEC_NATIVE, 0, 0, W, H);
}

TEST(mpeg4_bframes_avi_variants) {
    static const struct { const char *name, *chain; int frames; } v[] = {
        {"mpeg4_b1_gop12.avi", M4V_B(1, 12, ""), 97},
        {"mpeg4_b2_gop12.avi", M4V_B(2, 12, ""), 101},
        {"mpeg4_b2_gop7.avi", M4V_B(2, 7, ""), 61},
        {"mpeg4_b2_gop12_cgop.avi", M4V_B(2, 12, "flags=cgop sc-threshold=1000000000"), 75},
        {"mpeg4_b1_gop250.avi", M4V_B(1, 250, ""), 83},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        const char *p = gen_video(v[i].name, v[i].chain, v[i].frames, 0);
        check_video(p, v[i].frames, 0, VM_DEC_SHORT_SIDE, 60, 0, 80, 60);
    }
}

// A moving ball (every picture differs), B-frames in AVI: single reads in random order, repeated,
// on one decoder, and sorted batches on another, give byte-identical pictures to a sequential read
// of every frame; the index survives the cache.
static void gen_ball(const char *path, int frames, int bframes, int gop) {
    char desc[1024];
    snprintf(desc, sizeof desc,
             "videotestsrc num-buffers=%d pattern=ball ! video/x-raw,width=160,height=120,framerate=25/1 "
             "! avenc_mpeg4 max-bframes=%d gop-size=%d ! avimux ! filesink location=%s",
             frames, bframes, gop, path);
    launch_to_eos(desc, path);
}

// Random, repeated and sorted-batch reads of `path` (`frames` pictures, all different) against a
// sequential read, with a fresh index and then from the cache.
static void check_random_access(const char *path, int frames, uint64_t seed) {
    vm_decoder_options o = opts(VM_DEC_NATIVE, 0, 0);
    vm_error err = {0};
    vm_decoder *d = vm_decoder_open(path, &o, &err);
    CHECK(d, "%s", err.msg);
    const vm_video_info *vi = vm_decoder_info(d);
    CHECK_EQ_INT(vi->frames, frames);
    const size_t fsz = (size_t)vi->out_width * vi->out_height * 3;
    uint8_t *ref = malloc(fsz * frames), *one = malloc(fsz);
    int64_t *all = malloc(frames * sizeof *all);
    uint8_t **dst = malloc(frames * sizeof *dst);
    for (int i = 0; i < frames; i++) { all[i] = i; dst[i] = ref + fsz * i; }
    CHECK_OK(vm_decoder_read_frames(d, all, frames, dst, NULL, &err), err);
    vm_decoder_close(d);
    for (int i = 0; i < frames; i++)
        for (int j = i + 1; j < frames; j++)
            CHECK(memcmp(ref + fsz * i, ref + fsz * j, fsz), "%s: frames %d and %d are the same picture", path, i, j);
    vm_rng rng;
    vm_rng_init(&rng, 99, seed);
    for (int pass = 0; pass < 2; pass++) { // the second pass loads the index from the cache
        vm_decoder_options oo = o;
        if (pass == 0) oo.index_cache = "off";
        d = vm_decoder_open(path, &oo, &err);
        CHECK(d, "%s", err.msg);
        CHECK(!strcmp(vm_decoder_info(d)->index_source, pass ? "cache:decode" : "decode"), "%s",
              vm_decoder_info(d)->index_source);
        CHECK_EQ_INT(vm_decoder_info(d)->frames, frames);
        for (int r = 0; r < 40; r++) {
            int64_t i = vm_rng_u32(&rng) % frames;
            if (r % 10 == 9) i = frames - 1 - r % 3;
            CHECK_OK(vm_decoder_read_frames(d, &i, 1, &one, NULL, &err), err);
            CHECK(!memcmp(one, ref + fsz * i, fsz), "%s: frame %lld (read %d) differs from the sequential read",
                  path, (long long)i, r);
            if (r % 4 == 0) { // again
                CHECK_OK(vm_decoder_read_frames(d, &i, 1, &one, NULL, &err), err);
                CHECK(!memcmp(one, ref + fsz * i, fsz), "%s: frame %lld re-read differs", path, (long long)i);
            }
        }
        enum { K = 5 };
        uint8_t *b = malloc(fsz * K), *bd[K];
        int64_t idx[K];
        for (int r = 0; r < 6; r++) {
            for (int k = 0; k < K; k++) { idx[k] = vm_rng_u32(&rng) % frames; bd[k] = b + fsz * k; }
            for (int k = 1; k < K; k++)
                for (int j = k; j > 0 && idx[j] < idx[j - 1]; j--) { int64_t t = idx[j]; idx[j] = idx[j - 1]; idx[j - 1] = t; }
            CHECK_OK(vm_decoder_read_frames(d, idx, K, bd, NULL, &err), err);
            for (int k = 0; k < K; k++)
                CHECK(!memcmp(bd[k], ref + fsz * idx[k], fsz), "%s: frame %lld (batch) differs", path, (long long)idx[k]);
        }
        free(b);
        vm_decoder_close(d);
    }
    free(ref);
    free(one);
    free(all);
    free(dst);
}

static void check_ball(int frames, int bframes, int gop) {
    char path[1100];
    snprintf(path, sizeof path, "%s/ball_b%d_g%d_%d.avi", vt_tmpdir(), bframes, gop, frames);
    gst_init(NULL, NULL);
    gen_ball(path, frames, bframes, gop);
    check_random_access(path, frames, (uint64_t)(frames * 31 + bframes * 7 + gop));
}

TEST(mpeg4_bframes_avi_ball_random_access) {
    check_ball(100, 2, 12);
    check_ball(77, 1, 9);
    check_ball(53, 2, 5);
}

static int have_tool(const char *name) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", name);
    return system(cmd) == 0;
}

static double psnr_rgb(const uint8_t *a, const uint8_t *b, size_t n) {
    double se = 0;
    for (size_t q = 0; q < n; q++) {
        double e = (double)a[q] - b[q];
        se += e * e;
    }
    return se == 0 ? 99 : 10 * log10(255.0 * 255.0 / (se / n));
}

// Every frame of `path`, read in order (W x H).
static uint8_t *read_all(const char *path, int64_t *n_out) {
    vm_decoder_options o = opts(VM_DEC_NATIVE, 0, 0);
    o.index_cache = "off";
    vm_error err = {0};
    vm_decoder *d = vm_decoder_open(path, &o, &err);
    CHECK(d, "%s", err.msg);
    CHECK(!strcmp(vm_decoder_info(d)->index_source, "decode"), "%s: %s", path, vm_decoder_info(d)->index_source);
    const int64_t n = vm_decoder_info(d)->frames;
    const size_t fsz = (size_t)W * H * 3;
    uint8_t *all = malloc(fsz * n);
    for (int64_t i = 0; i < n; i++) {
        uint8_t *dst = all + fsz * i;
        CHECK_OK(vm_decoder_read_frames(d, &i, 1, &dst, NULL, &err), err);
    }
    vm_decoder_close(d);
    *n_out = n;
    return all;
}

// Xvid as ffmpeg's libxvid writes it to AVI: packed bitstream (an anchor and the B-VOP shown before
// it in one chunk, an N-VOP placeholder chunk later; with an open GOP the I-VOP's chunk holds the B
// that references the previous GOP).  Every frame matches ffmpeg's decode of the same file (an
// independent reference: a shift by one frame of a moving picture falls far below the threshold)
// and is byte-identical to our read of its unpacked copy (ffmpeg -bsf:v mpeg4_unpack_bframes, the
// same VOPs one per chunk); random, repeated and batch reads match a sequential one, fresh index
// and cached.  1 and 2 B-frames, several GOP sizes and lengths.  One exception, ffmpeg's and not
// ours: when the file ends on a packed chunk with no N-VOP after it (libxvid's last frames),
// libavcodec keeps that chunk's second VOP back for a packet that never comes, and both ffmpeg's
// decode and mpeg4_unpack_bframes lose that picture (the next to last shown) where GStreamer's
// parser splits the chunk and decodes it: then we have one frame more, the others matching.
TEST(mpeg4_xvid_packed_matches_ffmpeg_and_unpacked) {
    if (!have_tool("ffmpeg")) SKIP("ffmpeg not installed");
    static const struct { int bf, gop, frames; } v[] = {
        {2, 20, 77}, {2, 20, 78}, {1, 12, 60}, {1, 12, 61}, {2, 7, 50}, {2, 9, 64}, {1, 250, 40},
    };
    int equal = 0, short_by_one = 0;
    for (size_t c = 0; c < sizeof v / sizeof v[0]; c++) {
        char packed[1100], unpacked[1100], raw[1100], cmd[4000];
        snprintf(packed, sizeof packed, "%s/xvid_b%d_g%d_%d.avi", vt_tmpdir(), v[c].bf, v[c].gop, v[c].frames);
        snprintf(unpacked, sizeof unpacked, "%s/xvid_b%d_g%d_%d_unpacked.avi", vt_tmpdir(), v[c].bf, v[c].gop,
                 v[c].frames);
        snprintf(raw, sizeof raw, "%s/xvid.rgb", vt_tmpdir());
        snprintf(cmd, sizeof cmd, "ffmpeg -nostdin -v error -y -f lavfi -i testsrc2=size=%dx%d:rate=25 -frames:v %d "
                 "-c:v libxvid -bf %d -g %d '%s' 2>/dev/null", W, H, v[c].frames, v[c].bf, v[c].gop, packed);
        if (system(cmd) != 0) SKIP("ffmpeg without libxvid");
        snprintf(cmd, sizeof cmd, "ffmpeg -nostdin -v error -y -i '%s' -c copy -bsf:v mpeg4_unpack_bframes '%s'",
                 packed, unpacked);
        CHECK(system(cmd) == 0, "%s", cmd);
        snprintf(cmd, sizeof cmd, "ffmpeg -nostdin -v error -threads 1 -i '%s' -map 0:v:0 -fps_mode passthrough "
                 "-pix_fmt rgb24 -f rawvideo -y '%s'", packed, raw);
        CHECK(system(cmd) == 0, "%s", cmd);
        size_t rn;
        uint8_t *ref = (uint8_t *)slurp(raw, &rn);
        const size_t fsz = (size_t)W * H * 3;
        const int64_t nref = (int64_t)(rn / fsz);
        int64_t n, nu;
        uint8_t *ours = read_all(packed, &n), *unp = read_all(unpacked, &nu);
        CHECK(nref > 1 && (n == nref || n == nref + 1), "%s: %lld frames, ffmpeg decodes %lld", packed, (long long)n,
              (long long)nref);
        CHECK(nu == nref, "%s: %lld frames, ffmpeg decodes %lld", unpacked, (long long)nu, (long long)nref);
        if (n == nref) equal++;
        else short_by_one++;
        for (int64_t k = 0; k < n; k++) {
            int64_t j = n == nref || k < n - 2 ? k : k == n - 1 ? nref - 1 : -1; // ffmpeg's picture k
            if (j < 0) continue;
            double p = psnr_rgb(ours + fsz * k, ref + fsz * j, fsz);
            CHECK(p >= 30, "%s: frame %lld: %.1f dB against ffmpeg's", packed, (long long)k, p);
            CHECK(!memcmp(ours + fsz * k, unp + fsz * j, fsz), "%s: frame %lld differs from frame %lld of %s",
                  packed, (long long)k, (long long)j, unpacked);
        }
        free(ref);
        free(ours);
        free(unp);
        check_random_access(packed, (int)n, (uint64_t)c);
    }
    // The plain case is in the set (with the libxvid this was written against: 3 files, 4 one more).
    CHECK(equal >= 1, "%d files decode as many frames as ffmpeg's decode, %d one more", equal, short_by_one);
}

// ffprobe's count of the pictures a full decode gives (-count_frames), or -1 without ffprobe.
static int64_t ffprobe_frames(const char *path) {
    char cmd[1400], out[64] = "";
    snprintf(cmd, sizeof cmd, "ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames "
             "-of csv=p=0 '%s' 2>/dev/null", path);
    FILE *fp = have_tool("ffprobe") ? popen(cmd, "r") : NULL;
    if (!fp) return -1;
    int ok = fgets(out, sizeof out, fp) != NULL;
    pclose(fp);
    return ok ? atoll(out) : -1;
}

// H.264 in AVI (no PTS for reordered pictures; GStreamer's decoded times are wrong): indexed by the
// order of the decoder's pictures, each naming its packet, and read by stamping every packet with
// its picture's time.  Numbered frames, 0-3 B-frames, closed GOPs (IDR seek points: the keyframe
// flags of the index are the IDRs), open GOPs (non-IDR I-frames: no seek points, still exact),
// x264enc through avimux and ffmpeg's libx264 AVI writer; the count matches ffprobe -count_frames;
// the ball: random, repeated and batch reads byte-identical to a sequential one, fresh and cached.
#define X264_AVI(b, extra) "x264enc speed-preset=veryfast b-adapt=false key-int-max=30 bframes=" #b " " extra " ! avimux"
static void check_h264_avi(const char *p, int frames, int idr_every) {
    check_video(p, frames, 0, VM_DEC_SHORT_SIDE, 60, 0, 80, 60);
    int64_t ff = ffprobe_frames(p);
    CHECK(ff < 0 || ff == frames, "%s: ffprobe counts %lld frames", p, (long long)ff);
    vm_decoder_options o = opts(VM_DEC_NATIVE, 0, 0);
    vm_error err = {0};
    vm_decoder *d = vm_decoder_open(p, &o, &err);
    CHECK(d, "%s", err.msg);
    const vm_video_info *vi = vm_decoder_info(d);
    CHECK(strstr(vi->index_source, "decode"), "%s", vi->index_source);
    for (int i = 0; i < frames; i++)
        CHECK_EQ_INT(vi->keyframe[i], idr_every ? i % idr_every == 0 : i == 0);
    vm_decoder_close(d);
}

TEST(h264_avi_bframes_closed_gop) {
    static const struct { const char *name, *chain; int frames; } v[] = {
        {"h264_b1.avi", X264_AVI(1, "option-string=scenecut=0"), 97},
        {"h264_b2.avi", X264_AVI(2, "option-string=scenecut=0"), 120},
        {"h264_b3.avi", X264_AVI(3, "option-string=scenecut=0"), 101},
        {"h264_b3_pyramid.avi", X264_AVI(3, "b-pyramid=true option-string=scenecut=0"), 90},
        {"h264_b0.avi", X264_AVI(0, "option-string=scenecut=0"), 75}, // no B-frames: as before
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        check_h264_avi(gen_video(v[i].name, v[i].chain, v[i].frames, 0), v[i].frames, 30);
}

TEST(h264_avi_open_gop) {
    const char *p = gen_video("h264_open.avi", X264_AVI(3, "option-string=\"open-gop=1:scenecut=0:min-keyint=30\""), 150, 0);
    check_h264_avi(p, 150, 0);
}

// ffmpeg's AVI writer with libx264 (adaptive B-frames, scene cuts: IDRs wherever x264 puts them),
// closed and open GOPs, from the numbered frames; and the remedy our refusals give (re-encode to MP4:
// a stream copy, -fflags +genpts or not, keeps pictures without a time) gives a frame-accurate file.
TEST(h264_avi_ffmpeg) {
    if (!have_tool("ffmpeg")) SKIP("ffmpeg not installed");
    const char *y4m = gen_video("numbered.y4m", "y4menc", 120, 0);
    for (int bf = 1; bf <= 3; bf++)
        for (int og = 0; og < 2; og++) {
            char out[1100], cmd[3000];
            snprintf(out, sizeof out, "%s/ff_b%d_og%d.avi", vt_tmpdir(), bf, og);
            snprintf(cmd, sizeof cmd, "ffmpeg -nostdin -v error -y -i '%s' -c:v libx264 -bf %d -g 30%s '%s'", y4m, bf,
                     og ? " -x264-params open-gop=1" : "", out);
            if (system(cmd) != 0) SKIP("ffmpeg without libx264");
            check_video(out, 120, 0, VM_DEC_NATIVE, 0, 0, W, H);
            CHECK_EQ_INT(ffprobe_frames(out), 120);
            if (bf == 2) {
                char mkv[1200];
                snprintf(mkv, sizeof mkv, "%s.mp4", out);
                snprintf(cmd, sizeof cmd, "ffmpeg -nostdin -v error -y -i '%s' -c:v libx264 '%s'", out, mkv);
                CHECK(system(cmd) == 0, "%s", cmd);
                check_video(mkv, 120, 0, VM_DEC_NATIVE, 0, 0, W, H);
            }
        }
}

TEST(h264_avi_ball_random_access) {
    static const struct { int frames, bf; } v[] = {{100, 2}, {77, 3}, {61, 1}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char path[1100], desc[1400];
        snprintf(path, sizeof path, "%s/ball_h264_b%d.avi", vt_tmpdir(), v[i].bf);
        snprintf(desc, sizeof desc, "videotestsrc num-buffers=%d pattern=ball ! video/x-raw,width=160,height=120,"
                 "framerate=25/1 ! x264enc speed-preset=veryfast bframes=%d b-adapt=false key-int-max=12 "
                 "! avimux ! filesink location=%s", v[i].frames, v[i].bf, path);
        launch_to_eos(desc, path);
        check_random_access(path, v[i].frames, i);
    }
}

TEST(vfr_h264_mkv) {
    const char *p = gen_video("vfr.mkv", X264(30) " ! matroskamux", 100, 1);
    check_video(p, 100, 1, VM_DEC_NATIVE, 0, 0, W, H);
    // frame_at follows the timestamps, not a nominal rate.
    vm_decoder_options o = opts(VM_DEC_NATIVE, 0, 0);
    vm_error err = {0};
    vm_decoder *d = vm_decoder_open(p, &o, &err);
    CHECK(d, "%s", err.msg);
    const vm_video_info *vi = vm_decoder_info(d);
    for (int i = 0; i < 100; i += 7) {
        CHECK_EQ_INT(vm_decoder_frame_at(d, vi->pts[i]), i);
        CHECK_EQ_INT(vm_decoder_frame_at(d, vi->pts[i] + GST_MSECOND), i);
    }
    vm_decoder_close(d);
}

// An RBSP bit reader over an escaped NAL payload (emulation prevention bytes skipped), for
// sps_set_reorder.
typedef struct {
    uint8_t rbsp[256];
    size_t n, bit;
} rbsp_reader;

static void rbsp_unescape(rbsp_reader *r, const uint8_t *nal, size_t len) {
    for (size_t i = 1, zeros = 0; i < len && r->n < sizeof r->rbsp; i++) { // after the NAL header
        if (zeros >= 2 && nal[i] == 3) { zeros = 0; continue; }
        zeros = nal[i] ? 0 : zeros + 1;
        r->rbsp[r->n++] = nal[i];
    }
}

static unsigned rbsp_u(rbsp_reader *r, int k) {
    unsigned v = 0;
    for (int i = 0; i < k; i++, r->bit++) v = v << 1 | (r->bit / 8 < r->n ? r->rbsp[r->bit / 8] >> (7 - r->bit % 8) & 1 : 0);
    return v;
}

static unsigned rbsp_ue(rbsp_reader *r) {
    int z = 0;
    while (!rbsp_u(r, 1) && z < 31) z++;
    return (1u << z) - 1 + rbsp_u(r, z);
}

typedef struct {
    uint8_t b[300];
    size_t bit;
} bit_writer;

static void bw_u(bit_writer *w, unsigned v, int k) {
    for (int i = k - 1; i >= 0; i--, w->bit++)
        if (v >> i & 1) w->b[w->bit / 8] |= (uint8_t)(0x80 >> w->bit % 8);
}

static void bw_ue(bit_writer *w, unsigned v) {
    int len = 0;
    while ((v + 1) >> len) len++;
    bw_u(w, 0, len - 1);
    bw_u(w, v + 1, len);
}

// An x264 SPS NAL (header byte first, escaped) rewritten with max_num_reorder_frames = reorder
// (max_dec_frame_buffering at least that) in its VUI bitstream restriction, into out (escaped);
// returns its length.  libavcodec holds that many pictures back before it outputs one, whatever
// the frame types: what encoders that declare the level's whole DPB, or none (libavcodec then
// guesses from the POCs it sees), cost a reader fed packets until its frame comes out.
static size_t sps_set_reorder(const uint8_t *sps, size_t len, unsigned reorder, uint8_t *out) {
    rbsp_reader r = {.n = 0};
    rbsp_unescape(&r, sps, len);
    unsigned profile = rbsp_u(&r, 8);
    rbsp_u(&r, 16); // constraint flags, level
    rbsp_ue(&r);    // sps id
    if (profile == 100 || profile == 110 || profile == 122 || profile == 244) {
        if (rbsp_ue(&r) == 3) rbsp_u(&r, 1); // chroma format (separate planes)
        rbsp_ue(&r), rbsp_ue(&r), rbsp_u(&r, 1); // bit depths, qpprime bypass
        CHECK(!rbsp_u(&r, 1), "SPS with scaling lists");
    }
    rbsp_ue(&r); // log2 max frame num
    unsigned poc = rbsp_ue(&r);
    CHECK(poc != 1, "SPS with POC type 1");
    if (poc == 0) rbsp_ue(&r);
    rbsp_ue(&r), rbsp_u(&r, 1), rbsp_ue(&r), rbsp_ue(&r); // refs, gaps, width, height
    if (!rbsp_u(&r, 1)) rbsp_u(&r, 1);                    // frame_mbs_only, else mbaff
    rbsp_u(&r, 1);                                        // direct 8x8
    if (rbsp_u(&r, 1)) rbsp_ue(&r), rbsp_ue(&r), rbsp_ue(&r), rbsp_ue(&r); // cropping
    CHECK(rbsp_u(&r, 1), "SPS without VUI");
    if (rbsp_u(&r, 1) && rbsp_u(&r, 8) == 255) rbsp_u(&r, 32); // aspect ratio
    if (rbsp_u(&r, 1)) rbsp_u(&r, 1);                          // overscan
    if (rbsp_u(&r, 1)) { rbsp_u(&r, 4); if (rbsp_u(&r, 1)) rbsp_u(&r, 24); } // video signal
    if (rbsp_u(&r, 1)) rbsp_ue(&r), rbsp_ue(&r);               // chroma location
    if (rbsp_u(&r, 1)) rbsp_u(&r, 32), rbsp_u(&r, 32), rbsp_u(&r, 1); // timing
    CHECK(!rbsp_u(&r, 1) && !rbsp_u(&r, 1), "SPS with HRD parameters");
    rbsp_u(&r, 1); // pic_struct_present
    CHECK(rbsp_u(&r, 1) == 1, "SPS without bitstream_restriction");
    size_t keep = r.bit;
    unsigned mv = rbsp_u(&r, 1), f[4];
    for (int k = 0; k < 4; k++) f[k] = rbsp_ue(&r); // max bytes/bits, log2 max mv lengths
    unsigned old_reorder = rbsp_ue(&r), dpb = rbsp_ue(&r);
    CHECK(r.bit <= 8 * r.n && old_reorder <= dpb, "SPS bitstream_restriction unreadable");
    bit_writer w = {.bit = 0};
    r.bit = 0;
    while (r.bit < keep) bw_u(&w, rbsp_u(&r, 1), 1);
    bw_u(&w, mv, 1);
    for (int k = 0; k < 4; k++) bw_ue(&w, f[k]);
    bw_ue(&w, reorder);
    bw_ue(&w, dpb > reorder ? dpb : reorder);
    bw_u(&w, 1, 1); // rbsp_stop_one_bit, then zeros to the byte
    size_t n = (w.bit + 7) / 8, o = 0;
    out[o++] = sps[0];
    for (size_t i = 0, zeros = 0; i < n; i++) {
        if (zeros >= 2 && w.b[i] <= 3) { out[o++] = 3; zeros = 0; }
        out[o++] = w.b[i];
        zeros = w.b[i] ? 0 : zeros + 1;
    }
    return o;
}

static int start_code_at(const uint8_t *p, size_t i, size_t n) { return i + 3 <= n && !p[i] && !p[i + 1] && p[i + 2] == 1; }

// x264enc's byte-stream buffers with every SPS rewritten by sps_set_reorder (user data: reorder).
static GstPadProbeReturn reorder_probe(GstPad *pad, GstPadProbeInfo *info, gpointer data) {
    GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER(info);
    GstMapInfo m;
    if (!b || !gst_buffer_map(b, &m, GST_MAP_READ)) return GST_PAD_PROBE_OK;
    uint8_t *out = malloc(2 * m.size + 64);
    size_t i = 0, o = 0;
    while (i < m.size && !start_code_at(m.data, i, m.size)) i++;
    CHECK(i < m.size, "x264enc byte-stream buffer without a start code");
    while (i < m.size) { // a start code at i; its NAL runs to the next one, less that one's leading zeros
        size_t s = i + 3, j = s;
        while (j < m.size && !start_code_at(m.data, j, m.size)) j++;
        size_t end = j;
        while (j < m.size && end > s && !m.data[end - 1]) end--;
        memcpy(out + o, "\0\0\0\1", 4);
        o += 4;
        if (end > s && (m.data[s] & 31) == 7) o += sps_set_reorder(m.data + s, end - s, GPOINTER_TO_UINT(data), out + o);
        else memcpy(out + o, m.data + s, end - s), o += end - s;
        i = j;
    }
    gst_buffer_unmap(b, &m);
    GstBuffer *nb = gst_buffer_new_wrapped(out, o);
    gst_buffer_copy_into(nb, b, GST_BUFFER_COPY_METADATA, 0, -1);
    gst_buffer_unref(b);
    GST_PAD_PROBE_INFO_DATA(info) = nb;
    return GST_PAD_PROBE_OK;
}

// encode_frames with x264 (GOP 30, 2 B-frames) into MP4, each SPS saying max_num_reorder_frames = reorder.
static void encode_h264_reorder(const char *out, int frames, unsigned reorder) {
    encode_frames_probed(out,
                         "x264enc name=enc speed-preset=veryfast bframes=2 b-adapt=false key-int-max=30 "
                         "! video/x-h264,stream-format=byte-stream,alignment=au ! h264parse ! mp4mux",
                         W, H, frames, 0, draw_frame, "enc", reorder_probe, GUINT_TO_POINTER(reorder));
}

// H.264 whose decoder holds pictures back: the SPS declares 14 reorder frames (as encoders that
// state the level's whole DPB do; one without the field makes libavcodec guess from the POCs, up
// to 15: car-detection.mp4 ~6, one-by-one-person-detection.mp4 ~14), so a read fed packets until
// its frame comes out decodes ~14 more than it needs.  read_frames drains the decoder after the
// packet of a frame it reads last before a seek or at the end of a random read: the frames must
// stay exact (their numbers, B-frames included), the packets decoded must drop to about what
// reaching the frames takes, and a chunked sequential read must still go on decoding between calls.
TEST(h264_output_delay_drained) {
    const int frames = 180;
    char path[1100];
    snprintf(path, sizeof path, "%s/h264_delay.mp4", vt_tmpdir());
    encode_h264_reorder(path, frames, 14);
    check_video(path, frames, 0, VM_DEC_NATIVE, 0, 0, W, H);
    vm_decoder_options o = opts(VM_DEC_NATIVE, 0, 0);
    vm_error err = {0};
    vm_decoder *d = vm_decoder_open(path, &o, &err);
    CHECK(d, "%s", err.msg);
    CHECK_EQ_INT(vm_decoder_info(d)->frames, frames);
    uint8_t *buf = malloc((size_t)W * H * 3 * 30);
    uint8_t *dst[30];
    for (int k = 0; k < 30; k++) dst[k] = buf + (size_t)W * H * 3 * k;
    vm_decoder_stats s0, s1;
    // The first read is not drained (no delay measured yet): it shows the delay is there.
    int64_t idx[30] = {45};
    vm_decoder_stats_get(d, &s0);
    CHECK_OK(vm_decoder_read_frames(d, idx, 1, dst, NULL, &err), err);
    vm_decoder_stats_get(d, &s1);
    CHECK_EQ_INT(read_number(dst[0], W, H), 45);
    CHECK(s1.frames_decoded - s0.frames_decoded >= 16 + 8, "%lld packets for frame 45 of a GOP at 30: no output delay?",
          (long long)(s1.frames_decoded - s0.frames_decoded));
    vm_rng rng;
    vm_rng_init(&rng, 77, 0);
    int64_t need = 0; // packets from the keyframe to each frame, when nothing is decoded twice
    vm_decoder_stats_get(d, &s0);
    for (int r = 0; r < 40; r++) {
        // pairs as the sampler draws them (sometimes the same GOP, sometimes the next), then a
        // frame of another GOP in the same call (a seek between), the same frame twice, single frames
        int n = 2;
        idx[0] = vm_rng_int(&rng, 0, frames - 75);
        idx[1] = idx[0] + vm_rng_int(&rng, 1, 30);
        if (r % 4 == 1) idx[1] = idx[0];
        if (r % 4 == 2) { idx[2] = idx[1] + vm_rng_int(&rng, 35, 39); n = 3; }
        if (r % 4 == 3) n = 1;
        CHECK_OK(vm_decoder_read_frames(d, idx, n, dst, NULL, &err), err);
        for (int k = 0; k < n; k++) CHECK_EQ_INT(read_number(dst[k], W, H), idx[k]);
        int64_t pos = -1;
        for (int k = 0; k < n; k++) {
            int64_t from = idx[k] / 30 * 30;
            need += idx[k] + 1 - (pos >= from ? pos : from);
            if (idx[k] + 1 > pos) pos = idx[k] + 1;
        }
    }
    vm_decoder_stats_get(d, &s1);
    int64_t decoded = s1.frames_decoded - s0.frames_decoded;
    // Undrained, each read costs ~14 more packets: 1175 here, against 390 drained; `need` counts
    // the B-frames skipped before a wanted frame too (914).
    CHECK(decoded <= need, "%lld packets decoded for reads that need %lld", (long long)decoded, (long long)need);
    // Chunks of a sequential read after random ones: the first is taken for a random read (drained:
    // the second seeks), from the third on each goes on decoding where the one before ended.
    for (int c = 0; c < 4; c++) {
        for (int k = 0; k < 30; k++) idx[k] = 30 + c * 30 + k;
        vm_decoder_stats_get(d, &s0);
        CHECK_OK(vm_decoder_read_frames(d, idx, 30, dst, NULL, &err), err);
        vm_decoder_stats_get(d, &s1);
        for (int k = 0; k < 30; k++) CHECK_EQ_INT(read_number(dst[k], W, H), idx[k]);
        if (c >= 2) CHECK_EQ_INT(s1.seeks - s0.seeks, 0);
    }
    free(buf);
    vm_decoder_close(d);
}

TEST(index_cache_reused) {
    const char *p = gen_video("h264_gop30.mp4", X264(30) " ! mp4mux", 120, 0);
    vm_decoder_options o = opts(VM_DEC_NATIVE, 0, 0);
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/cache-test", vt_tmpdir());
    o.index_cache = dir;
    vm_error err = {0};
    vm_decoder *a = vm_decoder_open(p, &o, &err);
    CHECK(a, "%s", err.msg);
    vm_decoder *b = vm_decoder_open(p, &o, &err);
    CHECK(b, "%s", err.msg);
    const vm_video_info *ia = vm_decoder_info(a), *ib = vm_decoder_info(b);
    CHECK(!strcmp(ia->index_source, "parse"), "%s", ia->index_source);
    CHECK(!strcmp(ib->index_source, "cache:parse"), "%s", ib->index_source);
    CHECK_EQ_INT(ia->frames, ib->frames);
    CHECK(!memcmp(ia->pts, ib->pts, ia->frames * sizeof *ia->pts));
    CHECK(!memcmp(ia->keyframe, ib->keyframe, ia->frames));
    CHECK_EQ_INT(ia->width, ib->width);
    CHECK(!strcmp(ia->codec, ib->codec), "%s vs %s", ia->codec, ib->codec);
    vm_decoder_close(a);
    vm_decoder_close(b);
    // "off": always indexed.
    o.index_cache = "off";
    a = vm_decoder_open(p, &o, &err);
    CHECK(a, "%s", err.msg);
    CHECK(!strcmp(vm_decoder_info(a)->index_source, "parse"));
    vm_decoder_close(a);
}

TEST(hw_off_same_frames) {
    const char *p = gen_video("h264_gop30.mkv", X264(30) " ! matroskamux", 90, 0);
    vm_decoder_options o = opts(VM_DEC_NATIVE, 0, 0);
    o.hw = VM_DEC_HW_OFF;
    vm_error err = {0};
    vm_decoder *d = vm_decoder_open(p, &o, &err);
    CHECK(d, "%s", err.msg);
    uint8_t *f = malloc(W * H * 3);
    int64_t i = 47;
    CHECK_OK(vm_decoder_read_frames(d, &i, 1, &f, NULL, &err), err);
    CHECK_EQ_INT(read_number(f, W, H), 47);
    free(f);
    vm_decoder_close(d);
}

static const char *write_bytes(const char *name, const void *data, size_t n);
#define write_bytes_leak write_bytes

// ---- leaks ------------------------------------------------------------------------------------
// GStreamer's leaks tracer sees every GstObject and GstMiniObject (elements, pads, buffers, samples,
// caps, events): after a warm-up (plugins and types load once), an open + reads with seeks + close
// and a failed open must leave none alive.  It has to be named before the first gst_init.
__attribute__((constructor)) static void enable_leaks_tracer(void) { setenv("GST_TRACERS", "leaks", 0); }

static void decode_some(const char *p) {
    vm_decoder_options o = opts(VM_DEC_SHORT_SIDE, 60, 0);
    vm_error err = {0};
    vm_decoder *d = vm_decoder_open(p, &o, &err);
    CHECK(d, "%s", err.msg);
    const vm_video_info *vi = vm_decoder_info(d);
    size_t fsz = (size_t)vi->out_width * vi->out_height * 3;
    uint8_t *buf = malloc(fsz * 3);
    uint8_t *dst[3] = {buf, buf + fsz, buf + 2 * fsz};
    int64_t a[3] = {5, 6, 70}, b[3] = {2, 40, 89};
    CHECK_OK(vm_decoder_read_frames(d, a, 3, dst, NULL, &err), err);
    CHECK_OK(vm_decoder_read_frames(d, b, 3, dst, NULL, &err), err);
    free(buf);
    vm_decoder_close(d);
    uint8_t junk[4096];
    memset(junk, 0x5a, sizeof junk);
    o.index_cache = "off";
    CHECK(!vm_decoder_open(write_bytes_leak("leak-garbage.mp4", junk, sizeof junk), &o, &err));
}

// Add a leaks-tracer checkpoint to net (per object address: +1 per creation, -1 per destruction);
// type gets the type name of each address created.
static void add_checkpoint(const GstStructure *cp, GHashTable *net, GHashTable *type) {
    for (int removed = 0; removed < 2; removed++) {
        const GValue *list = gst_structure_get_value(cp, removed ? "objects-removed-list" : "objects-created-list");
        guint len = list ? gst_value_list_get_size(list) : 0;
        for (guint i = 0; i < len; i++) {
            const GstStructure *o = gst_value_get_structure(gst_value_list_get_value(list, i));
            guint64 addr = 0;
            gst_structure_get_uint64(o, "address", &addr);
            gpointer key = GSIZE_TO_POINTER((gsize)addr);
            int c = GPOINTER_TO_INT(g_hash_table_lookup(net, key)) + (removed ? -1 : 1);
            g_hash_table_insert(net, key, GINT_TO_POINTER(c));
            if (!removed)
                g_hash_table_insert(type, key, (gpointer)g_intern_string(gst_structure_get_string(o, "type-name")));
        }
    }
}

// How many addresses of net are alive (created more often than destroyed); the type names of the
// first 8 into what (cap bytes), each after a space.
static guint count_alive(GHashTable *net, GHashTable *type, char *what, size_t cap) {
    guint n = 0;
    what[0] = 0;
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, net);
    while (g_hash_table_iter_next(&it, &k, &v))
        if (GPOINTER_TO_INT(v) > 0 && ++n <= 8)
            snprintf(what + strlen(what), cap - strlen(what), " %s", (const char *)g_hash_table_lookup(type, k));
    return n;
}

TEST(decoder_releases_every_object) {
    const char *p = gen_video("h264_gop30.mkv", X264(30) " ! matroskamux", 90, 0);
    GstTracer *tracer = NULL;
    GList *all = gst_tracing_get_active_tracers();
    for (GList *l = all; l; l = l->next)
        if (!strcmp(G_OBJECT_TYPE_NAME(l->data), "GstLeaksTracer")) tracer = gst_object_ref(l->data);
    g_list_free_full(all, gst_object_unref);
    if (!tracer) SKIP("GStreamer leaks tracer not active (GST_TRACERS was set to something else)");
    decode_some(p); // warm-up
    g_signal_emit_by_name(tracer, "activity-start-tracking");
    decode_some(p);
    // Each checkpoint lists the creations and destructions since the previous one: alive = created
    // more often than destroyed, per address (addresses get reused).  GStreamer may drop its last
    // reference to a buffer from one of its own threads just after close returned (about 1 run in
    // 20 showed one GstBuffer or GstMemory alive at the first checkpoint), so checkpoints are
    // summed for up to 2 s: what is still alive then is a leak.
    GHashTable *net = g_hash_table_new(g_direct_hash, g_direct_equal);
    GHashTable *type = g_hash_table_new(g_direct_hash, g_direct_equal);
    guint n = 0;
    char what[512] = "";
    for (int round = 0; round < 40; round++) {
        if (round) g_usleep(50 * 1000);
        GstStructure *cp = NULL;
        g_signal_emit_by_name(tracer, "activity-get-checkpoint", &cp);
        CHECK(cp);
        add_checkpoint(cp, net, type);
        gst_structure_free(cp);
        if (!(n = count_alive(net, type, what, sizeof what))) break;
    }
    g_signal_emit_by_name(tracer, "activity-stop-tracking");
    gst_object_unref(tracer);
    g_hash_table_destroy(net);
    g_hash_table_destroy(type);
    CHECK(n == 0, "%u GStreamer objects still alive 2 s after close:%s", n, what);
}

// ---- errors -----------------------------------------------------------------------------------
static const char *write_bytes(const char *name, const void *data, size_t n) {
    static char path[4][1024];
    static int slot;
    char *out = path[slot++ % 4];
    snprintf(out, 1024, "%s/%s", vt_tmpdir(), name);
    FILE *fp = fopen(out, "wb");
    CHECK(fp);
    if (n) CHECK(fwrite(data, 1, n, fp) == n);
    fclose(fp);
    return out;
}

static void expect_open_error(const char *path, int code, const char *reason) {
    vm_decoder_options o = opts(VM_DEC_NATIVE, 0, 0);
    o.timeout_ms = 5000;
    vm_error err = {0};
    vm_decoder *d = vm_decoder_open(path, &o, &err);
    if (d) vm_decoder_close(d);
    CHECK(!d, "%s opened", path);
    CHECK(err.code == code, "%s: code %d (%s), wanted %d: %s", path, err.code, vm_strerror(err.code), code, err.msg);
    CHECK(strstr(err.msg, path), "message does not name the file: %s", err.msg);
    CHECK(strcasestr(err.msg, reason), "message '%s' lacks '%s'", err.msg, reason);
}

TEST(error_missing_file) {
    char p[1100];
    snprintf(p, sizeof p, "%s/no-such-file.mp4", vt_tmpdir());
    expect_open_error(p, VM_ENOTFOUND, "No such file");
}

TEST(error_empty_file) {
    expect_open_error(write_bytes("empty.mp4", "", 0), VM_ECORRUPT, "empty");
}

TEST(error_garbage_file) {
    uint8_t junk[65536];
    vm_rng rng;
    vm_rng_init(&rng, 7, 0);
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = vm_rng_u32(&rng);
    expect_open_error(write_bytes("garbage.mp4", junk, sizeof junk), VM_ECORRUPT, "type");
}

// Open must fail with VM_ECORRUPT naming the file, well before the (default, 10 s) timeout: a
// truncated file is no stalled source.  2 s is generous on purpose (a loaded CI machine); the
// failure itself takes tens of milliseconds.
// The message names the file and gives reason (or alt).
static void expect_truncated_fast(const char *path, const char *reason, const char *alt) {
    vm_decoder_options o = opts(VM_DEC_NATIVE, 0, 0);
    CHECK_EQ_INT(o.timeout_ms, 10000);
    vm_error err = {0};
    double t0 = vm_now();
    vm_decoder *d = vm_decoder_open(path, &o, &err);
    double dt = vm_now() - t0;
    if (d) vm_decoder_close(d);
    CHECK(!d && err.code == VM_ECORRUPT, "%s: code %d: %s", path, err.code, err.msg);
    CHECK(strstr(err.msg, path) && (strcasestr(err.msg, reason) || (alt && strcasestr(err.msg, alt))), "%s", err.msg);
    CHECK(dt < 2.0, "%s: the error took %.2f s (%s)", path, dt, err.msg);
}

TEST(error_truncated_mp4) {
    // mp4mux writes the moov (the sample table) at the end: cut it off, at several points.  The
    // demuxer fails at once, but parsebin drops its error when it comes before the demuxer is
    // fully plugged (the usual case once GStreamer's threads are pooled): no error, no EOS, no pad.
    const char *p = gen_video("h264_gop30.mp4", X264(30) " ! mp4mux", 120, 0);
    size_t n;
    char *data = slurp(p, &n);
    static const int pct[] = {10, 50, 60, 90};
    for (int k = 0; k < 4; k++) {
        char name[64];
        snprintf(name, sizeof name, "truncated%d.mp4", pct[k]);
        // qtdemux says "no playable streams" (or "incomplete" for a cut inside the moov); when its
        // message is dropped, we say "no playable stream".
        expect_truncated_fast(write_bytes(name, data, n * pct[k] / 100), "playable stream", "incomplete");
    }
    free(data);
    // With the moov first (faststart), a cut right after the header leaves a stream with no packet.
    p = gen_video("h264_faststart.mp4", X264(30) " ! mp4mux faststart=true", 60, 0);
    data = slurp(p, &n);
    const char *mdat = memmem(data, n, "mdat", 4);
    CHECK(mdat && mdat - data + 12 < (long)n, "no mdat box in %s", p);
    expect_truncated_fast(write_bytes("header-only.mp4", data, mdat - data + 12), "no packet", NULL);
    free(data);
}

// The index is built (and cached) from the whole file, then the file is cut short under the
// decoder, e.g. a dataset being re-copied while a worker reads it.  The cache is keyed by size and
// mtime, so a later open re-indexes instead of trusting the stale index.  Each failure is fast.
TEST(error_truncated_after_open) {
    const char *p = gen_video("h264_gop30.mp4", X264(30) " ! mp4mux", 120, 0);
    size_t n;
    char *data = slurp(p, &n);
    const char *t = write_bytes("shrinks.mp4", data, n);
    free(data);
    vm_decoder_options o = opts(VM_DEC_NATIVE, 0, 0);
    vm_error err = {0};
    vm_decoder *a = vm_decoder_open(t, &o, &err); // reads frame 0 before the cut: pipeline running
    CHECK(a, "%s", err.msg);
    vm_decoder *b = vm_decoder_open(t, &o, &err); // first read after the cut: pipeline built then
    CHECK(b, "%s", err.msg);
    CHECK_EQ_INT(vm_decoder_info(b)->frames, 120);
    uint8_t *f = malloc(W * H * 3);
    int64_t first = 0, last = 119;
    CHECK_OK(vm_decoder_read_frames(a, &first, 1, &f, NULL, &err), err);
    CHECK(truncate(t, n * 6 / 10) == 0);

    double t0 = vm_now();
    int rc = vm_decoder_read_frames(b, &last, 1, &f, NULL, &err);
    double dt = vm_now() - t0;
    CHECK(rc == VM_ECORRUPT, "rc %d: %s", rc, err.msg);
    CHECK(strstr(err.msg, t) && strcasestr(err.msg, "playable stream"), "%s", err.msg);
    CHECK(dt < 2.0, "read_frames after the cut (new pipeline) took %.2f s: %s", dt, err.msg);

    t0 = vm_now();
    rc = vm_decoder_read_frames(a, &last, 1, &f, NULL, &err);
    dt = vm_now() - t0;
    CHECK(rc == VM_ECORRUPT, "rc %d: %s", rc, err.msg);
    CHECK(strstr(err.msg, t) && strstr(err.msg, "frame 119"), "%s", err.msg);
    CHECK(dt < 2.0, "read_frames after the cut (running pipeline) took %.2f s: %s", dt, err.msg);
    free(f);
    vm_decoder_close(a);
    vm_decoder_close(b);
    expect_truncated_fast(t, "playable stream", NULL);
}

TEST(error_audio_only) {
    char p[1100];
    snprintf(p, sizeof p, "%s/audio.ogg", vt_tmpdir());
    char desc[1400];
    snprintf(desc, sizeof desc, "audiotestsrc num-buffers=20 ! audioconvert ! vorbisenc ! oggmux ! filesink location=%s", p);
    launch_to_eos(desc, p);
    expect_open_error(p, VM_ENOTFOUND, "no video stream");
}

// A source that never delivers (a UDP port nobody sends to): a timeout naming the URI, in bounded time.
TEST(error_stalled_stream_times_out) {
    char uri[64];
    snprintf(uri, sizeof uri, "udp://127.0.0.1:%d", 40000 + (int)(getpid() % 20000));
    vm_decoder_options o = opts(VM_DEC_NATIVE, 0, 0);
    o.timeout_ms = 700;
    vm_error err = {0};
    double t0 = vm_now();
    vm_decoder *d = vm_decoder_open(uri, &o, &err);
    double dt = vm_now() - t0;
    if (d) vm_decoder_close(d);
    CHECK(!d && err.code == VM_ETIMEOUT, "code %d: %s", err.code, err.msg);
    CHECK(strstr(err.msg, uri) && strstr(err.msg, "stalled") && strstr(err.msg, "700 ms"), "%s", err.msg);
    CHECK(dt < 5.0, "took %.1f s", dt);
}

// Take every VP8 decoder out of autoplugging (rank NONE), as on a machine without the plugin.
static void set_vp8_decoders_rank(int rank, int *saved) {
    const char *names[] = {"vp8dec", "avdec_vp8"};
    for (int i = 0; i < 2; i++) {
        GstPluginFeature *f = gst_registry_lookup_feature(gst_registry_get(), names[i]);
        if (!f) continue;
        if (rank < 0) gst_plugin_feature_set_rank(f, saved[i]);
        else { saved[i] = gst_plugin_feature_get_rank(f); gst_plugin_feature_set_rank(f, rank); }
        gst_object_unref(f);
    }
}

TEST(error_missing_plugin) {
    const char *p = gen_video("vp8.webm", "vp8enc deadline=1 keyframe-max-dist=30 ! webmmux", 90, 0);
    int saved[2] = {0, 0};
    set_vp8_decoders_rank(GST_RANK_NONE, saved);
    vm_decoder_options o = opts(VM_DEC_NATIVE, 0, 0);
    o.index_cache = "off";
    vm_error err = {0};
    vm_decoder *d = vm_decoder_open(p, &o, &err);
    set_vp8_decoders_rank(-1, saved);
    if (d) vm_decoder_close(d);
    CHECK(!d && err.code == VM_EUNSUPPORTED, "code %d: %s", err.code, err.msg);
    CHECK(strstr(err.msg, p) && strstr(err.msg, "missing plugin") && strstr(err.msg, "VP8"), "%s", err.msg);
}

TEST(error_bad_arguments) {
    const char *p = gen_video("h264_gop30.mkv", X264(30) " ! matroskamux", 90, 0);
    vm_decoder_options o = opts(VM_DEC_EXACT, 0, 10);
    vm_error err = {0};
    CHECK(!vm_decoder_open(p, &o, &err) && err.code == VM_EINVAL, "%s", err.msg);
    o = opts(VM_DEC_NATIVE, 0, 0);
    vm_decoder *d = vm_decoder_open(p, &o, &err);
    CHECK(d, "%s", err.msg);
    uint8_t *f = malloc(W * H * 3);
    uint8_t *two[2] = {f, f};
    int64_t unsorted[2] = {5, 3};
    CHECK_EQ_INT(vm_decoder_read_frames(d, unsorted, 2, two, NULL, &err), VM_EINVAL);
    CHECK(strstr(err.msg, "sorted"), "%s", err.msg);
    int64_t past[2] = {3, 90};
    CHECK_EQ_INT(vm_decoder_read_frames(d, past, 2, two, NULL, &err), VM_ERANGE);
    CHECK(strstr(err.msg, "90") && strstr(err.msg, "90 frames"), "%s", err.msg);
    free(f);
    vm_decoder_close(d);
}

// Interlaced H.264 in AVI (ffmpeg's libx264 with +ildct: MBAFF, frame_mbs_only_flag 0): refused,
// naming the file, the reason and the remedy.
TEST(error_h264_avi_interlaced) {
    if (!have_tool("ffmpeg")) SKIP("ffmpeg not installed");
    char out[1100], cmd[1400];
    snprintf(out, sizeof out, "%s/interlaced.avi", vt_tmpdir());
    snprintf(cmd, sizeof cmd, "ffmpeg -nostdin -v error -y -f lavfi -i testsrc=size=160x120:rate=25 -frames:v 40 "
             "-vf setfield=tff -c:v libx264 -bf 2 -flags +ildct+ilme '%s'", out);
    if (system(cmd) != 0) SKIP("ffmpeg without libx264");
    expect_open_error(out, VM_EUNSUPPORTED, "interlaced");
    vm_decoder_options o = opts(VM_DEC_NATIVE, 0, 0);
    vm_error err = {0};
    CHECK(!vm_decoder_open(out, &o, &err) && strstr(err.msg, "re-encode"), "%s", err.msg);
}
