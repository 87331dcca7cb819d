"""blasst: BLASST dynamic block-sparse attention.

``prefill`` and ``decode`` take numpy arrays (CPU engine) or torch tensors (CPU engine, or the CUDA
kernels for tensors on a GPU) and follow the C++ API: packed variable-length prefill with
``cu_seqlens``, paged decode with a block table. Skipping is on when ``scale_factor`` (lambda =
scale_factor / Sk per sequence) or ``threshold`` (one lambda) is given; otherwise attention is dense.
Errors raise ``ValueError`` (bad values, shapes) or ``TypeError`` (bad dtypes).
"""
from dataclasses import dataclass, field
from typing import List, Optional

from . import _C
from . import calibrate  # noqa: E402,F401  (blasst.calibrate.fit / sweep / save)

__all__ = ["prefill", "prefill_block_k", "decode", "DecodePlan", "SkipStats", "scale_factor_for", "calibration_geometry", "with_cuda", "num_threads", "set_num_threads", "synthetic_qkv"]
__version__ = "0.1.0"

with_cuda = bool(_C.with_cuda)
num_threads = _C.num_threads
set_num_threads = _C.set_num_threads


@dataclass
class SkipStats:
    """Tile statistics (BLASST.md 2.8). ``visited``/``skipped`` are per (sequence, head), row-major
    [batch][heads]; heads are query heads for prefill and KV heads for decode."""

    batch: int
    heads: int
    visited: List[int]
    skipped: List[int]
    lambdas: List[float] = field(default_factory=list)

    @property
    def tiles_visited(self) -> int:
        return sum(self.visited)

    @property
    def tiles_skipped(self) -> int:
        return sum(self.skipped)

    @property
    def sparsity(self) -> float:
        v = self.tiles_visited
        return self.tiles_skipped / v if v else 0.0

    def per_head(self):
        """(visited, skipped) summed over sequences, one entry per head."""
        vis = [sum(self.visited[b * self.heads + h] for b in range(self.batch)) for h in range(self.heads)]
        skp = [sum(self.skipped[b * self.heads + h] for b in range(self.batch)) for h in range(self.heads)]
        return vis, skp


def _phase_fit(calibration, phase):
    """The first fit for ``phase`` among a calibration file, a list of them, or their dicts (None: none)."""
    import json

    sources = calibration if isinstance(calibration, (list, tuple)) else [calibration]
    for src in sources:
        cal = src if isinstance(src, dict) else json.load(open(src))
        fit = cal.get(phase)
        if fit is not None:
            return fit
    return None


def calibration_geometry(calibration, phase):
    """The geometry the fit for ``phase`` was measured under, as `blasst calibrate` records it
    (``block_k``, ``order``, ``splits``, ``max_seed``, and ``block_q`` for prefill); None when the
    calibration has no fit for the phase or records no geometry. A scale factor reaches its
    calibrated sparsity only under the same geometry: a key tile of another size gives another
    sparsity and accuracy for the same scale factor."""
    fit = _phase_fit(calibration, phase)
    return dict(fit["geometry"]) if fit is not None and fit.get("geometry") else None


def scale_factor_for(calibration, phase, target_sparsity):
    """The scale factor a(s) = alpha * exp(beta * s) of a `blasst calibrate` JSON file (or a list of
    them, or their loaded dicts) for a phase ("prefill" or "decode") and a target tile sparsity.
    The fit holds under the geometry it was measured with (``calibration_geometry``)."""
    import math

    fit = _phase_fit(calibration, phase)
    if fit is not None:
        if "alpha" not in fit or "beta" not in fit:
            raise ValueError(f"calibration for {phase} has no alpha/beta fit")
        s = float(target_sparsity)
        if not (fit.get("s_min", 0.0) - 0.05 <= s <= fit.get("s_max", 1.0) + 0.05):
            raise ValueError(f"target sparsity {s} lies outside the calibrated range "
                             f"[{fit.get('s_min')}, {fit.get('s_max')}] for {phase}")
        return float(fit["alpha"]) * math.exp(float(fit["beta"]) * s)
    raise ValueError(f"no {phase} calibration in {calibration!r}")


