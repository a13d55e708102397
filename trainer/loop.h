// trainer/loop.h — the training loop: batches in, steps, metrics, checkpoints, resume.
//
//   vm_train_opts o;  vm_train_opts_default(&o);  o.replay_dir = "batches/";   // or the pipeline
//   vm_train_result r;
//   if (vm_train(cfg, &o, &r, &err)) fail(err.msg);
//
// Batches come from the pipeline (pipeline/receiver.h: binds [pipeline] endpoint, workers connect)
// or, with replay_dir, from a directory of stored proto batch files (proto/proto.h; any number of
// samples per file, read in name order and shuffled per epoch by file with Philox keyed by
// (run.seed, epoch)).  An epoch's samples that do not fill a last batch are dropped, as the
// receiver's drop_last does, so a batch never mixes epochs.  A thread reads the source ahead of the
// steps into [train] slots batch slots (trainer/feed.h; on CUDA pinned slots copied to the device
// on their own stream), so the step never waits on decompression or upload while the source keeps
// up; wait_s below is what remains of the wait (the data-wait).
//
// Files in RUN_DIR = [run] out_dir:
//   config.ini               the effective configuration
//   metrics.jsonl            one JSON object per step: step (steps done, 1-based), epoch, loss, rec,
//                            con, w_rec, w_con, [con_terms], lr, grad_norm, pairs, step_s, wait_s,
//                            time_s (losses printed with 9 significant digits: float round trip)
//   model.safetensors        the state_dict (official names; PyTorch/timm load it), metadata step
//   train_state.safetensors  model + AdamW moments + step, data position, seed, config (state.h)
// Checkpoints (both files, each atomic) every [train] checkpoint_every steps, when stopped and at
// the end.  A progress line every [run] log_every steps goes to stderr through common/log.h.
//
// Resume: o.resume names a state file; the run continues at its step with its data position.
// With replay (and the CPU backend) the continued run is bitwise identical to an uninterrupted one:
// masks, lr and w_con are pure functions of (seed, step), the data order of (seed, epoch), and the
// state file holds everything else.  metrics.jsonl is cut back to the checkpoint's step first.
// From the pipeline with ordered delivery ([pipeline] ordered = true) the run continues at the very
// sample, also bitwise on the CPU and whatever the number of workers: the state file holds the
// receiver's position after the last step's batch (epoch, units of its order done, samples taken
// from the next unit: pipeline/receiver.h vm_receiver_pos), and the receiver starts there (the
// units done are not leased, the head unit's consumed samples are dropped).  Units, not samples,
// are counted, so videos that fail (and fail again) shift nothing.  In arrival order, from a state
// file without that position (replay, older files) or for another dataset, the partially consumed
// epoch starts again (its own unit order and samples); the log says which.
#pragma once
#include <signal.h>
#include "common/config.h"
#include "common/error.h"
#include "trainer/backend.h"
#include "trainer/model.h"

typedef struct vm_train_opts {
    const vm_backend_ops *be;       // NULL = vm_backend_cpu(run.threads)
    const char *replay_dir;         // NULL = receive from the pipeline
    const char *resume;             // training-state file to continue from; NULL = fresh (init from run.seed)
    long stop_after;                // stop with a checkpoint once this many steps are done (0 = at the end)
    const char *save_batches;       // pipeline mode: also store every batch as a proto file here (NULL = no)
    const char *curve_admit;        // pipeline mode with CURVE: worker public keys admitted besides
                                    // [pipeline] curve_clients (vm_receiver_opts.curve_admit; NULL = none)
    int quiet;                      // 1 = no progress lines (tests)
    volatile sig_atomic_t *stop;    // set asynchronously (e.g. SIGINT) to checkpoint and stop; may be NULL
} vm_train_opts;

typedef struct vm_train_result {
    long steps;                     // steps done when the loop ended
    long total_steps;               // planned steps (end of the lr cosine)
    vm_losses first, last;          // losses of the first and last step of this invocation
    int bf16_activations;           // the model stored its block activations as bf16 (vm_model_bf16_activations)
    double seconds, wait_seconds;   // wall time of the loop, of it waiting for data
    char checkpoint[1100];          // path of the last training-state file written
} vm_train_result;

void vm_train_opts_default(vm_train_opts *o);

// Train cfg's model as described above.  0 on success (also when stopped early), else a negative
// VM_E* code with the reason in err.
int vm_train(const vm_config *cfg, const vm_train_opts *o, vm_train_result *res, vm_error *err);

// The training-state file that `--resume ARG` means: ARG/train_state.safetensors for a run
// directory, the train_state.safetensors beside a model.safetensors, else ARG itself.
void vm_train_state_path(const char *arg, char *out, size_t cap);

// Number of samples in each stored batch file of dir (sorted by name) and their total, checking
// that every file is a valid proto message of 2 views of size x size.  Used by the loop and tests.
int vm_replay_scan(const char *dir, int size, char ***paths, int **counts, int *nfiles, long *total, vm_error *err);
