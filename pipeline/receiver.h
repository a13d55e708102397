// pipeline/receiver.h — the trainer's side of the pipeline: coordinator + receiver, no GStreamer.
//
//   vm_receiver *r;
//   vm_receiver_opts o;  vm_receiver_opts_default(&o);            // epochs from cfg, drop_last ...
//   if (vm_receiver_start(&r, cfg, &o, &err)) ...                  // binds cfg->pipeline.endpoint
//   int V = vm_receiver_views(r), S = vm_receiver_size(r);         // sample = V views of S x S x 3
//   uint8_t *px = pinned_alloc((size_t)B * V * S * S * 3);         // (B, V, S, S, 3), proto layout
//   vm_sample_meta meta[B];
//   for (;;) {
//       double wait;                                               // seconds blocked on the network
//       int n = vm_receiver_next_batch(r, px, meta, B, &wait, &err);
//       if (n == 0) break;                                         // every epoch delivered
//       if (n < 0) fail(err.msg);
//       train_step(px, n);                                         // n == B unless drop_last = 0
//   }
//   vm_receiver_stop(r);
//
// One background thread owns the ZeroMQ ROUTER socket and the coordinator (pipeline/coordinator.h):
// it answers workers (HELLO, REQUEST, heartbeats), validates every DATA message (control header,
// then vm_batch_parse: shape, checksums, block structure), drops duplicates, and queues accepted
// chunks still compressed, zero-copy (the ZeroMQ message itself).  next_batch, on the caller's
// thread, takes chunks and LZ4-decodes them straight into the caller's buffer (a chunk split across
// two batches goes through one staging buffer), in one of two orders:
//   - arrival order ([pipeline] ordered = false): chunks from any worker as they come.  The samples
//     are the same whatever the workers, but which samples share a batch depends on their number
//     and timing.
//   - ordered ([pipeline] ordered = true): an epoch's samples in the coordinator's unit order
//     (vm_coord_unit_order(run.seed, epoch)), chunk by chunk within a unit, draws in order within
//     a chunk; chunks that arrive early are held until their turn.  A unit that failed (corrupt
//     video, lost with its worker max_attempts times) is skipped at its turn once the coordinator
//     recorded the failure (chunks it delivered before failing are delivered).  Batches, pixels and
//     records, are then identical for any number of workers and any timing.
//
// Flow control: each worker holds at most `[pipeline] credits` unacknowledged messages, and a slow
// trainer slows the workers down instead of growing queues.
//   - arrival order: a credit returns to the worker when next_batch has consumed its chunk, so the
//     queue here is bounded by credits x workers chunks.
//   - ordered: a credit returns when the chunk is accepted (a held chunk holding its credit could
//     starve the worker that must send the head-of-line unit: a deadlock, see pipeline/README.md).
//     Memory is bounded instead by a lease window: units are leased from the order only up to
//     W = live workers x max(4, ceil(credits / chunks per unit)) positions past the unit next_batch
//     waits for, so at most W units' chunks are held.  The head unit is always leasable (re-issued
//     units go first, whatever the window), so next_batch progresses while one worker lives.
//
// Epochs: chunks of epoch e+1 are produced only after epoch e is complete, so a batch never mixes
// epochs.  At the end of each epoch the receiver logs one summary line; with drop_last the samples
// that do not fill a last batch are dropped (counted), otherwise a short batch is returned.
//
// Threads: next_batch/stats/stop are called from one thread (the trainer's).
#pragma once
#include <stdint.h>
#include "common/config.h"
#include "common/error.h"
#include "pipeline/coordinator.h"
#include "proto/proto.h"

typedef struct vm_receiver vm_receiver;

typedef struct vm_receiver_opts {
    int epochs;            // stop after this many epochs; 0 = [pipeline] epochs, else [optim] epochs;
                           // < 0 = unlimited
    int drop_last;         // 1 (default): batches are always full; 0: the last batch of an epoch may be short
    double stats_every_s;  // period of the statistics log line (0 = never; default 10)
    int quiet;             // 1: no info lines (tests); warnings still go out
    // Start position (a resumed run; all 0 = from the start).  Deliver from epoch start_epoch on: its
    // unit order and its samples, exactly as a run that started at 0 delivers that epoch (epochs
    // still counts from 0: with epochs > 0 and start_epoch >= epochs nothing is delivered).
    // Ordered mode only, a position inside that epoch (vm_receiver_position of the stopped run):
    // the units at positions < start_unit of the epoch's order are not leased (nor decoded), the
    // unit at start_unit is leased from the chunk holding its sample start_sample (the worker skips
    // the chunks before it) and that chunk's samples before start_sample are dropped here.  A unit
    // that fails counts as one position whether it fails now or failed in the stopped run, so failed
    // (corrupt) videos shift nothing.  start_unit = videos (the epoch's end) means the next epoch.
    // Refused: start_unit outside 0..videos, start_sample outside 0..pairs_per_video-1 (0 when
    // start_unit = videos), or start_unit/start_sample > 0 in arrival order (not replayable).
    long start_epoch, start_unit, start_sample;
    // With CURVE on ([pipeline] curve_secret_key set), public keys (Z85, separated by white space)
    // admitted besides those of [pipeline] curve_clients: `vicmae run` admits the ephemeral key of
    // its local workers here, in memory.  Ignored with CURVE off.  NULL = none.
    const char *curve_admit;
} vm_receiver_opts;

