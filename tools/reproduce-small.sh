#!/usr/bin/env bash
# tools/reproduce-small.sh — the small ablation of docs/RESULTS.md (`make reproduce-small`).
#
# On ../shared/data/videos, with ../shared/data/cifar10 as the labeled set:
#   1. store the training pairs once per pair mode (`vicmae run --sink --save-batches`): `distant`
#      frames (the paper's setting) and `same` (gap 0, the two views are crops of one frame), so
#      every row trains on exactly the same pairs;
#   2. train, per seed, with `vicmae train --replay` (identical data order and masks per seed):
#        mae      MAE only (contrastive none, w_con 0)
#        infonce  ViC-MAE with InfoNCE                     (distant pairs)
#        simsiam  ViC-MAE with SimSiam                     (distant pairs)
#        vicreg   ViC-MAE with VICReg                      (distant pairs)
#        same     ViC-MAE with InfoNCE on `same` pairs     (gap 0)
#   3. evaluate each checkpoint and a random-init encoder (`vicmae eval all`: k-NN and linear
#      probe on cifar10/val), appending JSON lines to OUT/results.jsonl;
#   4. draw each run's loss curves (`vicmae plot`) and print the table (mean, spread over seeds).
# Finished steps are skipped when the script runs again (delete OUT to start over).
#
# Environment (defaults in brackets):
#   OUT [runs/reproduce-small]  BUILD [build]  BIN [$BUILD/vicmae]  TRAINER [$BUILD/vicmae-trainer]
#   CONFIG [tools/reproduce-small.ini]  STEPS [150]  BATCH [64]  SEEDS ["0 1"]
#   ROWS ["random mae infonce simsiam vicreg same"]  DATA_EPOCHS [5] (pipeline epochs stored per mode)
#   VIDEOS [../shared/data/videos]  CIFAR [../shared/data/cifar10]  TRAIN_PER_CLASS [500; 0 = all]
#   VAL_PER_CLASS [0 = all 500]  LINEAR_EPOCHS [100]  BACKEND [auto: cuda when usable, else cpu]
#   BATCHES [OUT/batches]: where stored pairs are read (and written when absent)
#   NO_BUILD=1: use the binaries as they are (a node without the build tools)
#   DROP_CKPT=1: delete each run's checkpoints once evaluated (keeps metrics, logs, results)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/reproduce-small}
BUILD=${BUILD:-build}
BIN=${BIN:-$BUILD/vicmae}
TRAINER=${TRAINER:-$BUILD/vicmae-trainer}
CONFIG=${CONFIG:-tools/reproduce-small.ini}
STEPS=${STEPS:-150}
BATCH=${BATCH:-64}
SEEDS=${SEEDS:-"0 1"}
ROWS=${ROWS:-"random mae infonce simsiam vicreg same"}
DATA_EPOCHS=${DATA_EPOCHS:-5}
VIDEOS=${VIDEOS:-../shared/data/videos}
CIFAR=${CIFAR:-../shared/data/cifar10}
TRAIN_PER_CLASS=${TRAIN_PER_CLASS:-500}
VAL_PER_CLASS=${VAL_PER_CLASS:-0}
LINEAR_EPOCHS=${LINEAR_EPOCHS:-100}
BACKEND=${BACKEND:-}
BATCHES=${BATCHES:-$OUT/batches}
# On a shared machine, OpenMP threads that spin while waiting steal the cores from each other:
# with GNU OpenMP's default policy feature extraction ran 4x slower here (measured) than passive.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
mkdir -p "$OUT"
log() { echo "reproduce-small: $(date -u +%H:%M:%S) $*" | tee -a "$OUT/log.txt" >&2; }

[ -d "$CIFAR/train" ] && [ -d "$CIFAR/val" ] || { echo "reproduce-small: no ImageFolder at $CIFAR" >&2; exit 1; }
if [ "${NO_BUILD:-0}" != 1 ]; then
  make --no-print-directory BUILD="$BUILD" -j"$(nproc)" "$BUILD/vicmae" "$BUILD/vicmae-trainer" >&2
fi
backend_opt=()
[ -n "$BACKEND" ] && backend_opt=(--backend "$BACKEND")
common=(--config "$CONFIG" --set "optim.batch_size=$BATCH" --set "optim.steps=$STEPS")
log "start: steps $STEPS x batch $BATCH, seeds [$SEEDS], rows [$ROWS], $(nproc) cores, backend ${BACKEND:-auto}"

