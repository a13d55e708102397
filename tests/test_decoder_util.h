// tests/test_decoder_util.h — what the decoder tests on generated videos (test_decoder.c,
// test_decoder_rotation.c) share: frames that show their own number as black/white blocks are
// encoded through appsrc, the number is read back from a decoded frame; decoder options; a file
// read whole.
#pragma once
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <gst/gst.h>
#include <gst/app/gstappsrc.h>
#include "decoder/decoder.h"
#include "tests/harness.h"

// Frame n's timestamp: constant 25 fps, or (vfr) a variable rate cycling through uneven durations.
static __attribute__((unused)) int64_t frame_time(int n, int vfr) {
    if (!vfr) return (int64_t)n * GST_SECOND / 25;
    static const int64_t ms[5] = {20, 40, 100, 33, 67};
    int64_t t = 0;
    for (int i = 0; i < n; i++) t += ms[i % 5] * GST_MSECOND;
    return t;
}

// Play pipeline p (PLAYING already asked for) until EOS or an error, at most 60 s; release it.  A
// failure ends the test, naming `what` and GStreamer's reason.
static __attribute__((unused)) void play_to_eos(GstElement *p, const char *what) {
    GstBus *bus = gst_element_get_bus(p);
    GstMessage *msg = gst_bus_timed_pop_filtered(bus, 60 * GST_SECOND, GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
    int ok = msg && GST_MESSAGE_TYPE(msg) == GST_MESSAGE_EOS;
    char why[512] = "timeout";
    if (msg && !ok) {
        GError *e = NULL;
        gst_message_parse_error(msg, &e, NULL);
        snprintf(why, sizeof why, "%s", e->message);
        g_error_free(e);
    }
    if (msg) gst_message_unref(msg);
    gst_object_unref(bus);
    gst_element_set_state(p, GST_STATE_NULL);
    gst_object_unref(p);
    CHECK(ok, "%s: %s", what, why);
}

// Run a gst-launch style pipeline description to its end (e.g. "videotestsrc ... ! filesink ...").
static __attribute__((unused)) void launch_to_eos(const char *desc, const char *what) {
    gst_init(NULL, NULL);  // idempotent
    GError *ge = NULL;
    GstElement *p = gst_parse_launch(desc, &ge);
    CHECK(p && !ge, "gst_parse_launch(%s): %s", desc, ge ? ge->message : "?");
    gst_element_set_state(p, GST_STATE_PLAYING);
    play_to_eos(p, what);
}

// Encode `frames` frames of w x h RGB, frame n drawn by draw(rgb, n) and timed by frame_time(n, vfr),
// through "appsrc ! videoconvert ! <chain> ! filesink location=<out>"; a failure ends the test.
// With probe: it sees the buffers leaving the src pad of the chain's element named probe_el.
static __attribute__((unused)) void encode_frames_probed(const char *out, const char *chain, int w, int h, int frames,
                                                         int vfr, void (*draw)(uint8_t *rgb, int n),
                                                         const char *probe_el, GstPadProbeCallback probe,
                                                         gpointer probe_data) {
    gst_init(NULL, NULL);  // idempotent; the decoder does its own
    char desc[2048];
    snprintf(desc, sizeof desc,
             "appsrc name=src format=time caps=video/x-raw,format=RGB,width=%d,height=%d,framerate=%s "
             "! videoconvert ! %s ! filesink location=%s",
             w, h, vfr ? "0/1" : "25/1", chain, out);
    GError *ge = NULL;
    GstElement *p = gst_parse_launch(desc, &ge);
    CHECK(p && !ge, "gst_parse_launch(%s): %s", desc, ge ? ge->message : "?");
    GstElement *src = gst_bin_get_by_name(GST_BIN(p), "src");
    if (probe) {
        GstElement *el = gst_bin_get_by_name(GST_BIN(p), probe_el);
        CHECK(el, "%s: no element named %s", desc, probe_el);
        GstPad *pad = gst_element_get_static_pad(el, "src");
        gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER, probe, probe_data, NULL);
        gst_object_unref(pad);
        gst_object_unref(el);
    }
    gst_element_set_state(p, GST_STATE_PLAYING);
    for (int n = 0; n < frames; n++) {
        GstBuffer *b = gst_buffer_new_allocate(NULL, (size_t)w * h * 3, NULL);
        GstMapInfo m;
        gst_buffer_map(b, &m, GST_MAP_WRITE);
        draw(m.data, n);
        gst_buffer_unmap(b, &m);
        GST_BUFFER_PTS(b) = frame_time(n, vfr);
        GST_BUFFER_DURATION(b) = frame_time(n + 1, vfr) - frame_time(n, vfr);
        CHECK(gst_app_src_push_buffer(GST_APP_SRC(src), b) == GST_FLOW_OK, "%s: push frame %d", out, n);
    }
    gst_app_src_end_of_stream(GST_APP_SRC(src));
    gst_object_unref(src);
    char what[1200];
    snprintf(what, sizeof what, "encoding %s", out);
    play_to_eos(p, what);
}
static __attribute__((unused)) void encode_frames(const char *out, const char *chain, int w, int h, int frames,
                                                  int vfr, void (*draw)(uint8_t *rgb, int n)) {
    encode_frames_probed(out, chain, w, h, frames, vfr, draw, NULL, NULL, NULL);
}

// The number a decoded frame of any size shows as 4 columns x rows of blocks, bit i in column
// i % 4, row i / 4 (block centres, luma threshold).
static __attribute__((unused)) int read_blocks(const uint8_t *rgb, int w, int h, int rows) {
    int n = 0;
    for (int bit = 0; bit < 4 * rows; bit++) {
        int bx = bit % 4, by = bit / 4;
        int cx = (2 * bx + 1) * w / 8, cy = (2 * by + 1) * h / (2 * rows);
        int sum = 0, cnt = 0;
        for (int y = cy - h / (8 * rows); y <= cy + h / (8 * rows); y++)
            for (int x = cx - w / 32; x <= cx + w / 32; x++) {
                const uint8_t *p = rgb + ((size_t)y * w + x) * 3;
                sum += p[0] + p[1] + p[2];
                cnt += 3;
            }
        if (sum / cnt > 128) n |= 1 << bit;
    }
    return n;
}

// Read a whole file into memory (caller frees); *n gets its size.  A failure ends the test.
static __attribute__((unused)) char *slurp(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    CHECK(fp, "%s", path);
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *data = malloc(size);
    CHECK(data && fread(data, 1, size, fp) == (size_t)size, "%s", path);
    fclose(fp);
    *n = size;
    return data;
}

// Decoder options of a size mode (VM_DEC_EXACT: a x b, VM_DEC_SHORT_SIDE: a), with the frame index
// cached in the test directory.
static __attribute__((unused)) vm_decoder_options opts(int mode, int a, int b) {
    vm_decoder_options o;
    vm_decoder_options_default(&o);
    o.size_mode = mode;
    if (mode == VM_DEC_EXACT) { o.width = a; o.height = b; }
    if (mode == VM_DEC_SHORT_SIDE) o.short_side = a;
    static char cache[1100];
    snprintf(cache, sizeof cache, "%s/index-cache", vt_tmpdir());
    o.index_cache = cache;
    return o;
}
