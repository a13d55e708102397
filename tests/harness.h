// tests/harness.h — the project's small test runner (no dependency).
//
//   TEST(name) { CHECK(x == 1, "x was %d", x); ... }   registers a test at load time
//   SKIP("no GPU: %s", why)                             ends the test as skipped, with a reason
//   CHECK_NEAR(a, b, tol)  CHECK_EQ_INT(a, b)  CHECK_OK(rc, err)
//
// A failing check anywhere (also in a helper function) ends the current test through longjmp.
// The binary prints one line per test and ends with "<binary>: N passed, N failed, N skipped";
// tests/run.sh sums the binaries.  Filter with VICMAE_TEST_FILTER=substring or argv[1].
#pragma once
#include <stdio.h>
#include <math.h>

#ifdef __cplusplus  // tests/test_*.cu (nvcc, host code) link the C harness.o
extern "C" {
#endif

typedef void (*vt_test_fn)(void);
void vt_register(const char *name, vt_test_fn fn);
void vt_fail(const char *file, int line, const char *expr, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));
void vt_skip(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

// Directory of the shared real data (default ../shared/data, or $VICMAE_DATA); NULL if absent.
const char *vt_data_dir(void);
// A fresh temporary directory for this test (removed when the binary exits if the test passed).
const char *vt_tmpdir(void);

#ifdef __cplusplus
}
#endif

#define TEST(name)                                                                   \
    static void name(void);                                                          \
    __attribute__((constructor)) static void vt_reg_##name(void) { vt_register(#name, name); } \
    static void name(void)

#define CHECK(cond, ...)                                                             \
    do { if (!(cond)) vt_fail(__FILE__, __LINE__, #cond, "" __VA_ARGS__); } while (0)
#define CHECK_EQ_INT(a, b)                                                           \
    do { long long vt_a = (long long)(a), vt_b = (long long)(b);                     \
         if (vt_a != vt_b) vt_fail(__FILE__, __LINE__, #a " == " #b, "%lld != %lld", vt_a, vt_b); } while (0)
#define CHECK_NEAR(a, b, tol)                                                        \
    do { double vt_a = (double)(a), vt_b = (double)(b);                              \
         if (!(fabs(vt_a - vt_b) <= (tol)))                                          \
             vt_fail(__FILE__, __LINE__, #a " ~= " #b, "%.9g vs %.9g (tol %g)", vt_a, vt_b, (double)(tol)); } while (0)
// rc is a vicmae return code (0 = ok), err a vm_error whose message explains a failure.
#define CHECK_OK(rc, err)                                                            \
    do { int vt_rc = (rc); if (vt_rc != 0) vt_fail(__FILE__, __LINE__, #rc, "rc %d: %s", vt_rc, (err).msg); } while (0)
#define SKIP(...) vt_skip(__VA_ARGS__)
