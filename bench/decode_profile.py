"""One decode case of bench/decode_bar_inprocess.py (its inputs, its cases) under a profiler.

  ncu --profile-from-start off ... python3 bench/decode_profile.py --shape HQ,HKV,BATCH,LEN
      --case cudnn|dense|SPARSITY

Builds the shape's cases as the in-process bar script does (cuDNN, our dense, our skip at the
given tile sparsity), runs every case once, then the chosen one once more between
cudaProfilerStart and cudaProfilerStop, so that a profiler started with its collection off
(ncu --profile-from-start off) sees that step's kernels alone. scripts/gpu-check.sh
decode-profile runs it under ncu for each case and sums the kernels (scripts/ncu_kernels.py).
No timing here: under ncu a step's wall time is the profiler's (its CUDA-graph replays ran 3x
slow at MQA batch 8, session 28); the bars' times come from decode_bar_inprocess.py."""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from decode_bar_inprocess import shape_cases  # noqa: E402

import blasst  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", required=True, help="HQ,HKV,BATCH,LEN")
    ap.add_argument("--case", required=True, help="cudnn, dense, or a target tile sparsity (0.7)")
    args = ap.parse_args()
    if not blasst.with_cuda:
        sys.exit("this blasst build has no CUDA backend")
    hq, hkv, batch, n = (int(x) for x in args.shape.split(","))
    targets = [] if args.case in ("cudnn", "dense") else [float(args.case)]
    cases, kv_bytes, _, _, _ = shape_cases(hq, hkv, batch, n, targets)
    name, step = {"cudnn": cases[0], "dense": cases[1]}.get(args.case, cases[-1])
    for _, fn in cases:
        fn()
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    step()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()
    print(f"{args.shape} {name}: one step profiled ({kv_bytes / 1e9:.3f} GB of dense K + V)", flush=True)


if __name__ == "__main__":
    main()
