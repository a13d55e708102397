// pipeline/coordinator.c — leases and the exactly-once bookkeeping (see coordinator.h).
#include "pipeline/coordinator.h"
#include <stdlib.h>
#include <string.h>
#include "common/rng.h"

enum { U_PENDING, U_LEASED, U_DONE, U_FAILED };

typedef struct {
    uint8_t state;
    uint8_t attempts;   // leases lost with their worker this epoch
    int owner;          // worker id while leased
    uint32_t next_seq;  // chunks accepted so far
} unit_rec;

typedef struct {
    double last_seen;
    int alive;
    int leases;
} worker_rec;

#define MAX_SUMMARIES 8

typedef struct { uint32_t epoch; uint64_t unit; } failed_rec;

struct vm_coord {
    vm_coord_opts o;
    unit_rec *units;
    uint32_t *order;    // this epoch's permutation
    int cursor;         // next position in order
    uint64_t *retry;    // re-issued units, served first (stack)
    int nretry;
    worker_rec *workers;
    int nworkers, capworkers;
    uint32_t epoch;
    int finished;
    int closed;         // units done or failed this epoch
    vm_epoch_summary cur;
    double epoch_t0;
    vm_epoch_summary done[MAX_SUMMARIES];
    int ndone;
    int64_t limit;      // lease from the order only below this global position (ordered delivery)
    failed_rec *failed; // units closed as failed: [failhead, nfailed) not yet popped (FIFO; both
    int nfailed, capfailed, failhead;  // indices go back to 0 when the caller has popped them all)
    int failed_lost;    // out of memory recording a failure (reported by vm_coord_next_failed)
};

void vm_coord_unit_order(uint64_t seed, uint32_t epoch, int n, uint32_t *order) {
    // Fisher-Yates with a stream per epoch: the order depends only on (seed, epoch).
    vm_rng r;
    vm_rng_init(&r, seed, vm_rng_stream(VM_RNG_DATA_ORDER, epoch, 0, 0));
    for (int i = 0; i < n; i++) order[i] = (uint32_t)i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)vm_rng_int(&r, 0, i);
        uint32_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

static void start_epoch(vm_coord *c, double now) {
    int n = c->o.n_units;
    for (int i = 0; i < n; i++) c->units[i] = (unit_rec){U_PENDING, 0, -1, 0};
    vm_coord_unit_order(c->o.seed, c->epoch, n, c->order);
    c->cursor = 0;
    c->nretry = 0;
    c->closed = 0;
    memset(&c->cur, 0, sizeof c->cur);
    c->cur.epoch = c->epoch;
    c->epoch_t0 = now;
}

vm_coord *vm_coord_new(const vm_coord_opts *opts, double now) {
    if (opts->n_units <= 0 || opts->start_unit < 0 || opts->start_unit >= opts->n_units) return NULL;
    vm_coord *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->o = *opts;
    if (c->o.max_attempts <= 0) c->o.max_attempts = 3;
    c->limit = INT64_MAX;
    c->units = calloc(opts->n_units, sizeof *c->units);
    c->order = calloc(opts->n_units, sizeof *c->order);
    c->retry = calloc(opts->n_units, sizeof *c->retry);
    if (!c->units || !c->order || !c->retry) { vm_coord_free(c); return NULL; }
    c->epoch = opts->start_epoch;
    if (c->o.epochs > 0 && c->epoch >= (uint32_t)c->o.epochs) {
        c->finished = 1;
        return c;
    }
    start_epoch(c, now);
    // Resume: the units the stopped run consumed are closed as they stand in the order, so positions
    // (and the lease limit's global positions) mean what they meant in that run.  Closing them here
    // cannot complete the epoch: start_unit < n_units.
    for (int i = 0; i < opts->start_unit; i++) c->units[c->order[i]].state = U_DONE;
    c->closed = opts->start_unit;
    c->cur.skipped = opts->start_unit;
    c->cursor = opts->start_unit;
    c->units[c->order[opts->start_unit]].next_seq = opts->start_seq;
    return c;
}

void vm_coord_free(vm_coord *c) {
    if (!c) return;
    free(c->units);
    free(c->order);
    free(c->retry);
    free(c->workers);
    free(c->failed);
    free(c);
}

