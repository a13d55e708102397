// decoder/decoder.c — see decoder.h.
//
// Two kinds of pipeline:
//   index:  source -> parsebin -> appsink (video packets: PTS, keyframe flag; no pixel decoded)
//           source -> decodebin -> appsink (decoded pictures at native size: the first 16, to
//                                          check where and how decoding starts, or all of them when
//                                          the packets carry no usable timestamps)
//   decode: uridecodebin -> [want probe] videoconvertscale -> capsfilter I420 -> appsink, then
//           libyuv scale + rotation (the orientation tag) + RGB in copy_sample
// AVI gives no PTS to reordered pictures, and GStreamer's decoders then invent wrong times: MPEG-4
// Part 2 with B-frames is indexed by display order from the VOP types (index_from_vops, read by
// counting pictures after a seek), H.264 by the order the decoder gives its pictures, each naming
// its packet (index_from_h264_order, read by stamping the packets with their pictures' times).
// Every wait is bounded: samples are pulled with a short timeout while the bus is polled for errors,
// and no progress for timeout_ms is VM_ETIMEOUT.
#include "decoder/decoder.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <gst/app/gstappsink.h>
#include <gst/gst.h>
#include <gst/pbutils/pbutils.h>
#include <gst/video/video.h>
#include <libyuv/convert_argb.h>
#include <libyuv/rotate.h>
#include <libyuv/scale.h>
#include <xxhash.h>

#include "common/io.h"
#include "common/log.h"
#include "decoder/bitstream.h"

#define POLL_NS (20 * GST_MSECOND)
// A seek costs a flush, a demuxer index lookup and decoder restart: about this many decoded frames.
#define SEEK_COST_FRAMES 4
enum { DRAIN_OFF, DRAIN_ARMED, DRAIN_SEEN, DRAIN_SENT };
// Drain only decoders whose output delay averages this many packets: below it, the seek a drained
// pipeline needs to go on costs more than the packets it saves (see read_frames).
#define DRAIN_MIN_DELAY 4
#define RECENT 32 // > the largest output delay (16 pictures for H.264) plus what the appsink holds
// 005: the orientation gained its mirror flag (flip-rotate-* tags, before cached as no rotation)
// 006: MPEG-4 Part 2 B-frames in AVI are indexed by ordinal (header flag + seek times)
// 007: H.264 in AVI is indexed by decode order (ordinal 2 + each packet's display index)
// 008: DivX 3 (MS-MPEG4v3) AVI indexed from its packets (keyframe flags; was a decode pass)
// 009: keyed by ctime and inode too (header fields ctime_ns, ino)
#define INDEX_MAGIC "VMIDX009"
// Pictures decoded at index time to check the head of the stream against the index.
#define HEAD_FRAMES 16

// ---- gst_init once --------------------------------------------------------------------------
static pthread_once_t gst_once = PTHREAD_ONCE_INIT;
static int gst_ok;
static GstCaps *src_meta_caps; // the index decode pass's packet meta (src_meta_probe)
static void gst_init_once(void) {
    GError *e = NULL;
    gst_ok = gst_init_check(NULL, NULL, &e);
    if (e) g_error_free(e);
    if (gst_ok) gst_pb_utils_init();
    if (gst_ok) src_meta_caps = gst_caps_new_empty_simple("timestamp/x-vicmae-packet");
}

void vm_decoder_options_default(vm_decoder_options *o) {
    memset(o, 0, sizeof *o);
    o->size_mode = VM_DEC_NATIVE;
    o->hw = VM_DEC_HW_AUTO;
    o->timeout_ms = 10000;
    o->threads = 1;
}

// The demuxers of a pipeline, watched for one that gave up (see demux_gave_up).
#define MAX_DEMUX 4
typedef struct {
    GMutex lock;
    GstElement *el[MAX_DEMUX]; // refs
    int n;
} demux_watch;

struct vm_decoder {
    char *uri;                // file:// or any URI
    char *path;               // local path when a file (cache key), else NULL
    char name[256];           // for messages: the path or URI as the caller gave it
    vm_decoder_options opt;
    char cache_dir[1024];
    vm_video_info info;
    int64_t *pts;             // [frames] owned
    uint8_t *key;             // [frames] owned
    uint8_t *bad;             // [frames] owned, may be NULL: 1 = the decoder's timestamps cannot
                              // identify this frame (damaged start), reading it is an error
    int64_t *from;            // [frames] owned: frame to seek to so that frame i decodes (a keyframe,
                              // the one before when i is a leading picture of an open GOP)
    char source[16];
    int ordinal;              // 0: pictures are identified by the PTS the demuxer gave; AVI, whose
                              // packets carry no PTS (GStreamer's decoded times are wrong):
                              // 1 (MPEG-4 Part 2 with B-frames) by their rank after a seek,
                              // 2 (H.264) by the PTS stamped on their packet (h264_order_stamp)
    int64_t *order;           // [frames] owned when ordinal 2: the display index of the j-th packet
                              // in decode order (whose decode time is pts[j])
    gint lost;                // ordinal 2: a packet not in the index reached the decoder (atomic)
    int64_t *seekt;           // [frames] owned when ordinal: a demuxer time inside keyframe i's
                              // packet slot (decode order), what a seek to frame i asks for
    gint64 ord_next;          // ordinal: the frame the next decoded picture is (streaming thread)
    gint64 ord_base;          // ordinal: the frame the first picture after the pending seek is
    int64_t tol;              // half the smallest gap between frames: PTS matching tolerance
    int64_t off;              // buffer timestamp - stream time (edit lists): the index and seeks use
                              // stream time, the first frame of an MP4 at 0 as ffprobe shows it

    // decode pipeline (built on the first read)
    GstElement *pipe, *conv, *sink;
    GstBus *bus;
    demux_watch demux;        // the decode pipeline's demuxers (see demux_gave_up)
    int playing;
    int clean_start;          // decoding has run from the first frame, with no seek since
    int64_t pos;              // index after the last frame pulled; -1 unknown (after a seek)
    gint64 want_pts;          // the probe drops decoded pictures before this (atomic)
    gint64 decoded;           // packets into the video decoder (atomic)
    gint64 skipped;           // non-reference packets before a wanted frame, never decoded (atomic)
    int h264_nal_len;         // streaming thread: -1 not H.264, 0 byte-stream, 1-4 avc length size
    // Drain (see read_frames): once the packet of a frame read last before a seek (or at the end
    // of a random read) is in the decoder, the next packet is replaced by EOS, so the decoder
    // outputs its pending pictures at once instead of decoding its output delay worth of packets
    // past the frame (up to 15: H.264 whose SPS declares a deep reorder buffer, or none, which
    // libavcodec then guesses from the POCs).  The pipeline then needs a seek to go on.
    gint drain_state;         // DRAIN_* (atomic; the streaming thread moves it forward)
    gint64 drain_pts;         // stream time of the frame whose packet triggers the drain, -1 none (atomic)
    int no_drain;             // never drain this decoder: a drained read missed its frame, or the
                              // stream looks damaged (corrupted or unmatched pictures)
    gint64 want_in, want_out; // packets into the decoder when the wanted frame's packet went in and
                              // when its picture came out (streaming thread; -1 not yet)
    int64_t recent[RECENT];   // streaming thread: stream times of the last packets into the decoder
    int64_t nrecent;          // since the last seek (recent[] is a ring of the last RECENT)
    int64_t delay_sum, delay_n; // output delays (want_out - want_in) measured on undrained reads
    int64_t cont_pos;         // pos the pipeline would have had without the last call's drain
    GstCaps *cur_caps;
    GstVideoInfo vinfo;
    uint8_t *yuv;             // scaled I420 scratch, yuv_cap bytes
    size_t yuv_cap;
    uint8_t *rot;             // rotated I420 scratch (upright, out_width x out_height), rot_cap bytes
    size_t rot_cap;
    vm_decoder_stats st;
};

// ---- shared pipeline helpers ------------------------------------------------------------------
static int is_video_caps(const GstCaps *caps) {
    if (!caps || gst_caps_is_empty(caps) || gst_caps_is_any(caps)) return 0;
    const char *n = gst_structure_get_name(gst_caps_get_structure(caps, 0));
    return g_str_has_prefix(n, "video/") || g_str_has_prefix(n, "image/");
}

// Map a GStreamer error message to a vm_error naming the file and the reason.
static int fail_gst_error(vm_error *err, const char *name, GstMessage *msg, const char *missing) {
    GError *ge = NULL;
    gchar *dbg = NULL;
    gst_message_parse_error(msg, &ge, &dbg);
    int code = VM_EIO;
    if (ge->domain == GST_RESOURCE_ERROR) {
        code = ge->code == GST_RESOURCE_ERROR_NOT_FOUND ? VM_ENOTFOUND : VM_EIO;
    } else if (ge->domain == GST_STREAM_ERROR) {
        if (ge->code == GST_STREAM_ERROR_CODEC_NOT_FOUND || ge->code == GST_STREAM_ERROR_WRONG_TYPE)
            code = VM_EUNSUPPORTED;
        else
            code = VM_ECORRUPT; // TYPE_NOT_FOUND (garbage, empty), DEMUX, DECODE, FORMAT, FAILED
    } else if (ge->domain == GST_CORE_ERROR && ge->code == GST_CORE_ERROR_MISSING_PLUGIN) {
        code = VM_EUNSUPPORTED;
    }
    const char *src = GST_MESSAGE_SRC(msg) ? GST_OBJECT_NAME(GST_MESSAGE_SRC(msg)) : "?";
    if (missing && missing[0])
        vm_fail(err, code, "%s: %s (missing plugin: %s) [%s]", name, ge->message, missing, src);
    else
        vm_fail(err, code, "%s: %s [%s]", name, ge->message, src);
    g_error_free(ge);
    g_free(dbg);
    return code;
}

// Collect what the bus says besides errors: missing plugins and tags.
typedef struct {
    char missing[256];
    char container[64];
    char vcodec[64];
    int oriented;             // an image-orientation tag was seen (rotate-0 included)
    int rotation, flip;       // as vm_video_info
} bus_notes;

static void note_message(bus_notes *n, GstMessage *msg) {
    if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ELEMENT && gst_is_missing_plugin_message(msg)) {
        gchar *desc = gst_missing_plugin_message_get_description(msg);
        if (desc && !n->missing[0]) snprintf(n->missing, sizeof n->missing, "%s", desc);
        g_free(desc);
    } else if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_TAG) {
        GstTagList *tags = NULL;
        gst_message_parse_tag(msg, &tags);
        gchar *s = NULL;
        if (!n->container[0] && gst_tag_list_get_string(tags, GST_TAG_CONTAINER_FORMAT, &s))
            snprintf(n->container, sizeof n->container, "%s", s);
        g_free(s);
        s = NULL;
        if (!n->vcodec[0] && gst_tag_list_get_string(tags, GST_TAG_VIDEO_CODEC, &s))
            snprintf(n->vcodec, sizeof n->vcodec, "%s", s);
        g_free(s);
        s = NULL;
        // "rotate-N": turn the decoded picture N degrees clockwise to show it; "flip-rotate-N":
        // mirror it left-right first (GStreamer's tag definition; qtdemux maps the tkhd matrix to
        // these, EXIF orientation 2-8 map to the same).  Anything else is left as no orientation.
        if (gst_tag_list_get_string(tags, GST_TAG_IMAGE_ORIENTATION, &s)) {
            const char *r = s;
            int flip = g_str_has_prefix(r, "flip-");
            if (flip) r += 5;
            int deg = !strcmp(r, "rotate-0") ? 0 : !strcmp(r, "rotate-90") ? 90 : !strcmp(r, "rotate-180") ? 180
                      : !strcmp(r, "rotate-270") ? 270 : -1;
            if (deg >= 0) {
                n->oriented = 1;
                n->rotation = deg;
                n->flip = flip;
            }
        }
        g_free(s);
        gst_tag_list_unref(tags);
    }
}

// decodebin's autoplug-select: never decode audio (we ignore it), and skip hardware decoders
// when hw = off.  Values are GstAutoplugSelectResult (0 try, 1 expose, 2 skip).
static gint autoplug_select(GstElement *bin, GstPad *pad, GstCaps *caps, GstElementFactory *f, gpointer hw_off) {
    const char *klass = gst_element_factory_get_metadata(f, GST_ELEMENT_METADATA_KLASS);
    if (klass && strstr(klass, "Decoder") && strstr(klass, "Audio")) return 2;
    if (GPOINTER_TO_INT(hw_off) && klass && strstr(klass, "Hardware")) return 2;
    return 0;
}

// ---- demuxers that give up --------------------------------------------------------------------
// A demuxer that fails on its first read (an MP4 cut before its moov, a container cut inside its
// header) posts an error and pauses its task.  That error often never reaches our bus: parsebin
// and decodebin drop the errors of an element they are still plugging (until it reaches PAUSED),
// and a demuxer whose task starts on an already pooled thread (any worker after its first file)
// fails on a small file before that, so the pipeline just sits there with no pad, no error and no
// EOS.  We keep the demuxers of a pipeline and ask them: a sink pad task PAUSED with no source pad
// ever added means the demuxer found nothing it can play and will produce nothing more.  (Local
// files are read in pull mode, where the demuxer's sink pad owns the task; in push mode the error
// comes back as a flow return to the source, whose own error is not filtered.)

static void demux_watch_init(demux_watch *w) {
    memset(w, 0, sizeof *w);
    g_mutex_init(&w->lock);
}

