#!/usr/bin/env bash
# The prefill bars of issue 4, with cuDNN and our kernel timed alternately on the same inputs, so
# that the board's drift between two long runs (the sweep runs ours, then the peers, minutes apart)
# does not enter the ratios. Per case and round: cuDNN (bench/sdpa_prefill_peer.py --one on our
# dumped inputs), our dense, our vote-only (a threshold that never skips: the skip machinery's cost
# at 0 % sparsity), the vote-only step against dense in one process (`--alt 2`: same clocks and
# temperature, the steadier reading; session 25) and, where asked, ours at a target tile sparsity.
# Ends with the medians, our speed against cuDNN and the vote-only overhead both ways.
#
#   scripts/bar-check.sh ROUNDS BENCH_DIR CASE [CASE ...]
#     CASE: D,LEN,CAUSAL or D,LEN,CAUSAL@S (also the scale factor that reaches tile sparsity S)
#   e.g. scripts/bar-check.sh 3 .devbuild/bench 128,32768,1@0.7 128,32768,0 128,8192,1
#
# Inputs are dumped to $BAR_INPUTS (default /tmp/blasst-bar-inputs, ~1 GB per 32K shape) and removed
# at the end. REPS (default 30; 10 from 64K on) sets the graph replays per timing.
#
# bench/prefill_bar_inprocess.py (scripts/gpu-check.sh bars) times cuDNN and ours in turn in one
# process instead: the reading the bars are judged by since session 27 (PERF.md), as the first
# timing of a case in a process of its own can run a few per cent off its steady speed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
[ $# -ge 3 ] || { sed -n 2,14p "$0"; exit 2; }
rounds=$1 bench=$2/blasst_cuda_prefill_bench
shift 2
inputs=${BAR_INPUTS:-/tmp/blasst-bar-inputs}
log=$(mktemp)
for spec in "$@"; do
  shape=${spec%@*} target=
  [[ $spec == *@* ]] && target=${spec#*@}
  IFS=, read -r d n _ <<< "$shape"
  reps=${REPS:-$([ "$n" -ge 65536 ] && echo 10 || echo 30)}
  [ -d "$inputs/d${d}_n${n}" ] || "$bench" --one "$shape" --dump "$inputs" > /dev/null 2>&1
  echo "== $spec (reps $reps)"
  for ((r = 0; r < rounds; ++r)); do
    python3 bench/sdpa_prefill_peer.py --one "$shape" --inputs "$inputs" --backend cudnn --bench-only --reps "$reps" 2>&1 |
      grep -E "cudnn" | sed "s|^|$spec cudnn |"
    "$bench" --one "$shape" --time --reps "$reps" 2>&1 | grep -E "sparsity [0-9]" | sed "s|^|$spec dense |"
    "$bench" --one "$shape,-1e-30" --time --reps "$reps" 2>&1 | grep -E "sparsity [0-9]" | sed "s|^|$spec vote |"
    "$bench" --one "$shape,-1e-30" --time --reps "$reps" --alt 2 2>&1 | grep -E "^alt medians" | sed "s|^|$spec alt |"
    if [ -n "$target" ]; then
      "$bench" --one "$shape" --time --reps "$reps" --target "$target" 2>&1 | grep -E "sparsity [0-9]" |
        sed "s|^|$spec target |"
    fi
  done
done | tee "$log"
rm -rf "$inputs"
python3 - "$log" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) < 3:
        continue
    spec, what = f[0], f[1]
    if what == "alt":
        a = re.search(r"time ([\d.]+), cycles ([\d.]+)", line)
        if a:
            rows.setdefault(spec, {}).setdefault("alt", []).append((float(a.group(1)), float(a.group(2))))
        continue
    m = re.search(r"([\d.]+) ms", line)
    if not m:
        continue
    sp = re.search(r"sparsity ([\d.]+)", line)
    rows.setdefault(spec, {}).setdefault(what, []).append((float(m.group(1)), sp.group(1) if sp else ""))
print("\n== bars: medians over the rounds (ms); ours against cuDNN (>1: faster); vote-only overhead")
for spec, w in rows.items():
    med = {k: statistics.median(ms for ms, _ in v) for k, v in w.items() if k != "alt"}
    cells = [f"{k} {med[k]:.4g}" for k in ("cudnn", "dense", "vote", "target") if k in med]
    if "cudnn" in med and "dense" in med:
        cells.append(f"dense vs cuDNN {med['cudnn'] / med['dense']:.3f}x")
    if "dense" in med and "vote" in med:
        cells.append(f"vote-only {100 * (med['vote'] / med['dense'] - 1):+.1f} %")
    if w.get("alt"):
        t = statistics.median(x for x, _ in w["alt"])
        cyc = statistics.median(y for _, y in w["alt"])
        cells.append(f"vote-only in one process {100 * (t - 1):+.1f} % (cycles {100 * (cyc - 1):+.1f} %)")
    if "cudnn" in med and "target" in med:
        cells.append(f"target (sparsity {w['target'][0][1]}) vs cuDNN {med['cudnn'] / med['target']:.3f}x")
    for k in ("dense", "target"):
        per_round = [c / o for (c, _), (o, _) in zip(w.get("cudnn", []), w.get(k, []))]
        if per_round:
            cells.append(f"{k} vs cuDNN per round " + " ".join(f"{x:.3f}" for x in per_round))
    print(f"{spec} | " + " | ".join(cells))
PY
rm -f "$log"
