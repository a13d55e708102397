#!/usr/bin/env bash
# tools/gpu-dist.sh — build here (a machine with the Debian -dev packages and nvcc, no GPU needed)
# everything the GPU checks run, and gather it in gpu-dist/ for a GPU node that has the CUDA
# runtime, driver and compute-sanitizer but no -dev packages and no GStreamer:
#
#   gpu-dist/bin.tar.gz  bin/: vicmae-trainer, test_cuda_*, test_trainer_*, gpu_bench (host debug
#                      info stripped), built with CUDA_SHARED=1: none carries the kernels, each
#                      loads lib/libvicmae-cuda.so (rpath $ORIGIN/../lib); about 1 MB packed
#   gpu-dist/lib.tar.gz  libvicmae-cuda.so: the CUDA backend once (our kernels, cudart_static;
#                      host debug info stripped, the kernels keep -lineinfo for compute-sanitizer;
#                      ~15 MB, most of it the device code), and every non-system shared library the
#                      programs load (OpenBLAS + gfortran/quadmath, gomp, inih, png, cjson, zmq + its
#                      dependencies, lz4, xxhash, ...), packed because OpenBLAS alone is 36 MB;
#                      tools/gpu-check.sh unpacks it to gpu-dist/lib.
#   Before CUDA_SHARED each of the 9 CUDA-linked programs carried its own ~15 MB copy of the kernels
#   (bin.tar.gz 40 MB, gpu-dist 53 MB of the 64 MiB that the device tool carries).
#   gpu-dist/MANIFEST  what is in it, from which build, and the glibc it needs.
#
# Not copied: glibc (libc, libm, libdl, libpthread, librt, ld-linux), libstdc++, libgcc_s, the
# CUDA libraries (libcuda comes with the driver; libcublas/libcublasLt from the node's CUDA 13
# toolkit in /usr/local/cuda/lib64).  Then, on the GPU node, from the repo root:
#   tools/gpu-check.sh            (or: make gpu-check)
# Usage: tools/gpu-dist.sh   [BUILD=build-gpu by default; DIST=gpu-dist by default; any make knobs
#                            via the environment]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu}
DIST=${DIST:-gpu-dist}   # another DIST (e.g. /tmp/gd) leaves gpu-dist/ as it is
NVCC=${CUDA_HOME:-/usr/local/cuda}/bin/nvcc
[ -x "$NVCC" ] || { echo "gpu-dist: no nvcc at $NVCC: the CUDA backend cannot be built here" >&2; exit 1; }

# Required: the CUDA tests and the benchmark.  Optional: the trainer's CPU tests and the trainer
# binary (useful on the node: debug-step, train --replay) — a module of the tree that is broken
# right now must not block the GPU checks, so those are built one by one and left out on failure.
required="$BUILD/bench/gpu_bench $(ls tests/test_cuda_*.c | sed -E "s|tests/(.*)\.c|$BUILD/tests/\1|")"
optional="$(ls tests/test_trainer_*.c 2>/dev/null | sed -E "s|tests/(.*)\.c|$BUILD/tests/\1|") $BUILD/vicmae-trainer"
# The CUDA backend in one shared library (Makefile: CUDA_SHARED=1).  An archive built here before
# without it still holds the .cu objects and looks up to date to make: removed, to be rebuilt.
MK=(make --no-print-directory BUILD="$BUILD" CUDA=1 CUDA_SHARED=1 -j"$(nproc)")
for a in "$BUILD"/lib*.a; do
  if [ -f "$a" ] && ar t "$a" | grep -q '\.cu\.o$'; then
    echo "gpu-dist: $a holds the CUDA objects (built without CUDA_SHARED): rebuilt"; rm -f "$a"
  fi
done
echo "gpu-dist: building in $BUILD with CUDA (CUDA_SHARED=1: $BUILD/libvicmae-cuda.so)"
"${MK[@]}" $required
targets=$required
for t in $optional; do
  if "${MK[@]}" "$t" >"$BUILD/gpu-dist-$(basename "$t").log" 2>&1; then
    targets="$targets $t"
  else
    echo "gpu-dist: WARNING: $t does not build now (see $BUILD/gpu-dist-$(basename "$t").log); left out" >&2
  fi
done

rm -rf "$DIST"
mkdir -p "$DIST/bin" "$DIST/lib"
for b in $targets; do
  cp "$b" "$DIST/bin/"
  strip --strip-debug "$DIST/bin/$(basename "$b")"