static void demux_watch_clear(demux_watch *w) {
    for (int i = 0; i < w->n; i++) gst_object_unref(w->el[i]);
    w->n = 0;
    g_mutex_clear(&w->lock);
}

// deep-element-added (any streaming or application thread): remember demuxers.
static void demux_watch_add(demux_watch *w, GstElement *el) {
    GstElementFactory *f = gst_element_get_factory(el);
    const char *klass = f ? gst_element_factory_get_metadata(f, GST_ELEMENT_METADATA_KLASS) : NULL;
    if (!klass || !strstr(klass, "Demux")) return;
    g_mutex_lock(&w->lock);
    if (w->n < MAX_DEMUX) w->el[w->n++] = gst_object_ref(el);
    g_mutex_unlock(&w->lock);
}

static void demux_watch_added(GstBin *bin, GstBin *sub, GstElement *el, gpointer w) { demux_watch_add(w, el); }

// Name of a demuxer that gave up (copied into name[cap]), or 0 when none has.
static int demux_gave_up(demux_watch *w, char *name, size_t cap) {
    int found = 0;
    g_mutex_lock(&w->lock);
    for (int i = 0; i < w->n && !found; i++) {
        GstElement *el = w->el[i];
        GST_OBJECT_LOCK(el);
        GstPad *sp = el->sinkpads ? gst_object_ref(el->sinkpads->data) : NULL;
        int nsrc = el->numsrcpads;
        GST_OBJECT_UNLOCK(el);
        if (sp && nsrc == 0 && gst_pad_get_task_state(sp) == GST_TASK_PAUSED) {
            GstElementFactory *f = gst_element_get_factory(el);
            snprintf(name, cap, "%s", f ? gst_plugin_feature_get_name(GST_PLUGIN_FEATURE(f)) : GST_OBJECT_NAME(el));
            found = 1;
        }
        if (sp) gst_object_unref(sp);
    }
    g_mutex_unlock(&w->lock);
    return found;
}

// The error for a demuxer that gave up: its own message when it did reach the bus, else ours.
static int fail_demux_gave_up(vm_error *err, const char *name, GstBus *bus, const char *demux) {
    GstMessage *msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR);
    if (msg) {
        int rc = fail_gst_error(err, name, msg, NULL);
        gst_message_unref(msg);
        return rc;
    }
    return vm_fail(err, VM_ECORRUPT, "%s: truncated or damaged container: the demuxer (%s) stopped without "
                   "finding a playable stream", name, demux);
}

// ---- index pass -------------------------------------------------------------------------------
typedef struct {
    GstElement *pipe, *sink;
    gint claimed;             // atomic: a video pad was chosen for the appsink
    gint linked;              // atomic: appsink linked to it and running (pulls may start)
    gint npads;               // atomic
    char other[128];          // names of non-video streams (for "no video stream" messages)
    GMutex lock;
} ix_ctx;

static void ix_pad_added(GstElement *el, GstPad *pad, gpointer data) {
    ix_ctx *c = data;
    GstCaps *caps = gst_pad_get_current_caps(pad);
    if (!caps) caps = gst_pad_query_caps(pad, NULL);
    g_atomic_int_inc(&c->npads);
    if (is_video_caps(caps) && g_atomic_int_compare_and_exchange(&c->claimed, 0, 1)) {
        gst_bin_add(GST_BIN(c->pipe), c->sink);
        gst_element_sync_state_with_parent(c->sink);
        GstPad *sp = gst_element_get_static_pad(c->sink, "sink");
        gst_pad_link(pad, sp);
        gst_object_unref(sp);
        // Only now: an appsink not yet started answers is_eos = TRUE, which the index loop would
        // take for the end of a stream that has not begun (seen under load as "no picture").
        g_atomic_int_set(&c->linked, 1);
    } else {
        // Other streams go to a fakesink so that the demuxer never sees not-linked.
        g_mutex_lock(&c->lock);
        if (caps && !gst_caps_is_empty(caps) && strlen(c->other) < sizeof c->other - 40) {
            if (c->other[0]) strcat(c->other, ", ");
            strncat(c->other, gst_structure_get_name(gst_caps_get_structure(caps, 0)), 32);
        }
        g_mutex_unlock(&c->lock);
        GstElement *fs = gst_element_factory_make("fakesink", NULL);
        g_object_set(fs, "sync", FALSE, "async", FALSE, NULL);
        gst_bin_add(GST_BIN(c->pipe), fs);
        gst_element_sync_state_with_parent(fs);
        GstPad *sp = gst_element_get_static_pad(fs, "sink");
        gst_pad_link(pad, sp);
        gst_object_unref(sp);
    }
    if (caps) gst_caps_unref(caps);
}

typedef struct {
    int64_t *pts, *dts;
    uint8_t *key;
    uint8_t *vop;             // [n] VOP_* per packet when the stream is MPEG-4 Part 2, else NULL
    m4v_state m4v;
    int nal_len;              // parse pass, H.264: as vm_h264_scan's (0 byte-stream, 1-4 avc); else -1
    uint8_t *idr;             // [n] when H.264 (nal_len >= 0): the packet is an IDR access unit
    int64_t not_one;          // h264: packets that hold other than one picture
    int64_t not_one_at, not_one_pics; // the first of them, and its picture count
    int64_t *src;             // decode pass 2: [n] the decode time of each picture's packet, -1 unknown
    int64_t n, cap;
    GstCaps *caps;            // caps of the first sample (ref)
    GstSegment seg;           // segment of the first sample
    int have_seg;
    int64_t duration;         // container duration or -1
    bus_notes notes;
} ix_result;

static void ix_result_free(ix_result *r) {
    free(r->pts);
    free(r->dts);
    free(r->key);
    free(r->vop);
    free(r->idr);
    free(r->src);
    if (r->caps) gst_caps_unref(r->caps);
    memset(r, 0, sizeof *r);
}

static int is_m4v_caps(GstCaps *caps) {
    if (!caps || gst_caps_is_empty(caps)) return 0;
    const GstStructure *st = gst_caps_get_structure(caps, 0);
    const char *n = gst_structure_get_name(st);
    int v = 0;
    if (!strcmp(n, "video/x-xvid")) return 1;
    if (!strcmp(n, "video/x-divx")) return gst_structure_get_int(st, "divxversion", &v) && v >= 4;
    if (!strcmp(n, "video/mpeg")) {
        gboolean sys = FALSE;
        gst_structure_get_boolean(st, "systemstream", &sys);
        return gst_structure_get_int(st, "mpegversion", &v) && v == 4 && !sys;
    }
    return 0;
}

// The caps' codec_data buffer (not a ref), or NULL.
static GstBuffer *caps_codec_data(GstCaps *caps) {
    const GValue *v = gst_structure_get_value(gst_caps_get_structure(caps, 0), "codec_data");
    return v && G_VALUE_HOLDS(v, GST_TYPE_BUFFER) ? gst_value_get_buffer(v) : NULL;
}

// H.264 caps: the NAL length size of avc (1-4, from codec_data), 0 for byte-stream; -1 otherwise.
static int h264_nal_len_of(GstCaps *caps) {
    const GstStructure *st = caps && !gst_caps_is_empty(caps) ? gst_caps_get_structure(caps, 0) : NULL;
    if (!st || strcmp(gst_structure_get_name(st), "video/x-h264")) return -1;
    const char *fmt = gst_structure_get_string(st, "stream-format");
    if (fmt && !strcmp(fmt, "byte-stream")) return 0;
    GstBuffer *cd = caps_codec_data(caps);
    guint8 b4;
    return cd && gst_buffer_extract(cd, 4, &b4, 1) == 1 ? (b4 & 3) + 1 : -1;
}

// Index decode pass: every packet into the video decoder carries its decode time in a meta, which
// the decoder copies to the picture it becomes (GstVideoDecoder keeps untagged metas): so each
// decoded picture names its packet, whatever order and times the decoder gives.
static GstPadProbeReturn src_meta_probe(GstPad *pad, GstPadProbeInfo *info, gpointer data) {
    GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER(info);
    if (!b || !GST_BUFFER_DTS_IS_VALID(b)) return GST_PAD_PROBE_OK;
    b = gst_buffer_make_writable(b);
    GST_PAD_PROBE_INFO_DATA(info) = b;
    gst_buffer_add_reference_timestamp_meta(b, src_meta_caps, GST_BUFFER_DTS(b), GST_CLOCK_TIME_NONE);
    return GST_PAD_PROBE_OK;
}
static int is_video_decoder(GstElement *el) {
    GstElementFactory *f = gst_element_get_factory(el);
    const char *klass = f ? gst_element_factory_get_metadata(f, GST_ELEMENT_METADATA_KLASS) : NULL;
    return klass && strstr(klass, "Decoder") && (strstr(klass, "Video") || strstr(klass, "Image"));
}
static void ix_decoder_added(GstBin *bin, GstBin *sub, GstElement *el, gpointer data) {
    if (!is_video_decoder(el)) return;
    GstPad *sp = gst_element_get_static_pad(el, "sink");
    if (sp) {
        gst_pad_add_probe(sp, GST_PAD_PROBE_TYPE_BUFFER, src_meta_probe, NULL, NULL);
        gst_object_unref(sp);
    }
}

// Parse pass, first packet: what the codec lets the packets say of their pictures (H.264: NAL
// units, MPEG-4 Part 2: VOP headers, the VOL header in codec_data giving their layout).
static void ix_codec_of(ix_result *r) {
    r->nal_len = h264_nal_len_of(r->caps);
    if (r->nal_len >= 0 || !is_m4v_caps(r->caps)) return;
    r->m4v.active = 1;
    GstBuffer *cd = caps_codec_data(r->caps);
    GstMapInfo m;
    if (cd && gst_buffer_map(cd, &m, GST_MAP_READ)) {
        vm_m4v_scan(&r->m4v, m.data, m.size);
        gst_buffer_unmap(cd, &m);
    }
}

static int grow(void *arr, size_t cap, size_t size) { // *arr to cap elements: 0, or 1 (kept) on ENOMEM
    void **a = arr, *p = realloc(*a, cap * size);
    if (!p) return 1;
    *a = p;
    return 0;
}

// The per-packet arrays to twice their capacity: 0, or 1 on ENOMEM.
static int ix_grow(ix_result *r, int decode) {
    r->cap = r->cap ? r->cap * 2 : 1024;
    return grow(&r->pts, r->cap, sizeof *r->pts) | grow(&r->dts, r->cap, sizeof *r->dts) |
           grow(&r->key, r->cap, 1) | (decode == 2 && grow(&r->src, r->cap, sizeof *r->src)) |
           (r->nal_len >= 0 && grow(&r->idr, r->cap, 1)) | (r->m4v.active && grow(&r->vop, r->cap, 1));
}

// Parse pass: packet r->n's IDR flag and picture count (H.264) or VOP type (MPEG-4 Part 2).
static void ix_scan_packet(ix_result *r, GstBuffer *b) {
    GstMapInfo m;
    int ok = gst_buffer_map(b, &m, GST_MAP_READ);
    const uint8_t *p = ok ? m.data : NULL;
    size_t n = ok ? m.size : 0;
    if (r->idr) {
        int pics, idr;
        vm_h264_scan(p, n, r->nal_len, &pics, &idr);
        r->idr[r->n] = idr;
        if (pics != 1 && !r->not_one++) { r->not_one_at = r->n; r->not_one_pics = pics; }
    } else {
        r->vop[r->n] = ok ? vm_m4v_scan(&r->m4v, p, n) : VOP_NONE;
        if (r->vop[r->n] == VOP_B) r->m4v.bvops++;
        // mpeg4videoparse splits packed chunks: two packets, one chunk time.
        if (r->n && r->dts[r->n] >= 0 && r->dts[r->n] == r->dts[r->n - 1] && r->vop[r->n] <= VOP_S &&
            r->vop[r->n - 1] <= VOP_S)
            r->m4v.packed = 1;
    }
    if (ok) gst_buffer_unmap(b, &m);
}

