"""PyTorch SDPA prefill peers (cuDNN and flash backends) on the shapes of cuda_prefill_bench:
one sequence, bf16, Hq/Hkv 32/8 (enable_gqa), causal and not. TFLOP/s counts 4 Sq Sk d Hq
(halved when causal) over the median of graph replays. Writes CSV to --csv and prints a table."""
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
    args = ap.parse_args()
    shapes = [(128, 8192), (128, 32768), (128, 131072), (64, 32768), (256, 32768)]
    if args.quick:
        shapes = [(128, 8192), (64, 8192), (256, 8192)]
    hq, hkv = 32, 8
    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    rows = []
    for d, n in shapes:
        q = torch.randn(1, hq, n, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        for causal in (True, False):
            flops = 4.0 * n * n * d * hq * (0.5 if causal else 1.0)
            for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
                try:
                    with sdpa_kernel([backend]):
                        ms = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True), reps=7, inner=3)
                except RuntimeError as e:
                    print(f"  {name}: not available ({str(e).splitlines()[0][:80]})", file=sys.stderr)
                    continue
                tf = flops / (ms * 1e-3) / 1e12
                print(f"d {d} len {n} causal {int(causal)} {name:6s} {ms:9.3f} ms {tf:7.1f} TFLOP/s")
                rows.append(dict(d=d, len=n, causal=int(causal), backend=name, ms=ms, tflops=tf))
        del q, k, v
        torch.cuda.empty_cache()
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["d", "len", "causal", "backend", "ms", "tflops"])
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
