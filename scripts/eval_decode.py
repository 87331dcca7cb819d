"""Decode-phase accuracy of a GGUF causal LM under blasst, on the CPU engine: SDPA generates --new
tokens greedily after a --prompt-token prompt; then each configuration decodes the same tokens
teacher-forced (prompt prefilled dense, one token a step through the KV cache), and each step's
next-token distribution is compared with SDPA's: top-1 agreement and KL(SDPA || blasst). Decode
tile sparsity from the backend's statistics (key tiles of 128, one split on the CPU engine).

  python3 scripts/eval_decode.py --gguf FILE.gguf --text T.txt --out OUTDIR [--label L --name N]
      [--prompt-tokens 4096 --new 64 --scale-factors 16,64,256,1024]
"""
import argparse
import json
import os

import torch

from blasst.integrations import transformers as bt
from gguf_eval import add_common_args, load_gguf


def teacher_forced_logprobs(model, prompt, ref, impl):
    """Log-probabilities of each decode step under attention `impl`: the prompt prefilled, then the
    reference tokens fed one by one through the KV cache (the first row is the prompt's last)."""
    model.config._attn_implementation = impl
    with torch.no_grad():
        out = model(prompt, use_cache=True)
        past, rows = out.past_key_values, [out.logits[0, -1]]
        for t in range(ref.shape[1] - 1):
            out = model(ref[:, t:t + 1], past_key_values=past, use_cache=True)
            past = out.past_key_values
            rows.append(out.logits[0, -1])
    return torch.log_softmax(torch.stack(rows).double(), dim=-1)


def compare(base, lp):
    """(top-1 agreement, mean KL(base || lp)) of two sets of per-step log-probabilities."""
    kl = float((base.exp() * (base - lp)).sum(-1).mean())
    return float((lp.argmax(-1) == base.argmax(-1)).double().mean()), kl


def main():
    ap = argparse.ArgumentParser()
    add_common_args(ap, "decode_eval")
    ap.add_argument("--text", required=True)
    ap.add_argument("--prompt-tokens", type=int, default=4096)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--scale-factors", default="16,64,256,1024")
    args = ap.parse_args()
    tok, model = load_gguf(args.gguf)
    ids = tok(open(args.text, encoding="utf-8").read(), return_tensors="pt").input_ids
    prompt = ids[:, :args.prompt_tokens]

    model.config._attn_implementation = "sdpa"
    with torch.no_grad():
        ref = model.generate(prompt, max_new_tokens=args.new, do_sample=False)[:, prompt.shape[1]:]

    base = teacher_forced_logprobs(model, prompt, ref, "sdpa")
    rows = []
    for a in [None] + [float(x) for x in args.scale_factors.split(",")]:
        bt.register(decode_scale_factor=a)  # prefill dense
        bt.stats.reset()
        top1, kl = compare(base, teacher_forced_logprobs(model, prompt, ref, "blasst"))
        sparsity = bt.stats.sparsity("decode")
        rows.append({"scale_factor": a, "decode_sparsity": sparsity, "top1_agreement": top1, "mean_kl": kl})
        print(f"decode a={a}: sparsity {sparsity:.3f}, top-1 agreement {top1:.4f}, mean KL {kl:.2e}", flush=True)
    bt.register()
    res = {"model": args.label, "text": os.path.basename(args.text), "prompt_tokens": int(prompt.shape[1]),
           "new_tokens": int(ref.shape[1]), "geometry": "decode: key tiles of 128, forward, one split (CPU engine)",
           "rows": rows}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, args.name + ".json"), "w") as fh:
        json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
