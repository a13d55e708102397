#!/usr/bin/env bash
# bench/gpu.sh — `make bench-gpu` (also step 3 of tools/gpu-check.sh): ViT-B/16 ViC-MAE training
# steps at 224, mask 0.75, InfoNCE, on this machine's GPU:
#   ours     bench/gpu_bench (CUDA backend, the configs/vit_b16.ini defaults: bf16 products, bf16
#            activations, flash attention (auto); pair batches 64 and 128); the real input path
#            (the input feed: LZ4 messages decoded into pinned slots, copied on their own stream,
#            steps on the device-resident slot) with its data-wait; a profiled run that says where
#            the time goes, with the attention op alone (cuBLAS vs fused vs flash); the alternatives
#            the defaults replaced (fp32 activations, rows vicmae-fp32act; the fused attention
#            kernels and batched cuBLAS GEMMs; the bias kernel instead of the cuBLASLt epilogue;
#            cuBLAS FAST_16BF, on fp32 activations); fp32 at 64 when time allows)
#   baseline bench/torch_vitb_step.py with the GPU node's PyTorch (plain `python3`), bf16 autocast:
#            eager (timm 0.3.2 attention, as MAE), eager + SDPA, and torch.compile when time allows
# all in the same run on the same GPU, and prints a summary table with ratios against PyTorch eager
# at the same batch, and MFU against the cuBLAS bf16 GEMM rate measured on the device.
# Knobs: GPU_BENCH (binary; default $BUILD/bench/gpu_bench), PYTHON (default python3),
#        BENCH_BUDGET_S (seconds for the whole script; default 420), STEPS (timed steps, default 10).
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$SECONDS
BUDGET=${BENCH_BUDGET_S:-420}
BENCH=${GPU_BENCH:-${BUILD:-build}/bench/gpu_bench}
PY=${PYTHON:-python3}
STEPS=${STEPS:-10}
results=$(mktemp)
trap 'rm -f "$results"' EXIT
left() { echo $((BUDGET - (SECONDS - T0))); }

echo "machine: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)," \
     "$(nproc) cores, $(date -u +%F)"
[ -x "$BENCH" ] || { echo "bench/gpu.sh: no $BENCH (make, or tools/gpu-dist.sh)"; exit 1; }

run() {  # min_seconds_left timeout label command...
  local need=$1 to=$2 label=$3; shift 3
  if (( $(left) < need )); then echo "-- $label: skipped, $(left) s left of the budget"; return 0; fi
  (( to > $(left) - 5 )) && to=$(( $(left) - 5 ))
  echo "-- $label"
  local out rc
  out=$(timeout "$to" "$@" 2>&1); rc=$?
  echo "$out" | grep -v '^result '
  if [ $rc -ne 0 ]; then echo "   ($label: exit $rc$( ((rc == 124)) && echo ", timed out after $to s"))"; return 1; fi
  echo "$out" | grep '^result ' >>"$results"
}

rc=0
# Most important first: the budget may cut the tail.
run 60 120 "vicmae bf16, 64 pairs"  "$BENCH" --batch 64 --steps "$STEPS" --warmup 3 --precision bf16 || rc=1
run 60 150 "torch eager, 64 pairs"  "$PY" bench/torch_vitb_step.py --mode eager --batch 64 --steps "$STEPS" || rc=1
run 60 120 "vicmae bf16, 128 pairs" "$BENCH" --batch 128 --steps "$STEPS" --warmup 3 --precision bf16 || rc=1
run 60 150 "torch eager, 128 pairs" "$PY" bench/torch_vitb_step.py --mode eager --batch 128 --steps "$STEPS" || rc=1
run 45 120 "vicmae bf16, 64 pairs, the real input path (LZ4 -> pinned slots -> GPU, as the trainer)" \
    "$BENCH" --batch 64 --steps "$STEPS" --warmup 3 --precision bf16 --input || rc=1
run 45 90 "vicmae bf16, 64 pairs, profiled (where the time goes)" \
    "$BENCH" --batch 64 --steps 3 --warmup 2 --precision bf16 --profile --attention-alone || rc=1
FP32ACT=(--set train.activations=fp32)
run 60 120 "vicmae bf16, fp32 activations, 64 pairs" \
    "$BENCH" --batch 64 --steps "$STEPS" --warmup 3 --precision bf16 "${FP32ACT[@]}" || rc=1
run 45 120 "vicmae bf16, fused attention (scores in shared memory) instead of flash, 64 pairs" \
    "$BENCH" --batch 64 --steps "$STEPS" --warmup 3 --precision bf16 --attention fused || rc=1
run 45 120 "vicmae bf16, attention through batched cuBLAS GEMMs, 64 pairs" \
    "$BENCH" --batch 64 --steps "$STEPS" --warmup 3 --precision bf16 --attention cublas || rc=1
run 45 120 "vicmae bf16, bias kernel instead of the cuBLASLt epilogue, 64 pairs" \
    "$BENCH" --batch 64 --steps "$STEPS" --warmup 3 --precision bf16 --no-lt || rc=1
run 45 120 "vicmae bf16 (cuBLAS FAST_16BF path, fp32 activations), 64 pairs" \
    "$BENCH" --batch 64 --steps "$STEPS" --warmup 3 --precision bf16 --bf16-path fast "${FP32ACT[@]}" || rc=1
run 45 150 "torch sdpa, 64 pairs"   "$PY" bench/torch_vitb_step.py --mode sdpa --batch 64 --steps "$STEPS" || rc=1
run 45 120 "vicmae fp32, 64 pairs"  "$BENCH" --batch 64 --steps 3 --warmup 1 --precision fp32 || rc=1
# torch.compile takes minutes to compile; it runs last, with what is left, and may not finish.
run 90 300 "torch compile, 64 pairs" "$PY" bench/torch_vitb_step.py --mode compile --batch 64 --steps "$STEPS" || true

echo "== summary: ViT-B/16 224, mask 0.75, InfoNCE, one training step (fwd+bwd+AdamW), $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
awk '
  { delete kv; for (i = 2; i <= NF; i++) { split($i, p, "="); kv[p[1]] = p[2] }
    if (kv["profiled"] == 1) next
    n++; impl[n] = kv["impl"] " " kv["precision"]; b[n] = kv["batch"]; ms[n] = kv["step_ms"]; ps[n] = kv["pairs_per_s"]
    mfu[n] = kv["mfu"] != "" ? sprintf("%.1f%%", 100 * kv["mfu"]) : "-"
    dw[n] = kv["data_wait_pct"] != "" ? sprintf("%.2f%%", kv["data_wait_pct"]) : "-"
    if (kv["impl"] == "torch-eager") base[kv["batch"]] = kv["pairs_per_s"] }
  END {
    printf "%-28s %5s %9s %9s %14s %6s %9s\n", "implementation", "pairs", "step ms", "pairs/s", "vs torch eager", "MFU", "data-wait"
    for (i = 1; i <= n; i++)
      printf "%-28s %5d %9.1f %9.1f %14s %6s %9s\n", impl[i], b[i], ms[i], ps[i],
             (b[i] in base) ? sprintf("%.2fx", ps[i] / base[b[i]]) : "-", mfu[i], dw[i]
  }' "$results"
exit $rc
