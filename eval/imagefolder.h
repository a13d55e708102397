// eval/imagefolder.h — labeled images in torchvision's ImageFolder layout, read and resized.
//
// Layout: DIR/<class>/<image>.{jpg,jpeg,png} (case-insensitive extensions; other files are
// ignored).  Classes are the sub-directory names in byte order, labels their index, images in name
// order within a class, as torchvision.datasets.ImageFolder numbers them.  A validation folder is
// scanned against the training folder's class list so that labels agree by name.
//
// Images are decoded with libjpeg-turbo (JPEG) or libpng (PNG), chosen by the file's magic bytes,
// converted to RGB, then resized as torchvision's eval transform does:
//   Resize(size) (shorter side to size, antialiased bilinear as PIL) + CenterCrop(size).
#pragma once
#include <stdint.h>
#include "common/error.h"

typedef struct vm_imagefolder {
    char *root;
    int nclasses;
    char **classes;     // (nclasses) names
    int n;              // images
    char **paths;       // (n) full paths
    int32_t *labels;    // (n) class index
} vm_imagefolder;

// Scan dir.  max_per_class > 0 keeps the first max_per_class images of each class (in name order:
// a deterministic subset).  like: when non-NULL, use its class list (a class directory of dir that
// `like` lacks is an error; a class with no images is allowed).  Errors: dir unreadable, no class
// directory, no image at all.
int vm_imagefolder_scan(vm_imagefolder *f, const char *dir, int max_per_class, const vm_imagefolder *like,
                        vm_error *err);
void vm_imagefolder_free(vm_imagefolder *f);

// Decode a JPEG or PNG file into malloc'ed RGB (h, w, 3).  Grayscale and CMYK JPEGs, palette,
// gray, 16-bit and alpha PNGs are converted to 8-bit RGB.
int vm_image_read(const char *path, uint8_t **rgb, int *w, int *h, vm_error *err);

// src (h, w, 3) -> dst (size, size, 3): shorter side to size with PIL's antialiased bilinear
// filter (torchvision Resize; the longer side becomes floor(size * long / short)), then the
// centre size x size crop (torchvision CenterCrop's rounding).  Exact copy when h == w == size.
// Returns VM_ENOMEM when out of memory.
int vm_image_resize_crop(const uint8_t *src, int w, int h, uint8_t *dst, int size);

// Read image i of f into dst (size, size, 3).
int vm_imagefolder_load(const vm_imagefolder *f, int i, int size, uint8_t *dst, vm_error *err);
