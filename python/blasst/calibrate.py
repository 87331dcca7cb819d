"""Calibration (BLASST.md section 4) from Python: the tile sparsity each lambda gives on captured
Q/K, and the fit a(s) = alpha * exp(beta * s), in the JSON layout of `blasst calibrate`.

    cal = blasst.calibrate.fit("prefill", [(q, k), (q2, k2)], causal=True, model="my-model")
    blasst.calibrate.save(cal, "cal.json")
    a = blasst.scale_factor_for("cal.json", "prefill", 0.5)

Prefill samples are (q, k) or (q, k, cu_seqlens_q, cu_seqlens_k) with q [total_q, Hq, d],
k [total_k, Hkv, d]; decode samples are (q, k_cache, block_table, seq_lens) as for blasst.decode.
Arrays are numpy (or CPU torch tensors); V plays no part in the vote. ``block_k=None`` takes the
key tile the CUDA kernel uses by default (prefill: ``blasst.prefill_block_k(head dim)``, 192 at
head dim 128, 80 at 256; decode: 128), so that the fit holds for the GPU's default geometry.
"""
import datetime
import json

from . import _C


def default_block_k(phase, sample):
    """The key tile a calibration with ``block_k=None`` uses for this sample (see the module's doc)."""
    if phase == "prefill":
        return int(_C.prefill_block_k(int(sample[0].shape[-1])))
    return 128


def sweep(phase, sample, *, causal=True, softmax_scale=None, block_q=64, block_k=None, order="reverse", splits=1,
          max_seed=False, lambdas=None):
    """Points (kv_len, lambda, scale_factor, sparsity) of one sample, one per sequence and lambda."""
    if phase in ("prefill", "decode") and block_k is None:
        block_k = default_block_k(phase, sample)
    lambdas = list(lambdas) if lambdas is not None else _C.default_lambdas(20)
    scale = float(softmax_scale or 0.0)
    if phase == "prefill":
        q, k, *cu = sample
        cu_q, cu_k = (cu + [None, None])[:2]
        visited, skipped, kv_len = _C.sweep_prefill(q, k, cu_q, cu_k, bool(causal), scale, int(block_q), int(block_k),
                                                    str(order), lambdas)
    elif phase == "decode":
        q, k_cache, block_table, seq_lens = sample
        if q.ndim == 3:
            q = q[:, None]
        visited, skipped, kv_len = _C.sweep_decode(q, k_cache, block_table, seq_lens, scale, int(block_k), int(splits),
                                                   bool(max_seed), lambdas)
    else:
        raise ValueError(f"phase must be prefill or decode, got {phase!r}")
    points = []
    n = len(lambdas)
    for b, length in enumerate(kv_len):
        if visited[b] == 0:
            continue
        for i, lam in enumerate(lambdas):
            points.append({"kv_len": int(length), "lambda": lam, "scale_factor": lam * length,
                           "sparsity": skipped[b * n + i] / visited[b]})
    return points


def fit(phase, samples, *, model="", causal=True, softmax_scale=None, block_q=64, block_k=None, order="reverse",
        splits=1, max_seed=False, lambdas=None):
    """Sweep every sample and fit a(s); returns {phase: {...}} as `blasst calibrate` writes it."""
    if block_k is None and phase in ("prefill", "decode") and samples:
        tiles = {default_block_k(phase, s) for s in samples}
        if len(tiles) > 1:
            raise ValueError(f"the samples' head dims take different default key tiles {sorted(tiles)}; "
                             "pass block_k to calibrate them together")
        block_k = tiles.pop()
    curve = []
    for sample in samples:
        curve += sweep(phase, sample, causal=causal, softmax_scale=softmax_scale, block_q=block_q, block_k=block_k,
                       order=order, splits=splits, max_seed=max_seed, lambdas=lambdas)
    alpha, beta, r2, s_min, s_max, points = _C.fit_scale_factor([p["sparsity"] for p in curve],
                                                                [p["scale_factor"] for p in curve])
    geometry = {"block_k": int(block_k), "order": "forward" if phase == "decode" else str(order),
                "splits": int(splits) if phase == "decode" else 1, "max_seed": bool(max_seed)}
    if phase == "prefill":
        geometry = {"block_q": int(block_q), **geometry}
    return {phase: {"alpha": alpha, "beta": beta, "r2": r2, "s_min": s_min, "s_max": s_max, "points": points,
                    "geometry": geometry, "model": model, "date": datetime.date.today().isoformat(),
                    "samples": [f"sample {i}" for i in range(len(samples))], "curve": curve}}


def save(calibration, path):
    with open(path, "w") as f:
        json.dump(calibration, f, indent=1)
