// decoder/bitstream.h — what decoder.c reads of the coded pictures themselves, without decoding:
// MPEG-4 Part 2 VOP headers (coding type, for the display order of B-frame AVIs) and H.264 NAL
// unit headers (IDR access units, pictures per packet, non-reference pictures).
#pragma once
#include <stddef.h>
#include <stdint.h>

// Internal to the decoder: hidden, not exported by libvicmae-video.so.
#pragma GCC visibility push(hidden)

// ---- MPEG-4 Part 2 (ISO 14496-2) ----
enum { VOP_I = 0, VOP_P = 1, VOP_B = 2, VOP_S = 3, VOP_NOT_CODED = 4, VOP_NONE = 5 };
typedef struct {
    int active;               // the stream is MPEG-4 Part 2
    int vti_bits;             // bits of vop_time_increment (from the VOL header), 0 = not seen yet
    int packed;               // DivX packed bitstream seen (see vm_m4v_scan)
    int multi;                // a packet with several coded VOPs (a chunk the parser did not split)
    int bvops;                // B-VOPs seen
} m4v_state;

// Scan a packet (or codec_data) for VOL and VOP headers: the VOP_* type of its picture (VOP_NONE
// when it holds no VOP, VOP_NOT_CODED for an N-VOP); marks m multi (and packed) for a packet with
// several coded VOPs.
int vm_m4v_scan(m4v_state *m, const uint8_t *p, size_t n);

// ---- H.264 (ISO 14496-10) ----
// nal_len: 1-4 for avc (NAL units prefixed by their length in that many bytes), 0 for byte-stream
// (start codes).

// An access unit's first slice says it is a non-reference picture (nal_ref_idc 0).
int vm_h264_is_nonref(const uint8_t *p, size_t n, int nal_len);

// An access unit: *pictures = slices that start a picture (first_mb_in_slice 0), *idr = it holds an
// IDR slice (NAL type 5).
void vm_h264_scan(const uint8_t *p, size_t n, int nal_len, int *pictures, int *idr);

#pragma GCC visibility pop
