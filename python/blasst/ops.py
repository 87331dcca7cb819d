"""torch custom ops over blasst.prefill and blasst.decode (torch.library), with fake
implementations so torch.compile can trace them: torch.ops.blasst.prefill (one sequence),
torch.ops.blasst.prefill_varlen (packed batches, also over a paged KV cache) and
torch.ops.blasst.decode. Importing this module needs torch."""
from typing import Optional

import torch

from . import decode as _decode
from . import prefill as _prefill


@torch.library.custom_op("blasst::prefill", mutates_args=())
def prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, softmax_scale: float,
            scale_factor: Optional[float], threshold: Optional[float], block_q: int, block_k: int,
            order: str) -> torch.Tensor:
    return _prefill(q, k, v, causal=causal, softmax_scale=softmax_scale or None, scale_factor=scale_factor,
                    threshold=threshold, block_q=block_q, block_k=block_k or None, order=order)


@prefill.register_fake
def _(q, k, v, causal, softmax_scale, scale_factor, threshold, block_q, block_k, order):
    return q.new_empty((q.shape[0], q.shape[1], v.shape[2]))


@torch.library.custom_op("blasst::prefill_varlen", mutates_args=())
def prefill_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                   cu_seqlens_k: torch.Tensor, max_seqlen_q: int, block_table: Optional[torch.Tensor], causal: bool,
                   softmax_scale: float, scale_factor: Optional[float], threshold: Optional[float], block_q: int,
                   block_k: int, order: str) -> torch.Tensor:
    """A packed variable-length batch (as flash_attn_varlen_func takes it); with block_table, k and
    v are paged caches [num_pages, page_size, Hkv, d] (chunked prefill against an engine's cache)."""
    return _prefill(q, k, v, causal=causal, softmax_scale=softmax_scale or None, scale_factor=scale_factor,
                    threshold=threshold, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k,
                    max_seqlen_q=max_seqlen_q, block_q=block_q, block_k=block_k or None, order=order,
                    block_table=block_table)


@prefill_varlen.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, block_table, causal, softmax_scale, scale_factor, threshold,
      block_q, block_k, order):
    return q.new_empty((q.shape[0], q.shape[1], v.shape[-1]))


@torch.library.custom_op("blasst::decode", mutates_args=())
def decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor,
           seq_lens: torch.Tensor, softmax_scale: float, scale_factor: Optional[float], threshold: Optional[float],
           block_k: int, splits: int, max_seed: bool, max_seq_len: int) -> torch.Tensor:
    return _decode(q, k_cache, v_cache, block_table, seq_lens, softmax_scale=softmax_scale or None,
                   scale_factor=scale_factor, threshold=threshold, block_k=block_k,
                   splits=splits if splits > 0 else None, max_seed=max_seed, max_seq_len=max_seq_len)


@decode.register_fake
def _(q, k_cache, v_cache, block_table, seq_lens, softmax_scale, scale_factor, threshold, block_k, splits, max_seed,
      max_seq_len):
    return q.new_empty(tuple(q.shape[:-1]) + (v_cache.shape[-1],))
