#!/usr/bin/env bash
# On the device, after carrying .devbuild/ with branch builds packed by scripts/devbuild-branch.sh:
# unpacks every .devbuild/NAME.tar.gz, runs each build's CUDA tests (gtest FILTER, 300 s each at
# most; logs in $OUT/tests_NAME.log), then times every build against this checkout's
# (.devbuild/bench) with scripts/ab-bench.sh on the given cases.
#   scripts/branch-check.sh prefill|decode ROUNDS FILTER -- CASE [CASE ...]
# e.g. scripts/branch-check.sh prefill 2 'CudaPrefill.*' -- "128,32768,1,170.213 --time --reps 30"
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 5 ] && [ "$4" = "--" ] || { sed -n 2,7p "$0"; exit 2; }
kind=$1 rounds=$2 filter=$3
shift 4
OUT=${OUT:-/tmp/blasst-out}
mkdir -p "$OUT"
builds=("main=.devbuild/bench")
for f in .devbuild/*.tar.gz; do
  [ -e "$f" ] || continue
  tar xzf "$f" -C .devbuild
  name=$(basename "$f" .tar.gz)
  echo "== $name: $(cat ".devbuild/$name/COMMIT")"
  timeout 300 ".devbuild/$name/blasst_cuda_tests" --gtest_filter="$filter" > "$OUT/tests_$name.log" 2>&1
  echo "tests exit $? ($(grep -cE '^\[       OK' "$OUT/tests_$name.log") passed)"
  grep -E "^\[  FAILED|Failure" "$OUT/tests_$name.log" | head -5
  builds+=("$name=.devbuild/$name")
done
scripts/ab-bench.sh "$kind" "$rounds" "${builds[@]}" -- "$@"
