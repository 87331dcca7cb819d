"""PyTorch SDPA prefill peers (cuDNN and flash backends) on the shapes of cuda_prefill_bench:
one sequence, bf16, Hq/Hkv 32/8 (enable_gqa), causal and not. TFLOP/s counts 4 Sq Sk d Hq
(halved when causal) over the median of graph replays. Writes CSV to --csv and prints a table.

With --inputs DIR (written by `blasst_cuda_prefill_bench --dump DIR`) each shape runs on the same
generated Q, K, V as our benchmark (column inputs = "bench"), and cuDNN also on torch.randn ("randn"); at the
GPU's power limit the speed depends on the data, so the bar compares like with like.

With --real DIR (DIR/{q,k,v}.npy: q [S, Hq, d], k and v [S, Hkv, d], e.g. a real model's tensors from
scripts/capture_bench_inputs.py, as `blasst_cuda_prefill_bench --inputs DIR` reads them) it times
cuDNN and flash on those tensors alone, causal (--reps replays)."""
import argparse
import csv
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from peer_timing import timed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--csv", default="")
    ap.add_argument("--one", default="", help="D,LEN,CAUSAL: one shape only (--reps graph replays)")
    ap.add_argument("--inputs", default="", help="DIR of `blasst_cuda_prefill_bench --dump DIR`: "
                    "each shape also runs on our benchmark's inputs (DIR/d<D>_n<LEN>/{q,k,v}.npy)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--warm", type=float, default=0.5, help="seconds of replays before each timing")
    ap.add_argument("--backend", choices=["cudnn", "flash"], default="",
                    help="--one: this backend only (default both)")
    ap.add_argument("--bench-only", action="store_true",
                    help="--one with --inputs: only our benchmark's inputs, not randn")
    ap.add_argument("--real", default="", help="DIR with q.npy, k.npy, v.npy ([S, H, d]): that shape only, causal")
    args = ap.parse_args()
    if args.real:
        return real(args)
    if args.one:
        return one(args)
    shapes = [(128, 8192), (128, 32768), (128, 131072), (64, 32768), (256, 32768)]
    if args.quick:
        shapes = [(128, 8192), (64, 8192), (256, 8192)]
    hq, hkv = 32, 8
    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    rows = []
    for d, n in shapes:
        sets = [("randn", randn_qkv(hq, hkv, n, d))]
        if args.inputs:
            sets.insert(0, ("bench", load_qkv(f"{args.inputs}/d{d}_n{n}")))
        first = True  # the first case after loading a shape's inputs warms 3 s at least (as our bench)
        for causal in (True, False):
            flops = 4.0 * n * n * d * hq * (0.5 if causal else 1.0)
            for label, qkv in sets:
                for name, backend in BACKENDS:
                    if label == "randn" and name == "flash" and args.inputs:
                        continue  # flash on randn only when there are no benchmark inputs
                    ms = time_sdpa(name, backend, qkv, causal, 7, max(args.warm, 3.0) if first else args.warm)
                    if ms is None:
                        continue
                    first = False
                    tf = report(d, n, causal, name, label, ms, flops)
                    rows.append(dict(d=d, len=n, causal=int(causal), backend=name, inputs=label, ms=ms, tflops=tf))
        del sets
        torch.cuda.empty_cache()
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["d", "len", "causal", "backend", "inputs", "ms", "tflops"])
            w.writeheader()
            w.writerows(rows)


BACKENDS = (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION))


def time_sdpa(name, backend, qkv, causal, reps, warm):
    """Median ms of SDPA on one backend, or None (with a note) where the backend refuses."""
    q, k, v = qkv
    try:
        with sdpa_kernel([backend]):
            return timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal), enable_gqa=True),
                         reps=reps, inner=3, warm=warm)
    except RuntimeError as e:
        print(f"  {name}: not available ({str(e).splitlines()[0][:80]})", file=sys.stderr)
        return None


def report(d, n, causal, name, label, ms, flops):
    """Prints one timing; returns its TFLOP/s."""
    tf = flops / (ms * 1e-3) / 1e12
    print(f"d {d} len {n} causal {int(causal)} {name:6s} {label:6s} {ms:9.3f} ms {tf:7.1f} TFLOP/s")
    return tf


def randn_qkv(hq, hkv, n, d):
    return (torch.randn(1, hq, n, d, device="cuda", dtype=torch.bfloat16),
            torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16),
            torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16))


def load_qkv(folder):
    """q.npy, k.npy, v.npy (float32 [S, H, D]) as [1, H, S, D] bf16 on the GPU, contiguous."""
    import numpy as np

    def load(name):
        a = torch.from_numpy(np.load(f"{folder}/{name}.npy"))
        return a.permute(1, 0, 2).unsqueeze(0).contiguous().to("cuda", torch.bfloat16)
    return load("q"), load("k"), load("v")


def real(args):
    """cuDNN and flash, causal, on the tensors of --real DIR."""
    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    qkv = load_qkv(args.real)
    _, hq, n, d = qkv[0].shape
    print(f"inputs {args.real}: Hq {hq}, Hkv {qkv[1].shape[1]}, d {d}, {n} tokens")
    flops = 4.0 * n * n * d * hq * 0.5
    for name, backend in BACKENDS:
        if args.backend and name != args.backend:
            continue
        ms = time_sdpa(name, backend, qkv, True, args.reps, max(args.warm, 3.0))
        if ms is not None:
            report(d, n, True, name, "real", ms, flops)


def one(args):
    """One shape, cuDNN and flash, on random inputs and (with --inputs) on our benchmark's inputs."""
    d, n, causal = (int(x) for x in args.one.split(","))
    hq, hkv = 32, 8
    flops = 4.0 * n * n * d * hq * (0.5 if causal else 1.0)
    sets = [] if args.bench_only and args.inputs else [("randn", randn_qkv(hq, hkv, n, d))]
    if args.inputs:
        sets.append(("bench", load_qkv(f"{args.inputs}/d{d}_n{n}")))
    for label, qkv in sets:
        for name, backend in BACKENDS:
            if args.backend and name != args.backend:
                continue
            ms = time_sdpa(name, backend, qkv, causal, args.reps, args.warm)
            if ms is not None:
                report(d, n, causal, name, label, ms, flops)


if __name__ == "__main__":
    main()