// Run source -> (parsebin | decodebin) -> appsink; record up to max_samples samples (0 = all).
// decode: 0 parse pass, 1 decode pass, 2 decode pass whose pictures name their packets (r->src).
static int ix_run(vm_decoder *d, int decode, int64_t max_samples, ix_result *r, vm_error *err) {
    memset(r, 0, sizeof *r);
    r->duration = -1;
    r->nal_len = -1;
    ix_ctx c = {0};
    g_mutex_init(&c.lock);
    GError *ge = NULL;
    GstElement *src = gst_element_make_from_uri(GST_URI_SRC, d->uri, NULL, &ge);
    if (!src) {
        int rc = vm_fail(err, VM_EUNSUPPORTED, "%s: no source element for this URI (%s)", d->name,
                         ge ? ge->message : "unknown protocol");
        if (ge) g_error_free(ge);
        g_mutex_clear(&c.lock);
        return rc;
    }
    GstElement *bin = gst_element_factory_make(decode ? "decodebin" : "parsebin", NULL);
    c.sink = gst_element_factory_make("appsink", NULL);
    c.pipe = gst_pipeline_new("vm-index");
    if (!bin || !c.sink) {
        if (bin) gst_object_unref(bin);
        if (c.sink) gst_object_unref(c.sink);
        gst_object_unref(src);
        gst_object_unref(c.pipe);
        g_mutex_clear(&c.lock);
        return vm_fail(err, VM_EUNSUPPORTED, "%s: GStreamer element %s or appsink missing", d->name,
                       decode ? "decodebin" : "parsebin");
    }
    gst_object_ref_sink(c.sink); // we keep a ref: it may never be added to the pipeline
    g_object_set(c.sink, "sync", FALSE, "async", FALSE, "max-buffers", 64, "enable-last-sample", FALSE, NULL);
    gst_bin_add_many(GST_BIN(c.pipe), src, bin, NULL);
    gst_element_link(src, bin);
    g_signal_connect(bin, "pad-added", G_CALLBACK(ix_pad_added), &c);
    demux_watch dw;
    demux_watch_init(&dw);
    g_signal_connect(c.pipe, "deep-element-added", G_CALLBACK(demux_watch_added), &dw);
    if (decode == 2) g_signal_connect(c.pipe, "deep-element-added", G_CALLBACK(ix_decoder_added), NULL);
    if (decode)
        g_signal_connect(bin, "autoplug-select", G_CALLBACK(autoplug_select),
                         GINT_TO_POINTER(d->opt.hw == VM_DEC_HW_OFF));
    GstBus *bus = gst_element_get_bus(c.pipe);
    int rc = 0;
    int64_t timeout = (int64_t)d->opt.timeout_ms * GST_MSECOND;
    if (gst_element_set_state(c.pipe, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
        // The error itself is on the bus (e.g. file not found); fall into the loop to read it.
    }
    gint64 last = g_get_monotonic_time();
    int eos_on_bus = 0;
    for (;;) {
        int progressed = 0;
        if (g_atomic_int_get(&c.linked)) {
            GstSample *s = gst_app_sink_try_pull_sample(GST_APP_SINK(c.sink), POLL_NS);
            if (s) {
                GstBuffer *b = gst_sample_get_buffer(s);
                if (!r->caps) {
                    GstCaps *cp = gst_sample_get_caps(s);
                    if (cp) r->caps = gst_caps_ref(cp);
                    const GstSegment *sg = gst_sample_get_segment(s);
                    if (sg) { r->seg = *sg; r->have_seg = 1; }
                }
                // Zero-size packets are "dropped frame" placeholders (AVI): nothing is shown.
                if (b && (decode || gst_buffer_get_size(b) > 0)) {
                    if (r->n == 0 && !decode) ix_codec_of(r);
                    if (r->n == r->cap && ix_grow(r, decode)) {
                        gst_sample_unref(s);
                        rc = vm_fail(err, VM_ENOMEM, "%s: index of %lld frames", d->name, (long long)r->n);
                        break;
                    }
                    r->pts[r->n] = GST_BUFFER_PTS_IS_VALID(b) ? (int64_t)GST_BUFFER_PTS(b) : -1;
                    r->dts[r->n] = GST_BUFFER_DTS_IS_VALID(b) ? (int64_t)GST_BUFFER_DTS(b) : -1;
                    r->key[r->n] = !GST_BUFFER_FLAG_IS_SET(b, GST_BUFFER_FLAG_DELTA_UNIT);
                    if (r->src) {
                        GstReferenceTimestampMeta *m = gst_buffer_get_reference_timestamp_meta(b, src_meta_caps);
                        r->src[r->n] = m ? (int64_t)m->timestamp : -1;
                    }
                    if (r->idr || r->vop) ix_scan_packet(r, b);
                    r->n++;
                }
                gst_sample_unref(s);
                last = g_get_monotonic_time();
                if (max_samples && r->n >= max_samples) break;
                progressed = 1;
            } else if (gst_app_sink_is_eos(GST_APP_SINK(c.sink))) {
                // An element that fails while streaming (qtdemux on a sample-table entry with a
                // bogus size) posts its error, then sends EOS: the error is on the bus by now.
                // Taking the EOS without it gave a short index or the error, by the race.
                GstMessage *em = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR);
                if (em) {
                    rc = fail_gst_error(err, d->name, em, r->notes.missing);
                    gst_message_unref(em);
                }
                break;
            }
        }
        GstMessage *msg = gst_bus_timed_pop_filtered(
            bus, (progressed || g_atomic_int_get(&c.linked)) ? 0 : POLL_NS,
            GST_MESSAGE_ERROR | GST_MESSAGE_EOS | GST_MESSAGE_TAG | GST_MESSAGE_ELEMENT);
        if (msg) {
            if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) {
                rc = fail_gst_error(err, d->name, msg, r->notes.missing);
                gst_message_unref(msg);
                break;
            }
            if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_EOS) eos_on_bus = 1;
            note_message(&r->notes, msg);
            gst_message_unref(msg);
            last = g_get_monotonic_time();
        }
        char demux[64];
        if (!g_atomic_int_get(&c.linked) && demux_gave_up(&dw, demux, sizeof demux)) {
            rc = fail_demux_gave_up(err, d->name, bus, demux);
            break;
        }
        if (eos_on_bus && !g_atomic_int_get(&c.claimed)) {
            g_mutex_lock(&c.lock);
            if (c.other[0])
                rc = vm_fail(err, VM_ENOTFOUND, "%s: no video stream (streams: %s)", d->name, c.other);
            else
                rc = vm_fail(err, VM_ECORRUPT, "%s: no stream found (empty or unreadable container)", d->name);
            g_mutex_unlock(&c.lock);
            break;
        }
        if ((g_get_monotonic_time() - last) * 1000 > timeout && d->path && !g_atomic_int_get(&c.npads)) {
            // A local file cannot stall; no stream after this long means something gave up without
            // a word.  (A demuxer that did is caught at once by demux_gave_up; this is the backstop
            // for one whose task we cannot see.)
            rc = vm_fail(err, VM_ECORRUPT, "%s: no playable stream found within %d ms (truncated or unreadable container)",
                         d->name, d->opt.timeout_ms);
            break;
        }
        if ((g_get_monotonic_time() - last) * 1000 > timeout) {
            rc = vm_fail(err, VM_ETIMEOUT, "%s: stalled: no data from the %s pipeline for %d ms", d->name,
                         decode ? "decoding" : "indexing", d->opt.timeout_ms);
            break;
        }
    }
    if (rc == 0 && !g_atomic_int_get(&c.linked))
        rc = vm_fail(err, VM_ENOTFOUND, "%s: no video stream", d->name);
    if (rc == 0) {
        gint64 dur = -1;
        if (gst_element_query_duration(c.pipe, GST_FORMAT_TIME, &dur) && dur > 0) r->duration = dur;
        // Tags posted while we were breaking out.
        GstMessage *msg;
        while ((msg = gst_bus_pop_filtered(bus, GST_MESSAGE_TAG | GST_MESSAGE_ELEMENT))) {
            note_message(&r->notes, msg);
            gst_message_unref(msg);
        }
    }
    gst_element_set_state(c.pipe, GST_STATE_NULL);
    gst_object_unref(bus);
    gst_object_unref(c.pipe);
    gst_object_unref(c.sink);
    demux_watch_clear(&dw);
    g_mutex_clear(&c.lock);
    if (rc) ix_result_free(r);
    return rc;
}

typedef struct { int64_t pts, from; uint8_t key; } pts_key;
static int cmp_pk(const void *a, const void *b) {
    const pts_key *x = a, *y = b;
    return (x->pts > y->pts) - (x->pts < y->pts);
}

static int64_t seg_offset(const ix_result *r) {
    if (!r->have_seg || r->seg.format != GST_FORMAT_TIME) return 0;
    return (int64_t)r->seg.start - (int64_t)r->seg.time;
}

// The remedy for an AVI whose pictures cannot be identified: a re-encode, which times every picture.
#define REMUX_HINT " (re-encode it: ffmpeg -i file.avi -c:v libx264 file.mp4; a stream copy to MP4 or MKV keeps pictures without a timestamp)"

// Codecs that never reorder frames: their decode order is presentation order, so a packet without
// a PTS shows at its DTS.
static int never_reorders(GstCaps *caps) {
    static const char *const names[] = {"video/x-msmpeg", "video/x-cinepak", "image/jpeg", "video/x-raw",
                                        "video/x-dv", "video/x-huffyuv", "video/x-theora", "image/png",
                                        "video/x-h263", "video/x-vp8", "video/x-vp9", "video/x-indeo"};
    if (!caps || gst_caps_is_empty(caps)) return 0;
    const GstStructure *st = gst_caps_get_structure(caps, 0);
    const char *n = gst_structure_get_name(st);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(n, names[i])) return 1;
    // DivX 3 is MS-MPEG4v3 (avidemux's caps for DIV3/MP43 AVIs): no B-frames.  Indexed from the
    // packets, it keeps the AVI's keyframe flags (a decode-pass index marks every frame a keyframe:
    // every read would be a seek).
    int v = 0;
    if (!strcmp(n, "video/x-divx") && gst_structure_get_int(st, "divxversion", &v) && v == 3) return 1;
    return 0;
}

// Sort packets into presentation order, drop duplicates and packets outside the segment (edit
// lists), and store them as the index.  Returns 0, or 1 when the timestamps are unusable.
static int index_from_packets(vm_decoder *d, const ix_result *r) {
    if (r->n == 0) return 1;
    // AVI stamps only keyframes with a PTS.  For a codec that may reorder (MPEG-4 ASP, H.264 in AVI)
    // the decoder invents the missing times, so only a decode pass knows them.
    if (!never_reorders(r->caps))
        for (int64_t i = 0; i < r->n; i++)
            if (r->pts[i] < 0) return 1;
    pts_key *pk = malloc(r->n * sizeof *pk);
    if (!pk) return 1;
    int64_t n = 0, kcur = -1, kprev = -1; // times of the last two keyframes in decode order
    for (int64_t i = 0; i < r->n; i++) {
        int64_t t = r->pts[i] >= 0 ? r->pts[i] : r->dts[i];
        if (t < 0) { free(pk); return 1; } // no timestamp at all: only a decode can tell
        pk[n].pts = t;
        pk[n].key = r->key[i];
        if (r->key[i]) { kprev = kcur; kcur = t; }
        // Decoding starts at the last keyframe in decode order, unless this picture shows before
        // that keyframe (a leading picture of an open GOP): it references the previous GOP.
        pk[n].from = kcur < 0 ? t : (t < kcur && kprev >= 0) ? kprev : kcur;
        n++;
    }
    qsort(pk, n, sizeof *pk, cmp_pk);
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        if (m && pk[i].pts == pk[m - 1].pts) { free(pk); return 1; } // two packets, one time: ambiguous
        pk[m++] = pk[i];
    }
    // Clip to the segment as the decoder does: a frame shows if [pts, next pts) meets [start, stop).
    int64_t lo = 0, hi = m;
    if (r->have_seg && r->seg.format == GST_FORMAT_TIME) {
        while (lo < hi) {
            int64_t end = lo + 1 < m ? pk[lo + 1].pts : INT64_MAX;
            if (end <= (int64_t)r->seg.start) lo++;
            else break;
        }
        if (GST_CLOCK_TIME_IS_VALID(r->seg.stop))
            while (hi > lo && pk[hi - 1].pts >= (int64_t)r->seg.stop) hi--;
    }
    d->info.frames = hi - lo;
    d->pts = malloc((hi - lo + 1) * sizeof *d->pts);
    d->key = malloc(hi - lo + 1);
    d->from = malloc((hi - lo + 1) * sizeof *d->from);
    if (!d->pts || !d->key || !d->from) { free(pk); return 1; }
    for (int64_t i = lo; i < hi; i++) {
        d->pts[i - lo] = pk[i].pts;
        d->key[i - lo] = pk[i].key;
    }
    d->off = seg_offset(r);
    for (int64_t i = lo; i < hi; i++) { // times -> indices (clipped ones -> the first frame)
        int64_t a = 0, b = hi - lo;
        while (a < b) {
            int64_t mid = (a + b) / 2;
            if (d->pts[mid] < pk[i].from) a = mid + 1;
            else b = mid;
        }
        d->from[i - lo] = a < i - lo ? a : i - lo;
    }
    for (int64_t i = 0; i < hi - lo; i++) d->pts[i] -= d->off;
    free(pk);
    return d->info.frames > 0 ? 0 : 1;
}

static void set_tolerance(vm_decoder *d);
static int64_t match_pts(const vm_decoder *d, int64_t t);

static int index_from_decode(vm_decoder *d, const ix_result *r) {
    if (r->n == 0) return 1;
    d->pts = malloc(r->n * sizeof *d->pts);
    d->key = malloc(r->n);
    d->from = malloc(r->n * sizeof *d->from);
    if (!d->pts || !d->key || !d->from) return 1;
    int64_t m = 0;
    for (int64_t i = 0; i < r->n; i++) {
        if (r->pts[i] < 0) return 1;
        if (m && r->pts[i] - seg_offset(r) <= d->pts[m - 1]) return 1; // decoders output in order
        d->pts[m] = r->pts[i] - seg_offset(r);
        d->key[m] = r->key[i];
        m++;
    }
    d->key[0] = 1;
    d->info.frames = m;
    d->off = seg_offset(r);
    for (int64_t i = 0, k = 0; i < m; i++) {
        if (d->key[i]) k = i;
        d->from[i] = k;
    }
    return 0;
}

