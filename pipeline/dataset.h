// pipeline/dataset.h — the list of videos one run draws from.
//
// `[data] path` names either
//   - a manifest: a text file, one video per line: `PATH [LABEL [ID]]`, fields separated by tabs
//     (a path with spaces must use tabs) or, on a line without tabs, by runs of spaces; blank lines
//     and lines starting with '#' are ignored; LABEL is an integer (-1 = none, the default); ID is a
//     unique integer (default: the line's position among the videos, 0-based); or
//   - a directory, scanned recursively for video files (by extension: mp4 mkv avi mov webm m4v
//     mpg mpeg ogv flv wmv ts), sorted by path; ID is the position in that order; LABEL is the index
//     of the first-level sub-directory holding the file among the sorted sub-directories
//     (ImageFolder layout), -1 for a file directly in the directory.
// An empty `[data] path` means `[data] synth_dir` (its manifest.txt when present).
//
// Path resolution (the same on every node): a relative manifest path is relative to the manifest's
// directory, and every path is made absolute against the trainer's filesystem before it is sent to
// workers.  A worker on another host therefore needs the dataset at the same absolute path (a
// shared mount); workers open exactly the path in their lease.
#pragma once
#include <stdint.h>
#include "common/config.h"
#include "common/error.h"

typedef struct vm_video {
    char *path;      // absolute
    int label;       // -1 = unlabeled
    int64_t id;      // unique within the dataset; seeds the sampler's random streams
} vm_video;

typedef struct vm_dataset {
    vm_video *videos;
    int n;
    char source[VM_PATH_MAX];  // what it was read from (manifest or directory), for messages
} vm_dataset;

// Read a manifest or scan a directory (see above).  An empty dataset is an error.
int vm_dataset_open(vm_dataset *ds, const char *path, vm_error *err);
// The dataset named by cfg: data.path, or data.synth_dir when data.path is empty.
int vm_dataset_open_config(vm_dataset *ds, const vm_config *cfg, vm_error *err);
void vm_dataset_free(vm_dataset *ds);
// 1 when the file name has one of the video extensions listed above.
int vm_dataset_is_video_name(const char *name);
