// trainer/safetensors.c — safetensors read/write with cJSON for the header.
#include "trainer/safetensors.h"
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include "common/io.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this file copies host memory as is"
#endif

// A header larger than this is not a checkpoint of ours (ViT-H has ~600 tensors, ~60 KB).
#define ST_MAX_HEADER (100u << 20)

struct vm_st_file {
    unsigned char *buf;   // the whole file
    size_t size;
    vm_st_tensor *t;
    int n;
    cJSON *meta;          // "__metadata__" object (owned by root)
    cJSON *root;
};

size_t vm_st_dtype_size(const char *dtype) {
    static const struct { const char *name; size_t size; } types[] = {
        {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}, {"I16", 2},
        {"I8", 1}, {"U8", 1}, {"BOOL", 1}, {"U16", 2}, {"U32", 4}, {"U64", 8},
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(types[i].name, dtype)) return types[i].size;
    return 0;
}

static size_t numel_of(const int64_t *shape, int ndim) {
    size_t n = 1;
    for (int d = 0; d < ndim; d++) n *= (size_t)shape[d];
    return n;
}

int vm_st_write(const char *path, const vm_st_tensor *t, int n, const char *const *meta, vm_error *err) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return vm_fail(err, VM_ENOMEM, "%s: out of memory for the header", path);
    if (meta && meta[0]) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; m && meta[i] && meta[i + 1]; i += 2) cJSON_AddStringToObject(m, meta[i], meta[i + 1]);
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        size_t es = vm_st_dtype_size(t[i].dtype);
        if (!es || t[i].ndim < 0 || t[i].ndim > VM_ST_MAX_DIMS || numel_of(t[i].shape, t[i].ndim) * es != t[i].nbytes) {
            cJSON_Delete(root);
            return vm_fail(err, VM_EINVAL, "%s: tensor %s: dtype %s and shape do not match %zu bytes", path,
                           t[i].name, t[i].dtype, t[i].nbytes);
        }
        if (cJSON_GetObjectItemCaseSensitive(root, t[i].name)) {
            cJSON_Delete(root);
            return vm_fail(err, VM_EINVAL, "%s: tensor name %s given twice", path, t[i].name);
        }
        cJSON *e = cJSON_AddObjectToObject(root, t[i].name);
        cJSON_AddStringToObject(e, "dtype", t[i].dtype);
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < t[i].ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t[i].shape[d]));
        cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + t[i].nbytes)));
        off += t[i].nbytes;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) return vm_fail(err, VM_ENOMEM, "%s: out of memory for the header", path);
    size_t hlen = strlen(json), padded = (hlen + 7) / 8 * 8;
    size_t total = 8 + padded + off;
    unsigned char *buf = malloc(total);
    if (!buf) {
        free(json);
        return vm_fail(err, VM_ENOMEM, "%s: out of memory (%zu bytes)", path, total);
    }
    uint64_t le = padded;
    memcpy(buf, &le, 8);
    memcpy(buf + 8, json, hlen);
    memset(buf + 8 + hlen, ' ', padded - hlen);
    free(json);
    unsigned char *p = buf + 8 + padded;
    for (int i = 0; i < n; i++) {
        if (t[i].nbytes) memcpy(p, t[i].data, t[i].nbytes);
        p += t[i].nbytes;
    }
    int rc = vm_write_file_atomic(path, buf, total, err);
    free(buf);
    return rc;
}

void vm_st_close(vm_st_file *f) {
    if (!f) return;
    cJSON_Delete(f->root);
    free(f->t);
    free(f->buf);
    free(f);
}

static int cmp_range(const void *a, const void *b) {
    const size_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : (x[1] < y[1] ? -1 : x[1] > y[1]);
}