def synthetic_qkv(seq_q, seq_k, heads_q, heads_kv, head_dim, head_dim_v=None, *, seed=1):
    """Attention inputs with realistic structure, from the library's documented generator
    (include/blasst/synthetic.hpp): a RoPE-like locality, attention sinks (the first 4 keys),
    needles (8 retrieval spikes per KV head, a quarter of the queries pointing at one) and noise.
    Returns float32 numpy arrays q [seq_q, heads_q, head_dim], k [seq_k, heads_kv, head_dim] and
    v [seq_k, heads_kv, head_dim_v]; query i sits at position i + seq_k - seq_q. Deterministic for
    a seed and shape. The benchmarks' inputs: blasst_cuda_prefill_bench is (len, len, 32, 8, d) at
    seed 1, blasst_cuda_decode_bench's sequence b (of --distinct K) is (1, len, Hq, Hkv, d) at seed
    1 + b % K."""
    return _C.synthetic_qkv(int(seq_q), int(seq_k), int(heads_q), int(heads_kv), int(head_dim),
                            int(head_dim if head_dim_v is None else head_dim_v), int(seed))


def _policy(scale_factor, threshold):
    if scale_factor is not None and threshold is not None:
        raise ValueError("give scale_factor or threshold, not both")
    if threshold is not None:
        return 2, float(threshold)
    if scale_factor is not None:
        return 1, float(scale_factor)
    return 0, 0.0


def _lambda(mode, value, kv_len):
    if kv_len <= 0 or not value > 0:
        return 0.0
    lam = value / kv_len if mode == 1 else value if mode == 2 else 0.0
    return lam if lam < 1.0 else 0.0


def _is_torch(x):
    return type(x).__module__.startswith("torch")


def _empty_like_kind(ref, shape, dtype=None):
    """An output array of the same library and device as ref (dtype defaults to ref's)."""
    if _is_torch(ref):
        import torch
        return torch.empty(shape, dtype=dtype or ref.dtype, device=ref.device)
    import numpy as np
    return np.empty(shape, dtype=dtype or ref.dtype)


def _float32(ref):
    if _is_torch(ref):
        import torch
        return torch.float32
    import numpy as np
    return np.float32


def prefill_block_k(head_dim):
    """The prefill key tile (block_k) the CUDA kernel uses by default at this head dim: 192 at 128
    (the CUDA kernels also take 128 and 176 there), 80 at 256 (and 64), 128 otherwise."""
    return _C.prefill_block_k(int(head_dim))


