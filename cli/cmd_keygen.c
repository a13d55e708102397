// cli/cmd_keygen.c — `vicmae keygen NAME`: a CURVE key pair for the pipeline (pipeline/curve.h).
//
// Part of the GStreamer-free vicmae-trainer binary too: the trainer's host makes its own key pair.
#include <stdio.h>
#include <string.h>
#include "cli/cli.h"
#include "pipeline/curve.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: vicmae keygen NAME\n"
            "  Write a CURVE key pair for the encrypted, authenticated pipeline:\n"
            "    NAME.key         the public key: safe to share\n"
            "    NAME.key_secret  the key pair, mode 0600: keep it on this host, never copy it elsewhere\n"
            "  Refuses to overwrite either file.  NAME may include a directory (keys/trainer).\n"
            "  On the trainer: vicmae keygen trainer, then in the config\n"
            "    [pipeline] curve_secret_key = trainer.key_secret\n"
            "               curve_clients = DIR  (the workers' .key files, or a file of their lines)\n"
            "  On each worker: vicmae keygen worker-N, copy worker-N.key to the trainer's DIR, copy\n"
            "  trainer.key here, then: vicmae worker --connect EP --server-key trainer.key --key worker-N.key_secret\n");
}

int cmd_keygen(int argc, char **argv) {
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    if (argc != 2 || argv[1][0] == '-' || !argv[1][0]) {
        usage(stderr);
        return 2;
    }
    vm_curve_key k;
    vm_error err = {0};
    char pub[4200], sec[4200];
    int rc = vm_curve_keygen(&k, &err);
    if (!rc) rc = vm_curve_key_write(argv[1], &k, pub, sec, sizeof pub, &err);
    memset(&k.sec, 0, sizeof k.sec);
    if (rc) {
        fprintf(stderr, "vicmae keygen: %s\n", err.msg);
        return rc == VM_EINVAL ? 2 : 1;
    }
    printf("wrote %s (public key %s: share it) and %s (secret, mode 0600: keep it here)\n", pub, k.pub, sec);
    return 0;
}
