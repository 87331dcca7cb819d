#!/usr/bin/env bash
# The CUDA benchmarks on a real model's captured tensors (scripts/capture_bench_inputs.py), each
# beside its PyTorch SDPA peers in the same device call: ours first (dense, vote-only, and the
# scale factors bisected to 50 / 70 / 90 % tile sparsity), then cuDNN and flash on the same
# tensors. Logs go to $OUT (default /tmp/blasst-out).
#
#   scripts/real-bench.sh decode DIR [BATCHES]   # DIR/{q,k,v}.npy of capture's decode/; BATCHES e.g. 8,64
#   scripts/real-bench.sh prefill DIR            # DIR/{q,k,v}.npy of capture's prefill/
# Binaries: BIN (default .devbuild/bench, from scripts/devbuild.sh). ROTATE copies of a decode cache
# in turn (default 2), as decode-bar-check.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/blasst-out}
BIN=${BIN:-.devbuild/bench}
ROTATE=${ROTATE:-2}
mkdir -p "$OUT"
mode=${1:?decode or prefill}
dir=${2:?a folder of q.npy, k.npy, v.npy}
name=$(basename "$(dirname "$dir")")-$(basename "$dir")
log="$OUT/real-$name.log"
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.draw,power.limit --format=csv,noheader
  case $mode in
    decode)
      batches=${3:-1,8,64}
      echo "== ours: $BIN/blasst_cuda_decode_bench --inputs $dir --batches $batches --rotate $ROTATE"
      timeout 400 "$BIN/blasst_cuda_decode_bench" --inputs "$dir" --batches "$batches" --rotate "$ROTATE"
      echo "== peers"
      timeout 300 python3 bench/sdpa_decode_peer.py --real "$dir" --batches "$batches" --rotate "$ROTATE"
      ;;
    prefill)
      echo "== ours: $BIN/blasst_cuda_prefill_bench --inputs $dir"
      timeout 400 "$BIN/blasst_cuda_prefill_bench" --inputs "$dir"
      echo "== peers"
      timeout 300 python3 bench/sdpa_prefill_peer.py --real "$dir"
      ;;
    *) echo "mode: decode or prefill" >&2; exit 2 ;;
  esac
  date -u
} 2>&1 | tee "$log"
