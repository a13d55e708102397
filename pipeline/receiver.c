// pipeline/receiver.c — coordinator thread, validation, credits and batch assembly (see receiver.h).
#include "pipeline/receiver.h"
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>
#include "common/io.h"
#include "common/log.h"
#include "pipeline/curve.h"
#include "pipeline/dataset.h"
#include "pipeline/wire.h"

enum { Q_CHUNK, Q_EPOCH_END, Q_RUN_END, Q_FAILED };

// A queued item.  Entries are allocated when a worker joins (credits of them) and recycled through
// a free list, so the hot path allocates nothing once warm (ordered mode may hold a lease window's
// worth, allocated on first need); they never move (a zmq_msg_t must not be copied).
typedef struct qent {
    struct qent *next;
    int kind;
    zmq_msg_t msg;         // the DATA body, still compressed (Q_CHUNK)
    vm_batch_view v;       // parsed, borrowing msg's data
    int wid;
    uint64_t session;
    uint32_t epoch;
    uint32_t used;         // samples already taken by next_batch
    uint64_t unit;         // ordered mode: the entry's key (epoch, unit, seq); Q_FAILED: a failed unit
    uint32_t seq;
    uint8_t last;          // the unit's final chunk
} qent;

// Ordered mode: chunks waiting for their turn, hashed by (epoch, unit).  Chains stay short: the lease
// window bounds how many units have chunks here (see handle_request).
#define HELD_BITS 10

typedef struct wrec {
    uint8_t id[256];       // ROUTER identity of the worker's connection
    size_t idlen;
    uint64_t session;
    int alive;
    int64_t outstanding;   // DATA messages received and not yet credited back
    char host[64];
    int pid;
    // latest totals from the worker's heartbeat
    int64_t samples;
    double decode_s, render_s, encode_s, credit_wait_s;
} wrec;

struct vm_receiver {
    vm_config cfg;
    vm_receiver_opts o;
    int ordered;           // [pipeline] ordered
    int epochs;            // epochs to deliver (<= 0: unlimited)
    vm_dataset ds;
    int V, S, spu, chunk;  // views, view side, samples per unit, largest chunk
    size_t sample_bytes, max_msg;
    void *zctx, *router;
    int efd;               // next_batch -> IO thread: credits to return
    char endpoint[256];
    pthread_t th;
    int th_started;
    atomic_int stop;
    vm_coord *coord;
    // CURVE on: the ZAP handler's socket, the ROUTER's handshake events, the admitted keys, and
    // what was refused already (keys, or reasons for key-less failures), each logged once.
    void *zap, *mon;
    vm_curve_clients clients;
    char (*refused)[64];
    int nrefused;
    uint64_t nonce;
    char *cfg_text;
    size_t cfg_len;
    uint8_t *fail_logged;  // per unit: its failure was logged once
    double t0, last_stats, last_expire;
    int stop_sent;
    // IO thread only
    wrec *w;
    int nw, capw;
    // shared, under mu
    pthread_mutex_t mu;
    pthread_cond_t cv;
    qent *qhead, *qtail, *freelist;
    int qlen;              // chunks queued (FIFO) or held (ordered)
    qent *held[1 << HELD_BITS];  // ordered mode: chunks and failed-unit records by (epoch, unit)
    uint32_t start_epoch;  // the first epoch delivered (vm_receiver_opts.start_epoch)
    uint32_t c_epoch;      // ordered: the epoch being delivered, its order, the next unit and chunk;
                           // c_epoch * n + c_pos is the head unit's global position (handle_request)
    uint32_t *c_order;
    int c_pos;
    uint32_t c_seq;
    int64_t *ret;          // per worker: credits to return
    int retcap;
    vm_receiver_stats st;
    int io_dead, cancelled;
    char io_err[256];
    // consumer only
    qent *cur;
    int staged;
    uint8_t *staging;      // one chunk's pixels, for a chunk split across batches
    int ended;
    vm_receiver_pos pos;   // the next sample's position (vm_receiver_position)
    uint32_t skip;         // ordered resume: samples of the first chunk popped that the stopped run consumed
    struct pend { qent *c; uint8_t *dst; } *pend;  // whole chunks of this batch, decoded together
    int pendcap;
};

void vm_receiver_opts_default(vm_receiver_opts *o) {
    *o = (vm_receiver_opts){.epochs = 0, .drop_last = 1, .stats_every_s = 10, .quiet = 0};
}

int vm_pipeline_views(const vm_config *cfg) {
    switch (cfg->sampler.policy) {
    case VM_POLICY_CLIP: return cfg->sampler.clip_len;
    case VM_POLICY_MULTIVIEW: return cfg->sampler.num_clips * cfg->sampler.num_crops * cfg->sampler.clip_len;
    default: return 2;
    }
}

int vm_pipeline_samples_per_unit(const vm_config *cfg) { return cfg->sampler.pairs_per_video; }

#define INFO(r, ...) do { if (!(r)->o.quiet) vm_info(__VA_ARGS__); } while (0)

// ---- sending --------------------------------------------------------------------------------

