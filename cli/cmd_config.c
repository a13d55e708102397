// vicmae config show [FILE] [--set k=v]... | vicmae config keys
#include <stdio.h>
#include <string.h>
#include "cli/cli.h"

int cmd_config(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "keys")) {
        vm_config_print_schema(stdout);
        return 0;
    }
    int help = argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"));
    if (argc < 2 || strcmp(argv[1], "show")) {
        fprintf(help ? stdout : stderr, "usage: vicmae config show [FILE] [--set section.key=value]...\n"
                                        "       vicmae config keys        (every key: type, default, allowed values)\n");
        return help ? 0 : 2;
    }
    // "config show FILE" is the same as "config show --config FILE".
    char *args[512];
    int n = 0;
    args[n++] = argv[0];
    for (int i = 2; i < argc && n < 509; i++) {
        if (argv[i][0] != '-' && (i == 2 || strcmp(argv[i - 1], "--set"))) {
            args[n++] = "--config";
        }
        args[n++] = argv[i];
    }
    args[n] = NULL;
    vm_config cfg;
    int rc = vm_cli_config(&n, args, &cfg);
    if (rc) return rc;
    if (n > 1) {
        fprintf(stderr, "vicmae config show: unexpected argument '%s'\n", args[1]);
        return 2;
    }
    vm_config_print(&cfg, stdout);
    return 0;
}
