#!/usr/bin/env bash
# On the device, after carrying .devbuild/ with branch builds packed by scripts/devbuild-branch.sh:
# unpacks .devbuild/NAME.tar.gz (all of them, or those named in BRANCHES="NAME NAME"), runs each
# build's CUDA tests (gtest FILTER, TEST_TIMEOUT s each, default 300; logs in
# $OUT/tests_NAME.log), then times the builds whose tests passed against this checkout's
# (.devbuild/bench) with scripts/ab-bench.sh on the given cases. A build whose tests failed or timed
# out is not timed. Each timed run stops after AB_TIMEOUT s (default 120; ab-bench.sh).
#   [BRANCHES="a b"] scripts/branch-check.sh prefill|decode ROUNDS FILTER -- CASE [CASE ...]
# e.g. BRANCHES=pv scripts/branch-check.sh prefill 2 'CudaPrefill.*' -- "128,32768,1,170.213 --time --reps 30"
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 5 ] && [ "$4" = "--" ] || { sed -n 2,9p "$0"; exit 2; }
kind=$1 rounds=$2 filter=$3
shift 4
OUT=${OUT:-/tmp/blasst-out}
mkdir -p "$OUT"
export AB_TIMEOUT=${AB_TIMEOUT:-120}
builds=("main=.devbuild/bench")
for f in .devbuild/*.tar.gz; do
  [ -e "$f" ] || continue
  name=$(basename "$f" .tar.gz)
  if [ -n "${BRANCHES:-}" ] && [[ " $BRANCHES " != *" $name "* ]]; then continue; fi
  tar xzf "$f" -C .devbuild
  echo "== $name: $(cat ".devbuild/$name/COMMIT")"
  timeout -k 5 "${TEST_TIMEOUT:-300}" ".devbuild/$name/blasst_cuda_tests" --gtest_filter="$filter" \
    > "$OUT/tests_$name.log" 2>&1
  rc=$?
  echo "tests exit $rc ($(grep -cE '^\[       OK' "$OUT/tests_$name.log") passed)"
  grep -E "^\[  FAILED|Failure" "$OUT/tests_$name.log" | head -5
  if [ "$rc" -ne 0 ]; then
    echo "$name: not timed (tests $([ "$rc" -eq 124 ] && echo "timed out" || echo "failed"))"
    continue
  fi
  builds+=("$name=.devbuild/$name")
done
scripts/ab-bench.sh "$kind" "$rounds" "${builds[@]}" -- "$@"
