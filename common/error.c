#include "common/error.h"
#include <stdio.h>
#include <string.h>

int vm_vfail(vm_error *err, int code, const char *fmt, va_list ap) {
    if (err) {
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    }
    return code;
}

int vm_fail(vm_error *err, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vm_vfail(err, code, fmt, ap);
    va_end(ap);
    return code;
}

int vm_error_prefix(vm_error *err, const char *fmt, ...) {
    if (!err) return VM_EINVAL;
    char prefix[512], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s%s", prefix, old);
    return err->code;
}

const char *vm_strerror(int code) {
    switch (code) {
    case VM_OK: return "ok";
    case VM_EINVAL: return "invalid argument";
    case VM_EIO: return "I/O error";
    case VM_ECORRUPT: return "corrupt input";
    case VM_ENOMEM: return "out of memory";
    case VM_EUNSUPPORTED: return "unsupported";
    case VM_ETIMEOUT: return "timed out";
    case VM_ERANGE: return "out of range";
    case VM_EVERSION: return "incompatible version";
    case VM_ENOTFOUND: return "not found";
    case VM_EAGAIN: return "try again";
    case VM_EAUTH: return "authentication failed";
    default: return "unknown error";
    }
}
