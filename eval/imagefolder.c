// eval/imagefolder.c — ImageFolder scanning, JPEG/PNG decoding, eval resize + centre crop.
#include "eval/imagefolder.h"
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <jpeglib.h>
#include "common/config.h"
#include "common/io.h"

// ---- scanning ------------------------------------------------------------------------------------

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".png"));
}

// Sorted names of the entries of dir that pass keep (dirs = 1: sub-directories; 0: image files).
static int list_dir(const char *dir, int dirs, char ***names, int *count, vm_error *err) {
    DIR *d = opendir(dir);
    if (!d) return vm_fail(err, VM_EIO, "%s: %s", dir, strerror(errno));
    char **v = NULL;
    int n = 0, cap = 0, rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[VM_PATH_MAX * 2];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st)) continue;
        if (dirs ? !S_ISDIR(st.st_mode) : !(S_ISREG(st.st_mode) && is_image_name(e->d_name))) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nv = realloc(v, (size_t)cap * sizeof *v);
            if (!nv) { rc = vm_fail(err, VM_ENOMEM, "%s: out of memory", dir); break; }
            v = nv;
        }
        if (!(v[n] = strdup(e->d_name))) { rc = vm_fail(err, VM_ENOMEM, "%s: out of memory", dir); break; }
        n++;
    }
    closedir(d);
    if (rc) {
        for (int i = 0; i < n; i++) free(v[i]);
        free(v);
        return rc;
    }
    if (n) qsort(v, (size_t)n, sizeof *v, cmp_str);
    *names = v, *count = n;
    return 0;
}

