// pipeline/worker.c — the worker's IO loop and compute thread (see worker.h).
#include "pipeline/worker.h"
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>
#include "common/io.h"
#include "common/log.h"
#include "pipeline/curve.h"
#include "pipeline/receiver.h"
#include "pipeline/wire.h"

#define MAX_LEASES 16
#define MAX_OUT 64

typedef struct {
    uint32_t gen, epoch, first_seq, count;
    uint64_t unit;
    char path[VM_PATH_MAX];
} lease_item;

enum { OUT_DATA, OUT_FAIL };
typedef struct {
    int kind;
    uint32_t gen, epoch, seq, count;
    uint64_t unit;
    int last;
    uint8_t *buf;     // OUT_DATA: a pool buffer holding the proto message
    size_t len, raw;
    int code;         // OUT_FAIL
    char msg[1024];
} out_item;

typedef struct worker {
    vm_worker_opts o;
    vm_config cfg;
    char *cfg_text;
    vm_unit_source src;
    int have_src;
    int V, S, spu, chunk;
    size_t sample_bytes, max_msg;
    void *zctx, *sock, *mon;     // mon: the DEALER's handshake events
    int efd;                     // compute thread -> IO thread: output ready
    pthread_t th;
    int th_started;
    // shared with the compute thread, under mu
    pthread_mutex_t mu;
    pthread_cond_t cv;
    lease_item leases[MAX_LEASES];
    int lhead, llen, busy, stop;
    uint32_t gen;                // bumped when the session changes: older work is dropped
    out_item out[MAX_OUT];
    int ohead, olen;
    vm_worker_stats st;
    // chunk buffer pool, under pmu (ZeroMQ's IO thread returns buffers)
    pthread_mutex_t pmu;
    pthread_cond_t pcv;
    uint8_t **pool;
    int npool, nfree;
    uint8_t **freebufs;
    // compute thread only
    uint8_t *unit_px;
    vm_sample_meta *unit_sm;
    vm_view_meta *unit_vm;
    uint64_t msg_seq;
} worker;

void vm_worker_opts_default(vm_worker_opts *o) {
    *o = (vm_worker_opts){.connect = NULL, .make_source = NULL, .idle_exit_s = 0, .stats_every_s = 10,
                          .prefetch = 2, .pool = 4, .quiet = 0};
}

#define INFO(w, ...) do { if (!(w)->o.quiet) vm_info(__VA_ARGS__); } while (0)

// ---- buffer pool -----------------------------------------------------------------------------

static void pool_put(worker *w, uint8_t *buf) {
    pthread_mutex_lock(&w->pmu);
    w->freebufs[w->nfree++] = buf;
    pthread_cond_signal(&w->pcv);
    pthread_mutex_unlock(&w->pmu);
}

// ZeroMQ calls this (from its IO thread) once the message is on the wire.
static void zmq_free_cb(void *data, void *hint) { pool_put(hint, data); }

// A free buffer, or NULL when the work became stale (gen changed) or the worker stops.
static uint8_t *pool_get(worker *w, uint32_t gen) {
    uint8_t *b = NULL;
    pthread_mutex_lock(&w->pmu);
    for (;;) {
        pthread_mutex_lock(&w->mu);
        int stale = w->stop || w->gen != gen;
        pthread_mutex_unlock(&w->mu);
        if (stale) break;
        if (w->nfree) { b = w->freebufs[--w->nfree]; break; }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
        pthread_cond_timedwait(&w->pcv, &w->pmu, &ts);
    }
    pthread_mutex_unlock(&w->pmu);
    return b;
}

// ---- compute thread ------------------------------------------------------------------------------

static void push_out(worker *w, const out_item *it) {
    pthread_mutex_lock(&w->mu);
    while (w->olen == MAX_OUT && !w->stop && it->gen == w->gen) pthread_cond_wait(&w->cv, &w->mu);
    if (!w->stop && it->gen == w->gen) {
        w->out[(w->ohead + w->olen) % MAX_OUT] = *it;
        w->olen++;
    } else if (it->buf) {
        pthread_mutex_unlock(&w->mu);
        pool_put(w, it->buf);
        return;
    }
    pthread_mutex_unlock(&w->mu);
    uint64_t one = 1;
    if (write(w->efd, &one, sizeof one) < 0) {}
}