void vm_receiver_opts_default(vm_receiver_opts *o);

// Where the next sample next_batch hands out comes from: epoch, position of its unit in that
// epoch's order (units consumed or skipped as failed before it), samples of that unit already
// handed out.  After a batch this is the position to resume from (vm_receiver_opts.start_*); a
// drop_last tail not yet dropped counts as not consumed (the resumed run drops it again).
typedef struct vm_receiver_pos {
    long epoch, unit, sample;
} vm_receiver_pos;

// Open the dataset of cfg ([data]), bind cfg->pipeline.endpoint (tcp://HOST:* picks a free port;
// see vm_receiver_endpoint) and start the thread.
// CURVE ([pipeline] curve_secret_key, pipeline/curve.h): the ROUTER is a CURVE server with that
// key pair, so the wire is encrypted and workers must know its public key; a ZAP handler served on
// the receiver's thread admits only the workers whose public key is in [pipeline] curve_clients or
// opts->curve_admit (no key admitted at all is an error here, not a run that refuses everyone).
// A refused handshake is logged once per key (or per reason when the peer sent no key) and
// counted in rejected_handshake.
int vm_receiver_start(vm_receiver **out, const vm_config *cfg, const vm_receiver_opts *opts, vm_error *err);

// Fill views (batch_size, V, S, S, 3) and meta[batch_size] with the next samples.  Returns the
// number of samples written (batch_size; fewer only for an epoch's last batch with drop_last = 0),
// 0 when every epoch has been delivered, or a negative VM_E* code.  *wait_seconds (may be NULL) =
// time spent waiting for workers in this call (the trainer's "data-wait").
int vm_receiver_next_batch(vm_receiver *r, uint8_t *views, vm_sample_meta *meta, int batch_size,
                           double *wait_seconds, vm_error *err);
// The same, also writing the per-view records view_meta[batch_size * V] (may be NULL) and the epoch
// the batch belongs to (may be NULL).
int vm_receiver_next_batch_ex(vm_receiver *r, uint8_t *views, vm_sample_meta *meta, vm_view_meta *view_meta,
                              int batch_size, uint32_t *epoch, double *wait_seconds, vm_error *err);

// The position after the samples handed out so far (consumer thread).  1 = *out filled (ordered
// mode), 0 = arrival order, whose position is not replayable (only out->epoch is filled).
int vm_receiver_position(const vm_receiver *r, vm_receiver_pos *out);

int vm_receiver_views(const vm_receiver *r);         // V
int vm_receiver_size(const vm_receiver *r);          // S (= [model] img_size)
int vm_receiver_dataset_size(const vm_receiver *r);  // videos per epoch
// Label of a video (meta.video_id is its dataset index); -1 when unlabeled or out of range.
int vm_receiver_label(const vm_receiver *r, uint64_t video_id);
const char *vm_receiver_endpoint(const vm_receiver *r);  // the bound endpoint (port resolved)

typedef struct vm_receiver_stats {
    int64_t samples, chunks;             // accepted
    int64_t bytes_wire, bytes_raw;       // payload bytes as received / decoded
    int64_t duplicates;                  // chunks dropped as already delivered
    int64_t dropped_tail;                // samples dropped by drop_last
    int64_t rejected;                    // messages and handshakes rejected (any reason), by reason below
    int64_t rejected_malformed, rejected_version, rejected_session, rejected_baddata;
    int64_t rejected_handshake;          // CURVE handshakes refused: key not admitted (ZAP), wrong server
                                         // key or no CURVE at the worker (one per connection attempt)
    int64_t credit_violations;           // DATA beyond a worker's credit (accepted, counted)
    int64_t units_failed;
    int64_t failed_by_code[VM_COORD_MAX_CODES];  // index -code
    int64_t workers_joined, workers_lost;
    int workers_alive;
    int64_t credits_outstanding;         // granted and not yet returned, all workers
    int queued;                          // chunks waiting for next_batch (queued, or held for their turn)
    double wait_s;                       // total time next_batch waited for data
    uint32_t epoch;                      // current epoch (coordinator)
    int epochs_done;
    // from the workers' heartbeats (their latest totals, summed)
    int64_t worker_samples;
    double worker_decode_s, worker_render_s, worker_encode_s, worker_credit_wait_s;
} vm_receiver_stats;

void vm_receiver_get_stats(vm_receiver *r, vm_receiver_stats *out);
// One line of the statistics (the line the periodic log writes).
void vm_receiver_format_stats(const vm_receiver_stats *s, double elapsed_s, char *buf, size_t cap);

// Make a waiting or later next_batch return VM_EAGAIN with `why` (Ctrl-C, all workers died).
// Safe from any thread.
void vm_receiver_cancel(vm_receiver *r, const char *why);

// Tell the workers to stop (STOP), join the thread, free everything.  NULL is a no-op.
void vm_receiver_stop(vm_receiver *r);

// Views per sample the configured sampler produces: pair 2, clip clip_len,
// multiview num_clips * num_crops * clip_len (the same rule as sampler/sampler.h).
int vm_pipeline_views(const vm_config *cfg);
// Samples one work unit (a video) yields: [sampler] pairs_per_video.
int vm_pipeline_samples_per_unit(const vm_config *cfg);
