#!/usr/bin/env python3
"""Markdown tables for docs/PERF.md from one prefill sweep: our bench's CSV
(`blasst_cuda_prefill_bench --csv`) and the SDPA peer's (`bench/sdpa_prefill_peer.py --csv`),
both from the same device call (`scripts/gpu-check.sh prefill-bench` writes them to $OUT).

    scripts/prefill_tables.py OURS.csv SDPA.csv

Prints the dense table (TFLOP/s, ratios to cuDNN on the same inputs, vote-only overhead; at
head dim 128 also the other key tile the bench timed: rows dense-bkN / vote-bkN / s=X-bkN, 176
since 2026-11-30, 128 before) and the skip table (the s=0.5/0.7/0.9 rows of each key tile, against
our dense of the same tile and against cuDNN on the same inputs and on randn). Each CSV row's
block_k column, where present, names the default tile; older CSVs fall back to DEFAULT_TILE."""
import csv
import re
import sys

DEFAULT_TILE = {"64": "128", "128": "176", "256": "64"}  # the defaults of CSVs before 2026-11-30


def main(ours_path, sdpa_path):
    ours = list(csv.DictReader(open(ours_path)))
    peer = list(csv.DictReader(open(sdpa_path)))

    def peer_ms(d, n, c, backend, inputs):
        for r in peer:
            if (r["d"], r["len"], r["causal"], r["backend"], r["inputs"]) == (d, n, c, backend, inputs):
                return float(r["ms"])
        return None

    def row(d, n, c, kernel, policy):
        for r in ours:
            if (r["d"], r["len"], r["causal"], r["kernel"], r["policy"]) == (d, n, c, kernel, policy):
                return r
        return None

    shapes = []
    for r in ours:
        if (r["d"], r["len"], r["causal"]) not in shapes:
            shapes.append((r["d"], r["len"], r["causal"]))
    k = lambda n: f"{int(n) // 1024}K"
    yes = lambda c: "yes" if c == "1" else "no"
    pp = "wgmma-pingpong"
    alt = sorted({m.group(1) for r in ours if (m := re.fullmatch(r"dense-bk(\d+)", r["policy"]))})
    alt = alt[0] if alt else ""  # the other key tile of the sweep (one at most)
    default_tile = dict(DEFAULT_TILE)
    for r in ours:
        if r.get("block_k") and r["policy"] == "dense" and r["kernel"] == pp:
            default_tile[r["d"]] = r["block_k"]

    print("| d | len | causal | cuDNN (same inputs) | cuDNN (randn) | flash | ours | vs cuDNN | no ping-pong "
          f"| vote-only overhead | ours, {alt or 'other'}-key tiles | vs cuDNN | vote-only overhead |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for d, n, c in shapes:
        flop = 4.0 * int(n) ** 2 * int(d) * 32 * (0.5 if c == "1" else 1.0) / 1e12  # Hq 32
        tf = lambda ms: f"{flop / (ms * 1e-3):.0f}" if ms else ""
        cb, cr, fb = peer_ms(d, n, c, "cudnn", "bench"), peer_ms(d, n, c, "cudnn", "randn"), peer_ms(d, n, c, "flash", "bench")
        dense, plain, vote = row(d, n, c, pp, "dense"), row(d, n, c, "wgmma", "dense"), row(d, n, c, pp, "vote-only")
        if not dense:
            continue
        dm = float(dense["ms"])
        cells = [d, k(n), yes(c), tf(cb), tf(cr), tf(fb), tf(dm), f"{cb / dm:.3f}x" if cb else "",
                 tf(float(plain["ms"])) if plain else "", f"{(float(vote['ms']) / dm - 1) * 100:+.1f} %" if vote else ""]
        d128, v128 = row(d, n, c, pp, f"dense-bk{alt}"), row(d, n, c, pp, f"vote-bk{alt}")
        if d128 and v128:
            m128 = float(d128["ms"])
            cells += [tf(m128), f"{cb / m128:.3f}x" if cb else "", f"{(float(v128['ms']) / m128 - 1) * 100:+.1f} %"]
        else:
            cells += ["", "", ""]
        print("| " + " | ".join(cells) + " |")
    print()
    print("| d | len | causal | target | key tile | a | sparsity | ms | dense-equiv. TFLOP/s | vs our dense "
          "| vs cuDNN (same inputs) | vs cuDNN (randn) | rel_err |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for d, n, c in shapes:
        cb, cr = peer_ms(d, n, c, "cudnn", "bench"), peer_ms(d, n, c, "cudnn", "randn")
        for target in ("0.5", "0.7", "0.9"):
            for suffix, tile in (("", default_tile.get(d, "")), (f"-bk{alt}", alt)):
                r = row(d, n, c, pp, f"s={target}{suffix}")
                ref = row(d, n, c, pp, "dense" if not suffix else f"dense-bk{alt}")
                if not r or not ref:
                    continue
                ms = float(r["ms"])
                print(f"| {d} | {k(n)} | {yes(c)} | {target} | {tile} | {float(r['value']):.4g} | {float(r['sparsity']):.3f} "
                      f"| {ms:.3f} | {float(r['tflops']):.0f} | {float(ref['ms']) / ms:.2f}x "
                      f"| {cb / ms:.2f}x | {cr / ms:.2f}x | {float(r['rel_err']):.1e} |")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