static void do_unit(worker *w, const lease_item *l) {
    vm_error err = {0};
    int n = (int)l->count;
    int rc = n > w->spu ? vm_fail(&err, VM_EINVAL, "%s: lease asks %d samples, configured %d", l->path, n, w->spu)
                        : w->src.produce(w->src.ctx, l->path, l->unit, l->epoch, n, w->unit_px, w->unit_sm,
                                         w->unit_vm, &err);
    if (rc < 0) {
        out_item it = {.kind = OUT_FAIL, .gen = l->gen, .epoch = l->epoch, .unit = l->unit, .code = rc};
        snprintf(it.msg, sizeof it.msg, "%s", err.msg[0] ? err.msg : vm_strerror(rc));
        pthread_mutex_lock(&w->mu);
        w->st.units_failed++;
        pthread_mutex_unlock(&w->mu);
        push_out(w, &it);
        return;
    }
    int nchunks = (n + w->chunk - 1) / w->chunk;
    for (int c = (int)l->first_seq; c < nchunks; c++) {
        uint8_t *buf = pool_get(w, l->gen);
        if (!buf) return;  // stale or stopping: the new session re-leases what it needs
        int first = c * w->chunk, k = n - first < w->chunk ? n - first : w->chunk;
        vm_batch_header h = {.batch = (uint32_t)k, .views = (uint32_t)w->V, .height = (uint32_t)w->S,
                             .width = (uint32_t)w->S,
                             .codec = w->cfg.pipeline.codec == VM_CODEC_LZ4 ? VM_BATCH_CODEC_LZ4 : VM_BATCH_CODEC_NONE,
                             .flags = c == nchunks - 1 ? VM_BATCH_F_UNIT_END : 0, .epoch = l->epoch,
                             .producer_id = (uint32_t)getpid(), .work_unit = l->unit, .sequence = w->msg_seq++,
                             .sample_offset = (uint32_t)first};
        size_t len = 0;
        double t0 = vm_now();
        rc = vm_batch_encode(&h, w->unit_sm + first, w->unit_vm + (size_t)first * w->V,
                             w->unit_px + (size_t)first * w->sample_bytes, buf, w->max_msg, &len, &err);
        double dt = vm_now() - t0;
        if (rc) {  // a bug, not bad input: report the unit failed rather than stall the epoch
            pool_put(w, buf);
            out_item it = {.kind = OUT_FAIL, .gen = l->gen, .epoch = l->epoch, .unit = l->unit, .code = rc};
            snprintf(it.msg, sizeof it.msg, "%s: encoding: %s", l->path, err.msg);
            push_out(w, &it);
            return;
        }
        pthread_mutex_lock(&w->mu);
        w->st.encode_s += dt;
        pthread_mutex_unlock(&w->mu);
        out_item it = {.kind = OUT_DATA, .gen = l->gen, .epoch = l->epoch, .seq = (uint32_t)c, .count = (uint32_t)k,
                       .unit = l->unit, .last = c == nchunks - 1, .buf = buf, .len = len,
                       .raw = (size_t)k * w->sample_bytes};
        push_out(w, &it);
    }
    pthread_mutex_lock(&w->mu);
    w->st.units++;
    pthread_mutex_unlock(&w->mu);
}

static void *compute_main(void *arg) {
    worker *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->llen && !w->stop) pthread_cond_wait(&w->cv, &w->mu);
        if (w->stop) break;
        lease_item l = w->leases[w->lhead];
        w->lhead = (w->lhead + 1) % MAX_LEASES;
        w->llen--;
        if (l.gen != w->gen) continue;
        w->busy = 1;
        pthread_mutex_unlock(&w->mu);
        do_unit(w, &l);
        pthread_mutex_lock(&w->mu);
        w->busy = 0;
        pthread_cond_broadcast(&w->cv);
        uint64_t one = 1;
        if (write(w->efd, &one, sizeof one) < 0) {}  // wake the IO loop: it may request more
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