def prefill(q, k, v, *, causal=False, softmax_scale=None, scale_factor=None, threshold=None,
            cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None, block_q=64, block_k=None, order="reverse",
            return_lse=False, return_stats=False, block_table=None):
    """Prefill attention. q [total_q, Hq, d_qk], k [total_k, Hkv, d_qk], v [total_k, Hkv, d_v];
    returns O [total_q, Hq, d_v] in q's dtype, then LSE [total_q, Hq] (float32, natural log) and a
    SkipStats if asked.

    ``block_k=None`` takes the tile the CUDA kernel uses at this head dim (192 at head dim 128, 80
    at 256, 128 otherwise) on either backend, so both make the same decisions; the CUDA kernels
    also take ``block_k=128`` and ``176`` at head dim 128 and ``64`` at 256 (the CPU engine takes
    any tile). numpy arrays and CPU tensors run the CPU engine; CUDA tensors (bfloat16 or float16,
    head dim 64, 128 or 256, block_q 64) run the CUDA kernel on torch's current stream. With
    ``cu_seqlens`` on the GPU, pass ``max_seqlen_q`` (the longest sequence's query count) to keep
    the call free of device-to-host reads; ``return_stats`` reads counters back (a synchronisation).

    Chunked prefill against a paged KV cache: with ``block_table`` (int32 [batch, max_pages]), k and
    v are the caches [num_pages, page_size, Hkv, d] (decode's layout; any strides with a contiguous
    last dimension) and key j of sequence b is in page ``block_table[b, j // page_size]``, slot
    ``j % page_size``. ``cu_seqlens_q`` and ``cu_seqlens_k`` are then required; the latter only
    counts each sequence's keys (the new chunk's included, already in the cache). On the GPU it
    runs on the default kernel and key tile."""
    mode, value = _policy(scale_factor, threshold)
    if block_k is None:
        block_k = prefill_block_k(q.shape[-1])  # (a wrong rank is reported below)
    if block_table is not None:
        if cu_seqlens_q is None or cu_seqlens_k is None:
            raise ValueError("a block table needs cu_seqlens_q and cu_seqlens_k (the key counts)")
        # The key count: checked against cu_seqlens_k on the CPU; the CUDA backend does not read it.
        total_k = 0 if _is_torch(q) and q.is_cuda else int(cu_seqlens_k[-1])
    else:
        total_k = 0
    out = _empty_like_kind(q, (q.shape[0], q.shape[1], v.shape[-1]))
    lse = _empty_like_kind(q, (q.shape[0], q.shape[1]), _float32(q)) if return_lse else None
    if _is_torch(q) and q.is_cuda:
        if not with_cuda:
            raise RuntimeError("this blasst build has no CUDA backend")
        import torch
        if cu_seqlens_q is None:
            batch, max_q = 1, q.shape[0]
        else:
            batch = cu_seqlens_q.shape[0] - 1
            max_q = (int(max_seqlen_q) if max_seqlen_q is not None
                     else int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max().item()) if batch > 0 else 0)
        counters = torch.zeros(batch * q.shape[1] * 2, dtype=torch.int64, device=q.device) if return_stats else None
        _C.prefill_cuda(q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, bool(causal), float(softmax_scale or 0.0),
                        mode, value, int(block_q), int(block_k), str(order), max_q, counters,
                        torch.cuda.current_stream(q.device).cuda_stream, block_table, total_k)
        stats = None
        if return_stats:
            c = counters.cpu().tolist()
            lens = ([k.shape[0]] if cu_seqlens_k is None else
                    (cu_seqlens_k[1:] - cu_seqlens_k[:-1]).cpu().tolist())
            stats = SkipStats(batch, q.shape[1], c[0::2], c[1::2], [_lambda(mode, value, n) for n in lens])
        return _result(out, lse, stats, return_lse, return_stats)
    visited, skipped, lambdas, batch, heads = _C.prefill_cpu(
        q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, bool(causal), float(softmax_scale or 0.0), mode, value,
        int(block_q), int(block_k), str(order), block_table, total_k)
    return _result(out, lse, SkipStats(batch, heads, visited, skipped, lambdas), return_lse, return_stats)


