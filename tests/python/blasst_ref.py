"""Independent float64 NumPy reference of the BLASST contract (BLASST.md section 2).

Written from the specification and docs/CLI.md only; it shares no code with the C++ engine.
It is deliberately naive: full logit matrices in float64, one Python step per (vote group, tile).

Decisions only depend on the running max m_r of the kept logits along the visit order, so the walk
tracks m_r and the set of kept tiles; O and LSE are then the exact softmax over the kept keys, which
equals the online (FlashAttention) recurrence and the LSE merge of split-KV chunks in exact
arithmetic.  (`_online_*` in test_reference.py checks that equivalence on small cases.)

Both entry points return a dict:
    o            float64 [total_q, Hq, d_v] (prefill) / [batch, q_tokens, Hq, d_v] (decode; 3-D Q
                 gives [batch, Hq, d_v])
    lse          float64, same shape as O without d_v; -inf for rows that see no key
    mask         uint8 1-D skip mask in the CLI's layout (0 not visited, 1 kept, 2 skipped)
    visited      int64 [batch, H]  (prefill: H = Hq query heads; decode: H = Hkv KV heads)
    skipped      int64 [batch, H]
    dropped      float64, same shape as lse: share of the row's softmax mass in skipped tiles
    skipped_seen int64, same shape as lse: skipped tiles the row sees at least one key of
    lambdas      list of the effective lambda per sequence (0.0 = dense)
    min_margin   smallest |max_r(m~_r - m_r) - ln(lambda)| over all tested tiles (inf if none):
                 how close the closest decision came to a tie
"""

import math

import numpy as np

ORDERS = ("forward", "reverse", "sink-first")
MODES = ("dense", "threshold", "scale_factor")

NOT_VISITED, KEPT, SKIPPED = 0, 1, 2


