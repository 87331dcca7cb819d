"""Calibration on a real model, then a target sparsity on other text (BLASST.md section 4), on the CPU
engine: the workflow an engineer follows, checked end to end, for one --phase.

  1. Capture Q / K of the model's blasst layers (its full-attention layers: sliding-window layers
     stay dense) on prompts from --texts, one per --lengths entry: prefill samples of the prompts,
     or (decode) samples of --capture-steps greedy decode steps after each prompt;
  2. fit a(s) = alpha * exp(beta * s) on them (blasst.calibrate.fit, the default geometry);
  3. on the first 4,096 tokens of --eval-text (not among the prompts), set each --targets sparsity
     through register(calibration=..., target_sparsity=...) and record the tile sparsity reached,
     and against SDPA the perplexity (prefill) or, over 64 teacher-forced decode steps after the
     4,096 tokens, the top-1 agreement and mean KL (decode; scripts/eval_decode.py's method).

  python3 scripts/eval_calibration.py --gguf FILE.gguf --texts A.txt,B.txt,C.txt --lengths 1024,2048,4096 \
      --eval-text D.txt --out OUTDIR [--label L --name N --targets 0.2,0.3,0.4,0.5]
Writes NAME.json (the fit, and the evaluation rows) and NAME_calibration.json (the calibration file
register() reads) to --out.
"""
import argparse
import json
import math
import os

import torch

import blasst
import blasst.calibrate
from blasst.integrations import transformers as bt
from eval_decode import compare, teacher_forced_logprobs  # the scripts' folder is on sys.path
from gguf_eval import add_common_args, load_gguf


def main():
    ap = argparse.ArgumentParser()
    add_common_args(ap, "calibration_eval")
    ap.add_argument("--texts", required=True, help="comma-separated text files for the calibration prompts")
    ap.add_argument("--lengths", default="1024,2048,4096", help="prompt lengths in tokens, one prompt each")
    ap.add_argument("--eval-text", required=True)
    ap.add_argument("--targets", default="0.2,0.3,0.4,0.5")
    ap.add_argument("--phase", default="prefill", choices=["prefill", "decode"])
    ap.add_argument("--capture-steps", type=int, default=8, help="decode steps captured per prompt (decode)")
    args = ap.parse_args()
    tok, model = load_gguf(args.gguf)
    texts = args.texts.split(",")
    lengths = [int(n) for n in args.lengths.split(",")]

    phase = args.phase

    # 1. Capture.
    bt.register(capture=[])
    model.config._attn_implementation = "blasst"
    for i, n in enumerate(lengths):
        ids = tok(open(texts[i % len(texts)], encoding="utf-8").read(), return_tensors="pt").input_ids[:, :n]
        with torch.no_grad():
            if phase == "prefill":
                model(ids)
            else:
                model.generate(ids, max_new_tokens=args.capture_steps + 1, do_sample=False)
    caught = [c for c in bt.settings.capture if c["phase"] == phase]
    bt.register(capture=None)
    layers = sorted({c["layer"] for c in caught})
    print(f"captured {len(caught)} {phase} samples (layers {layers}, lengths {lengths})", flush=True)

    # 2. Fit.
    cal = blasst.calibrate.fit(phase, [c["sample"] for c in caught], softmax_scale=caught[0]["scale"],
                               model=args.label)
    os.makedirs(args.out, exist_ok=True)
    cal_path = os.path.join(args.out, args.name + "_calibration.json")
    blasst.calibrate.save(cal, cal_path)
    fit = {k: cal[phase][k] for k in ("alpha", "beta", "r2", "s_min", "s_max", "geometry")}
    print(f"fit: a(s) = {fit['alpha']:.4g} exp({fit['beta']:.4g} s), R^2 {fit['r2']:.3f}, "
          f"s in [{fit['s_min']:.2f}, {fit['s_max']:.2f}]", flush=True)

    # 3. Targets on other text.
    x = tok(open(args.eval_text, encoding="utf-8").read(), return_tensors="pt").input_ids[:, :4096]

    def ppl():
        with torch.no_grad():
            return math.exp(float(model(x, labels=x).loss))

    model.config._attn_implementation = "sdpa"
    if phase == "prefill":
        base = ppl()
    else:
        with torch.no_grad():
            ref = model.generate(x, max_new_tokens=64, do_sample=False)[:, x.shape[1]:]
        base_lp = teacher_forced_logprobs(model, x, ref, "sdpa")
        base = None
    model.config._attn_implementation = "blasst"
    rows = []
    for s in [float(t) for t in args.targets.split(",")]:
        bt.register(calibration=cal_path, target_sparsity={phase: s})
        a = bt.settings.prefill_scale_factor if phase == "prefill" else bt.settings.decode_scale_factor
        bt.stats.reset()
        if phase == "prefill":
            p = ppl()
            reached = bt.stats.sparsity("prefill")
            rows.append({"target": s, "scale_factor": a, "reached": reached, "ppl": p, "rise": p / base - 1})
            print(f"target {s:.2f}: a = {a:.4g}, reached {reached:.3f}, "
                  f"ppl {p:.4f} (sdpa {base:.4f}, {100 * (p / base - 1):+.3f} %)", flush=True)
        else:
            top1, kl = compare(base_lp, teacher_forced_logprobs(model, x, ref, "blasst"))
            reached = bt.stats.sparsity("decode")
            rows.append({"target": s, "scale_factor": a, "reached": reached, "top1_agreement": top1, "mean_kl": kl})
            print(f"target {s:.2f}: a = {a:.4g}, reached {reached:.3f}, top-1 agreement {top1:.4f}, "
                  f"mean KL {kl:.2e}", flush=True)
    bt.register()
    res = {"model": args.label, "calibration_prompts": [{"text": os.path.basename(texts[i % len(texts)]), "tokens": n}
                                                         for i, n in enumerate(lengths)],
           "layers": layers, "fit": fit, "eval_text": os.path.basename(args.eval_text), "eval_tokens": int(x.shape[1]),
           "phase": phase, "sdpa_ppl": base, "targets": rows}
    with open(os.path.join(args.out, args.name + ".json"), "w") as fh:
        json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
