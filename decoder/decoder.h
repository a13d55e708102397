// decoder/decoder.h — video decoding with frame-accurate random access (GStreamer).
//
//   vm_decoder_options o;  vm_decoder_options_default(&o);  o.size_mode = VM_DEC_SHORT_SIDE; o.short_side = 256;
//   vm_decoder *d = vm_decoder_open("clip.mp4", &o, &err);      // builds or loads the frame index
//   const vm_video_info *vi = vm_decoder_info(d);               // vi->frames, vi->pts[i], vi->out_width...
//   int64_t idx[2] = {17, 42};  uint8_t *dst[2] = {a, b};       // each out_height*out_width*3 bytes
//   vm_decoder_read_frames(d, idx, 2, dst, NULL, &err);
//   vm_decoder_close(d);
//
// Frame i is the i-th frame in presentation order, i.e. the i-th picture a full decode of the
// video stream outputs.  Frames are identified by their presentation timestamp matched against the
// index, never by the nominal frame rate, so variable frame rate, B-frames and open GOPs are exact.
//
// The index (frame count, per-frame PTS, keyframes) comes from a parse-only pass (demuxer + parser
// through parsebin: packets are read, no pixel is decoded) and is cached in a directory keyed by the
// file's path, size, mtime, ctime and inode, so workers do not re-index a dataset every epoch (a
// file rewritten in place with its size and mtime kept still changes its ctime: it is re-indexed).  When the packets do
// not carry usable timestamps the index falls back to a decode pass (no colour conversion or scaling).
// vm_video_info.index_source says which one produced it.
//
// Opening is cheap (index only); the decoding pipeline
//   uridecodebin (audio never decoded) -> videoconvertscale (only for non-I420 decoders) -> appsink I420
// is built on the first read.  Each returned picture is scaled in YUV with libyuv's box filter
// (antialiased) and converted to RGB once, at the output size, straight into the caller's buffer;
// pictures decoded only to reach a wanted one are dropped before any conversion, and non-reference
// H.264 pictures before a wanted one are not decoded at all.  Where the decoder holds pictures
// back (an output delay of 4 packets or more, measured on earlier reads: H.264 whose SPS declares
// a deep reorder buffer, or none), the frame read last before a seek or at the end of a random
// read is drained out of it (EOS after its packet) instead of fed the packets that follow;
// damaged streams are never drained.  Untagged streams get BT.601 (what
// swscale/ffmpeg/PyAV assume), tagged ones their matrix and range.
//
// Frames come out upright: the image-orientation tag (an MP4's tkhd matrix, as phones write it;
// rotate-90/180/270 and the mirrored flip-rotate-0/90/180/270) is applied as ffmpeg's autorotate
// does.  The rotation is done in YUV at the output size, between the scale and the RGB conversion.
//
// Threads: one vm_decoder per thread; decoders share nothing but gst_init (done once, internally).
// Every call that can wait on GStreamer is bounded by options.timeout_ms of no progress; a truncated
// or damaged file fails at once (the demuxer's stopped task is checked, as its error message can be
// dropped by decodebin/parsebin), never after the timeout, which is for sources that stall.
//
// MPEG-4 Part 2 (Xvid/DivX, "ASP") with B-frames in AVI, as in UCF-101 and HMDB-51: AVI gives no
// PTS for reordered frames and GStreamer then repeats and shifts timestamps, so such a stream is
// indexed by order instead: display order from decode order and the VOP types (parse pass), checked
// against the picture count of a full decode (index_source "decode"); frame k is at k / fps, and a
// read counts the pictures after a seek to a keyframe rather than matching timestamps (always with
// the software decoder, whatever options.hw says: the count relies on libavcodec dropping the
// B-VOPs that reference the GOP before the seek).  DivX/Xvid
// "packed bitstream" (what ffmpeg's libxvid writes to AVI: an anchor VOP and the B-VOP shown before
// it in one chunk, an N-VOP placeholder chunk later) is read the same way: GStreamer's parser splits
// the chunks into one packet per VOP, every coded VOP is a picture and an N-VOP none.  Where such a
// file ends on a packed chunk with no N-VOP after it, we show one picture more than ffmpeg, whose
// decoder (and mpeg4_unpack_bframes) loses the next to last one.
//
// H.264 in AVI (any, with or without B-frames, closed or open GOPs): also indexed by order, from the
// decoder itself: in the full decode pass every picture names the packet it came from (a meta the
// decoder carries over), frame k is the k-th picture out, at the k-th packet's time (k / fps); a
// read stamps each packet with its picture's time before the decoder (software, as above), so the
// pictures come out timed exactly.  Seeks go to IDR pictures only (non-IDR keyframes, the I-frames
// of open GOPs, are no seek points: an open-GOP file is read from its start or its last IDR).
//
// Limits: packed bitstream whose chunks the parser leaves whole (several coded VOPs in one packet)
// is refused at open (VM_EUNSUPPORTED; unpack it with ffmpeg -bsf:v mpeg4_unpack_bframes), as is an
// MPEG-4 B-frame AVI whose VOP headers and full decode disagree on the picture count, and an H.264
// AVI with interlaced coding (PAFF/MBAFF), packets holding other than one picture, packets without
// distinct decode times, or a full decode that does not give each packet's picture once (the
// message says to re-encode: a stream copy to MP4/MKV keeps pictures without a time); other codecs
// with B-frames in AVI whose decoded timestamps repeat are refused too; in an ordinal AVI (MPEG-4 with
// B-frames, H.264), zero-size "dropped frame" chunks take no time slot (frame k stays at k / fps); at a damaged start
// where the decoder drops pictures and repeats timestamps, the frames that cannot be identified are
// refused (vm_video_info.unreadable_at).
// The orientation is what GStreamer reports: GStreamer 1.22's qtdemux maps 7 of the 8 MP4 matrices
// and gives no tag for (0 -1; -1 0) (ffmpeg's flip-rotate-90, transverse), nor for any matrix with
// scale or shear, so those files come out as stored (rotation 0, flip 0).
#pragma once
#include <stdint.h>
#include "common/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vm_decoder vm_decoder;