static int parse(vm_st_file *f, const char *path, vm_error *err) {
    if (f->size < 8) return vm_fail(err, VM_ECORRUPT, "%s: %zu bytes, shorter than the 8-byte header length", path, f->size);
    uint64_t hlen;
    memcpy(&hlen, f->buf, 8);
    if (hlen > ST_MAX_HEADER || hlen > f->size - 8)
        return vm_fail(err, VM_ECORRUPT, "%s: header length %llu does not fit the file of %zu bytes (truncated or not safetensors)",
                       path, (unsigned long long)hlen, f->size);
    const char *end = NULL;
    f->root = cJSON_ParseWithLengthOpts((const char *)f->buf + 8, (size_t)hlen, &end, 0);
    if (!f->root || !cJSON_IsObject(f->root))
        return vm_fail(err, VM_ECORRUPT, "%s: header is not a JSON object (bad JSON near byte %ld)", path,
                       end ? (long)(end - (const char *)f->buf) : -1L);
    size_t data_start = 8 + (size_t)hlen, data_size = f->size - data_start;
    int n = cJSON_GetArraySize(f->root);
    f->t = calloc((size_t)n + 1, sizeof *f->t);
    size_t *ranges = calloc(2 * (size_t)n + 2, sizeof *ranges);
    if (!f->t || !ranges) {
        free(ranges);
        return vm_fail(err, VM_ENOMEM, "%s: out of memory", path);
    }
    int nr = 0;
    for (cJSON *e = f->root->child; e; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) {
            if (!cJSON_IsObject(e)) goto bad_meta;
            for (cJSON *kv = e->child; kv; kv = kv->next)
                if (!cJSON_IsString(kv)) goto bad_meta;
            f->meta = e;
            continue;
        }
        vm_st_tensor *t = &f->t[f->n];
        const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
        const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        if (!cJSON_IsObject(e) || !cJSON_IsString(dtype) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs) ||
            cJSON_GetArraySize(offs) != 2) {
            free(ranges);
            return vm_fail(err, VM_ECORRUPT, "%s: tensor %s: entry needs dtype, shape and two data_offsets", path, e->string);
        }
        size_t es = vm_st_dtype_size(dtype->valuestring);
        if (!es) {
            free(ranges);
            return vm_fail(err, VM_ECORRUPT, "%s: tensor %s: unknown dtype %s", path, e->string, dtype->valuestring);
        }
        t->name = e->string;
        t->dtype = dtype->valuestring;
        t->ndim = cJSON_GetArraySize(shape);
        if (t->ndim > VM_ST_MAX_DIMS) {
            free(ranges);
            return vm_fail(err, VM_EUNSUPPORTED, "%s: tensor %s: %d dimensions (at most %d)", path, t->name, t->ndim,
                           VM_ST_MAX_DIMS);
        }
        size_t numel = 1;
        int d = 0;
        for (const cJSON *s = shape->child; s; s = s->next, d++) {
            if (!cJSON_IsNumber(s) || s->valuedouble < 0 || s->valuedouble > 1e15 || s->valuedouble != (double)(int64_t)s->valuedouble) {
                free(ranges);
                return vm_fail(err, VM_ECORRUPT, "%s: tensor %s: bad shape entry", path, t->name);
            }
            t->shape[d] = (int64_t)s->valuedouble;
            numel *= (size_t)t->shape[d];
        }
        double b = cJSON_GetArrayItem(offs, 0)->valuedouble, en = cJSON_GetArrayItem(offs, 1)->valuedouble;
        if (!cJSON_IsNumber(cJSON_GetArrayItem(offs, 0)) || !cJSON_IsNumber(cJSON_GetArrayItem(offs, 1)) || b < 0 ||
            en < b || en > (double)data_size || b != (double)(size_t)b || en != (double)(size_t)en) {
            free(ranges);
            return vm_fail(err, VM_ECORRUPT, "%s: tensor %s: data_offsets [%.0f, %.0f] outside the %zu data bytes (truncated?)",
                           path, t->name, b, en, data_size);
        }
        t->nbytes = (size_t)en - (size_t)b;
        if (t->nbytes != numel * es) {
            free(ranges);
            return vm_fail(err, VM_ECORRUPT, "%s: tensor %s: %zu bytes for %zu elements of %s", path, t->name, t->nbytes,
                           numel, t->dtype);
        }
        t->data = f->buf + data_start + (size_t)b;
        ranges[2 * nr] = (size_t)b;
        ranges[2 * nr + 1] = (size_t)en;
        nr++;
        f->n++;
    }
    // Byte ranges must not overlap (the format also wants them to tile the data; we only need no
    // aliasing, so trailing bytes or holes from other writers are accepted).
    qsort(ranges, (size_t)nr, 2 * sizeof *ranges, cmp_range);
    for (int i = 1; i < nr; i++)
        if (ranges[2 * i] < ranges[2 * i - 1] && ranges[2 * i] != ranges[2 * i + 1]) {
            size_t at = ranges[2 * i];
            free(ranges);
            return vm_fail(err, VM_ECORRUPT, "%s: tensor byte ranges overlap at offset %zu", path, at);
        }
    free(ranges);
    return 0;
bad_meta:
    free(ranges);
    return vm_fail(err, VM_ECORRUPT, "%s: __metadata__ must be an object of strings", path);
}

int vm_st_read(vm_st_file **out, const char *path, vm_error *err) {
    *out = NULL;
    vm_st_file *f = calloc(1, sizeof *f);
    if (!f) return vm_fail(err, VM_ENOMEM, "%s: out of memory", path);
    void *buf = NULL;
    int rc = vm_read_file(path, SIZE_MAX, VM_EIO, &buf, &f->size, NULL, err);
    if (!rc) f->buf = buf, rc = parse(f, path, err);
    if (rc) {
        vm_st_close(f);
        return rc;
    }
    *out = f;
    return 0;
}

int vm_st_count(const vm_st_file *f) { return f->n; }
const vm_st_tensor *vm_st_get(const vm_st_file *f, int i) { return i >= 0 && i < f->n ? &f->t[i] : NULL; }

const vm_st_tensor *vm_st_find(const vm_st_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

const char *vm_st_meta(const vm_st_file *f, const char *key) {
    if (!f->meta) return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(f->meta, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}