static void free_names(char **v, int n) {
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

void vm_imagefolder_free(vm_imagefolder *f) {
    if (!f) return;
    free(f->root);
    free_names(f->classes, f->nclasses);
    free_names(f->paths, f->n);
    free(f->labels);
    memset(f, 0, sizeof *f);
}

int vm_imagefolder_scan(vm_imagefolder *f, const char *dir, int max_per_class, const vm_imagefolder *like,
                        vm_error *err) {
    memset(f, 0, sizeof *f);
    char **cls = NULL;
    int ncls = 0;
    int rc = list_dir(dir, 1, &cls, &ncls, err);
    if (rc) return rc;
    if (!ncls) return vm_fail(err, VM_ENOTFOUND, "%s: no class directories (expected DIR/<class>/<image>)", dir);
    if (!(f->root = strdup(dir))) { free_names(cls, ncls); return vm_fail(err, VM_ENOMEM, "out of memory"); }
    if (like) {
        // Labels follow the reference's class list; every class here must exist there.
        for (int c = 0; c < ncls; c++) {
            int found = 0;
            for (int k = 0; k < like->nclasses && !found; k++) found = !strcmp(cls[c], like->classes[k]);
            if (!found) {
                rc = vm_fail(err, VM_EINVAL, "%s: class '%s' is not a class of %s", dir, cls[c], like->root);
                free_names(cls, ncls);
                vm_imagefolder_free(f);
                return rc;
            }
        }
        free_names(cls, ncls);
        f->nclasses = like->nclasses;
        if (!(f->classes = calloc((size_t)like->nclasses, sizeof *f->classes))) goto oom;
        for (int k = 0; k < like->nclasses; k++)
            if (!(f->classes[k] = strdup(like->classes[k]))) goto oom;
    } else {
        f->classes = cls, f->nclasses = ncls;
    }
    int cap = 0;
    for (int c = 0; c < f->nclasses; c++) {
        char sub[VM_PATH_MAX * 2];
        snprintf(sub, sizeof sub, "%s/%s", dir, f->classes[c]);
        struct stat st;
        if (like && (stat(sub, &st) || !S_ISDIR(st.st_mode))) continue;  // class absent here
        char **imgs = NULL;
        int nimg = 0;
        if ((rc = list_dir(sub, 0, &imgs, &nimg, err))) { vm_imagefolder_free(f); return rc; }
        int keep = max_per_class > 0 && nimg > max_per_class ? max_per_class : nimg;
        for (int i = 0; i < keep; i++) {
            if (f->n == cap) {
                cap = cap ? cap * 2 : 1024;
                char **np = realloc(f->paths, (size_t)cap * sizeof *np);
                int32_t *nl = np ? realloc(f->labels, (size_t)cap * sizeof *nl) : NULL;
                if (np) f->paths = np;
                if (nl) f->labels = nl;
                if (!np || !nl) { free_names(imgs, nimg); goto oom; }
            }
            size_t len = strlen(sub) + strlen(imgs[i]) + 2;
            if (!(f->paths[f->n] = malloc(len))) { free_names(imgs, nimg); goto oom; }
            snprintf(f->paths[f->n], len, "%s/%s", sub, imgs[i]);
            f->labels[f->n++] = c;
        }
        free_names(imgs, nimg);
    }
    if (!f->n) {
        rc = vm_fail(err, VM_ENOTFOUND, "%s: no .jpg/.jpeg/.png images under its class directories", dir);
        vm_imagefolder_free(f);
        return rc;
    }
    return 0;
oom:
    vm_imagefolder_free(f);
    return vm_fail(err, VM_ENOMEM, "%s: out of memory", dir);
}

// ---- decoding ------------------------------------------------------------------------------------

typedef struct jpeg_err {
    struct jpeg_error_mgr mgr;
    jmp_buf jmp;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_on_error(j_common_ptr cinfo) {
    jpeg_err *e = (jpeg_err *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->msg);
    longjmp(e->jmp, 1);
}
static void jpeg_on_message(j_common_ptr cinfo) { (void)cinfo; }  // warnings: corrupt-but-decodable data

static int read_jpeg(const char *path, const unsigned char *buf, size_t len, uint8_t **rgb, int *w, int *h,
                     vm_error *err) {
    struct jpeg_decompress_struct cinfo;
    jpeg_err je;
    // volatile: assigned between setjmp and a possible longjmp.
    uint8_t *volatile out = NULL;
    cinfo.err = jpeg_std_error(&je.mgr);
    je.mgr.error_exit = jpeg_on_error;
    je.mgr.output_message = jpeg_on_message;
    if (setjmp(je.jmp)) {
        jpeg_destroy_decompress(&cinfo);
        free(out);
        return vm_fail(err, VM_ECORRUPT, "%s: JPEG: %s", path, je.msg);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, buf, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    cinfo.out_color_space = JCS_RGB;  // libjpeg-turbo converts gray/YCbCr; CMYK is refused below
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&cinfo);
        return vm_fail(err, VM_EUNSUPPORTED, "%s: CMYK JPEG", path);
    }
    jpeg_start_decompress(&cinfo);
    int W = (int)cinfo.output_width, H = (int)cinfo.output_height;
    out = malloc((size_t)W * H * 3);
    if (!out) {
        jpeg_destroy_decompress(&cinfo);
        return vm_fail(err, VM_ENOMEM, "%s: out of memory", path);
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = out + (size_t)cinfo.output_scanline * W * 3;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    *rgb = out, *w = W, *h = H;
    return 0;
}

static int read_file(const char *path, unsigned char **buf, size_t *len, vm_error *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return vm_fail(err, VM_EIO, "%s: %s", path, strerror(errno));
    unsigned char *b = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 1 << 16;
            unsigned char *nb = realloc(b, cap);
            if (!nb) { free(b); fclose(fp); return vm_fail(err, VM_ENOMEM, "%s: out of memory", path); }
            b = nb;
        }
        size_t got = fread(b + n, 1, cap - n, fp);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(fp);
    fclose(fp);
    if (bad) { free(b); return vm_fail(err, VM_EIO, "%s: read error", path); }
    *buf = b, *len = n;
    return 0;
}

int vm_image_read(const char *path, uint8_t **rgb, int *w, int *h, vm_error *err) {
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = read_file(path, &buf, &len, err);
    if (rc) return rc;
    if (len >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF) {
        rc = read_jpeg(path, buf, len, rgb, w, h, err);
        free(buf);
        return rc;
    }
    int png = len >= 8 && !memcmp(buf, "\x89PNG\r\n\x1a\n", 8);
    free(buf);
    if (png) return vm_png_read(path, rgb, w, h, err);  // common/io.h: libpng, to 8-bit RGB
    return vm_fail(err, VM_EUNSUPPORTED, "%s: neither JPEG nor PNG", path);
}

// ---- resize + centre crop ------------------------------------------------------------------------

// PIL's resampling coefficients (Imaging/Resample.c, precompute_coeffs) for the bilinear
// (triangle) filter: out pixel i reads in[lo[i] .. lo[i]+cnt[i]) with weights k[i*ksize ..].
// Downscaling widens the support by the scale, which is what antialiases.
typedef struct coeffs { int ksize; int *lo, *cnt; float *k; } coeffs;

static int make_coeffs(coeffs *c, int in, int out) {
    double scale = (double)in / out, fs = scale < 1 ? 1 : scale, support = 1.0 * fs;
    c->ksize = (int)ceil(support) * 2 + 1;
    c->lo = malloc((size_t)out * sizeof *c->lo), c->cnt = malloc((size_t)out * sizeof *c->cnt);
    c->k = calloc((size_t)out * c->ksize, sizeof *c->k);
    if (!c->lo || !c->cnt || !c->k) return VM_ENOMEM;
    for (int i = 0; i < out; i++) {
        double center = (i + 0.5) * scale, ww = 0, ss = 1.0 / fs;
        int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in) hi = in;
        int n = hi - lo;
        float *k = c->k + (size_t)i * c->ksize;
        for (int x = 0; x < n; x++) {
            double t = fabs((x + lo - center + 0.5) * ss), w = t < 1 ? 1 - t : 0;
            k[x] = (float)w, ww += w;
        }
        for (int x = 0; x < n && ww != 0; x++) k[x] = (float)(k[x] / ww);
        c->lo[i] = lo, c->cnt[i] = n;
    }
    return 0;
}
static void free_coeffs(coeffs *c) { free(c->lo), free(c->cnt), free(c->k); }

