#!/usr/bin/env bash
# tools/gpu-check.sh — `make gpu-check`: the GPU checks in one prepared run (target: < 8 min on one
# H100).  From the repo root of a GPU node:
#   1. the GPU tests: tests/test_cuda_* (every op vs the CPU backend, fp32 and bf16; whole-model
#      debug step and 20 training steps vs the CPU; `train --replay` vs the CPU; the input ring);
#   2. compute-sanitizer memcheck over the op tests, model debug steps (bf16) and a short training
#      (the training loop on stored batch files: test_cuda_train, fp32 and bf16); racecheck and
#      synccheck over the fused and the flash attention kernels (fp32 and bf16 qkv);
#   3. the GPU benchmark (bench/gpu.sh: ViT-B/16, ours vs PyTorch on the same GPU);
#   4. the trainer's CPU tests test_trainer_*, in the time that is left;
# and prints a short table LAST.  Logs: with OUT set, two files $OUT/gpu-check-summary.txt and
# $OUT/gpu-check-logs.txt (every log, concatenated: the device tool brings back few files);
# otherwise the directory gpu-dist/logs/.
#
# Binaries: gpu-dist/bin (made by tools/gpu-dist.sh on a build machine; programs and libraries are
# unpacked from gpu-dist/{bin,lib}.tar.gz), else $BUILD/ of a local build (a machine that can
# build).  Exit status: 0 when every test and sanitizer run passed.
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$SECONDS
if [ -n "${OUT:-}" ]; then LOG=$(mktemp -d); else LOG=gpu-dist/logs; fi
mkdir -p "$LOG"
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export PATH="$CUDA_HOME/bin:$PATH"

# (unpacked again when the tarball is newer than an earlier unpacking: a fresh gpu-dist wins)
unpack() { if [ -f "gpu-dist/$1.tar.gz" ] && [ ! -d "gpu-dist/$1" -o "gpu-dist/$1.tar.gz" -nt "gpu-dist/$1" ]; then
  rm -rf "gpu-dist/$1" && tar -C gpu-dist -xzf "gpu-dist/$1.tar.gz" && touch "gpu-dist/$1"; fi; }
unpack bin
if [ -d gpu-dist/bin ]; then
  BIN=gpu-dist/bin TESTBIN=gpu-dist/bin BENCHBIN=gpu-dist/bin/gpu_bench
  unpack lib
  export LD_LIBRARY_PATH="$PWD/gpu-dist/lib:$CUDA_HOME/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
  B=${BUILD:-build}
  echo "gpu-check: no gpu-dist/; building in $B"
  make --no-print-directory BUILD="$B" -j"$(nproc)" all >"$LOG/build.log" 2>&1 || { tail -30 "$LOG/build.log"; exit 1; }
  BIN=$B TESTBIN=$B/tests BENCHBIN=$B/bench/gpu_bench
  export LD_LIBRARY_PATH="$CUDA_HOME/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

{
  echo "date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  echo "cuda: $(nvcc --version 2>/dev/null | grep -oE 'release [0-9.]+' || echo 'no nvcc')"
  echo "compute-sanitizer: $(compute-sanitizer --version 2>/dev/null | tail -1 || echo none)"
  [ -f gpu-dist/MANIFEST ] && cat gpu-dist/MANIFEST
} >"$LOG/env.txt" 2>&1
for f in "$TESTBIN"/test_cuda_* "$BENCHBIN"; do ldd "$f"; done 2>&1 | sort -u >"$LOG/ldd.txt"
[ -x "$BIN/vicmae-trainer" ] && export VICMAE_BIN="$PWD/$BIN/vicmae-trainer"  # test_trainer_model runs debug-step
DEVICE=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
if grep -q '=> not found' "$LOG/ldd.txt"; then
  echo "gpu-check: missing shared libraries (see $LOG/ldd.txt):"; grep '=> not found' "$LOG/ldd.txt"
  exit 1
fi

rows=()   # "check|result|detail"
fail=0
row() { rows+=("$1|$2|$3"); [ "$2" = PASS ] || [ "$2" = SKIP ] || fail=1; }

