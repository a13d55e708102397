// cli/main.c — `vicmae <command> ...`: the table of subcommands.
//
// A command whose module is not in this binary (the GStreamer-free `vicmae-trainer` has no decoder,
// sampler or worker) resolves to the weak alias of its fallback below, which says so instead of
// failing to link; the usage lists only the commands this binary has.
#include <stdio.h>
#include <string.h>
#include "common/log.h"

typedef int (*cmd_fn)(int argc, char **argv);

#define COMMANDS(X)                                                                              \
    X(config, "config show FILE | config keys: print the effective configuration or the schema") \
    X(inspect, "validate a batch file and print its header and metadata")                        \
    X(probe, "print frame count, duration, rate, size and codec of video files")                 \
    X(frames, "write chosen frames of a video as PNG")                                           \
    X(sample, "draw samples with the configured sampler and write them as PNG + JSON lines")     \
    X(synth, "generate the small labeled demo video dataset")                                    \
    X(worker, "decode and sample videos, push batches to a trainer (--connect ENDPOINT)")        \
    X(keygen, "write a CURVE key pair NAME.key / NAME.key_secret (encrypted pipeline)")          \
    X(train, "train from the pipeline (or --replay DIR of stored batches)")                      \
    X(run, "start the trainer and N local workers: the one-command pipeline")                    \
    X(debug_step, "one forward/backward on a stored batch, written as safetensors")              \
    X(eval, "evaluate a checkpoint: eval knn|linear|all --ckpt CKPT --train DIR --val DIR")      \
    X(export, "export the encoder of a checkpoint under timm names")                             \
    X(plot, "draw the loss curves of a run directory as PNG")                                    \
    X(bench, "benchmark the pipeline: bench pipeline (`make bench` runs every benchmark)")

#define DECLARE(name, help)                                                                      \
    static int missing_##name(int argc, char **argv) {                                           \
        (void)argc;                                                                              \
        fprintf(stderr, "vicmae %s: not available in this binary (%s)\n", argv[0],              \
                "its module was not built in; the full `vicmae` binary has every command");     \
        return 2;                                                                                \
    }                                                                                            \
    int cmd_##name(int argc, char **argv) __attribute__((weak, alias("missing_" #name)));
COMMANDS(DECLARE)

static const struct { const char *name; cmd_fn fn, missing; const char *help; } commands[] = {
#define ENTRY(name, help) {#name, cmd_##name, missing_##name, help},
    COMMANDS(ENTRY)
};

static void usage(FILE *out) {
    fprintf(out, "usage: vicmae <command> [options]   (vicmae <command> --help for details)\n\ncommands:\n");
    int missing = 0;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "%s", commands[i].name);
        for (char *p = name; *p; p++) if (*p == '_') *p = '-';
        if (commands[i].fn == commands[i].missing) missing++;
        else fprintf(out, "  %-11s %s\n", name, commands[i].help);
    }
    if (missing)
        fprintf(out, "  (%d more in the full `vicmae` binary: this one is built without GStreamer)\n", missing);
    fprintf(out, "\nenvironment: VICMAE_LOG=debug|info|warn|error\n");
}

int main(int argc, char **argv) {
    vm_log_init_from_env();
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return argc < 2 ? 2 : 0;
    }
    char name[64];
    snprintf(name, sizeof name, "%s", argv[1]);
    for (char *p = name; *p; p++) if (*p == '-') *p = '_';  // debug-step -> debug_step
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(name, commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "vicmae: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
