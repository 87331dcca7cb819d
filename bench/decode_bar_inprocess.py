"""The decode bars of issue 3 with cuDNN and blasst timed in one process, in turn.

scripts/decode-bar-check.sh times cuDNN in one process and each of our steps in a process of its
own; here, per shape, PyTorch SDPA on cuDNN, blasst dense and blasst at each target tile sparsity
run in one process on the same generated sequence, each timed as the SDPA peers are
(bench/peer_timing.py: median of CUDA-graph replays of 20 steps after --warm seconds), in an order
that rotates and reverses every round.

  python3 bench/decode_bar_inprocess.py --shapes HQ,HKV,BATCH,LEN[;...] [--target S ...]
      [--rounds R] [--reps N] [--warm S] [--rotate-below GB]

Inputs are the decode bench's (cuda_decode_bench --one, its default --distinct 1): sequence 1 of the
library's generator (blasst.synthetic_qkv(1, LEN, HQ, HKV, 128, seed=1): sinks, locality, needles)
in every sequence of the batch, each in its own pages of 64 slots, shuffled, in the HND layout
([pages, Hkv, 64, d], read through a strided view). Our skip is the bench's: the planner's splits,
forward visits, max seeding, the scale factor of the target found by bisection on log a over
[1e-3, LEN] with the kernel's counters. cuDNN reads [BATCH, Hkv, LEN, d] copies of the same keys
and values with enable_gqa (the decode peers' layout). Where one copy of K + V is under
--rotate-below GB (default 16) both sides take two copies in turn, so that no step finds the last
one's lines in L2; above it a copy is hundreds of times L2 (and two would not fit beside cuDNN's).
Needs the blasst package with its CUDA backend on PYTHONPATH. Prints each round, then per shape
the medians, TB/s of the dense K + V bytes and cuDNN / case per round and in the median."""
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

PAGE, D = 64, 128


def shape_cases(hq, hkv, batch, n, targets, rotate_below=16.0):
    """The shape's inputs and cases. Returns (cases, K + V bytes of a dense step, copies of the
    cache, the cuDNN step, our dense step); cases are (name, step) for cuDNN, our dense and our
    skip at each target (its scale factor bisected here), a step being a call that runs one decode
    step on the next copy."""
    q1, k1, v1 = (torch.from_numpy(x).to("cuda", torch.bfloat16) for x in blasst.synthetic_qkv(1, n, hq, hkv, D))
    kv_bytes = batch * n * hkv * D * 2 * 2
    rot = 2 if kv_bytes < rotate_below * 1e9 else 1
    pages = (n + PAGE - 1) // PAGE
    bp = batch * pages

    def seq_pages(x):  # [n, Hkv, d] -> [pages, Hkv, 64, d], zero past the end
        p = torch.zeros(pages * PAGE, hkv, D, device="cuda", dtype=torch.bfloat16)
        p[:n] = x
        return p.view(pages, PAGE, hkv, D).permute(0, 2, 1, 3).contiguous()

    perm = torch.randperm(bp, generator=torch.Generator().manual_seed(7)).to("cuda")
    caches = []
    for x in (k1, v1):
        sp = seq_pages(x)
        c = torch.empty(rot * bp, hkv, PAGE, D, device="cuda", dtype=torch.bfloat16)
        for r in range(rot):
            for b in range(batch):
                c[r * bp + perm[b * pages:(b + 1) * pages]] = sp
        caches.append(c.permute(0, 2, 1, 3))  # [pages, 64, Hkv, d] view of the HND layout
        del sp
    kc, vc = caches
    tables = [(perm + r * bp).view(batch, pages).to(torch.int32).contiguous() for r in range(rot)]
    lens = torch.full((batch,), n, dtype=torch.int32, device="cuda")
    q = q1.expand(batch, hq, D).contiguous()

    def plan_for(**policy):
        return blasst.DecodePlan(q, kc, vc, tables[0], lens, max_seq_len=n, **policy)

    def ours(**policy):
        plan = plan_for(**policy)
        calls = [0]

        def step():
            i = calls[0] % rot
            calls[0] += 1
            return plan.run(q, kc, vc, tables[i], lens)
        return plan, step

    def sparsity_at(a):
        plan = plan_for(scale_factor=a, max_seed=True, collect_stats=True)
        plan.run(q, kc, vc, tables[0], lens)
        return plan.stats(lens).sparsity

    # cuDNN: [B, Hkv, n, d] copies of the same keys and values.
    qs = q.view(batch, hq, 1, D)
    kd = [k1.transpose(0, 1).unsqueeze(0).expand(batch, -1, -1, -1).contiguous() for _ in range(rot)]
    vd = [v1.transpose(0, 1).unsqueeze(0).expand(batch, -1, -1, -1).contiguous() for _ in range(rot)]
    ccalls = [0]

    def cudnn():
        i = ccalls[0] % rot
        ccalls[0] += 1
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            return F.scaled_dot_product_attention(qs, kd[i], vd[i], enable_gqa=hq != hkv)

    dense_plan, dense_step = ours()
    cases = [("cudnn", cudnn), (f"dense ({dense_plan.splits} splits)", dense_step)]
    for t in targets:
        a = scale_factor_for_sparsity(t, 1e-3, float(n), sparsity_at)
        s = sparsity_at(a)
        plan, step = ours(scale_factor=a, max_seed=True)
        cases.append((f"a={a:.5g} ({s:.3f}, {plan.splits} splits)", step))
    return cases, kv_bytes, rot, cudnn, dense_step


def one_shape(hq, hkv, batch, n, args):
    cases, kv_bytes, rot, cudnn, dense_step = shape_cases(hq, hkv, batch, n, args.target, args.rotate_below)
    ref = cudnn()[:, :, 0].float()
    err = ((dense_step().float() - ref).norm() / ref.norm()).item()
    print(f"{hq}/{hkv} batch {batch} len {n}: K+V {kv_bytes / 1e9:.2f} GB, {rot} copies; "
          f"rel. L2 error of our dense O against cuDNN's {err:.2e}", flush=True)
    ms = in_turn(cases, args.rounds, lambda fn: timed(fn, reps=args.reps, inner=20, warm=args.warm))
    for name, _ in cases:
        per = [c / x for c, x in zip(ms["cudnn"], ms[name])]
        m = median(ms[name])
        print(f"{hq},{hkv},{batch},{n} {name:32s} {m:8.4f} ms {kv_bytes / (m * 1e-3) / 1e12:6.3f} TB/s | vs cuDNN "
              f"{median(per):.3f}x (" + " ".join(f"{x:.3f}" for x in per) + ")", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", required=True, help="HQ,HKV,BATCH,LEN[;...]")
    ap.add_argument("--target", type=float, action="append", default=[])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--warm", type=float, default=0.2)
    ap.add_argument("--rotate-below", type=float, default=16.0)
    args = ap.parse_args()
    if not blasst.with_cuda:
        sys.exit("this blasst build has no CUDA backend")
    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    for one in args.shapes.split(";"):
        if one:
            one_shape(*(int(x) for x in one.split(",")), args)
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
