// cli/local.h — what `vicmae run` and `vicmae bench pipeline` share: local worker processes and
// the sink (receive, validate, optionally store batches; no training).
#pragma once
#include <stdint.h>
#include <sys/types.h>
#include "common/config.h"
#include "common/error.h"
#include "pipeline/receiver.h"

// The local workers' CURVE keys when the configuration turns CURVE on ([pipeline] curve_secret_key):
// a key pair made for this run (zmq_curve_keypair), whose public key the trainer admits in memory
// (vm_receiver_opts.curve_admit, `vicmae train --curve-admit`) and whose secret reaches the workers
// through their environment only (cli.h: VM_CLI_ENV_WORKER_KEYS).  Nothing is written to disk, and
// the key is worthless once the run ends.
typedef struct vm_local_curve {
    int on;
    char admit[48];   // the workers' public key (Z85)
    char env[160];    // "VICMAE_WORKER_KEYS=SERVER_PUBLIC WORKER_PUBLIC WORKER_SECRET"
} vm_local_curve;
// Fill *lc for cfg (lc->on = 0 with CURVE off).  Reads the trainer's key file for its public key, so
// a bad file is reported before anything starts.
int vm_local_curve_setup(const vm_config *cfg, vm_local_curve *lc, vm_error *err);
void vm_local_curve_wipe(vm_local_curve *lc);

// Start `vicmae worker --connect endpoint --name worker-i` (this binary).  The child dies with us
// (PR_SET_PDEATHSIG).  Returns its pid or -1.
// quiet: the worker logs warnings and errors only (VICMAE_LOG=warn).  curve: its keys (NULL or
// off: plaintext).
pid_t vm_local_spawn_worker(const char *endpoint, int index, int quiet, const vm_local_curve *curve);
// Start this binary with argv (argv[0] = subcommand).  quiet: 1 = stdout/stderr to /dev/null,
// 2 = VICMAE_LOG=warn.  env: one more "NAME=VALUE" for the child's environment (NULL = none).
// Returns the pid or -1.
pid_t vm_local_spawn(char *const argv[], int quiet, const char *env);
// Default local worker count: cores - 1, at least 1.
int vm_local_default_workers(void);
// Resolve "tcp://HOST:*" to a free port on HOST (for a trainer we start as a child process).
int vm_local_resolve_endpoint(const char *in, char *out, size_t cap, vm_error *err);

typedef struct vm_sink_opts {
    const vm_config *cfg;
    int workers;            // local worker processes to start (0 = none: external workers connect)
    int epochs;             // 0 = from cfg
    int batch;              // samples per batch (0 = [optim] batch_size)
    const char *save_dir;   // NULL = do not store; else DIR/batch-NNNNNN.vmb, one proto message each
    int quiet;              // no periodic statistics lines
} vm_sink_opts;

typedef struct vm_sink_result {
    double seconds;         // from the start (workers not yet spawned) to the last batch
    double steady_seconds;  // from the first batch to the last (start-up excluded)
    int64_t batches, samples;
    vm_receiver_stats st;
    int workers_died;
} vm_sink_result;

// Run the pipeline into the sink until every epoch is delivered.  SIGINT/SIGTERM stop it cleanly
// (VM_EAGAIN "interrupted").  Local workers that die are reported (and the epoch goes on without
// them); when all have died the run fails.
int vm_sink_run(const vm_sink_opts *o, vm_sink_result *res, vm_error *err);
