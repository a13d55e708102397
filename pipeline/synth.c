// pipeline/synth.c — procedural labeled videos (see synth.h).
#include "pipeline/synth.h"
#include <errno.h>
#include <gst/app/gstappsrc.h>
#include <gst/gst.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/io.h"
#include "common/rng.h"

static const char *class_names[VM_SYNTH_CLASSES] = {"0-disc", "1-square", "2-triangle", "3-cross"};

void vm_synth_opts_default(vm_synth_opts *o) {
    *o = (vm_synth_opts){.out_dir = "data/synth", .videos = 64, .width = 128, .height = 128, .frames = 48,
                         .fps = 12, .seed = 0};
}

const char *vm_synth_class_name(int label) {
    return label >= 0 && label < VM_SYNTH_CLASSES ? class_names[label] : "?";
}

// Everything random about one video, drawn once from its stream.
typedef struct {
    int label, nobj;
    float bg_a[3], bg_b[3];       // background colours
    float bg_fx, bg_fy, bg_phase; // background texture frequencies
    float cam_vx, cam_vy, cam_wob;// camera pan (pixels/frame) and wobble
    struct {
        float x, y, vx, vy, r;    // centre, velocity, radius
        float col_a[3], col_b[3]; // texture colours
        float tex_f, angle, spin; // texture frequency, orientation, rotation per frame
    } obj[2];
} scene;

static void draw_scene(const vm_synth_opts *o, int id, scene *s) {
    vm_rng r;
    vm_rng_init(&r, o->seed, vm_rng_stream(VM_RNG_SYNTH, (uint64_t)id, 0, 0));
    memset(s, 0, sizeof *s);
    s->label = id % VM_SYNTH_CLASSES;
    for (int c = 0; c < 3; c++) {
        s->bg_a[c] = (float)vm_rng_range(&r, 0.1, 0.6);
        s->bg_b[c] = (float)vm_rng_range(&r, 0.2, 0.8);
    }
    s->bg_fx = (float)vm_rng_range(&r, 0.03, 0.15);
    s->bg_fy = (float)vm_rng_range(&r, 0.03, 0.15);
    s->bg_phase = (float)vm_rng_range(&r, 0, 6.283);
    s->cam_vx = (float)vm_rng_range(&r, -2.5, 2.5);
    s->cam_vy = (float)vm_rng_range(&r, -1.5, 1.5);
    s->cam_wob = (float)vm_rng_range(&r, 0, 3);
    s->nobj = 1 + (vm_rng_uniform(&r) < 0.35);
    float W = (float)o->width, H = (float)o->height, m = W < H ? W : H;
    for (int k = 0; k < s->nobj; k++) {
        s->obj[k].r = (float)vm_rng_range(&r, 0.14, 0.26) * m;
        s->obj[k].x = (float)vm_rng_range(&r, 0.25, 0.75) * W;
        s->obj[k].y = (float)vm_rng_range(&r, 0.25, 0.75) * H;
        float sp = (float)vm_rng_range(&r, 0.8, 2.5), th = (float)vm_rng_range(&r, 0, 6.283);
        s->obj[k].vx = sp * cosf(th);
        s->obj[k].vy = sp * sinf(th);
        for (int c = 0; c < 3; c++) {
            s->obj[k].col_a[c] = (float)vm_rng_range(&r, 0.5, 1.0);
            s->obj[k].col_b[c] = (float)vm_rng_range(&r, 0.0, 0.4);
        }
        s->obj[k].tex_f = (float)vm_rng_range(&r, 0.25, 0.5);
        s->obj[k].angle = (float)vm_rng_range(&r, 0, 6.283);
        s->obj[k].spin = (float)vm_rng_range(&r, -0.08, 0.08);
    }
}

// Reflect a coordinate into [lo, hi] (objects bounce off the frame's edges).
static float bounce(float p, float lo, float hi) {
    float span = hi - lo;
    if (span <= 0) return lo;
    float t = fmodf(p - lo, 2 * span);
    if (t < 0) t += 2 * span;
    return lo + (t <= span ? t : 2 * span - t);
}

// Inside test and texture value in [0, 1] for a point (u, v) in the object's rotated frame,
// both scaled by its radius (|u|, |v| <= 1 near the shape).
static int shape_inside(int label, float u, float v) {
    switch (label) {
    case 0: return u * u + v * v <= 1.0f;                                   // disc
    case 1: return fabsf(u) <= 0.8f && fabsf(v) <= 0.8f;                    // square
    case 2: return v >= -0.9f && v <= 0.6f && fabsf(u) <= (v + 0.9f) * 0.62f;  // triangle
    default: return (fabsf(u) <= 0.32f && fabsf(v) <= 0.95f) || (fabsf(v) <= 0.32f && fabsf(u) <= 0.95f); // cross
    }
}