def effective_lambda(mode, value, sk):
    """Section 2.7: lambda of one sequence with KV length sk; 0.0 means dense."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    if mode == "dense" or sk == 0:
        return 0.0
    value = float(value)
    lam = value if mode == "threshold" else value / sk
    if not (0.0 < lam < 1.0):
        return 0.0
    return lam


def visit_order(visible, order):
    """Section 2.4: visit order over the (ascending) visible tiles."""
    visible = sorted(visible)
    if order == "forward":
        return visible
    if order == "reverse":
        return visible[::-1]
    if order == "sink-first":
        if visible and visible[0] == 0:
            return [0] + visible[1:][::-1]
        return visible[::-1]
    raise ValueError(f"unknown order {order!r}")


def split_chunks(visible, splits):
    """Section 2.4: n visible tiles -> `splits` contiguous chunks of ceil(n/N), empty ones dropped."""
    n = len(visible)
    if n == 0:
        return []
    c = -(-n // splits)
    return [visible[i * c:(i + 1) * c] for i in range(splits) if visible[i * c:(i + 1) * c]]


def _tile_max(s, nt, bk):
    """s: [R, Sk] logits with -inf where masked -> [R, nt] per-tile row maxima (-inf: sees none)."""
    r, sk = s.shape
    pad = nt * bk - sk
    if pad:
        s = np.concatenate([s, np.full((r, pad), -np.inf)], axis=1)
    return s.reshape(r, nt, bk).max(axis=2)


def _walk(tmax, tiles, lam, seed=None):
    """One running state over `tiles` (visited in the given order).

    tmax: [R, nt] tile row maxima of the group's existing rows (-inf where the row sees no key).
    seed: None (first tile exempt from the test, m starts at -inf) or an [R] initial running max
          (max seeding: the first tile is tested like any other).
    Returns ({tile: kept}, min_margin).
    """
    r = tmax.shape[0]
    m = np.full(r, -np.inf) if seed is None else np.array(seed, dtype=np.float64)
    lnlam = math.log(lam) if lam > 0.0 else None
    decisions = {}
    margin = math.inf
    for idx, t in enumerate(tiles):
        col = tmax[:, t]
        sees = np.isfinite(col)
        keep = True
        if lnlam is not None and not (idx == 0 and seed is None):
            if np.any(sees & ~np.isfinite(m)):
                keep = True  # a row that sees the tile has no finite running max: it vetoes
            elif not np.any(sees):
                keep = False  # nobody sees it: vacuous agreement (cannot happen for visible tiles)
            else:
                worst = float(np.max(col[sees] - m[sees]))
                keep = not (worst < lnlam)
                margin = min(margin, abs(worst - lnlam))
        decisions[t] = keep
        if keep:
            m = np.maximum(m, col)
    return decisions, margin


def _finish(s, status_keys, v):
    """Exact softmax over kept keys.

    s: [R, Sk] logits (-inf masked), status_keys: [R, Sk] per-key tile status (KEPT/SKIPPED/0),
    v: [Sk, d_v].  Returns o [R, d_v], lse [R], dropped [R].
    """
    r = s.shape[0]
    sees = np.isfinite(s)
    kept = sees & (status_keys == KEPT)
    skipped = sees & (status_keys == SKIPPED)
    o = np.zeros((r, v.shape[1]))
    lse = np.full(r, -np.inf)
    dropped = np.zeros(r)
    has = kept.any(axis=1)
    if np.any(sees.any(axis=1) & ~has):
        raise AssertionError("reference invariant: a row that sees keys kept none")
    if np.any(has):
        sk = np.where(kept, s, -np.inf)[has]
        mx = sk.max(axis=1, keepdims=True)
        p = np.where(kept[has], np.exp(sk - mx), 0.0)
        z = p.sum(axis=1)
        o[has] = (p @ v) / z[:, None]
        lse[has] = mx[:, 0] + np.log(z)
        sa = np.where(sees, s, -np.inf)[has]
        mxa = sa.max(axis=1, keepdims=True)
        pa = np.where(sees[has], np.exp(sa - mxa), 0.0)
        dropped[has] = np.where(skipped[has], pa, 0.0).sum(axis=1) / pa.sum(axis=1)
    return o, lse, dropped


def _expand(status_tiles, sk, bk):
    """[R, nt] tile status -> [R, Sk] key status."""
    return np.repeat(status_tiles, bk, axis=1)[:, :sk]


def _as64(x):
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float16):
        raise TypeError(f"inputs must be float32 or float16, got {x.dtype}")
    return x.astype(np.float64)


def prefill_block_k(head_dim):
    """The CLI's prefill key tile without --block-k: the CUDA kernel's default at this head dim."""
    return 192 if head_dim == 128 else 80 if head_dim == 256 else 128


def prefill(q, k, v, cu_q=None, cu_k=None, causal=False, scale=None, mode="dense", value=0.0,
            block_q=64, block_k=128, order="reverse"):
    """Varlen prefill. q [total_q, Hq, d_qk], k [total_k, Hkv, d_qk], v [total_k, Hkv, d_v]."""
    q, k, v = _as64(q), _as64(k), _as64(v)
    total_q, hq, dqk = q.shape
    total_k, hkv, _ = k.shape
    dv = v.shape[2]
    assert k.shape[2] == dqk and v.shape[:2] == (total_k, hkv) and hq % hkv == 0
    g = hq // hkv
    if scale is None:
        scale = 1.0 / math.sqrt(dqk)
    if (cu_q is None) != (cu_k is None):
        raise ValueError("cu_q and cu_k go together")
    if cu_q is None:
        cu_q, cu_k = [0, total_q], [0, total_k]
    cu_q = [int(x) for x in cu_q]
    cu_k = [int(x) for x in cu_k]
    nb = len(cu_q) - 1
    bq, bk = int(block_q), int(block_k)

    o = np.zeros((total_q, hq, dv))
    lse = np.full((total_q, hq), -np.inf)
    dropped = np.zeros((total_q, hq))
    skipped_seen = np.zeros((total_q, hq), dtype=np.int64)
    visited = np.zeros((nb, hq), dtype=np.int64)
    skipped = np.zeros((nb, hq), dtype=np.int64)
    masks, lambdas = [], []
    min_margin = math.inf

    for b in range(nb):
        q0, q1, k0, k1 = cu_q[b], cu_q[b + 1], cu_k[b], cu_k[b + 1]
        sq, sk = q1 - q0, k1 - k0
        lam = effective_lambda(mode, value, sk)
        lambdas.append(lam)
        nt = -(-sk // bk)
        nqt = -(-sq // bq)
        mask_b = np.zeros((hq, nqt, nt), dtype=np.uint8)
        if sq == 0 or sk == 0:
            masks.append(mask_b.ravel())  # rows (if any) see nothing: O = 0, LSE = -inf
            continue
        ii = np.arange(sq)[:, None]
        jj = np.arange(sk)[None, :]
        see = (jj <= ii + sk - sq) if causal else np.ones((sq, sk), dtype=bool)
        for h in range(hq):
            kh = h // g
            s = scale * (q[q0:q1, h] @ k[k0:k1, kh].T)
            s = np.where(see, s, -np.inf)
            tmax = _tile_max(s, nt, bk)
            status = np.zeros((sq, nt), dtype=np.uint8)
            for qt in range(nqt):
                r0, r1 = qt * bq, min(sq, (qt + 1) * bq)
                tg = tmax[r0:r1]
                vis = [t for t in range(nt) if np.isfinite(tg[:, t]).any()]
                dec, mg = _walk(tg, visit_order(vis, order), lam)
                min_margin = min(min_margin, mg)
                for t, keep in dec.items():
                    st = KEPT if keep else SKIPPED
                    mask_b[h, qt, t] = st
                    status[r0:r1, t] = st
                    visited[b, h] += 1
                    skipped[b, h] += 0 if keep else 1
            ob, lb, db = _finish(s, _expand(status, sk, bk), v[k0:k1, kh])
            o[q0:q1, h], lse[q0:q1, h], dropped[q0:q1, h] = ob, lb, db
            skipped_seen[q0:q1, h] = ((status == SKIPPED) & np.isfinite(tmax)).sum(axis=1)
        masks.append(mask_b.ravel())

    return dict(o=o, lse=lse, dropped=dropped, skipped_seen=skipped_seen, visited=visited,
                skipped=skipped, mask=np.concatenate(masks) if masks else np.zeros(0, np.uint8),
                lambdas=lambdas, min_margin=min_margin, block_k=bk)


def decode(q, k_cache, v_cache, block_table, seq_lens, scale=None, mode="dense", value=0.0,
           block_k=128, splits=1, max_seed=False):
    """Paged decode. q [B, T, Hq, d_qk] or [B, Hq, d_qk]; caches [P, page, Hkv, d]."""
    q = _as64(q)
    three_d = q.ndim == 3
    if three_d:
        q = q[:, None]
    kc, vc = _as64(k_cache), _as64(v_cache)
    nb, nq, hq, dqk = q.shape
    _, ps, hkv, _ = kc.shape
    dv = vc.shape[3]
    assert hq % hkv == 0
    g = hq // hkv
    if scale is None:
        scale = 1.0 / math.sqrt(dqk)
    bt = np.asarray(block_table)
    sl = [int(x) for x in np.asarray(seq_lens)]
    bk = int(block_k)
    splits = int(splits)

    o = np.zeros((nb, nq, hq, dv))
    lse = np.full((nb, nq, hq), -np.inf)
    dropped = np.zeros((nb, nq, hq))
    skipped_seen = np.zeros((nb, nq, hq), dtype=np.int64)
    visited = np.zeros((nb, hkv), dtype=np.int64)
    skipped = np.zeros((nb, hkv), dtype=np.int64)
    masks, lambdas = [], []
    min_margin = math.inf

    for b in range(nb):
        L = sl[b]
        lam = effective_lambda(mode, value, L)
        lambdas.append(lam)
        nt = -(-L // bk)
        mask_b = np.zeros((hkv, nt), dtype=np.uint8)
        if L == 0:
            masks.append(mask_b.ravel())
            continue
        pos = np.arange(L)
        pages = bt[b, pos // ps]
        kk = kc[pages, pos % ps]  # [L, Hkv, d_qk]
        vv = vc[pages, pos % ps]
        tt = np.arange(nq)
        see_t = pos[None, :] <= tt[:, None] + L - nq  # [T, L]
        see = np.repeat(see_t, g, axis=0)  # rows (t, head-in-group), t-major
        for kh in range(hkv):
            heads = slice(kh * g, (kh + 1) * g)
            s = scale * np.einsum("thd,jd->thj", q[b, :, heads], kk[:, kh]).reshape(nq * g, L)
            s = np.where(see, s, -np.inf)
            tmax = _tile_max(s, nt, bk)
            vis = [t for t in range(nt) if np.isfinite(tmax[:, t]).any()]
            chunks = split_chunks(vis, splits)
            status = np.zeros(nt, dtype=np.uint8)
            for ci, chunk in enumerate(chunks):
                seed = tmax[:, 0] if (max_seed and ci > 0) else None
                dec, mg = _walk(tmax, chunk, lam, seed=seed)
                min_margin = min(min_margin, mg)
                for t, keep in dec.items():
                    status[t] = KEPT if keep else SKIPPED
                    visited[b, kh] += 1
                    skipped[b, kh] += 0 if keep else 1
            mask_b[kh] = status
            st_rows = np.broadcast_to(status, (nq * g, nt))
            ob, lb, db = _finish(s, _expand(st_rows, L, bk), vv[:, kh])
            o[b, :, heads] = ob.reshape(nq, g, dv)
            lse[b, :, heads] = lb.reshape(nq, g)
            dropped[b, :, heads] = db.reshape(nq, g)
            skipped_seen[b, :, heads] = ((st_rows == SKIPPED) & np.isfinite(tmax)).sum(
                axis=1).reshape(nq, g)
        masks.append(mask_b.ravel())

    if three_d:
        o, lse, dropped, skipped_seen = o[:, 0], lse[:, 0], dropped[:, 0], skipped_seen[:, 0]
    return dict(o=o, lse=lse, dropped=dropped, skipped_seen=skipped_seen, visited=visited,
                skipped=skipped, mask=np.concatenate(masks) if masks else np.zeros(0, np.uint8),
                lambdas=lambdas, min_margin=min_margin, block_k=bk)
