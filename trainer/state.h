// trainer/state.h — the training-state file: everything a run needs to continue bitwise.
//
// One safetensors file (trainer/safetensors.h), written atomically (temp file + rename), that holds
//   the model's state_dict and the AdamW moments "optim.m.<name>", "optim.v.<name>" (vm_model_save
//   with the optimizer), so that the file alone is a consistent snapshot;
//   "__metadata__": format "vicmae-train-state-1", step (optimizer steps done), total_steps (where
//   the cosine ends), seed (the Philox key: masks are pure functions of (seed, step), so seed and
//   step ARE the trainer's RNG state), data position (epoch, samples of that epoch consumed; from
//   the ordered pipeline also the unit position, below), the
//   effective configuration as INI text, and checksum: XXH3-64 over every tensor's values in table
//   order (params, then m and v of the trained tensors, then num_batches_tracked), which catches the
//   flipped bits that the safetensors structure checks cannot see.
//
// Loading validates the format, every number, every tensor (vm_model_load: names, dtypes, shapes,
// finite values) and the checksum, and refuses the file with the reason otherwise.
#pragma once
#include <stdint.h>
#include "common/error.h"
#include "trainer/model.h"

#define VM_STATE_FORMAT "vicmae-train-state-1"

typedef struct vm_train_state {
    long step;              // optimizer steps done (the next step is this 0-based index)
    long total_steps;       // where the lr cosine ends
    uint64_t seed;          // run.seed (Philox key of masks; with step, the RNG state)
    long epoch;             // data position: current epoch (0-based)
    long epoch_sample;      // samples of that epoch already consumed
    long samples;           // samples consumed since the start of the run (all epochs)
    // Pipeline position with ordered delivery (pipeline/receiver.h vm_receiver_pos), so that a resumed
    // run continues at the very sample: units of the epoch's order done (consumed, or skipped as
    // failed), samples taken from the next one, and the dataset's size it refers to.  Counting
    // units, not samples, keeps it exact when videos fail (they fail again in the resumed run and
    // are skipped at the same positions).  unit = -1: no such position (replay, arrival order, or
    // a file written before these fields: metadata data_unit absent), the epoch starts again.
    long unit, unit_sample, videos;
} vm_train_state;

// Write the model, its optimizer moments and st to path atomically.  config_text (may be NULL) is
// the effective INI configuration stored for `--resume` and for people.
int vm_state_save(vm_model *m, const char *path, const vm_train_state *st, const char *config_text,
                  vm_error *err);

// Read only the metadata of a state file: *st and, when config_text is non-NULL, a malloc'ed copy
// of the stored configuration (caller frees).  Validates the format and the numbers.
int vm_state_peek(const char *path, vm_train_state *st, char **config_text, vm_error *err);

// Load a state file into m (params, moments, BatchNorm counter) and *st.  A corrupt, truncated or
// mismatched file (other model shape, bad checksum) is refused with the reason; the model may then
// hold partial values and must not be used.
int vm_state_load(vm_model *m, const char *path, vm_train_state *st, vm_error *err);

// XXH3-64 of the model's tensors as described above (copies device memory to the host).
int vm_state_checksum(vm_model *m, uint64_t *out, vm_error *err);
