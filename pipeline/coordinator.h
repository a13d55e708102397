// pipeline/coordinator.h — work distribution: leases, re-issue, exactly-once per epoch.
//
// Pure bookkeeping (no sockets, no clock of its own: the caller passes `now` in seconds), so every
// rule here is unit-tested directly.  The receiver thread owns one vm_coord.
//
// Units are the videos of the dataset (unit id = dataset index).  Each epoch visits every unit once,
// in an order drawn from (seed, epoch) (vm_coord_unit_order).  Workers pull: vm_coord_lease hands out
// the next pending unit: re-issued units first, then the epoch's order.  A unit's global position
// is epoch * n_units + its index in that order; with a lease limit (ordered delivery, receiver.h)
// only positions below the limit are leased from the order.  Results are chunks (epoch, unit, seq): chunk `seq` of a unit is accepted only when it is the
// next one the unit expects, so a chunk seen before is dropped and counted as a duplicate.
//
// Semantics — exactly-once per epoch for delivered samples:
//   - A worker that stops heartbeating for lease_timeout (killed, hung, network gone) is declared
//     lost; its leased units go back to the front of the queue and are leased again with
//     first_seq = the chunks already accepted, so nothing already delivered is sent again.
//   - Sampling is a pure function of (seed, epoch, video, draw) (common/rng.h), so a re-issued unit
//     yields the very same samples; whichever copy of a chunk arrives first is delivered, any later
//     copy (a slow worker that was presumed lost) is a duplicate and dropped.
//   - An epoch ends when every unit is delivered (its LAST chunk accepted) or failed with a reason
//     (the worker's error, e.g. a corrupt video, or lost workers max_attempts times on this unit).
//     The next epoch starts only then, so epochs never interleave on the wire.
// Compare tf.data service: with dynamic sharding ("processing_mode=DYNAMIC") it guarantees
// at-most-once visitation — a split held by a failed worker is lost for that epoch.  Here the lost
// split is re-issued and de-duplicated, so every sample is visited exactly once (or its video is
// reported failed); the cost is that the receiver tracks one small record per unit and epoch.
#pragma once
#include <stdint.h>

#define VM_COORD_MAX_CODES 16  // failures are counted by -vm error code (0..15)

typedef struct vm_coord vm_coord;

typedef struct vm_coord_opts {
    int n_units;
    int epochs;            // <= 0: unlimited
    uint64_t seed;         // unit order per epoch
    double lease_timeout;  // seconds without a message before a worker is lost
    int max_attempts;      // a unit whose worker was lost this many times in an epoch fails (0 = 3)
    // Start position (a resumed run; all 0 = a fresh run).  The coordinator begins at epoch
    // start_epoch (its order and its samples, as if epochs 0..start_epoch-1 had run; with epochs > 0
    // the run is over at once when start_epoch >= epochs).  In that first epoch the units at
    // positions < start_unit of the order are closed without being leased (counted as skipped, not
    // delivered: they were consumed by the run that stopped), and the unit at start_unit is leased
    // from chunk start_seq on (its earlier chunks were consumed).  0 <= start_unit < n_units.
    uint32_t start_epoch;
    int start_unit;
    uint32_t start_seq;
} vm_coord_opts;

typedef struct vm_lease {
    uint32_t epoch;
    uint64_t unit;
    uint32_t first_seq;    // chunks before this one were already delivered: do not send them
} vm_lease;

typedef struct vm_epoch_summary {
    uint32_t epoch;
    int64_t delivered, failed, duplicates, samples, bytes, reissued;
    int64_t skipped;       // units before the start position (vm_coord_opts.start_unit), first epoch only
    int64_t failed_by_code[VM_COORD_MAX_CODES];  // index -code (VM_ECORRUPT -> 3 ...)
    double seconds;
} vm_epoch_summary;

enum { VM_CHUNK_ACCEPT = 0, VM_CHUNK_DUPLICATE = 1, VM_CHUNK_INVALID = 2 };

// NULL when out of memory or the options are invalid (n_units <= 0, start_unit outside 0..n_units-1).
vm_coord *vm_coord_new(const vm_coord_opts *opts, double now);
void vm_coord_free(vm_coord *c);

// Workers: an id per joined worker (>= 0), refreshed by every message it sends.
int vm_coord_add_worker(vm_coord *c, double now);
void vm_coord_touch(vm_coord *c, int wid, double now);
// The worker left (BYE) or was lost: its leases are re-issued.  Returns the number re-issued.
int vm_coord_remove_worker(vm_coord *c, int wid);
int vm_coord_worker_alive(const vm_coord *c, int wid);
int vm_coord_worker_leases(const vm_coord *c, int wid);

// Next unit for wid: 1 = *out filled, 0 = none now (the epoch is finishing, or the lease limit is
// reached), -1 = the run is over.
int vm_coord_lease(vm_coord *c, int wid, double now, vm_lease *out);
// Lease units from the order only while their global position (epoch * n_units + index in the
// epoch's order) is below limit; re-issued units are leased whatever the limit (they were below an
// earlier one).  The default is INT64_MAX (no limit).  The ordered receiver sets it to the
// consumer's position plus a window, which bounds the chunks it must hold.
void vm_coord_set_lease_limit(vm_coord *c, int64_t limit);
// The unit order of an epoch: order[i] = unit at position i (a permutation of 0..n-1 drawn from
// (seed, epoch) alone).  The coordinator leases in this order; the ordered receiver delivers in it.
void vm_coord_unit_order(uint64_t seed, uint32_t epoch, int n, uint32_t *order);
// A chunk arrived: VM_CHUNK_ACCEPT (deliver it), _DUPLICATE (drop it) or _INVALID (a unit or epoch
// this coordinator never issued: malformed).  last = the unit's final chunk.
int vm_coord_chunk(vm_coord *c, int wid, uint32_t epoch, uint64_t unit, uint32_t seq, int last,
                   int64_t samples, int64_t bytes);
// The worker could not produce the unit: 1 = recorded as failed (first report), 0 = stale, ignored.
int vm_coord_fail(vm_coord *c, int wid, uint32_t epoch, uint64_t unit, int code);
// Declare workers silent for longer than lease_timeout lost (their leases re-issued); writes up to
// cap of their ids into lost[] and returns how many were lost (possibly more than cap).
int vm_coord_expire(vm_coord *c, double now, int *lost, int cap);

// Pop the summary of a completed epoch (1) or return 0 when none is pending.  Call after each
// chunk/fail/expire; epochs complete in order.
int vm_coord_next_summary(vm_coord *c, vm_epoch_summary *out);
// Pop the next unit closed as failed (by vm_coord_fail, or lost with its worker max_attempts times
// in expire/remove_worker), in the order they failed: 1 = *epoch, *unit filled, 0 = none pending,
// -1 = a failure could not be recorded (out of memory).  Every chunk of the unit accepted before is
// already reported by vm_coord_chunk; none is accepted after.  Call after each remove_worker, fail
// and expire (the records are kept until popped).
int vm_coord_next_failed(vm_coord *c, uint32_t *epoch, uint64_t *unit);
uint32_t vm_coord_epoch(const vm_coord *c);       // current epoch
int vm_coord_finished(const vm_coord *c);         // every epoch done
// Units leased and not yet delivered or failed (for stats).
int vm_coord_outstanding(const vm_coord *c);
