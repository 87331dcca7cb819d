#!/usr/bin/env bash
# A/B timing on the device: runs one benchmark binary of several builds on the same single cases,
# builds interleaved (A B C A B C ...) for ROUNDS rounds, so that clocks and temperature drift
# alike for all of them. Prints each result line prefixed with its build's name.
#   scripts/ab-bench.sh prefill|decode ROUNDS NAME=DIR[@FLAGS] [NAME=DIR[@FLAGS] ...] -- CASE [CASE ...]
# DIR holds blasst_cuda_<kind>_bench (.devbuild/bench for this checkout, .devbuild/NAME from
# scripts/devbuild-branch.sh); FLAGS, if given, go after every case of that build (so one binary
# can run as several variants, e.g. "bk176=.devbuild/bench@--block-k 176"); each CASE is the
# bench's --one argument plus any flags, quoted, e.g. "128,32768,1,170.213 --time --reps 30"
# (prefill) or "8,1,8,32768" (decode).
set -uo pipefail
[ $# -ge 4 ] || { sed -n 2,10p "$0"; exit 2; }
kind=$1 rounds=$2
shift 2
builds=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do builds+=("$1"); shift; done
shift
for c in "$@"; do
  echo "== $c"
  for ((r = 0; r < rounds; ++r)); do
    for b in "${builds[@]}"; do
      dir=${b#*=} flags=
      if [[ $dir == *@* ]]; then flags=${dir#*@} dir=${dir%%@*}; fi
      # shellcheck disable=SC2086  # the case string and the flags are the bench's arguments
      "$dir/blasst_cuda_${kind}_bench" --one $c $flags 2>&1 | grep -E "sparsity|dense|a=|rror" | sed "s|^|${b%%=*} |"
    done
  done
done
