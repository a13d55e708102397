// trainer/feed.c — see feed.h.  One producer thread; the slots are the CUDA input ring or host
// buffers with the same contract (FIFO; acquire, submit, close / next, release).
#include "trainer/feed.h"
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "common/io.h"
#include "trainer/cuda/cuda_ring.h"

enum { SLOT_FREE, SLOT_FILLING, SLOT_READY, SLOT_USING };

struct vm_feed {
    vm_cuda_ring *ring;          // CUDA backend: the input ring; else NULL and the host slots below
    int n;
    size_t bytes;
    uint8_t **host;              // host slots (n), with their states; FIFO by prod/cons
    int *state;
    long prod, cons;
    int closed;
    size_t info_bytes;
    unsigned char *info;         // info_bytes per slot, written by the producer before it hands the slot over
    vm_feed_fill_fn fill;
    vm_feed_cancel_fn cancel;
    void *ctx;
    pthread_mutex_t mu;          // host slots, closed, and how the source ended
    pthread_cond_t cv;
    int src_rc;                  // 0 = the source ended, < 0 = its error (src_err)
    vm_error src_err;
    pthread_t thread;            // running from a successful vm_feed_start until vm_feed_stop
};

// ---- slots --------------------------------------------------------------------------------------

// Slot k's info bytes (NULL when the feed carries none).
static unsigned char *slot_info(vm_feed *f, int k) { return f->info_bytes ? f->info + (size_t)k * f->info_bytes : NULL; }

static uint8_t *slot_acquire(vm_feed *f, int *k) {
    if (f->ring) return vm_cuda_ring_acquire(f->ring, k);
    pthread_mutex_lock(&f->mu);
    int s = (int)(f->prod % f->n);
    while (!f->closed && f->state[s] != SLOT_FREE) pthread_cond_wait(&f->cv, &f->mu);
    uint8_t *p = NULL;
    if (!f->closed) f->state[s] = SLOT_FILLING, f->prod++, p = f->host[s], *k = s;
    pthread_mutex_unlock(&f->mu);
    return p;
}

