// trainer/cuda/cuda_ring.h — the GPU input path: a ring of pinned host slots, each with a device
// twin, so that receiving/decompressing, host-to-device copies and compute overlap.
//
//   producer thread (receiver)                     consumer (the trainer thread issuing the ops)
//   p = vm_cuda_ring_acquire(r, &slot)             d = vm_cuda_ring_next(r, &slot, &bytes)
//   LZ4-decompress the chunk straight into p       ... ops on the CUDA backend reading d ...
//   vm_cuda_ring_submit(r, slot, bytes)            vm_cuda_ring_release(r, slot)
//
// submit queues the copy on the ring's own copy stream and records an event; next makes the
// backend's compute stream wait for that event only (no host synchronisation), so the GPU
// computes step t while the copy of step t+1 runs and the host decompresses step t+2.  A slot's
// host buffer is handed out again once its copy finished; its device buffer is overwritten only
// after the compute stream passed the release point of its previous use.  Slots are used in
// order (FIFO).
//
// Data-wait accounting: host_wait_s is the time the consumer blocked in next() for want of a
// submitted slot (the pipeline slower than the GPU: as the model synchronises every step, the GPU
// is idle then); gpu_wait_s the time the compute stream stood still waiting for a copy (events
// around the wait, read at release).  data-wait = host_wait_s + gpu_wait_s; the trainer reports it
// per step (it must stay under 1% of the step time when the workers outpace the GPU).
#pragma once
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vm_cuda_ring vm_cuda_ring;

typedef struct vm_cuda_ring_stats {
    long batches;        // slots consumed (next() calls that returned one)
    double host_wait_s;  // consumer blocked in next(): no slot submitted yet
    double gpu_wait_s;   // compute stream waiting for copies (released slots)
    double copy_s;       // time the copies took on the copy stream (finished copies)
    size_t copied_bytes;
} vm_cuda_ring_stats;

// `slots` (>= 2) slots of `slot_bytes` each, pinned host + device.  Needs the CUDA backend to be
// initialised (vm_backend_cuda).  0, or -1 with the reason in why.
int vm_cuda_ring_create(vm_cuda_ring **out, int slots, size_t slot_bytes, char *why, size_t why_cap);
// Waits for all copies and compute using the ring, then frees it.  Call after both sides stopped.
void vm_cuda_ring_free(vm_cuda_ring *r);

// Producer.  The next slot's host buffer (slot_bytes), once its previous copy is done and the
// consumer released it; NULL after vm_cuda_ring_close.
void *vm_cuda_ring_acquire(vm_cuda_ring *r, int *slot);
// Copy the first `bytes` of the slot to its device buffer (asynchronously) and queue it.
void vm_cuda_ring_submit(vm_cuda_ring *r, int slot, size_t bytes);
// No more batches: next() returns NULL once the queued ones are consumed; acquire() returns NULL.
void vm_cuda_ring_close(vm_cuda_ring *r);

// Consumer.  The device buffer of the oldest submitted slot, with the compute stream ordered after
// its copy; blocks while none is submitted; NULL when closed and drained.
const void *vm_cuda_ring_next(vm_cuda_ring *r, int *slot, size_t *bytes);
// The ops reading the slot have been issued: the slot may be refilled once the GPU passed them.
// Returns the seconds the compute stream stood waiting for this slot's copy (also added to the
// stats' gpu_wait_s); blocks only until the GPU has reached the slot's first op.
double vm_cuda_ring_release(vm_cuda_ring *r, int slot);

// Totals so far (from the consumer thread; waits for copies in flight to time them).
void vm_cuda_ring_get_stats(vm_cuda_ring *r, vm_cuda_ring_stats *st);

#ifdef __cplusplus
}
#endif
