#!/usr/bin/env bash
# A/B timing on the device: runs one benchmark binary of several builds on the same single cases,
# builds interleaved (A B C A B C ...) for ROUNDS rounds, so that clocks and temperature drift
# alike for all of them. Prints each result line prefixed with its build's name.
#   scripts/ab-bench.sh prefill|decode ROUNDS NAME=DIR[@FLAGS] [NAME=DIR[@FLAGS] ...] -- CASE [CASE ...]
# DIR holds blasst_cuda_<kind>_bench (.devbuild/bench for this checkout, .devbuild/NAME from
# scripts/devbuild-branch.sh); FLAGS, if given, go after every case of that build (so one binary
# can run as several variants, e.g. "bk176=.devbuild/bench@--block-k 176"); each CASE is the
# bench's --one argument plus any flags, quoted, e.g. "128,32768,1,170.213 --time --reps 30"
# (prefill) or "8,1,8,32768" (decode). Ends with a summary: each case's median time per build and
# its speed relative to the first build (>1: faster); for prefill cases with --alt R (the case and
# dense in turn in one process), also each build's median case / dense in time and cycles, which
# compare builds whose dense kernels are the same bytes, e.g. a vote kernel against main's. AB_DEADLINE=SECONDS starts no run after that
# many seconds and still prints the summary (a device call's time limit would kill it otherwise).
# AB_TIMEOUT=SECONDS stops any one run after that many seconds (a branch that may hang: the
# deadline cannot stop a run that never ends) and prints "NAME timed out" in its place.
set -uo pipefail
[ $# -ge 4 ] || { sed -n 2,10p "$0"; exit 2; }
kind=$1 rounds=$2
shift 2
builds=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do builds+=("$1"); shift; done
shift
log=$(mktemp)
start=$(date +%s)
for c in "$@"; do
  echo "== $c"
  for ((r = 0; r < rounds; ++r)); do
    for b in "${builds[@]}"; do
      if [ -n "${AB_DEADLINE:-}" ] && [ $(($(date +%s) - start)) -ge "$AB_DEADLINE" ]; then
        echo "== deadline of $AB_DEADLINE s reached: the summary covers the runs so far"
        break 3
      fi
      dir=${b#*=} flags=
      if [[ $dir == *@* ]]; then flags=${dir#*@} dir=${dir%%@*}; fi
      # shellcheck disable=SC2206  # the case string and the flags are the bench's arguments
      run=("$dir/blasst_cuda_${kind}_bench" --one $c $flags)
      [ -n "${AB_TIMEOUT:-}" ] && run=(timeout -k 5 "$AB_TIMEOUT" "${run[@]}")
      "${run[@]}" 2>&1 | grep -E "sparsity|dense|a=|rror" | sed "s|^|${b%%=*} |"
      [ "${PIPESTATUS[0]}" = 124 ] && echo "${b%%=*} timed out after $AB_TIMEOUT s"
    done
  done
done | tee "$log"
# Summary: the median time of each (case, policy, build) over the rounds, and its ratio to the first
# build's median for the same case and policy.
python3 - "$log" <<'PY'
import re, statistics, sys
pre = re.compile(r"^(\S+) d \d+ len \d+ causal \d a (\S+) \S+: sparsity ([\d.]+), ([\d.]+) ms")
dec = re.compile(r"^(\S+)\s+\d+\s+\d+\s+\d+\s+\d+\s+(\S+)\s+\d+\s+([\d.]+)\s+[\d.]+\s+([\d.]+)")
alt = re.compile(r"^(\S+) alt medians: .*time ([\d.]+), cycles ([\d.]+)")
case, rows, alts = None, {}, {}
for line in open(sys.argv[1]):
    if line.startswith("== "):
        case = line[3:].strip()
        continue
    a = alt.match(line)
    if a:  # prefill --alt: the case against dense in one process
        alts.setdefault(case, {}).setdefault(a.group(1), []).append((float(a.group(2)), float(a.group(3))))
        continue
    m = pre.match(line)
    if m:  # one line per run; builds of other key tiles reach a --target at other scale factors
        build, policy, sparsity, ms = m.group(1), "", f"a={m.group(2)}, {m.group(3)}", float(m.group(4))
    else:
        m = dec.match(line)
        if not m:
            continue
        build, policy, ms, sparsity = m.group(1), m.group(2), float(m.group(3)), m.group(4)
    rows.setdefault((case, policy), {}).setdefault(build, []).append((ms, sparsity))
print("\n== summary: median ms over the rounds (sparsity), ratio to the first build")
for (case, policy), builds in rows.items():
    first = None
    cells = []
    for build, runs in builds.items():
        med = statistics.median(ms for ms, _ in runs)
        first = first or med
        cells.append(f"{build} {med:.4g} ({runs[0][1]}) {first / med:.3f}x")
    print(f"{case} | {policy} | " + " | ".join(cells))
if alts:
    print("\n== --alt: case / dense in one process, medians over the rounds: time (cycles)")
    for case, builds in alts.items():
        cells = [f"{b} {statistics.median(t for t, _ in v):.4f} ({statistics.median(c for _, c in v):.4f})"
                 for b, v in builds.items()]
        print(f"{case} | " + " | ".join(cells))
PY
rm -f "$log"