# 1. Stored pairs, once per mode (seed 0: the data is the same for every row and seed).
store() {  # mode
  local dir="$BATCHES/$1"
  [ -f "$dir/.done" ] && return 0
  [ -d "$VIDEOS" ] || { echo "reproduce-small: no videos at $VIDEOS" >&2; exit 1; }
  log "storing $DATA_EPOCHS epochs of '$1' pairs from $VIDEOS in $dir"
  rm -rf "$dir"
  local gap=()
  [ "$1" = same ] && gap=(--set sampler.gap_min=0 --set sampler.gap_max=0)
  "$BIN" run "${common[@]}" --set "data.path=$VIDEOS" --set "sampler.mode=$1" "${gap[@]}" --sink \
    --save-batches "$dir" --epochs "$DATA_EPOCHS" 2>>"$OUT/log.txt"
  touch "$dir/.done"
}
need_distant=0 need_same=0
for r in $ROWS; do
  case $r in mae|infonce|simsiam|vicreg) need_distant=1 ;; same) need_same=1 ;; random) ;;
    *) echo "reproduce-small: unknown row '$r'" >&2; exit 2 ;; esac
done
[ $need_distant = 1 ] && store distant
[ $need_same = 1 ] && store same

# 2 + 3. Train and evaluate.
evaluate() {  # row seed [--ckpt CKPT | --random-init ...]
  local row=$1 seed=$2; shift 2
  local done_mark="$OUT/eval/$row-s$seed.done"
  [ -f "$done_mark" ] && return 0
  mkdir -p "$OUT/eval"
  log "eval $row seed $seed"
  local vpc=()
  [ "$VAL_PER_CLASS" != 0 ] && vpc+=(--val-per-class "$VAL_PER_CLASS")
  [ "$TRAIN_PER_CLASS" != 0 ] && vpc+=(--train-per-class "$TRAIN_PER_CLASS")
  "$TRAINER" eval all "$@" "${backend_opt[@]}" --train "$CIFAR/train" --val "$CIFAR/val" \
    "${vpc[@]}" --epochs "$LINEAR_EPOCHS" --quiet \
    --json "$OUT/eval/$row-s$seed.jsonl" | tee "$OUT/eval/$row-s$seed.txt" >&2
  touch "$done_mark"
}
for seed in $SEEDS; do
  for row in $ROWS; do
    if [ "$row" = random ]; then
      evaluate random "$seed" --random-init --seed "$seed" "${common[@]}"
      continue
    fi
    run="$OUT/runs/$row-s$seed"
    set_row=()
    mode=distant
    case $row in
      mae) set_row=(--set loss.contrastive=none --set loss.w_con=0) ;;
      infonce) set_row=(--set loss.contrastive=infonce) ;;
      simsiam) set_row=(--set loss.contrastive=simsiam) ;;
      vicreg) set_row=(--set loss.contrastive=vicreg) ;;
      same) set_row=(--set loss.contrastive=infonce); mode=same ;;
    esac
    if [ ! -f "$run/.done" ]; then
      log "train $row seed $seed ($mode pairs)"
      rm -rf "$run"
      mkdir -p "$run"
      t0=$SECONDS
      "$TRAINER" train "${common[@]}" "${set_row[@]}" --set "run.seed=$seed" --set "run.out_dir=$run" \
        --set run.log_every=25 --replay "$BATCHES/$mode" "${backend_opt[@]}" 2>"$run/train.log" | tee -a "$OUT/log.txt" >&2
      echo $((SECONDS - t0)) >"$run/.done"
    fi
    if [ ! -f "$run/loss.png" ]; then
      "$TRAINER" plot "$run" --out "$run/loss.png" >/dev/null 2>&1 || log "plot $run failed (no gnuplot?)"
    fi
    evaluate "$row" "$seed" --ckpt "$run/model.safetensors"
    [ "${DROP_CKPT:-0}" = 1 ] && rm -f "$run/model.safetensors" "$run/train_state.safetensors"
  done
done

# 4. The table.
cat "$OUT"/eval/*.jsonl >"$OUT/results.jsonl"
[ -x /usr/bin/python3 ] || { log "no /usr/bin/python3: table not written (results in $OUT/results.jsonl)"; exit 0; }
/usr/bin/python3 tools/reproduce-small-table.py "$OUT" $ROWS | tee "$OUT/table.md"
log "done: $OUT/table.md"
