"""A Hugging Face transformers attention backend: after ``register(...)``,
``AutoModelForCausalLM.from_pretrained(..., attn_implementation="blasst")`` runs causal prefill and
decode (dynamic cache) through blasst with per-phase scale factors.

CPU tensors run the CPU engine; CUDA tensors run the CUDA kernels (prefill: bfloat16/float16, head
dim 64, 128 or 256; decode: the contiguous cache [B, Hkv, L, d] is viewed as one page of L slots
per sequence, no copy). Statistics are collected only while ``collect_stats`` is on (on the GPU
each collection reads counters back, a synchronisation per layer). Layers with a sliding window
stay dense through transformers' SDPA and say so once. Batches must be unpadded (every sequence as
long as the key tensor): a mask that hides keys from the last query row (padding) raises
ValueError (checked at the model's first full-attention layer: one read-back per forward), as does
logit soft-capping.
"""
import dataclasses
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from .. import DecodePlan as _DecodePlan
from .. import prefill as _prefill


@dataclass
class Settings:
    prefill_scale_factor: Optional[float] = None
    decode_scale_factor: Optional[float] = None
    block_q: int = 64
    # None: decode 128; prefill blasst.prefill_block_k(head dim) (192 at head dim 128, 80 at 256).
    block_k: Optional[int] = None
    # Prefill only, over block_k (None: block_k's).
    prefill_block_k: Optional[int] = None
    order: str = "reverse"
    max_seed: bool = True
    collect_stats: bool = True
    check_padding: bool = True  # raise on padded batches (one device read-back per forward)
    # A list to capture calibration samples into (None: off): dicts with layer, phase, scale and
    # sample, a tuple blasst.calibrate.sweep/fit takes (float32 numpy copies: memory grows with
    # context length and layers, so capture a few prompts only).
    capture: Optional[list] = None


@dataclass
class LayerStats:
    visited: int = 0
    skipped: int = 0

    @property
    def sparsity(self) -> float:
        return self.skipped / self.visited if self.visited else 0.0


@dataclass
class Stats:
    """Tile statistics per (phase, layer), accumulated over calls."""
    layers: Dict[str, Dict[int, LayerStats]] = field(default_factory=lambda: {"prefill": {}, "decode": {}})

    def add(self, phase, layer, s):
        ls = self.layers[phase].setdefault(layer, LayerStats())
        ls.visited += s.tiles_visited
        ls.skipped += s.tiles_skipped

    def sparsity(self, phase) -> float:
        v = sum(s.visited for s in self.layers[phase].values())
        return sum(s.skipped for s in self.layers[phase].values()) / v if v else 0.0

    def reset(self):
        self.layers = {"prefill": {}, "decode": {}}

    def __str__(self):
        lines = []
        for phase, layers in self.layers.items():
            if layers:
                lines.append(f"{phase}: sparsity {self.sparsity(phase):.3f} over {len(layers)} layers")
                lines += [f"  layer {i}: {s.skipped}/{s.visited} tiles skipped ({s.sparsity:.3f})"
                          for i, s in sorted(layers.items())]
        return "\n".join(lines) or "no blasst attention calls yet"


settings = Settings()
stats = Stats()
_warned: set = set()
# Per model config: its first layer without a sliding window (the padding check runs there). Keyed by
# id(config) with a weak reference to check it: configs are unhashable, and a freed config's id can
# be reused by the next model's config, which must not inherit the old model's layer.
_first_full_layer: Dict[int, tuple] = {}


def _first_full_layer_of(config, layer: int) -> int:
    entry = _first_full_layer.get(id(config))
    if entry is None or entry[0]() is not config:
        entry = (weakref.ref(config) if config is not None else (lambda: None), layer)
        _first_full_layer[id(config)] = entry
    return entry[1]


def _warn_once(key, msg):
    if key not in _warned:
        _warned.add(key)
        warnings.warn(msg, stacklevel=3)


