// cli/cmd_run.c — `vicmae run`: the one-command local pipeline (trainer + N workers, or the sink).
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>
#include "cli/cli.h"
#include "cli/local.h"
#include "common/io.h"
#include "common/log.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: vicmae run [--config FILE] [--set k=v ...] [--workers N] [--epochs N] [--sink]\n"
            "                  [--save-batches DIR] [--batch B] [--resume RUN_DIR|CKPT] [--stop-after STEPS]\n"
            "  Start the trainer (`vicmae train`) bound at [pipeline] endpoint and N local workers\n"
            "  (`vicmae worker --connect ...`, default [pipeline] workers, 0 = cores - 1, at least 1) as\n"
            "  separate processes.  Ctrl-C is forwarded (the trainer gets SIGINT, workers SIGTERM); a\n"
            "  worker that dies is reported and its units are re-issued to the others.\n"
            "  --sink          receive and validate batches without training (benchmarks, tests): this\n"
            "                  process is the receiver; prints one summary line per epoch and at the end\n"
            "  --save-batches  (with --sink) store each batch as DIR/batch-NNNNNN.vmb (proto format),\n"
            "                  for `vicmae train --replay DIR` and `vicmae inspect`\n"
            "  --epochs N      stop after N epochs (sets [pipeline] epochs)\n"
            "  --batch B       samples per batch (sets [optim] batch_size)\n"
            "  --resume X      continue the run of X (`vicmae train --resume`: its stored configuration\n"
            "                  unless --config is given; with ordered delivery at the exact sample)\n"
            "  --stop-after N  stop with a checkpoint once N steps are done (`vicmae train --stop-after`)\n"
            "  Extra workers on other hosts may join: `vicmae worker --connect tcp://THIS_HOST:PORT`.\n"
            "  With [pipeline] curve_secret_key set (CURVE: encrypted, workers admitted by key), the local\n"
            "  workers get a key pair made for this run (admitted in memory, handed over in their\n"
            "  environment); workers on other hosts need --server-key/--key and their .key in curve_clients.\n");
}

static volatile sig_atomic_t got_signal;
static void on_signal(int sig) { got_signal = sig; }

// 1 when this binary has a real `train` command (the weak fallback of cli/main.c exits 2).
static int have_trainer(void) {
    char *argv[] = {"train", "--help", NULL};
    pid_t pid = vm_local_spawn(argv, 1, NULL);
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid) return 0;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}


// Parse "tcp://A.B.C.D:PORT" into addr; 0 on success.
static int tcp_addr(const char *ep, struct sockaddr_in *a) {
    char host[64];
    int port;
    if (sscanf(ep, "tcp://%63[^:]:%d", host, &port) != 2 || port <= 0 || port > 65535) return -1;
    *a = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(port)};
    return inet_pton(AF_INET, strcmp(host, "*") ? host : "127.0.0.1", &a->sin_addr) == 1 ? 0 : -1;
}

