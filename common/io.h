// common/io.h — files for people and for Python (PNG, .npy), atomic writes, directories, clock.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "common/error.h"

#ifdef __cplusplus
extern "C" {
#endif

// Write an 8-bit RGB image (H, W, 3), rows tightly packed, as PNG.
int vm_png_write(const char *path, const uint8_t *rgb, int width, int height, vm_error *err);
// Read a PNG as 8-bit RGB; *rgb is malloc'ed (caller frees).
int vm_png_read(const char *path, uint8_t **rgb, int *width, int *height, vm_error *err);
// Write a C-order array as numpy's .npy (format 1.0).  dtype is numpy's descr, e.g. "|u1", "<f4".
int vm_npy_write(const char *path, const void *data, const char *dtype, size_t elem_size, const int64_t *shape,
                 int ndim, vm_error *err);
// Write a file atomically: content goes to path.tmp.<pid>, fsync'ed, then renamed over path.
int vm_write_file_atomic(const char *path, const void *data, size_t size, vm_error *err);
// The whole of a regular file into *data (malloc'ed, caller frees; a NUL follows the *len bytes, so a
// text file is a C string).  Refused with code `refused`: a path that is not a regular file ("not a
// regular file"); with VM_ERANGE: one larger than max_bytes.  VM_EIO: open or read failed (or the
// file shrank meanwhile).  *mode, when mode is not NULL: the file's st_mode.
int vm_read_file(const char *path, size_t max_bytes, int refused, void **data, size_t *len, unsigned *mode,
                 vm_error *err);
// Create a directory and its parents (mkdir -p).
int vm_mkdirs(const char *path, vm_error *err);
// Monotonic clock in seconds.
double vm_now(void);

#ifdef __cplusplus
}
#endif
