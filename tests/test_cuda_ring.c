// tests/test_cuda_ring.c — the GPU input ring (trainer/cuda/cuda_ring.h): a producer thread fills
// pinned slots and submits them, the consumer reads them on the compute stream.
//  - every batch arrives intact, in order, with its size, however the two sides interleave;
//  - when the producer is faster than the GPU, the data-wait (consumer blocked + compute stream
//    waiting for copies) stays under 1% of the step time, with ViT-B-sized batches (64 pairs at 224).
// Skips with the reason without a GPU.
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "tests/harness.h"
#include "trainer/backend.h"
#include "trainer/cuda/cuda_backend.h"
#include "trainer/cuda/cuda_ring.h"

static const vm_backend_ops *cu;

static void setup(void) {
    char why[512] = "";
    cu = vm_backend_cuda(why, sizeof why);
    if (!cu) SKIP("no GPU: %s", why);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint8_t pattern(int batch, size_t i) { return (uint8_t)(batch * 31 + i * 7 + (i >> 12)); }
static size_t batch_size(int batch, size_t cap) { return cap - (size_t)(batch % 5) * 4099; }

typedef struct {
    vm_cuda_ring *ring;
    int batches;
    size_t cap;
    int sleep_us;  // per batch: a slow producer
    int fast;      // full-size batches filled with memset (a producer faster than the GPU)
    int failed;
} producer_arg;

static void *producer(void *p) {
    producer_arg *a = p;
    for (int b = 0; b < a->batches; b++) {
        int slot;
        uint8_t *h = vm_cuda_ring_acquire(a->ring, &slot);
        if (!h) { a->failed = 1; break; }
        size_t n = a->fast ? a->cap : batch_size(b, a->cap);
        if (a->fast) memset(h, b, n);
        else
            for (size_t i = 0; i < n; i++) h[i] = pattern(b, i);
        if (a->sleep_us) {
            struct timespec ts = {0, a->sleep_us * 1000L};
            nanosleep(&ts, NULL);
        }
        vm_cuda_ring_submit(a->ring, slot, n);
    }
    vm_cuda_ring_close(a->ring);
    return NULL;
}

TEST(cuda_ring_delivers_in_order) {
    setup();
    const size_t cap = 300000;
    char why[512];
    for (int slow = 0; slow < 2; slow++) {  // producer ahead, then behind the consumer
        vm_cuda_ring *r;
        CHECK(vm_cuda_ring_create(&r, 3, cap, why, sizeof why) == 0, "%s", why);
        producer_arg a = {r, 24, cap, slow ? 2000 : 0, 0, 0};
        pthread_t th;
        CHECK(pthread_create(&th, NULL, producer, &a) == 0);
        uint8_t *back = malloc(cap);
        CHECK(back);
        size_t total = 0;
        for (int b = 0;; b++) {
            int slot;
            size_t n = 0;
            const void *d = vm_cuda_ring_next(r, &slot, &n);
            if (!d) { CHECK(b == a.batches, "ring ended after %d of %d batches", b, a.batches); break; }
            CHECK(n == batch_size(b, cap), "batch %d: %zu bytes, expected %zu", b, n, batch_size(b, cap));
            memset(back, 0, cap);
            cu->to_host(back, d, n);  // on the compute stream: ordered after the slot's copy
            for (size_t i = 0; i < n; i++)
                if (back[i] != pattern(b, i)) CHECK(0, "batch %d byte %zu: %d, expected %d", b, i, back[i], pattern(b, i));
            vm_cuda_ring_release(r, slot);
            total += n;
        }
        pthread_join(th, NULL);
        CHECK(!a.failed, "producer could not acquire a slot");
        vm_cuda_ring_stats st;
        vm_cuda_ring_get_stats(r, &st);
        CHECK_EQ_INT(st.batches, a.batches);
        CHECK_EQ_INT(st.copied_bytes, total);
        CHECK(st.copy_s > 0, "copies were not timed");
        vm_cuda_ring_free(r);
        free(back);
    }
}

// The consumer's step: patchify the batch into a model-sized buffer (reads the slot on the GPU),
// then matrix products standing in for the model, then the per-step synchronisation the model does.
TEST(cuda_ring_hides_input) {
    setup();
    const int B = 64, S = 224, P = 16, L = (S / P) * (S / P), D = 3 * P * P, steps = 14, warm = 4;
    const size_t cap = (size_t)B * 2 * S * S * 3;  // 64 pairs of 224x224 RGB: 19.3 MB
    const int M = 4096;
    char why[512];
    vm_cuda_ring *r;
    CHECK(vm_cuda_ring_create(&r, 4, cap, why, sizeof why) == 0, "%s", why);
    float *patches = cu->alloc((size_t)2 * B * L * D * sizeof(float));
    float *a = cu->alloc((size_t)M * M * sizeof(float)), *b = cu->alloc((size_t)M * M * sizeof(float));
    float *c = cu->alloc((size_t)M * M * sizeof(float));
    CHECK(patches && a && b && c);
    producer_arg pa = {r, steps, cap, 0, 1, 0};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, producer, &pa) == 0);
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    vm_cuda_ring_stats s0 = {0}, s1;
    double t0 = 0;
    for (int step = 0; step < steps; step++) {
        if (step == warm) { vm_cuda_ring_get_stats(r, &s0); t0 = now(); }
        int slot;
        size_t n;
        const uint8_t *d = vm_cuda_ring_next(r, &slot, &n);
        CHECK(d, "ring closed at step %d", step);
        cu->patchify(patches, d, 2 * B, S, S, P, 1, mean, std);
        vm_cuda_ring_release(r, slot);
        for (int k = 0; k < 6; k++) cu->matmul_forward(c, a, b, NULL, M, M, M);  // ~0.8 TFLOP
        cu->sync();
    }
    double wall = now() - t0;
    vm_cuda_ring_get_stats(r, &s1);
    pthread_join(th, NULL);
    double wait = (s1.host_wait_s - s0.host_wait_s) + (s1.gpu_wait_s - s0.gpu_wait_s);
    int n = steps - warm;
    printf("  step %.2f ms, data-wait %.3f ms/step (%.2f%%): consumer blocked %.3f, GPU waiting for copies %.3f; "
           "copy %.2f ms/batch (%.1f GB/s)\n", wall / n * 1e3, wait / n * 1e3, 100 * wait / wall,
           (s1.host_wait_s - s0.host_wait_s) / n * 1e3, (s1.gpu_wait_s - s0.gpu_wait_s) / n * 1e3,
           s1.copy_s / s1.batches * 1e3, s1.copied_bytes / s1.copy_s / 1e9);
    CHECK(wait < 0.01 * wall, "data-wait %.3f ms/step is %.2f%% of the step (%.2f ms)", wait / n * 1e3,
          100 * wait / wall, wall / n * 1e3);
    cu->free(patches), cu->free(a), cu->free(b), cu->free(c);
    vm_cuda_ring_free(r);
}
