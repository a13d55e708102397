// sampler/sampler.h — which frames of a video become a sample, and how each view is cropped.
//
// A library of its own: it needs the decoder (to read frames) and proto.h's metadata records, not
// the pipeline or the trainer, so other video tasks (clip classification, multi-view testing) can
// reuse it.  tools/clip_example.c is a short program doing exactly that.  Installed with the decoder
// as libvicmae-video (`make install`; #include <vicmae/sampler/sampler.h>, pkg-config vicmae-video):
// README.md, "Using the sampler from your own program".
//
//   vm_sampler *s;  vm_sampler_create(&cfg, &s, &err);            // [sampler], [decoder], [model] img_size
//   int V = vm_sampler_views(s), S = vm_sampler_size(s);          // views per sample, view side
//   uint8_t *px = malloc((size_t)n * V * S * S * 3);              // (n, V, S, S, 3), proto's layout
//   vm_sample_meta sm[n];  vm_view_meta vm[n * V];
//   vm_sampler_draw_path(s, "clip.mp4", video_id, epoch, first_draw, n, px, sm, vm, &stats, &err);
//   vm_sampler_free(s);
//
// Policies ([sampler] policy):
//   pair       V = 2.  Two frames of one video (ViC-MAE).  mode:
//                uniform  any two frames whose gap (gap_unit: seconds from the frames' PTS, or
//                         frames) lies in [gap_min, gap_max]; every such pair is equally likely.
//                         The earlier frame is view 0.
//                distant  the video's time span is cut into two halves; one random frame in each
//                         (the paper's distant sampling).  gap_min/gap_max are not used.
//                same     one random frame, two independent augmentations (gap 0: the image-style
//                         ablation).
//              Short videos (uniform: no pair has a gap in range; distant: fewer than 2 frames):
//                short_video = clamp  the gap is clamped to what the video allows: a target gap g
//                                     drawn in [gap_min, gap_max] is cut to the video's span and
//                                     the pair is (random frame i, frame nearest t_i + g); a
//                                     1-frame video gives that frame twice.
//                short_video = skip   VM_ERANGE, nothing written, counted in skipped_short.
//   clip       V = clip_len.  T frames clip_stride apart at a random start (a video shorter than
//              the clip repeats its last frame, or is VM_ERANGE with short_video = skip), or, with
//              clip_stride = 0, one random frame in each of T equal segments (TSN; segments of a
//              video with fewer than T frames repeat frames).  One crop, flip and colour draw shared
//              by all T frames (augmentation stream draw << 16 | 0).
//   multiview  V = num_clips * num_crops * clip_len, in that order ([clip][crop][t]): evaluation.
//              Clips evenly spaced over the video (first clip at the start, last at the end; with
//              clip_stride = 0 clip c takes the point (c + 0.5) / num_clips of each of the T
//              segments); no randomness; crops are squares of the frame's
//              short side at the start / centre / end of the long side (1 crop: centre; 2: start,
//              end; 3: start, centre, end; more: evenly spaced), resized to img_size.
//
// Augmentations per view (pair: each view its own draws; clip: one draw per clip):
//   RandomResizedCrop exactly as torchvision (10 tries: area fraction ~ U[scale_min, scale_max],
//   log aspect ~ U[log ratio_min, log ratio_max], w = round(sqrt(A r)), h = round(sqrt(A / r)),
//   position uniform; then the centre-crop fallback), horizontal flip with flip_p, and optional
//   colour augmentations (off by default: the paper found spatial augmentations enough):
//   colour jitter (brightness, contrast, saturation, hue in torchvision's random order) with
//   jitter_p, grayscale with grayscale_p, Gaussian blur (sigma ~ U[0.1, 2.0], kernel about
//   img_size / 10) with blur_p, solarisation (v >= 128 -> 255 - v) with solarize_p.
//   aug_preset replaces those keys by the official recipes:
//     simclr  jitter_p 0.8, brightness/contrast/saturation 0.8, hue 0.2, grayscale 0.2, blur 0.5
//     byol    jitter_p 0.8, brightness/contrast 0.4, saturation 0.2, hue 0.1, grayscale 0.2,
//             blur 1.0 on view 0 and 0.1 on view 1, solarize 0 on view 0 and 0.2 on view 1
//   Resampling: separable bilinear with antialiasing (PIL's BILINEAR filter, the one torchvision's
//   RandomResizedCrop uses): the triangle widens with the shrink factor, so shrinking averages
//   every source pixel (no aliasing) and enlarging is plain half-pixel-centred bilinear.  Within 1
//   level of torch's interpolate(bilinear, antialias=True) (tests/test_sampler_torch.py).
//   Order of operations per view: crop + resize + flip, colour jitter, grayscale, blur, solarise.
//
// Determinism: every random choice of sample `draw` of video `video_id` in `epoch` is a pure
// function of (run.seed, epoch, video_id, draw) through Philox streams (common/rng.h): frame
// choice on vm_rng_stream(VM_RNG_SAMPLER, epoch, video_id, draw), view j's augmentation on
// vm_rng_stream(VM_RNG_AUGMENT, epoch, video_id, draw << 16 | j).  Results do not depend on how
// many threads or workers draw, or in which order.
//
// Threads: a vm_sampler is immutable after create; any number of threads may use one at once (each
// with its own decoder and scratch).
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "common/config.h"
#include "common/error.h"
#include "decoder/decoder.h"
#include "proto/proto.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vm_sampler vm_sampler;

