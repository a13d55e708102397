// common/error.h — how vicmae reports failure.
//
// Functions return 0 on success or a negative VM_E* code, and, when the caller passes a vm_error,
// fill it with one line naming the input and the reason ("clip.mp4: no video stream").  Nothing
// below the CLI prints errors itself: the caller decides whether to log, count or stop.
#pragma once
#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    VM_OK = 0,
    VM_EINVAL = -1,       // bad argument or configuration value
    VM_EIO = -2,          // open/read/write failed
    VM_ECORRUPT = -3,     // malformed, truncated or checksum-failing input
    VM_ENOMEM = -4,
    VM_EUNSUPPORTED = -5, // codec, version or feature we do not handle
    VM_ETIMEOUT = -6,
    VM_ERANGE = -7,       // index or value out of range (e.g. frame past the end)
    VM_EVERSION = -8,     // incompatible protocol or file version
    VM_ENOTFOUND = -9,
    VM_EAGAIN = -10,      // would block / try later
    VM_EAUTH = -11,       // refused by a peer's authentication, or a failed security handshake
};

typedef struct vm_error {
    int code;
    char msg[1024];
} vm_error;

// Format msg into err (when err is non-NULL) and return code, so that callers can write
// `return vm_fail(err, VM_EIO, "%s: %s", path, strerror(errno));`.
int vm_fail(vm_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int vm_vfail(vm_error *err, int code, const char *fmt, va_list ap);
// Prefix an existing message: "opening dataset: " + err->msg.  Returns err->code.
int vm_error_prefix(vm_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *vm_strerror(int code);

#ifdef __cplusplus
}
#endif