done

# The CUDA backend first: the programs find it as $ORIGIN/../lib/libvicmae-cuda.so, that is in
# $DIST/lib, which also checks their rpath.  Host debug info stripped; the fatbins (-lineinfo) stay.
cp "$BUILD/libvicmae-cuda.so" "$DIST/lib/"
strip --strip-debug "$DIST/lib/libvicmae-cuda.so"
# Shared libraries: the union of ldd over the binaries and over the libraries themselves.
is_system() {
  case "$(basename "$1")" in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libstdc++.so*|libgcc_s.so*) return 0 ;;
    libresolv.so*|libutil.so*|libanl.so*|libnss_*|libBrokenLocale.so*|libmvec.so*) return 0 ;;  # glibc too
    libcuda.so*|libcublas.so*|libcublasLt.so*|libcudart.so*|libnvidia*) return 0 ;;
    linux-vdso*) return 0 ;;
  esac
  return 1
}
declare -A seen=([libvicmae-cuda.so]=1)
queue=("$DIST"/bin/* "$DIST/lib/libvicmae-cuda.so")
while ((${#queue[@]})); do
  f=${queue[0]}; queue=("${queue[@]:1}")
  while read -r name path; do
    [[ -n "$path" && "$path" == /* ]] || continue
    is_system "$name" && continue
    [[ -n "${seen[$name]:-}" ]] && continue
    seen[$name]=1
    cp -L "$path" "$DIST/lib/$name"   # -L: Debian's alternatives symlinks (libopenblas.so.0)
    queue+=("$DIST/lib/$name")
  done < <(ldd "$f" | awk '/=>/ {print $1, $3}')
done
missing=$(for f in "$DIST"/bin/* "$DIST"/lib/*; do ldd "$f" | grep 'not found' || true; done | sort -u)
[ -z "$missing" ] || { echo "gpu-dist: unresolved libraries here: $missing" >&2; exit 1; }
for b in "$DIST"/bin/*; do   # a program with the backend must load it from lib/, by its rpath
  so=$(ldd "$b" | awk '$1 == "libvicmae-cuda.so" {print $3}')
  if [ -n "$so" ] && [ "$(realpath "$so")" != "$(realpath "$DIST/lib/libvicmae-cuda.so")" ]; then
    echo "gpu-dist: $b loads $so, not lib/libvicmae-cuda.so (rpath \$ORIGIN/../lib)" >&2; exit 1
  fi
done

glibc=$(for f in "$DIST"/bin/* "$DIST"/lib/*; do objdump -T "$f" 2>/dev/null | grep -oE 'GLIBC_[0-9.]+' || true; done |
        sort -uV | tail -1)
{
  echo "built $(date -u +%FT%TZ) on $(hostname) from $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- trainer tests bench || echo '+dirty')"
  echo "build dir $BUILD; nvcc $("$NVCC" --version | grep -oE 'release [0-9.]+'); needs glibc >= ${glibc#GLIBC_}"
  echo "CUDA backend: lib/libvicmae-cuda.so (CUDA_SHARED=1, cudart inside; the programs find it by rpath \$ORIGIN/../lib); it needs libcublas.so.13 + libcublasLt.so.13 (CUDA 13 toolkit), libcuda.so.1 (driver)"
  echo "bin:"; (cd "$DIST/bin" && ls -l | awk 'NR>1 {printf "  %-28s %9d\n", $9, $5}')
  echo "lib:"; (cd "$DIST/lib" && ls -l | awk 'NR>1 {printf "  %-28s %9d\n", $9, $5}')
} > "$DIST/MANIFEST"
# Packed: the device tool of this workplace carries at most 64 MiB.
tar -C "$DIST" -czf "$DIST/lib.tar.gz" lib
tar -C "$DIST" -czf "$DIST/bin.tar.gz" bin
nprog=$(ls "$DIST/bin" | wc -l)
rm -rf "$DIST/lib" "$DIST/bin"
cp tools/gpu-check.sh "$DIST/"   # the scripts also travel with the tree; this copy documents the pairing
echo "gpu-dist: $(du -sh "$DIST" | cut -f1) in $DIST/ ($nprog programs, $(grep -c '^  ' "$DIST/MANIFEST") files); needs ${glibc:-glibc}"
echo "gpu-dist: on the GPU node, from the repo root: tools/gpu-check.sh   (carry $DIST/)"