// ---- configuration from the coordinator ------------------------------------------------------------

static void free_buffers(worker *w) {
    for (int i = 0; i < w->npool; i++) free(w->pool[i]);
    free(w->pool);
    free(w->freebufs);
    free(w->unit_px);
    free(w->unit_sm);
    free(w->unit_vm);
    w->pool = w->freebufs = NULL;
    w->unit_px = NULL;
    w->unit_sm = NULL;
    w->unit_vm = NULL;
    w->npool = w->nfree = 0;
}

// Build the source and buffers for cfg text.  Called with the compute thread idle.
static int configure(worker *w, const char *text, vm_error *err) {
    vm_config cfg;
    int rc = vm_config_from_text(&cfg, text, "coordinator configuration", err);
    if (rc) return rc;
    if (w->have_src && w->src.destroy) w->src.destroy(w->src.ctx);
    w->have_src = 0;
    // Wait until ZeroMQ returned every buffer before freeing the pool.
    pthread_mutex_lock(&w->pmu);
    while (w->nfree < w->npool) pthread_cond_wait(&w->pcv, &w->pmu);
    pthread_mutex_unlock(&w->pmu);
    free_buffers(w);
    w->cfg = cfg;
    w->V = vm_pipeline_views(&cfg);
    w->S = cfg.model.img_size;
    w->spu = vm_pipeline_samples_per_unit(&cfg);
    w->chunk = cfg.pipeline.chunk_samples < w->spu ? cfg.pipeline.chunk_samples : w->spu;
    w->sample_bytes = (size_t)w->V * w->S * w->S * 3;
    vm_batch_header h = {.batch = (uint32_t)w->chunk, .views = (uint32_t)w->V, .height = (uint32_t)w->S,
                         .width = (uint32_t)w->S,
                         .codec = cfg.pipeline.codec == VM_CODEC_LZ4 ? VM_BATCH_CODEC_LZ4 : VM_BATCH_CODEC_NONE};
    w->max_msg = vm_batch_max_size(&h);
    if (!w->max_msg) return vm_fail(err, VM_EINVAL, "coordinator configuration: chunk shape is invalid");
    w->npool = w->o.pool > 0 ? w->o.pool : 4;
    w->pool = calloc(w->npool, sizeof *w->pool);
    w->freebufs = calloc(w->npool, sizeof *w->freebufs);
    w->unit_px = malloc((size_t)w->spu * w->sample_bytes);
    w->unit_sm = calloc(w->spu, sizeof *w->unit_sm);
    w->unit_vm = calloc((size_t)w->spu * w->V, sizeof *w->unit_vm);
    if (!w->pool || !w->freebufs || !w->unit_px || !w->unit_sm || !w->unit_vm) {
        free_buffers(w);
        return vm_fail(err, VM_ENOMEM, "worker: out of memory for buffers");
    }
    for (int i = 0; i < w->npool; i++) {
        if (!(w->pool[i] = malloc(w->max_msg))) {
            w->npool = i;
            free_buffers(w);
            return vm_fail(err, VM_ENOMEM, "worker: out of memory for buffers");
        }
        w->freebufs[i] = w->pool[i];
    }
    w->nfree = w->npool;
    vm_source_factory make = w->o.make_source ? w->o.make_source : vm_worker_sampler_source;
    if ((rc = make(&cfg, &w->src, err))) return rc;
    w->have_src = 1;
    free(w->cfg_text);
    w->cfg_text = strdup(text);
    return 0;
}

// ---- the IO loop -----------------------------------------------------------------------------------