static float texture(int label, float u, float v, float f) {
    switch (label) {
    case 0: return 0.5f + 0.5f * sinf(u * f * 12.0f);                       // stripes
    case 1: return ((int)floorf((u + 2) * f * 6) + (int)floorf((v + 2) * f * 6)) & 1 ? 1.0f : 0.0f; // checker
    case 2: {                                                                // dots
        float a = u * f * 8, b = v * f * 8;
        float du = a - floorf(a) - 0.5f, dv = b - floorf(b) - 0.5f;
        return du * du + dv * dv < 0.09f ? 1.0f : 0.0f;
    }
    default: return 0.5f + 0.5f * sinf(sqrtf(u * u + v * v) * f * 18.0f);   // rings
    }
}

void vm_synth_render(const vm_synth_opts *o, int id, int frame, uint8_t *rgb) {
    scene s;
    draw_scene(o, id, &s);
    int W = o->width, H = o->height;
    float t = (float)frame;
    float camx = s.cam_vx * t + s.cam_wob * sinf(t * 0.3f), camy = s.cam_vy * t + s.cam_wob * cosf(t * 0.23f);
    float ox[2], oy[2], oc[2], os[2];
    for (int k = 0; k < s.nobj; k++) {
        float r = s.obj[k].r;
        ox[k] = bounce(s.obj[k].x + s.obj[k].vx * t, r, W - r);
        oy[k] = bounce(s.obj[k].y + s.obj[k].vy * t, r, H - r);
        oc[k] = cosf(s.obj[k].angle + s.obj[k].spin * t);
        os[k] = sinf(s.obj[k].angle + s.obj[k].spin * t);
    }
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            // Background in world coordinates: the camera pans over it.
            float wx = x + camx, wy = y + camy;
            float b = 0.5f + 0.25f * sinf(wx * s.bg_fx + s.bg_phase) + 0.25f * sinf(wy * s.bg_fy + 0.7f * sinf(wx * 0.05f));
            float px[3];
            for (int c = 0; c < 3; c++) px[c] = s.bg_a[c] * (1 - b) + s.bg_b[c] * b;
            for (int k = 0; k < s.nobj; k++) {
                float dx = (x - ox[k]) / s.obj[k].r, dy = (y - oy[k]) / s.obj[k].r;
                float u = dx * oc[k] + dy * os[k], v = -dx * os[k] + dy * oc[k];
                if (!shape_inside(s.label, u, v)) continue;
                float tv = texture(s.label, u, v, s.obj[k].tex_f);
                for (int c = 0; c < 3; c++) px[c] = s.obj[k].col_a[c] * tv + s.obj[k].col_b[c] * (1 - tv);
            }
            uint8_t *p = rgb + ((size_t)y * W + x) * 3;
            for (int c = 0; c < 3; c++) {
                float v = px[c] * 255.0f + 0.5f;
                p[c] = v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
            }
        }
}

// ---- encoding ------------------------------------------------------------------------------------

static pthread_once_t gst_once = PTHREAD_ONCE_INIT;
static int gst_ok;
static void gst_init_once(void) { gst_ok = gst_init_check(NULL, NULL, NULL); }

static int encode_video(const vm_synth_opts *o, int id, const char *path, uint8_t *frame, vm_error *err) {
    char desc[1024];
    // x264: one thread and no B-frames keep the output a pure function of the input; a keyframe
    // every fps frames keeps random access cheap for the decoder.
    snprintf(desc, sizeof desc,
             "appsrc name=src format=time caps=video/x-raw,format=RGB,width=%d,height=%d,framerate=%d/1 "
             "! videoconvert ! video/x-raw,format=I420 ! x264enc threads=1 bframes=0 key-int-max=%d "
             "pass=qual quantizer=26 speed-preset=veryfast ! h264parse ! mp4mux ! filesink location=\"%s\"",
             o->width, o->height, o->fps, o->fps, path);
    GError *ge = NULL;
    GstElement *pipe = gst_parse_launch(desc, &ge);
    if (!pipe || ge) {
        int rc = vm_fail(err, VM_EUNSUPPORTED, "synth: cannot build the encoder (%s); install gstreamer1.0-plugins-ugly "
                                              "(x264enc) and gstreamer1.0-plugins-good (mp4mux)",
                         ge ? ge->message : "?");
        if (ge) g_error_free(ge);
        if (pipe) gst_object_unref(pipe);
        return rc;
    }
    GstElement *src = gst_bin_get_by_name(GST_BIN(pipe), "src");
    gst_element_set_state(pipe, GST_STATE_PLAYING);
    size_t fb = (size_t)o->width * o->height * 3;
    int rc = 0;
    for (int f = 0; f < o->frames && !rc; f++) {
        vm_synth_render(o, id, f, frame);
        GstBuffer *buf = gst_buffer_new_memdup(frame, fb);
        GST_BUFFER_PTS(buf) = gst_util_uint64_scale(f, GST_SECOND, o->fps);
        GST_BUFFER_DURATION(buf) = gst_util_uint64_scale(1, GST_SECOND, o->fps);
        if (gst_app_src_push_buffer(GST_APP_SRC(src), buf) != GST_FLOW_OK)
            rc = vm_fail(err, VM_EIO, "synth: %s: the encoder refused frame %d", path, f);
    }
    gst_app_src_end_of_stream(GST_APP_SRC(src));
    GstBus *bus = gst_element_get_bus(pipe);
    GstMessage *msg = gst_bus_timed_pop_filtered(bus, 30 * GST_SECOND, GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
    if (!msg) {
        if (!rc) rc = vm_fail(err, VM_ETIMEOUT, "synth: %s: the encoder did not finish in 30 s", path);
    } else {
        if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR && !rc) {
            GError *e = NULL;
            gst_message_parse_error(msg, &e, NULL);
            rc = vm_fail(err, VM_EIO, "synth: %s: %s", path, e ? e->message : "encoder error");
            if (e) g_error_free(e);
        }
        gst_message_unref(msg);
    }
    gst_object_unref(bus);
    gst_element_set_state(pipe, GST_STATE_NULL);
    gst_object_unref(src);
    gst_object_unref(pipe);
    return rc;
}