typedef enum {
    // Every mode sizes the upright frame (after the orientation tag is applied):
    VM_DEC_NATIVE = 0,     // the stream's display size: width x height below, or height x width
                           // when the rotation is 90 or 270
    VM_DEC_EXACT = 1,      // exactly width x height (aspect ratio not kept)
    VM_DEC_SHORT_SIDE = 2, // scale so the short side is short_side (up or down); the long side is
                           // round(long * short_side / short), keeping the display aspect ratio
} vm_decoder_size_mode;

typedef enum { VM_DEC_HW_AUTO = 0, VM_DEC_HW_OFF = 1 } vm_decoder_hw; // same values as vm_hw_mode

typedef struct vm_decoder_options {
    int size_mode;           // vm_decoder_size_mode
    int width, height;       // VM_DEC_EXACT
    int short_side;          // VM_DEC_SHORT_SIDE
    int hw;                  // vm_decoder_hw: auto = let decodebin pick hardware decoders by rank;
                             // off = skip elements whose klass says "Hardware"
    int timeout_ms;          // longest wait on the pipeline for any event (default 10000)
    int threads;             // decoder threads (avdec max-threads) and videoconvertscale threads
                             // (default 1: one decoder per core)
    const char *index_cache; // cache directory; NULL or "" = $XDG_CACHE_HOME/vicmae or ~/.cache/vicmae;
                             // "off" = no cache (always index)
} vm_decoder_options;

// Defaults: native size, hw auto, timeout 10 s, 1 thread, default cache directory.
void vm_decoder_options_default(vm_decoder_options *opt);