# ---- 1. tests -----------------------------------------------------------------------------------
# A binary that died (an op aborts on a CUDA error) hides the tests after the one that killed it:
# run each test of its source alone to say which ones pass, fail or die.
isolate() {  # binary exit_status t0
  local b=$1 name; name=$(basename "$1")
  local src="tests/$name.c" p=0 f=0 d=0 died="" t out line
  echo "   $name died (exit $2) before its summary; running its tests one by one" | tee -a "$LOG/$name.log"
  for t in $(grep -oE '^TEST\([a-z0-9_]+\)' "$src" 2>/dev/null | sed -E 's/TEST\((.*)\)/\1/'); do
    out=$(timeout 120 "$b" "$t" 2>&1)
    line=$(grep -E "^(PASS|FAIL|SKIP) $t( |:)" <<<"$out" | head -1)
    if [ -z "$line" ]; then line="DIED $t: $(tail -2 <<<"$out" | tr '\n' ' ' | cut -c1-200)"; d=$((d + 1)); died="$died $t"
    elif [[ "$line" == PASS* ]]; then p=$((p + 1)); else f=$((f + 1)); fi
    echo "   $line" | tee -a "$LOG/$name.log"
  done
  row "$name" FAIL "died (exit $2); alone: $p passed, $f failed/skipped, $d died:$died ($((SECONDS - $3))s)"
}

run_test() {  # binary timeout_s
  local b=$1 name; name=$(basename "$1")
  local t0=$SECONDS
  timeout "$2" "$b" >"$LOG/$name.log" 2>&1
  local rc=$? line p f s
  line=$(grep -E ': [0-9]+ passed, [0-9]+ failed' "$LOG/$name.log" | tail -1)
  grep -E '^(FAIL|SKIP)|worst gradient|data-wait|steps, loss' "$LOG/$name.log" | head -12
  if [ -z "$line" ]; then isolate "$b" "$rc" "$t0"; return; fi
  p=$(sed -E 's/.*: ([0-9]+) passed.*/\1/' <<<"$line")
  f=$(sed -E 's/.*, ([0-9]+) failed.*/\1/' <<<"$line")
  s=$(grep -oE '[0-9]+ skipped' <<<"$line" | grep -oE '[0-9]+' || echo 0)
  local detail="$p passed, $f failed, $s skipped ($((SECONDS - t0))s)"
  if [ "$rc" -ne 0 ] || [ "$f" -ne 0 ]; then row "$name" FAIL "$detail, exit $rc"
  # on a GPU node a skipped GPU test is a failure: the backend did not come up
  elif [[ "$name" == test_cuda_* ]] && grep -q '^SKIP.*no GPU' "$LOG/$name.log"; then
    row "$name" FAIL "$detail: $(grep -m1 '^SKIP.*no GPU' "$LOG/$name.log" | cut -c1-90)"
  else row "$name" PASS "$detail"; fi
}
echo "== GPU tests"
for b in "$TESTBIN"/test_cuda_*; do
  [ -x "$b" ] && [ -f "$b" ] || continue
  case "$b" in *.o|*.d) continue ;; esac
  run_test "$b" 240
done

