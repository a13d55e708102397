// Tests of `vicmae inspect`: exit 0 with header and metadata for a valid batch file, 2 with the
// reason for an invalid one, and --dump-views writing every view as a PNG that reads back exactly.
// Runs the binary named by $VICMAE_BIN (tests/run.sh sets it); skips when it is not built.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "common/io.h"
#include "proto/proto.h"
#include "tests/harness.h"
#include "tests/test_proto_util.h"

static const char *vicmae_bin(void) {
    const char *b = getenv("VICMAE_BIN");
    if (!b || access(b, X_OK) != 0) SKIP("no vicmae binary at $VICMAE_BIN (%s): inspect is tested by `make test`", b ? b : "unset");
    return b;
}

// Run `vicmae inspect ARGS`, capturing stdout and stderr; returns the exit status.
static int run_inspect(const char *args, char *out, size_t out_cap, char *errs, size_t err_cap) {
    char cmd[4096], po[1024], pe[1024];
    snprintf(po, sizeof po, "%s/stdout", vt_tmpdir());
    snprintf(pe, sizeof pe, "%s/stderr", vt_tmpdir());
    snprintf(cmd, sizeof cmd, "'%s' inspect %s >'%s' 2>'%s'", vicmae_bin(), args, po, pe);
    int st = system(cmd);
    CHECK(st != -1 && WIFEXITED(st), "could not run: %s", cmd);
    const char *paths[2] = {po, pe};
    char *bufs[2] = {out, errs};
    size_t caps[2] = {out_cap, err_cap};
    for (int i = 0; i < 2; i++) {
        FILE *fp = fopen(paths[i], "r");
        CHECK(fp != NULL);
        size_t n = fread(bufs[i], 1, caps[i] - 1, fp);
        bufs[i][n] = 0;
        fclose(fp);
    }
    return WEXITSTATUS(st);
}

static char *write_batch(const char *name, tp_batch *t, uint32_t codec) {
    static char path[1024];
    tp_batch_init(t, 2, 2, 12, 16, codec, 0, 21);
    vm_error err = {0};
    size_t len;
    uint8_t *msg = tp_encode(t, &len, &err);
    CHECK(msg != NULL, "%s", err.msg);
    snprintf(path, sizeof path, "%s/%s", vt_tmpdir(), name);
    CHECK_OK(vm_batch_file_write(path, msg, len, &err), err);
    free(msg);
    return path;
}

TEST(inspect_valid_file_prints_header_and_metadata) {
    vicmae_bin();  // skip before allocating
    static char out[1 << 16], errs[1 << 12];
    for (uint32_t codec = 0; codec <= 1; codec++) {
        tp_batch t;
        char args[2048];
        snprintf(args, sizeof args, "'%s'", write_batch("ok.vmb", &t, codec));
        int rc = run_inspect(args, out, sizeof out, errs, sizeof errs);
        CHECK_EQ_INT(rc, 0);
        CHECK(strstr(out, "valid batch message"), "%s", out);
        CHECK(strstr(out, "B=2 V=2 H=12 W=16 C=3"), "%s", out);
        CHECK(strstr(out, codec ? "codec        lz4" : "codec        none"), "%s", out);
        CHECK(strstr(out, "work unit 20015998343889"), "%s", out);  // 0x123456789abc + 21
        CHECK(strstr(out, "unit-end"), "%s", out);
        CHECK(strstr(out, "1022") && strstr(out, "1,1,201,150"), "per-sample metadata: %s", out);
        tp_batch_free(&t);
    }
}

TEST(inspect_invalid_file_exits_2_with_reason) {
    vicmae_bin();  // skip before allocating
    static char out[1 << 16], errs[1 << 12];
    tp_batch t;
    char *path = write_batch("bad.vmb", &t, VM_BATCH_CODEC_LZ4);
    FILE *fp = fopen(path, "r+b");
    CHECK(fp != NULL);
    fseek(fp, 300, SEEK_SET);
    int c = fgetc(fp);
    fseek(fp, 300, SEEK_SET);
    fputc(c ^ 0x40, fp);
    fclose(fp);
    char args[2048];
    snprintf(args, sizeof args, "'%s'", path);
    CHECK_EQ_INT(run_inspect(args, out, sizeof out, errs, sizeof errs), 2);
    CHECK(strstr(errs, "bad.vmb: invalid: batch message: message checksum mismatch"), "%s", errs);

    CHECK(truncate(path, 100) == 0);
    CHECK_EQ_INT(run_inspect(args, out, sizeof out, errs, sizeof errs), 2);
    CHECK(strstr(errs, "truncated"), "%s", errs);

    snprintf(args, sizeof args, "'%s/missing.vmb'", vt_tmpdir());
    CHECK_EQ_INT(run_inspect(args, out, sizeof out, errs, sizeof errs), 2);
    CHECK(strstr(errs, "missing.vmb: invalid:") && strstr(errs, "No such file"), "%s", errs);
    CHECK_EQ_INT(run_inspect("", out, sizeof out, errs, sizeof errs), 2);
    CHECK(strstr(errs, "usage"), "%s", errs);
    tp_batch_free(&t);
}

TEST(inspect_dump_views_writes_pngs) {
    vicmae_bin();  // skip before allocating
    static char out[1 << 16], errs[1 << 12];
    tp_batch t;
    char *path = write_batch("dump.vmb", &t, VM_BATCH_CODEC_LZ4);
    char dir[1024], args[4096];
    snprintf(dir, sizeof dir, "%s/views", vt_tmpdir());
    snprintf(args, sizeof args, "--brief --dump-views '%s' '%s'", dir, path);
    CHECK_EQ_INT(run_inspect(args, out, sizeof out, errs, sizeof errs), 0);
    CHECK(strstr(out, "wrote        4 PNG files"), "%s", out);
    CHECK(!strstr(out, "video_id"), "--brief omits the metadata table: %s", out);
    for (uint32_t b = 0; b < 2; b++)
        for (uint32_t j = 0; j < 2; j++) {
            char png[2048];
            snprintf(png, sizeof png, "%s/dump_s%04u_v%02u.png", dir, b, j);
            uint8_t *rgb;
            int w, h;
            vm_error err = {0};
            CHECK_OK(vm_png_read(png, &rgb, &w, &h, &err), err);
            CHECK(w == 16 && h == 12);
            CHECK(memcmp(rgb, t.pixels + (size_t)(b * 2 + j) * 12 * 16 * 3, 12 * 16 * 3) == 0, "view %u/%u differs", b, j);
            free(rgb);
        }
    tp_batch_free(&t);
}
