// pipeline/wire.h — the control protocol between the coordinator (trainer) and workers.
//
// Transport: ZeroMQ.  The trainer binds one ROUTER socket at `[pipeline] endpoint`; each worker
// connects one DEALER socket, optionally under CURVE (pipeline/curve.h: encrypted, both ends
// authenticated; below the messages, which do not change).  Every message is one or two ZeroMQ frames (after the ROUTER's
// identity frame):
//   frame 1: a 48-byte little-endian header (vm_wire_msg below, encoded field by field)
//   frame 2: optional body: text for control messages, a proto batch (proto/proto.h) for DATA.
//
// Versioning: the header starts with magic "VMWP" and a (major, minor) pair.  A peer rejects any
// other major version (the worker exits with a message naming both versions; the coordinator
// answers REJECT and counts it); a newer minor only adds message types or fields a peer may ignore.
//
// Conversation (W = worker, C = coordinator):
//   W->C HELLO      body "host=.. pid=.."                    C->W WELCOME session, body = config (INI)
//   W->C REQUEST    count = units wanted                      C->W LEASE epoch, body = unit lines
//                                                              C->W WAIT  (none now: epoch ending)
//   W->C DATA       epoch, unit, seq, count=samples, flags=LAST, body = proto batch
//   W->C FAIL       epoch, unit, arg = vm error code, body = reason
//   W->C HEARTBEAT  body = worker stats "key=value ..."       C->W CREDIT count = messages granted
//   C->W REJECT     arg = reason code, body = reason text      C->W STOP (run over: exit)
//   W->C BYE
// Every worker message after WELCOME carries its session id; a coordinator that does not know the
// session (it restarted) answers REJECT(VM_WIRE_R_SESSION) and the worker says HELLO again.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "common/error.h"

#define VM_WIRE_MAGIC 0x50574d56u  // "VMWP"
#define VM_WIRE_MAJOR 1
#define VM_WIRE_MINOR 0
#define VM_WIRE_HDR_SIZE 48

enum {
    VM_MSG_HELLO = 1, VM_MSG_WELCOME, VM_MSG_REQUEST, VM_MSG_LEASE, VM_MSG_WAIT, VM_MSG_DATA,
    VM_MSG_FAIL, VM_MSG_HEARTBEAT, VM_MSG_CREDIT, VM_MSG_REJECT, VM_MSG_STOP, VM_MSG_BYE,
    VM_MSG_TYPE_END
};

// REJECT reasons (in arg).
enum { VM_WIRE_R_MALFORMED = 1, VM_WIRE_R_VERSION = 2, VM_WIRE_R_SESSION = 3, VM_WIRE_R_BADDATA = 4 };

#define VM_WIRE_F_LAST 0x1u  // DATA: the last chunk of its unit

typedef struct vm_wire_msg {
    uint16_t major, minor;  // filled by vm_wire_encode; checked by vm_wire_decode
    uint16_t type;          // VM_MSG_*
    uint16_t flags;
    uint32_t epoch;
    uint32_t seq;           // DATA: chunk index within the unit
    uint32_t count;         // REQUEST: units; DATA: samples; CREDIT: messages granted; LEASE: units
    uint32_t reserved;
    uint64_t session;       // coordinator-assigned worker session (0 before WELCOME)
    uint64_t unit;          // work unit id
    uint32_t arg;           // FAIL: -(vm error code); REJECT: reason
} vm_wire_msg;

// Write the 48-byte header of m into out.
void vm_wire_encode(const vm_wire_msg *m, uint8_t out[VM_WIRE_HDR_SIZE]);
// Read a header frame.  VM_ECORRUPT for a wrong size, magic or type; VM_EVERSION for another major
// version (m->major/minor are still filled so the caller can name them).
int vm_wire_decode(const void *buf, size_t len, vm_wire_msg *m, vm_error *err);
const char *vm_wire_type_name(int type);
