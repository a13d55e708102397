// tests/harness.c — see harness.h.
#include "tests/harness.h"
#include <setjmp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <time.h>

#define VT_MAX_TESTS 1024
static struct { const char *name; vt_test_fn fn; } tests[VT_MAX_TESTS];
static int ntests;
static jmp_buf jump;
static char reason[2048];
static char tmpdir[512];

void vt_register(const char *name, vt_test_fn fn) {
    if (ntests == VT_MAX_TESTS) { fprintf(stderr, "harness: too many tests\n"); abort(); }
    tests[ntests].name = name;
    tests[ntests].fn = fn;
    ntests++;
}

void vt_fail(const char *file, int line, const char *expr, const char *fmt, ...) {
    int n = snprintf(reason, sizeof reason, "%s:%d: CHECK(%s) failed", file, line, expr);
    if (fmt && *fmt && n > 0 && n < (int)sizeof reason) {
        va_list ap;
        va_start(ap, fmt);
        snprintf(reason + n, sizeof reason - n, ": ");
        vsnprintf(reason + n + 2, sizeof reason - n - 2, fmt, ap);
        va_end(ap);
    }
    longjmp(jump, 1);
}

void vt_skip(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    longjmp(jump, 2);
}

const char *vt_data_dir(void) {
    const char *d = getenv("VICMAE_DATA");
    if (!d) d = "../shared/data";
    struct stat st;
    return stat(d, &st) == 0 && S_ISDIR(st.st_mode) ? d : NULL;
}

const char *vt_tmpdir(void) {
    if (!tmpdir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/vicmae-test-XXXXXX", base ? base : "/tmp");
        if (!mkdtemp(tmpdir)) { perror("mkdtemp"); abort(); }
    }
    return tmpdir;
}

static void rm_tmpdir(void) {
    if (!tmpdir[0]) return;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "harness: could not remove %s\n", tmpdir);
    tmpdir[0] = 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : getenv("VICMAE_TEST_FILTER");
    const char *prog = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    static int passed, failed, skipped, i;  // static: they live across longjmp
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (i = 0; i < ntests; i++) {
        if (filter && *filter && !strstr(tests[i].name, filter)) continue;
        reason[0] = 0;
        double t0 = now_s();
        int r = setjmp(jump);
        if (r == 0) {
            tests[i].fn();
            passed++;
            printf("PASS %s (%.2fs)\n", tests[i].name, now_s() - t0);
        } else if (r == 1) {
            failed++;
            printf("FAIL %s: %s\n", tests[i].name, reason);
        } else {
            skipped++;
            printf("SKIP %s: %s\n", tests[i].name, reason);
        }
        fflush(stdout);
    }
    if (failed == 0) rm_tmpdir();
    else if (tmpdir[0]) printf("(kept %s for inspection)\n", tmpdir);
    printf("%s: %d passed, %d failed, %d skipped\n", prog, passed, failed, skipped);
    return failed ? 1 : 0;
}
