// Tests of the decoder's orientation handling on generated MP4 files.  Phones store a rotation as
// the track header's (tkhd) display matrix; qtdemux turns it into the image-orientation tag
// (rotate-90/180/270, flip-rotate-*), and read_frames must return the picture upright.
//
// One H.264 MP4 is encoded here (appsrc -> x264enc -> mp4mux; mp4mux writes no orientation from a
// tag in GStreamer 1.22), then copies get each of the eight display matrices patched into tkhd.
// Every frame is W x H (landscape) and shows its number as 2x4 black/white blocks, with a red
// square in its top-left corner and a green one in its top-right corner: the two squares tell all
// eight orientations apart without trusting the test's own transform, which is then checked pixel
// for pixel against the unrotated file, and the whole against ffmpeg (its autorotate reads the
// matrix itself, not through GStreamer) when ffmpeg is installed.
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
#define H 96
#define FRAMES 90
#define MARK 16 // side of the corner squares

enum { TL, TR, BR, BL };
static const char *corner_name[4] = {"top-left", "top-right", "bottom-right", "bottom-left"};

// A display matrix (a b; c d in QuickTime's row-vector convention), the orientation qtdemux
// reports for it, and where the red and green squares must land once the frame is upright.
typedef struct {
    const char *name;
    int a, b, c, d;
    int rotation, flip;
    int red, green;
} orient_case;

static const orient_case CASES[] = {
    {"identity", 1, 0, 0, 1, 0, 0, TL, TR},
    {"rotate-90", 0, 1, -1, 0, 90, 0, TR, BR},
    {"rotate-180", -1, 0, 0, -1, 180, 0, BR, BL},
    {"rotate-270", 0, -1, 1, 0, 270, 0, BL, TL},
    {"flip-rotate-0", -1, 0, 0, 1, 0, 1, TR, TL},
    {"flip-rotate-180", 1, 0, 0, -1, 180, 1, BL, BR},
    {"flip-rotate-270", 0, 1, 1, 0, 270, 1, TL, BL},
};
#define NCASES (int)(sizeof CASES / sizeof CASES[0])
// The eighth, flip-rotate-90 (0 -1; -1 0), is not mapped by qtdemux in GStreamer 1.22 (no tag):
// see flip_rotate_90_matrix below.

static void draw_frame(uint8_t *rgb, int n) {
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            int bit = (y / (H / 2)) * 4 + x / (W / 4);
            uint8_t *p = rgb + (y * W + x) * 3;
            p[0] = p[1] = p[2] = (n >> bit) & 1 ? 255 : 0;
            if (y < MARK && x < MARK) p[0] = 255, p[1] = p[2] = 0;          // red, top-left
            if (y < MARK && x >= W - MARK) p[1] = 255, p[0] = p[2] = 0;     // green, top-right
        }
}

// Where a pixel (x, y) of the pw x ph stored picture lands in the upright picture: mirrored
// left-right first when flip, then turned clockwise.
static void orient_point(int x, int y, int pw, int ph, int rot, int flip, int *ox, int *oy) {
    if (flip) x = pw - 1 - x;
    switch (rot) {
    case 90: *ox = ph - 1 - y, *oy = x; break;
    case 180: *ox = pw - 1 - x, *oy = ph - 1 - y; break;
    case 270: *ox = y, *oy = pw - 1 - x; break;
    default: *ox = x, *oy = y;
    }
}

// The stored (pre-rotation) picture back from an upright one of ow x oh; out is pw x ph.
static void unorient(const uint8_t *rgb, int ow, int oh, int rot, int flip, uint8_t *out) {
    int quarter = rot == 90 || rot == 270, pw = quarter ? oh : ow, ph = quarter ? ow : oh;
    for (int y = 0; y < ph; y++)
        for (int x = 0; x < pw; x++) {
            int X, Y;
            orient_point(x, y, pw, ph, rot, flip, &X, &Y);
            memcpy(out + ((size_t)y * pw + x) * 3, rgb + ((size_t)Y * ow + X) * 3, 3);
        }
}

// The frame number from a stored-orientation picture of any size.
static int read_number(const uint8_t *rgb, int w, int h) { return read_blocks(rgb, w, h, 2); }

