#!/usr/bin/env bash
# The prefill vote's cost compared across builds, each read in one process: for every case and
# round, each build's `blasst_cuda_prefill_bench --one CASE --time --alt ALT` times the case and
# dense in turn (ABBA) on the same inputs and clocks; the builds run interleaved. Ends with, per
# case and build, the medians over the rounds of case / dense in time and in cycles (ms x median SM
# MHz). Builds whose dense kernels are the same bytes (a vote kernel of its own) compare by these
# ratios directly; a vote-only case is `D,LEN,CAUSAL,-1e-30`, a sparsity `D,LEN,CAUSAL --target S`.
#
#   scripts/alt-ab.sh ROUNDS NAME=DIR [NAME=DIR ...] -- CASE [CASE ...]
#   e.g. scripts/alt-ab.sh 2 main=.devbuild/bench b6=.devbuild/b6 -- "128,32768,0,-1e-30" "128,32768,1 --target 0.7"
# DIR holds blasst_cuda_prefill_bench. ALT (default 2) rounds of --alt per run, REPS (default 30)
# replays per timing, AB_TIMEOUT (default 120) seconds per run.
set -uo pipefail
[ $# -ge 4 ] || { sed -n 2,12p "$0"; exit 2; }
rounds=$1
shift
builds=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do builds+=("$1"); shift; done
[ $# -gt 0 ] && shift
[ ${#builds[@]} -gt 0 ] && [ $# -gt 0 ] || { echo "alt-ab.sh: builds and cases, separated by --" >&2; exit 2; }
log=$(mktemp)
for c in "$@"; do
  for ((r = 0; r < rounds; ++r)); do
    for b in "${builds[@]}"; do
      name=${b%%=*} dir=${b#*=}
      # shellcheck disable=SC2086  # CASE carries the bench's own flags
      line=$(timeout "${AB_TIMEOUT:-120}" "$dir/blasst_cuda_prefill_bench" --one $c --time --reps "${REPS:-30}" \
        --alt "${ALT:-2}" 2>&1 | grep -E "^alt medians")
      [ -n "$line" ] || line="alt medians: failed or timed out"
      echo "$c|$name|$line" | tee -a "$log"
    done
  done
done
python3 - "$log" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    case, name, rest = line.rstrip("\n").split("|", 2)
    m = re.search(r"time ([\d.]+), cycles ([\d.]+)", rest)
    rows.setdefault(case, {}).setdefault(name, []).append((float(m.group(1)), float(m.group(2))) if m else None)
print("\n== case / dense in one process: medians over the rounds (time, cycles)")
for case, builds in rows.items():
    cells = []
    for name, v in builds.items():
        ok = [x for x in v if x]
        if ok:
            cells.append(f"{name} {statistics.median(t for t, _ in ok):.4f} ({statistics.median(c for _, c in ok):.4f})")
        else:
            cells.append(f"{name} failed")
    print(f"{case} | " + " | ".join(cells))
PY
rm -f "$log"
