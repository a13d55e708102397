#include "common/io.h"
#include <errno.h>
#include <fcntl.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int vm_png_write(const char *path, const uint8_t *rgb, int width, int height, vm_error *err) {
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)width;
    img.height = (png_uint_32)height;
    img.format = PNG_FORMAT_RGB;
    if (!png_image_write_to_file(&img, path, 0, rgb, width * 3, NULL)) {
        int rc = vm_fail(err, VM_EIO, "%s: writing PNG failed: %s", path, img.message);
        png_image_free(&img);
        return rc;
    }
    return 0;
}

int vm_png_read(const char *path, uint8_t **rgb, int *width, int *height, vm_error *err) {
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&img, path))
        return vm_fail(err, VM_ECORRUPT, "%s: not a readable PNG: %s", path, img.message);
    img.format = PNG_FORMAT_RGB;
    uint8_t *buf = malloc(PNG_IMAGE_SIZE(img));
    if (!buf) { png_image_free(&img); return vm_fail(err, VM_ENOMEM, "%s: out of memory", path); }
    if (!png_image_finish_read(&img, NULL, buf, 0, NULL)) {
        free(buf);
        return vm_fail(err, VM_ECORRUPT, "%s: decoding PNG failed: %s", path, img.message);
    }
    *rgb = buf;
    *width = (int)img.width;
    *height = (int)img.height;
    return 0;
}

int vm_npy_write(const char *path, const void *data, const char *dtype, size_t elem_size, const int64_t *shape,
                 int ndim, vm_error *err) {
    char dict[512];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", dtype);
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        n += snprintf(dict + n, sizeof dict - n, "%lld%s", (long long)shape[i], ndim == 1 ? "," : (i + 1 < ndim ? ", " : ""));
        count *= (size_t)shape[i];
    }
    n += snprintf(dict + n, sizeof dict - n, "), }");
    // Header = magic(6) + version(2) + len(2) + dict padded with spaces and '\n' to a multiple of 64.
    size_t total = 10 + (size_t)n + 1;
    size_t pad = (64 - total % 64) % 64;
    size_t hlen = (size_t)n + pad + 1;
    FILE *fp = fopen(path, "wb");
    if (!fp) return vm_fail(err, VM_EIO, "%s: %s", path, strerror(errno));
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 0xff), (unsigned char)(hlen >> 8)};
    int ok = fwrite(pre, 1, 10, fp) == 10 && fwrite(dict, 1, (size_t)n, fp) == (size_t)n;
    for (size_t i = 0; ok && i < pad; i++) ok = fputc(' ', fp) != EOF;
    ok = ok && fputc('\n', fp) != EOF && fwrite(data, elem_size, count, fp) == count;
    if (fclose(fp) != 0) ok = 0;
    return ok ? 0 : vm_fail(err, VM_EIO, "%s: write failed", path);
}

int vm_write_file_atomic(const char *path, const void *data, size_t size, vm_error *err) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return vm_fail(err, VM_EIO, "%s: %s", tmp, strerror(errno));
    const char *p = data;
    size_t left = size;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd);
            unlink(tmp);
            return vm_fail(err, VM_EIO, "%s: %s", tmp, strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        unlink(tmp);
        return vm_fail(err, VM_EIO, "%s: %s", tmp, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return vm_fail(err, VM_EIO, "rename %s -> %s: %s", tmp, path, strerror(e));
    }
    return 0;
}

int vm_read_file(const char *path, size_t max_bytes, int refused, void **data, size_t *len, unsigned *mode,
                 vm_error *err) {
    *data = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return vm_fail(err, VM_EIO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return vm_fail(err, refused, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > max_bytes) {
        close(fd);
        return vm_fail(err, VM_ERANGE, "%s: %lld bytes, larger than %zu", path, (long long)sb.st_size, max_bytes);
    }
    size_t n = (size_t)sb.st_size;
    uint8_t *buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return vm_fail(err, VM_ENOMEM, "%s: cannot allocate %zu bytes", path, n);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : 0;
            free(buf);
            close(fd);
            return vm_fail(err, VM_EIO, "%s: %s", path, e ? strerror(e) : "file shrank while reading");
        }
        got += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    *data = buf;
    *len = n;
    if (mode) *mode = (unsigned)sb.st_mode;
    return 0;
}

int vm_mkdirs(const char *path, vm_error *err) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return vm_fail(err, VM_EIO, "mkdir %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return vm_fail(err, VM_EIO, "mkdir %s: %s", buf, strerror(errno));
    return 0;
}

double vm_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