// Mean colour of a small patch inside corner k of an upright w x h picture (well within the
// square, whatever the scale: the square covers 1/10 of the stored width, 1/6 of its height).
static void corner_colour(const uint8_t *rgb, int w, int h, int k, int c[3]) {
    int x0 = w * 2 / 100, x1 = w * 5 / 100, y0 = h * 2 / 100, y1 = h * 5 / 100;
    long s[3] = {0, 0, 0}, n = 0;
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) {
            int X = k == TR || k == BR ? w - 1 - x : x, Y = k == BL || k == BR ? h - 1 - y : y;
            const uint8_t *p = rgb + ((size_t)Y * w + X) * 3;
            for (int i = 0; i < 3; i++) s[i] += p[i];
            n++;
        }
    for (int i = 0; i < 3; i++) c[i] = (int)(s[i] / n);
}

static void check_markers(const uint8_t *rgb, int w, int h, const orient_case *oc, int frame) {
    int c[3];
    corner_colour(rgb, w, h, oc->red, c);
    CHECK(c[0] > 180 && c[1] < 90 && c[2] < 90, "%s %dx%d frame %d: %s corner is (%d,%d,%d), not red", oc->name, w,
          h, frame, corner_name[oc->red], c[0], c[1], c[2]);
    corner_colour(rgb, w, h, oc->green, c);
    CHECK(c[1] > 180 && c[0] < 90 && c[2] < 90, "%s %dx%d frame %d: %s corner is (%d,%d,%d), not green", oc->name, w,
          h, frame, corner_name[oc->green], c[0], c[1], c[2]);
    for (int k = 0; k < 4; k++) { // the other two corners show neither square
        if (k == oc->red || k == oc->green) continue;
        corner_colour(rgb, w, h, k, c);
        CHECK(abs(c[0] - c[1]) < 60 && abs(c[1] - c[2]) < 60, "%s frame %d: %s corner is coloured (%d,%d,%d)",
              oc->name, frame, corner_name[k], c[0], c[1], c[2]);
    }
}

// Encode FRAMES numbered frames at 25 fps into an MP4 (B-frames, GOP 30).
static void gen_mp4(const char *out) {
    encode_frames(out, "x264enc speed-preset=veryfast bframes=2 b-adapt=false key-int-max=30 ! h264parse ! mp4mux", W,
                  H, FRAMES, 0, draw_frame);
}

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]; }
static void put_be32(uint8_t *p, uint32_t v) { p[0] = v >> 24, p[1] = v >> 16, p[2] = v >> 8, p[3] = v; }

// Copy src to dst with the (only) track's tkhd display matrix set to (a b; c d), no translation.
// tkhd: size, "tkhd", version, flags[3], then 20 (v0) or 32 (v1) bytes of times and ids, 16 bytes
// of layer/volume, then the 3x3 matrix of 32-bit fixed point (16.16; the last column 2.30).
static void write_with_matrix(const char *src, const char *dst, int a, int b, int c, int d) {
    size_t n;
    uint8_t *buf = (uint8_t *)slurp(src, &n);
    uint8_t *t = memmem(buf, n, "tkhd", 4);
    CHECK(t && t + 4 + 4 + 32 + 16 + 36 <= buf + n, "no tkhd box in %s", src);
    CHECK(!memmem(t + 4, buf + n - t - 4, "tkhd", 4), "%s has more than one track", src);
    uint8_t *m = t + 4 + 4 + (t[4] == 1 ? 32 : 20) + 16;
    CHECK(be32(m) == 0x10000 && be32(m + 16) == 0x10000 && be32(m + 32) == 0x40000000, "%s: tkhd matrix not identity",
          src);
    const int32_t v[9] = {a * 65536, b * 65536, 0, c * 65536, d * 65536, 0, 0, 0, 1 << 30};
    for (int i = 0; i < 9; i++) put_be32(m + 4 * i, (uint32_t)v[i]);
    FILE *fp = fopen(dst, "wb");
    CHECK(fp && fwrite(buf, 1, n, fp) == n, "%s", dst);
    fclose(fp);
    free(buf);
}