// mp4mux stamps the wall-clock time into the mvhd/tkhd/mdhd boxes; zero those fields so that the
// file is a pure function of the options.  Walks moov -> trak -> mdia (the boxes holding them).
static void zero_times(uint8_t *p, size_t n) {
    size_t off = 0;
    while (off + 8 <= n) {
        uint64_t size = (uint64_t)p[off] << 24 | p[off + 1] << 16 | p[off + 2] << 8 | p[off + 3];
        if (size < 8 || size > n - off) return;
        const uint8_t *type = p + off + 4;
        if (!memcmp(type, "moov", 4) || !memcmp(type, "trak", 4) || !memcmp(type, "mdia", 4)) {
            zero_times(p + off + 8, size - 8);
        } else if ((!memcmp(type, "mvhd", 4) || !memcmp(type, "tkhd", 4) || !memcmp(type, "mdhd", 4)) && size >= 28) {
            int v1 = p[off + 8] == 1;  // version 1: 64-bit times
            memset(p + off + 12, 0, v1 ? 16 : 8);
        }
        off += size;
    }
}

static int normalise_file(const char *path, vm_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return vm_fail(err, VM_EIO, "synth: %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = n > 0 ? malloc(n) : NULL;
    int ok = buf && fread(buf, 1, n, f) == (size_t)n;
    fclose(f);
    if (!ok) { free(buf); return vm_fail(err, VM_EIO, "synth: %s: cannot read it back", path); }
    zero_times(buf, (size_t)n);
    int rc = vm_write_file_atomic(path, buf, (size_t)n, err);
    free(buf);
    return rc;
}

int vm_synth_generate(const vm_synth_opts *o, vm_error *err) {
    if (o->videos < 1 || o->width < 16 || o->height < 16 || o->frames < 2 || o->fps < 1 || o->width % 2 || o->height % 2)
        return vm_fail(err, VM_EINVAL, "synth: need videos >= 1, even width and height >= 16, frames >= 2, fps >= 1");
    pthread_once(&gst_once, gst_init_once);
    if (!gst_ok) return vm_fail(err, VM_EUNSUPPORTED, "synth: GStreamer failed to initialise");
    int rc = vm_mkdirs(o->out_dir, err);
    for (int c = 0; c < VM_SYNTH_CLASSES && !rc; c++) {
        char d[4096];
        snprintf(d, sizeof d, "%s/%s", o->out_dir, class_names[c]);
        rc = vm_mkdirs(d, err);
    }
    if (rc) return rc;
    uint8_t *frame = malloc((size_t)o->width * o->height * 3);
    char *man = NULL, *tr = NULL, *va = NULL;
    size_t manl = 0, trl = 0, val = 0;
    FILE *fm = open_memstream(&man, &manl), *ft = open_memstream(&tr, &trl), *fv = open_memstream(&va, &val);
    if (!frame || !fm || !ft || !fv) rc = vm_fail(err, VM_ENOMEM, "synth: out of memory");
    for (int id = 0; id < o->videos && !rc; id++) {
        int label = id % VM_SYNTH_CLASSES;
        char rel[64], path[4096];
        snprintf(rel, sizeof rel, "%s/%04d.mp4", class_names[label], id);
        snprintf(path, sizeof path, "%s/%s", o->out_dir, rel);
        rc = encode_video(o, id, path, frame, err);
        if (!rc) rc = normalise_file(path, err);
        fprintf(fm, "%s %d %d\n", rel, label, id);
        fprintf(id % 4 == 3 ? fv : ft, "%s %d %d\n", rel, label, id);
    }
    if (fm) fclose(fm);
    if (ft) fclose(ft);
    if (fv) fclose(fv);
    char cls[256] = "";
    size_t cl = 0;
    for (int c = 0; c < VM_SYNTH_CLASSES; c++) cl += snprintf(cls + cl, sizeof cls - cl, "%s\n", class_names[c]);
    const struct { const char *name; const char *data; size_t len; } files[] = {
        {"train.txt", tr, trl}, {"val.txt", va, val}, {"classes.txt", cls, cl},
        {"manifest.txt", man, manl},  // last: its presence means the dataset is complete
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0] && !rc; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", o->out_dir, files[i].name);
        rc = vm_write_file_atomic(p, files[i].data, files[i].len, err);
    }
    free(man);
    free(tr);
    free(va);
    free(frame);
    return rc;
}
