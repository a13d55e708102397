// pipeline/worker.h — a decode worker: pulls leases, produces samples, pushes chunks with credit.
//
//   vm_worker_opts o;  vm_worker_opts_default(&o);  o.connect = "tcp://trainer:5557";
//   int rc = vm_worker_run(&o, &err);     // returns after the coordinator says STOP
//
// The worker needs nothing but the endpoint: the coordinator's WELCOME carries the configuration
// (sampler, decoder, model size, seed) and every LEASE carries the video's path (pipeline/wire.h).
// It refuses a coordinator of another protocol major version (VM_EVERSION, message names both).
//
// Two threads: the calling thread owns the DEALER socket (requests, heartbeats, sends), a compute
// thread turns leases into chunks (decode + sample + LZ4 encode).  Memory is bounded by
// construction: `pool` chunk buffers (pre-allocated, sent zero-copy and returned to the pool when
// ZeroMQ is done with them) and one unit buffer; when the coordinator grants no credit the pool
// fills up and the compute thread waits, so a slow trainer slows the worker down.
//
// A coordinator that restarts answers the old session with REJECT(session): the worker drops what
// it held, says HELLO again and continues.  A coordinator that stays silent for lease_timeout is
// presumed gone and the worker does the same (ZeroMQ reconnects the socket by itself).
//
// Security (pipeline/curve.h): with the curve_* keys set the connection is a CURVE client's
// (encrypted; the trainer proves it holds the secret of curve_server_key, and admits us only when
// our public key is in its curve_clients).  A handshake the trainer refuses or that fails is not
// retried forever: vm_worker_run returns VM_EAUTH with what failed and what to check, at once for a
// refused key or a protocol failure (e.g. CURVE at one end only), after 3 handshakes in a row that
// ended without a reason (the trainer could not decrypt ours: the wrong server key).  A trainer
// that is not listening yet is still waited for (no handshake starts).
#pragma once
#include <stdint.h>
#include "common/config.h"
#include "common/error.h"
#include "proto/proto.h"

// Where samples come from: the real one decodes and samples a video (vm_worker_sampler_source);
// tests plug in synthetic ones.
typedef struct vm_unit_source {
    void *ctx;
    // Write the n samples of one unit (draws 0 .. n-1 of video_id in epoch) into
    // pixels (n, V, S, S, 3), samples[n], views[n * V].  0 or a negative VM_E* code (err says why).
    int (*produce)(void *ctx, const char *path, uint64_t video_id, uint32_t epoch, int n, uint8_t *pixels,
                   vm_sample_meta *samples, vm_view_meta *views, vm_error *err);
    // Cumulative seconds spent decoding and rendering (may be NULL).
    void (*times)(void *ctx, double *decode_s, double *render_s);
    void (*destroy)(void *ctx);
} vm_unit_source;

typedef int (*vm_source_factory)(const vm_config *cfg, vm_unit_source *out, vm_error *err);

// The decoder + sampler source (pipeline/worker_source.c).
int vm_worker_sampler_source(const vm_config *cfg, vm_unit_source *out, vm_error *err);

typedef struct vm_worker_opts {
    const char *connect;          // coordinator endpoint
    vm_source_factory make_source; // NULL = vm_worker_sampler_source
    double idle_exit_s;           // give up when no coordinator answered for this long (0 = never)
    double stats_every_s;         // period of the statistics log line (0 = never; default 10)
    int prefetch;                 // leases held ahead of the compute thread (default 2)
    int pool;                     // chunk buffers (default 4)
    int quiet;                    // no info lines
    volatile int *stop_flag;      // when it becomes non-zero (a signal handler), leave cleanly: BYE,
                                  // so the coordinator re-issues our leases at once (may be NULL)
    // CURVE keys, Z85 (40 characters): all three set = encrypted and authenticated, all NULL = plaintext.
    const char *curve_server_key;                     // the trainer's public key
    const char *curve_public_key, *curve_secret_key;  // this worker's key pair
} vm_worker_opts;

void vm_worker_opts_default(vm_worker_opts *o);

typedef struct vm_worker_stats {
    int64_t units, units_failed, samples, chunks, bytes_sent, bytes_raw;
    double decode_s, render_s, encode_s, credit_wait_s;
    int64_t sessions;             // WELCOMEs received (> 1 after a coordinator restart)
} vm_worker_stats;

// Run until STOP (0), a fatal error (negative: VM_EVERSION, VM_EAUTH (handshake refused or failed),
// bad configuration, VM_ETIMEOUT after idle_exit).
// stats (may be NULL) receives the totals.
int vm_worker_run(const vm_worker_opts *o, vm_worker_stats *stats, vm_error *err);
