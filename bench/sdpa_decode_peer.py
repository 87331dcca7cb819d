"""PyTorch SDPA decode peers (cuDNN and flash backends), timed on the shapes of cuda_decode_bench.

One query token per sequence, bf16, head dim 128 (--head-dim), contiguous (unpaged) K and V. Each backend gets
GQA through enable_gqa where it accepts it; otherwise K and V are expanded to Hq heads beforehand
(the expansion is not timed, but the larger read is what that backend does). Bytes are always the
dense K+V of Hkv heads, as for our kernel. Each timing follows --warm seconds of replays (steady
clocks, as cuda_decode_bench --warm). --rotate K gives the timed calls K copies of K and V in
turn, as cuda_decode_bench --rotate (no call finds the last one's lines in L2). Writes CSV to
--csv and prints a table.

With --real DIR (DIR/k.npy, DIR/v.npy [L, Hkv, d] and DIR/q.npy [T, Hq, d], e.g. a real model's
tensors from scripts/capture_bench_inputs.py, as `blasst_cuda_decode_bench --inputs DIR` reads them)
the shapes are that context at --batches sizes: sequence b takes the query of row T - 1 - (b % T)
over the whole context of L keys (our bench gives it the L - (b % T) keys before it: at most T - 1
fewer, a negligible difference in bytes) and bytes count batch x L keys.
"""
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
    ap.add_argument("--warm", type=float, default=0.2, help="seconds of replays before each timing")
    ap.add_argument("--rotate", type=int, default=1, help="copies of K and V the timed calls take in turn")
    ap.add_argument("--shapes", default="", help="HQ,HKV,BATCH,LEN[;...]: these shapes only (as the decode "
                    "bench's --one), for an A/B beside our kernel in the same call")
    ap.add_argument("--head-dim", type=int, default=128, help="of the shapes (not with --real)")
    ap.add_argument("--real", default="", help="DIR with q.npy [T, Hq, d], k.npy and v.npy [L, Hkv, d]")
    ap.add_argument("--batches", default="1,8,64", help="with --real: the batch sizes")
    args = ap.parse_args()
    real = None
    if args.real:
        import numpy as np
        real = [torch.from_numpy(np.load(f"{args.real}/{n}.npy").astype(np.float32)) for n in ("q", "k", "v")]
    shapes = [(hq, hkv, b, n) for hq, hkv in [(32, 8), (64, 8), (8, 1)] for b in (1, 8, 64)
              for n in (8192, 32768, 131072)]
    if args.quick:
        shapes = [(32, 8, 8, 32768), (32, 8, 1, 131072)]
    if args.shapes:
        shapes = [tuple(int(x) for x in one.split(",")) for one in args.shapes.split(";") if one]
        if any(len(s) != 4 for s in shapes):
            ap.error("--shapes takes HQ,HKV,BATCH,LEN groups separated by ';'")
    d = args.head_dim
    if real is not None:
        T, hq_r, d = real[0].shape
        n_r, hkv_r = real[1].shape[0], real[1].shape[1]
        shapes = [(hq_r, hkv_r, int(b), n_r) for b in args.batches.split(",") if b]
        print(f"inputs {args.real}: Hq {hq_r}, Hkv {hkv_r}, d {d}, {n_r} keys, {T} decode queries")
    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    rows = []
    print(f"{'Hq':<6}{'Hkv':<6}{'batch':<7}{'len':<8}{'backend':<8}{'gqa':<9}{'ms':>9}{'TB/s':>8}")
    for hq, hkv, batch, n in shapes:
        kv_bytes = batch * n * hkv * d * 2 * 2
        free, _ = torch.cuda.mem_get_info()
        rot = max(1, args.rotate)
        if kv_bytes * rot * 1.2 > free:
            print(f"{hq}/{hkv} batch {batch} len {n}: skipped (memory)")
            continue
        can_expand = kv_bytes * rot * (hq // hkv) < free * 0.6
        if real is None:
            q = torch.randn(batch, hq, 1, d, device="cuda", dtype=torch.bfloat16)
            ks = [torch.randn(batch, hkv, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(rot)]
            vs = [torch.randn_like(k) for k in ks]
        else:  # the captured context for every sequence; sequence b the query of row T - 1 - (b % T)
            rows = [T - 1 - (b % T) for b in range(batch)]
            q = real[0][rows].unsqueeze(2).to("cuda", torch.bfloat16)  # [B, Hq, 1, d]
            kk, vv = (x.transpose(0, 1).unsqueeze(0).to("cuda", torch.bfloat16) for x in real[1:])  # [1, Hkv, L, d]
            ks = [kk.expand(batch, -1, -1, -1).contiguous() for _ in range(rot)]
            vs = [vv.expand(batch, -1, -1, -1).contiguous() for _ in range(rot)]
            kk = vv = None
        for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
            result = None
            for gqa in ("enable_gqa", "expand"):
                if gqa == "expand" and (not can_expand or hq == hkv):
                    continue
                try:
                    if gqa == "enable_gqa":
                        kks, vvs, kw = ks, vs, {"enable_gqa": hq != hkv}
                    else:
                        kks = [k.repeat_interleave(hq // hkv, dim=1) for k in ks]
                        vvs = [v.repeat_interleave(hq // hkv, dim=1) for v in vs]
                        kw = {}
                    calls = [0]

                    def step():  # the copies in turn (--rotate)
                        i = calls[0] % rot
                        calls[0] += 1
                        return F.scaled_dot_product_attention(q, kks[i], vvs[i], **kw)

                    with sdpa_kernel([backend]):
                        ms = timed(step, warm=args.warm)
                    result = (gqa, ms)
                    break
                except RuntimeError as e:
                    msg = str(e).splitlines()[0][:80]
                    print(f"  {name} with {gqa}: not available ({msg})", file=sys.stderr)
                finally:
                    torch.cuda.empty_cache()
            if result is None:
                continue
            gqa, ms = result
            tbps = kv_bytes / (ms * 1e-3) / 1e12
            print(f"{hq:<6}{hkv:<6}{batch:<7}{n:<8}{name:<8}{gqa:<9}{ms:>9.4f}{tbps:>8.3f}")
            rows.append(dict(hq=hq, hkv=hkv, batch=batch, len=n, backend=name, gqa=gqa, ms=ms, tbps=tbps))
        # Every name that holds this shape's cache goes (the last backend's copies and its step
        # closure too): otherwise the next long shape finds too little free memory and is skipped.
        q = ks = vs = kks = vvs = step = None
        torch.cuda.empty_cache()
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["hq", "hkv", "batch", "len", "backend", "gqa", "ms", "tbps"])
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
