// cli/local.c — local worker processes and the sink (see local.h).
#include "cli/local.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "cli/cli.h"
#include "common/io.h"
#include "common/log.h"
#include "pipeline/curve.h"
#include "proto/proto.h"

// The child's environment: ours, with VICMAE_LOG=warn (quiet == 2) and env replacing any variable
// of the same names.  Built before fork: between fork and exec a child of a threaded process may
// only call async-signal-safe functions, which setenv is not.
static char **child_environ(int quiet, const char *env) {
    extern char **environ;
    const char *extra[2] = {quiet == 2 ? "VICMAE_LOG=warn" : NULL, env};
    size_t n = 0;
    while (environ[n]) n++;
    char **out = malloc((n + 3) * sizeof *out);
    if (!out) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int replaced = 0;
        for (int j = 0; j < 2; j++) {
            const char *eq = extra[j] ? strchr(extra[j], '=') : NULL;
            if (eq && !strncmp(environ[i], extra[j], (size_t)(eq - extra[j]) + 1)) replaced = 1;
        }
        if (!replaced) out[k++] = environ[i];
    }
    for (int j = 0; j < 2; j++)
        if (extra[j]) out[k++] = (char *)extra[j];
    out[k] = NULL;
    return out;
}

pid_t vm_local_spawn(char *const argv[], int quiet, const char *env) {
    fflush(NULL);
    pid_t parent = getpid();
    char **envp = child_environ(quiet, env);
    if (!envp) return -1;
    const char *self = vm_cli_self();
    size_t argc = 0;
    while (argv[argc]) argc++;
    char **args = malloc((argc + 2) * sizeof *args);  // self, argv..., NULL
    if (!args) {
        free(envp);
        return -1;
    }
    args[0] = (char *)self;
    memcpy(args + 1, argv, (argc + 1) * sizeof *args);
    pid_t pid = fork();
    if (pid != 0) {
        free(envp);  // the strings are ours or the caller's
        free(args);
        return pid;
    }
    // Own process group: the terminal's Ctrl-C reaches only `vicmae run`, which forwards it.
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);  // the parent died before prctl
    if (quiet == 1) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) dup2(fd, 2), dup2(fd, 1), close(fd);
    }
    execve(self, args, envp);
    fprintf(stderr, "vicmae: cannot start %s: %s\n", self, strerror(errno));
    _exit(127);
}

pid_t vm_local_spawn_worker(const char *endpoint, int index, int quiet, const vm_local_curve *curve) {
    char name[32];
    snprintf(name, sizeof name, "worker-%d", index);
    char *argv[] = {"worker", "--connect", (char *)endpoint, "--name", name, "--idle-exit", "120", NULL};
    return vm_local_spawn(argv, quiet ? 2 : 0, curve && curve->on ? curve->env : NULL);
}

// Why the environment and not a 0600 file: the environment of a process is readable by its user and
// root only (/proc/PID/environ is mode 0400), as such a file would be, but it dies with the
// processes, whereas a file outlives a run killed with -9 and needs a safe place to live.  Never the
// command line: /proc/PID/cmdline and ps show it to every user.  The worker removes the variable
// before it starts anything (GStreamer's plugin scanner would inherit it).
int vm_local_curve_setup(const vm_config *cfg, vm_local_curve *lc, vm_error *err) {
    memset(lc, 0, sizeof *lc);
    if (!cfg->pipeline.curve_secret_key[0]) return 0;
    vm_curve_key server, mine;
    int rc = vm_curve_key_load(cfg->pipeline.curve_secret_key, 1, &server, err);
    if (rc) {
        vm_error_prefix(err, "[pipeline] curve_secret_key: ");
        return rc;
    }
    memset(server.sec, 0, sizeof server.sec);
    if ((rc = vm_curve_keygen(&mine, err))) return rc;
    lc->on = 1;
    snprintf(lc->admit, sizeof lc->admit, "%s", mine.pub);
    snprintf(lc->env, sizeof lc->env, "%s=%s %s %s", VM_CLI_ENV_WORKER_KEYS, server.pub, mine.pub, mine.sec);
    memset(&mine, 0, sizeof mine);
    return 0;
}

