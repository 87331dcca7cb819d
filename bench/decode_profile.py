"""One decode case of bench/decode_bar_inprocess.py (its inputs, its cases) under a profiler.

  ncu --profile-from-start off ... python3 bench/decode_profile.py --shape HQ,HKV,BATCH,LEN
      --case cudnn|dense|SPARSITY

Builds the shape's cases as the in-process bar script does (cuDNN, our dense, our skip at the
given tile sparsity), runs every case once, times the chosen one as the bars are (median of
CUDA-graph replays), prints that, then runs that one step once more between
cudaProfilerStart and cudaProfilerStop, so that a profiler started with its collection off
(ncu --profile-from-start off) sees that step's kernels alone. scripts/gpu-check.sh
decode-profile runs it under ncu for each case and sums the kernels (scripts/ncu_kernels.py):
the step's time in the graph less the kernels' time is what the launches between them cost."""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from decode_bar_inprocess import shape_cases  # noqa: E402
from peer_timing import timed  # noqa: E402

import blasst  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", required=True, help="HQ,HKV,BATCH,LEN")
    ap.add_argument("--case", required=True, help="cudnn, dense, or a target tile sparsity (0.7)")
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    if not blasst.with_cuda:
        sys.exit("this blasst build has no CUDA backend")
    hq, hkv, batch, n = (int(x) for x in args.shape.split(","))
    targets = [] if args.case in ("cudnn", "dense") else [float(args.case)]
    cases, kv_bytes, _, _, _ = shape_cases(hq, hkv, batch, n, targets)
    name, step = {"cudnn": cases[0], "dense": cases[1]}.get(args.case, cases[-1])
    for _, fn in cases:
        fn()
    ms = timed(step, reps=args.reps, inner=20, warm=0.2)
    print(f"{args.shape} {name}: {ms:.4f} ms a step in a graph, {kv_bytes / (ms * 1e-3) / 1e12:.3f} TB/s "
          f"of the dense K + V bytes", flush=True)
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    step()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()


if __name__ == "__main__":
    main()
