#include "cli/cli.h"
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "common/log.h"

int vm_cli_config(int *argc, char **argv, vm_config *cfg) {
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
    if (!path && access("configs/demo.ini", R_OK) == 0) path = "configs/demo.ini";
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

const char *vm_cli_self(void) {
    static char self[4096];
    if (!self[0]) {
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0) snprintf(self, sizeof self, "vicmae");
        else self[n] = 0;
    }
    return self;
}