// The generated MP4 and its copy with case oc's matrix (paths in this test's tmpdir).
static const char *case_file(const orient_case *oc) {
    static char base[1100], out[1100];
    snprintf(base, sizeof base, "%s/stored.mp4", vt_tmpdir());
    struct stat st;
    if (stat(base, &st) != 0) gen_mp4(base);
    snprintf(out, sizeof out, "%s/%s.mp4", vt_tmpdir(), oc->name);
    if (stat(out, &st) != 0) write_with_matrix(base, out, oc->a, oc->b, oc->c, oc->d);
    return out;
}

// Read frames idx[0..n) of path with options o into one buffer (caller frees); checks the size.
static uint8_t *read_some(const char *path, vm_decoder_options *o, const int64_t *idx, int n, int ow, int oh) {
    vm_error err = {0};
    vm_decoder *d = vm_decoder_open(path, o, &err);
    CHECK(d, "%s", err.msg);
    const vm_video_info *vi = vm_decoder_info(d);
    CHECK(vi->out_width == ow && vi->out_height == oh, "%s: out %dx%d, wanted %dx%d", path, vi->out_width,
          vi->out_height, ow, oh);
    size_t fsz = (size_t)ow * oh * 3;
    uint8_t *buf = malloc(fsz * n);
    uint8_t *dst[8];
    CHECK(n <= 8);
    for (int k = 0; k < n; k++) dst[k] = buf + fsz * k;
    CHECK_OK(vm_decoder_read_frames(d, idx, n, dst, NULL, &err), err);
    vm_decoder_close(d);
    return buf;
}

// Each orientation: reported as qtdemux reads it, cached, sizes swapped for 90/270 in every size
// mode, the squares in their corners, the numbers right, and at native size exactly the unrotated
// file's pixels moved (the same encoded pictures; rotation and mirror in I420 at even sizes lose
// nothing).
TEST(orientation_applied_in_every_size_mode) {
    static const int64_t idx[4] = {0, 37, 38, FRAMES - 1};
    const orient_case *id = &CASES[0];
    vm_decoder_options o = opts(VM_DEC_NATIVE, 0, 0);
    uint8_t *ref = read_some(case_file(id), &o, idx, 4, W, H);
    uint8_t *pre = malloc((size_t)W * H * 3);
    for (int ci = 0; ci < NCASES; ci++) {
        const orient_case *oc = &CASES[ci];
        const char *p = case_file(oc);
        const int quarter = oc->rotation == 90 || oc->rotation == 270;
        const int uw = quarter ? H : W, uh = quarter ? W : H;
        vm_error err = {0};
        for (int pass = 0; pass < 2; pass++) { // indexed (or cached), then surely from the index cache
            o = opts(VM_DEC_NATIVE, 0, 0);
            vm_decoder *d = vm_decoder_open(p, &o, &err);
            CHECK(d, "%s", err.msg);
            const vm_video_info *vi = vm_decoder_info(d);
            if (pass) CHECK(!strcmp(vi->index_source, "cache:parse"), "%s: %s", oc->name, vi->index_source);
            CHECK(vi->rotation == oc->rotation && vi->flip == oc->flip, "%s: rotation %d flip %d, wanted %d %d",
                  oc->name, vi->rotation, vi->flip, oc->rotation, oc->flip);
            CHECK(vi->width == W && vi->height == H, "%s: width x height %dx%d is not the stored size", oc->name,
                  vi->width, vi->height);
            CHECK(vi->out_width == uw && vi->out_height == uh, "%s: native out %dx%d, wanted %dx%d", oc->name,
                  vi->out_width, vi->out_height, uw, uh);
            vm_decoder_close(d);
        }
        o = opts(VM_DEC_NATIVE, 0, 0);
        uint8_t *got = read_some(p, &o, idx, 4, uw, uh);
        for (int k = 0; k < 4; k++) {
            const uint8_t *g = got + (size_t)uw * uh * 3 * k, *r = ref + (size_t)W * H * 3 * k;
            check_markers(g, uw, uh, oc, (int)idx[k]);
            unorient(g, uw, uh, oc->rotation, oc->flip, pre);
            CHECK_EQ_INT(read_number(pre, W, H), idx[k]);
            long diff = 0;
            for (size_t i = 0; i < (size_t)W * H * 3; i++) diff += pre[i] != r[i];
            CHECK(diff == 0, "%s frame %lld: %ld bytes differ from the unrotated file's frame, moved", oc->name,
                  (long long)idx[k], diff);
        }
        free(got);
        // Short side 48 of the upright frame: 80x48 or 48x80.
        o = opts(VM_DEC_SHORT_SIDE, 48, 0);
        int sw = quarter ? 48 : 80, sh = quarter ? 80 : 48;
        got = read_some(p, &o, idx, 4, sw, sh);
        uint8_t *spre = malloc((size_t)sw * sh * 3);
        for (int k = 0; k < 4; k++) {
            const uint8_t *g = got + (size_t)sw * sh * 3 * k;
            check_markers(g, sw, sh, oc, (int)idx[k]);
            unorient(g, sw, sh, oc->rotation, oc->flip, spre);
            CHECK_EQ_INT(read_number(spre, quarter ? sh : sw, quarter ? sw : sh), idx[k]);
        }
        free(spre);
        free(got);
        // Exact: the caller's width x height is the upright frame's, whatever the rotation.
        o = opts(VM_DEC_EXACT, 70, 110);
        got = read_some(p, &o, idx, 4, 70, 110);
        for (int k = 0; k < 4; k++) check_markers(got + (size_t)70 * 110 * 3 * k, 70, 110, oc, (int)idx[k]);
        free(got);
    }
    free(pre);
    free(ref);
}

