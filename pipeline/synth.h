// pipeline/synth.h — the embedded demo dataset: small labeled videos made procedurally.
//
// Each video shows one or two textured objects of its class moving over a textured background,
// filmed by a camera that pans (the background scrolls) and drifts.  Classes differ in shape and in
// texture (disc/stripes, square/checker, triangle/dots, cross/rings); colours, sizes, speeds and
// backgrounds vary per video, so a model must look at shape and texture to tell classes apart.
// Encoded as H.264 in MP4 with GStreamer (appsrc ! videoconvert ! x264enc ! h264parse ! mp4mux).
//
// Layout written under out_dir:
//   <class>/NNNN.mp4      the videos (class = "0-disc", "1-square", ...: sorted order = label)
//   manifest.txt          "path label id" for every video (pipeline/dataset.h format)
//   train.txt, val.txt    the same lines split 3:1 by id (every 4th video is val)
//   classes.txt           one class name per line, line number = label
// Everything is a pure function of the options (seed included): pixels come from Philox streams
// (VM_RNG_SYNTH, video id) and x264 runs single-threaded.
#pragma once
#include <stdint.h>
#include "common/error.h"

#define VM_SYNTH_CLASSES 4

typedef struct vm_synth_opts {
    const char *out_dir;
    int videos;        // total, spread evenly over the classes (default 64)
    int width, height; // default 128 x 128
    int frames;        // per video (default 48)
    int fps;           // default 12
    uint64_t seed;
} vm_synth_opts;

void vm_synth_opts_default(vm_synth_opts *o);
const char *vm_synth_class_name(int label);
// Render one frame (width x height x 3 RGB) of video `id` (label = id % classes).  Exposed for tests.
void vm_synth_render(const vm_synth_opts *o, int id, int frame, uint8_t *rgb);
// Generate the dataset.  Fails with VM_EUNSUPPORTED naming the missing GStreamer element.
int vm_synth_generate(const vm_synth_opts *o, vm_error *err);
