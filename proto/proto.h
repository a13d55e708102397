// proto/proto.h — the batch wire format: B samples x V views of H x W x 3 uint8, from a worker to
// the trainer (over ZeroMQ, or stored one message per file for --save-batches / --replay / inspect).
//
// One message = fixed 128-byte little-endian header | metadata table | payload.  The byte layout is
// in proto/SPEC.md.  A "chunk" that a worker sends (a few samples of a work unit) is simply a
// message with a small B; the trainer decodes chunks side by side into one batch buffer.
//
//   pixels   (B, V, H, W, 3) uint8 RGB, C-contiguous, sample-major: view j of sample b starts at
//            ((b * V + j) * H * W * 3).
//   samples  B vm_sample_meta, views B*V vm_view_meta (sample-major: views[b * V + j]).
//
// Encoding writes into a caller buffer of vm_batch_max_size() bytes (no allocation).  Parsing
// validates header, sizes, metadata table and the payload's block structure without decompressing;
// decoding decompresses straight into a caller buffer (pinned memory on the trainer) and verifies the
// payload checksum.  Every length, count and offset is validated before use: a malformed, truncated
// or hostile message returns VM_ECORRUPT / VM_EVERSION / VM_EUNSUPPORTED with a reason, never reads
// or writes out of bounds.
//
//   vm_batch_header h = {.batch = B, .views = 2, .height = 224, .width = 224, .codec = VM_BATCH_CODEC_LZ4,
//                        .epoch = e, .work_unit = u, .sequence = s, .producer_id = p};
//   size_t cap = vm_batch_max_size(&h);                  // 0 when the shape is invalid
//   vm_batch_encode(&h, samples, views, pixels, buf, cap, &len, &err);
//   ...
//   vm_batch_view v;
//   if (vm_batch_parse(buf, len, &v, &err) == 0)          // v.h holds every header field
//       vm_batch_decode_pixels(&v, dst, v.h.raw_size, &err);
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "common/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VM_BATCH_MAGIC 0x54424d56u        // "VMBT" as the first 4 bytes of the message
#define VM_BATCH_VERSION_MAJOR 1          // a receiver rejects any other major version
#define VM_BATCH_VERSION_MINOR 0          // a newer minor is accepted (it only appends fields)
#define VM_BATCH_HEADER_SIZE 128          // fixed header size written by this version
#define VM_BATCH_SAMPLE_REC_SIZE 16       // per-sample record written by this version
#define VM_BATCH_VIEW_REC_SIZE 40         // per-view record written by this version

// Limits a receiver enforces before any size arithmetic (hostile headers).
#define VM_BATCH_MAX_SAMPLES 65536
#define VM_BATCH_MAX_VIEWS 256
#define VM_BATCH_MAX_DIM 16384            // height, width
#define VM_BATCH_MAX_RAW (1ull << 36)     // 64 GiB of pixels in one message
#define VM_BATCH_DEFAULT_BLOCK (1u << 18) // LZ4 block of raw bytes (256 KiB: stays in L2 while hashed)
#define VM_BATCH_MIN_BLOCK 4096
#define VM_BATCH_MAX_BLOCK (64u << 20)

enum { VM_BATCH_CODEC_NONE = 0, VM_BATCH_CODEC_LZ4 = 1 };
enum { VM_BATCH_LAYOUT_BVHWC_RGB8 = 1 };  // (B, V, H, W, 3) uint8 RGB, the only layout so far
enum { VM_BATCH_FILTER_NONE = 0 };        // reversible pre-LZ4 filter (see SPEC.md: measured, none kept)

// flags
#define VM_BATCH_F_UNIT_END 0x1u          // the last message of its work unit

