// decoder/bitstream.c — see bitstream.h.
#include "decoder/bitstream.h"

typedef struct { const uint8_t *p; size_t n, bit; } bitreader;
static unsigned br_get(bitreader *b, int k) { // past the end reads zeros; br_over says so
    unsigned v = 0;
    for (int i = 0; i < k; i++, b->bit++)
        v = v << 1 | (b->bit / 8 < b->n ? (b->p[b->bit / 8] >> (7 - b->bit % 8)) & 1 : 0);
    return v;
}
static int br_over(const bitreader *b) { return b->bit > b->n * 8; }

// VOL header (after its start code 00 00 01 2x): the bits of vop_time_increment, or 0.
static int m4v_vol_vti_bits(const uint8_t *p, size_t n) {
    bitreader b = {p, n, 0};
    br_get(&b, 1);                       // random_accessible_vol
    br_get(&b, 8);                       // video_object_type_indication
    int verid = 1;
    if (br_get(&b, 1)) { verid = br_get(&b, 4); br_get(&b, 3); } // is_object_layer_identifier
    if (br_get(&b, 4) == 15) br_get(&b, 16); // aspect_ratio_info: extended PAR
    if (br_get(&b, 1)) {                 // vol_control_parameters
        br_get(&b, 3);                   // chroma_format, low_delay
        if (br_get(&b, 1)) {             // vbv_parameters: 79 bits
            br_get(&b, 16); br_get(&b, 16); br_get(&b, 16); br_get(&b, 3);
            br_get(&b, 12); br_get(&b, 16);
        }
    }
    int shape = br_get(&b, 2);
    if (shape == 3 && verid != 1) br_get(&b, 4);
    if (!br_get(&b, 1)) return 0;        // marker
    unsigned res = br_get(&b, 16);
    if (!br_get(&b, 1) || br_over(&b) || res == 0) return 0;
    int bits = 1;
    while ((1u << bits) < res) bits++;
    return bits;
}

// DivX packed bitstream (an anchor and the B-VOP shown before it in one AVI chunk, an N-VOP
// placeholder chunk later): mpeg4videoparse splits such chunks into one packet per VOP, so a
// packet with several coded VOPs is a chunk it left whole (multi).  (DivX's "p" user-data marker
// is no proof of packing: ffmpeg's mpeg4_unpack_bframes leaves it in some packets of the streams
// it unpacks.)
int vm_m4v_scan(m4v_state *m, const uint8_t *p, size_t n) {
    int type = VOP_NONE, vops = 0;
    for (size_t i = 0; i + 4 <= n; i++) {
        if (p[i] || p[i + 1] || p[i + 2] != 1) continue;
        uint8_t code = p[i + 3];
        if (code >= 0x20 && code <= 0x2f) {
            int bits = m4v_vol_vti_bits(p + i + 4, n - i - 4);
            if (bits) m->vti_bits = bits;
        } else if (code == 0xb6) {
            bitreader b = {p + i + 4, n - i - 4, 0};
            int t = br_get(&b, 2);
            int coded = 1;
            if (m->vti_bits) {
                while (br_get(&b, 1) && !br_over(&b)) {} // modulo_time_base
                br_get(&b, 1);                            // marker
                br_get(&b, m->vti_bits);                  // vop_time_increment
                br_get(&b, 1);                            // marker
                coded = br_get(&b, 1);
            }
            if (br_over(&b)) continue;
            if (!coded) {
                if (type == VOP_NONE) type = VOP_NOT_CODED;
                continue;
            }
            if (++vops > 1) m->multi = m->packed = 1;
            type = t;
            i += 4;
        }
    }
    return type;
}

// ---- H.264 ------------------------------------------------------------------------------------
// The next NAL unit of an access unit from *pos: its first byte at *nal and the bytes left in the
// packet from there (through the end of the unit for avc, to the end of the packet for
// byte-stream: only a unit's first bytes are read).  0 when there is none.
static int next_nal(const uint8_t *p, size_t n, int nal_len, size_t *pos, const uint8_t **nal, size_t *left) {
    size_t i = *pos, start;
    if (nal_len) {
        if (i + nal_len > n) return 0;
        size_t len = 0;
        for (int k = 0; k < nal_len; k++) len = len << 8 | p[i + k];
        start = i + nal_len;
        if (len == 0 || start >= n) return 0;
        *pos = start + len;
        *left = len < n - start ? len : n - start;
    } else {
        while (i + 3 <= n && !(p[i] == 0 && p[i + 1] == 0 && p[i + 2] == 1)) i++;
        if (i + 3 >= n) return 0;
        start = i + 3;
        *pos = start;
        *left = n - start;
    }
    *nal = p + start;
    return 1;
}

int vm_h264_is_nonref(const uint8_t *p, size_t n, int nal_len) {
    size_t pos = 0, left;
    const uint8_t *u;
    while (next_nal(p, n, nal_len, &pos, &u, &left)) {
        int type = u[0] & 0x1f;
        if (type == 1 || type == 5) return (u[0] & 0x60) == 0; // first slice decides
    }
    return 0;
}

// A slice's first_mb_in_slice is its first syntax element (ue(v)): 0 is the single bit 1, so a
// slice that starts a picture has the top bit of the byte after the NAL header set (no emulation
// prevention byte can come before it).
void vm_h264_scan(const uint8_t *p, size_t n, int nal_len, int *pictures, int *idr) {
    size_t pos = 0, left;
    const uint8_t *u;
    *pictures = *idr = 0;
    while (next_nal(p, n, nal_len, &pos, &u, &left)) {
        int type = u[0] & 0x1f;
        if (type != 1 && type != 5) continue;
        if (type == 5) *idr = 1;
        if (left > 1 && (u[1] & 0x80)) ++*pictures;
    }
}
