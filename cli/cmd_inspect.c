// cli/cmd_inspect.c — `vicmae inspect [--brief] [--dump-views DIR] FILE...`: validate batch files
// (one message each, as written by --save-batches) and print their header and metadata.
// Exit status: 0 every file valid, 2 a file invalid or unreadable (the reason on stderr), 1 when
// writing the PNGs failed.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/io.h"
#include "proto/proto.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: vicmae inspect [--brief] [--dump-views DIR] FILE...\n"
            "  Validate batch files (header, metadata, payload checksum) and print header and metadata.\n"
            "  --brief            header only, no per-sample table\n"
            "  --dump-views DIR   write every view as DIR/<file stem>_s<sample>_v<view>.png\n"
            "exit status: 0 valid, 2 invalid (reason on stderr), 1 PNG writing failed\n");
}

static void print_header(const char *path, const vm_batch_view *v) {
    const vm_batch_header *h = &v->h;
    printf("%s: valid batch message, %zu bytes\n", path, v->len);
    printf("  version      %u.%u (header %u bytes, sample record %u, view record %u)\n", h->version_major,
           h->version_minor, h->header_size, h->sample_rec_size, h->view_rec_size);
    printf("  shape        B=%u V=%u H=%u W=%u C=%u layout (B,V,H,W,C) uint8 RGB\n", h->batch, h->views, h->height,
           h->width, h->channels);
    printf("  codec        %s", vm_batch_codec_name(h->codec));
    if (h->codec == VM_BATCH_CODEC_LZ4) printf(" (%llu blocks of %u bytes)", (unsigned long long)v->nblocks, h->block_size);
    printf("\n  sizes        metadata %llu, raw %llu, payload %llu (ratio %.3f)\n", (unsigned long long)h->meta_size,
           (unsigned long long)h->raw_size, (unsigned long long)h->payload_size,
           h->payload_size ? (double)h->raw_size / (double)h->payload_size : 0.0);
    printf("  stream       epoch %u, work unit %llu, sample offset %u, sequence %llu, producer %u\n", h->epoch,
           (unsigned long long)h->work_unit, h->sample_offset, (unsigned long long)h->sequence, h->producer_id);
    printf("  flags        0x%x%s\n", h->flags, h->flags & VM_BATCH_F_UNIT_END ? " (unit-end)" : "");
    printf("  checksums    pixels %016llx, message %016llx (both verified)\n", (unsigned long long)h->payload_checksum,
           (unsigned long long)h->msg_checksum);
}

static void print_meta(const vm_batch_view *v) {
    printf("  %6s %20s %11s %4s %10s %14s %22s %4s\n", "sample", "video_id", "source", "view", "frame", "pts_s", "crop x,y,w,h", "flip");
    for (uint32_t b = 0; b < v->h.batch; b++) {
        vm_sample_meta s;
        vm_batch_get_sample(v, b, &s);
        for (uint32_t j = 0; j < v->h.views; j++) {
            vm_view_meta m;
            vm_batch_get_view(v, b, j, &m);
            char src[32] = "", crop[64];
            if (j == 0) snprintf(src, sizeof src, "%ux%u", s.src_width, s.src_height);
            snprintf(crop, sizeof crop, "%d,%d,%d,%d", m.crop_x, m.crop_y, m.crop_w, m.crop_h);
            if (j == 0) printf("  %6u %20llu %11s", b, (unsigned long long)s.video_id, src);
            else printf("  %6s %20s %11s", "", "", "");
            printf(" %4u %10lld %14.6f %22s %4u\n", j, (long long)m.frame, (double)m.pts_ns * 1e-9, crop, m.flip);
        }
    }
}

static int dump_views(const char *dir, const char *path, const vm_batch_view *v, const uint8_t *pixels) {
    vm_error err = {0};
    if (vm_mkdirs(dir, &err) != 0) {
        fprintf(stderr, "vicmae inspect: %s\n", err.msg);
        return 1;
    }
    // File stem: basename without its last extension.
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char stem[256];
    snprintf(stem, sizeof stem, "%s", base);
    char *dot = strrchr(stem, '.');
    if (dot && dot != stem) *dot = 0;
    const vm_batch_header *h = &v->h;
    size_t view_bytes = (size_t)h->height * h->width * h->channels;
    for (uint32_t b = 0; b < h->batch; b++)
        for (uint32_t j = 0; j < h->views; j++) {
            char out[2048];
            snprintf(out, sizeof out, "%s/%s_s%04u_v%02u.png", dir, stem, b, j);
            const uint8_t *rgb = pixels + ((size_t)b * h->views + j) * view_bytes;
            if (vm_png_write(out, rgb, (int)h->width, (int)h->height, &err) != 0) {
                fprintf(stderr, "vicmae inspect: %s\n", err.msg);
                return 1;
            }
        }
    printf("  wrote        %u PNG files to %s/%s_s*_v*.png\n", h->batch * h->views, dir, stem);
    return 0;
}

static int inspect_one(const char *path, int brief, const char *dump_dir) {
    vm_error err = {0};
    void *msg = NULL;
    size_t len = 0;
    if (vm_batch_file_read(path, &msg, &len, &err) != 0) {
        fprintf(stderr, "%s: invalid: %s\n", path, err.msg);
        return 2;
    }
    vm_batch_view v;
    int rc = vm_batch_parse(msg, len, &v, &err);
    uint8_t *pixels = NULL;
    if (rc == 0) {
        pixels = malloc(v.h.raw_size);
        if (!pixels) rc = vm_fail(&err, VM_ENOMEM, "cannot allocate %llu bytes for the pixels", (unsigned long long)v.h.raw_size);
        else rc = vm_batch_decode_pixels(&v, pixels, v.h.raw_size, &err);
    }
    int status = 0;
    if (rc != 0) {
        fprintf(stderr, "%s: invalid: %s\n", path, err.msg);
        status = 2;
    } else {
        print_header(path, &v);
        if (!brief) print_meta(&v);
        if (dump_dir) status = dump_views(dump_dir, path, &v, pixels);
    }
    free(pixels);
    free(msg);
    return status;
}

int cmd_inspect(int argc, char **argv) {
    int brief = 0, nfiles = 0, status = 0;
    const char *dump_dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--brief")) {
            brief = 1;
        } else if (!strcmp(argv[i], "--dump-views")) {
            if (++i >= argc) {
                fprintf(stderr, "vicmae inspect: --dump-views needs a directory\n");
                return 2;
            }
            dump_dir = argv[i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "vicmae inspect: unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dump-views")) {
            i++;
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1]) continue;
        nfiles++;
        int rc = inspect_one(argv[i], brief, dump_dir);
        if (rc == 2 || (rc && !status)) status = rc;
    }
    if (!nfiles) {
        usage(stderr);
        return 2;
    }
    return status;
}
