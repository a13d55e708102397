// eval/eval.h — evaluating an encoder: features of an ImageFolder, k-NN and linear probe.
//
//   vm_imagefolder tr, va;                       // eval/imagefolder.h
//   vm_feature_set ftr, fva;
//   vm_eval_features(model, &tr, &opts, &ftr, &err);   // frozen encoder, no masking
//   vm_eval_features(model, &va, &opts, &fva, &err);
//   vm_knn(&ftr, &fva, 20, 0.07, &res, &err);
//   vm_linear_probe(&ftr, &fva, &lopts, &res, &err);
//
// Features are what vm_model_features gives (trainer/model.h): the encoder over all patches, its
// final LayerNorm, then [model] pool (mean of the patch tokens, or the class token), as the paper
// evaluates.  A feature cache file holds one extraction keyed by everything it depends on.
#pragma once
#include <stdint.h>
#include "common/error.h"
#include "eval/imagefolder.h"
#include "trainer/model.h"

typedef struct vm_feature_set {
    int n, dim, nclasses;
    float *x;           // (n, dim)
    int32_t *labels;    // (n)
} vm_feature_set;
void vm_feature_set_free(vm_feature_set *s);

typedef struct vm_feature_opts {
    int batch;              // images decoded and encoded per chunk (default 256)
    const char *cache_dir;  // NULL = no cache; else <cache_dir>/feat-<key>.safetensors is read or written
    int progress;           // 1 = progress line on stderr (a \r-updated line, ended by \n)
    const char *label;      // name in the progress line ("train", "val")
    vm_error *cache_err;    // when non-NULL: a cache file that could not be written is reported
                            // here (code != 0); the features are returned all the same
} vm_feature_opts;
void vm_feature_opts_default(vm_feature_opts *o);

// Features of every image of f with m's encoder (images resized to [model] img_size).  The cache
// key hashes (XXH3) the model's parameters, img_size, pool and the image paths with their sizes
// and modification times, so a changed checkpoint or folder misses.  A corrupt or mismatching
// cache file is ignored and rewritten.
int vm_eval_features(vm_model *m, const vm_imagefolder *f, const vm_feature_opts *o, vm_feature_set *out,
                     vm_error *err);

typedef struct vm_eval_result {
    double top1, top5;      // accuracy on the evaluated set, in percent
    int n;                  // images evaluated
} vm_eval_result;

// Weighted k-NN as DINO's eval_knn.py: L2-normalised features, cosine similarity to every training
// feature, the k nearest vote for their class with weight exp(sim / T); classes ranked by summed
// votes.  top-5 counts a hit among the best min(5, nclasses) classes.
int vm_knn(const vm_feature_set *train, const vm_feature_set *test, int k, double T, vm_eval_result *res,
           vm_error *err);

typedef enum { VM_PROBE_SGD, VM_PROBE_LBFGS } vm_probe_optimizer;

typedef struct vm_probe_opts {
    int optimizer;          // vm_probe_optimizer
    int epochs;             // SGD: passes over the training set; L-BFGS: iterations (full batch)
    int batch;              // SGD mini-batch (default 256)
    double lr;              // SGD base lr for batch 256 (scaled by batch/256), cosine to 0 (default 0.1)
    double momentum;        // SGD (default 0.9)
    double weight_decay;    // L2 on the weights, both optimisers (default 0)
    uint64_t seed;          // shuffling and init
    int verbose;            // 1 = loss per epoch to stderr
} vm_probe_opts;
void vm_probe_opts_default(vm_probe_opts *o);

// Linear probe on frozen features, MAE's main_linprobe.py head: a BatchNorm1d without affine
// parameters in front of the linear layer, which at evaluation time is standardisation with the
// training set's statistics (we standardise with the full training set's mean and variance, the
// fixed point BatchNorm's running statistics converge to), then Linear(dim, nclasses) trained with
// cross-entropy.  Reports top-1/top-5 on test.
int vm_linear_probe(const vm_feature_set *train, const vm_feature_set *test, const vm_probe_opts *o,
                    vm_eval_result *res, vm_error *err);
