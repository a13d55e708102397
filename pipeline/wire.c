// pipeline/wire.c — control header encoding (see wire.h).
#include "pipeline/wire.h"
#include <string.h>

static void put16(uint8_t *p, uint16_t v) { p[0] = v; p[1] = v >> 8; }
static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = v >> (8 * i); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = v >> (8 * i); }
static uint16_t get16(const uint8_t *p) { return p[0] | p[1] << 8; }
static uint32_t get32(const uint8_t *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = v << 8 | p[i]; return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }

// Layout: magic u32 | major u16 | minor u16 | type u16 | flags u16 | epoch u32 | seq u32 | count u32 |
//         reserved u32 | session u64 | unit u64 | arg u32   = 48 bytes, offsets below.
void vm_wire_encode(const vm_wire_msg *m, uint8_t out[VM_WIRE_HDR_SIZE]) {
    put32(out + 0, VM_WIRE_MAGIC);
    put16(out + 4, VM_WIRE_MAJOR);
    put16(out + 6, VM_WIRE_MINOR);
    put16(out + 8, m->type);
    put16(out + 10, m->flags);
    put32(out + 12, m->epoch);
    put32(out + 16, m->seq);
    put32(out + 20, m->count);
    put32(out + 24, m->reserved);
    put64(out + 28, m->session);
    put64(out + 36, m->unit);
    put32(out + 44, m->arg);
}

int vm_wire_decode(const void *buf, size_t len, vm_wire_msg *m, vm_error *err) {
    const uint8_t *p = buf;
    memset(m, 0, sizeof *m);
    if (len != VM_WIRE_HDR_SIZE) return vm_fail(err, VM_ECORRUPT, "control header of %zu bytes (expected %d)", len, VM_WIRE_HDR_SIZE);
    if (get32(p) != VM_WIRE_MAGIC) return vm_fail(err, VM_ECORRUPT, "bad magic 0x%08x", get32(p));
    m->major = get16(p + 4);
    m->minor = get16(p + 6);
    if (m->major != VM_WIRE_MAJOR)
        return vm_fail(err, VM_EVERSION, "protocol version %u.%u, this side speaks %d.%d", m->major, m->minor,
                       VM_WIRE_MAJOR, VM_WIRE_MINOR);
    m->type = get16(p + 8);
    m->flags = get16(p + 10);
    m->epoch = get32(p + 12);
    m->seq = get32(p + 16);
    m->count = get32(p + 20);
    m->reserved = get32(p + 24);
    m->session = get64(p + 28);
    m->unit = get64(p + 36);
    m->arg = get32(p + 44);
    if (m->type == 0 || m->type >= VM_MSG_TYPE_END) {
        // A newer minor may add types: report it as unsupported rather than corrupt.
        return vm_fail(err, m->minor > VM_WIRE_MINOR ? VM_EUNSUPPORTED : VM_ECORRUPT, "unknown message type %u", m->type);
    }
    return 0;
}

const char *vm_wire_type_name(int type) {
    static const char *names[] = {"?", "HELLO", "WELCOME", "REQUEST", "LEASE", "WAIT", "DATA",
                                  "FAIL", "HEARTBEAT", "CREDIT", "REJECT", "STOP", "BYE"};
    return type > 0 && type < VM_MSG_TYPE_END ? names[type] : "?";
}