def register(prefill_scale_factor=None, decode_scale_factor=None, *, calibration=None, target_sparsity=None,
             **kwargs):
    """Register attn_implementation="blasst" with per-phase scale factors (None: dense).

    With ``calibration`` (a `blasst calibrate` JSON file, a list of them, or their dicts) and
    ``target_sparsity`` (a float, or {"prefill": s, "decode": s}), the scale factors come from the
    fits a(s) = alpha * exp(beta * s), and the calibration's recorded geometry is followed: its
    prefill key tile is used when none is asked for, and a key tile, query tile or visit order asked
    for that differs from the calibration's raises ValueError (the scale factor would reach another
    sparsity). Other Settings fields go as keyword arguments. A call that raises changes nothing."""
    from transformers import AttentionInterface

    from .. import calibration_geometry, scale_factor_for

    global _adopted_prefill_block_k
    # The new settings are built on a copy and take effect only when everything checks out.
    new = dataclasses.replace(settings)
    if _adopted_prefill_block_k and "prefill_block_k" not in kwargs:
        new.prefill_block_k = None  # adopted from an earlier call's calibration, not asked for
    adopted = False
    if target_sparsity is not None:
        if calibration is None:
            raise ValueError("target_sparsity needs a calibration")
        targets = target_sparsity if isinstance(target_sparsity, dict) else {"prefill": target_sparsity,
                                                                               "decode": target_sparsity}
        for phase, s in targets.items():
            if phase not in ("prefill", "decode"):
                raise ValueError(f"unknown phase '{phase}'")
            a = scale_factor_for(calibration, phase, s)
            if phase == "prefill":
                prefill_scale_factor = a
            else:
                decode_scale_factor = a
    elif calibration is not None:
        raise ValueError("a calibration needs target_sparsity")
    new.prefill_scale_factor = prefill_scale_factor
    new.decode_scale_factor = decode_scale_factor
    for k, v in kwargs.items():
        if not hasattr(new, k):
            raise ValueError(f"unknown blasst setting '{k}'")
        setattr(new, k, v)
    if target_sparsity is not None:
        for phase in targets:
            geometry = calibration_geometry(calibration, phase)
            if geometry:
                adopted |= _follow_geometry(new, phase, geometry)
    for f in dataclasses.fields(Settings):
        setattr(settings, f.name, getattr(new, f.name))
    _adopted_prefill_block_k = adopted
    AttentionInterface.register("blasst", blasst_attention)
    # Masks as SDPA gets them (None when purely causal and unpadded), so that padding can be refused
    # and sliding-window layers get their window; without this transformers passes no mask at all
    # to an attention it does not know.
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionMaskInterface.register("blasst", ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    return settings


_adopted_prefill_block_k = False  # settings.prefill_block_k came from a calibration, not a caller


def _decode_block_k(st) -> int:
    """The decode key tile the settings give: block_k, or the CUDA decode kernel's 128."""
    return st.block_k or 128


def _follow_geometry(st, phase, geometry) -> bool:
    """Run a calibrated phase under the geometry its fit was measured with: the prefill key tile
    is taken from the calibration when none was asked for (returns True then); any other
    difference (a key tile, query tile or visit order asked for that the calibration did not use)
    raises, since the calibrated scale factor would then reach another sparsity."""
    bk = geometry.get("block_k")
    if phase == "prefill":
        have = st.prefill_block_k or st.block_k
        if bk is not None and have is None:
            st.prefill_block_k = int(bk)
            return True
        if bk is not None and have != bk:
            raise ValueError(f"the prefill calibration was measured with {bk}-key tiles, but block_k / prefill_block_k "
                             f"ask for {have}: pass prefill_block_k={bk} (or leave both unset), or calibrate again")
        for name in ("block_q", "order"):
            if name in geometry and getattr(st, name) != geometry[name]:
                raise ValueError(f"the prefill calibration was measured with {name}={geometry[name]!r}, but the "
                                 f"settings ask for {getattr(st, name)!r}: pass {name}={geometry[name]!r}, or "
                                 "calibrate again")
    else:
        have = _decode_block_k(st)
        if bk is not None and have != bk:
            raise ValueError(f"the decode calibration was measured with {bk}-key tiles, but block_k asks for "
                             f"{have}: pass block_k={bk} (and prefill_block_k for prefill), or calibrate again")
    return False


def blasst_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, sliding_window=None,
                     **kwargs):
    """query [B, Hq, S, d], key/value [B, Hkv, L, d] (cache included) -> ([B, S, Hq, d], None)."""
    layer = getattr(module, "layer_idx", -1)
    if kwargs.get("softcap"):
        raise ValueError("blasst attention has no logit soft-capping (attn_logit_softcapping)")
    window = sliding_window or getattr(module, "sliding_window", None)
    if not window:
        first = _first_full_layer_of(getattr(module, "config", None), layer)
        if settings.check_padding and attention_mask is not None and layer == first:
            _refuse_padding(attention_mask, key.shape[2])
    if window:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        _warn_once(("window", layer), f"blasst: layer {layer} has a sliding window ({window}); it stays dense (SDPA)")
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      sliding_window=sliding_window, **kwargs)
    if dropout:
        raise ValueError("blasst attention has no dropout (inference only)")
    B, Hq, S, d = query.shape
    L = key.shape[2]
    scale = float(scaling) if scaling is not None else None
    if settings.capture is not None:
        _capture(layer, query, key, scale)
    if S == 1:
        q = query.transpose(1, 2)                  # [B, 1, Hq, d]
        kc, vc = key.transpose(1, 2), value.transpose(1, 2)  # [B, L, Hkv, d]: one page per sequence
        table = torch.arange(B, dtype=torch.int32, device=query.device).view(B, 1)
        lens = torch.full((B,), L, dtype=torch.int32, device=query.device)
        plan = _decode_plan(q, kc, vc, table, lens, scale, L)
        res = plan.run(q, kc, vc, table, lens).clone()  # the plan's buffer is the next layer's too
        if settings.collect_stats:
            stats.add("decode", layer, plan.stats(lens))
        return res, None
    kw = dict(causal=True, softmax_scale=scale, scale_factor=settings.prefill_scale_factor, block_q=settings.block_q,
              block_k=settings.prefill_block_k or settings.block_k, order=settings.order,
              return_stats=settings.collect_stats)
    if B == 1:
        o = _prefill(query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1), **kw)
    else:
        # One packed call for the batch: its sequences all have S queries and L keys (padding is
        # refused above), so sequence b holds rows b S .. and keys b L ..; each keeps its own lambda.
        dv = value.shape[3]
        cu_q = torch.arange(0, (B + 1) * S, S, dtype=torch.int32, device=query.device)
        cu_k = torch.arange(0, (B + 1) * L, L, dtype=torch.int32, device=query.device)
        o = _prefill(query.transpose(1, 2).reshape(B * S, Hq, d), key.transpose(1, 2).reshape(B * L, -1, d),
                     value.transpose(1, 2).reshape(B * L, -1, dv), cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
                     max_seqlen_q=S, **kw)
    if settings.collect_stats:
        o, st = o
        stats.add("prefill", layer, st)
    return o.view(B, S, Hq, o.shape[-1]), None


