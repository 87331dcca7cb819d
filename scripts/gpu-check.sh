#!/usr/bin/env bash
# One device call: GPU facts, the CUDA tests, compute-sanitizer on a subset, the SASS check, and the
# decode benchmark with its PyTorch SDPA peers. Logs and tables go to $OUT (default /tmp/blasst-out).
#
# Binaries come from .devbuild/ when they were built here beforehand and carried (see
# scripts/devbuild.sh); if they do not run there, everything is built on the device, with
# GoogleTest from .deps/googletest when the device has none.
#
#   scripts/gpu-check.sh [tests] [sanitize | memcheck | racecheck] [sass] [bench] [bench-quick] [profile] [decode-bytes]
#                        [peers] [peers-quick] [python] [prefill-bench] [prefill-bench-quick] [prefill-profile] [bars]
#                        [decode-profile]
# (no argument: all of tests sanitize sass bench peers python). sanitize is memcheck and racecheck
# (together ~7 min on the H200: one device call may not hold them beside other steps).
# bars: the bars of issues 3 and 4 with cuDNN and ours timed in turn in one process (~6 min;
# builds the Python extension).
# bench and peers read ROTATE copies of the cache in turn (default 2; 1: the same cache every step).
# decode-bytes: ncu's DRAM bytes, time and per-SM busy cycles of one dense and one 70 % skip step
# (DECODE_BYTES_SHAPES, default 32/8 batch 8 and 64 at 32K), to show where the skip's time goes.
# decode-profile: ncu over one step of cuDNN, our dense and our 70 % skip on the bar scripts' inputs
# (DECODE_PROFILE_SHAPES, default the shapes whose bars are missed).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/blasst-out}
# The decode benchmark and its peers take ROTATE copies of the cache in turn (--rotate), so no step
# finds the previous one's lines in L2, as in a server where other layers run in between.
ROTATE=${ROTATE:-2}
mkdir -p "$OUT"
steps=("$@")
# At most 8 files come back from a device call: keep $OUT to the logs that matter.
[ ${#steps[@]} -eq 0 ] && steps=(tests sanitize sass bench peers python)
want() { local s; for s in "${steps[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.draw,temperature.gpu --format=csv
  nvcc --version | tail -1
} > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

B=.devbuild
# Only steps that run our binaries need them (python builds its own extension, peers run PyTorch).
needs_bins=false
for s in "${steps[@]}"; do
  case $s in python | peers | peers-quick | bars | decode-profile) ;; *) needs_bins=true ;; esac
done
if $needs_bins && ! "$B/tests/blasst_cuda_tests" --gtest_list_tests >/dev/null 2>&1; then
  echo "carried binaries do not run here; building on the device"
  B=/tmp/blasst-build
  gt=()
  [ -f /usr/include/gtest/gtest.h ] || gt=(-DBLASST_GTEST_SOURCE="$PWD/.deps/googletest")
  cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DBLASST_BUILD_BENCH=OFF -DBLASST_CPU_ARCH=native "${gt[@]}" \
    > "$OUT/build.log" 2>&1 &&
    cmake --build "$B" -j"$(nproc)" --target blasst_cuda_tests blasst_cuda_decode_bench blasst_cuda_prefill_bench \
      >> "$OUT/build.log" 2>&1 ||
    { tail -30 "$OUT/build.log"; exit 1; }
  [ -f "$B/tests/blasst_cuda_tests" ] || { echo "build produced no test binary"; exit 1; }
  mkdir -p "$B/bench"
  [ -f "$B/bench/blasst_cuda_decode_bench" ] || cmake --build "$B" --target blasst_cuda_decode_bench >> "$OUT/build.log" 2>&1
fi