int vm_image_resize_crop(const uint8_t *src, int w, int h, uint8_t *dst, int size) {
    if (w == size && h == size) {
        memcpy(dst, src, (size_t)size * size * 3);
        return 0;
    }
    // torchvision Resize(int): the shorter side becomes size, the other int(size * long / short).
    int ow, oh;
    if (w <= h) ow = size, oh = (int)((long long)size * h / w);
    else oh = size, ow = (int)((long long)size * w / h);
    // CenterCrop: offsets int(round((in - size) / 2)) with Python's half-to-even rounding.
    int top = (int)nearbyint((oh - size) / 2.0), left = (int)nearbyint((ow - size) / 2.0);
    coeffs cx = {0}, cy = {0};
    float *tmp = malloc((size_t)h * size * 3 * sizeof *tmp);  // (h, size, 3): horizontal pass, cropped columns
    int rc = 0;
    if (!tmp || make_coeffs(&cx, w, ow) || make_coeffs(&cy, h, oh)) { rc = VM_ENOMEM; goto done; }
    for (int y = 0; y < h; y++)
        for (int x = 0; x < size; x++) {
            int ox = x + left;
            const float *k = cx.k + (size_t)ox * cx.ksize;
            const uint8_t *s = src + ((size_t)y * w + cx.lo[ox]) * 3;
            float a0 = 0, a1 = 0, a2 = 0;
            for (int j = 0; j < cx.cnt[ox]; j++) a0 += k[j] * s[3 * j], a1 += k[j] * s[3 * j + 1], a2 += k[j] * s[3 * j + 2];
            float *t = tmp + ((size_t)y * size + x) * 3;
            t[0] = a0, t[1] = a1, t[2] = a2;
        }
    for (int y = 0; y < size; y++) {
        int oy = y + top;
        const float *k = cy.k + (size_t)oy * cy.ksize;
        for (int x = 0; x < size * 3; x++) {
            float a = 0;
            for (int j = 0; j < cy.cnt[oy]; j++) a += k[j] * tmp[((size_t)(cy.lo[oy] + j) * size) * 3 + x];
            int v = (int)lrintf(a);
            dst[(size_t)y * size * 3 + x] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
done:
    free(tmp);
    free_coeffs(&cx), free_coeffs(&cy);
    return rc;
}

int vm_imagefolder_load(const vm_imagefolder *f, int i, int size, uint8_t *dst, vm_error *err) {
    if (i < 0 || i >= f->n) return vm_fail(err, VM_ERANGE, "%s: image %d of %d", f->root, i, f->n);
    uint8_t *rgb = NULL;
    int w = 0, h = 0;
    int rc = vm_image_read(f->paths[i], &rgb, &w, &h, err);
    if (rc) return rc;
    rc = vm_image_resize_crop(rgb, w, h, dst, size);
    free(rgb);
    if (rc) return vm_fail(err, rc, "%s: out of memory resizing %dx%d", f->paths[i], w, h);
    return 0;
}
