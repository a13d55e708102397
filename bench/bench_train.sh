#!/usr/bin/env bash
# bench/bench_train.sh — one ViC-MAE training step on the CPU backend vs the PyTorch CPU reference,
# measured in the same run, same thread count, same model, fp32.
#
# Model (documented here, the same on both sides): ViT-Tiny encoder, 224x224, patch 16, embed 192,
# depth 12, 3 heads, MLP ratio 4; decoder 128 wide, 4 blocks, 4 heads; mask ratio 0.75 (49 kept
# patches + class token per view); projector 192 -> 1024 -> 1024 -> 128 with BatchNorm; InfoNCE
# (t = 0.1), norm_pix_loss; AdamW.  A step is 32 pairs (64 images): forward, backward, AdamW.
#
# The two implementations run alternately (vicmae, torch, vicmae, torch) so that a busy shared
# machine hurts both alike; each reports its best step in wall time and in CPU time of the process
# (all threads; on a shared machine the steadier measure of work, exact with THREADS=1, while with
# several threads it also counts threads spinning at barriers); GFLOP/s counts the matrix products
# analytically (training = 3x forward), the same count for both.
# Knobs: THREADS (default: all cores), STEPS (3), ROUNDS (2).
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BIN=$BUILD/bench/train_cpu_bench
THREADS=${THREADS:-$(nproc)}
STEPS=${STEPS:-3}
ROUNDS=${ROUNDS:-2}
PY=/usr/bin/python3
[ -x "$BIN" ] || { echo "bench_train: $BIN not built (make BUILD=$BUILD $BIN)"; exit 1; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "model: ViT-Tiny 192x12 h3 @224/16, decoder 128x4 h4, mask 0.75, projector 1024/128, InfoNCE; 32 pairs; fp32; $THREADS threads"
SETS=(--set model.img_size=224 --set model.patch_size=16 --set model.embed_dim=192 --set model.depth=12
      --set model.num_heads=3 --set model.decoder_embed_dim=128 --set model.decoder_depth=4
      --set model.decoder_num_heads=4 --set model.mlp_ratio=4 --set model.mask_ratio=0.75
      --set model.proj_hidden_dim=1024 --set model.proj_out_dim=128 --set loss.contrastive=infonce
      --set model.norm_pix_loss=true --set optim.batch_size=32 --set run.threads="$THREADS")
have_torch=1
$PY -c 'import torch' 2>/dev/null || { have_torch=0; echo "bench_train: no PyTorch for $PY (apt-get install python3-torch): no baseline"; }
c_best="" t_best="" c_cpu="" t_cpu="" gflop=""
min() { awk -v a="$1" -v b="$2" 'BEGIN{print (b=="" || a<b) ? a : b}'; }
for r in $(seq "$ROUNDS"); do
  out=$(OMP_NUM_THREADS=$THREADS "$BIN" "${SETS[@]}" --steps "$STEPS" --warmup 1) || { echo "$out"; exit 1; }
  echo "$out" | grep -v '^result'
  gflop=$(sed -nE 's/^result .*gflop=([0-9.]+).*/\1/p' <<<"$out")
  c_best=$(min "$(sed -nE 's/^result .*step_ms=([0-9.]+).*/\1/p' <<<"$out")" "$c_best")
  c_cpu=$(min "$(sed -nE 's/^result .*cpu_ms=([0-9.]+).*/\1/p' <<<"$out")" "$c_cpu")
  if ((have_torch)); then
    out=$(OMP_NUM_THREADS=$THREADS $PY bench/torch_cpu_step.py --threads "$THREADS" --steps "$STEPS" --warmup 1) || { echo "$out"; exit 1; }
    echo "$out" | grep -v '^result'
    t_best=$(min "$(sed -nE 's/^result .*step_ms=([0-9.]+).*/\1/p' <<<"$out")" "$t_best")
    t_cpu=$(min "$(sed -nE 's/^result .*cpu_ms=([0-9.]+).*/\1/p' <<<"$out")" "$t_cpu")
  fi
done
awk -v c="$c_best" -v u="$c_cpu" -v g="$gflop" 'BEGIN{printf "vicmae cpu step: %.1f ms, %.1f GFLOP/s (%.1f GFLOP per step); %.1f ms CPU time\n", c, g/(c/1000), g, u}'
if ((have_torch)); then
  awk -v c="$c_best" -v t="$t_best" -v u="$c_cpu" -v v="$t_cpu" -v g="$gflop" 'BEGIN{
    printf "torch  cpu step: %.1f ms, %.1f GFLOP/s; %.1f ms CPU time\n", t, g/(t/1000), v;
    printf "ratio: vicmae is %.2fx %s than PyTorch in wall time (goal: 1.5x faster)\n", (t>c ? t/c : c/t), (t>c ? "faster" : "slower");
    printf "ratio: vicmae needs %.2fx %s CPU time than PyTorch\n", (v>u ? v/u : u/v), (v>u ? "less" : "more") }'
fi