// Everything decided about one view before any pixel is touched.
typedef struct vm_view_plan {
    int64_t frame;                    // frame index (presentation order)
    int32_t crop_x, crop_y, crop_w, crop_h; // crop box in source pixels, inside the frame
    uint8_t flip;                     // mirror horizontally after the crop
    uint8_t jitter;                   // apply colour jitter with the factors below
    uint8_t grayscale, solarize, blur;
    uint8_t jitter_order[4];          // permutation of 0 brightness, 1 contrast, 2 saturation, 3 hue
    float brightness, contrast, saturation, hue; // factors (1, 1, 1, 0 = identity)
    float blur_sigma;
} vm_view_plan;

// Counters a caller accumulates over draws (vm_sampler_draw adds to them).
typedef struct vm_sampler_stats {
    int64_t videos;          // videos opened / drawn from
    int64_t samples;         // samples written
    int64_t skipped_short;   // samples not drawn: video too short and short_video = skip
    int64_t frames_needed;   // distinct frames the written samples needed
    int64_t frames_decoded;  // pictures the decoder decoded for them (includes frames skipped over)
    double decode_s, render_s; // seconds spent decoding frames and cropping/resizing/augmenting
} vm_sampler_stats;

// Reusable working memory for vm_sampler_render (grown on demand; one per thread).
typedef struct vm_scratch {
    void *p;
    size_t cap;
} vm_scratch;
void vm_scratch_free(vm_scratch *s);

// Read [sampler], [decoder] decode_short_side, [model] img_size and [run] seed from cfg (copied;
// cfg may be freed after).  VM_EINVAL names the key when a combination is unusable.
int vm_sampler_create(const vm_config *cfg, vm_sampler **out, vm_error *err);
void vm_sampler_free(vm_sampler *s);

int vm_sampler_views(const vm_sampler *s);   // V: views per sample
int vm_sampler_size(const vm_sampler *s);    // H = W of a view (img_size)
// Decoder options matching the configuration (short side from [decoder] decode_short_side, hw,
// timeout, index cache).  opt->index_cache points into the sampler.
void vm_sampler_decoder_options(const vm_sampler *s, vm_decoder_options *opt);

// Plan sample `draw` of a video with `frames` frames (pts_ns: their presentation timestamps, used
// when gap_unit = seconds; may be NULL for gap_unit = frames or other policies) decoded at
// width x height.  Fills views[0 .. V).  Pure: no decoding.  VM_ERANGE when the video is too short
// and short_video = skip (err says why); VM_EINVAL when frames < 1 or the size is empty.
int vm_sampler_plan(const vm_sampler *s, uint64_t video_id, uint32_t epoch, uint64_t draw, int64_t frames,
                    const int64_t *pts_ns, int width, int height, vm_view_plan *views, vm_error *err);

// Render one planned view from a packed RGB frame (width x height x 3) into out (S x S x 3):
// crop, resize, flip, colour.  scratch may be NULL (allocates per call).
int vm_sampler_render(const vm_sampler *s, const uint8_t *frame, int width, int height, const vm_view_plan *p,
                      uint8_t *out, vm_scratch *scratch, vm_error *err);

// Draw n samples, draws first_draw .. first_draw + n - 1, from an open decoder: plan them all,
// decode the union of their frames in one sorted pass (in bounded chunks), render every view.
//   pixels   (n, V, S, S, 3) uint8, proto's layout      samples  [n]      views  [n * V]
// stats (may be NULL) is added to.  On VM_ERANGE (short video, skip) nothing is written and
// stats->skipped_short grows by n.
int vm_sampler_draw(const vm_sampler *s, vm_decoder *dec, uint64_t video_id, uint32_t epoch, uint64_t first_draw,
                    int n, uint8_t *pixels, vm_sample_meta *samples, vm_view_meta *views, vm_sampler_stats *stats,
                    vm_error *err);
// The same from a path: open with vm_sampler_decoder_options, draw, close.
int vm_sampler_draw_path(const vm_sampler *s, const char *path, uint64_t video_id, uint32_t epoch,
                         uint64_t first_draw, int n, uint8_t *pixels, vm_sample_meta *samples, vm_view_meta *views,
                         vm_sampler_stats *stats, vm_error *err);

// ---- the image kernels (sampler/image.c), usable on their own --------------------------------

// Crop (x, y, w, h) of a packed RGB image (sw x sh, row stride sstride bytes) resized to dw x dh
// into dst (packed RGB), separable antialiased bilinear in fixed point (PIL BILINEAR semantics,
// taps limited to the crop).  flip mirrors the output horizontally.  scratch may be NULL.
int vm_crop_resize_rgb(const uint8_t *src, int sw, int sh, size_t sstride, int x, int y, int w, int h,
                       uint8_t *dst, int dw, int dh, int flip, vm_scratch *scratch, vm_error *err);
// Colour operations on a packed RGB image in place (torchvision's definitions on uint8 tensors).
void vm_color_jitter_rgb(uint8_t *img, int w, int h, const vm_view_plan *p);
void vm_grayscale_rgb(uint8_t *img, int w, int h);
void vm_solarize_rgb(uint8_t *img, int w, int h, int threshold);
int vm_gaussian_blur_rgb(uint8_t *img, int w, int h, int ksize, float sigma, vm_scratch *scratch, vm_error *err);

#ifdef __cplusplus
}
#endif