// MPEG-4 Part 2 with B-VOPs in a container that gives no PTS (AVI): GStreamer's decoder then
// invents timestamps that repeat, and shift after a seek, so they cannot identify a picture.  The
// order can: display order follows from decode order and the VOP types (a B-VOP shows at once, an
// I/P/S-VOP when the next one arrives; an N-VOP shows nothing), frame k is the k-th picture shown,
// at k frame durations (AVI is constant-rate).  After a seek to a keyframe, libavcodec drops the
// B-VOPs that reference the previous GOP (they show before the I-VOP), so the first picture out is
// the keyframe's and the following ones come in order: read_one counts them (see want_probe).
// Packed bitstream needs nothing more: its packets, as the parser splits them, are the VOPs in
// bitstream order (vm_m4v_scan); the B packed with an I-VOP shows before it and is dropped after a seek
// like any leading B, and its N-VOP placeholders show nothing.
// `decoded` is the number of pictures a full decode gave; the index must agree.  Returns 0 or an
// error.
static int index_from_vops(vm_decoder *d, const ix_result *r, int64_t decoded, vm_error *err) {
    int64_t n = r->n, count = 0, pend = -1;
    int64_t *disp = malloc((n + 1) * sizeof *disp);
    if (!disp) return vm_fail(err, VM_ENOMEM, "%s: index of %lld packets", d->name, (long long)n);
    for (int64_t i = 0; i < n; i++) {
        disp[i] = -1;
        int t = r->vop[i];
        if (t == VOP_B) {
            disp[i] = count++;
        } else if (t == VOP_I || t == VOP_P || t == VOP_S) {
            if (pend >= 0) disp[pend] = count++;
            pend = i;
        }
    }
    if (pend >= 0) disp[pend] = count++;
    if (count != decoded || count == 0) {
        free(disp);
        return vm_fail(err, VM_EUNSUPPORTED, "%s: MPEG-4 Part 2 with B-frames and no timestamps: the VOP headers give "
                       "%lld pictures, a full decode %lld: frame-accurate access impossible%s", d->name,
                       (long long)count, (long long)decoded,
                       r->m4v.packed ? " (packed bitstream: unpack it with ffmpeg -bsf:v mpeg4_unpack_bframes)" : "");
    }
    // Frame duration: the caps' frame rate, else the smallest gap between packets.
    int fn = 0, fd = 1;
    int64_t gap = INT64_MAX;
    if (!r->caps || !gst_structure_get_fraction(gst_caps_get_structure(r->caps, 0), "framerate", &fn, &fd) ||
        fn <= 0 || fd <= 0) {
        fn = 0;
        for (int64_t i = 1; i < n; i++)
            if (r->dts[i] > r->dts[i - 1] && r->dts[i] - r->dts[i - 1] < gap) gap = r->dts[i] - r->dts[i - 1];
    }
    int64_t t0 = -1;
    for (int64_t i = 0; i < n && t0 < 0; i++) t0 = r->dts[i];
    if (t0 < 0 || (!fn && gap == INT64_MAX)) {
        free(disp);
        return vm_fail(err, VM_EUNSUPPORTED, "%s: MPEG-4 Part 2 with B-frames: packets carry neither PTS nor DTS: "
                       "frame-accurate access impossible", d->name);
    }
    d->info.frames = count;
    d->pts = malloc(count * sizeof *d->pts);
    d->key = calloc(count, 1);
    d->from = malloc(count * sizeof *d->from);
    d->seekt = malloc(count * sizeof *d->seekt);
    if (!d->pts || !d->key || !d->from || !d->seekt) {
        free(disp);
        return vm_fail(err, VM_ENOMEM, "%s: index of %lld frames", d->name, (long long)count);
    }
    for (int64_t k = 0; k < count; k++) {
        d->pts[k] = fn ? (int64_t)gst_util_uint64_scale(k, (guint64)fd * GST_SECOND, fn) : k * gap;
        d->seekt[k] = -1;
    }
    int64_t kcur = -1, kprev = -1; // display indices of the last two keyframes in decode order
    for (int64_t i = 0; i < n; i++) {
        if (r->key[i] && r->vop[i] == VOP_I && disp[i] >= 0 && r->dts[i] >= 0) {
            // The middle of the packet's slot: a seek there snaps to this packet, however the
            // demuxer rounds its own times (29.97 fps: 934266666 here, ...667 in avidemux).
            d->key[disp[i]] = 1;
            d->seekt[disp[i]] = r->dts[i] + (i + 1 < n && r->dts[i + 1] > r->dts[i] ? (r->dts[i + 1] - r->dts[i]) / 2 : 0);
            kprev = kcur;
            kcur = disp[i];
        }
        if (disp[i] < 0) continue;
        // A B-VOP shown before the keyframe that precedes it in decode order references the
        // previous GOP: decoding must start at the keyframe before.
        int64_t f = kcur < 0 ? 0 : disp[i] >= kcur ? kcur : kprev >= 0 ? kprev : 0;
        d->from[disp[i]] = f;
    }
    free(disp);
    if (!d->key[0]) { d->key[0] = 1; d->seekt[0] = t0; } // decoding from the start of the file
    for (int64_t k = 0; k < count; k++)
        if (d->from[k] > k || !d->key[d->from[k]]) d->from[k] = 0;
    d->off = 0;
    d->ordinal = 1;
    return 0;
}

// H.264 in AVI: the packets carry no PTS for reordered pictures and GStreamer's decoder then gives
// wrong times, so the order comes from the decoder itself.  Each picture of a full decode names the
// packet it was decoded from (src_meta_probe); given one picture per packet (h264_avi_check), the
// k-th picture out is frame k, at the decode time of the k-th packet (AVI is constant-rate: k / fps).
// A read stamps every packet with its picture's display time before the decoder (h264_order_stamp),
// so the pictures come out with exact times and are matched as in any timed stream.  Seek points
// are IDR access units whose packet is a keyframe and before which, in decode order, exactly the
// pictures shown before it come: decoding from there needs nothing earlier and shows the IDR first.
// Non-IDR keyframes (the I-frames of open GOPs: their leading pictures reference the GOP before)
// are no seek points: reads go back to the IDR before.  Returns 0 or an error.
static int index_from_h264_order(vm_decoder *d, const ix_result *r, const ix_result *dr, vm_error *err) {
    const int64_t n = r->n;
    if (dr->n != n)
        return vm_fail(err, VM_EUNSUPPORTED, "%s: H.264 in AVI without timestamps: %lld packets, a full decode gives %lld "
                       "pictures: frame-accurate access impossible%s", d->name, (long long)n, (long long)dr->n, REMUX_HINT);
    d->info.frames = n;
    d->pts = malloc(n * sizeof *d->pts);
    d->key = calloc(n, 1);
    d->from = malloc(n * sizeof *d->from);
    d->seekt = malloc(n * sizeof *d->seekt);
    d->order = malloc(n * sizeof *d->order);
    if (!d->pts || !d->key || !d->from || !d->seekt || !d->order)
        return vm_fail(err, VM_ENOMEM, "%s: index of %lld frames", d->name, (long long)n);
    for (int64_t j = 0; j < n; j++) {
        d->pts[j] = r->dts[j]; // frame k's time: the decode time of the k-th packet
        d->order[j] = -1;
    }
    set_tolerance(d);
    for (int64_t k = 0; k < n; k++) {
        int64_t j = dr->src[k] >= 0 ? match_pts(d, dr->src[k]) : -1;
        if (j < 0 || d->order[j] >= 0)
            return vm_fail(err, VM_EUNSUPPORTED, "%s: H.264 in AVI without timestamps: decoded picture %lld %s: "
                           "frame-accurate access impossible%s", d->name, (long long)k,
                           j < 0 ? "names no packet" : "comes from a packet already decoded", REMUX_HINT);
        d->order[j] = k;
    }
    int64_t shown = -1; // the largest display index among the packets before j
    for (int64_t j = 0; j < n; j++) {
        if (j == 0 || (r->idr[j] && r->key[j] && d->order[j] == j && shown == j - 1)) {
            d->key[j] = 1;
            d->seekt[j] = j ? r->dts[j] + (j + 1 < n ? (r->dts[j + 1] - r->dts[j]) / 2 : 0) : r->dts[0];
        } else {
            d->seekt[j] = -1;
        }
        if (d->order[j] > shown) shown = d->order[j];
    }
    for (int64_t k = 0, f = 0; k < n; k++) {
        if (d->key[k]) f = k;
        d->from[k] = f;
    }
    d->off = 0;
    d->ordinal = 2;
    return 0;
}

// H.264 in AVI: what index_from_h264_order needs of the packets (parse pass): one coded frame
// each, with distinct increasing decode times.  0 or an error.
static int h264_avi_check(vm_decoder *d, const ix_result *r, vm_error *err) {
    const GstStructure *st = gst_caps_get_structure(r->caps, 0);
    const char *cps = gst_structure_get_string(st, "coded-picture-structure");
    if (!cps || strcmp(cps, "frame"))
        return vm_fail(err, VM_EUNSUPPORTED, "%s: H.264 in AVI without timestamps, %s: frame-accurate access "
                       "impossible%s", d->name, cps ? "interlaced coding (PAFF/MBAFF: field pictures or field "
                       "macroblock pairs)" : "the parser does not say whether pictures are frames or fields",
                       REMUX_HINT);
    if (r->not_one)
        return vm_fail(err, VM_EUNSUPPORTED, "%s: H.264 in AVI without timestamps: %lld packets hold other than one "
                       "picture (packet %lld: %lld): frame-accurate access impossible%s", d->name,
                       (long long)r->not_one, (long long)r->not_one_at, (long long)r->not_one_pics, REMUX_HINT);
    for (int64_t i = 0; i < r->n; i++)
        if (r->dts[i] < 0 || (i && r->dts[i] <= r->dts[i - 1]))
            return vm_fail(err, VM_EUNSUPPORTED, "%s: H.264 in AVI without timestamps: packet %lld has %s decode "
                           "time: frame-accurate access impossible%s", d->name, (long long)i,
                           r->dts[i] < 0 ? "no" : "a repeated or decreasing", REMUX_HINT);
    return 0;
}

static void set_tolerance(vm_decoder *d) {
    int64_t gap = INT64_MAX;
    for (int64_t i = 1; i < d->info.frames; i++)
        if (d->pts[i] - d->pts[i - 1] < gap) gap = d->pts[i] - d->pts[i - 1];
    if (gap == INT64_MAX) gap = 40 * GST_MSECOND;
    d->tol = gap / 2 > 0 ? gap / 2 : 1;
}

// Index of the frame whose PTS is within tol of t, or -1.
static int64_t match_pts(const vm_decoder *d, int64_t t) {
    int64_t lo = 0, hi = d->info.frames; // first pts >= t - tol
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (d->pts[mid] < t - d->tol) lo = mid + 1;
        else hi = mid;
    }
    if (lo < d->info.frames && llabs(d->pts[lo] - t) <= d->tol) return lo;
    return -1;
}

// ---- index cache ------------------------------------------------------------------------------
// File: header | path bytes | pts[frames] int64 | from[frames] int64 | key[frames] uint8 |
// bad[frames] uint8 | (ordinal only) seekt[frames] int64 | (ordinal 2 only) order[frames] int64.
// Native byte order
// (a cache is local to a machine).  Keyed by path, size, mtime, ctime and inode through the file
// name and the header; anything that does not match is rebuilt.  mtime alone is not enough: a file
// rewritten in place with the same size and its mtime put back (cp -p, rsync -t, touch -r) kept
// the old index, and its frames were read at the old file's times (silently other pictures);
// ctime cannot be set back, and a file replaced by rename has another inode.
typedef struct {
    char magic[8];
    int64_t size, mtime_ns, ctime_ns, ino, frames, duration_ns, off;
    int32_t width, height, rotation, flip, path_len, ordinal;
    char codec[64], container[64], source[16];
} cache_header;

