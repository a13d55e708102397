#!/usr/bin/env bash
# Run test binaries (arguments) and, unless VICMAE_CORE_ONLY=1, the Python tests tests/test_*.py;
# each prints "<name>: N passed, N failed, N skipped" last.  A binary that dies before printing
# that line counts as one failure.  Ends with the total line and a non-zero exit on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
export VICMAE_BIN="${VICMAE_BIN:-$PWD/${BUILD:-build}/vicmae}"
export PYTHONDONTWRITEBYTECODE=1
# ASan builds: library-constructor allocations (GLib's init) are suppressed, see tests/lsan.supp.
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}"
P=0 F=0 S=0
failed_names=()
run_one() {  # name, command...
  local name=$1; shift
  local log; log=$(mktemp)
  local t0=$SECONDS
  # Show FAIL/SKIP lines and the indented lines that continue a multi-line reason.
  "$@" 2>&1 | tee "$log" | awk '/^(FAIL|SKIP)/ {show = 1; print; next} show && /^  / {print; next} {show = 0}' || true
  local rc=${PIPESTATUS[0]}
  local line; line=$(grep -E ': [0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
  if [[ -z "$line" ]]; then
    echo "FAIL $name: exited with status $rc before printing its summary; last lines:"
    tail -15 "$log" | sed 's/^/    /'
    F=$((F + 1)); failed_names+=("$name")
  else
    local p f s
    p=$(sed -E 's/.*: ([0-9]+) passed.*/\1/' <<<"$line")
    f=$(sed -E 's/.*, ([0-9]+) failed.*/\1/' <<<"$line")
    s=$(grep -oE '[0-9]+ skipped' <<<"$line" | grep -oE '[0-9]+' || echo 0)
    P=$((P + p)); F=$((F + f)); S=$((S + ${s:-0}))
    if ((f > 0)) || ((rc != 0)); then
      ((f > 0)) || { F=$((F + 1)); echo "FAIL $name: exit status $rc"; }
      failed_names+=("$name")
    fi
    echo "  $line ($((SECONDS - t0))s)"
  fi
  rm -f "$log"
}
for bin in "$@"; do
  run_one "$(basename "$bin")" "$bin"
done
if [[ "${VICMAE_CORE_ONLY:-0}" != 1 ]]; then
  for py in tests/test_*.py; do
    [[ -e "$py" ]] || continue
    run_one "$(basename "$py")" /usr/bin/python3 "$py"
  done
fi
((${#failed_names[@]})) && echo "failing: ${failed_names[*]}"
echo "$P passed, $F failed, $S skipped"
((F == 0))
