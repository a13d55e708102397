// cli/cmd_worker.c — `vicmae worker --connect ENDPOINT [--server-key F --key F]`: a decode worker
// (pipeline/worker.h), optionally a CURVE client (pipeline/curve.h).
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include "cli/cli.h"
#include "common/log.h"
#include "pipeline/curve.h"
#include "pipeline/worker.h"

static volatile int stop_requested;
static void on_signal(int sig) { (void)sig; stop_requested = 1; }

static void usage(FILE *f) {
    fprintf(f, "usage: vicmae worker --connect ENDPOINT [--server-key FILE --key FILE] [--idle-exit SECONDS]\n"
               "                     [--stats-every SECONDS] [--name NAME]\n"
               "  Connect to a trainer (tcp://HOST:PORT or ipc://PATH), receive its configuration, then decode,\n"
               "  sample and send videos until it says stop.  Needs nothing else: video paths come with each\n"
               "  work unit and must resolve on this host (mount the dataset at the same absolute path).\n"
               "  --server-key FILE  the trainer's public key file (its NAME.key from `vicmae keygen`) and\n"
               "  --key FILE         this worker's key pair (WORKER.key_secret, mode 0600): for a trainer\n"
               "                     with [pipeline] curve_secret_key set (CURVE: encrypted, and the\n"
               "                     trainer admits this worker only if WORKER.key is in its curve_clients)\n"
               "  --idle-exit: give up when no trainer answered for that long (default: keep trying).\n"
               "  Exit status: 0 stopped by the trainer, 1 error, 2 usage or unreadable key file,\n"
               "  3 incompatible trainer version, 4 refused by the trainer or failed security handshake\n"
               "  (key not admitted, wrong --server-key, CURVE at one end only).\n");
}

// The keys `vicmae run` put in the environment (cli.h): "SERVER WORKER_PUBLIC WORKER_SECRET".
static int keys_from_env(const char *v, char keys[3][VM_CURVE_Z85_LEN + 1]) {
    for (int i = 0; i < 3; i++) {
        v += strspn(v, " ");
        size_t n = strcspn(v, " ");
        char why[128];
        if (vm_curve_z85_check(v, n, why, sizeof why)) {
            fprintf(stderr, "vicmae worker: %s: key %d %s\n", VM_CLI_ENV_WORKER_KEYS, i + 1, why);
            return 2;
        }
        memcpy(keys[i], v, n);
        keys[i][n] = 0;
        v += n;
    }
    return 0;
}

int cmd_worker(int argc, char **argv) {
    vm_worker_opts o;
    vm_worker_opts_default(&o);
    const char *name = "worker", *server_file = NULL, *key_file = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        if (!v) { fprintf(stderr, "vicmae worker: unexpected argument '%s' (or its value is missing)\n", a); usage(stderr); return 2; }
        int bad = 0;
        if (!strcmp(a, "--connect")) o.connect = v;
        else if (!strcmp(a, "--idle-exit")) bad = vm_cli_num("worker", a, v, 0, 1e9, &o.idle_exit_s);
        else if (!strcmp(a, "--stats-every")) bad = vm_cli_num("worker", a, v, 0, 1e9, &o.stats_every_s);
        else if (!strcmp(a, "--name")) name = v;
        else if (!strcmp(a, "--server-key")) server_file = v;
        else if (!strcmp(a, "--key")) key_file = v;
        else { fprintf(stderr, "vicmae worker: unexpected argument '%s'\n", a); usage(stderr); return 2; }
        if (bad) return bad;
        i++;
    }
    // Read before anything can start a child (GStreamer's plugin scanner is one): it would inherit
    // the secret.  The options win over the environment.
    const char *env = getenv(VM_CLI_ENV_WORKER_KEYS);
    char env_keys[3][VM_CURVE_Z85_LEN + 1];
    int from_env = env && !server_file && !key_file;
    int erc = from_env ? keys_from_env(env, env_keys) : 0;
    if (env) {
        // Wipe the value where it lives: for an inherited variable that is the block /proc/PID/environ
        // shows (to this user and root only; unsetenv alone would leave it there).
        memset((char *)env, 0, strlen(env));
        unsetenv(VM_CLI_ENV_WORKER_KEYS);
    }
    if (erc) return erc;
    if (!o.connect) { usage(stderr); return 2; }
    if (!server_file != !key_file) {
        fprintf(stderr, "vicmae worker: --server-key and --key go together (the trainer's public key file and this "
                        "worker's .key_secret)\n");
        return 2;
    }
    vm_curve_key server, self;
    vm_error err = {0};
    if (server_file) {
        if (vm_curve_key_load(server_file, 0, &server, &err) || vm_curve_key_load(key_file, 1, &self, &err)) {
            fprintf(stderr, "vicmae worker: %s\n", err.msg);
            return 2;
        }
        o.curve_server_key = server.pub, o.curve_public_key = self.pub, o.curve_secret_key = self.sec;
    } else if (from_env) {
        o.curve_server_key = env_keys[0], o.curve_public_key = env_keys[1], o.curve_secret_key = env_keys[2];
    }
    vm_log_set_role(name);
    // SIGINT/SIGTERM: say BYE so that the coordinator re-issues our units now, not after a timeout.
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    o.stop_flag = &stop_requested;
    int rc = vm_worker_run(&o, NULL, &err);
    memset(&self, 0, sizeof self);
    memset(env_keys, 0, sizeof env_keys);
    if (rc) {
        vm_error_log("%s", err.msg);
        return rc == VM_EVERSION ? 3 : rc == VM_EAUTH ? 4 : 1;
    }
    return 0;
}
