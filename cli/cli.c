#include "cli/cli.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <stdlib.h>
#include "common/log.h"
#include "eval/export.h"
#include "trainer/loop.h"
#include "trainer/state.h"

// base_text: INI text loaded when no --config is given (NULL: configs/demo.ini when present).
static int cli_config(int *argc, char **argv, vm_config *cfg, const char *base_text, const char *base_origin) {
    const char *path = NULL;
    const char *sets[256];
    int nsets = 0, out = 1;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i];
        if ((!strcmp(a, "--config") || !strcmp(a, "--set")) && i + 1 >= *argc) {
            fprintf(stderr, "vicmae %s: %s needs a value\n", argv[0], a);
            return 2;
        }
        if (!strcmp(a, "--config")) path = argv[++i];
        else if (!strncmp(a, "--config=", 9)) path = a + 9;
        else if (!strcmp(a, "--set") || !strncmp(a, "--set=", 6)) {
            const char *v = a[5] == '=' ? a + 6 : argv[++i];
            if (nsets == 256) { fprintf(stderr, "vicmae: too many --set options\n"); return 2; }
            sets[nsets++] = v;
        } else argv[out++] = argv[i];
    }
    *argc = out;
    argv[out] = NULL;
    vm_config_defaults(cfg);
    vm_error err = {0};
    if (!path && base_text) {
        if (vm_config_load_text(cfg, base_text, base_origin, &err)) {
            fprintf(stderr, "vicmae: %s\n", err.msg);
            return 2;
        }
    } else if (!path && access("configs/demo.ini", R_OK) == 0) path = "configs/demo.ini";
    if (path && vm_config_load(cfg, path, &err)) {
        fprintf(stderr, "vicmae: %s\n", err.msg);
        return 2;
    }
    for (int i = 0; i < nsets; i++)
        if (vm_config_override(cfg, sets[i], &err)) {
            fprintf(stderr, "vicmae: %s\n", err.msg);
            return 2;
        }
    if (vm_config_validate(cfg, &err)) {
        fprintf(stderr, "vicmae: %s%s%s\n", path ? path : "", path ? ": " : "", err.msg);
        return 2;
    }
    return 0;
}

int vm_cli_config(int *argc, char **argv, vm_config *cfg) { return cli_config(argc, argv, cfg, NULL, NULL); }

// cli_config on the configuration text stored in file (a checkpoint's or a training state's); frees it.
static int cli_config_stored(int *argc, char **argv, vm_config *cfg, char *stored, const char *file) {
    char origin[VM_PATH_MAX + 96];
    snprintf(origin, sizeof origin, "%s (stored config)", file);
    int rc = cli_config(argc, argv, cfg, stored, origin);
    free(stored);
    return rc;
}

int vm_cli_config_resume(int *argc, char **argv, char *state_path, size_t cap, vm_config *cfg) {
    const char *resume = NULL;
    for (int i = 1; i + 1 < *argc; i++)
        if (!strcmp(argv[i], "--resume")) resume = argv[i + 1];
    char own[VM_PATH_MAX + 64];
    if (!state_path) state_path = own, cap = sizeof own;
    state_path[0] = 0;
    if (!resume) return cli_config(argc, argv, cfg, NULL, NULL);
    vm_train_state_path(resume, state_path, cap);
    vm_train_state st;
    char *stored = NULL;
    vm_error err = {0};
    if (vm_state_peek(state_path, &st, &stored, &err)) {
        fprintf(stderr, "vicmae %s: cannot resume: %s\n", argv[0], err.msg);
        return 1;
    }
    return cli_config_stored(argc, argv, cfg, stored, state_path);
}

int vm_cli_config_ckpt(int *argc, char **argv, const char *ckpt, vm_config *cfg) {
    int have_config = 0;
    for (int i = 1; i < *argc; i++)
        if (!strcmp(argv[i], "--config") || !strncmp(argv[i], "--config=", 9)) have_config = 1;
    if (have_config || !ckpt) return cli_config(argc, argv, cfg, NULL, NULL);
    char *ini = NULL;
    vm_error err = {0};
    if (vm_ckpt_config(ckpt, &ini, &err)) {
        fprintf(stderr, "vicmae %s: %s\n", argv[0], err.msg);
        return 2;
    }
    return cli_config_stored(argc, argv, cfg, ini, ckpt);
}

int vm_cli_int(const char *cmd, const char *flag, const char *v, long lo, long hi, int *out) {
    char *end = NULL;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || end == v || *end || errno || x < lo || x > hi) {
        fprintf(stderr, "vicmae %s: %s '%s': expected an integer in [%ld, %ld]\n", cmd, flag, v ? v : "", lo, hi);
        return 2;
    }
    *out = (int)x;
    return 0;
}

int vm_cli_num(const char *cmd, const char *flag, const char *v, double lo, double hi, double *out) {
    char *end = NULL;
    double x = v ? strtod(v, &end) : 0;
    if (!v || end == v || *end || !(x >= lo && x <= hi)) {
        if (isinf(hi)) fprintf(stderr, "vicmae %s: %s '%s': expected a number >= %g\n", cmd, flag, v ? v : "", lo);
        else fprintf(stderr, "vicmae %s: %s '%s': expected a number in [%g, %g]\n", cmd, flag, v ? v : "", lo, hi);
        return 2;
    }
    *out = x;
    return 0;
}

int vm_cli_u64(const char *cmd, const char *flag, const char *v, uint64_t *out) {
    char *end = NULL;
    errno = 0;
    unsigned long long x = v && *v >= '0' && *v <= '9' ? strtoull(v, &end, 10) : 0;
    if (!end || *end || errno) {
        fprintf(stderr, "vicmae %s: %s '%s': expected an integer in [0, %llu]\n", cmd, flag, v ? v : "",
                (unsigned long long)UINT64_MAX);
        return 2;
    }
    *out = x;
    return 0;
}

const char *vm_cli_self(void) {
    static char self[4096];
    if (!self[0]) {
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0) snprintf(self, sizeof self, "vicmae");
        else self[n] = 0;
    }
    return self;
}
