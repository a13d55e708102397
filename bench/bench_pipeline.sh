#!/usr/bin/env bash
# bench/bench_pipeline.sh — the data pipeline against a PyTorch DataLoader on the same videos and cores.
#
# Both sides do the same work per video: "distant" pair sampling (PAIRS pairs per video), decode at
# short side SHORT, RandomResizedCrop to IMG x IMG (scale 0.2-1, ratio 3/4-4/3) + flip per view, and
# deliver uint8 (B, 2, IMG, IMG, 3) batches to one consumer: `vicmae bench pipeline` (workers -> LZ4
# -> ZeroMQ -> the sink) and bench/torch_dataloader.py (PyAV + torch in DataLoader workers), with
# 1 and 2 workers, EPOCHS epochs each, timed from the start (worker start-up included) to the last
# batch.  Needs ../shared/data/videos (or $VICMAE_BENCH_DATA), /usr/bin/python3 with torch and av.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/vicmae
DATA=${VICMAE_BENCH_DATA:-../shared/data/videos}
EPOCHS=${EPOCHS:-3} IMG=${IMG:-224} SHORT=${SHORT:-256} PAIRS=${PAIRS:-2} BATCH=${BATCH:-16} WORKERS=${WORKERS:-1,2}
if [ ! -d "$DATA" ] && [ ! -f "$DATA" ]; then echo "bench_pipeline: skipped: no data at $DATA"; exit 0; fi
if [ ! -x "$BIN" ]; then echo "bench_pipeline: $BIN is not built"; exit 1; fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$BIN" bench pipeline --data "$DATA" --workers "$WORKERS" --epochs "$EPOCHS" --batch "$BATCH" \
  --set model.img_size="$IMG" --set decoder.decode_short_side="$SHORT" --set sampler.pairs_per_video="$PAIRS" \
  --set sampler.mode=distant --set sampler.policy=pair --set sampler.scale_min=0.2 --set sampler.scale_max=1.0 \
  --set sampler.flip_p=0.5 --set sampler.aug_preset=none | tee -a "$out" || exit 1
if /usr/bin/python3 -c 'import torch, av' 2>/dev/null; then
  for w in ${WORKERS//,/ }; do
    /usr/bin/python3 bench/torch_dataloader.py --data "$DATA" --workers "$w" --epochs "$EPOCHS" --img "$IMG" \
      --short-side "$SHORT" --pairs "$PAIRS" --batch "$BATCH" 2>/dev/null | tee -a "$out"
  done
else
  echo "torch baseline: skipped (/usr/bin/python3 lacks torch or av: apt-get install python3-torch python3-av)"
fi
# Ratios against the baseline measured above.
awk '
  function val(line, key,   m) { if (match(line, key "=[0-9.]+")) return substr(line, RSTART + length(key) + 1, RLENGTH - length(key) - 1); return 0 }
  /^vicmae workers=/ { w = val($0, "workers"); v[w] = val($0, "pairs_per_s"); vs[w] = val($0, "steady_pairs_per_s"); b[w] = val($0, "bytes_per_pair") }
  /^torch workers=/  { w = val($0, "workers"); t[w] = val($0, "pairs_per_s"); ts[w] = val($0, "steady_pairs_per_s") }
  END {
    for (w in v) {
      if (t[w] > 0) printf("ratio workers=%s vicmae/torch pairs/s = %.2fx (steady %.2fx), %.0f bytes/pair on the wire\n", w, v[w] / t[w], (ts[w] > 0 ? vs[w] / ts[w] : 0), b[w])
    }
    if (v[1] > 0 && v[2] > 0) printf("scaling 1->2 workers: vicmae %.2f, torch %.2f (1.00 = linear)\n", v[2] / (2 * v[1]), (t[1] > 0 ? t[2] / (2 * t[1]) : 0))
  }' "$out"