static void slot_submit(vm_feed *f, int k) {
    if (f->ring) {
        vm_cuda_ring_submit(f->ring, k, f->bytes);
        return;
    }
    pthread_mutex_lock(&f->mu);
    f->state[k] = SLOT_READY;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void slot_close(vm_feed *f) {
    if (f->ring) vm_cuda_ring_close(f->ring);
    pthread_mutex_lock(&f->mu);
    f->closed = 1;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static const uint8_t *slot_next(vm_feed *f, int *k) {
    if (f->ring) return vm_cuda_ring_next(f->ring, k, NULL);
    pthread_mutex_lock(&f->mu);
    int s = (int)(f->cons % f->n);
    while (f->state[s] != SLOT_READY && !f->closed) pthread_cond_wait(&f->cv, &f->mu);
    const uint8_t *p = NULL;
    if (f->state[s] == SLOT_READY) f->state[s] = SLOT_USING, f->cons++, p = f->host[s], *k = s;
    pthread_mutex_unlock(&f->mu);
    return p;
}

static double slot_release(vm_feed *f, int k) {
    if (f->ring) return vm_cuda_ring_release(f->ring, k);
    pthread_mutex_lock(&f->mu);
    f->state[k] = SLOT_FREE;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    return 0;
}

// ---- the producer ---------------------------------------------------------------------------------

static void *produce(void *arg) {
    vm_feed *f = arg;
    int rc = 0;
    vm_error e = {0};
    // A source may decode with OpenMP (the receiver does, for large batches).  On the CPU backend
    // the cores belong to the step's ops: a second team here would fight them for every core.
    // On CUDA the host cores are idle while the GPU computes, so the default team is kept.
    if (!f->ring) omp_set_num_threads(1);
    for (;;) {
        int k;
        uint8_t *p = slot_acquire(f, &k);
        if (!p) break;  // stopped
        void *info = slot_info(f, k);
        if (info) memset(info, 0, f->info_bytes);
        rc = f->fill(f->ctx, p, info, &e);
        if (rc != 1) break;  // the source ended or failed: the slot is never handed over
        slot_submit(f, k);
    }
    pthread_mutex_lock(&f->mu);
    f->src_rc = rc < 0 ? rc : 0;
    if (rc < 0) f->src_err = e;
    pthread_mutex_unlock(&f->mu);
    slot_close(f);  // after src_rc: a consumer that sees the end also sees why
    return NULL;
}

// ---- public ---------------------------------------------------------------------------------------

static void feed_free(vm_feed *f) {
    if (f->ring) vm_cuda_ring_free(f->ring);
    for (int i = 0; f->host && i < f->n; i++) free(f->host[i]);
    free(f->host), free(f->state), free(f->info);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f);
}

int vm_feed_start(vm_feed **out, const vm_backend_ops *be, int slots, size_t batch_bytes, size_t info_bytes,
                  vm_feed_fill_fn fill, vm_feed_cancel_fn cancel, void *ctx, vm_error *err) {
    *out = NULL;
    if (slots < 2 || batch_bytes == 0 || !fill)
        return vm_fail(err, VM_EINVAL, "input feed: %d slots of %zu bytes (need at least 2 slots)", slots, batch_bytes);
    vm_feed *f = calloc(1, sizeof *f);
    if (!f) return vm_fail(err, VM_ENOMEM, "input feed: out of memory");
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    f->n = slots, f->bytes = batch_bytes, f->info_bytes = info_bytes, f->fill = fill, f->cancel = cancel, f->ctx = ctx;
    int rc = 0;
    if (info_bytes && !(f->info = calloc((size_t)slots, info_bytes))) {
        rc = vm_fail(err, VM_ENOMEM, "input feed: out of memory");
    } else if (!strcmp(be->name, "cuda")) {
        char why[256];
        if (vm_cuda_ring_create(&f->ring, slots, batch_bytes, why, sizeof why))
            rc = vm_fail(err, VM_ENOMEM, "input feed: %s", why);
    } else if (!(f->host = calloc((size_t)slots, sizeof *f->host)) || !(f->state = calloc((size_t)slots, sizeof *f->state))) {
        rc = vm_fail(err, VM_ENOMEM, "input feed: out of memory");
    } else {
        for (int i = 0; i < slots && !rc; i++)
            if (!(f->host[i] = malloc(batch_bytes)))
                rc = vm_fail(err, VM_ENOMEM, "input feed: %d slots of %.1f MiB: out of memory", slots,
                             batch_bytes / 1048576.0);
    }
    if (!rc && pthread_create(&f->thread, NULL, produce, f)) rc = vm_fail(err, VM_EIO, "input feed: cannot start its thread");
    if (rc) {
        feed_free(f);
        return rc;
    }
    *out = f;
    return 0;
}

int vm_feed_next(vm_feed *f, vm_feed_batch *b, vm_error *err) {
    double t0 = vm_now();
    int k = -1;
    const uint8_t *p = slot_next(f, &k);
    b->wait_s = vm_now() - t0;
    if (p) {
        b->views = p, b->info = slot_info(f, k), b->slot = k;
        return 1;
    }
    pthread_mutex_lock(&f->mu);
    int rc = f->src_rc;
    if (rc < 0) *err = f->src_err;
    pthread_mutex_unlock(&f->mu);
    b->views = NULL, b->info = NULL, b->slot = -1;
    return rc;
}

void vm_feed_release(vm_feed *f, vm_feed_batch *b) {
    if (b->slot < 0) return;
    b->wait_s += slot_release(f, b->slot);
    b->info = NULL, b->slot = -1;
}

void vm_feed_stop(vm_feed *f) {
    if (!f) return;
    slot_close(f);                     // a producer waiting for a free slot returns
    if (f->cancel) f->cancel(f->ctx);  // one blocked in its source returns
    pthread_join(f->thread, NULL);
    feed_free(f);
}
