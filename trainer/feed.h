// trainer/feed.h — the trainer's input stage: a producer thread fills batch slots ahead of the steps,
// so that receiving and LZ4-decompressing batch t+1 (and on CUDA its copy to the device) overlap
// the compute of batch t.
//
//   vm_feed *f;
//   vm_feed_start(&f, be, slots, batch_bytes, info_bytes, fill, cancel, ctx, &err);  // starts the thread
//   vm_feed_batch b;
//   while ((rc = vm_feed_next(f, &b, &err)) == 1) {
//       vm_model_forward_backward_dev(m, b.views, ...);   // b.views is backend memory
//       ... b.info: what fill() wrote beside this batch (its epoch, position, ...)
//       vm_feed_release(f, &b);                            // adds the GPU's wait to b.wait_s
//   }
//   vm_feed_stop(f);                                       // cancel, join, free
//
// Slots: on the CUDA backend (be->name "cuda") the input ring of trainer/cuda/cuda_ring.h: pinned
// host slots that fill() writes into, copied to their device twins on a copy stream while the GPU
// computes, the compute stream waiting only on that slot's copy.  On the CPU backend plain host
// slots, handed over as they are.  Batches come out in the order fill() produced them.
//
// Data-wait of a batch (b.wait_s, after release) = the time the consumer blocked in next() for want
// of a filled slot + on CUDA the time the compute stream stood waiting for the slot's copy.  When
// the producer keeps ahead of the consumer both are ~0.
//
// Threads: fill() runs on the feed's thread only; next/release/stop on one consumer thread.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "common/error.h"
#include "trainer/backend.h"

// Called on the feed's thread: write one batch (batch_bytes) into views (host memory, pinned on
// CUDA) and what the consumer needs with it (e.g. its epoch and position in the data) into info:
// info_bytes of the slot's own, zeroed first (NULL when info_bytes is 0).  Returns 1 for a batch,
// 0 when the source has ended, a negative VM_E* code with err set on failure (the feed then ends:
// next() returns that error once the batches before it are consumed).
typedef int (*vm_feed_fill_fn)(void *ctx, uint8_t *views, void *info, vm_error *err);
// Called on the consumer's thread by vm_feed_stop before joining: make a fill() blocked on its
// source return (e.g. vm_receiver_cancel).  May be NULL when fill() never blocks for long.
typedef void (*vm_feed_cancel_fn)(void *ctx);

typedef struct vm_feed vm_feed;

typedef struct vm_feed_batch {
    const uint8_t *views;   // batch_bytes in backend memory (device memory on CUDA)
    const void *info;       // the info_bytes fill() wrote with this batch (host memory; NULL if none)
    double wait_s;          // data-wait of this batch (complete after vm_feed_release)
    int slot;               // private
} vm_feed_batch;

// slots >= 2.  Errors: bad arguments, out of (pinned / device) memory, thread creation.
int vm_feed_start(vm_feed **out, const vm_backend_ops *be, int slots, size_t batch_bytes, size_t info_bytes,
                  vm_feed_fill_fn fill, vm_feed_cancel_fn cancel, void *ctx, vm_error *err);

// The next batch in order: 1 (b filled), 0 when the source ended and every batch was consumed, or
// the producer's error (negative, err set).  Blocks while the producer is behind.
int vm_feed_next(vm_feed *f, vm_feed_batch *b, vm_error *err);
// The ops reading b->views have been issued; the slot may be refilled once they ran (b->info is
// not valid after this).
void vm_feed_release(vm_feed *f, vm_feed_batch *b);

// Cancel the source, stop and join the thread, free the slots.  NULL is a no-op.
void vm_feed_stop(vm_feed *f);