// Frame-accurate random access on a rotated file: random sorted sets (with duplicates), backwards
// one at a time (a seek each), then every frame in one call (one seek at most).
TEST(rotated_random_access) {
    const orient_case *oc = &CASES[1]; // rotate-90
    const char *p = case_file(oc);
    vm_decoder_options o = opts(VM_DEC_SHORT_SIDE, 64, 0);
    vm_error err = {0};
    vm_decoder *d = vm_decoder_open(p, &o, &err);
    CHECK(d, "%s", err.msg);
    const vm_video_info *vi = vm_decoder_info(d);
    const int ow = 64, oh = 107; // upright 96x160 -> 64 x round(160 * 64 / 96)
    CHECK(vi->out_width == ow && vi->out_height == oh, "out %dx%d", vi->out_width, vi->out_height);
    CHECK_EQ_INT(vi->frames, FRAMES);
    size_t fsz = (size_t)ow * oh * 3;
    uint8_t *buf = malloc(fsz * FRAMES), *pre = malloc(fsz);
    uint8_t *dst[FRAMES];
    int64_t idx[FRAMES], pts[FRAMES];
    for (int i = 0; i < FRAMES; i++) dst[i] = buf + fsz * i;
    vm_rng rng;
    vm_rng_init(&rng, 99, 1);
    for (int round = 0; round < 6; round++) {
        enum { K = 6 };
        for (int k = 0; k < K; k++) idx[k] = vm_rng_u32(&rng) % FRAMES;
        if (round == 0) idx[0] = FRAMES - 1;
        if (round == 1) idx[1] = idx[0];
        for (int k = 1; k < K; k++)
            for (int j = k; j > 0 && idx[j] < idx[j - 1]; j--) { int64_t t = idx[j]; idx[j] = idx[j - 1]; idx[j - 1] = t; }
        CHECK_OK(vm_decoder_read_frames(d, idx, K, dst, pts, &err), err);
        for (int k = 0; k < K; k++) {
            check_markers(dst[k], ow, oh, oc, (int)idx[k]);
            unorient(dst[k], ow, oh, 90, 0, pre);
            CHECK_EQ_INT(read_number(pre, oh, ow), idx[k]);
            CHECK_EQ_INT(pts[k], vi->pts[idx[k]]);
        }
    }
    for (int64_t i = FRAMES - 1; i >= 0; i -= 13) {
        CHECK_OK(vm_decoder_read_frames(d, &i, 1, dst, NULL, &err), err);
        unorient(dst[0], ow, oh, 90, 0, pre);
        CHECK_EQ_INT(read_number(pre, oh, ow), i);
    }
    for (int i = 0; i < FRAMES; i++) idx[i] = i;
    vm_decoder_stats s0, s1;
    vm_decoder_stats_get(d, &s0);
    CHECK_OK(vm_decoder_read_frames(d, idx, FRAMES, dst, NULL, &err), err);
    vm_decoder_stats_get(d, &s1);
    for (int i = 0; i < FRAMES; i++) {
        unorient(dst[i], ow, oh, 90, 0, pre);
        CHECK_EQ_INT(read_number(pre, oh, ow), i);
    }
    CHECK(s1.seeks - s0.seeks <= 1, "%lld seeks for a sequential read", (long long)(s1.seeks - s0.seeks));
    free(pre);
    free(buf);
    vm_decoder_close(d);
}

