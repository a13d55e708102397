// trainer/safetensors.h — the safetensors file format (Hugging Face), read and written.
//
// Layout: u64 little-endian N, then N bytes of JSON header
//   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value", ...}}
// (padded with spaces to a multiple of 8), then the raw little-endian tensor bytes; offsets are
// relative to the end of the header.  We write tensors in the given order, back to back.  Reading
// checks everything a corrupt or truncated file could get wrong (header length, JSON, dtypes,
// shapes against byte ranges, ranges inside the file and not overlapping) and names the problem.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "common/error.h"

#define VM_ST_MAX_DIMS 8

typedef struct vm_st_tensor {
    const char *name;
    const char *dtype;                // "F32", "I32", "I64", "U8", "F64"
    int ndim;                         // 0 = scalar
    int64_t shape[VM_ST_MAX_DIMS];
    const void *data;                 // nbytes of little-endian values
    size_t nbytes;
} vm_st_tensor;

// Size in bytes of one element of dtype, 0 when unknown.
size_t vm_st_dtype_size(const char *dtype);

// Write n tensors and meta (NULL-terminated key, value pairs; may be NULL) atomically to path.
int vm_st_write(const char *path, const vm_st_tensor *tensors, int n, const char *const *meta, vm_error *err);

typedef struct vm_st_file vm_st_file;
// Read and validate a whole file.  The returned tensors point into the file's memory.
int vm_st_read(vm_st_file **out, const char *path, vm_error *err);
void vm_st_close(vm_st_file *f);
int vm_st_count(const vm_st_file *f);
const vm_st_tensor *vm_st_get(const vm_st_file *f, int i);
const vm_st_tensor *vm_st_find(const vm_st_file *f, const char *name);  // NULL if absent
const char *vm_st_meta(const vm_st_file *f, const char *key);           // NULL if absent