static void cache_file(const vm_decoder *d, const struct stat *st, char *out, size_t cap) {
    XXH64_state_t *h = XXH64_createState();
    XXH64_reset(h, 0);
    XXH64_update(h, d->path, strlen(d->path));
    int64_t k[4] = {st->st_size, (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec,
                    (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec, (int64_t)st->st_ino};
    XXH64_update(h, k, sizeof k);
    unsigned long long x = XXH64_digest(h);
    XXH64_freeState(h);
    const char *base = strrchr(d->path, '/');
    base = base ? base + 1 : d->path;
    snprintf(out, cap, "%s/%.40s.%016llx.idx", d->cache_dir, base, x);
}

// Drop the frame index (pts, keyframe flags, reference origins, unreadable marks).
static void index_free(vm_decoder *d) {
    free(d->pts);
    free(d->key);
    free(d->from);
    free(d->bad);
    free(d->seekt);
    free(d->order);
    d->seekt = NULL;
    d->order = NULL;
    d->ordinal = 0;
    d->pts = NULL;
    d->key = NULL;
    d->from = NULL;
    d->bad = NULL;
}

static int cache_load(vm_decoder *d) {
    struct stat st;
    if (!d->path || !d->cache_dir[0] || stat(d->path, &st)) return 1;
    char fn[2048];
    cache_file(d, &st, fn, sizeof fn);
    FILE *fp = fopen(fn, "rb");
    if (!fp) return 1;
    cache_header h;
    int ok = fread(&h, sizeof h, 1, fp) == 1 && !memcmp(h.magic, INDEX_MAGIC, 8) && h.size == st.st_size &&
             h.mtime_ns == (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec &&
             h.ctime_ns == (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec && h.ino == (int64_t)st.st_ino &&
             h.frames > 0 && h.frames < (1LL << 32) && h.path_len == (int32_t)strlen(d->path) &&
             h.ordinal >= 0 && h.ordinal <= 2;
    if (ok) {
        char *p = malloc(h.path_len + 1);
        ok = p && fread(p, 1, h.path_len, fp) == (size_t)h.path_len && !memcmp(p, d->path, h.path_len);
        free(p);
    }
    if (ok) {
        d->pts = malloc(h.frames * sizeof *d->pts);
        d->key = malloc(h.frames);
        d->from = malloc(h.frames * sizeof *d->from);
        ok = d->pts && d->key && d->from && fread(d->pts, sizeof *d->pts, h.frames, fp) == (size_t)h.frames &&
             fread(d->from, sizeof *d->from, h.frames, fp) == (size_t)h.frames &&
             fread(d->key, 1, h.frames, fp) == (size_t)h.frames;
        d->bad = ok ? malloc(h.frames) : NULL;
        ok = ok && d->bad && fread(d->bad, 1, h.frames, fp) == (size_t)h.frames;
        for (int64_t i = 1; ok && i < h.frames; i++) ok = d->pts[i] > d->pts[i - 1];
        for (int64_t i = 0; ok && i < h.frames; i++) ok = d->from[i] >= 0 && d->from[i] <= i;
        if (ok && h.ordinal) { // (from[] checked above: it indexes key[] here)
            d->seekt = malloc(h.frames * sizeof *d->seekt);
            ok = d->seekt && fread(d->seekt, sizeof *d->seekt, h.frames, fp) == (size_t)h.frames;
            for (int64_t i = 0; ok && i < h.frames; i++) ok = !d->key[i] || d->seekt[i] >= 0;
            for (int64_t i = 0; ok && i < h.frames; i++) ok = d->key[d->from[i]];
        }
        if (ok && h.ordinal == 2) { // a permutation of the frames
            d->order = malloc(h.frames * sizeof *d->order);
            uint8_t *seen = calloc(h.frames, 1);
            ok = d->order && seen && fread(d->order, sizeof *d->order, h.frames, fp) == (size_t)h.frames;
            for (int64_t i = 0; ok && i < h.frames; i++)
                if ((ok = d->order[i] >= 0 && d->order[i] < h.frames && !seen[d->order[i]])) seen[d->order[i]] = 1;
            free(seen);
        }
    }
    fclose(fp);
    if (!ok) {
        index_free(d);
        return 1;
    }
    h.codec[63] = h.container[63] = h.source[15] = 0;
    d->info.frames = h.frames;
    d->ordinal = h.ordinal;
    d->off = h.off;
    d->info.duration_ns = h.duration_ns;
    d->info.width = h.width;
    d->info.height = h.height;
    d->info.rotation = h.rotation;
    d->info.flip = h.flip;
    snprintf(d->info.codec, sizeof d->info.codec, "%s", h.codec);
    snprintf(d->info.container, sizeof d->info.container, "%s", h.container);
    snprintf(d->source, sizeof d->source, "cache:%s", h.source);
    return 0;
}

// Best effort: a cache that cannot be written only costs time.
static void cache_store(const vm_decoder *d) {
    struct stat st;
    if (!d->path || !d->cache_dir[0] || stat(d->path, &st)) return;
    if (vm_mkdirs(d->cache_dir, NULL)) return;
    char fn[2048];
    cache_file(d, &st, fn, sizeof fn);
    cache_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, INDEX_MAGIC, 8);
    h.size = st.st_size;
    h.mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    h.ctime_ns = (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec;
    h.ino = (int64_t)st.st_ino;
    h.frames = d->info.frames;
    h.off = d->off;
    h.duration_ns = d->info.duration_ns;
    h.width = d->info.width;
    h.height = d->info.height;
    h.rotation = d->info.rotation;
    h.flip = d->info.flip;
    h.path_len = strlen(d->path);
    h.ordinal = d->ordinal;
    snprintf(h.codec, sizeof h.codec, "%s", d->info.codec);
    snprintf(h.container, sizeof h.container, "%s", d->info.container);
    snprintf(h.source, sizeof h.source, "%s", d->source);
    // pts, from: 8 bytes a frame; key, bad: 1; seekt (ordinal), order (ordinal 2): 8
    size_t size = sizeof h + h.path_len + h.frames * (18 + (d->ordinal ? 8 : 0) + (d->ordinal == 2 ? 8 : 0));
    char *buf = malloc(size);
    if (!buf) return;
    char *p = buf;
    memcpy(p, &h, sizeof h), p += sizeof h;
    memcpy(p, d->path, h.path_len), p += h.path_len;
    memcpy(p, d->pts, h.frames * 8), p += h.frames * 8;
    memcpy(p, d->from, h.frames * 8), p += h.frames * 8;
    memcpy(p, d->key, h.frames), p += h.frames;
    if (d->bad) memcpy(p, d->bad, h.frames);
    else memset(p, 0, h.frames);
    p += h.frames;
    if (d->ordinal) memcpy(p, d->seekt, h.frames * 8), p += h.frames * 8;
    if (d->ordinal == 2) memcpy(p, d->order, h.frames * 8);
    vm_write_file_atomic(fn, buf, size, NULL);
    free(buf);
}

// ---- open -------------------------------------------------------------------------------------
static void display_size(GstCaps *caps, int *w, int *h) {
    GstVideoInfo vi;
    *w = *h = 0;
    if (!caps || !gst_video_info_from_caps(&vi, caps)) return;
    *w = vi.width;
    *h = vi.height;
    if (vi.par_n > 0 && vi.par_d > 0 && vi.par_n != vi.par_d)
        *w = (int)((double)vi.width * vi.par_n / vi.par_d + 0.5);
}

// Is there a decoder for these (parsed) caps, respecting hw = off?  Otherwise name what is missing.
static int check_decoder(vm_decoder *d, GstCaps *caps, vm_error *err) {
    const GstStructure *s = gst_caps_get_structure(caps, 0);
    if (!strcmp(gst_structure_get_name(s), "video/x-raw")) return 0;
    GList *all = gst_element_factory_list_get_elements(GST_ELEMENT_FACTORY_TYPE_DECODER, GST_RANK_MARGINAL);
    GList *ok = gst_element_factory_list_filter(all, caps, GST_PAD_SINK, FALSE);
    int found = 0;
    for (GList *l = ok; l; l = l->next) {
        const char *klass = gst_element_factory_get_metadata(l->data, GST_ELEMENT_METADATA_KLASS);
        if (d->opt.hw == VM_DEC_HW_OFF && klass && strstr(klass, "Hardware")) continue;
        found = 1;
    }
    gst_plugin_feature_list_free(ok);
    gst_plugin_feature_list_free(all);
    if (found) return 0;
    gchar *desc = gst_pb_utils_get_decoder_description(caps);
    gchar *cs = gst_caps_to_string(caps);
    int rc = vm_fail(err, VM_EUNSUPPORTED, "%s: no decoder installed for this stream (missing plugin: %s; caps %.200s)",
                     d->name, desc ? desc : "?", cs);
    g_free(desc);
    g_free(cs);
    return rc;
}

static int build_index(vm_decoder *d, vm_error *err) {
    ix_result pr, dr;
    int rc = ix_run(d, 0, 0, &pr, err);
    if (rc) return rc;
    if (pr.n == 0 || !pr.caps) { // a header and no packet: e.g. a file cut right after its header
        ix_result_free(&pr);
        return vm_fail(err, VM_ECORRUPT, "%s: truncated or damaged file: the video stream has no packet", d->name);
    }
    GstCaps *pcaps = pr.caps;
    if ((rc = check_decoder(d, pcaps, err))) { ix_result_free(&pr); return rc; }
    gchar *codec = gst_pb_utils_get_codec_description(pcaps);
    snprintf(d->info.codec, sizeof d->info.codec, "%s", codec ? codec : (pr.notes.vcodec[0] ? pr.notes.vcodec : "?"));
    g_free(codec);
    snprintf(d->info.container, sizeof d->info.container, "%s", pr.notes.container);
    d->info.rotation = pr.notes.rotation;
    d->info.flip = pr.notes.flip;
    d->info.duration_ns = pr.duration;

    // Decode the head: where does decoding really start (a damaged first keyframe yields nothing),
    // and the display size of the decoded pictures.
    int usable = index_from_packets(d, &pr) == 0;
    // Packets without PTS (AVI): MPEG-4 Part 2 with B-VOPs is indexed by display order from the VOP
    // types (index_from_vops), H.264 by the decoder's order (index_from_h264_order).
    int untimed = 0;
    for (int64_t i = 0; i < pr.n && !usable && !untimed; i++) untimed = pr.pts[i] < 0;
    int ordinal = !untimed ? 0 : pr.m4v.active && (pr.m4v.bvops || pr.m4v.packed) ? 1 : pr.nal_len >= 0 ? 2 : 0;
    if (ordinal == 2 && (rc = h264_avi_check(d, &pr, err))) {
        ix_result_free(&pr);
        return rc;
    }
    // Packed bitstream is indexed like the rest once the parser has split it into one packet per
    // VOP; a chunk left whole would have libavcodec hold its second VOP back and decode it in the
    // next packet's place (its packed-bitstream path), which the index does not model.
    if (ordinal == 1 && pr.m4v.multi) {
        ix_result_free(&pr);
        return vm_fail(err, VM_EUNSUPPORTED, "%s: MPEG-4 Part 2 packed bitstream (DivX: several VOPs per AVI chunk) "
                       "with B-frames that the parser does not split is not supported: unpack it with ffmpeg "
                       "-bsf:v mpeg4_unpack_bframes", d->name);
    }
    rc = ix_run(d, ordinal == 2 ? 2 : 1, usable ? HEAD_FRAMES : 0, &dr, err);
    if (rc) { ix_result_free(&pr); return rc; }
    if (dr.n == 0) {
        ix_result_free(&pr);
        ix_result_free(&dr);
        return vm_fail(err, VM_ECORRUPT, "%s: the decoder produced no picture", d->name);
    }
    display_size(dr.caps, &d->info.width, &d->info.height);
    if (!pr.notes.oriented && dr.notes.oriented) {
        d->info.rotation = dr.notes.rotation;
        d->info.flip = dr.notes.flip;
    }
    if (usable) {
        set_tolerance(d);
        int64_t first = match_pts(d, dr.pts[0] - seg_offset(&dr));
        if (first < 0) {
            usable = 0;
        } else if (first > 0) { // pictures before the first decodable one are never shown
            memmove(d->pts, d->pts + first, (d->info.frames - first) * sizeof *d->pts);
            memmove(d->key, d->key + first, d->info.frames - first);
            memmove(d->from, d->from + first, (d->info.frames - first) * sizeof *d->from);
            d->info.frames -= first;
            d->key[0] = 1;
            for (int64_t i = 0; i < d->info.frames; i++) d->from[i] = d->from[i] > first ? d->from[i] - first : 0;
        }
    }
    if (usable) {
        // The head must decode as the index says: pictures at index 0, 1, 2, ...  A damaged start
        // can make the decoder skip pictures and repeat timestamps (opencv-box.mp4: 0, 3, 3, 3, 4):
        // the frames in such a run cannot be told apart, so reading them is an error, never a
        // wrong picture.
        d->bad = calloc(d->info.frames, 1);
        if (!d->bad) usable = 0;
        int64_t prev = 0;
        for (int64_t k = 1; usable && k < dr.n; k++) {
            int64_t j = match_pts(d, dr.pts[k] - seg_offset(&dr));
            if (j == prev + 1) { prev = j; continue; }
            if (j < 0) break; // beyond the index or untimed: the decode pass decides nothing here
            int64_t lo = j > prev ? prev + 1 : j, hi = j > prev ? j : prev;
            for (int64_t q = lo; q <= hi; q++) d->bad[q] = 1;
            if (j > prev) prev = j;
        }
    }
    if (usable) {
        snprintf(d->source, sizeof d->source, "parse");
    } else { // full decode pass: exact by construction, costs a decode
        index_free(d);
        if (!ordinal) { // (an ordinal stream's head decode above was already a full one)
            ix_result_free(&dr);
            rc = ix_run(d, 1, 0, &dr, err);
        }
        if (!rc && ordinal)
            rc = ordinal == 2 ? index_from_h264_order(d, &pr, &dr, err) : index_from_vops(d, &pr, dr.n, err);
        else if (!rc && index_from_decode(d, &dr))
            rc = vm_fail(err, VM_EUNSUPPORTED, "%s: decoded pictures carry no usable timestamps (missing or "
                         "repeated, as GStreamer gives for B-frames in AVI): frame-accurate access impossible", d->name);
        if (rc) {
            ix_result_free(&pr);
            ix_result_free(&dr);
            return rc;
        }
        snprintf(d->source, sizeof d->source, "decode");
    }
    if (d->info.duration_ns <= 0) {
        int64_t n = d->info.frames;
        int64_t gap = n > 1 ? d->pts[n - 1] - d->pts[n - 2] : 0;
        d->info.duration_ns = d->pts[n - 1] + gap - d->pts[0];
    }
    ix_result_free(&pr);
    ix_result_free(&dr);
    return 0;
}

static void default_cache_dir(char *out, size_t cap, const char *opt) {
    out[0] = 0;
    if (opt && !strcmp(opt, "off")) return;
    if (opt && opt[0]) { snprintf(out, cap, "%s", opt); return; }
    const char *x = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (x && x[0]) snprintf(out, cap, "%s/vicmae/index", x);
    else if (home && home[0]) snprintf(out, cap, "%s/.cache/vicmae/index", home);
}

vm_decoder *vm_decoder_open(const char *uri_or_path, const vm_decoder_options *opt, vm_error *err) {
    vm_decoder_options o;
    if (opt) o = *opt;
    else vm_decoder_options_default(&o);
    if (o.timeout_ms <= 0) o.timeout_ms = 10000;
    if (o.threads <= 0) o.threads = 1;
    if (!uri_or_path || !uri_or_path[0]) { vm_fail(err, VM_EINVAL, "decoder: empty path"); return NULL; }
    if ((o.size_mode == VM_DEC_EXACT && (o.width <= 0 || o.height <= 0 || o.width > 16384 || o.height > 16384)) ||
        (o.size_mode == VM_DEC_SHORT_SIDE && (o.short_side <= 0 || o.short_side > 16384)) ||
        o.size_mode < 0 || o.size_mode > 2) {
        vm_fail(err, VM_EINVAL, "%s: bad output size (mode %d, %dx%d, short side %d)", uri_or_path, o.size_mode,
                o.width, o.height, o.short_side);
        return NULL;
    }
    pthread_once(&gst_once, gst_init_once);
    if (!gst_ok) { vm_fail(err, VM_EUNSUPPORTED, "%s: GStreamer failed to initialise", uri_or_path); return NULL; }

    vm_decoder *d = calloc(1, sizeof *d);
    if (!d) { vm_fail(err, VM_ENOMEM, "%s: decoder", uri_or_path); return NULL; }
    demux_watch_init(&d->demux);
    d->opt = o;
    d->opt.index_cache = NULL; // the string is the caller's; we keep our copy in cache_dir
    d->pos = -1;
    d->h264_nal_len = -1;
    d->drain_pts = -1;
    snprintf(d->name, sizeof d->name, "%s", uri_or_path);
    default_cache_dir(d->cache_dir, sizeof d->cache_dir, o.index_cache);
    int rc;
    if (strstr(uri_or_path, "://") && strncmp(uri_or_path, "file://", 7)) {
        d->uri = g_strdup(uri_or_path);
    } else {
        char *local = strncmp(uri_or_path, "file://", 7) ? g_strdup(uri_or_path) : g_filename_from_uri(uri_or_path, NULL, NULL);
        struct stat st;
        if (!local || stat(local, &st)) {
            rc = vm_fail(err, errno == ENOENT ? VM_ENOTFOUND : VM_EIO, "%s: %s", uri_or_path, strerror(errno));
            g_free(local);
            goto fail;
        }
        if (!S_ISREG(st.st_mode)) { g_free(local); rc = vm_fail(err, VM_EIO, "%s: not a regular file", uri_or_path); goto fail; }
        if (st.st_size == 0) { g_free(local); rc = vm_fail(err, VM_ECORRUPT, "%s: empty file", uri_or_path); goto fail; }
        d->path = realpath(local, NULL);
        g_free(local);
        if (!d->path) { rc = vm_fail(err, VM_EIO, "%s: %s", uri_or_path, strerror(errno)); goto fail; }
        d->uri = gst_filename_to_uri(d->path, NULL);
    }
    double t0 = vm_now();
    if (cache_load(d) != 0) {
        if ((rc = build_index(d, err))) goto fail;
        cache_store(d);
    }
    d->st.index_seconds = vm_now() - t0;
    set_tolerance(d);

    vm_video_info *vi = &d->info;
    vi->pts = d->pts;
    vi->keyframe = d->key;
    vi->unreadable = 0;
    for (int64_t i = 0; d->bad && i < vi->frames; i++) vi->unreadable += d->bad[i];
    vi->unreadable_at = vi->unreadable ? d->bad : NULL;
    vi->index_source = d->source;
    vi->avg_fps = vi->duration_ns > 0 ? vi->frames / (vi->duration_ns / 1e9) : 0;
    // The output is upright: sizes are those of the picture as shown, after the rotation.
    const int quarter = vi->rotation == 90 || vi->rotation == 270;
    const int uw = quarter ? vi->height : vi->width, uh = quarter ? vi->width : vi->height;
    if (o.size_mode == VM_DEC_EXACT) {
        vi->out_width = o.width;
        vi->out_height = o.height;
    } else if (o.size_mode == VM_DEC_SHORT_SIDE) {
        int n = o.short_side;
        if (uw <= uh) { vi->out_width = n; vi->out_height = (int)((double)uh * n / uw + 0.5); }
        else { vi->out_height = n; vi->out_width = (int)((double)uw * n / uh + 0.5); }
    } else {
        vi->out_width = uw;
        vi->out_height = uh;
    }
    return d;
fail:
    vm_decoder_close(d);
    return NULL;
}

const vm_video_info *vm_decoder_info(const vm_decoder *d) { return &d->info; }

void vm_decoder_stats_get(const vm_decoder *d, vm_decoder_stats *out) {
    *out = d->st;
    out->frames_decoded = __atomic_load_n(&d->decoded, __ATOMIC_RELAXED);
    out->frames_skipped = __atomic_load_n(&d->skipped, __ATOMIC_RELAXED);
}

int64_t vm_decoder_frame_at(const vm_decoder *d, int64_t t) {
    int64_t lo = 0, hi = d->info.frames; // first pts > t
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (d->pts[mid] <= t) lo = mid + 1;
        else hi = mid;
    }
    return lo > 0 ? lo - 1 : 0;
}

// ---- decode pipeline --------------------------------------------------------------------------
// Drop decoded pictures before the next wanted one before they reach the converter: skipped
// frames cost their decode only, never a colour conversion or scale.
// An ordinal MPEG-4 stream (see index_from_vops): the n-th picture since the last seek to keyframe f is
// frame f + n, whatever GStreamer stamped on it; it is stamped here with that frame's index PTS,
// so that everything downstream (and read_one) identifies it as for any other stream.
static GstPadProbeReturn want_probe(GstPad *pad, GstPadProbeInfo *info, gpointer data) {
    vm_decoder *d = data;
    GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER(info);
    if (d->ordinal == 1 && b) {
        int64_t k = __atomic_fetch_add(&d->ord_next, 1, __ATOMIC_RELAXED);
        b = gst_buffer_make_writable(b);
        GST_PAD_PROBE_INFO_DATA(info) = b;
        GST_BUFFER_PTS(b) = k < d->info.frames ? (GstClockTime)(d->pts[k] + d->off) : GST_CLOCK_TIME_NONE;
        GST_BUFFER_DTS(b) = GST_CLOCK_TIME_NONE;
        GST_BUFFER_DURATION(b) = GST_CLOCK_TIME_NONE;
    }
    int64_t want = __atomic_load_n(&d->want_pts, __ATOMIC_RELAXED);
    if (b && GST_BUFFER_PTS_IS_VALID(b) && (int64_t)GST_BUFFER_PTS(b) - d->off + d->tol < want)
        return GST_PAD_PROBE_DROP;
    if (b && GST_BUFFER_PTS_IS_VALID(b) && (int64_t)GST_BUFFER_PTS(b) - d->off - d->tol <= want)
        __atomic_store_n(&d->want_out, __atomic_load_n(&d->decoded, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
    return GST_PAD_PROBE_OK;
}

// Decoders say "matrix unknown" for untagged streams (e.g. full-range H.264 from phones: 1:0:0:0).
// Resolve it as swscale (ffmpeg, PyAV, torchvision) does: BT.601, limited range unless stated, so
// our RGB is the RGB every other tool gives for the same file.
static GstPadProbeReturn caps_probe(GstPad *pad, GstPadProbeInfo *info, gpointer data) {
    GstEvent *ev = GST_PAD_PROBE_INFO_EVENT(info);
    if (GST_EVENT_TYPE(ev) == GST_EVENT_FLUSH_STOP) { // a seek: count from its keyframe (want_probe)
        vm_decoder *d = data;
        __atomic_store_n(&d->ord_next, __atomic_load_n(&d->ord_base, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
        return GST_PAD_PROBE_OK;
    }
    if (GST_EVENT_TYPE(ev) != GST_EVENT_CAPS) return GST_PAD_PROBE_OK;
    GstCaps *caps = NULL;
    gst_event_parse_caps(ev, &caps);
    GstVideoInfo vi;
    if (!caps || !gst_video_info_from_caps(&vi, caps) || GST_VIDEO_INFO_IS_RGB(&vi)) return GST_PAD_PROBE_OK;
    GstStructure *st = gst_caps_get_structure(caps, 0);
    const char *cs = gst_structure_get_string(st, "colorimetry");
    GstVideoColorimetry c;
    if (cs && gst_video_colorimetry_from_string(&c, cs) && c.matrix != GST_VIDEO_COLOR_MATRIX_UNKNOWN)
        return GST_PAD_PROBE_OK;
    if (!cs) c = vi.colorimetry; // GStreamer's guess from the size; only its range is kept
    c.matrix = GST_VIDEO_COLOR_MATRIX_BT601;
    if (c.range == GST_VIDEO_COLOR_RANGE_UNKNOWN) c.range = GST_VIDEO_COLOR_RANGE_16_235;
    if (c.transfer == GST_VIDEO_TRANSFER_UNKNOWN) c.transfer = GST_VIDEO_TRANSFER_BT601;
    if (c.primaries == GST_VIDEO_COLOR_PRIMARIES_UNKNOWN) c.primaries = GST_VIDEO_COLOR_PRIMARIES_SMPTE170M;
    gchar *ns = gst_video_colorimetry_to_string(&c);
    GstCaps *fixed = gst_caps_copy(caps);
    gst_caps_set_simple(fixed, "colorimetry", G_TYPE_STRING, ns, NULL);
    g_free(ns);
    GstEvent *nev = gst_event_new_caps(fixed);
    gst_caps_unref(fixed);
    gst_event_unref(ev);
    GST_PAD_PROBE_INFO_DATA(info) = nev;
    return GST_PAD_PROBE_OK;
}

// An ordinal H.264 stream (see index_from_h264_order): the packet whose decode time is pts[j]
// carries the picture shown as frame order[j]; stamped with that frame's time, the decoder gives
// it to its picture.  A packet the index does not know (the file changed?) fails the read.
static GstBuffer *h264_order_stamp(vm_decoder *d, GstBuffer *b) {
    int64_t j = GST_BUFFER_DTS_IS_VALID(b) ? match_pts(d, (int64_t)GST_BUFFER_DTS(b)) : -1;
    if (j < 0) {
        g_atomic_int_set(&d->lost, 1);
        return NULL;
    }
    b = gst_buffer_make_writable(b);
    GST_BUFFER_PTS(b) = (GstClockTime)d->pts[d->order[j]];
    return b;
}

// Packets into the video decoder: counted (frames decoded), and non-reference H.264 pictures
// before the wanted frame are dropped here instead of decoded.
static GstPadProbeReturn decoder_in_probe(GstPad *pad, GstPadProbeInfo *info, gpointer data) {
    vm_decoder *d = data;
    GstBuffer *b = GST_PAD_PROBE_INFO_BUFFER(info);
    if (d->ordinal == 2 && b) {
        if (!(b = h264_order_stamp(d, b))) return GST_PAD_PROBE_DROP;
        GST_PAD_PROBE_INFO_DATA(info) = b;
    }
    int ds = g_atomic_int_get(&d->drain_state);
    if (ds != DRAIN_OFF && b && GST_BUFFER_PTS_IS_VALID(b)) {
        int64_t dt = (int64_t)GST_BUFFER_PTS(b) - d->off - __atomic_load_n(&d->drain_pts, __ATOMIC_RELAXED);
        int at_target = dt >= -d->tol && dt <= d->tol;
        if (ds == DRAIN_ARMED && !at_target) { // armed late: is the target's packet in already?
            int64_t target = __atomic_load_n(&d->drain_pts, __ATOMIC_RELAXED);
            for (int q = 0; q < RECENT && q < d->nrecent; q++)
                if (d->recent[q] - target >= -d->tol && d->recent[q] - target <= d->tol) ds = DRAIN_SEEN;
        }
        if (ds == DRAIN_ARMED && at_target) {
            g_atomic_int_set(&d->drain_state, DRAIN_SEEN);
        } else if (ds == DRAIN_SEEN && !at_target) {
            // Every packet up to the target's (decode order) is in: nothing after it is needed.
            // EOS drains the decoder; the pad is then EOS and refuses what follows (FLOW_EOS
            // stops the demuxer) until the next flushing seek.
            g_atomic_int_set(&d->drain_state, DRAIN_SENT);
            gst_pad_send_event(pad, gst_event_new_eos());
            return GST_PAD_PROBE_DROP;
        } else if (ds == DRAIN_SENT) {
            return GST_PAD_PROBE_DROP;
        }
    }
    if (d->h264_nal_len >= 0 && b && GST_BUFFER_PTS_IS_VALID(b)) {
        int64_t want = __atomic_load_n(&d->want_pts, __ATOMIC_RELAXED);
        // d->off is the container's offset; a seek's segment keeps it (see read_one)
        if ((int64_t)GST_BUFFER_PTS(b) - d->off + d->tol < want) {
            GstMapInfo m;
            if (gst_buffer_map(b, &m, GST_MAP_READ)) {
                int drop = vm_h264_is_nonref(m.data, m.size, d->h264_nal_len);
                gst_buffer_unmap(b, &m);
                if (drop) {
                    __atomic_add_fetch(&d->skipped, 1, __ATOMIC_RELAXED);
                    return GST_PAD_PROBE_DROP;
                }
            }
        }
    }
    __atomic_add_fetch(&d->decoded, 1, __ATOMIC_RELAXED);
    if (b && GST_BUFFER_PTS_IS_VALID(b)) { // the wanted frame's packet: its output delay counts from here
        d->recent[d->nrecent++ % RECENT] = (int64_t)GST_BUFFER_PTS(b) - d->off;
        int64_t dt = (int64_t)GST_BUFFER_PTS(b) - d->off - __atomic_load_n(&d->want_pts, __ATOMIC_RELAXED);
        if (dt >= -d->tol && dt <= d->tol) __atomic_store_n(&d->want_in, d->decoded, __ATOMIC_RELAXED);
    }
    return GST_PAD_PROBE_OK;
}

// Caps into the video decoder: H.264 (and its NAL length size) enables the drop above.
static GstPadProbeReturn decoder_caps_probe(GstPad *pad, GstPadProbeInfo *info, gpointer data) {
    vm_decoder *d = data;
    GstEvent *ev = GST_PAD_PROBE_INFO_EVENT(info);
    if (GST_EVENT_TYPE(ev) == GST_EVENT_FLUSH_STOP) { // a seek: the drain starts over from its packets
        d->nrecent = 0;
        g_atomic_int_set(&d->drain_state, __atomic_load_n(&d->drain_pts, __ATOMIC_RELAXED) >= 0 ? DRAIN_ARMED : DRAIN_OFF);
        return GST_PAD_PROBE_OK;
    }
    if (GST_EVENT_TYPE(ev) != GST_EVENT_CAPS) return GST_PAD_PROBE_OK;
    GstCaps *caps = NULL;
    gst_event_parse_caps(ev, &caps);
    d->h264_nal_len = h264_nal_len_of(caps);
    return GST_PAD_PROBE_OK;
}

// Every element decodebin creates: count packets into the video decoder, and give software
// decoders the configured thread count (one decoder per core by default).
static void deep_element_added(GstBin *bin, GstBin *sub, GstElement *el, gpointer data) {
    vm_decoder *d = data;
    demux_watch_add(&d->demux, el);
    if (!is_video_decoder(el)) return;
    GstPad *sp = gst_element_get_static_pad(el, "sink");
    if (sp) {
        gst_pad_add_probe(sp, GST_PAD_PROBE_TYPE_BUFFER, decoder_in_probe, d, NULL);
        gst_pad_add_probe(sp, GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM | GST_PAD_PROBE_TYPE_EVENT_FLUSH, decoder_caps_probe,
                          d, NULL);
        gst_object_unref(sp);
    }
    if (g_object_class_find_property(G_OBJECT_GET_CLASS(el), "max-threads"))
        g_object_set(el, "max-threads", d->opt.threads, NULL);
    else if (g_object_class_find_property(G_OBJECT_GET_CLASS(el), "threads"))
        g_object_set(el, "threads", d->opt.threads, NULL);
}

static void dec_pad_added(GstElement *el, GstPad *pad, gpointer data) {
    vm_decoder *d = data;
    GstCaps *caps = gst_pad_get_current_caps(pad);
    if (!caps) caps = gst_pad_query_caps(pad, NULL);
    if (is_video_caps(caps)) {
        GstPad *sp = gst_element_get_static_pad(d->conv, "sink");
        if (!gst_pad_is_linked(sp)) gst_pad_link(pad, sp);
        gst_object_unref(sp);
    }
    if (caps) gst_caps_unref(caps);
}

// Wait for the pipeline to reach its state (ASYNC_DONE) or fail: no progress (no packet into the
// decoder) for timeout_ms is a stall.
static int wait_async(vm_decoder *d, vm_error *err) {
    gint64 start = g_get_monotonic_time();
    int64_t seen = -1;
    for (;;) {
        GstMessage *msg = gst_bus_timed_pop_filtered(d->bus, POLL_NS, GST_MESSAGE_ASYNC_DONE | GST_MESSAGE_ERROR);
        if (msg) {
            int rc = 0;
            if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) rc = fail_gst_error(err, d->name, msg, NULL);
            gst_message_unref(msg);
            return rc;
        }
        char demux[64];
        if (demux_gave_up(&d->demux, demux, sizeof demux)) return fail_demux_gave_up(err, d->name, d->bus, demux);
        int64_t now_seen = __atomic_load_n(&d->decoded, __ATOMIC_RELAXED) + __atomic_load_n(&d->skipped, __ATOMIC_RELAXED);
        if (now_seen != seen) {
            seen = now_seen;
            start = g_get_monotonic_time();
        }
        if ((g_get_monotonic_time() - start) / 1000 > d->opt.timeout_ms)
            return vm_fail(err, VM_ETIMEOUT, "%s: stalled: the decoder did not preroll within %d ms", d->name,
                           d->opt.timeout_ms);
    }
}

static int build_pipeline(vm_decoder *d, vm_error *err) {
    d->pipe = gst_pipeline_new("vm-decode");
    GstElement *dec = gst_element_factory_make("uridecodebin", NULL);
    d->conv = gst_element_factory_make("videoconvertscale", NULL);
    GstElement *cf = gst_element_factory_make("capsfilter", NULL);
    d->sink = gst_element_factory_make("appsink", NULL);
    if (!dec || !d->conv || !cf || !d->sink) {
        if (dec) gst_object_unref(dec);
        if (cf) gst_object_unref(cf);
        if (d->conv) gst_object_unref(d->conv);
        if (d->sink) gst_object_unref(d->sink);
        d->conv = d->sink = NULL;
        return vm_fail(err, VM_EUNSUPPORTED, "%s: GStreamer elements uridecodebin/videoconvertscale/appsink missing",
                       d->name);
    }
    g_object_set(dec, "uri", d->uri, NULL);
    // The appsink takes I420 at the decoded size: videoconvertscale passes the decoders' usual I420
    // through untouched and converts anything else (NV12 from hardware decoders, 4:2:2, 10-bit).
    // Scaling and RGB conversion happen in copy_sample with libyuv: a box filter (antialiased)
    // in YUV, then the matrix at the small size, straight into the caller's buffer.  That is 3-4x
    // cheaper than videoconvertscale's multi-tap scaler, which cost twice the H.264 decode.
    g_object_set(d->conv, "n-threads", d->opt.threads, NULL);
    GstCaps *caps = gst_caps_new_simple("video/x-raw", "format", G_TYPE_STRING, "I420", NULL);
    g_object_set(cf, "caps", caps, NULL);
    gst_caps_unref(caps);
    g_object_set(d->sink, "sync", FALSE, "max-buffers", 2, "enable-last-sample", FALSE, NULL);
    gst_bin_add_many(GST_BIN(d->pipe), dec, d->conv, cf, d->sink, NULL);
    if (!gst_element_link_many(d->conv, cf, d->sink, NULL))
        return vm_fail(err, VM_EUNSUPPORTED, "%s: cannot link videoconvertscale to RGB %dx%d", d->name,
                       d->info.out_width, d->info.out_height);
    g_signal_connect(dec, "pad-added", G_CALLBACK(dec_pad_added), d);
    // An ordinal MPEG-4 stream is read by counting pictures after a seek, which relies on libavcodec
    // dropping the leading B-VOPs (index_from_vops), an ordinal H.264 one by the decoder keeping
    // each packet's PTS for its picture: no hardware decoder for either, whatever hw says.
    int hw_off = d->opt.hw == VM_DEC_HW_OFF || d->ordinal;
    g_signal_connect(dec, "autoplug-select", G_CALLBACK(autoplug_select), GINT_TO_POINTER(hw_off));
    g_signal_connect(d->pipe, "deep-element-added", G_CALLBACK(deep_element_added), d);
    GstPad *sp = gst_element_get_static_pad(d->conv, "sink");
    gst_pad_add_probe(sp, GST_PAD_PROBE_TYPE_BUFFER, want_probe, d, NULL);
    gst_pad_add_probe(sp, GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM | GST_PAD_PROBE_TYPE_EVENT_FLUSH, caps_probe, d, NULL);
    gst_object_unref(sp);
    d->ord_next = d->ord_base = 0;
    d->bus = gst_element_get_bus(d->pipe);
    __atomic_store_n(&d->want_pts, d->pts[0], __ATOMIC_RELAXED);
    gst_element_set_state(d->pipe, GST_STATE_PAUSED);
    int rc = wait_async(d, err);
    if (rc) return rc;
    d->pos = d->cont_pos = 0;
    d->clean_start = 1;
    return 0;
}

// Seek so that decoding starts at keyframe `from`.
static int do_seek(vm_decoder *d, int64_t from, vm_error *err) {
    // ACCURATE: the demuxer starts at the keyframe before t and the decoder clips what precedes t.
    // An ordinal stream seeks to its keyframe's own packet, with no clipping by GStreamer's times:
    // the pictures after the flush are counted from that keyframe (want_probe).
    int64_t t = d->ordinal ? d->seekt[from] : d->pts[from];
    __atomic_store_n(&d->ord_base, from, __ATOMIC_RELAXED);
    GstSeekFlags fl = GST_SEEK_FLAG_FLUSH | (d->ordinal ? GST_SEEK_FLAG_KEY_UNIT | GST_SEEK_FLAG_SNAP_BEFORE
                                                        : GST_SEEK_FLAG_ACCURATE);
    if (!gst_element_seek(d->pipe, 1.0, GST_FORMAT_TIME, fl,
                          GST_SEEK_TYPE_SET, t > 0 ? t : 0, GST_SEEK_TYPE_NONE, GST_CLOCK_TIME_NONE))
        return vm_fail(err, VM_EUNSUPPORTED, "%s: seek to %.3f s refused (stream not seekable)", d->name, t / 1e9);
    d->st.seeks++;
    d->clean_start = d->ordinal ? from == 0 : t <= d->pts[0];
    vm_debug("%s: seek to %.3f s", d->name, t / 1e9);
    d->pos = -1;
    if (!d->playing) {
        int rc = wait_async(d, err);
        if (rc) return rc;
    }
    return 0;
}

// Pull the next picture, watching the bus.  Returns 1 with *out, 0 at end of stream, or an error.
static int pull(vm_decoder *d, GstSample **out, vm_error *err) {
    gint64 start = g_get_monotonic_time();
    int64_t seen = -1;
    for (;;) {
        // Progress is any packet into the decoder: skipping to a far frame of a long GOP may pass
        // nothing to the appsink for seconds, and that is no stall.
        int64_t now_seen = __atomic_load_n(&d->decoded, __ATOMIC_RELAXED) + __atomic_load_n(&d->skipped, __ATOMIC_RELAXED);
        if (now_seen != seen) {
            seen = now_seen;
            start = g_get_monotonic_time();
        }
        GstSample *s = gst_app_sink_try_pull_sample(GST_APP_SINK(d->sink), POLL_NS);
        if (s) { *out = s; return 1; }
        GstMessage *msg = gst_bus_pop_filtered(d->bus, GST_MESSAGE_ERROR);
        if (msg) {
            int rc = fail_gst_error(err, d->name, msg, NULL);
            gst_message_unref(msg);
            return rc;
        }
        if (g_atomic_int_get(&d->lost))
            return vm_fail(err, VM_ECORRUPT, "%s: a packet that is not in the frame index reached the decoder (the "
                           "file changed since it was indexed?)", d->name);
        if (gst_app_sink_is_eos(GST_APP_SINK(d->sink))) return 0;
        if ((g_get_monotonic_time() - start) / 1000 > d->opt.timeout_ms)
            return vm_fail(err, VM_ETIMEOUT, "%s: stalled: no decoded picture for %d ms", d->name, d->opt.timeout_ms);
    }
}

// Make *buf hold at least need bytes (contents not kept).  0, or -1 when out of memory.
static int scratch(uint8_t **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    free(*buf);
    *buf = malloc(need);
    *cap = *buf ? need : 0;
    return *buf ? 0 : -1;
}

// Scale in YUV to the pre-rotation output size, turn upright, then convert to RGB once.  Both
// steps before the conversion work on the output size, so the orientation costs one copy of a
// small I420 picture, and the scale runs before the rotation so it reads the decoder's rows in
// order.  libyuv's kRotate90 is clockwise, GStreamer's "rotate-90" means "turn 90 degrees
// clockwise to show": the same number.  A left-right mirror before rotation N is a top-bottom
// mirror (libyuv reads a negative height bottom-up, at no cost) before rotation N + 180.
static int copy_sample(vm_decoder *d, GstSample *s, uint8_t *dst, vm_error *err) {
    GstCaps *caps = gst_sample_get_caps(s);
    if (caps != d->cur_caps) {
        if (!caps || !gst_video_info_from_caps(&d->vinfo, caps))
            return vm_fail(err, VM_ECORRUPT, "%s: decoded picture without video caps", d->name);
        gst_caps_replace(&d->cur_caps, caps);
    }
    // (pw, ph): the output before the orientation is applied, (w, h) transposed by a quarter turn.
    const int w = d->info.out_width, h = d->info.out_height, quarter = d->info.rotation % 180 != 0;
    const int pw = quarter ? h : w, ph = quarter ? w : h;
    const int sw = GST_VIDEO_INFO_WIDTH(&d->vinfo), sh = GST_VIDEO_INFO_HEIGHT(&d->vinfo);
    if (GST_VIDEO_INFO_FORMAT(&d->vinfo) != GST_VIDEO_FORMAT_I420)
        return vm_fail(err, VM_EUNSUPPORTED, "%s: decoded pictures are %s, expected I420", d->name,
                       gst_video_format_to_string(GST_VIDEO_INFO_FORMAT(&d->vinfo)));
    GstVideoFrame f;
    if (!gst_video_frame_map(&f, &d->vinfo, gst_sample_get_buffer(s), GST_MAP_READ))
        return vm_fail(err, VM_EIO, "%s: cannot map a decoded picture", d->name);
    const uint8_t *py = GST_VIDEO_FRAME_PLANE_DATA(&f, 0), *pu = GST_VIDEO_FRAME_PLANE_DATA(&f, 1),
                  *pv = GST_VIDEO_FRAME_PLANE_DATA(&f, 2);
    int sy = GST_VIDEO_FRAME_PLANE_STRIDE(&f, 0), su = GST_VIDEO_FRAME_PLANE_STRIDE(&f, 1),
        sv = GST_VIDEO_FRAME_PLANE_STRIDE(&f, 2);
    // Both scratch pictures hold out_width * out_height pixels (the pre-rotation one transposed).
    const size_t need = (size_t)w * h + 2 * (size_t)((w + 1) / 2) * ((h + 1) / 2);
    const int scale = sw != pw || sh != ph, rotate = d->info.rotation || d->info.flip;
    if ((scale && scratch(&d->yuv, &d->yuv_cap, need)) || (rotate && scratch(&d->rot, &d->rot_cap, need))) {
        gst_video_frame_unmap(&f);
        return vm_fail(err, VM_ENOMEM, "%s: scaling buffer of %zu bytes", d->name, need);
    }
    int rc = 0;
    if (scale) { // in YUV: (sh, sw) -> (ph, pw), chroma (ph+1)/2 x (pw+1)/2
        const int cw = (pw + 1) / 2, ch = (ph + 1) / 2;
        uint8_t *dy = d->yuv, *du = dy + (size_t)pw * ph, *dv = du + (size_t)cw * ch;
        rc = I420Scale(py, sy, pu, su, pv, sv, sw, sh, dy, pw, du, cw, dv, cw, pw, ph, kFilterBox);
        py = dy, pu = du, pv = dv, sy = pw, su = sv = cw;
    }
    if (rc == 0 && rotate) { // (ph, pw) -> (h, w)
        const int cw = (w + 1) / 2, ch = (h + 1) / 2;
        uint8_t *dy = d->rot, *du = dy + (size_t)w * h, *dv = du + (size_t)cw * ch;
        enum RotationMode mode = (enum RotationMode)((d->info.rotation + (d->info.flip ? 180 : 0)) % 360);
        rc = I420Rotate(py, sy, pu, su, pv, sv, dy, w, du, cw, dv, cw, pw, d->info.flip ? -ph : ph, mode);
        py = dy, pu = du, pv = dv, sy = w, su = sv = cw;
    }
    // U and V swapped with the "Yvu" constants gives R, G, B byte order (libyuv's RAW).
    const GstVideoColorimetry *c = &GST_VIDEO_INFO_COLORIMETRY(&d->vinfo);
    const int full = c->range == GST_VIDEO_COLOR_RANGE_0_255;
    const struct YuvConstants *m = c->matrix == GST_VIDEO_COLOR_MATRIX_BT709 ? (full ? &kYvuF709Constants : &kYvuH709Constants)
                                   : c->matrix == GST_VIDEO_COLOR_MATRIX_BT2020 ? (full ? &kYvuV2020Constants : &kYvu2020Constants)
                                   : (full ? &kYvuJPEGConstants : &kYvuI601Constants);
    if (rc == 0) rc = I420ToRGB24Matrix(py, sy, pv, sv, pu, su, dst, w * 3, m, w, h);
    gst_video_frame_unmap(&f);
    if (rc)
        return vm_fail(err, VM_EIO, "%s: libyuv failed on a %dx%d -> %dx%d picture (%s%d degrees)", d->name, sw, sh,
                       w, h, d->info.flip ? "mirrored, " : "", d->info.rotation);
    return 0;
}

// Index of the keyframe before frame i (for retries: one GOP further back).
static int64_t key_before(const vm_decoder *d, int64_t i) {
    if (i > 0) i--;
    while (i > 0 && !d->key[i]) i--;
    return i;
}

static int read_one(vm_decoder *d, int64_t i, uint8_t *dst, int64_t *pts_out, vm_error *err) {
    int retries = 0;
    __atomic_store_n(&d->want_in, -1, __ATOMIC_RELAXED);
    __atomic_store_n(&d->want_out, -1, __ATOMIC_RELAXED);
    __atomic_store_n(&d->want_pts, d->pts[i], __ATOMIC_RELAXED);
    int rc;
    int64_t from = d->from[i];
    // Decoding forward costs i - pos pictures, a seek about i - from + SEEK_COST_FRAMES.
    if (d->pos < 0 || i < d->pos || from > d->pos + SEEK_COST_FRAMES)
        if ((rc = do_seek(d, from, err))) return rc;
    if (!d->playing) {
        gst_element_set_state(d->pipe, GST_STATE_PLAYING);
        d->playing = 1;
    }
    int64_t unmatched = 0;
    int corrupt_i = 0; // frame i came out flagged CORRUPTED (no clean entry point)
    for (;;) {
        GstSample *s = NULL;
        rc = pull(d, &s, err);
        if (rc < 0) return rc;
        int64_t j = -1;
        if (rc == 1) {
            GstBuffer *b = gst_sample_get_buffer(s);
            const GstSegment *sg = gst_sample_get_segment(s);
            int64_t t = -1;
            if (b && GST_BUFFER_PTS_IS_VALID(b)) {
                t = (int64_t)GST_BUFFER_PTS(b) - d->off;
                if (sg && sg->format == GST_FORMAT_TIME && !d->ordinal) t = (int64_t)GST_BUFFER_PTS(b) - ((int64_t)sg->start - (int64_t)sg->time);
            }
            j = t >= 0 || (b && GST_BUFFER_PTS_IS_VALID(b)) ? match_pts(d, t) : -1;
            // A damaged stream (pictures flagged corrupted, or timed off the index): what the
            // decoder conceals and which picture gets which time can depend on what it was fed
            // after a picture, so it is never drained (see read_frames).
            if (j < 0 || (b && GST_BUFFER_FLAG_IS_SET(b, GST_BUFFER_FLAG_CORRUPTED))) d->no_drain = 1;
            if (j < 0) {
                gst_sample_unref(s);
                if (++unmatched > 1000)
                    return vm_fail(err, VM_ECORRUPT, "%s: decoded pictures do not match the frame index", d->name);
                continue;
            }
            vm_debug("%s: want frame %lld, got %lld (%.3f s), %lld decoded", d->name, (long long)i, (long long)j,
                     t / 1e9, (long long)__atomic_load_n(&d->decoded, __ATOMIC_RELAXED));
            d->pos = j + 1;
            if (j < i) { gst_sample_unref(s); continue; }
            // After a seek to an I-frame that is no clean entry point, libav decodes pictures from
            // missing references (grey blocks) and flags them CORRUPTED: not frame i as a full
            // decode shows it, so start earlier.  From the very start of the stream the flag is
            // what every decoder shows (a damaged first keyframe) and the picture is frame i.
            if (j == i && GST_BUFFER_FLAG_IS_SET(b, GST_BUFFER_FLAG_CORRUPTED) && !d->clean_start) {
                corrupt_i = 1;
                gst_sample_unref(s);
                vm_debug("%s: frame %lld corrupted after a seek to frame %lld", d->name, (long long)i, (long long)from);
            } else if (j == i) {
                int64_t in = __atomic_load_n(&d->want_in, __ATOMIC_RELAXED), out = __atomic_load_n(&d->want_out, __ATOMIC_RELAXED);
                if (g_atomic_int_get(&d->drain_state) == DRAIN_OFF && in >= 0 && out >= in) {
                    d->delay_sum += out - in;
                    d->delay_n++;
                }
                rc = copy_sample(d, s, dst, err);
                if (pts_out) *pts_out = d->pts[i];
                gst_sample_unref(s);
                if (rc == 0) d->st.frames_returned++;
                return rc;
            } else {
                gst_sample_unref(s);
            }
        }
        // A drained read that ends without frame i (and not for a corrupted frame i, which the
        // drain does not cause): the drain is what we cannot trust here; read again without it.
        if (g_atomic_int_get(&d->drain_state) == DRAIN_SENT && !corrupt_i && j <= i) {
            vm_debug("%s: frame %lld not produced after a drain: draining off", d->name, (long long)i);
            d->no_drain = 1;
            __atomic_store_n(&d->drain_pts, -1, __ATOMIC_RELAXED);
            if ((rc = do_seek(d, from, err))) return rc;
            continue;
        }
        // Frame i was not produced (end of stream, or decoding started too late for it, e.g. an
        // open GOP the index did not see): start one keyframe earlier, twice, then from the start.
        if (retries == 3 || (from == 0 && retries))
            return vm_fail(err, VM_ECORRUPT, "%s: frame %lld (pts %.3f s) was not produced by the decoder (%s)", d->name,
                           (long long)i, d->pts[i] / 1e9, j < 0 ? "stream ended" : "skipped");
        int64_t bad = from;
        from = ++retries == 3 ? 0 : key_before(d, from);
        // Remember: that keyframe is no clean entry point (an I-frame whose followers reference
        // frames before it).  Later reads of its GOP start further back at once.
        if ((j >= 0 || corrupt_i) && bad > 0) {
            d->key[bad] = 0;
            for (int64_t q = bad; q < d->info.frames && d->from[q] >= bad; q++)
                if (d->from[q] == bad) d->from[q] = from;
        }
        if ((rc = do_seek(d, from, err))) return rc;
    }
}

int vm_decoder_read_frames(vm_decoder *d, const int64_t *idx, int n, uint8_t **dst, int64_t *pts_out, vm_error *err) {
    if (n < 0 || (n > 0 && (!idx || !dst))) return vm_fail(err, VM_EINVAL, "%s: read_frames: bad arguments", d->name);
    for (int k = 0; k < n; k++) {
        if (idx[k] < 0 || idx[k] >= d->info.frames)
            return vm_fail(err, VM_ERANGE, "%s: frame %lld out of range (the video has %lld frames)", d->name,
                           (long long)idx[k], (long long)d->info.frames);
        if (k && idx[k] < idx[k - 1])
            return vm_fail(err, VM_EINVAL, "%s: frame indices must be sorted (%lld after %lld)", d->name,
                           (long long)idx[k], (long long)idx[k - 1]);
        if (!dst[k]) return vm_fail(err, VM_EINVAL, "%s: read_frames: NULL destination %d", d->name, k);
        if (d->bad && d->bad[idx[k]])
            return vm_fail(err, VM_ECORRUPT, "%s: frame %lld cannot be identified: the decoder skips pictures and "
                           "repeats timestamps there (damaged start of the stream)", d->name, (long long)idx[k]);
    }
    int rc;
    if (!d->pipe && n > 0 && (rc = build_pipeline(d, err))) {
        // Leave no half-built pipeline behind: the next call starts over.
        gst_element_set_state(d->pipe, GST_STATE_NULL);
        if (d->bus) gst_object_unref(d->bus);
        gst_object_unref(d->pipe);
        d->pipe = d->conv = d->sink = NULL;
        d->bus = NULL;
        demux_watch_clear(&d->demux);
        demux_watch_init(&d->demux);
        return rc;
    }
    // Drain (see decoder_in_probe) after a frame when nothing more is decoded from there: when the
    // next frame of the call is read after a seek, and after the last frame unless the calls look
    // like a sequential scan: the call before ended where this one goes on decoding (what a
    // chunked read of a clip or of the whole video does, the first call from frame 0 included),
    // so the next call may too, and a drained pipeline would make it seek.  Only for decoders
    // whose output delay, measured on the reads that were not drained, makes it worth that risk.
    int64_t cp = d->cont_pos;
    int cont = n > 0 && cp >= 0 && idx[0] >= cp && d->from[idx[0]] <= cp + SEEK_COST_FRAMES;
    int can = !d->ordinal && d->h264_nal_len >= 0 && !d->info.unreadable, drained = 0;
    rc = 0;
    for (int k = 0; k < n && !rc; k++) {
        if (k && idx[k] == idx[k - 1]) {
            memcpy(dst[k], dst[k - 1], (size_t)d->info.out_width * d->info.out_height * 3);
            if (pts_out) pts_out[k] = pts_out[k - 1];
            d->st.frames_returned++;
            continue;
        }
        int q = k + 1;
        while (q < n && idx[q] == idx[k]) q++;
        int arm = can && !d->no_drain && d->delay_n && d->delay_sum >= DRAIN_MIN_DELAY * d->delay_n &&
                  (q < n ? d->from[idx[q]] > idx[k] + 1 + SEEK_COST_FRAMES : !cont);
        // A read that is not armed seeks (the drain before it left pos -1) or comes after one
        // that was not armed either: drain_state is DRAIN_OFF from that seek on.
        __atomic_store_n(&d->drain_pts, arm ? d->pts[idx[k]] : -1, __ATOMIC_RELAXED);
        if (arm) g_atomic_int_set(&d->drain_state, DRAIN_ARMED);
        rc = read_one(d, idx[k], dst[k], pts_out ? &pts_out[k] : NULL, err);
        drained = arm;
        // Drained, or about to be (the frame may come out before its drain, whose EOS then
        // still stops the pipeline at the next packet): only a seek goes on from here.
        if (arm) {
            d->cont_pos = d->pos;
            d->pos = -1;
        }
    }
    if (!drained) d->cont_pos = d->pos;
    __atomic_store_n(&d->drain_pts, -1, __ATOMIC_RELAXED);
    return rc;
}

void vm_decoder_close(vm_decoder *d) {
    if (!d) return;
    if (d->pipe) {
        gst_element_set_state(d->pipe, GST_STATE_NULL);
        gst_object_unref(d->pipe);
    }
    if (d->bus) gst_object_unref(d->bus);
    demux_watch_clear(&d->demux);
    if (d->cur_caps) gst_caps_unref(d->cur_caps);
    g_free(d->uri);
    free(d->path);
    index_free(d);
    free(d->yuv);
    free(d->rot);
    free(d);
}