// The eighth matrix, (0 -1; -1 0) (flip-rotate-90 for ffmpeg), gets no tag from GStreamer 1.22's
// qtdemux: such a file comes out as stored, and says so (rotation 0, no flip).  Should a later
// GStreamer report it, it must then be applied like the others.
TEST(flip_rotate_90_matrix) {
    static const orient_case fr90 = {"flip-rotate-90", 0, -1, -1, 0, 90, 1, BR, TR};
    const char *p = case_file(&fr90);
    vm_decoder_options o = opts(VM_DEC_NATIVE, 0, 0);
    vm_error err = {0};
    vm_decoder *d = vm_decoder_open(p, &o, &err);
    CHECK(d, "%s", err.msg);
    const vm_video_info *vi = vm_decoder_info(d);
    int tagged = vi->rotation || vi->flip;
    if (tagged) CHECK(vi->rotation == 90 && vi->flip == 1, "rotation %d flip %d", vi->rotation, vi->flip);
    vm_decoder_close(d);
    static const orient_case stored = {"flip-rotate-90 (untagged)", 0, 0, 0, 0, 0, 0, TL, TR};
    const orient_case *oc = tagged ? &fr90 : &stored;
    int64_t i = 11;
    int ow = tagged ? H : W, oh = tagged ? W : H;
    uint8_t *got = read_some(p, &o, &i, 1, ow, oh);
    check_markers(got, ow, oh, oc, 11);
    free(got);
}

// ---- against ffmpeg ---------------------------------------------------------------------------
static double psnr(const uint8_t *a, const uint8_t *b, size_t n) {
    double se = 0;
    for (size_t i = 0; i < n; i++) se += (double)(a[i] - b[i]) * (a[i] - b[i]);
    return se == 0 ? 99.0 : 10 * log10(255.0 * 255.0 * n / se);
}

// ffmpeg (autorotate on by default) decodes frame k of each tagged file to raw RGB; ours at native
// size must be the same size and close (different YUV->RGB code: not bit-exact).
TEST(matches_ffmpeg_autorotate) {
    if (system("ffmpeg -version >/dev/null 2>&1") != 0) SKIP("ffmpeg not installed");
    const int64_t k = 37;
    for (int ci = 0; ci < NCASES; ci++) {
        const orient_case *oc = &CASES[ci];
        const char *p = case_file(oc);
        const int quarter = oc->rotation == 90 || oc->rotation == 270;
        const int uw = quarter ? H : W, uh = quarter ? W : H;
        char raw[1100], cmd[3000];
        snprintf(raw, sizeof raw, "%s/%s.rgb", vt_tmpdir(), oc->name);
        snprintf(cmd, sizeof cmd,
                 "ffmpeg -v error -y -i '%s' -vf 'select=eq(n\\,%lld)' -vsync 0 -frames:v 1 -f rawvideo -pix_fmt rgb24 '%s'",
                 p, (long long)k, raw);
        CHECK(system(cmd) == 0, "%s", cmd);
        struct stat st;
        CHECK(stat(raw, &st) == 0 && st.st_size == (off_t)uw * uh * 3, "%s: ffmpeg wrote %lld bytes, not %dx%dx3",
              oc->name, (long long)st.st_size, uw, uh);
        uint8_t *ff = malloc(st.st_size);
        FILE *fp = fopen(raw, "rb");
        CHECK(fp && fread(ff, 1, st.st_size, fp) == (size_t)st.st_size);
        fclose(fp);
        vm_decoder_options o = opts(VM_DEC_NATIVE, 0, 0);
        uint8_t *got = read_some(p, &o, &k, 1, uw, uh);
        double db = psnr(got, ff, st.st_size);
        printf("  %s: %dx%d, PSNR vs ffmpeg %.1f dB\n", oc->name, uw, uh, db);
        CHECK(db > 35, "%s frame %lld: PSNR %.1f dB against ffmpeg", oc->name, (long long)k, db);
        free(got);
        free(ff);
    }
}
