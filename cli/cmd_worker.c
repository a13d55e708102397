// cli/cmd_worker.c — `vicmae worker --connect ENDPOINT`: a decode worker (pipeline/worker.h).
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include "cli/cli.h"
#include "common/log.h"
#include "pipeline/worker.h"

static volatile int stop_requested;
static void on_signal(int sig) { (void)sig; stop_requested = 1; }

static void usage(FILE *f) {
    fprintf(f, "usage: vicmae worker --connect ENDPOINT [--idle-exit SECONDS] [--stats-every SECONDS] [--name NAME]\n"
               "  Connect to a trainer (tcp://HOST:PORT or ipc://PATH), receive its configuration, then decode,\n"
               "  sample and send videos until it says stop.  Needs nothing else: video paths come with each\n"
               "  work unit and must resolve on this host (mount the dataset at the same absolute path).\n"
               "  --idle-exit: give up when no trainer answered for that long (default: keep trying).\n"
               "  Exit status: 0 stopped by the trainer, 1 error, 3 incompatible trainer version.\n");
}

int cmd_worker(int argc, char **argv) {
    vm_worker_opts o;
    vm_worker_opts_default(&o);
    const char *name = "worker";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        if (!v) { usage(stderr); return 2; }
        if (!strcmp(a, "--connect")) o.connect = v;
        else if (!strcmp(a, "--idle-exit")) o.idle_exit_s = atof(v);
        else if (!strcmp(a, "--stats-every")) o.stats_every_s = atof(v);
        else if (!strcmp(a, "--name")) name = v;
        else { usage(stderr); return 2; }
        i++;
    }
    if (!o.connect) { usage(stderr); return 2; }
    vm_log_set_role(name);
    // SIGINT/SIGTERM: say BYE so that the coordinator re-issues our units now, not after a timeout.
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    o.stop_flag = &stop_requested;
    vm_error err = {0};
    int rc = vm_worker_run(&o, NULL, &err);
    if (rc) {
        vm_error_log("%s", err.msg);
        return rc == VM_EVERSION ? 3 : 1;
    }
    return 0;
}