class DecodePlan:
    """Plan once per batch shape, run every step.

    Outputs (and, for CUDA tensors, the split count, workspace and tile counters) are set up here,
    so ``run`` allocates nothing and reads nothing back to the host: on the GPU a step can be
    captured in a ``torch.cuda.CUDAGraph`` (run once before capturing, so the kernel is configured).
    ``run`` takes tensors of the planned shapes (contents, lengths up to ``max_seq_len`` and the
    block table may change) and returns the planned output buffer (and LSE buffer), overwritten by
    each run. CPU inputs run the CPU engine (``splits`` defaults to 1)."""

    def __init__(self, q, k_cache, v_cache, block_table, seq_lens, *, max_seq_len=None, softmax_scale=None,
                 scale_factor=None, threshold=None, block_k=128, splits=None, max_seed=False, return_lse=False,
                 collect_stats=False):
        self.mode, self.value = _policy(scale_factor, threshold)
        self.squeeze = q.ndim == 3
        q4 = q[:, None] if self.squeeze else q
        self.cuda = _is_torch(q4) and q4.is_cuda
        self.scale = float(softmax_scale or 0.0)
        self.block_k, self.max_seed = int(block_k), bool(max_seed)
        self.shape = tuple(q4.shape)
        self.out = _empty_like_kind(q4, (q4.shape[0], q4.shape[1], q4.shape[2], v_cache.shape[3]))
        self.lse = _empty_like_kind(q4, tuple(q4.shape[:3]), _float32(q4)) if return_lse else None
        self.heads_kv = k_cache.shape[2]
        self.last_stats = None
        if self.cuda:
            if not with_cuda:
                raise RuntimeError("this blasst build has no CUDA backend")
            import torch
            if max_seq_len is None:
                max_seq_len = int(seq_lens.max().item()) if seq_lens.numel() else 0
            self.max_seq_len = int(max_seq_len)
            self.plan = _C.decode_cuda_plan(q4, k_cache, v_cache, block_table, seq_lens, self.scale, self.mode,
                                            self.value, self.block_k, 0 if splits is None else int(splits),
                                            self.max_seed, self.max_seq_len)
            self.splits = self.plan.splits
            self.workspace = torch.empty(max(self.plan.workspace_bytes, 1), dtype=torch.uint8, device=q4.device)
            self.counters = (torch.zeros(q4.shape[0] * self.heads_kv * 2, dtype=torch.int64, device=q4.device)
                             if collect_stats else None)
        else:
            self.max_seq_len = max_seq_len
            self.splits = 1 if splits is None else int(splits)
            self.plan = self.workspace = self.counters = None

    def run(self, q, k_cache, v_cache, block_table, seq_lens):
        q4 = q[:, None] if self.squeeze else q
        if tuple(q4.shape) != self.shape:
            raise ValueError(f"q has shape {tuple(q4.shape)}, the plan was made for {self.shape}")
        if self.cuda:
            import torch
            stream = torch.cuda.current_stream(q4.device).cuda_stream
            _C.decode_cuda(self.plan, q4, k_cache, v_cache, block_table, seq_lens, self.out, self.lse, self.counters,
                           self.workspace, self.scale, self.mode, self.value, self.max_seed, stream)
        else:
            visited, skipped, lambdas, batch, heads = _C.decode_cpu(
                q4, k_cache, v_cache, block_table, seq_lens, self.out, self.lse, self.scale, self.mode, self.value,
                self.block_k, self.splits, self.max_seed)
            self.last_stats = SkipStats(batch, heads, visited, skipped, lambdas)
        out = self.out[:, 0] if self.squeeze else self.out
        if self.lse is None:
            return out
        return out, (self.lse[:, 0] if self.squeeze else self.lse)

    def stats(self, seq_lens):
        """Tile statistics of the last run (CUDA: read from the device, so not inside a graph)."""
        if not self.cuda:
            return self.last_stats
        if self.counters is None:
            raise ValueError("plan made without collect_stats=True")
        c = self.counters.cpu().tolist()
        lens = seq_lens.cpu().tolist()
        return SkipStats(self.shape[0], self.heads_kv, c[0::2], c[1::2],
                         [_lambda(self.mode, self.value, n) for n in lens])


def decode(q, k_cache, v_cache, block_table, seq_lens, *, softmax_scale=None, scale_factor=None, threshold=None,
           block_k=128, splits=None, max_seed=False, max_seq_len=None, return_lse=False, return_stats=False):
    """Paged decode. q [batch, q_tokens, Hq, d] (or [batch, Hq, d]), caches [pages, page_size, Hkv, d],
    block_table int32 [batch, max_pages], seq_lens int32 [batch] (new tokens included).

    CUDA tensors run the CUDA kernel on torch's current stream: ``splits=None`` lets its planner
    choose; pass ``max_seq_len`` (an upper bound of seq_lens) to avoid reading seq_lens back to the
    host. CPU inputs run the CPU engine (``splits`` defaults to 1). For repeated steps (and CUDA
    graphs) use DecodePlan."""
    plan = DecodePlan(q, k_cache, v_cache, block_table, seq_lens, max_seq_len=max_seq_len,
                      softmax_scale=softmax_scale, scale_factor=scale_factor, threshold=threshold, block_k=block_k,
                      splits=splits, max_seed=max_seed, return_lse=return_lse, collect_stats=return_stats)
    res = plan.run(q, k_cache, v_cache, block_table, seq_lens)
    out, lse = res if return_lse else (res, None)
    stats = plan.stats(seq_lens) if return_stats else None
    return _result(out, lse, stats, return_lse, return_stats)


def _result(out, lse, stats, return_lse, return_stats):
    if not return_lse and not return_stats:
        return out
    res = (out,)
    if return_lse:
        res += (lse,)
    if return_stats:
        res += (stats,)
    return res
