// pipeline/curve.h — ZeroMQ CURVE for the pipeline's wire: key files, the admitted workers' keys,
// the ZAP handler's answer, handshake events.
//
// A key pair is two 32-byte Curve25519 keys written as 40 characters of Z85 (ZeroMQ's text form).
// `vicmae keygen NAME` writes:
//   NAME.key         public key only: shareable (the trainer's goes to its workers, a worker's to
//                    the trainer's [pipeline] curve_clients)
//   NAME.key_secret  public + secret key: stays on its host, created with mode 0600
// Both are small text files:
//   # comment lines start with '#' (a key may contain '#', but never starts a line)
//   public-key = rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7
//   secret-key = JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6
// A file with a secret key that group or others can read is refused (as ssh does): chmod 600 it.
//
// The trainer admits workers by public key: the ZAP handler (ZeroMQ RFC 27), served on the
// receiver's thread, answers 200 for a key in its vm_curve_clients and 400 for any other.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "common/error.h"

#define VM_CURVE_Z85_LEN 40  // characters of one key in Z85

typedef struct vm_curve_key {
    char pub[VM_CURVE_Z85_LEN + 1];
    char sec[VM_CURVE_Z85_LEN + 1];  // "" when only the public key is known
} vm_curve_key;

// 0 when text[0..len) is one key in Z85 (40 characters of the alphabet, each group of 5 below 2^32);
// else VM_EINVAL with the reason in why ("has 39 characters, a key has 40", "character ' ' at 7 ...").
int vm_curve_z85_check(const char *text, size_t len, char *why, size_t cap);

// Parse key-file text; origin (the file name) starts every message: "worker.key:3: ...".
// public-key is required; with need_secret also secret-key, which must belong to public-key.
int vm_curve_key_parse(const char *text, const char *origin, int need_secret, vm_curve_key *out, vm_error *err);
// Read a key file.  need_secret: the file must hold the secret key and be private to its owner
// (mode 0600 or stricter; otherwise refused, naming the file and its mode).
int vm_curve_key_load(const char *path, int need_secret, vm_curve_key *out, vm_error *err);
// A fresh key pair (zmq_curve_keypair).  VM_EUNSUPPORTED when libzmq was built without CURVE.
int vm_curve_keygen(vm_curve_key *out, vm_error *err);
// Write name.key (mode 0644) and name.key_secret (mode 0600) of k.  Refuses (VM_EINVAL, nothing
// written) when either exists.  The two paths go to pub_path/sec_path (cap bytes each; may be NULL).
int vm_curve_key_write(const char *name, const vm_curve_key *k, char *pub_path, char *sec_path, size_t cap,
                       vm_error *err);

// The admitted public keys (binary, 32 bytes each).  Zero-initialise, free with vm_curve_clients_free.
typedef struct vm_curve_clients {
    uint8_t (*keys)[32];
    int n, cap;
} vm_curve_clients;

// Add one key given in Z85 (origin names it in messages).  A key already present is not added twice.
int vm_curve_clients_add(vm_curve_clients *c, const char *z85, const char *origin, vm_error *err);
// Add the keys of a clients file's text: `public-key = KEY` lines and '#' comments (what
// `cat worker*.key` gives).  A secret-key line is refused: the trainer needs public keys only.
int vm_curve_clients_parse(vm_curve_clients *c, const char *text, const char *origin, vm_error *err);
// Add the keys of path: a clients file as above, or a directory whose *.key files each hold one
// public key (other names are ignored, *.key_secret included).
int vm_curve_clients_load(vm_curve_clients *c, const char *path, vm_error *err);
int vm_curve_clients_has(const vm_curve_clients *c, const uint8_t key[32]);
void vm_curve_clients_free(vm_curve_clients *c);

// One ZAP request, as vm_curve_zap_serve answered it.
typedef struct vm_curve_zap_req {
    int admitted;            // 1: answered 200
    char key[VM_CURVE_Z85_LEN + 1];  // the client's public key in Z85 ("" when not a CURVE request)
    char address[64];        // the peer's IP address, as ZeroMQ gives it
    char why[128];           // why it was refused
} vm_curve_zap_req;

// Receive one request on the ZAP socket (a REP socket bound at inproc://zeromq.zap.01 in the context
// of the CURVE server), answer it per RFC 27 (200 for a CURVE client whose key is in c, 400 for
// another key or mechanism, 500 for a malformed request) and describe it in *out.  1 = one request
// answered, 0 = none was waiting.
int vm_curve_zap_serve(void *zap, const vm_curve_clients *c, vm_curve_zap_req *out);

// Handshake events of a socket: a PAIR socket in ctx connected to zmq_socket_monitor(sock, events)
// (ZMQ_EVENT_* bits), or NULL.  Close it with zmq_close before closing sock's context.
void *vm_curve_monitor(void *ctx, void *sock, int events);
// The next event waiting on a monitor (non-blocking): 1 = *event and *value set, 0 = none.
int vm_curve_monitor_next(void *mon, int *event, int *value);
// Words for the value of ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ("mechanism mismatch", ...).
const char *vm_curve_protocol_error(int value);