int vm_coord_add_worker(vm_coord *c, double now) {
    if (c->nworkers == c->capworkers) {
        int nc = c->capworkers ? c->capworkers * 2 : 16;
        worker_rec *w = realloc(c->workers, (size_t)nc * sizeof *w);
        if (!w) return -1;
        c->workers = w;
        c->capworkers = nc;
    }
    c->workers[c->nworkers] = (worker_rec){now, 1, 0};
    return c->nworkers++;
}

static worker_rec *W(const vm_coord *c, int wid) {
    return wid >= 0 && wid < c->nworkers ? &c->workers[wid] : NULL;
}

void vm_coord_touch(vm_coord *c, int wid, double now) {
    worker_rec *w = W(c, wid);
    if (w && w->alive) w->last_seen = now;
}

int vm_coord_worker_alive(const vm_coord *c, int wid) {
    worker_rec *w = W(c, wid);
    return w && w->alive;
}

int vm_coord_worker_leases(const vm_coord *c, int wid) {
    worker_rec *w = W(c, wid);
    return w ? w->leases : 0;
}

// Close a unit (delivered or failed); completing the epoch queues its summary and starts the next.
static void close_unit(vm_coord *c, unit_rec *u, int state, double now) {
    if (u->state == U_LEASED) {
        worker_rec *w = W(c, u->owner);
        if (w) w->leases--;
    }
    u->state = state;
    u->owner = -1;
    if (state == U_DONE) c->cur.delivered++;
    else {
        c->cur.failed++;
        // Ordered delivery skips a failed unit only once it knows: record it for vm_coord_next_failed.
        if (c->nfailed == c->capfailed) {
            int nc = c->capfailed ? c->capfailed * 2 : 16;
            failed_rec *f = realloc(c->failed, (size_t)nc * sizeof *f);
            if (f) c->failed = f, c->capfailed = nc;
        }
        if (c->nfailed < c->capfailed) c->failed[c->nfailed++] = (failed_rec){c->epoch, (uint64_t)(u - c->units)};
        else c->failed_lost = 1;
    }
    if (++c->closed < c->o.n_units) return;
    c->cur.seconds = now - c->epoch_t0;
    if (c->ndone < MAX_SUMMARIES) c->done[c->ndone++] = c->cur;
    c->epoch++;
    if (c->o.epochs > 0 && c->epoch >= (uint32_t)c->o.epochs) c->finished = 1;
    else start_epoch(c, now);
}

static void fail_code(vm_coord *c, int code) {
    int k = -code;
    if (k < 0 || k >= VM_COORD_MAX_CODES) k = 0;
    c->cur.failed_by_code[k]++;
}

// Give the worker's leases back to the queue (front); a unit lost too often fails.
static int reissue_of(vm_coord *c, int wid, double now) {
    int n = 0;
    for (int i = 0; i < c->o.n_units && !c->finished; i++) {
        unit_rec *u = &c->units[i];
        if (u->state != U_LEASED || u->owner != wid) continue;
        if (++u->attempts >= c->o.max_attempts) {
            fail_code(c, -6 /* VM_ETIMEOUT: lost its worker too often */);
            close_unit(c, u, U_FAILED, now);
            continue;
        }
        c->workers[wid].leases--;
        u->state = U_PENDING;
        u->owner = -1;
        c->retry[c->nretry++] = i;
        c->cur.reissued++;
        n++;
    }
    return n;
}

int vm_coord_remove_worker(vm_coord *c, int wid) {
    worker_rec *w = W(c, wid);
    if (!w || !w->alive) return 0;
    w->alive = 0;
    return reissue_of(c, wid, w->last_seen);
}