static int send_to(vm_receiver *r, const uint8_t *id, size_t idlen, const vm_wire_msg *m, const void *body,
                   size_t blen) {
    uint8_t hdr[VM_WIRE_HDR_SIZE];
    vm_wire_encode(m, hdr);
    // DONTWAIT: a peer that went away must not block the coordinator (ROUTER drops silently).
    if (zmq_send(r->router, id, idlen, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return -1;
    if (zmq_send(r->router, hdr, sizeof hdr, (body ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0) return -1;
    if (body && zmq_send(r->router, body, blen, ZMQ_DONTWAIT) < 0) return -1;
    return 0;
}

static void reject(vm_receiver *r, const uint8_t *id, size_t idlen, int reason, const char *why) {
    // Count before telling the peer, so that whoever hears the REJECT also sees it counted.
    pthread_mutex_lock(&r->mu);
    r->st.rejected++;
    if (reason == VM_WIRE_R_MALFORMED) r->st.rejected_malformed++;
    else if (reason == VM_WIRE_R_VERSION) r->st.rejected_version++;
    else if (reason == VM_WIRE_R_SESSION) r->st.rejected_session++;
    else r->st.rejected_baddata++;
    pthread_mutex_unlock(&r->mu);
    vm_wire_msg m = {.type = VM_MSG_REJECT, .arg = (uint32_t)reason};
    send_to(r, id, idlen, &m, why, strlen(why));
}

static void send_credit(vm_receiver *r, int wid, int64_t n) {
    wrec *w = &r->w[wid];
    w->outstanding -= n;
    if (!w->alive) return;
    vm_wire_msg m = {.type = VM_MSG_CREDIT, .count = (uint32_t)n, .session = w->session};
    send_to(r, w->id, w->idlen, &m, NULL, 0);
}

// ---- the consumer queue ------------------------------------------------------------------------

static void q_push_locked(vm_receiver *r, qent *e) {
    e->next = NULL;
    if (r->qtail) r->qtail->next = e;
    else r->qhead = e;
    r->qtail = e;
    r->qlen++;
    pthread_cond_signal(&r->cv);
}

static qent *q_new_locked(vm_receiver *r) {
    qent *e = r->freelist;
    if (e) { r->freelist = e->next; return e; }
    e = calloc(1, sizeof *e);  // only when markers outnumber the per-worker entries (rare)
    return e;
}

// ---- ordered mode: the held chunks ------------------------------------------------------------------

static qent **held_bucket(vm_receiver *r, uint32_t epoch, uint64_t unit) {
    uint64_t k = ((uint64_t)epoch * 0x9E3779B97F4A7C15ull + unit) * 0xff51afd7ed558ccdull;
    return &r->held[k >> (64 - HELD_BITS)];
}

static void held_insert_locked(vm_receiver *r, qent *e) {
    qent **b = held_bucket(r, e->epoch, e->unit);
    e->next = *b;
    *b = e;
    if (e->kind == Q_CHUNK) r->qlen++;
    pthread_cond_signal(&r->cv);
}

// A marker: Q_EPOCH_END or Q_RUN_END queued (arrival order), or the Q_FAILED record of a unit held
// beside its chunks (ordered).  -1 when out of memory.
static int q_marker(vm_receiver *r, int kind, uint32_t epoch, uint64_t unit) {
    pthread_mutex_lock(&r->mu);
    qent *e = q_new_locked(r);
    if (e) {
        e->kind = kind;
        e->epoch = epoch;
        e->unit = unit;
        if (kind == Q_FAILED) held_insert_locked(r, e);
        else q_push_locked(r, e);
    }
    pthread_mutex_unlock(&r->mu);
    return e ? 0 : -1;
}

// The head unit's next chunk (unlinked), or NULL; *failed = the unit has a failure record (which is
// unlinked and recycled only when no chunk is found: every chunk accepted before the failure is here).
static qent *held_take_locked(vm_receiver *r, uint32_t epoch, uint64_t unit, uint32_t seq, int *failed) {
    qent **fp = NULL;
    *failed = 0;
    for (qent **p = held_bucket(r, epoch, unit); *p; p = &(*p)->next) {
        qent *e = *p;
        if (e->epoch != epoch || e->unit != unit) continue;
        if (e->kind == Q_CHUNK && e->seq == seq) {
            *p = e->next;
            r->qlen--;
            return e;
        }
        if (e->kind == Q_FAILED) fp = p;
    }
    if (fp) {
        qent *f = *fp;
        *fp = f->next;
        f->next = r->freelist;
        r->freelist = f;
        *failed = 1;
    }
    return NULL;
}

// Under mu, without waiting: the next item for next_batch.  Q_CHUNK (*out set), Q_EPOCH_END or
// Q_RUN_END, or -1 when nothing is ready yet.
static int pop_locked(vm_receiver *r, qent **out) {
    if (!r->ordered) {  // arrival order
        qent *e = r->qhead;
        if (!e) return -1;
        r->qhead = e->next;
        if (!r->qhead) r->qtail = NULL;
        r->qlen--;  // markers are counted too (q_push_locked)
        if (e->kind == Q_CHUNK) {
            *out = e;
            return Q_CHUNK;
        }
        int kind = e->kind;
        e->next = r->freelist;
        r->freelist = e;
        return kind;
    }
    // The epoch's unit order, chunk by chunk; a failed unit is skipped once the coordinator said so.
    for (;;) {
        int n = r->ds.n;
        if (r->c_pos == n) {
            // Every unit is consumed or skipped; end the epoch once the coordinator has closed it too
            // (its summary counted), so that the statistics read after the end include it.
            if ((int64_t)r->st.epochs_done + r->start_epoch <= (int64_t)r->c_epoch) return -1;
            r->c_epoch++;
            r->c_pos = 0;
            r->c_seq = 0;
            r->pos = (vm_receiver_pos){(long)r->c_epoch, 0, 0};
            vm_coord_unit_order((uint64_t)r->cfg.run.seed, r->c_epoch, n, r->c_order);
            return r->epochs > 0 && r->c_epoch >= (uint32_t)r->epochs ? Q_RUN_END : Q_EPOCH_END;
        }
        int failed;
        qent *e = held_take_locked(r, r->c_epoch, r->c_order[r->c_pos], r->c_seq, &failed);
        if (!e && !failed) return -1;
        // The first chunk of a resumed run's head unit: its samples the stopped run took are dropped
        // (a failed head unit has none to drop).
        if (e) e->used = r->skip;
        r->skip = 0;
        if (!e) r->pos = (vm_receiver_pos){(long)r->c_epoch, r->c_pos + 1, 0};  // skipped as failed
        if (e && !e->last) {
            r->c_seq++;
        } else {  // the unit is complete (or failed): the next one is the head of the line
            r->c_pos++;
            r->c_seq = 0;
        }
        if (e) {
            *out = e;
            return Q_CHUNK;
        }
    }
}

// Ordered mode: how many unit positions past the consumer's head may be leased.  Chunks exist only for
// leased units, so the held chunks are at most window x chunks-per-unit.  Per live worker the
// larger of its credits' worth of units and 4: twice a worker's default prefetch (2 leases), so a
// worker that finished its units can take more while the head unit is still being produced
// elsewhere (with exactly the prefetch the faster worker idles at every uneven unit).
static int64_t lease_window(vm_receiver *r) {
    int alive = 0;
    for (int i = 0; i < r->nw; i++) alive += r->w[i].alive;
    if (alive < 1) alive = 1;
    int per_unit = (r->spu + r->chunk - 1) / r->chunk;
    int per = (r->cfg.pipeline.credits + per_unit - 1) / per_unit;
    if (per < 4) per = 4;
    return (int64_t)alive * per;
}

// ---- epoch events --------------------------------------------------------------------------------

static void io_fail(vm_receiver *r, const char *why) {
    pthread_mutex_lock(&r->mu);
    r->io_dead = 1;
    snprintf(r->io_err, sizeof r->io_err, "%s", why);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void drain_summaries(vm_receiver *r) {
    // Failed units first: in ordered mode next_batch skips one only on its record.
    uint32_t fe;
    uint64_t fu;
    int k;
    while ((k = vm_coord_next_failed(r->coord, &fe, &fu)) != 0) {
        if (k < 0) { io_fail(r, "receiver: out of memory recording a failed video"); break; }
        if (r->ordered && q_marker(r, Q_FAILED, fe, fu)) { io_fail(r, "receiver: out of memory"); break; }
    }
    vm_epoch_summary s;
    while (vm_coord_next_summary(r->coord, &s)) {
        char reasons[512] = "";
        size_t n = 0;
        for (int k = 0; k < VM_COORD_MAX_CODES; k++)
            if (s.failed_by_code[k])
                n += snprintf(reasons + n, sizeof reasons - n, "%s%s %" PRId64, n ? ", " : "",
                              k ? vm_strerror(-k) : "other", s.failed_by_code[k]);
        char skipped[64] = "";
        if (s.skipped) snprintf(skipped, sizeof skipped, ", %" PRId64 " skipped (consumed before the resume)", s.skipped);
        INFO(r, "epoch %u: %" PRId64 " videos delivered, %" PRId64 " failed%s%s%s%s, %" PRId64
                " duplicates dropped, %" PRId64 " re-issued, %" PRId64 " samples, %.1f MB in %.1f s",
             s.epoch, s.delivered, s.failed, n ? " (" : "", reasons, n ? ")" : "", skipped, s.duplicates, s.reissued,
             s.samples, s.bytes / 1e6, s.seconds);
        pthread_mutex_lock(&r->mu);
        r->st.epochs_done++;
        pthread_cond_signal(&r->cv);  // an ordered next_batch may wait for this at the epoch's end
        pthread_mutex_unlock(&r->mu);
        if (!r->ordered) q_marker(r, Q_EPOCH_END, s.epoch, 0);  // ordered: next_batch counts units itself
    }
    if (vm_coord_finished(r->coord) && !r->stop_sent) {
        r->stop_sent = 1;
        if (!r->ordered) q_marker(r, Q_RUN_END, vm_coord_epoch(r->coord), 0);
        for (int i = 0; i < r->nw; i++)
            if (r->w[i].alive) {
                vm_wire_msg m = {.type = VM_MSG_STOP, .session = r->w[i].session};
                send_to(r, r->w[i].id, r->w[i].idlen, &m, NULL, 0);
            }
    }
}

// ---- handling one message -------------------------------------------------------------------------

static int add_worker(vm_receiver *r, const uint8_t *id, size_t idlen, const char *hello, double now) {
    int wid = vm_coord_add_worker(r->coord, now);
    if (wid < 0 || wid >= (1 << 24)) return -1;
    if (wid >= r->capw) {
        int nc = r->capw ? r->capw * 2 : 16;
        wrec *w = realloc(r->w, (size_t)nc * sizeof *w);
        if (!w) return -1;
        r->w = w;
        r->capw = nc;
    }
    // Queue entries for this worker's credits (the only allocation the data path ever needs).
    pthread_mutex_lock(&r->mu);
    if (wid >= r->retcap) {
        int nc = r->retcap ? r->retcap * 2 : 16;
        int64_t *ret = realloc(r->ret, (size_t)nc * sizeof *ret);
        if (!ret) { pthread_mutex_unlock(&r->mu); return -1; }
        memset(ret + r->retcap, 0, (size_t)(nc - r->retcap) * sizeof *ret);
        r->ret = ret;
        r->retcap = nc;
    }
    for (int i = 0; i < r->cfg.pipeline.credits + 1; i++) {
        qent *e = calloc(1, sizeof *e);
        if (!e) break;
        e->next = r->freelist;
        r->freelist = e;
    }
    r->st.workers_joined++;
    pthread_mutex_unlock(&r->mu);
    r->nw = wid + 1;
    wrec *w = &r->w[wid];
    memset(w, 0, sizeof *w);
    memcpy(w->id, id, idlen);
    w->idlen = idlen;
    w->session = r->nonce << 24 | (uint64_t)wid;
    w->alive = 1;
    sscanf(hello, "host=%63s pid=%d", w->host, &w->pid);
    return wid;
}

static void worker_gone(vm_receiver *r, int wid, const char *why) {
    wrec *w = &r->w[wid];
    if (!w->alive) return;
    w->alive = 0;
    INFO(r, "worker %d (%s pid %d) %s", wid, w->host, w->pid, why);
}

// The worker of a message: its session must be one we issued and still alive.
static int lookup(vm_receiver *r, const vm_wire_msg *m) {
    uint64_t wid = m->session & 0xffffff;
    if (m->session >> 24 != (r->nonce & 0xffffffffffull) || wid >= (uint64_t)r->nw) return -1;
    wrec *w = &r->w[wid];
    return w->alive && w->session == m->session && vm_coord_worker_alive(r->coord, (int)wid) ? (int)wid : -1;
}

static void handle_data(vm_receiver *r, int wid, const vm_wire_msg *m, zmq_msg_t *body, const uint8_t *id,
                        size_t idlen) {
    wrec *w = &r->w[wid];
    w->outstanding++;
    if (w->outstanding > r->cfg.pipeline.credits) {
        pthread_mutex_lock(&r->mu);
        r->st.credit_violations++;
        pthread_mutex_unlock(&r->mu);
    }
    vm_batch_view v;
    vm_error e = {0};
    char why[1200];
    int bad = 0;
    if (vm_batch_parse(zmq_msg_data(body), zmq_msg_size(body), &v, &e)) {
        snprintf(why, sizeof why, "DATA epoch %u unit %" PRIu64 " seq %u: %s", m->epoch, m->unit, m->seq, e.msg);
        bad = 1;
    } else if (v.h.views != (uint32_t)r->V || v.h.height != (uint32_t)r->S || v.h.width != (uint32_t)r->S ||
               v.h.batch != m->count || v.h.batch == 0 || v.h.batch > (uint32_t)r->chunk || v.h.epoch != m->epoch ||
               v.h.work_unit != m->unit) {
        snprintf(why, sizeof why,
                 "DATA epoch %u unit %" PRIu64 " seq %u: batch %ux%ux%ux%u epoch %u unit %" PRIu64
                 " does not match the run (%dx%dx%d, <= %d samples) or the control header",
                 m->epoch, m->unit, m->seq, v.h.batch, v.h.views, v.h.height, v.h.width, v.h.epoch, v.h.work_unit,
                 r->V, r->S, r->S, r->chunk);
        bad = 1;
    }
    if (bad) {
        vm_warn("rejected from worker %d (%s pid %d): %s", wid, w->host, w->pid, why);
        reject(r, id, idlen, VM_WIRE_R_BADDATA, why);
        send_credit(r, wid, 1);
        return;
    }
    int verdict = vm_coord_chunk(r->coord, wid, m->epoch, m->unit, m->seq, (m->flags & VM_WIRE_F_LAST) != 0,
                                 v.h.batch, (int64_t)zmq_msg_size(body));
    if (verdict != VM_CHUNK_ACCEPT) {
        if (verdict == VM_CHUNK_INVALID) {
            snprintf(why, sizeof why, "DATA epoch %u unit %" PRIu64 " seq %u was never leased", m->epoch, m->unit, m->seq);
            vm_warn("rejected from worker %d (%s pid %d): %s", wid, w->host, w->pid, why);
            reject(r, id, idlen, VM_WIRE_R_BADDATA, why);
        } else {
            pthread_mutex_lock(&r->mu);
            r->st.duplicates++;
            pthread_mutex_unlock(&r->mu);
        }
        send_credit(r, wid, 1);
        return;
    }
    pthread_mutex_lock(&r->mu);
    qent *q = q_new_locked(r);
    if (!q) {
        pthread_mutex_unlock(&r->mu);
        io_fail(r, "receiver: out of memory");
        return;
    }
    q->kind = Q_CHUNK;
    q->unit = m->unit;
    q->seq = m->seq;
    q->last = (m->flags & VM_WIRE_F_LAST) != 0;
    zmq_msg_init(&q->msg);
    zmq_msg_move(&q->msg, body);
    vm_batch_parse(zmq_msg_data(&q->msg), zmq_msg_size(&q->msg), &q->v, NULL);  // re-borrow after the move
    q->wid = wid;
    q->session = m->session;
    q->epoch = m->epoch;
    q->used = 0;
    r->st.chunks++;
    r->st.samples += v.h.batch;
    r->st.bytes_wire += v.h.payload_size;
    r->st.bytes_raw += v.h.raw_size;
    if (r->ordered) held_insert_locked(r, q);
    else q_push_locked(r, q);
    pthread_mutex_unlock(&r->mu);
    // Ordered mode returns the credit on arrival, not when next_batch consumes the chunk: a chunk
    // held for its turn must not hold its worker's credit, or the worker could be unable to send
    // the very unit the line waits for (a re-issued head unit queued behind its later units).  The
    // lease window bounds what is held instead (handle_request).
    if (r->ordered) send_credit(r, wid, 1);
}

static void handle_request(vm_receiver *r, int wid, const vm_wire_msg *m, double now) {
    wrec *w = &r->w[wid];
    if (atomic_load(&r->stop)) {  // shutting down: no new leases
        vm_wire_msg s = {.type = VM_MSG_STOP, .session = w->session};
        send_to(r, w->id, w->idlen, &s, NULL, 0);
        return;
    }
    int want = m->count ? (int)m->count : 1, given = 0;
    if (want > 16) want = 16;
    if (r->ordered) {
        pthread_mutex_lock(&r->mu);
        int64_t head = (int64_t)r->c_epoch * r->ds.n + r->c_pos;  // the unit next_batch waits for
        pthread_mutex_unlock(&r->mu);
        vm_coord_set_lease_limit(r->coord, head + lease_window(r));
    }
    for (; given < want; given++) {
        vm_lease l;
        int rc = vm_coord_lease(r->coord, wid, now, &l);
        if (rc < 0) {
            vm_wire_msg s = {.type = VM_MSG_STOP, .session = w->session};
            send_to(r, w->id, w->idlen, &s, NULL, 0);
            return;
        }
        if (rc == 0) break;
        const char *path = r->ds.videos[l.unit].path;
        vm_wire_msg o = {.type = VM_MSG_LEASE, .epoch = l.epoch, .unit = l.unit, .seq = l.first_seq,
                         .count = (uint32_t)r->spu, .session = w->session};
        send_to(r, w->id, w->idlen, &o, path, strlen(path));
    }
    if (given < want) {  // fewer than asked (the epoch is finishing): the worker asks again later
        vm_wire_msg o = {.type = VM_MSG_WAIT, .session = w->session};
        send_to(r, w->id, w->idlen, &o, NULL, 0);
    }
}

static void handle_fail(vm_receiver *r, int wid, const vm_wire_msg *m, const char *reason) {
    int code = -(int)m->arg;
    if (!vm_coord_fail(r->coord, wid, m->epoch, m->unit, code)) return;
    pthread_mutex_lock(&r->mu);
    r->st.units_failed++;
    int k = -code;
    r->st.failed_by_code[k > 0 && k < VM_COORD_MAX_CODES ? k : 0]++;
    pthread_mutex_unlock(&r->mu);
    if (m->unit < (uint64_t)r->ds.n && !r->fail_logged[m->unit]) {
        r->fail_logged[m->unit] = 1;  // once per run: the same video fails again every epoch
        vm_warn("video failed (%s): %s", vm_strerror(code), reason);
    }
}

static void handle_heartbeat(vm_receiver *r, int wid, const char *body) {
    wrec *w = &r->w[wid];
    long long samples = 0;
    double dec = 0, ren = 0, enc = 0, cw = 0;
    if (sscanf(body, "samples=%lld decode_s=%lf render_s=%lf encode_s=%lf credit_wait_s=%lf", &samples, &dec,
               &ren, &enc, &cw) == 5) {
        w->samples = samples;
        w->decode_s = dec;
        w->render_s = ren;
        w->encode_s = enc;
        w->credit_wait_s = cw;
    }
    // Answer, so that a worker blocked on credits still knows the coordinator is alive.
    vm_wire_msg o = {.type = VM_MSG_HEARTBEAT, .session = w->session};
    send_to(r, w->id, w->idlen, &o, NULL, 0);
}

// Receive one multipart message (non-blocking).  Returns 1 when one was handled, 0 when none waits.
static int recv_one(vm_receiver *r, double now) {
    uint8_t id[256], hdr[VM_WIRE_HDR_SIZE + 1];
    int idlen = zmq_recv(r->router, id, sizeof id, ZMQ_DONTWAIT);
    if (idlen < 0) return 0;
    int more = 0;
    size_t ml = sizeof more;
    zmq_getsockopt(r->router, ZMQ_RCVMORE, &more, &ml);
    int hlen = -1, nframes = 0;
    zmq_msg_t body;
    zmq_msg_init(&body);
    int have_body = 0;
    if (more) {
        hlen = zmq_recv(r->router, hdr, sizeof hdr, 0);
        nframes++;
        zmq_getsockopt(r->router, ZMQ_RCVMORE, &more, &ml);
        if (more) {
            zmq_msg_recv(&body, r->router, 0);
            have_body = 1;
            nframes++;
            zmq_getsockopt(r->router, ZMQ_RCVMORE, &more, &ml);
        }
        while (more) {  // frames beyond the protocol: drain, then reject
            zmq_msg_t extra;
            zmq_msg_init(&extra);
            zmq_msg_recv(&extra, r->router, 0);
            zmq_msg_close(&extra);
            nframes++;
            zmq_getsockopt(r->router, ZMQ_RCVMORE, &more, &ml);
        }
    }
    vm_wire_msg m;
    vm_error e = {0};
    int rc = hlen < 0 ? vm_fail(&e, VM_ECORRUPT, "no control header frame")
             : nframes > 2 ? vm_fail(&e, VM_ECORRUPT, "%d frames (at most 2)", nframes)
                           : vm_wire_decode(hdr, hlen > VM_WIRE_HDR_SIZE ? VM_WIRE_HDR_SIZE + 1 : (size_t)hlen, &m, &e);
    if (rc) {
        int reason = rc == VM_EVERSION ? VM_WIRE_R_VERSION : VM_WIRE_R_MALFORMED;
        vm_warn("rejected a message: %s", e.msg);
        reject(r, id, idlen, reason, e.msg);
        zmq_msg_close(&body);
        return 1;
    }
    // Control bodies are short text; give handlers a NUL-terminated copy.
    char text[VM_PATH_MAX + 512] = "";
    if (have_body && m.type != VM_MSG_DATA) {
        size_t n = zmq_msg_size(&body);
        if (n >= sizeof text) n = sizeof text - 1;
        memcpy(text, zmq_msg_data(&body), n);
        text[n] = 0;
    }
    if (m.type == VM_MSG_HELLO) {
        int wid = add_worker(r, id, idlen, text, now);
        if (wid < 0) {
            reject(r, id, idlen, VM_WIRE_R_MALFORMED, "coordinator: cannot take more workers");
        } else {
            INFO(r, "worker %d joined: %s", wid, text);
            vm_wire_msg o = {.type = VM_MSG_WELCOME, .session = r->w[wid].session,
                             .count = (uint32_t)r->cfg.pipeline.credits};
            send_to(r, id, idlen, &o, r->cfg_text, r->cfg_len);
            if (vm_coord_finished(r->coord)) {
                vm_wire_msg s = {.type = VM_MSG_STOP, .session = r->w[wid].session};
                send_to(r, id, idlen, &s, NULL, 0);
            }
        }
        zmq_msg_close(&body);
        return 1;
    }
    int wid = lookup(r, &m);
    if (wid < 0) {
        char why[128];
        snprintf(why, sizeof why, "%s from an unknown session %016" PRIx64 ": say HELLO", vm_wire_type_name(m.type),
                 m.session);
        reject(r, id, idlen, VM_WIRE_R_SESSION, why);
        zmq_msg_close(&body);
        return 1;
    }
    wrec *w = &r->w[wid];
    vm_coord_touch(r->coord, wid, now);
    if ((size_t)idlen != w->idlen || memcmp(id, w->id, idlen)) {  // reconnected under a new identity
        memcpy(w->id, id, idlen);
        w->idlen = idlen;
    }
    switch (m.type) {
    case VM_MSG_REQUEST: handle_request(r, wid, &m, now); break;
    case VM_MSG_DATA:
        if (!have_body) {
            reject(r, id, idlen, VM_WIRE_R_MALFORMED, "DATA without a body");
            break;
        }
        handle_data(r, wid, &m, &body, id, idlen);
        break;
    case VM_MSG_FAIL: handle_fail(r, wid, &m, text); break;
    case VM_MSG_HEARTBEAT: handle_heartbeat(r, wid, text); break;
    case VM_MSG_BYE: {
        int n = vm_coord_remove_worker(r->coord, wid);
        worker_gone(r, wid, n ? "left; its units were re-issued" : "left");
        break;
    }
    default: {
        char why[96];
        snprintf(why, sizeof why, "unexpected %s from a worker", vm_wire_type_name(m.type));
        reject(r, id, idlen, VM_WIRE_R_MALFORMED, why);
    }
    }
    zmq_msg_close(&body);
    drain_summaries(r);
    return 1;
}

// ---- the IO thread -------------------------------------------------------------------------------

static void return_credits(vm_receiver *r) {
    uint64_t x;
    if (read(r->efd, &x, sizeof x) < 0 && errno != EAGAIN) return;
    for (int i = 0; i < r->nw; i++) {
        pthread_mutex_lock(&r->mu);
        int64_t n = r->ret[i];
        r->ret[i] = 0;
        pthread_mutex_unlock(&r->mu);
        if (n) send_credit(r, i, n);
    }
}

static void fill_worker_stats_locked(vm_receiver *r) {
    int alive = 0;
    int64_t out = 0, samples = 0;
    double dec = 0, ren = 0, enc = 0, cw = 0;
    for (int i = 0; i < r->nw; i++) {
        alive += r->w[i].alive;
        out += r->w[i].alive ? r->w[i].outstanding : 0;
        samples += r->w[i].samples;
        dec += r->w[i].decode_s;
        ren += r->w[i].render_s;
        enc += r->w[i].encode_s;
        cw += r->w[i].credit_wait_s;
    }
    r->st.workers_alive = alive;
    r->st.credits_outstanding = out;
    r->st.worker_samples = samples;
    r->st.worker_decode_s = dec;
    r->st.worker_render_s = ren;
    r->st.worker_encode_s = enc;
    r->st.worker_credit_wait_s = cw;
    r->st.epoch = vm_coord_epoch(r->coord);
}

// ---- CURVE: the ZAP handler and the handshake failures ----------------------------------------------

#define MAX_REFUSED_LOGGED 256

// 1 the first time `what` (a key or a reason) is refused: it is then logged; later ones only counted.
static int first_refusal(vm_receiver *r, const char *what) {
    for (int i = 0; i < r->nrefused; i++)
        if (!strcmp(r->refused[i], what)) return 0;
    if (r->nrefused == MAX_REFUSED_LOGGED) {
        r->nrefused++;  // past the table: say so once, then count silently
        vm_warn("receiver: more than %d distinct refused handshakes; further ones are counted, not logged",
                MAX_REFUSED_LOGGED);
        return 0;
    }
    if (r->nrefused > MAX_REFUSED_LOGGED) return 0;
    if (!r->refused && !(r->refused = calloc(MAX_REFUSED_LOGGED, sizeof *r->refused))) return 1;
    snprintf(r->refused[r->nrefused++], sizeof r->refused[0], "%s", what);
    return 1;
}

static void count_refused(vm_receiver *r) {
    pthread_mutex_lock(&r->mu);
    r->st.rejected++;
    r->st.rejected_handshake++;
    pthread_mutex_unlock(&r->mu);
}

// libzmq holds each CURVE handshake until the ZAP handler answers: serve the waiting requests.
static void serve_zap(vm_receiver *r) {
    vm_curve_zap_req q;
    for (int i = 0; i < 64 && vm_curve_zap_serve(r->zap, &r->clients, &q); i++) {
        if (q.admitted) continue;
        count_refused(r);
        if (!first_refusal(r, q.key[0] ? q.key : q.address)) continue;
        if (q.key[0])
            vm_warn("receiver: refused a worker at %s: its public key %s is not admitted (to admit it: its .key file "
                    "in the directory [pipeline] curve_clients, or the line `public-key = %s` in that file; now %s)",
                    q.address, q.key, q.key,
                    r->cfg.pipeline.curve_clients[0] ? r->cfg.pipeline.curve_clients : "not set");
        else
            vm_warn("receiver: refused a connection from %s: %s", q.address[0] ? q.address : "?", q.why);
    }
}

// Handshakes that failed before any key check: a worker without CURVE, or with the wrong server key.
static void handshake_events(vm_receiver *r) {
    int ev, val;
    for (int i = 0; i < 64 && vm_curve_monitor_next(r->mon, &ev, &val); i++) {
        if (ev != ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) continue;
        count_refused(r);
        const char *why = vm_curve_protocol_error(val);
        // ZeroMQ does not name the peer of a failed handshake (the event carries our own endpoint).
        if (first_refusal(r, why))
            vm_warn("receiver: a connection failed the CURVE handshake: %s (a worker started without --server-key/--key, "
                    "or given another trainer's public key?)", why);
    }
}

static void *io_main(void *arg) {
    vm_receiver *r = arg;
    zmq_pollitem_t items[4] = {{r->router, 0, ZMQ_POLLIN, 0}, {NULL, r->efd, ZMQ_POLLIN, 0},
                               {r->zap, 0, ZMQ_POLLIN, 0}, {r->mon, 0, ZMQ_POLLIN, 0}};
    int nitems = r->zap ? 4 : 2;
    int tick_ms = r->cfg.pipeline.heartbeat_ms < 100 ? r->cfg.pipeline.heartbeat_ms : 100;
    while (!atomic_load(&r->stop)) {
        if (zmq_poll(items, nitems, tick_ms) < 0 && zmq_errno() != EINTR) {
            char why[sizeof r->io_err];
            snprintf(why, sizeof why, "receiver: zmq_poll: %s", zmq_strerror(zmq_errno()));
            io_fail(r, why);
            break;
        }
        double now = vm_now();
        if (items[1].revents & ZMQ_POLLIN) return_credits(r);
        if (r->zap && (items[2].revents & ZMQ_POLLIN)) serve_zap(r);
        if (r->mon && (items[3].revents & ZMQ_POLLIN)) handshake_events(r);
        // Bounded burst so credit returns and expiry are never starved by a flood.
        for (int i = 0; i < 256 && recv_one(r, now); i++) {}
        if (now - r->last_expire >= tick_ms / 1000.0) {
            r->last_expire = now;
            int lost[1];
            int n = vm_coord_expire(r->coord, now, lost, 1);
            // The coordinator is the authority on who is alive: sync our table with it (any number lost).
            for (int i = 0; n && i < r->nw; i++) {
                if (!r->w[i].alive || vm_coord_worker_alive(r->coord, i)) continue;
                vm_warn("worker %d (%s pid %d) lost: no message for %.1f s; its units are re-issued", i, r->w[i].host,
                        r->w[i].pid, r->cfg.pipeline.lease_timeout_ms / 1000.0);
                r->w[i].alive = 0;
                pthread_mutex_lock(&r->mu);
                r->st.workers_lost++;
                pthread_mutex_unlock(&r->mu);
            }
            if (n) drain_summaries(r);
        }
        pthread_mutex_lock(&r->mu);
        fill_worker_stats_locked(r);
        pthread_mutex_unlock(&r->mu);
        if (r->o.stats_every_s > 0 && now - r->last_stats >= r->o.stats_every_s) {
            r->last_stats = now;
            vm_receiver_stats s;
            vm_receiver_get_stats(r, &s);
            char line[1024];
            vm_receiver_format_stats(&s, now - r->t0, line, sizeof line);
            INFO(r, "%s", line);
        }
    }
    // Tell every worker the run is over and wait (briefly) for their BYE: closing the socket while
    // a worker's heartbeat sits unread makes the kernel reset the connection, and a reset can
    // discard the STOP before the worker has read it.
    for (int i = 0; i < r->nw; i++)
        if (r->w[i].alive) {
            vm_wire_msg m = {.type = VM_MSG_STOP, .session = r->w[i].session};
            send_to(r, r->w[i].id, r->w[i].idlen, &m, NULL, 0);
        }
    for (double t_end = vm_now() + 1.0; vm_now() < t_end;) {
        int alive = 0;
        for (int i = 0; i < r->nw; i++) alive += r->w[i].alive;
        if (!alive) break;
        zmq_pollitem_t it = {r->router, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 20) > 0)
            while (recv_one(r, vm_now())) {}
    }
    int linger = 300;
    zmq_setsockopt(r->router, ZMQ_LINGER, &linger, sizeof linger);
    return NULL;
}

// ---- public API ------------------------------------------------------------------------------------

// CURVE on: the server key on the ROUTER, the admitted keys, the ZAP handler bound in the context
// (before the ROUTER binds: libzmq lets every CURVE client in while no handler is bound).
static int curve_setup(vm_receiver *r, const vm_config *cfg, vm_error *err) {
    vm_curve_key key;
    int rc = vm_curve_key_load(cfg->pipeline.curve_secret_key, 1, &key, err);
    if (rc) {
        vm_error_prefix(err, "[pipeline] curve_secret_key: ");
        return rc;
    }
    if (cfg->pipeline.curve_clients[0] && (rc = vm_curve_clients_load(&r->clients, cfg->pipeline.curve_clients, err))) {
        vm_error_prefix(err, "[pipeline] curve_clients: ");
        goto done;
    }
    for (const char *p = r->o.curve_admit ? r->o.curve_admit : ""; *p;) {
        size_t n = strcspn(p, " \t\n");
        if (n) {
            char z85[128];
            snprintf(z85, sizeof z85, "%.*s", (int)(n < sizeof z85 - 1 ? n : sizeof z85 - 1), p);
            if ((rc = vm_curve_clients_add(&r->clients, z85, "receiver: curve_admit", err))) goto done;
        }
        p += n + (p[n] != 0);
    }
    if (!r->clients.n) {
        rc = vm_fail(err, VM_EINVAL, "[pipeline] curve_secret_key is set but no worker key is admitted: every worker "
                     "would be refused; list their public keys in [pipeline] curve_clients (a file of `public-key = KEY` "
                     "lines, or a directory of the workers' .key files)");
        goto done;
    }
    int one = 1, linger = 0;
    r->zap = zmq_socket(r->zctx, ZMQ_REP);
    if (!r->zap || zmq_setsockopt(r->zap, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_bind(r->zap, "inproc://zeromq.zap.01") != 0) {
        rc = vm_fail(err, VM_EIO, "receiver: cannot start the ZAP handler: %s", zmq_strerror(zmq_errno()));
        goto done;
    }
    if (zmq_setsockopt(r->router, ZMQ_CURVE_SERVER, &one, sizeof one) ||
        zmq_setsockopt(r->router, ZMQ_CURVE_SECRETKEY, key.sec, VM_CURVE_Z85_LEN)) {
        rc = vm_fail(err, VM_EUNSUPPORTED, "receiver: cannot make the endpoint a CURVE server: %s",
                     zmq_strerror(zmq_errno()));
        goto done;
    }
    if (!(r->mon = vm_curve_monitor(r->zctx, r->router, ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL))) {
        rc = vm_fail(err, VM_EIO, "receiver: cannot monitor the endpoint's handshakes: %s", zmq_strerror(zmq_errno()));
        goto done;
    }
    INFO(r, "receiver: CURVE on (server public key %s), %d worker key%s admitted", key.pub, r->clients.n,
         r->clients.n == 1 ? "" : "s");
done:
    memset(&key, 0, sizeof key);
    return rc;
}

static uint64_t make_nonce(void) {
    uint64_t x = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(&x, sizeof x, 1, f) != 1) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        x = (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 20 ^ (uint64_t)getpid() << 40;
    }
    if (f) fclose(f);
    return (x & 0xffffffffffull) | 1;  // 40 bits; never 0 (session 0 = "not joined")
}

int vm_receiver_start(vm_receiver **out, const vm_config *cfg, const vm_receiver_opts *opts, vm_error *err) {
    *out = NULL;
    vm_receiver *r = calloc(1, sizeof *r);
    if (!r) return vm_fail(err, VM_ENOMEM, "receiver: out of memory");
    r->cfg = *cfg;
    if (opts) r->o = *opts;
    else vm_receiver_opts_default(&r->o);
    r->ordered = cfg->pipeline.ordered != 0;
    r->efd = -1;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    int rc = vm_dataset_open_config(&r->ds, cfg, err);
    if (rc) { vm_error_prefix(err, "dataset: "); goto fail; }
    r->V = vm_pipeline_views(cfg);
    r->S = cfg->model.img_size;
    r->spu = vm_pipeline_samples_per_unit(cfg);
    r->sample_bytes = (size_t)r->V * r->S * r->S * 3;
    vm_batch_header h = {.batch = (uint32_t)(cfg->pipeline.chunk_samples < r->spu ? cfg->pipeline.chunk_samples : r->spu),
                         .views = (uint32_t)r->V, .height = (uint32_t)r->S, .width = (uint32_t)r->S,
                         .codec = cfg->pipeline.codec == VM_CODEC_LZ4 ? VM_BATCH_CODEC_LZ4 : VM_BATCH_CODEC_NONE};
    r->chunk = (int)h.batch;
    r->max_msg = vm_batch_max_size(&h);
    if (!r->max_msg) { rc = vm_fail(err, VM_EINVAL, "receiver: chunk shape %ux%ux%ux%u is not valid", h.batch, h.views, h.height, h.width); goto fail; }
    r->staging = malloc((size_t)h.batch * r->sample_bytes);
    r->fail_logged = calloc(r->ds.n, 1);
    r->c_order = malloc((size_t)r->ds.n * sizeof *r->c_order);
    if (!r->staging || !r->fail_logged || !r->c_order) { rc = vm_fail(err, VM_ENOMEM, "receiver: out of memory"); goto fail; }
    // Start position (resume): checked against this dataset, the epoch's end normalized to the next one.
    long se = r->o.start_epoch, su = r->o.start_unit, ss = r->o.start_sample;
    if (se < 0 || se >= (long)UINT32_MAX || su < 0 || su > r->ds.n || ss < 0 || ss >= r->spu || (su == r->ds.n && ss)) {
        rc = vm_fail(err, VM_ERANGE, "receiver: start position epoch %ld unit %ld sample %ld is outside the dataset "
                     "(%d videos of %d samples)", se, su, ss, r->ds.n, r->spu);
        goto fail;
    }
    if (!r->ordered && (su || ss)) {
        rc = vm_fail(err, VM_EINVAL, "receiver: start position unit %ld sample %ld inside epoch %ld: arrival order "
                     "([pipeline] ordered = false) cannot start inside an epoch", su, ss, se);
        goto fail;
    }
    if (su == r->ds.n) se++, su = 0;
    r->start_epoch = (uint32_t)se;
    r->c_epoch = (uint32_t)se;
    r->c_pos = (int)su;
    r->c_seq = (uint32_t)(ss / r->chunk);
    r->skip = (uint32_t)(ss % r->chunk);
    r->pos = (vm_receiver_pos){se, su, ss};
    vm_coord_unit_order((uint64_t)cfg->run.seed, (uint32_t)se, r->ds.n, r->c_order);  // the order the coordinator leases in
    int epochs = r->o.epochs ? r->o.epochs : cfg->pipeline.epochs ? cfg->pipeline.epochs : cfg->optim.epochs;
    r->epochs = epochs;
    if (epochs > 0 && se >= epochs) r->ended = 1;  // resumed after the last epoch: nothing to deliver
    vm_coord_opts co = {.n_units = r->ds.n, .epochs = epochs, .seed = (uint64_t)cfg->run.seed,
                        .lease_timeout = cfg->pipeline.lease_timeout_ms / 1000.0, .max_attempts = 3,
                        .start_epoch = (uint32_t)se, .start_unit = (int)su, .start_seq = r->c_seq};
    r->t0 = r->last_stats = vm_now();
    r->coord = vm_coord_new(&co, r->t0);
    if (!r->coord) { rc = vm_fail(err, VM_ENOMEM, "receiver: out of memory"); goto fail; }
    if ((rc = vm_config_to_text(cfg, &r->cfg_text, &r->cfg_len, err))) goto fail;
    r->nonce = make_nonce();
    r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    r->zctx = zmq_ctx_new();
    r->router = r->zctx ? zmq_socket(r->zctx, ZMQ_ROUTER) : NULL;
    if (r->efd < 0 || !r->router) { rc = vm_fail(err, VM_EIO, "receiver: cannot create sockets: %s", strerror(errno)); goto fail; }
    int linger = 0, hwm = 100000;
    int64_t maxmsg = (int64_t)r->max_msg + 65536;  // a hostile peer cannot make us buffer more
    zmq_setsockopt(r->router, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(r->router, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(r->router, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(r->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (cfg->pipeline.curve_secret_key[0] && (rc = curve_setup(r, cfg, err))) goto fail;
    if (zmq_bind(r->router, cfg->pipeline.endpoint) != 0) {
        rc = vm_fail(err, VM_EIO, "receiver: cannot bind %s: %s", cfg->pipeline.endpoint, zmq_strerror(zmq_errno()));
        goto fail;
    }
    size_t el = sizeof r->endpoint;
    if (zmq_getsockopt(r->router, ZMQ_LAST_ENDPOINT, r->endpoint, &el) != 0)
        snprintf(r->endpoint, sizeof r->endpoint, "%s", cfg->pipeline.endpoint);
    if (pthread_create(&r->th, NULL, io_main, r) != 0) { rc = vm_fail(err, VM_ENOMEM, "receiver: cannot start its thread"); goto fail; }
    r->th_started = 1;
    INFO(r, "receiver: %d videos from %s, %d epoch%s, %d x %d x %d x 3 per sample, %s, listening on %s", r->ds.n,
         r->ds.source, epochs, epochs == 1 ? "" : "s", r->V, r->S, r->S,
         r->ordered ? "ordered delivery" : "arrival order", r->endpoint);
    if (se || su || ss)
        INFO(r, "receiver: starting at epoch %ld, unit %ld of its order, sample %ld of that unit", se, su, ss);
    *out = r;
    return 0;
fail:
    vm_receiver_stop(r);
    return rc;
}

static void release_chunk(vm_receiver *r, qent *e) {
    zmq_msg_close(&e->msg);
    int credit = !r->ordered;  // ordered mode credited it on arrival (handle_data)
    pthread_mutex_lock(&r->mu);
    if (credit && e->wid < r->retcap) r->ret[e->wid]++;
    e->next = r->freelist;
    r->freelist = e;
    pthread_mutex_unlock(&r->mu);
    uint64_t one = 1;
    if (credit && write(r->efd, &one, sizeof one) < 0) {}  // counter saturation is harmless: the thread reads all
}

// Drop the whole chunks recorded for a batch that will not be returned (drop_last tail).
static void release_pending(vm_receiver *r, int npend) {
    for (int i = 0; i < npend; i++) release_chunk(r, r->pend[i].c);
}

// LZ4-decode the noted whole chunks straight into the caller's buffer, in parallel (the trainer's
// OpenMP threads; on a GPU node they are idle while the host waits anyway), then give their credits
// back.  Returns how many failed their checksum (why: the last reason).
static int flush_pending(vm_receiver *r, int npend, char *why, size_t whycap) {
    int bad = 0;
    // Threads pay off only for sizeable batches (a team costs tens of microseconds to wake).
    size_t raw = 0;
    for (int i = 0; i < npend; i++) raw += (size_t)r->pend[i].c->v.h.raw_size;
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : bad) if (npend > 1 && raw >= ((size_t)4 << 20))
    for (int i = 0; i < npend; i++) {
        qent *c = r->pend[i].c;
        vm_error e = {0};
        if (vm_batch_decode_pixels(&c->v, r->pend[i].dst, (size_t)c->v.h.batch * r->sample_bytes, &e)) {
            bad++;
#pragma omp critical
            snprintf(why, whycap, "unit %" PRIu64 ": %s", c->v.h.work_unit, e.msg);
        }
    }
    release_pending(r, npend);
    return bad;
}

int vm_receiver_next_batch_ex(vm_receiver *r, uint8_t *views, vm_sample_meta *meta, vm_view_meta *view_meta,
                              int batch_size, uint32_t *epoch, double *wait_seconds, vm_error *err) {
    if (wait_seconds) *wait_seconds = 0;
    if (batch_size <= 0) return vm_fail(err, VM_EINVAL, "next_batch: batch size %d", batch_size);
    if (r->ended) return 0;
    if (batch_size > r->pendcap) {  // grows once, with the largest batch size asked for
        struct pend *p = realloc(r->pend, (size_t)batch_size * sizeof *p);
        if (!p) return vm_fail(err, VM_ENOMEM, "next_batch: out of memory");
        r->pend = p;
        r->pendcap = batch_size;
    }
    // Pass 1 (sequential): take chunks until the batch is full, copy metadata, handle the pieces of
    // chunks split across batches through the staging buffer, and note the whole chunks.
    int filled = 0, npend = 0, bad = 0;
    char why[256] = "";
    double waited = 0;
    while (filled < batch_size) {
        if (!r->cur) {
            qent *e = NULL;
            pthread_mutex_lock(&r->mu);
            int kind = r->cancelled ? -1 : pop_locked(r, &e);
            if (kind < 0 && npend) {
                // Never sleep on chunks we hold: their credits may be what the workers wait for (a batch
                // can need more chunks than the workers have credits).
                pthread_mutex_unlock(&r->mu);
                bad += flush_pending(r, npend, why, sizeof why);
                npend = 0;
                pthread_mutex_lock(&r->mu);
                kind = r->cancelled ? -1 : pop_locked(r, &e);
            }
            double t = vm_now();
            while (kind < 0 && !r->io_dead && !r->cancelled) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 100 * 1000000L;
                if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
                pthread_cond_timedwait(&r->cv, &r->mu, &ts);
                if (!r->cancelled) kind = pop_locked(r, &e);
            }
            double dt = vm_now() - t;
            waited += dt;
            r->st.wait_s += dt;
            if (kind < 0) {
                int rc = vm_fail(err, r->cancelled ? VM_EAGAIN : VM_EIO, "%s", r->io_err);
                pthread_mutex_unlock(&r->mu);
                release_pending(r, npend);
                return rc;
            }
            pthread_mutex_unlock(&r->mu);
            if (kind != Q_CHUNK) {
                if (kind == Q_RUN_END) r->ended = 1;
                if (filled && !r->o.drop_last) break;  // short last batch
                if (filled) {
                    pthread_mutex_lock(&r->mu);
                    r->st.dropped_tail += filled;
                    pthread_mutex_unlock(&r->mu);
                    release_pending(r, npend);
                    filled = npend = 0;
                }
                if (kind == Q_RUN_END) break;
                continue;
            }
            r->cur = e;
            r->staged = 0;
        }
        qent *c = r->cur;
        uint32_t n = c->v.h.batch, k = n - c->used;
        if (k > (uint32_t)(batch_size - filled)) k = batch_size - filled;
        uint8_t *dst = views + (size_t)filled * r->sample_bytes;
        if (c->used == 0 && k == n) {
            r->pend[npend++] = (struct pend){c, dst};
        } else {
            vm_error e = {0};
            int rc = 0;
            if (!r->staged) {
                rc = vm_batch_decode_pixels(&c->v, r->staging, (size_t)n * r->sample_bytes, &e);
                r->staged = 1;
            }
            if (rc) {  // checksum mismatch after parse: corrupted in memory; skip the chunk
                vm_warn("dropping a chunk of unit %" PRIu64 ": %s", c->v.h.work_unit, e.msg);
                pthread_mutex_lock(&r->mu);
                r->st.rejected++;
                r->st.rejected_baddata++;
                pthread_mutex_unlock(&r->mu);
                r->cur = NULL;
                release_chunk(r, c);
                continue;
            }
            memcpy(dst, r->staging + (size_t)c->used * r->sample_bytes, (size_t)k * r->sample_bytes);
        }
        for (uint32_t i = 0; i < k; i++) {
            if (meta) vm_batch_get_sample(&c->v, c->used + i, &meta[filled + i]);
            if (view_meta)
                for (int j = 0; j < r->V; j++)
                    vm_batch_get_view(&c->v, c->used + i, j, &view_meta[(size_t)(filled + i) * r->V + j]);
        }
        if (epoch) *epoch = c->epoch;
        c->used += k;
        filled += k;
        // Position: a unit is passed once its last chunk is taken whole.
        r->pos.epoch = (long)c->epoch;
        r->pos.sample += k;
        if (c->used == n && c->last) r->pos.unit++, r->pos.sample = 0;
        if (c->used == n) {
            r->cur = NULL;
            if (k != n) release_chunk(r, c);  // a whole chunk (k == n) is released after pass 2
        }
    }
    // Pass 2: the whole chunks still pending.
    bad += flush_pending(r, npend, why, sizeof why);
    if (wait_seconds) *wait_seconds = waited;
    if (bad) {
        pthread_mutex_lock(&r->mu);
        r->st.rejected += bad;
        r->st.rejected_baddata += bad;
        pthread_mutex_unlock(&r->mu);
        return vm_fail(err, VM_ECORRUPT, "next_batch: %d chunk%s failed their checksum (%s); batch discarded", bad,
                       bad == 1 ? "" : "s", why);
    }
    return filled;
}

int vm_receiver_next_batch(vm_receiver *r, uint8_t *views, vm_sample_meta *meta, int batch_size,
                           double *wait_seconds, vm_error *err) {
    return vm_receiver_next_batch_ex(r, views, meta, NULL, batch_size, NULL, wait_seconds, err);
}

int vm_receiver_position(const vm_receiver *r, vm_receiver_pos *out) {
    *out = r->pos;
    return r->ordered;
}

int vm_receiver_views(const vm_receiver *r) { return r->V; }
int vm_receiver_size(const vm_receiver *r) { return r->S; }
int vm_receiver_dataset_size(const vm_receiver *r) { return r->ds.n; }
const char *vm_receiver_endpoint(const vm_receiver *r) { return r->endpoint; }

int vm_receiver_label(const vm_receiver *r, uint64_t video_id) {
    return video_id < (uint64_t)r->ds.n ? r->ds.videos[video_id].label : -1;
}

void vm_receiver_get_stats(vm_receiver *r, vm_receiver_stats *out) {
    pthread_mutex_lock(&r->mu);
    *out = r->st;
    out->queued = r->qlen;
    pthread_mutex_unlock(&r->mu);
}

void vm_receiver_format_stats(const vm_receiver_stats *s, double el, char *buf, size_t cap) {
    double t = el > 0 ? el : 1;
    double dec = s->worker_samples ? s->worker_decode_s / s->worker_samples * 1e3 : 0;
    double ren = s->worker_samples ? s->worker_render_s / s->worker_samples * 1e3 : 0;
    char reasons[256] = "";
    size_t rn = 0;
    for (int k = 0; k < VM_COORD_MAX_CODES; k++)
        if (s->failed_by_code[k])
            rn += snprintf(reasons + rn, sizeof reasons - rn, "%s%s %" PRId64, rn ? ", " : " (", k ? vm_strerror(-k) : "other",
                           s->failed_by_code[k]);
    if (rn) snprintf(reasons + rn, sizeof reasons - rn, ")");
    char handshakes[64] = "";
    if (s->rejected_handshake)
        snprintf(handshakes, sizeof handshakes, " (%" PRId64 " at the CURVE handshake)", s->rejected_handshake);
    snprintf(buf, cap,
             "pipeline: epoch %u, %.1f samples/s, %.2f MB/s wire, compression %.2fx, decode %.2f ms + sample %.2f ms "
             "per sample (workers), %d workers, %" PRId64 " credits out, %d queued, data-wait %.1f s, %" PRId64
             " duplicates, %" PRId64 " rejected%s, %" PRId64 " videos failed%s, %" PRId64 " workers lost",
             s->epoch, s->samples / t, s->bytes_wire / t / 1e6,
             s->bytes_wire ? (double)s->bytes_raw / s->bytes_wire : 0.0, dec, ren, s->workers_alive,
             s->credits_outstanding, s->queued, s->wait_s, s->duplicates, s->rejected, handshakes, s->units_failed,
             reasons,
             s->workers_lost);
}

void vm_receiver_cancel(vm_receiver *r, const char *why) {
    pthread_mutex_lock(&r->mu);
    if (!r->io_dead) snprintf(r->io_err, sizeof r->io_err, "%s", why);
    r->cancelled = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

void vm_receiver_stop(vm_receiver *r) {
    if (!r) return;
    if (r->th_started) {
        atomic_store(&r->stop, 1);
        pthread_join(r->th, NULL);
    }
    if (r->cur) zmq_msg_close(&r->cur->msg), free(r->cur);
    for (qent *e = r->qhead, *n; e; e = n) {
        n = e->next;
        if (e->kind == Q_CHUNK) zmq_msg_close(&e->msg);
        free(e);
    }
    for (size_t b = 0; b < sizeof r->held / sizeof r->held[0]; b++)
        for (qent *e = r->held[b], *n; e; e = n) {
            n = e->next;
            if (e->kind == Q_CHUNK) zmq_msg_close(&e->msg);
            free(e);
        }
    for (qent *e = r->freelist, *n; e; e = n) {
        n = e->next;
        free(e);
    }
    if (r->mon) zmq_close(r->mon);
    if (r->zap) zmq_close(r->zap);
    if (r->router) zmq_close(r->router);
    if (r->zctx) zmq_ctx_term(r->zctx);
    vm_curve_clients_free(&r->clients);
    free(r->refused);
    if (r->efd >= 0) close(r->efd);
    vm_coord_free(r->coord);
    vm_dataset_free(&r->ds);
    free(r->cfg_text);
    free(r->fail_logged);
    free(r->c_order);
    free(r->staging);
    free(r->pend);
    free(r->w);
    free(r->ret);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}
