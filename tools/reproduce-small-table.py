"""The table of tools/reproduce-small.sh from OUT/eval/<row>-s<seed>.jsonl (vicmae eval --json).

usage: /usr/bin/python3 tools/reproduce-small-table.py OUT [ROW ...]
Prints a Markdown table (mean ± sample std [min–max] over seeds) and, for every row against
(a) MAE only and (e) against (b), the per-seed paired differences (same seed = same init, data
order and masks), which are less noisy than comparing the means of two spreads.
"""
import glob
import json
import os
import statistics as st
import sys

out = sys.argv[1]
rows = sys.argv[2:] or ["random", "mae", "infonce", "simsiam", "vicreg", "same"]
res = {}  # row -> eval -> seed -> (top1, top5)
for path in sorted(glob.glob(os.path.join(out, "eval", "*.jsonl"))):
    row, seed = os.path.basename(path)[:-6].rsplit("-s", 1)
    for line in open(path):
        r = json.loads(line)
        res.setdefault(row, {}).setdefault(r["eval"], {})[int(seed)] = (r["top1"], r["top5"])


def cell(xs):
    if not xs:
        return "not run"
    if len(xs) == 1:
        return f"{xs[0]:.2f} (1 seed)"
    return f"{st.mean(xs):.2f} ± {st.stdev(xs):.2f} [{min(xs):.2f}–{max(xs):.2f}]"


names = {"random": "random-init encoder", "mae": "(a) MAE only (w_con = 0)", "infonce": "(b) ViC-MAE, InfoNCE",
         "simsiam": "(c) ViC-MAE, SimSiam", "vicreg": "(d) ViC-MAE, VICReg",
         "same": "(e) ViC-MAE, InfoNCE, pair mode same (gap 0)"}
print("| row | seeds | k-NN top-1 | k-NN top-5 | linear top-1 | linear top-5 |")
print("|---|---|---|---|---|---|")
for row in rows:
    k, l = res.get(row, {}).get("knn", {}), res.get(row, {}).get("linear", {})
    seeds = ",".join(str(s) for s in sorted(k)) or "-"
    print(f"| {names.get(row, row)} | {seeds} | {cell([v[0] for _, v in sorted(k.items())])} | "
          f"{cell([v[1] for _, v in sorted(k.items())])} | {cell([v[0] for _, v in sorted(l.items())])} | "
          f"{cell([v[1] for _, v in sorted(l.items())])} |")

pairs = [(r, "mae") for r in ("random", "infonce", "simsiam", "vicreg", "same")] + [("same", "infonce")]
lines = []
for a, b in pairs:
    for ev in ("knn", "linear"):
        A, B = res.get(a, {}).get(ev, {}), res.get(b, {}).get(ev, {})
        common = sorted(set(A) & set(B))
        if len(common) < 2:
            continue
        d = [A[s][0] - B[s][0] for s in common]
        lines.append(f"| {a} − {b} | {ev} | {len(common)} | {st.mean(d):+.2f} ± {st.stdev(d):.2f} | "
                     f"{min(d):+.2f} … {max(d):+.2f} |")
if lines:
    print("\nPaired top-1 differences (same seed), in points:\n")
    print("| difference | eval | seeds | mean ± std | range |")
    print("|---|---|---|---|---|")
    print("\n".join(lines))