static int send_msg(worker *w, const vm_wire_msg *m, const void *body, size_t blen) {
    uint8_t hdr[VM_WIRE_HDR_SIZE];
    vm_wire_encode(m, hdr);
    if (zmq_send(w->sock, hdr, sizeof hdr, (body ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0) return -1;
    if (body && zmq_send(w->sock, body, blen, ZMQ_DONTWAIT) < 0) return -1;
    return 0;
}

// Drop queued leases and mark running work stale (a new session starts from scratch).
static void new_generation(worker *w) {
    pthread_mutex_lock(&w->mu);
    w->gen++;
    w->llen = 0;
    // Outputs of the old session are dropped by the sender as stale.
    pthread_mutex_unlock(&w->mu);
}

static void stats_line(worker *w, double elapsed) {
    vm_worker_stats s;
    pthread_mutex_lock(&w->mu);
    s = w->st;
    if (w->have_src && w->src.times) w->src.times(w->src.ctx, &s.decode_s, &s.render_s);
    pthread_mutex_unlock(&w->mu);
    double t = elapsed > 0 ? elapsed : 1;
    INFO(w, "worker: %.1f samples/s, %.2f MB/s sent, compression %.2fx, decode %.2f ms + sample %.2f ms + encode "
            "%.2f ms per sample, credit wait %.1f s, %" PRId64 " units (%" PRId64 " failed)",
         s.samples / t, s.bytes_sent / t / 1e6, s.bytes_sent ? (double)s.bytes_raw / s.bytes_sent : 0.0,
         s.samples ? s.decode_s / s.samples * 1e3 : 0, s.samples ? s.render_s / s.samples * 1e3 : 0,
         s.samples ? s.encode_s / s.samples * 1e3 : 0, s.credit_wait_s, s.units, s.units_failed);
}

// ---- security -------------------------------------------------------------------------------------

static int curve_on(const worker *w) { return w->o.curve_server_key != NULL; }

// The DEALER as a CURVE client, when the options give keys (all three or none).
static int curve_client(worker *w, vm_error *err) {
    const char *k[3] = {w->o.curve_server_key, w->o.curve_public_key, w->o.curve_secret_key};
    static const char *what[3] = {"server public key", "public key", "secret key"};
    if (!k[0] && !k[1] && !k[2]) return 0;
    for (int i = 0; i < 3; i++) {
        char why[128];
        if (!k[i])
            return vm_fail(err, VM_EINVAL, "worker: CURVE needs the trainer's public key and this worker's key pair; "
                           "the %s is missing", what[i]);
        if (vm_curve_z85_check(k[i], strlen(k[i]), why, sizeof why))
            return vm_fail(err, VM_EINVAL, "worker: the %s %s", what[i], why);
    }
    if (!zmq_has("curve")) return vm_fail(err, VM_EUNSUPPORTED, "worker: this libzmq was built without CURVE");
    if (zmq_setsockopt(w->sock, ZMQ_CURVE_SERVERKEY, k[0], VM_CURVE_Z85_LEN) ||
        zmq_setsockopt(w->sock, ZMQ_CURVE_PUBLICKEY, k[1], VM_CURVE_Z85_LEN) ||
        zmq_setsockopt(w->sock, ZMQ_CURVE_SECRETKEY, k[2], VM_CURVE_Z85_LEN))
        return vm_fail(err, VM_EINVAL, "worker: CURVE keys refused by ZeroMQ: %s", zmq_strerror(zmq_errno()));
    return 0;
}

// Handshake events since the last call.  0, or VM_EAUTH (err says what failed and what to check) when
// the trainer refused us or the handshake cannot succeed: retrying would only repeat it.
static int handshake_events(worker *w, int *no_detail, vm_error *err) {
    const char *ep = w->o.connect;
    const char *hint = "is the trainer's public key right? is CURVE on at both ends?";
    const char *plain_hint = "does the trainer use CURVE? then start this worker with --server-key TRAINER.key --key "
                             "WORKER.key_secret";
    int ev, val;
    while (vm_curve_monitor_next(w->mon, &ev, &val)) {
        switch (ev) {
        case ZMQ_EVENT_HANDSHAKE_SUCCEEDED: *no_detail = 0; break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
            if (val == 300) break;  // RFC 27's temporary failure: try again
            return vm_fail(err, VM_EAUTH, "worker: the trainer at %s refused this worker's key (public key %s, status "
                           "%d): add its .key file to the trainer's [pipeline] curve_clients",
                           ep, w->o.curve_public_key ? w->o.curve_public_key : "none", val);
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
            if (val == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
                hint = curve_on(w) ? "this worker uses CURVE and the trainer does not: is CURVE on at both ends?"
                                   : "the trainer uses CURVE: start this worker with --server-key TRAINER.key --key "
                                     "WORKER.key_secret";
            else if (!curve_on(w))
                hint = plain_hint;
            return vm_fail(err, VM_EAUTH, "worker: handshake with the trainer at %s failed: %s (%s)", ep,
                           vm_curve_protocol_error(val), hint);
        case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            // The trainer closed the connection mid-handshake: what a CURVE server does with a HELLO it
            // cannot decrypt (another server key), and often with a plaintext greeting (whichever end
            // sees the mismatch first closes).  Once could be a restart; three in a row is not.
            if (++*no_detail >= 3)
                return vm_fail(err, VM_EAUTH, "worker: handshake with the trainer at %s failed %d times in a row: the "
                               "trainer closed the connection (%s) (%s)", ep, *no_detail, strerror(val),
                               curve_on(w) ? hint : plain_hint);
            break;
        }
    }
    return 0;
}

int vm_worker_run(const vm_worker_opts *opts, vm_worker_stats *stats_out, vm_error *err) {
    worker *w = calloc(1, sizeof *w);
    if (!w) return vm_fail(err, VM_ENOMEM, "worker: out of memory");
    w->o = *opts;
    if (w->o.prefetch <= 0) w->o.prefetch = 2;
    if (w->o.prefetch > MAX_LEASES) w->o.prefetch = MAX_LEASES;
    int rc = 0;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    pthread_mutex_init(&w->pmu, NULL);
    pthread_cond_init(&w->pcv, NULL);
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->zctx = zmq_ctx_new();
    w->sock = w->zctx ? zmq_socket(w->zctx, ZMQ_DEALER) : NULL;
    if (w->efd < 0 || !w->sock) { rc = vm_fail(err, VM_EIO, "worker: cannot create sockets"); goto done; }
    int linger = 0, one = 1, ivl = 100, ivlmax = 1000;
    zmq_setsockopt(w->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(w->sock, ZMQ_IMMEDIATE, &one, sizeof one);  // never queue for a peer not connected
    zmq_setsockopt(w->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(w->sock, ZMQ_RECONNECT_IVL_MAX, &ivlmax, sizeof ivlmax);
    if ((rc = curve_client(w, err))) goto done;
    // Handshake events, with or without CURVE: a plaintext worker at a CURVE trainer must say so too.
    w->mon = vm_curve_monitor(w->zctx, w->sock, ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                                                    ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
    if (!w->mon) {
        rc = vm_fail(err, VM_EIO, "worker: cannot monitor the connection: %s", zmq_strerror(zmq_errno()));
        goto done;
    }
    if (!opts->connect || zmq_connect(w->sock, opts->connect) != 0) {
        rc = vm_fail(err, VM_EINVAL, "worker: cannot connect to '%s': %s", opts->connect ? opts->connect : "",
                     zmq_strerror(zmq_errno()));
        goto done;
    }
    if (pthread_create(&w->th, NULL, compute_main, w)) { rc = vm_fail(err, VM_ENOMEM, "worker: no thread"); goto done; }
    w->th_started = 1;

    char host[64] = "?", hello[160];
    gethostname(host, sizeof host - 1);
    snprintf(hello, sizeof hello, "host=%s pid=%d", host, (int)getpid());
    uint64_t session = 0;
    int64_t credits = 0;
    int requested = 0;
    double t0 = vm_now(), last_hello = -1e9, last_rx = t0, last_hb = t0, last_stats = t0, req_time = 0,
           wait_until = 0, credit_block_t = 0;
    int hb_ms = 1000;
    double coord_timeout = 10;
    zmq_pollitem_t items[3] = {{w->sock, 0, ZMQ_POLLIN, 0}, {NULL, w->efd, ZMQ_POLLIN, 0}, {w->mon, 0, ZMQ_POLLIN, 0}};
    int running = 1, no_detail = 0;
    while (running) {
        double now = vm_now();
        if (w->o.stop_flag && *w->o.stop_flag) {
            INFO(w, "worker: asked to stop; leaving");
            break;
        }
        if (!session && now - last_hello >= 0.5) {
            vm_wire_msg m = {.type = VM_MSG_HELLO};
            send_msg(w, &m, hello, strlen(hello));
            last_hello = now;
        }
        if (session) {
            pthread_mutex_lock(&w->mu);
            int have = w->llen + w->busy;
            pthread_mutex_unlock(&w->mu);
            if (requested && now - req_time > coord_timeout) requested = 0;  // lost in a reconnect
            if (!requested && have < w->o.prefetch && now >= wait_until) {
                vm_wire_msg m = {.type = VM_MSG_REQUEST, .count = (uint32_t)(w->o.prefetch - have), .session = session};
                if (send_msg(w, &m, NULL, 0) == 0) { requested = (int)m.count; req_time = now; }
            }
            if (now - last_hb >= hb_ms / 1000.0) {
                char body[256];
                pthread_mutex_lock(&w->mu);
                double dec = 0, ren = 0;
                if (w->src.times) w->src.times(w->src.ctx, &dec, &ren);
                snprintf(body, sizeof body, "samples=%" PRId64 " decode_s=%.6f render_s=%.6f encode_s=%.6f credit_wait_s=%.6f",
                         w->st.samples, dec, ren, w->st.encode_s, w->st.credit_wait_s);
                pthread_mutex_unlock(&w->mu);
                vm_wire_msg m = {.type = VM_MSG_HEARTBEAT, .session = session};
                send_msg(w, &m, body, strlen(body));
                last_hb = now;
            }
            // Send what the compute thread produced, DATA only with credit.
            pthread_mutex_lock(&w->mu);
            int blocked = 0;
            while (w->olen) {
                out_item *it = &w->out[w->ohead];
                if (it->gen == w->gen) {
                    if (it->kind == OUT_DATA && credits <= 0) { blocked = 1; break; }
                    vm_wire_msg m = {.type = it->kind == OUT_DATA ? VM_MSG_DATA : VM_MSG_FAIL, .epoch = it->epoch,
                                     .unit = it->unit, .seq = it->seq, .count = it->count, .session = session,
                                     .flags = it->last ? VM_WIRE_F_LAST : 0, .arg = (uint32_t)-it->code};
                    uint8_t hdr[VM_WIRE_HDR_SIZE];
                    vm_wire_encode(&m, hdr);
                    if (zmq_send(w->sock, hdr, sizeof hdr, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) break;  // retry later
                    if (it->kind == OUT_DATA) {
                        zmq_msg_t body;
                        zmq_msg_init_data(&body, it->buf, it->len, zmq_free_cb, w);  // zero-copy
                        if (zmq_msg_send(&body, w->sock, ZMQ_DONTWAIT) < 0) zmq_msg_close(&body);
                        credits--;
                        w->st.chunks++;
                        w->st.samples += it->count;
                        w->st.bytes_sent += it->len;
                        w->st.bytes_raw += it->raw;
                    } else {
                        zmq_send(w->sock, it->msg, strlen(it->msg), ZMQ_DONTWAIT);
                    }
                } else if (it->buf) {
                    pool_put(w, it->buf);  // stale: produced for a session that is gone
                }
                w->ohead = (w->ohead + 1) % MAX_OUT;
                w->olen--;
                pthread_cond_broadcast(&w->cv);
            }
            if (blocked && !credit_block_t) credit_block_t = now;
            if (!blocked && credit_block_t) { w->st.credit_wait_s += now - credit_block_t; credit_block_t = 0; }
            pthread_mutex_unlock(&w->mu);
            if (now - last_rx > coord_timeout) {
                INFO(w, "worker: coordinator silent for %.1f s; saying HELLO again", now - last_rx);
                session = 0;
                credits = 0;
                requested = 0;
                new_generation(w);
                last_rx = now;
            }
        }
        if (w->o.idle_exit_s > 0 && now - last_rx > w->o.idle_exit_s) {
            rc = vm_fail(err, VM_ETIMEOUT, "worker: no coordinator at %s for %.0f s", opts->connect, w->o.idle_exit_s);
            break;
        }
        if (w->o.stats_every_s > 0 && now - last_stats >= w->o.stats_every_s && session) {
            last_stats = now;
            stats_line(w, now - t0);
        }
        if (zmq_poll(items, 3, 50) < 0 && zmq_errno() != EINTR) {
            rc = vm_fail(err, VM_EIO, "worker: zmq_poll: %s", zmq_strerror(zmq_errno()));
            break;
        }
        if ((items[2].revents & ZMQ_POLLIN) && (rc = handshake_events(w, &no_detail, err))) break;
        if (items[1].revents & ZMQ_POLLIN) {
            uint64_t x;
            if (read(w->efd, &x, sizeof x) < 0) {}
        }
        for (int burst = 0; burst < 64 && running; burst++) {
            zmq_msg_t f1, f2;
            zmq_msg_init(&f1);
            if (zmq_msg_recv(&f1, w->sock, ZMQ_DONTWAIT) < 0) { zmq_msg_close(&f1); break; }
            zmq_msg_init(&f2);
            int has_body = 0;
            if (zmq_msg_more(&f1)) {
                zmq_msg_recv(&f2, w->sock, 0);
                has_body = 1;
                while (zmq_msg_more(&f2)) {  // drain frames beyond the protocol
                    zmq_msg_close(&f2);
                    zmq_msg_init(&f2);
                    zmq_msg_recv(&f2, w->sock, 0);
                }
            }
            char text[VM_PATH_MAX + 64] = "";
            const char *big = has_body ? zmq_msg_data(&f2) : "";
            size_t blen = has_body ? zmq_msg_size(&f2) : 0;
            if (blen) snprintf(text, sizeof text, "%.*s", (int)(blen < sizeof text ? blen : sizeof text - 1), big);
            vm_wire_msg m;
            vm_error e = {0};
            int drc = vm_wire_decode(zmq_msg_data(&f1), zmq_msg_size(&f1), &m, &e);
            now = vm_now();
            if (drc == VM_EVERSION) {
                rc = vm_fail(err, VM_EVERSION, "worker: the coordinator at %s speaks %s; use the same vicmae version",
                             opts->connect, e.msg);
                running = 0;
            } else if (drc) {
                vm_warn("worker: ignoring a malformed message from the coordinator: %s", e.msg);
            } else {
                last_rx = now;
                switch (m.type) {
                case VM_MSG_WELCOME: {
                    // The configuration text (whole body, may be long).
                    char *cfgtext = malloc(blen + 1);
                    if (!cfgtext) { rc = vm_fail(err, VM_ENOMEM, "worker: out of memory"); running = 0; break; }
                    memcpy(cfgtext, big, blen);
                    cfgtext[blen] = 0;
                    new_generation(w);
                    if (!w->cfg_text || strcmp(w->cfg_text, cfgtext)) {
                        // (Re)configure with the compute thread idle.
                        pthread_mutex_lock(&w->mu);
                        while (w->busy) pthread_cond_wait(&w->cv, &w->mu);
                        for (int i = 0; i < w->olen; i++) {
                            out_item *it = &w->out[(w->ohead + i) % MAX_OUT];
                            if (it->buf) pool_put(w, it->buf);
                        }
                        w->olen = 0;
                        pthread_mutex_unlock(&w->mu);
                        int crc = configure(w, cfgtext, err);
                        if (crc) { rc = crc; running = 0; free(cfgtext); break; }
                        // A heartbeat at least 4 times per lease timeout, whatever the configuration
                        // says: one late heartbeat must not make the coordinator re-issue our units.
                        hb_ms = w->cfg.pipeline.heartbeat_ms;
                        if (hb_ms > w->cfg.pipeline.lease_timeout_ms / 4) hb_ms = w->cfg.pipeline.lease_timeout_ms / 4;
                        if (hb_ms < 10) hb_ms = 10;
                        coord_timeout = w->cfg.pipeline.lease_timeout_ms / 1000.0;
                    }
                    free(cfgtext);
                    session = m.session;
                    credits = m.count;
                    requested = 0;
                    wait_until = 0;
                    pthread_mutex_lock(&w->mu);
                    w->st.sessions++;
                    pthread_mutex_unlock(&w->mu);
                    INFO(w, "worker: joined %s (session %016" PRIx64 ", %" PRId64 " credits, %s)", opts->connect, session,
                         credits, curve_on(w) ? "CURVE: encrypted" : "plaintext");
                    break;
                }
                case VM_MSG_LEASE:
                    if (m.session != session) break;
                    if (requested > 0) requested--;
                    pthread_mutex_lock(&w->mu);
                    if (w->llen < MAX_LEASES) {
                        lease_item *l = &w->leases[(w->lhead + w->llen) % MAX_LEASES];
                        *l = (lease_item){.gen = w->gen, .epoch = m.epoch, .first_seq = m.seq, .count = m.count, .unit = m.unit};
                        snprintf(l->path, sizeof l->path, "%s", text);
                        w->llen++;
                        pthread_cond_broadcast(&w->cv);
                    }
                    pthread_mutex_unlock(&w->mu);
                    break;
                case VM_MSG_WAIT:  // follows the LEASEs granted for a REQUEST, if fewer than asked
                    requested = 0;
                    wait_until = now + 0.02;
                    break;
                case VM_MSG_CREDIT:
                    if (m.session == session) credits += m.count;
                    break;
                case VM_MSG_HEARTBEAT: break;
                case VM_MSG_STOP:
                    if (!session || m.session == session) running = 0;
                    break;
                case VM_MSG_REJECT:
                    if (m.arg == VM_WIRE_R_VERSION) {
                        rc = vm_fail(err, VM_EVERSION, "worker: the coordinator refused our protocol version: %s", text);
                        running = 0;
                    } else if (m.arg == VM_WIRE_R_SESSION) {
                        if (session) INFO(w, "worker: the coordinator does not know our session (restarted?); saying HELLO again");
                        session = 0;
                        credits = 0;
                        requested = 0;
                        last_hello = -1e9;
                        new_generation(w);
                    } else {
                        vm_warn("worker: the coordinator rejected a message: %s", text);
                    }
                    break;
                default: vm_warn("worker: unexpected %s from the coordinator", vm_wire_type_name(m.type));
                }
            }
            zmq_msg_close(&f1);
            zmq_msg_close(&f2);
        }
    }
    if (session) {
        vm_wire_msg m = {.type = VM_MSG_BYE, .session = session};
        send_msg(w, &m, NULL, 0);
    }
    if (!rc && w->o.stats_every_s > 0) stats_line(w, vm_now() - t0);
done:
    if (w->th_started) {
        pthread_mutex_lock(&w->mu);
        w->stop = 1;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->th, NULL);
    }
    for (int i = 0; i < w->olen; i++) {
        out_item *it = &w->out[(w->ohead + i) % MAX_OUT];
        if (it->buf) pool_put(w, it->buf);
    }
    if (w->mon) zmq_close(w->mon);
    if (w->sock) {
        int linger = 200;  // let the BYE leave
        zmq_setsockopt(w->sock, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(w->sock);
    }
    if (w->zctx) zmq_ctx_term(w->zctx);  // waits for ZeroMQ to release the zero-copy buffers
    if (stats_out) {
        *stats_out = w->st;
        if (w->have_src && w->src.times) w->src.times(w->src.ctx, &stats_out->decode_s, &stats_out->render_s);
    }
    if (w->have_src && w->src.destroy) w->src.destroy(w->src.ctx);
    free_buffers(w);
    free(w->cfg_text);
    if (w->efd >= 0) close(w->efd);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->pmu);
    pthread_cond_destroy(&w->pcv);
    free(w);
    return rc;
}