void vm_local_curve_wipe(vm_local_curve *lc) { memset(lc, 0, sizeof *lc); }

int vm_local_default_workers(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 2 ? (int)n - 1 : 1;
}

int vm_local_resolve_endpoint(const char *in, char *out, size_t cap, vm_error *err) {
    size_t len = strlen(in);
    if (strncmp(in, "tcp://", 6) || len < 2 || strcmp(in + len - 2, ":*")) {
        snprintf(out, cap, "%s", in);
        return 0;
    }
    char host[256];
    snprintf(host, sizeof host, "%.*s", (int)(len - 8), in + 6);
    struct sockaddr_in a = {.sin_family = AF_INET};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
        return vm_fail(err, VM_EINVAL, "%s: '*' needs a numeric IPv4 host to pick a port", in);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    socklen_t al = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &al)) {
        if (fd >= 0) close(fd);
        return vm_fail(err, VM_EIO, "%s: no free port: %s", in, strerror(errno));
    }
    close(fd);
    snprintf(out, cap, "tcp://%s:%d", host, ntohs(a.sin_port));
    return 0;
}

// ---- the sink ---------------------------------------------------------------------------------

static volatile sig_atomic_t got_signal;
static void on_signal(int sig) { got_signal = sig; }

typedef struct {
    vm_receiver *r;
    pid_t *pids;
    int n, alive, died;
    volatile int done;
} monitor;

// Watch for Ctrl-C and for local workers that die; cancel the receiver when the run cannot go on.
static void *monitor_main(void *arg) {
    monitor *m = arg;
    while (!m->done) {
        if (got_signal) {
            vm_warn("run: %s: stopping", strsignal(got_signal));
            vm_receiver_cancel(m->r, "interrupted");
            break;
        }
        for (int i = 0; i < m->n; i++) {
            int st;
            if (m->pids[i] <= 0 || waitpid(m->pids[i], &st, WNOHANG) != m->pids[i]) continue;
            m->pids[i] = 0;
            m->alive--;
            if (WIFEXITED(st) && WEXITSTATUS(st) == 0) continue;  // stopped by the coordinator
            m->died++;
            if (WIFSIGNALED(st)) vm_error_log("run: worker-%d died: %s", i, strsignal(WTERMSIG(st)));
            else vm_error_log("run: worker-%d exited with status %d", i, WEXITSTATUS(st));
            if (m->alive == 0) {
                vm_receiver_cancel(m->r, "every local worker died");
                return NULL;
            }
        }
        usleep(50000);
    }
    return NULL;
}

static void stop_children(pid_t *pids, int n) {
    double t0 = vm_now();
    int left;
    do {
        left = 0;
        for (int i = 0; i < n; i++) {
            if (pids[i] <= 0) continue;
            int st;
            if (waitpid(pids[i], &st, WNOHANG) == pids[i]) pids[i] = 0;
            else left++;
        }
        if (left) usleep(20000);
    } while (left && vm_now() - t0 < 3);  // they got STOP: give them a moment, then insist
    for (int i = 0; i < n; i++)
        if (pids[i] > 0) {
            kill(pids[i], SIGTERM);
            waitpid(pids[i], NULL, 0);
        }
}