// What the index knows about the video stream.  Owned by the decoder; valid until vm_decoder_close.
typedef struct vm_video_info {
    int64_t frames;          // exact number of frames in presentation order
    const int64_t *pts;      // [frames] presentation timestamps in ns, strictly ascending
    const uint8_t *keyframe; // [frames] 1 where the frame is a keyframe (decoding may start there);
                             // an I-frame found to be no clean entry point while reading is cleared
    int64_t duration_ns;     // container duration, or last pts + last frame gap when the header has none
    double avg_fps;          // frames / duration (informational only; never used to find frames)
    int width, height;       // display size of the stream (pixel aspect ratio applied), BEFORE the
                             // orientation: the decoded picture's, as ffprobe's width/height
    int out_width, out_height; // size of the frames read_frames returns (RGB, rows tightly packed):
                             // upright, so height-by-width-shaped for a 90/270 rotation in NATIVE mode
    int rotation;            // degrees clockwise (0/90/180/270) the decoded picture is turned to show
                             // it upright, from the image-orientation tag; applied by read_frames
    int flip;                // 1: mirrored left-right before that rotation (flip-rotate-* tags); applied
    char codec[64];          // e.g. "H.264 (High Profile)"
    char container[64];      // e.g. "Quicktime"
    const char *index_source; // "parse" (packets, no pixel decode), "decode" (full decode pass),
                              // "cache:parse" / "cache:decode" (loaded from the index cache)
    int64_t unreadable;        // frames read_frames refuses (VM_ECORRUPT): at a damaged start the
    const uint8_t *unreadable_at; // decoder skips pictures and repeats timestamps, so they cannot be
                                  // identified; [frames] 1 = refused, or NULL when there are none
} vm_video_info;

// Counters since open (cumulative).  frames_decoded / frames_returned is the cost of random access.
typedef struct vm_decoder_stats {
    int64_t frames_decoded;  // packets decoded (including pictures decoded only to reach a wanted one)
    int64_t frames_returned; // frames copied to the caller
    int64_t seeks;           // seeks issued (the first read from frame 0 needs none)
    int64_t frames_skipped;  // non-reference pictures before a wanted frame, dropped undecoded
    double index_seconds;    // time spent building or loading the index
} vm_decoder_stats;

// Open a local path or a URI (anything with "://" goes through uridecodebin) and build or load its
// index.  Returns NULL and fills err (message names the file and the reason) on failure:
//   VM_EIO (cannot open), VM_ECORRUPT (empty, truncated, garbage), VM_ENOTFOUND (no video stream,
//   e.g. audio-only), VM_EUNSUPPORTED (no decoder: the message names the missing plugin/caps),
//   VM_ETIMEOUT (the pipeline stalled past timeout_ms), VM_EINVAL (bad options).
vm_decoder *vm_decoder_open(const char *uri_or_path, const vm_decoder_options *opt, vm_error *err);

const vm_video_info *vm_decoder_info(const vm_decoder *d);

// Decode the frames at indices[0..n) (non-decreasing; duplicates allowed) into dst[k], each a caller
// buffer of out_height * out_width * 3 bytes (RGB, rows packed).  pts_out[k] (may be NULL) gets each
// frame's PTS in ns.  One seek to the keyframe before the first wanted frame, then decoding forward;
// a further seek only when the next wanted frame's keyframe lies beyond the current position.
// An index < 0 or >= frames is VM_ERANGE (nothing is clamped).  Returns 0 or a negative VM_E* code.
int vm_decoder_read_frames(vm_decoder *d, const int64_t *indices, int n, uint8_t **dst, int64_t *pts_out,
                           vm_error *err);

// Index of the frame shown at time t_ns (the last frame with pts <= t_ns; 0 before the first frame).
int64_t vm_decoder_frame_at(const vm_decoder *d, int64_t t_ns);

void vm_decoder_stats_get(const vm_decoder *d, vm_decoder_stats *out);

// Release the pipeline and every buffer.  NULL is a no-op.
void vm_decoder_close(vm_decoder *d);

#ifdef __cplusplus
}
#endif
