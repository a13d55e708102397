// trainer/cuda/cuda_ring.cu — see cuda_ring.h.  One producer thread, one consumer thread.
#include "trainer/cuda/cuda_internal.cuh"
#include "trainer/cuda/cuda_ring.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { SLOT_FREE, SLOT_FILLING, SLOT_READY, SLOT_USING };

struct vm_cuda_ring {
    int n;
    size_t slot_bytes;
    cudaStream_t copy;           // host-to-device copies
    void **host, **dev;
    size_t *size;
    int *state;
    int *used;                   // the slot went round at least once (producer's view)
    int *pending_copy;           // the last copy's time is not yet added to the stats
    cudaEvent_t *c0, *copied;    // around the copy, on the copy stream
    cudaEvent_t *w0, *w1;        // around the compute stream's wait for the copy
    cudaEvent_t *consumed;       // on the compute stream at release: the device buffer is free after it
    long prod, cons;
    int closed;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    vm_cuda_ring_stats st;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static float elapsed_ms(cudaEvent_t a, cudaEvent_t b, const char *op) {
    float ms = 0;
    CUDA_CHECK(op, cudaEventSynchronize(b));
    CUDA_CHECK(op, cudaEventElapsedTime(&ms, a, b));
    return ms;
}

extern "C" int vm_cuda_ring_create(vm_cuda_ring **out, int slots, size_t slot_bytes, char *why, size_t cap) {
    *out = NULL;
    if (!g_cu.ready) { snprintf(why, cap, "CUDA backend not initialised (call vm_backend_cuda first)"); return -1; }
    if (slots < 2 || slot_bytes == 0) { snprintf(why, cap, "ring of %d slots of %zu bytes: need >= 2 slots", slots, slot_bytes); return -1; }
    vm_cuda_ring *r = (vm_cuda_ring *)calloc(1, sizeof *r);
    if (!r) { snprintf(why, cap, "out of memory"); return -1; }
    r->n = slots;
    r->slot_bytes = slot_bytes;
    r->host = (void **)calloc(slots, sizeof(void *));
    r->dev = (void **)calloc(slots, sizeof(void *));
    r->size = (size_t *)calloc(slots, sizeof(size_t));
    r->state = (int *)calloc(slots, sizeof(int));
    r->used = (int *)calloc(slots, sizeof(int));
    r->pending_copy = (int *)calloc(slots, sizeof(int));
    cudaEvent_t **evs[] = {&r->c0, &r->copied, &r->w0, &r->w1, &r->consumed};
    for (int i = 0; i < 5; i++) *evs[i] = (cudaEvent_t *)calloc(slots, sizeof(cudaEvent_t));
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    *out = r;  // from here on vm_cuda_ring_free cleans up whatever was made
    if (!r->host || !r->dev || !r->size || !r->state || !r->used || !r->pending_copy || !r->c0 ||
        !r->copied || !r->w0 || !r->w1 || !r->consumed) {
        snprintf(why, cap, "out of memory");
        goto fail;
    }
    cudaError_t e;
    if ((e = cudaStreamCreateWithFlags(&r->copy, cudaStreamNonBlocking)) != cudaSuccess) goto cuda_fail;
    for (int i = 0; i < slots; i++) {
        if ((e = cudaHostAlloc(&r->host[i], slot_bytes, cudaHostAllocDefault)) != cudaSuccess) goto cuda_fail;
        if ((e = cudaMalloc(&r->dev[i], slot_bytes)) != cudaSuccess) goto cuda_fail;
        for (int j = 0; j < 4; j++)
            if ((e = cudaEventCreate(&(*evs[j])[i])) != cudaSuccess) goto cuda_fail;
        if ((e = cudaEventCreateWithFlags(&r->consumed[i], cudaEventDisableTiming)) != cudaSuccess) goto cuda_fail;
    }
    return 0;
cuda_fail:
    snprintf(why, cap, "input ring of %d x %.1f MiB: %s", slots, slot_bytes / 1048576.0, cudaGetErrorString(e));
    (void)cudaGetLastError();
fail:
    vm_cuda_ring_free(r);
    *out = NULL;
    return -1;
}

extern "C" void vm_cuda_ring_free(vm_cuda_ring *r) {
    if (!r) return;
    if (r->copy) cudaStreamSynchronize(r->copy);
    cudaStreamSynchronize(g_cu.stream);
    cudaEvent_t *evs[] = {r->c0, r->copied, r->w0, r->w1, r->consumed};
    for (int i = 0; i < r->n; i++) {
        if (r->host && r->host[i]) cudaFreeHost(r->host[i]);
        if (r->dev && r->dev[i]) cudaFree(r->dev[i]);
        for (int j = 0; j < 5; j++)
            if (evs[j] && evs[j][i]) cudaEventDestroy(evs[j][i]);
    }
    for (int j = 0; j < 5; j++) free(evs[j]);
    if (r->copy) cudaStreamDestroy(r->copy);
    (void)cudaGetLastError();
    free(r->host), free(r->dev), free(r->size), free(r->state), free(r->used), free(r->pending_copy);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

extern "C" void *vm_cuda_ring_acquire(vm_cuda_ring *r, int *slot) {
    // the producer is another thread: make the backend's device current in it (per-thread state)
    CUDA_CHECK("input ring: acquire", cudaSetDevice(g_cu.device));
    pthread_mutex_lock(&r->mu);
    int k = (int)(r->prod % r->n);
    while (!r->closed && r->state[k] != SLOT_FREE) pthread_cond_wait(&r->cv, &r->mu);
    if (r->closed) { pthread_mutex_unlock(&r->mu); return NULL; }
    r->state[k] = SLOT_FILLING;
    r->prod++;
    pthread_mutex_unlock(&r->mu);
    if (r->used[k]) {  // the host buffer may still be the source of the previous round's copy
        float ms = elapsed_ms(r->c0[k], r->copied[k], "input ring: acquire");
        pthread_mutex_lock(&r->mu);
        if (r->pending_copy[k]) r->st.copy_s += ms * 1e-3, r->pending_copy[k] = 0;
        pthread_mutex_unlock(&r->mu);
    }
    *slot = k;
    return r->host[k];
}

extern "C" void vm_cuda_ring_submit(vm_cuda_ring *r, int k, size_t bytes) {
    const char *op = "input ring: submit";
    if (k < 0 || k >= r->n || bytes > r->slot_bytes) {
        char msg[128];
        snprintf(msg, sizeof msg, "slot %d, %zu bytes (ring of %d x %zu)", k, bytes, r->n, r->slot_bytes);
        cuda_fatal(op, "arguments", msg);
    }
    CUDA_CHECK(op, cudaSetDevice(g_cu.device));
    // the device buffer is free once the compute stream passed the previous round's release
    if (r->used[k]) CUDA_CHECK(op, cudaStreamWaitEvent(r->copy, r->consumed[k], 0));
    CUDA_CHECK(op, cudaEventRecord(r->c0[k], r->copy));
    CUDA_CHECK(op, cudaMemcpyAsync(r->dev[k], r->host[k], bytes, cudaMemcpyHostToDevice, r->copy));
    CUDA_CHECK(op, cudaEventRecord(r->copied[k], r->copy));
    pthread_mutex_lock(&r->mu);
    r->used[k] = 1;
    r->size[k] = bytes;
    r->state[k] = SLOT_READY;
    r->pending_copy[k] = 1;
    r->st.copied_bytes += bytes;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

extern "C" void vm_cuda_ring_close(vm_cuda_ring *r) {
    pthread_mutex_lock(&r->mu);
    r->closed = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

extern "C" const void *vm_cuda_ring_next(vm_cuda_ring *r, int *slot, size_t *bytes) {
    const char *op = "input ring: next";
    double t0 = now_s();
    pthread_mutex_lock(&r->mu);
    int k = (int)(r->cons % r->n);
    while (r->state[k] != SLOT_READY) {
        if (r->closed) { pthread_mutex_unlock(&r->mu); return NULL; }
        pthread_cond_wait(&r->cv, &r->mu);
    }
    r->state[k] = SLOT_USING;
    r->cons++;
    r->st.host_wait_s += now_s() - t0;
    r->st.batches++;
    size_t n = r->size[k];
    pthread_mutex_unlock(&r->mu);
    CUDA_CHECK(op, cudaEventRecord(r->w0[k], g_cu.stream));
    CUDA_CHECK(op, cudaStreamWaitEvent(g_cu.stream, r->copied[k], 0));
    CUDA_CHECK(op, cudaEventRecord(r->w1[k], g_cu.stream));
    *slot = k;
    if (bytes) *bytes = n;
    return r->dev[k];
}

// The wait's duration is read here: w1 precedes the ops just issued, so this blocks only until the
// GPU has started them (the model synchronises every step anyway).
extern "C" double vm_cuda_ring_release(vm_cuda_ring *r, int k) {
    const char *op = "input ring: release";
    CUDA_CHECK(op, cudaEventRecord(r->consumed[k], g_cu.stream));
    float ms = elapsed_ms(r->w0[k], r->w1[k], op);
    pthread_mutex_lock(&r->mu);
    r->st.gpu_wait_s += ms * 1e-3;
    r->state[k] = SLOT_FREE;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return ms * 1e-3;
}

// Adds the copy times not yet counted (waiting for those copies) and returns the totals.
extern "C" void vm_cuda_ring_get_stats(vm_cuda_ring *r, vm_cuda_ring_stats *st) {
    const char *op = "input ring: stats";
    for (int k = 0; k < r->n; k++) {
        pthread_mutex_lock(&r->mu);
        // a slot being filled may be re-recorded by submit at any moment: its copy is counted later
        int pc = r->pending_copy[k] && r->state[k] != SLOT_FILLING && r->state[k] != SLOT_FREE;
        if (pc) r->pending_copy[k] = 0;
        pthread_mutex_unlock(&r->mu);
        if (!pc) continue;
        float ms = elapsed_ms(r->c0[k], r->copied[k], op);
        pthread_mutex_lock(&r->mu);
        r->st.copy_s += ms * 1e-3;
        pthread_mutex_unlock(&r->mu);
    }
    pthread_mutex_lock(&r->mu);
    *st = r->st;
    pthread_mutex_unlock(&r->mu);
}