// Header fields.  The caller of vm_batch_encode fills the "set by the producer" part (zero the
// rest); vm_batch_parse fills everything.
typedef struct vm_batch_header {
    // set by the producer
    uint32_t batch, views, height, width; // B, V, H, W
    uint32_t channels;                    // 3 (0 = 3)
    uint32_t layout;                      // VM_BATCH_LAYOUT_* (0 = BVHWC_RGB8)
    uint32_t codec;                       // VM_BATCH_CODEC_*
    uint32_t filter;                      // VM_BATCH_FILTER_* (must be NONE)
    uint32_t flags;                       // VM_BATCH_F_*
    uint32_t block_size;                  // raw bytes per LZ4 block (0 = VM_BATCH_DEFAULT_BLOCK)
    uint32_t epoch;
    uint32_t producer_id;                 // worker id
    uint64_t work_unit;                   // work-unit id leased by the coordinator
    uint64_t sequence;                    // message sequence number of this producer
    uint32_t sample_offset;               // index of sample 0 of this message within its work unit
    // filled by vm_batch_parse (and ignored by vm_batch_encode)
    uint16_t version_major, version_minor;
    uint32_t header_size;                 // bytes of the header in the message (>= 128)
    uint32_t sample_rec_size, view_rec_size;
    uint64_t meta_size;                   // bytes of the metadata table
    uint64_t raw_size;                    // B*V*H*W*C
    uint64_t payload_size;                // bytes of the payload as stored
    uint64_t payload_checksum;            // XXH3-64 of the raw (decoded) pixels
    uint64_t msg_checksum;                // XXH3-64 of the whole message as stored (minus this field)
} vm_batch_header;

typedef struct vm_sample_meta {
    uint64_t video_id;                    // dataset index of the source video
    uint32_t src_width, src_height;       // decoded source frame size the crops refer to
} vm_sample_meta;

typedef struct vm_view_meta {
    int64_t frame;                        // frame index in the source video
    int64_t pts_ns;                       // presentation timestamp, nanoseconds
    int32_t crop_x, crop_y, crop_w, crop_h; // crop box in source pixels (before resize to H x W)
    uint8_t flip;                         // 1 = horizontally flipped after the crop
} vm_view_meta;

// A parsed message: borrowed pointers into the caller's buffer (valid while it lives).
typedef struct vm_batch_view {
    vm_batch_header h;
    const uint8_t *msg;
    size_t len;
    const uint8_t *meta;                  // metadata table (h.meta_size bytes)
    const uint8_t *payload;               // payload (h.payload_size bytes)
    uint64_t nblocks;                     // LZ4 blocks (0 for codec none)
} vm_batch_view;

// Bytes of a message with this header's shape and codec in the worst case (incompressible
// pixels); 0 when the shape is invalid or over the limits.
size_t vm_batch_max_size(const vm_batch_header *h);
// B*V*H*W*C, or 0 when the shape is invalid.
uint64_t vm_batch_raw_size(const vm_batch_header *h);

// Encode one message into out[0 .. out_cap).  samples: B records, views: B*V records, pixels:
// raw_size bytes laid out as above.  *out_len receives the message length.  No allocation.
int vm_batch_encode(const vm_batch_header *h, const vm_sample_meta *samples, const vm_view_meta *views,
                    const uint8_t *pixels, void *out, size_t out_cap, size_t *out_len, vm_error *err);

// Validate a message and describe it in *view (borrowing msg).  Checks magic, version (unknown
// major: VM_EVERSION with both versions in the message), every size and limit, the message
// checksum (every stored byte: header, metadata, compressed payload) and the LZ4 block structure;
// does not decompress.
int vm_batch_parse(const void *msg, size_t len, vm_batch_view *view, vm_error *err);

// Point a parsed view at a byte-identical copy of its message (the buffer was moved, e.g. a
// zmq_msg_move): O(1), no re-validation, unlike a second vm_batch_parse (which hashes every byte).
void vm_batch_view_rebase(vm_batch_view *v, const void *msg);

// Metadata of sample b (< B) and of view j (< V) of sample b, from a parsed message.
void vm_batch_get_sample(const vm_batch_view *v, uint32_t b, vm_sample_meta *out);
void vm_batch_get_view(const vm_batch_view *v, uint32_t b, uint32_t j, vm_view_meta *out);

// Decompress the pixels into dst (dst_cap >= v->h.raw_size) and verify the payload checksum.
// On error the content of dst is unspecified.
int vm_batch_decode_pixels(const vm_batch_view *v, uint8_t *dst, size_t dst_cap, vm_error *err);

// Batch files: one message per file, written atomically (--save-batches, --replay, inspect).
int vm_batch_file_write(const char *path, const void *msg, size_t len, vm_error *err);
// Read a whole file into a malloc'ed buffer (*msg, caller frees); does not validate it.
int vm_batch_file_read(const char *path, void **msg, size_t *len, vm_error *err);

const char *vm_batch_codec_name(uint32_t codec);   // "none", "lz4", "unknown"

#ifdef __cplusplus
}
#endif