status=0
if want tests; then
  echo "== CUDA tests"
  # A hang (a kernel waiting on a barrier nobody arrives at) must not eat the whole device call.
  timeout 420 "$B/tests/blasst_cuda_tests" --gtest_output=xml:"$OUT/cuda_tests.xml" > "$OUT/cuda_tests.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || { status=1; echo "CUDA tests failed (exit $rc; 124: timed out)"; }
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[ splits|tests? ran|Failure|Expected|Which is|of [0-9]+ tiles|seed " "$OUT/cuda_tests.log" | head -60
fi
if want sanitize || want memcheck || want racecheck; then
  echo "== compute-sanitizer"
  tools=()
  { want sanitize || want memcheck; } && tools+=(memcheck)
  { want sanitize || want racecheck; } && tools+=(racecheck)
  for tool in "${tools[@]}"; do
    compute-sanitizer --tool "$tool" --error-exitcode 9 "$B/tests/blasst_cuda_tests" \
      --gtest_filter='CudaDecode.ThresholdZero*:CudaDecode.ReplayedMask*:CudaDecode.PageSizes*:CudaDecode.LargeVoteGroups*:CudaPrefill.ThresholdZero*:CudaPrefill.DenseMatchesFloat64:CudaPrefill.KeyTilesOf128AtHeadDim128' \
      > "$OUT/sanitizer_$tool.log" 2>&1
    echo "$tool: exit $? ($(grep -c -E 'ERROR SUMMARY: 0 errors|RACECHECK SUMMARY: 0 hazards' "$OUT/sanitizer_$tool.log") clean summaries)"
    grep -m3 -E "ERROR SUMMARY|RACECHECK SUMMARY|Invalid|Race|hazard" "$OUT/sanitizer_$tool.log"
  done
fi
if want sass; then
  echo "== SASS"
  lib=$(ls "$B"/libblasst.a 2>/dev/null || true)
  if [ -n "$lib" ]; then
    cuobjdump --dump-sass "$lib" > /tmp/blasst.sass 2>/dev/null
    echo "HMMA: $(grep -c HMMA /tmp/blasst.sass)  HGMMA: $(grep -c HGMMA /tmp/blasst.sass)  LDL: $(grep -c 'LDL' /tmp/blasst.sass)  STL: $(grep -c 'STL' /tmp/blasst.sass)" | tee "$OUT/sass.txt"
    # Per kernel: HGMMA and local-memory (spill) instruction counts.
    awk '/Function :/{f=$3} /HGMMA/{h[f]++} /LDL|STL/{l[f]++} END{for (k in h) print "  " h[k] " HGMMA, " (l[k]+0) " LDL/STL: " k; for (k in l) if (!(k in h)) print "  0 HGMMA, " l[k] " LDL/STL: " k}' /tmp/blasst.sass | sort -k5 | tee -a "$OUT/sass.txt"
  fi
fi
if want bench || want bench-quick; then
  echo "== decode benchmark"
  q=(); want bench-quick && q=(--quick)
  for layout in hnd nhd; do
    "$B/bench/blasst_cuda_decode_bench" "${q[@]}" --layout $layout --rotate "$ROTATE" --csv "$OUT/decode_bench_$layout.csv" 2>&1 |
      tee "$OUT/decode_bench_$layout.log" | tail -80
    want bench-quick || break  # the full sweep runs the HND layout only
  done
fi
if want prefill-bench || want prefill-bench-quick; then
  echo "== prefill benchmark"
  q=(); want prefill-bench-quick && q=(--quick)
  # The peers run on our benchmark's generated inputs (dumped as .npy, up to ~5 GB) and on randn.
  inputs=/tmp/blasst-prefill-inputs
  rm -rf "$inputs"
  "$B/bench/blasst_cuda_prefill_bench" "${q[@]}" --dump "$inputs" --csv "$OUT/prefill_bench.csv" 2>&1 |
    tee "$OUT/prefill_bench.log" | tail -50
  python3 bench/sdpa_prefill_peer.py "${q[@]}" --inputs "$inputs" --csv "$OUT/sdpa_prefill.csv" 2>&1 |
    tee "$OUT/sdpa_prefill.log" | tail -40
  rm -rf "$inputs"
fi
# The Python extension, built here against this machine's Python and torch (once per call).
pyext_built=false
build_pyext() {
  $pyext_built && return 0
  if [ -f .devbuild/libblasst_pic.a ]; then  # scripts/devbuild.sh --pic: only the extension is compiled here
    { cmake -S scripts/pyext -B /tmp/blasst-py -DCMAKE_BUILD_TYPE=Release -DBLASST_REPO="$PWD" \
        -DBLASST_LIB="$PWD/.devbuild/libblasst_pic.a" &&
      cmake --build /tmp/blasst-py -j"$(nproc)"; } > "$OUT/python_build.log" 2>&1 ||
      { tail -20 "$OUT/python_build.log"; status=1; return 1; }
  else
    { cmake -S . -B /tmp/blasst-py -DCMAKE_BUILD_TYPE=Release -DBLASST_BUILD_TESTS=OFF -DBLASST_BUILD_BENCH=OFF &&
      cmake --build /tmp/blasst-py -j"$(nproc)" --target _C; } > "$OUT/python_build.log" 2>&1 ||
      { tail -20 "$OUT/python_build.log"; status=1; return 1; }
  fi
  pyext_built=true
}
if want python; then
  echo "== Python package (built here against this machine's Python and torch)"
  build_pyext
  PYTHONPATH=/tmp/blasst-py/python python3 -m pytest -q -p no:cacheprovider -rs tests/python_pkg 2>&1 |
    tee "$OUT/python_tests.log" | tail -15
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi
if want bars; then
  # Issues 3 and 4's bars with cuDNN and ours timed in turn in one process, on the benchmarks'
  # generated inputs (bench/prefill_bar_inprocess.py, bench/decode_bar_inprocess.py).
  echo "== The bars, cuDNN and ours in turn in one process"
  if build_pyext; then
    for spec in "128,32768,1 --target 0.5 --target 0.7 --target 0.9" "128,32768,0 --target 0.7" \
      "128,8192,1 --target 0.7" "128,8192,0" "128,131072,1 --reps 6" "128,131072,0 --reps 3"; do
      PYTHONPATH=/tmp/blasst-py/python timeout 300 python3 bench/prefill_bar_inprocess.py --one $spec --rounds 3 2>&1 ||
        echo "FAILED: prefill_bar_inprocess.py --one $spec"
    done | tee "$OUT/bars_prefill.log" | grep -E "^(d |cudnn|dense|vote|a=|FAILED)"
    PYTHONPATH=/tmp/blasst-py/python timeout 600 python3 bench/decode_bar_inprocess.py --target 0.7 --rounds 3 \
      --shapes "32,8,8,32768;32,8,8,131072;32,8,64,32768;32,8,64,131072;64,8,8,32768;64,8,8,131072;64,8,64,32768;64,8,64,131072;8,1,8,32768;8,1,8,131072;8,1,64,32768;8,1,64,131072" 2>&1 |
      tee "$OUT/bars_decode.log" | grep -v "^round"
    [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "FAILED: decode_bar_inprocess.py at 70 %"; status=1; }
    PYTHONPATH=/tmp/blasst-py/python timeout 120 python3 bench/decode_bar_inprocess.py --rounds 3 \
      --shapes "32,8,1,131072;64,8,1,131072;8,1,1,131072" 2>&1 | tee -a "$OUT/bars_decode.log" | grep -v "^round"
    [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "FAILED: decode_bar_inprocess.py at batch 1"; status=1; }
    grep -q "^FAILED" "$OUT/bars_prefill.log" && status=1
  fi
fi
# Stall samples per SASS instruction of one kernel launch: the top 30 (ncu source counters).
stall_table() {  # kernel-regex csv-out command...
  local rx=$1 csv=$2
  shift 2
  ncu --clock-control none -k "regex:$rx" --launch-skip 2 --launch-count 1 --section SourceCounters \
    --section WarpStateStats --page source --print-source sass --csv "$@" > "$csv" 2>/dev/null
  python3 - "$csv" <<'PY'
import csv, sys
rows = list(csv.reader(l for l in open(sys.argv[1]) if l.count(',') > 3))
# The profiled program's own output may precede ncu's table: start at its header.
rows = rows[next((i for i, r in enumerate(rows) if any(h.strip() == "Source" for h in r)), 0):]
head = rows[0]
def col(name):
    for i, h in enumerate(head):
        if h.strip().lower() == name.lower():
            return i
    return None
src, samp = col("Source"), col("Warp Stall Sampling (All Samples)")
if samp is None:
    print("columns:", head[:40]); sys.exit()
data = []
for i, r in enumerate(rows[1:]):
    try:
        data.append((float(r[samp] or 0), i, r[src].strip()))
    except (ValueError, IndexError):
        pass
tot = sum(d[0] for d in data) or 1
for v, i, s in sorted(data, reverse=True)[:30]:
    print(f"{100*v/tot:5.1f}%  #{i:<5d} {s[:110]}")
PY
}
if want profile; then
  echo "== ncu (decode, 32/8, batch 8, 32K)"
  ncu --clock-control none -k regex:decode_splitkv --launch-skip 2 --launch-count 1 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats \
    --section LaunchStats --section Occupancy \
    "$B/bench/blasst_cuda_decode_bench" --one 32,8,8,32768 > "$OUT/ncu_decode.txt" 2>&1
  grep -E "Duration|DRAM Throughput|Warp Cycles Per Issued|Issued Warp|Eligible Warps" "$OUT/ncu_decode.txt" | head -20
  stall_table decode_splitkv "$OUT/ncu_source.csv" "$B/bench/blasst_cuda_decode_bench" --one 32,8,8,32768
fi
# What scripts/ncu_kernels.py sums per launch.
NCU_STEP_METRICS=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,sm__cycles_active.avg,sm__cycles_active.max,sm__cycles_active.min,gpc__cycles_elapsed.max
if want decode-bytes; then
  echo "== ncu: DRAM bytes and SM balance of a dense and a 70 % decode step"
  for shape in ${DECODE_BYTES_SHAPES:-32,8,8,32768 32,8,64,32768}; do
    f="$OUT/ncu_bytes_${shape//,/_}.csv"
    BLASST_BENCH_PROFILE=1 ncu --clock-control none --profile-from-start off --csv --print-units base \
      --metrics "$NCU_STEP_METRICS" \
      "$B/bench/blasst_cuda_decode_bench" --one "$shape" --target 0.7 --warm 0 > "$f" 2>&1
    grep -E "dense|a=" "$f"
    python3 scripts/ncu_kernels.py "$f"
  done
fi
if want decode-profile; then
  # The missed decode bars' profile: ncu over one step of cuDNN, our dense and our 70 % skip, each
  # on the in-process bar script's inputs (bench/decode_profile.py).
  # ncu flushes L2 before each kernel (its default cache control), as the bars' rotated cache does.
  echo "== ncu: one decode step of cuDNN, our dense and our 70 % skip (kernels, DRAM bytes, SM balance)"
  if build_pyext; then
    for shape in ${DECODE_PROFILE_SHAPES:-32,8,8,32768 8,1,8,32768 8,1,8,131072 8,1,64,32768 8,1,1,131072}; do
      for c in cudnn dense 0.7; do
        f="$OUT/ncu_step_${shape//,/_}_$c.csv"
        PYTHONPATH=/tmp/blasst-py/python timeout 300 ncu --clock-control none --profile-from-start off --csv \
          --print-units base --metrics "$NCU_STEP_METRICS" \
          python3 bench/decode_profile.py --shape "$shape" --case $c > "$f" 2>&1
        grep -E " one step profiled" "$f" || { echo "FAILED: decode_profile.py --shape $shape --case $c"; tail -5 "$f"; status=1; }
        python3 scripts/ncu_kernels.py "$f"
      done
    done 2>&1 | tee "$OUT/decode_profile.log"
    grep -q "^FAILED" "$OUT/decode_profile.log" && status=1
  fi
fi
if want prefill-profile; then
  # PROFILE_ONE: head dim, length, causal[, scale factor] (default: d 128, 8K, non-causal, dense).
  one=${PROFILE_ONE:-128,8192,0}
  echo "== ncu (prefill $one)"
  ncu --clock-control none -k regex:prefill_wgmma --launch-skip 2 --launch-count 1 \
    --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats --section SchedulerStats \
    --section InstructionStats --section LaunchStats --section Occupancy \
    "$B/bench/blasst_cuda_prefill_bench" --one "$one" > "$OUT/ncu_prefill.txt" 2>&1
  grep -E "Duration|SM Frequency|Compute \(SM\) Throughput|Warp Cycles Per Issued|Issued Warp|Eligible Warps|No Eligible|Executed Ipc A|Registers Per" "$OUT/ncu_prefill.txt" | head -20
  stall_table prefill_wgmma "$OUT/ncu_prefill_source.csv" "$B/bench/blasst_cuda_prefill_bench" --one "$one"
fi
if want peers || want peers-quick; then
  echo "== SDPA peers"
  q=(); want peers-quick && q=(--quick)
  python3 bench/sdpa_decode_peer.py "${q[@]}" --rotate "$ROTATE" --csv "$OUT/sdpa_decode.csv" 2>&1 | tee "$OUT/sdpa_decode.log" | tail -60
fi
exit $status