int vm_coord_lease(vm_coord *c, int wid, double now, vm_lease *out) {
    if (c->finished) return -1;
    worker_rec *w = W(c, wid);
    if (!w || !w->alive) return 0;
    w->last_seen = now;
    int64_t idx = -1;
    while (c->nretry > 0 && idx < 0) {
        uint64_t u = c->retry[--c->nretry];
        if (c->units[u].state == U_PENDING) idx = (int64_t)u;
    }
    // Re-issued units are exempt from the limit: they were leased below it before, and the head of
    // the line may be one of them.
    while (idx < 0 && c->cursor < c->o.n_units && (int64_t)c->epoch * c->o.n_units + c->cursor < c->limit) {
        uint32_t u = c->order[c->cursor++];
        if (c->units[u].state == U_PENDING) idx = u;
    }
    if (idx < 0) return 0;
    unit_rec *u = &c->units[idx];
    u->state = U_LEASED;
    u->owner = wid;
    w->leases++;
    *out = (vm_lease){c->epoch, (uint64_t)idx, u->next_seq};
    return 1;
}

int vm_coord_chunk(vm_coord *c, int wid, uint32_t epoch, uint64_t unit, uint32_t seq, int last,
                   int64_t samples, int64_t bytes) {
    if (unit >= (uint64_t)c->o.n_units || epoch > c->epoch) return VM_CHUNK_INVALID;
    if (epoch < c->epoch || c->finished) { c->cur.duplicates += epoch < c->epoch; return VM_CHUNK_DUPLICATE; }
    unit_rec *u = &c->units[unit];
    if (u->state == U_DONE || u->state == U_FAILED || seq < u->next_seq) {
        c->cur.duplicates++;
        return VM_CHUNK_DUPLICATE;
    }
    // A chunk past the next expected one cannot come from a FIFO connection; a hostile or broken
    // peer sent it.  Accepting it would leave a hole in the unit.
    if (seq > u->next_seq) return VM_CHUNK_INVALID;
    u->next_seq++;
    c->cur.samples += samples;
    c->cur.bytes += bytes;
    worker_rec *w = W(c, wid);
    double now = w ? w->last_seen : c->epoch_t0;
    if (last) close_unit(c, u, U_DONE, now);
    return VM_CHUNK_ACCEPT;
}

int vm_coord_fail(vm_coord *c, int wid, uint32_t epoch, uint64_t unit, int code) {
    if (c->finished || epoch != c->epoch || unit >= (uint64_t)c->o.n_units) return 0;
    unit_rec *u = &c->units[unit];
    if (u->state == U_DONE || u->state == U_FAILED) return 0;
    // Only the current holder's verdict counts; a re-issued copy is still running elsewhere.
    if (u->state == U_LEASED && u->owner != wid) return 0;
    fail_code(c, code);
    worker_rec *w = W(c, wid);
    close_unit(c, u, U_FAILED, w ? w->last_seen : c->epoch_t0);
    return 1;
}

int vm_coord_expire(vm_coord *c, double now, int *lost, int cap) {
    int n = 0;
    for (int i = 0; i < c->nworkers; i++) {
        worker_rec *w = &c->workers[i];
        if (!w->alive || now - w->last_seen <= c->o.lease_timeout) continue;
        w->alive = 0;
        reissue_of(c, i, now);
        if (n < cap) lost[n] = i;
        n++;
    }
    return n;
}

int vm_coord_next_summary(vm_coord *c, vm_epoch_summary *out) {
    if (!c->ndone) return 0;
    *out = c->done[0];
    memmove(c->done, c->done + 1, (size_t)(--c->ndone) * sizeof *c->done);
    return 1;
}

int vm_coord_next_failed(vm_coord *c, uint32_t *epoch, uint64_t *unit) {
    if (c->failed_lost) return -1;
    if (c->failhead == c->nfailed) {  // all popped: the array starts over
        c->failhead = c->nfailed = 0;
        return 0;
    }
    *epoch = c->failed[c->failhead].epoch;
    *unit = c->failed[c->failhead].unit;
    c->failhead++;
    return 1;
}

void vm_coord_set_lease_limit(vm_coord *c, int64_t limit) { c->limit = limit; }

uint32_t vm_coord_epoch(const vm_coord *c) { return c->epoch; }
int vm_coord_finished(const vm_coord *c) { return c->finished; }

int vm_coord_outstanding(const vm_coord *c) {
    int n = 0;
    for (int i = 0; i < c->o.n_units; i++) n += c->units[i].state == U_LEASED;
    return n;
}