int vm_sink_run(const vm_sink_opts *o, vm_sink_result *res, vm_error *err) {
    memset(res, 0, sizeof *res);
    vm_receiver_opts ro;
    vm_receiver_opts_default(&ro);
    ro.drop_last = 0;  // a sink counts everything
    ro.epochs = o->epochs;
    if (o->quiet) ro.stats_every_s = 0;
    vm_local_curve lc = {0};  // keys for local workers only: without, curve_clients must admit someone
    int rc = o->workers > 0 ? vm_local_curve_setup(o->cfg, &lc, err) : 0;
    if (rc) return rc;
    ro.curve_admit = lc.on ? lc.admit : NULL;
    vm_receiver *r;
    if ((rc = vm_receiver_start(&r, o->cfg, &ro, err))) {
        vm_local_curve_wipe(&lc);
        return rc;
    }
    int B = o->batch > 0 ? o->batch : o->cfg->optim.batch_size;
    int V = vm_receiver_views(r), S = vm_receiver_size(r);
    size_t sb = (size_t)V * S * S * 3;
    uint8_t *px = malloc((size_t)B * sb);
    vm_sample_meta *meta = calloc(B, sizeof *meta);
    vm_view_meta *vmeta = calloc((size_t)B * V, sizeof *vmeta);
    vm_batch_header h = {.batch = (uint32_t)B, .views = (uint32_t)V, .height = (uint32_t)S, .width = (uint32_t)S,
                         .codec = o->cfg->pipeline.codec == VM_CODEC_LZ4 ? VM_BATCH_CODEC_LZ4 : VM_BATCH_CODEC_NONE};
    size_t cap = o->save_dir ? vm_batch_max_size(&h) : 0;
    uint8_t *msg = cap ? malloc(cap) : NULL;
    pid_t *pids = calloc(o->workers > 0 ? o->workers : 1, sizeof *pids);
    if (!px || !meta || !vmeta || !pids || (o->save_dir && !msg)) {
        rc = vm_fail(err, VM_ENOMEM, "sink: out of memory for a batch of %d", B);
        goto done;
    }
    if (o->save_dir && (rc = vm_mkdirs(o->save_dir, err))) goto done;
    got_signal = 0;
    struct sigaction sa = {.sa_handler = on_signal}, old_int, old_term;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    double t_start = vm_now();
    for (int i = 0; i < o->workers; i++) pids[i] = vm_local_spawn_worker(vm_receiver_endpoint(r), i, o->quiet, &lc);
    vm_local_curve_wipe(&lc);  // the workers have their copy
    monitor mon = {.r = r, .pids = pids, .n = o->workers, .alive = o->workers};
    pthread_t mt;
    int have_mt = pthread_create(&mt, NULL, monitor_main, &mon) == 0;
    double t_first = 0;
    for (;;) {
        uint32_t epoch = 0;
        double wait;
        int n = vm_receiver_next_batch_ex(r, px, meta, vmeta, B, &epoch, &wait, err);
        if (n < 0) { rc = n; break; }
        if (n == 0) break;
        if (!t_first) t_first = vm_now();
        if (o->save_dir) {
            h.batch = (uint32_t)n;
            h.epoch = epoch;
            h.sequence = (uint64_t)res->batches;
            size_t len;
            char path[VM_PATH_MAX + 64];
            snprintf(path, sizeof path, "%s/batch-%06" PRId64 ".vmb", o->save_dir, res->batches);
            if ((rc = vm_batch_encode(&h, meta, vmeta, px, msg, cap, &len, err)) ||
                (rc = vm_batch_file_write(path, msg, len, err)))
                break;
        }
        res->batches++;
        res->samples += n;
    }
    res->seconds = vm_now() - t_start;
    res->steady_seconds = t_first ? vm_now() - t_first : 0;
    mon.done = 1;
    if (have_mt) pthread_join(mt, NULL);
    res->workers_died = mon.died;
    vm_receiver_get_stats(r, &res->st);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
done:
    vm_local_curve_wipe(&lc);
    vm_receiver_stop(r);  // sends STOP: local workers exit by themselves
    if (pids) stop_children(pids, o->workers);
    free(px);
    free(meta);
    free(vmeta);
    free(msg);
    free(pids);
    return rc;
}
