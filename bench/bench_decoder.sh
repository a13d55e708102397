#!/usr/bin/env bash
# bench/bench_decoder.sh — decoder/ on ../shared/data/videos, against baselines measured in this run:
#   index:      building every frame index (parse pass, cache off) vs ffprobe -count_frames
#   sequential: every frame at short side 256, RGB, one thread, vs `ffmpeg -threads 1 -vf scale=WxH
#               -pix_fmt rgb24 -f null` at the same output sizes (ffmpeg's own -benchmark rtime)
#   pairs:      random frame pairs 0.5-2 s apart, one read per pair on a decoder kept open per file,
#               vs PyAV (bench/pyav_pairs.py) replaying the same pairs with accurate seeks, one thread
# and frames decoded per frame returned for both.  Ratios > 1 mean vicmae is faster.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BUILD:-build}
BIN=$B/bench/bench_decoder
DATA=${VICMAE_DATA:-../shared/data}/videos
PAIRS=${VICMAE_BENCH_PAIRS:-12}
if [ ! -d "$DATA" ]; then echo "bench_decoder: $DATA absent, skipped"; exit 0; fi
[ -x "$BIN" ] || make --no-print-directory BUILD="$B" "$BIN" >/dev/null
shopt -s nullglob
files=("$DATA"/*.mp4 "$DATA"/*.mkv "$DATA"/*.avi "$DATA"/*.webm)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export VICMAE_BENCH_CACHE=$tmp/cache
val() { awk -v k="$1" '$1 == k { print $2 }' "$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); ${#files[@]} videos in $DATA"
echo "gstreamer $(gst-inspect-1.0 --version | sed -n 2p | awk '{print $2}'), $(ffmpeg -version | head -1 | cut -d' ' -f1-3), pyav $(/usr/bin/python3 -c 'import av; print(av.__version__)')"

# ---- index ----
"$BIN" index "${files[@]}" >"$tmp/index.txt"
t0=$(date +%s.%N)
for f in "${files[@]}"; do
  ffprobe -v error -threads 1 -select_streams v:0 -count_frames -show_entries stream=nb_read_frames -of csv=p=0 "$f" >/dev/null 2>&1
done
tff=$(echo "$(date +%s.%N) - $t0" | bc -l)
ti=$(val seconds "$tmp/index.txt")
printf "index:      %s frames indexed in %.2f s; ffprobe -count_frames %.2f s; ratio %sx\n" \
  "$(val frames "$tmp/index.txt")" "$ti" "$tff" "$(ratio "$tff" "$ti")"

# ---- sequential ----
# Rates use CPU time (all threads of the process; ffmpeg's -benchmark utime+stime): on a shared
# machine wall time measures the neighbours.  Wall-clock rates follow in brackets.
"$BIN" seq --short-side 256 --list "$tmp/sizes.txt" "${files[@]}" >"$tmp/seq.txt"  # warms the index cache; files that fail are left out of both sides
tf=0
wf=0
while read -r f w h; do
  b=$(ffmpeg -nostdin -hide_banner -nostats -benchmark -threads 1 -i "$f" -map 0:v:0 -fps_mode passthrough \
      -vf "scale=$w:$h" -pix_fmt rgb24 -f null - 2>&1 | grep 'bench: utime')
  u=$(sed -E 's/.*utime=([0-9.]+)s.*/\1/' <<<"$b"); st=$(sed -E 's/.*stime=([0-9.]+)s.*/\1/' <<<"$b")
  r=$(sed -E 's/.*rtime=([0-9.]+)s.*/\1/' <<<"$b")
  tf=$(echo "$tf + $u + $st" | bc -l)
  wf=$(echo "$wf + $r" | bc -l)
done <"$tmp/sizes.txt"
nf=$(val frames "$tmp/seq.txt")
ffps=$(echo "$nf / $tf" | bc -l)
fwps=$(echo "$nf / $wf" | bc -l)
printf "sequential: vicmae %.1f frames/s, ffmpeg %.1f frames/s (%s frames of %d files at short side 256, 1 thread); ratio %sx (goal >= 0.8)  [wall: %.1f vs %.1f]\n" \
  "$(val cpu_fps "$tmp/seq.txt")" "$ffps" "$nf" "$(wc -l <"$tmp/sizes.txt")" "$(ratio "$(val cpu_fps "$tmp/seq.txt")" "$ffps")" \
  "$(val fps "$tmp/seq.txt")" "$fwps"

# ---- random pairs ----
"$BIN" pairs --short-side 256 --pairs "$PAIRS" --seed 1 --list "$tmp/pairs.txt" "${files[@]}" >"$tmp/ours.txt"
/usr/bin/python3 bench/pyav_pairs.py "$tmp/pairs.txt" >"$tmp/pyav.txt"
po=$(echo "$(val returned "$tmp/ours.txt") / 2 / $(val cpu "$tmp/ours.txt")" | bc -l)
pp=$(echo "$(val returned "$tmp/pyav.txt") / 2 / $(val cpu "$tmp/pyav.txt")" | bc -l)
wo=$(echo "$(val returned "$tmp/ours.txt") / 2 / $(val seconds "$tmp/ours.txt")" | bc -l)
wp=$(echo "$(val returned "$tmp/pyav.txt") / 2 / $(val seconds "$tmp/pyav.txt")" | bc -l)
printf "pairs:      vicmae %.1f pairs/s, PyAV %.1f pairs/s (%s pairs over %d files, 1 thread); ratio %sx (goal >= 2)  [wall: %.1f vs %.1f]\n" \
  "$po" "$pp" "$(( $(val returned "$tmp/ours.txt") / 2 ))" "${#files[@]}" "$(ratio "$po" "$pp")" "$wo" "$wp"
printf "decoded per returned frame: vicmae %s (%s/%s, %s seeks), PyAV %s (%s/%s)\n" \
  "$(ratio "$(val decoded "$tmp/ours.txt")" "$(val returned "$tmp/ours.txt")")" "$(val decoded "$tmp/ours.txt")" \
  "$(val returned "$tmp/ours.txt")" "$(val seeks "$tmp/ours.txt")" \
  "$(ratio "$(val decoded "$tmp/pyav.txt")" "$(val returned "$tmp/pyav.txt")")" "$(val decoded "$tmp/pyav.txt")" \
  "$(val returned "$tmp/pyav.txt")"