// 1 when something already listens at ep (another run on this machine would take our workers).
static int endpoint_busy(const char *ep) {
    struct sockaddr_in a;
    if (tcp_addr(ep, &a)) return 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int busy = bind(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno == EADDRINUSE;
    close(fd);
    return busy;
}

// 1 once the trainer accepts connections at ep (tcp: a connect succeeds; ipc: the socket exists).
static int endpoint_ready(const char *ep) {
    if (!strncmp(ep, "ipc://", 6)) {
        struct stat st;
        return stat(ep + 6, &st) == 0;
    }
    struct sockaddr_in a;
    if (tcp_addr(ep, &a)) return 1;  // not something we can probe: let the workers retry
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 1;
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

// The trainer runs `vicmae train` with the same --config/--set options, the resolved endpoint,
// epochs and batch (0: not given), and --resume / --stop-after when given (NULL: not given).
static int run_trainer(const vm_config *cfg, int argc_orig, char **argv_orig, int workers, int epochs, int batch,
                       const char *resume, const char *stop_after) {
    if (!have_trainer()) {
        fprintf(stderr, "vicmae run: the trainer (`vicmae train`) is not built yet in this binary; "
                        "`vicmae run --sink` runs the pipeline without training\n");
        return 2;
    }
    vm_error err = {0};
    char ep[300];
    if (vm_local_resolve_endpoint(cfg->pipeline.endpoint, ep, sizeof ep, &err)) {
        fprintf(stderr, "vicmae run: %s\n", err.msg);
        return 2;
    }
    if (endpoint_busy(ep)) {
        fprintf(stderr, "vicmae run: %s is already in use (another run?); pick another with "
                        "--set pipeline.endpoint=tcp://127.0.0.1:* (any free port) or ipc:///tmp/NAME\n", ep);
        return 2;
    }
    // CURVE on: a key pair for this run's workers, admitted by the trainer (its public key is not a
    // secret: the command line is fine for it).
    vm_local_curve lc = {0};
    if (workers > 0 && vm_local_curve_setup(cfg, &lc, &err)) {
        fprintf(stderr, "vicmae run: %s\n", err.msg);
        return 2;
    }
    // The trainer gets the same --config/--set options, plus the resolved endpoint, epochs and batch.
    // "train", the copied options (at most argc_orig), endpoint, epochs, batch, resume, stop-after,
    // curve-admit (two each), NULL.
    char **targv = malloc((size_t)(argc_orig + 14) * sizeof *targv);
    if (!targv) {
        vm_local_curve_wipe(&lc);
        fprintf(stderr, "vicmae run: out of memory\n");
        return 1;
    }
    char setep[400], setepochs[64], setbatch[64];
    int n = 0;
    targv[n++] = "train";
    for (int i = 1; i < argc_orig; i++) {
        if (!strcmp(argv_orig[i], "--config") || !strcmp(argv_orig[i], "--set")) {
            targv[n++] = argv_orig[i];
            if (i + 1 < argc_orig) targv[n++] = argv_orig[++i];
        } else if (!strncmp(argv_orig[i], "--config=", 9) || !strncmp(argv_orig[i], "--set=", 6)) {
            targv[n++] = argv_orig[i];
        }
    }
    snprintf(setep, sizeof setep, "pipeline.endpoint=%s", ep);
    targv[n++] = "--set";
    targv[n++] = setep;
    if (epochs > 0) {
        snprintf(setepochs, sizeof setepochs, "pipeline.epochs=%d", epochs);
        targv[n++] = "--set";
        targv[n++] = setepochs;
    }
    if (batch > 0) {
        snprintf(setbatch, sizeof setbatch, "optim.batch_size=%d", batch);
        targv[n++] = "--set";
        targv[n++] = setbatch;
    }
    if (resume) targv[n++] = "--resume", targv[n++] = (char *)resume;
    if (stop_after) targv[n++] = "--stop-after", targv[n++] = (char *)stop_after;
    if (lc.on) targv[n++] = "--curve-admit", targv[n++] = lc.admit;
    targv[n] = NULL;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    pid_t trainer = vm_local_spawn(targv, 0, NULL);
    free(targv);  // the child has its copy
    if (trainer < 0) {
        vm_local_curve_wipe(&lc);
        fprintf(stderr, "vicmae run: cannot start the trainer: %s\n", strerror(errno));
        return 1;
    }
    vm_info("run: trainer pid %d on %s, %d local worker%s", (int)trainer, ep, workers, workers == 1 ? "" : "s");
    // Start the workers once the trainer listens (it may first load a checkpoint); if it dies
    // first, say so and stop.
    for (;;) {
        int st;
        if (waitpid(trainer, &st, WNOHANG) == trainer) {
            vm_local_curve_wipe(&lc);
            vm_error_log("run: the trainer exited before listening on %s (status %d)", ep,
                         WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
            return WIFEXITED(st) && WEXITSTATUS(st) ? WEXITSTATUS(st) : 1;
        }
        if (got_signal) { vm_local_curve_wipe(&lc); kill(trainer, SIGINT); waitpid(trainer, &st, 0); return 130; }
        if (endpoint_ready(ep)) break;
        usleep(50000);
    }
    pid_t *pids = calloc(workers, sizeof *pids);
    for (int i = 0; i < workers; i++) pids[i] = vm_local_spawn_worker(ep, i, 0, &lc);
    vm_local_curve_wipe(&lc);  // the workers have their copy
    int status = 1, forwarded = 0, alive = workers;
    for (;;) {
        if (got_signal && !forwarded) {
            vm_warn("run: %s: stopping the trainer and the workers", strsignal(got_signal));
            kill(trainer, SIGINT);
            for (int i = 0; i < workers; i++) if (pids[i] > 0) kill(pids[i], SIGTERM);
            forwarded = 1;
        }
        int st;
        pid_t p = waitpid(-1, &st, 0);
        if (p < 0 && errno == EINTR) continue;
        if (p < 0) break;
        if (p == trainer) {
            status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            if (WIFSIGNALED(st)) vm_error_log("run: the trainer died: %s", strsignal(WTERMSIG(st)));
            break;
        }
        for (int i = 0; i < workers; i++)
            if (pids[i] == p) {
                pids[i] = 0;
                alive--;
                if (forwarded || (WIFEXITED(st) && WEXITSTATUS(st) == 0)) break;
                if (WIFSIGNALED(st)) vm_error_log("run: worker-%d died: %s (%d left)", i, strsignal(WTERMSIG(st)), alive);
                else vm_error_log("run: worker-%d exited with status %d (%d left)", i, WEXITSTATUS(st), alive);
            }
    }
    // The trainer is done: the workers got STOP; give them a moment, then end them.
    for (int i = 0; i < workers; i++)
        if (pids[i] > 0) {
            for (int k = 0; k < 100 && waitpid(pids[i], NULL, WNOHANG) == 0; k++) usleep(20000);
            if (kill(pids[i], SIGTERM) == 0) waitpid(pids[i], NULL, 0);
        }
    free(pids);
    return status;
}

int cmd_run(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage(stdout); return 0; }
    char *orig[256];
    int argc_orig = argc < 255 ? argc : 255;
    for (int i = 0; i < argc_orig; i++) orig[i] = argv[i];
    orig[argc_orig] = NULL;
    // With --resume the checkpoint's stored configuration is the base (as `vicmae train` does), so
    // that this process binds the endpoint and starts the workers the resumed trainer expects.
    vm_config cfg;
    int crc = vm_cli_config_resume(&argc, argv, NULL, 0, &cfg);
    if (crc) return crc;
    int sink = 0, workers = -1, epochs = 0, batch = 0;
    const char *save = NULL, *resume = NULL, *stop_after = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--sink")) { sink = 1; continue; }
        if (!v) { fprintf(stderr, "vicmae run: unexpected argument '%s' (or its value is missing)\n", a); usage(stderr); return 2; }
        int bad = 0, n;
        if (!strcmp(a, "--workers")) bad = vm_cli_int("run", a, v, 0, 1024, &workers);
        else if (!strcmp(a, "--epochs")) bad = vm_cli_int("run", a, v, 1, 1000000000, &epochs);
        else if (!strcmp(a, "--batch")) bad = vm_cli_int("run", a, v, 1, 1000000, &batch);
        else if (!strcmp(a, "--save-batches")) save = v;
        else if (!strcmp(a, "--resume")) resume = v;
        else if (!strcmp(a, "--stop-after")) bad = vm_cli_int("run", a, v, 1, 2147483647, &n), stop_after = v;
        else { fprintf(stderr, "vicmae run: unexpected argument '%s'\n", a); usage(stderr); return 2; }
        if (bad) return bad;
        i++;
    }
    if (workers < 0) workers = cfg.pipeline.workers ? cfg.pipeline.workers : vm_local_default_workers();
    if (save && !sink) { fprintf(stderr, "vicmae run: --save-batches needs --sink\n"); return 2; }
    if (sink && (resume || stop_after)) {
        fprintf(stderr, "vicmae run: --resume and --stop-after are for training, not --sink\n");
        return 2;
    }
    vm_log_set_role("run");
    if (!sink) return run_trainer(&cfg, argc_orig, orig, workers, epochs, batch, resume, stop_after);

    vm_sink_opts o = {.cfg = &cfg, .workers = workers, .epochs = epochs, .batch = batch, .save_dir = save};
    vm_sink_result res;
    vm_error err = {0};
    int rc = vm_sink_run(&o, &res, &err);
    if (rc && res.batches == 0 && res.samples == 0 && rc != VM_EAGAIN) {
        fprintf(stderr, "vicmae run: %s\n", err.msg);
        return rc == VM_EINVAL || rc == VM_ENOTFOUND ? 2 : 1;
    }
    const vm_receiver_stats *s = &res.st;
    double t = res.steady_seconds > 0 ? res.steady_seconds : 1e-9;
    vm_info("sink: %lld samples in %lld batches, %.1f samples/s after the first batch, %.0f bytes/sample on the wire (compression "
            "%.2fx), %d epoch%s, %lld videos failed, %lld duplicates dropped, %lld rejected, %lld workers lost%s%s",
            (long long)res.samples, (long long)res.batches, res.samples / t,
            res.samples ? (double)s->bytes_wire / res.samples : 0.0,
            s->bytes_wire ? (double)s->bytes_raw / s->bytes_wire : 0.0, s->epochs_done, s->epochs_done == 1 ? "" : "s",
            (long long)s->units_failed, (long long)s->duplicates, (long long)s->rejected, (long long)s->workers_lost,
            save ? ", batches in " : "", save ? save : "");
    if (rc) {
        fprintf(stderr, "vicmae run: %s\n", err.msg);
        return rc == VM_EAGAIN ? 130 : 1;
    }
    return res.workers_died ? 1 : 0;
}
