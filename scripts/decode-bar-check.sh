#!/usr/bin/env bash
# The decode bars of issue 3 with cuDNN and our kernel timed in turn, round after round, in one
# device call: each round times cuDNN on every shape (bench/sdpa_decode_peer.py), then our dense
# step and our step at a target tile sparsity on every shape (cuda_decode_bench --one --target,
# the planner's own plan), so that the board's drift between two long runs does not enter the
# ratios. Ends with the medians over the rounds, our speed against cuDNN and the TB/s of the
# dense K+V bytes.
#
#   scripts/decode-bar-check.sh ROUNDS BENCH_DIR TARGET SHAPE [SHAPE ...]
#     SHAPE: HQ,HKV,BATCH,LEN as the bench's --one
#   e.g. scripts/decode-bar-check.sh 3 .devbuild/bench 0.7 32,8,8,32768 32,8,64,131072
#
# Both sides read ROTATE copies of the cache in turn (default 2: no step finds the last one's lines
# in L2, as in a server). DISTINCT=K gives our batch K distinct generated sequences (the bench's
# --distinct; default 1, one sequence copied through the batch, which favours the skip: a
# server's batch is distinct, docs/DECODE.md). cuDNN's dense time does not depend on it.
#
# bench/decode_bar_inprocess.py (scripts/gpu-check.sh bars) times cuDNN and ours in turn in one
# process instead: the reading the bars are judged by since session 27 (PERF.md), as the first
# timing of a case in a process of its own can run a few per cent off its steady speed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
[ $# -ge 4 ] || { sed -n 2,13p "$0"; exit 2; }
rounds=$1 bench=$2/blasst_cuda_decode_bench target=$3
shift 3
rotate=${ROTATE:-2} distinct=${DISTINCT:-1}
shapes=$(IFS=';'; echo "$*")
log=$(mktemp)
for ((r = 0; r < rounds; ++r)); do
  # A peer that could not run says why (on lines starting with #), so no ratio goes missing silently.
  python3 bench/sdpa_decode_peer.py --rotate "$rotate" --shapes "$shapes" 2>&1 |
    awk '/ cudnn /{print $1 "," $2 "," $3 "," $4, "cudnn", $7; next} /skipped|not available|rror/{print "# " $0}'
  for s in "$@"; do
    "$bench" --one "$s" --rotate "$rotate" --distinct "$distinct" --target "$target" 2>&1 | grep -E " dense | a=" |
      awk -v s="$s" '{p = ($5 == "dense") ? "dense" : "skip"; print s, p, $7, $9}'
  done
done | tee "$log"
python3 - "$log" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) < 3 or f[0] == "#":
        continue
    rows.setdefault((f[0], f[1]), []).append((float(f[2]), f[3] if len(f) > 3 else ""))
print("\n== medians: shape | cuDNN ms | ours dense ms (TB/s), vs cuDNN | ours at the target ms (sparsity), vs cuDNN, vs our dense")
for shape in dict.fromkeys(k[0] for k in rows):
    hq, hkv, b, n = (int(x) for x in shape.split(","))
    med = lambda p: statistics.median(v for v, _ in rows[(shape, p)]) if (shape, p) in rows else float("nan")
    c, d, s = med("cudnn"), med("dense"), med("skip")
    sp = rows.get((shape, "skip"), [(0, "?")])[-1][1]
    tb = 2 * b * hkv * n * 128 * 2 / (d * 1e-3) / 1e12
    print(f"{shape} | {c:.4f} | {d:.4f} ({tb:.2f}), {c / d:.3f}x | {s:.4f} ({sp}), {c / s:.3f}x, {d / s:.3f}x")
PY
rm -f "$log"
