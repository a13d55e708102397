#!/usr/bin/env bash
# `make bench`: every benchmark, each printing ratios against its baseline measured in the same run.
# Benchmarks are bench/bench_*.sh, run in name order; a missing one is simply not there yet.
set -uo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u +%F)"
rc=0
for b in bench/bench_*.sh; do
  [ -e "$b" ] || continue
  echo "== $b"
  bash "$b" || { echo "$b failed"; rc=1; }
done
exit $rc