# ---- 2. compute-sanitizer --------------------------------------------------------------------------
sanitize() {  # label, command...   (TOOL=racecheck etc.; memcheck by default)
  local label=$1 tool=${TOOL:-memcheck}; shift
  local f="$LOG/$tool-$label.log" t0=$SECONDS
  timeout 240 compute-sanitizer --tool "$tool" --error-exitcode 99 --print-limit 20 "$@" >"$f" 2>&1
  local rc=$? summ; summ=$(grep -E '(ERROR|RACECHECK) SUMMARY' "$f" | tail -1)
  if [ $rc -eq 0 ]; then row "$tool $label" PASS "${summ:-no summary} ($((SECONDS - t0))s)"
  else row "$tool $label" FAIL "exit $rc: ${summ:-see $f} ($((SECONDS - t0))s)"; grep -m5 -E '=========  ?(Invalid|Program hit|Error|Race)' "$f"; fi
}
if command -v compute-sanitizer >/dev/null; then
  echo "== compute-sanitizer memcheck"
  # (environment set here, not through `env`, so that the sanitizer's target is the test itself)
  export VICMAE_MEMCHECK=1
  sanitize ops "$TESTBIN/test_cuda_ops"
  export VICMAE_TEST_FILTER=debug_step_bf16   # the bf16 kernels (fp32 ones: test_cuda_ops above)
  sanitize debug-step "$TESTBIN/test_cuda_model"
  export VICMAE_TEST_FILTER=bf16_activations  # the bf16-activation ops through the whole model
  sanitize bf16-activations "$TESTBIN/test_cuda_model"
  unset VICMAE_MEMCHECK VICMAE_TEST_FILTER
  sanitize train "$TESTBIN/test_cuda_train"   # the training loop on replayed batch files, fp32 + bf16
  # the fused attention kernels share memory between warps: races and barrier misuse
  export VICMAE_MEMCHECK=1
  # (the filter also selects cuda_attention_fused_bf16_qkv: the instantiations for a bf16 qkv)
  TOOL=racecheck sanitize fused-attention "$TESTBIN/test_cuda_ops" cuda_attention_fused_bf16
  TOOL=synccheck sanitize fused-attention "$TESTBIN/test_cuda_ops" cuda_attention_fused_bf16
  # the flash kernels (shared K/V/Q/dO between warps, the row sums across the backward's barrier);
  # the filter also selects cuda_attention_flash_bf16_qkv
  TOOL=racecheck sanitize flash-attention "$TESTBIN/test_cuda_ops" cuda_attention_flash_bf16
  TOOL=synccheck sanitize flash-attention "$TESTBIN/test_cuda_ops" cuda_attention_flash_bf16
  unset VICMAE_MEMCHECK
else
  row memcheck FAIL "compute-sanitizer not found in PATH ($CUDA_HOME/bin)"
fi

# ---- 3. benchmark -------------------------------------------------------------------------------------
echo "== benchmark (bench/gpu.sh)"
# The whole run stays under GPU_CHECK_S seconds (default 460, under the 8 minutes): the benchmark
# gets what the tests left minus 60 s for the CPU tests; torch.compile, last, runs only if it fits.
BUDGET_S=${GPU_CHECK_S:-460}
left=$((BUDGET_S - 60 - (SECONDS - T0)))
GPU_BENCH=$BENCHBIN BENCH_BUDGET_S=$left bash bench/gpu.sh >"$LOG/bench.log" 2>&1
brc=$?
sed -n '/^== summary/,$p' "$LOG/bench.log" >"$LOG/bench-summary.txt"
if ! grep -q '^vicmae' "$LOG/bench-summary.txt"; then row "benchmark" FAIL "no run of ours finished (exit $brc, budget ${left} s): see bench.log"
elif [ $brc -eq 0 ]; then row "benchmark" PASS "summary below, details in bench.log"
else row "benchmark" FAIL "exit $brc, see bench.log"; fi

# ---- 4. the trainer's CPU tests, with the time left (CI runs them too; here they check the binaries) ----
echo "== trainer CPU tests"
for b in "$TESTBIN"/test_trainer_*; do
  [ -x "$b" ] && [ -f "$b" ] || continue
  case "$b" in *.o|*.d) continue ;; esac
  left=$((BUDGET_S - (SECONDS - T0)))
  if ((left < 20)); then rows+=("$(basename "$b")|SKIP|no time left of the ${BUDGET_S} s"); continue; fi
  run_test "$b" "$left"
done

# ---- table ----------------------------------------------------------------------------------------
{
  echo
  where=${OUT:+$OUT/gpu-check-logs.txt}
  echo "== gpu-check on ${DEVICE:-unknown GPU}, $((SECONDS - T0)) s, logs in ${where:-$LOG}"
  printf '%-40s %-5s %s\n' check result detail
  for r in "${rows[@]}"; do IFS='|' read -r a b c <<<"$r"; printf '%-40s %-5s %s\n' "$a" "$b" "$c"; done
  if [ -s "$LOG/bench-summary.txt" ]; then cat "$LOG/bench-summary.txt"; else tail -5 "$LOG/bench.log"; fi
} | tee "$LOG/summary.txt"
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  cp "$LOG/summary.txt" "$OUT/gpu-check-summary.txt"
  for f in "$LOG"/*; do printf '\n===== %s\n' "$(basename "$f")"; cat "$f"; done >"$OUT/gpu-check-logs.txt"
  rm -rf "$LOG"
fi
exit $fail
