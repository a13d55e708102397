// tests/test_trainer_feed.c — the trainer's input feed (trainer/feed.h) on the CPU backend's host
// slots: batches arrive intact and in order with their info however the two sides interleave; the
// end of the source and its errors reach the consumer after the batches before them; stop cancels a
// producer blocked in its source; a producer that keeps ahead leaves the consumer (almost) no wait.
// The CUDA ring behind the same interface is tested in test_cuda_ring.c and through the loop in
// test_cuda_train.c.
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "tests/harness.h"
#include "trainer/backend.h"
#include "trainer/feed.h"

enum { BYTES = 3 * 4096 + 7 };

typedef struct {
    int batches;        // the source ends (or fails) after this many
    int fail;           // 1: fail instead of ending
    int block;          // 1: block after the last batch until cancelled
    int sleep_us;       // per batch
    int produced;
    int cancelled;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} src_t;

static uint8_t pattern(int batch, size_t i) { return (uint8_t)(batch * 131 + i * 7 + (i >> 9)); }

static void sleep_us(int us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000L};
    nanosleep(&ts, NULL);
}

// What travels beside each batch (the feed's info): its number and a name.
typedef struct {
    long n;
    char name[24];
} batch_info;

static int fill(void *ctx, uint8_t *views, void *info, vm_error *err) {
    src_t *s = ctx;
    batch_info *bi = info;
    static const batch_info zero;
    CHECK(memcmp(bi, &zero, sizeof zero) == 0, "info not zeroed before fill()");
    if (s->produced == s->batches) {
        if (s->fail) return vm_fail(err, VM_ECORRUPT, "source: batch %d is corrupt", s->produced);
        if (s->block) {  // like a receiver waiting for workers that never come
            pthread_mutex_lock(&s->mu);
            while (!s->cancelled) pthread_cond_wait(&s->cv, &s->mu);
            pthread_mutex_unlock(&s->mu);
            return vm_fail(err, VM_EAGAIN, "cancelled");
        }
        return 0;
    }
    if (s->sleep_us) sleep_us(s->sleep_us);
    for (size_t i = 0; i < BYTES; i++) views[i] = pattern(s->produced, i);
    bi->n = 1000 + s->produced;
    snprintf(bi->name, sizeof bi->name, "batch %d", s->produced);
    s->produced++;
    return 1;
}

static void cancel(void *ctx) {
    src_t *s = ctx;
    pthread_mutex_lock(&s->mu);
    s->cancelled = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void src_init(src_t *s, int batches) {
    memset(s, 0, sizeof *s);
    s->batches = batches;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
}

// Consume every batch, checking order, info and content; returns what the last next() returned.
static int consume_all(vm_feed *f, int expect, int consumer_sleep_us, vm_error *err) {
    int rc, n = 0;
    vm_feed_batch b;
    while ((rc = vm_feed_next(f, &b, err)) == 1) {
        CHECK(n < expect, "more batches than produced");
        const batch_info *bi = b.info;
        char name[24];
        snprintf(name, sizeof name, "batch %d", n);
        CHECK(bi->n == 1000 + n && !strcmp(bi->name, name), "batch %d came with info (%ld, %s)", n, bi->n, bi->name);
        for (size_t i = 0; i < BYTES; i++)
            if (b.views[i] != pattern(n, i)) CHECK(0, "batch %d byte %zu: %u, expected %u", n, i, b.views[i], pattern(n, i));
        if (consumer_sleep_us) sleep_us(consumer_sleep_us);
        vm_feed_release(f, &b);
        n++;
    }
    CHECK_EQ_INT(n, expect);
    return rc;
}

TEST(feed_delivers_every_batch_in_order_however_the_sides_interleave) {
    const vm_backend_ops *be = vm_backend_cpu(1);
    int cases[][3] = {{2, 0, 0}, {4, 0, 0}, {2, 300, 0}, {3, 0, 300}, {5, 100, 100}};  // slots, producer, consumer us
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        src_t s;
        src_init(&s, 40);
        s.sleep_us = cases[c][1];
        vm_feed *f = NULL;
        vm_error err = {0};
        CHECK_OK(vm_feed_start(&f, be, cases[c][0], BYTES, sizeof(batch_info), fill, cancel, &s, &err), err);
        CHECK_EQ_INT(consume_all(f, 40, cases[c][2], &err), 0);
        vm_feed_stop(f);
    }
}

