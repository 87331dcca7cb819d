"""The prefill bars of issue 4 with cuDNN and blasst timed in one process, in turn.

scripts/bar-check.sh times each side in a process of its own (cuDNN from Python, ours from the C++
bench), a few seconds apart; on an H200 at its power cap the first timing of a process can sit 5 %
off the steady one (PERF.md, session 27), which moves the 70 % bar by as much. Here every case runs
on the same tensors in one process: PyTorch SDPA on cuDNN, blasst dense, blasst vote-only (a
threshold that never skips) and blasst at each scale factor or target sparsity, each timed as the
SDPA peers are (bench/peer_timing.py: median of CUDA-graph replays after --warm seconds), in an
order that rotates and reverses every round, so that no case always follows another.

  python3 bench/prefill_bar_inprocess.py --one D,LEN,CAUSAL [--inputs DIR] [--target S ...]
      [--a A ...] [--rounds R] [--reps N] [--warm S] [--flash]

Inputs: the prefill bench's (blasst.synthetic_qkv(LEN, LEN, 32, 8, D), seed 1: sinks, locality and
retrieval spikes), or with --inputs DIR the tensors of `blasst_cuda_prefill_bench --dump DIR`
(DIR/dD_nLEN/{q,k,v}.npy, [S, H, d]; the same generator, or captured ones in that layout). --target S finds
the scale factor of tile sparsity S by bisection on log a (the bench's 14 steps on [1, LEN], with
the kernel's own counters). --flash adds SDPA's flash backend as a case. Needs the blasst
package with its CUDA backend on PYTHONPATH.
Prints each round, then the medians and the ratios: cuDNN / ours (>1: ours faster) per round and
their median, and each case against our dense."""
import argparse
import os
import sys
from statistics import median

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_timing import in_turn, scale_factor_for_sparsity, timed  # noqa: E402

import blasst  # noqa: E402


def sparsity_at(q, k, v, causal, a):
    return blasst.prefill(q, k, v, causal=causal, scale_factor=a, return_stats=True)[1].sparsity


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", required=True, help="D,LEN,CAUSAL (Hq/Hkv 32/8, bf16, one sequence)")
    ap.add_argument("--inputs", default="")
    ap.add_argument("--target", type=float, action="append", default=[])
    ap.add_argument("--a", type=float, action="append", default=[])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--warm", type=float, default=0.5)
    ap.add_argument("--flash", action="store_true", help="also time SDPA's flash backend")
    args = ap.parse_args()
    d, n, causal = (int(x) for x in args.one.split(","))
    causal = bool(causal)
    if not blasst.with_cuda:
        sys.exit("this blasst build has no CUDA backend")
    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    if args.inputs:
        import numpy as np
        arrays = [np.load(f"{args.inputs}/d{d}_n{n}/{name}.npy") for name in ("q", "k", "v")]
    else:
        arrays = blasst.synthetic_qkv(n, n, 32, 8, d)
    # blasst takes [S, H, d], SDPA [1, H, S, d] (the same data, one copy each).
    q, k, v = (torch.from_numpy(x).to("cuda", torch.bfloat16) for x in arrays)
    arrays = None
    qkv = tuple(x.transpose(0, 1).unsqueeze(0).contiguous() for x in (q, k, v))
    flops = 4.0 * n * n * d * 32 * (0.5 if causal else 1.0)

    def sdpa(backend):
        def run():
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(*qkv, is_causal=causal, enable_gqa=True)
        return run

    cudnn = sdpa(SDPBackend.CUDNN_ATTENTION)

    cases = [("cudnn", cudnn),
             ("dense", lambda: blasst.prefill(q, k, v, causal=causal)),
             ("vote-only", lambda: blasst.prefill(q, k, v, causal=causal, threshold=1e-30))]
    if args.flash:
        cases.insert(1, ("flash", sdpa(SDPBackend.FLASH_ATTENTION)))
    factors = list(args.a) + [scale_factor_for_sparsity(t, 1.0, float(n), lambda a: sparsity_at(q, k, v, causal, a))
                              for t in args.target]
    for a in factors:
        s = sparsity_at(q, k, v, causal, a)
        print(f"a {a:.6g}: tile sparsity {s:.4f}")
        cases.append((f"a={a:.6g} ({s:.3f})", lambda a=a: blasst.prefill(q, k, v, causal=causal, scale_factor=a)))
    # Our dense against cuDNN's output, as a check that both ran the same problem.
    ref = cudnn()[0].transpose(0, 1).float()
    err = ((blasst.prefill(q, k, v, causal=causal).float() - ref).norm() / ref.norm()).item()
    print(f"d {d} len {n} causal {int(causal)}: rel. L2 error of our dense O against cuDNN's {err:.2e}")
    ms = in_turn(cases, args.rounds, lambda fn: timed(fn, reps=args.reps, inner=3, warm=args.warm))
    print(f"== d {d} len {n} causal {int(causal)}, {args.rounds} rounds: median ms, TFLOP/s, "
          "cuDNN / case (median of the rounds' ratios; per round), case / our dense")
    for name, _ in cases:
        per = [c / x for c, x in zip(ms["cudnn"], ms[name])]
        own = median([x / dd for x, dd in zip(ms[name], ms["dense"])])
        print(f"{name:22s} {median(ms[name]):9.4f} ms {flops / (median(ms[name]) * 1e-3) / 1e12:7.1f} TFLOP/s | "
              f"vs cuDNN {median(per):.3f}x (" + " ".join(f"{x:.3f}" for x in per) + f") | / dense {own:.4f}")


if __name__ == "__main__":
    main()