_plans = {}  # decode plans, shared by the layers and steps whose key they match (_decode_plan)


def _decode_plan(q, kc, vc, table, lens, scale, L):
    """A decode plan for this step, reused across layers and steps: the planner sees the length only
    through its tile count, so a plan for L rounded up to whole key tiles is the plan for L (the same
    split count), and it stays valid for the next block_k - 1 steps."""
    bk = _decode_block_k(settings)
    bound = -(-L // bk) * bk
    key = (tuple(q.shape), tuple(kc.shape[2:]), tuple(vc.shape[3:]), q.dtype, q.device, bound, scale,
           settings.decode_scale_factor, bk, settings.max_seed, settings.collect_stats)
    plan = _plans.get(key)
    if plan is None:
        if len(_plans) >= 64:
            _plans.clear()
        plan = _DecodePlan(q, kc, vc, table, lens, max_seq_len=bound, softmax_scale=scale,
                           scale_factor=settings.decode_scale_factor, block_k=bk, max_seed=settings.max_seed,
                           collect_stats=settings.collect_stats)
        _plans[key] = plan
    return plan


def _refuse_padding(mask, L):
    """A causal mask lets the last query row see every key; anything it hides is padding."""
    last = mask[..., -1, :L]
    sees_all = last.all() if last.dtype == torch.bool else (last == 0).all()
    if not bool(sees_all):
        raise ValueError("blasst attention does not take padded batches (the attention mask hides keys); "
                         "run sequences unpadded, one per call or with equal lengths")


def _capture(layer, query, key, scale):
    np_ = lambda t: t.detach().float().cpu().contiguous().numpy()
    B, _, S, _ = query.shape
    L = key.shape[2]
    if S == 1:
        sample = (np_(query.transpose(1, 2)), np_(key.transpose(1, 2)),
                  torch.arange(B, dtype=torch.int32).view(B, 1).numpy(), torch.full((B,), L, dtype=torch.int32).numpy())
        settings.capture.append({"layer": layer, "phase": "decode", "scale": scale, "sample": sample})
        return
    for b in range(B):
        sample = (np_(query[b].transpose(0, 1)), np_(key[b].transpose(0, 1)))
        settings.capture.append({"layer": layer, "phase": "prefill", "scale": scale, "sample": sample})