TEST(feed_reports_the_source_error_after_the_batches_before_it) {
    src_t s;
    src_init(&s, 7);
    s.fail = 1;
    vm_feed *f = NULL;
    vm_error err = {0};
    CHECK_OK(vm_feed_start(&f, vm_backend_cpu(1), 3, BYTES, sizeof(batch_info), fill, cancel, &s, &err), err);
    int rc = consume_all(f, 7, 0, &err);
    CHECK_EQ_INT(rc, VM_ECORRUPT);
    CHECK(strstr(err.msg, "batch 7 is corrupt"), "message: %s", err.msg);
    vm_feed_stop(f);
}

TEST(feed_stop_cancels_a_producer_blocked_in_its_source) {
    src_t s;
    src_init(&s, 2);
    s.block = 1;
    vm_feed *f = NULL;
    vm_error err = {0};
    CHECK_OK(vm_feed_start(&f, vm_backend_cpu(1), 4, BYTES, sizeof(batch_info), fill, cancel, &s, &err), err);
    vm_feed_batch b;
    for (int i = 0; i < 2; i++) {
        CHECK_EQ_INT(vm_feed_next(f, &b, &err), 1);
        vm_feed_release(f, &b);
    }
    vm_feed_stop(f);  // returns only if the blocked fill() was cancelled and the thread joined
    CHECK_EQ_INT(s.cancelled, 1);
    // stopping early, with slots still full and a producer waiting for a free one
    src_init(&s, 50);
    CHECK_OK(vm_feed_start(&f, vm_backend_cpu(1), 2, BYTES, sizeof(batch_info), fill, cancel, &s, &err), err);
    CHECK_EQ_INT(vm_feed_next(f, &b, &err), 1);
    vm_feed_stop(f);
    CHECK(s.produced < 50, "the producer ran on after stop");
}

TEST(feed_producer_ahead_leaves_no_data_wait) {
    // The consumer spends 20 ms per batch, the producer ~nothing: from the second batch on every
    // slot is filled before it is asked for, so the waits are scheduling noise, far below 20 ms.
    src_t s;
    src_init(&s, 12);
    vm_feed *f = NULL;
    vm_error err = {0};
    CHECK_OK(vm_feed_start(&f, vm_backend_cpu(1), 3, BYTES, sizeof(batch_info), fill, cancel, &s, &err), err);
    vm_feed_batch b;
    double wait = 0;
    for (int i = 0; i < 12; i++) {
        CHECK_EQ_INT(vm_feed_next(f, &b, &err), 1);
        sleep_us(20000);
        vm_feed_release(f, &b);
        if (i) wait += b.wait_s;
    }
    CHECK_EQ_INT(vm_feed_next(f, &b, &err), 0);
    vm_feed_stop(f);
    printf("  data-wait over 11 batches behind a fast producer: %.3f ms (consumer busy 220 ms)\n", wait * 1e3);
    CHECK(wait < 0.05, "data-wait %.1f ms with a producer far ahead", wait * 1e3);
}

TEST(feed_refuses_bad_arguments) {
    vm_feed *f = (vm_feed *)1;
    vm_error err = {0};
    src_t s;
    src_init(&s, 1);
    CHECK(vm_feed_start(&f, vm_backend_cpu(1), 1, BYTES, sizeof(batch_info), fill, cancel, &s, &err) == VM_EINVAL);
    CHECK(f == NULL);
    CHECK(strstr(err.msg, "at least 2 slots"), "message: %s", err.msg);
    vm_feed_stop(NULL);
}
