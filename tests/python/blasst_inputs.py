"""Random inputs for the CLI tests.

`structured` builds attention inputs whose logits (in softmax_scale units) have
  * an attention sink at key 0 (about `sink` above the noise),
  * recency (a smooth positional kernel, `local` at the query's own position, decaying to about 0
    at the far end of the sequence),
  * a few "needle" keys that every query of a head partly retrieves (about `needle`),
  * Gaussian noise of standard deviation about `noise`,
so that BLASST really skips tiles at moderate lambdas.

All values are put on a grid of 1/64 (fp16-exact; |x| < 32), so every product q*k is exact in
float32 and so is every partial sum of a dot product (|dot| << 2^12): the CLI's float32 logits are
then exact (before softmax_scale), which keeps the float32 CLI and the float64 reference from
disagreeing on skip decisions at ties.  Where softmax_scale is a power of two the logits lie on a
grid of 2^-12 * scale, and `snap_lambda` puts ln(lambda) half-way between two grid points, so no
decision can be a tie at all.
"""

import math

import numpy as np

GRID = 64.0


def quantize(x):
    return np.round(np.asarray(x, dtype=np.float64) * GRID) / GRID


def snap_lambda(lam, scale):
    """Move lambda so that ln(lambda) lies mid-way between two logit-grid points (see above)."""
    delta = scale / GRID ** 2
    return math.exp((math.floor(math.log(lam) / delta) + 0.5) * delta)


def snap_scale_factor(a, lens, scale):
    """The scale factor's counterpart of snap_lambda: each sequence has its own lambda = a / L, so
    one shift of ln(a) moves every ln(lambda) alike. Shift it (by less than one grid step) so that
    the grid points fall mid-way in the widest gap between the sequences' offsets from the grid:
    every ln(lambda) then stays at least half that gap (>= 1 / (2 n) of a step for n lengths) away
    from a tie, far above the float32 rounding of ln(lambda)."""
    delta = scale / GRID ** 2
    offs = sorted({(math.log(a / L) / delta) % 1.0 for L in lens if L > 0})
    if not offs:
        return a
    n = len(offs)
    gaps = [((offs[(i + 1) % n] - offs[i]) % 1.0) or 1.0 for i in range(n)]
    i = max(range(n), key=gaps.__getitem__)
    return a * math.exp(-(offs[i] + gaps[i] / 2) * delta)


def _layout(d):
    """Split d channels: local pairs, sink, needle, noise."""
    n_loc = max(2, (d // 4) // 2 * 2)
    n_sink = max(1, d // 8)
    n_need = max(1, d // 8)
    n_noise = d - n_loc - n_sink - n_need
    assert n_noise >= 1, d
    return n_loc, n_sink, n_need, n_noise


def structured(rng, q_pos, k_len, hq, hkv, dqk, dv, scale=None, sink=10.0, local=10.0, needle=5.0,
               noise=0.5, n_needles=3):
    """Logit-structured q [len(q_pos), hq, dqk], k [k_len, hkv, dqk], v [k_len, hkv, dv]
    (float64, on the 1/64 grid). q_pos: absolute key position of each query row."""
    if scale is None:
        scale = 1.0 / math.sqrt(dqk)
    q_pos = np.asarray(q_pos, dtype=np.float64)
    n_loc, n_sink, n_need, n_noise = _layout(dqk)
    nf = n_loc // 2
    # recency kernel mean_f cos(w_f * lag): 1 at lag 0, decaying smoothly (no recurrence) to about
    # 0 at the far end of the sequence
    w = (0.9 * math.pi / max(k_len, 64)) * (np.arange(nf) + 1.0) / nf
    g = hq // hkv
    jpos = np.arange(k_len, dtype=np.float64)
    q = np.zeros((len(q_pos), hq, dqk))
    k = np.zeros((k_len, hkv, dqk))
    o_s, o_n, o_z = n_loc, n_loc + n_sink, n_loc + n_sink + n_need
    need = rng.choice(np.arange(1, k_len), size=min(n_needles, max(k_len - 1, 0)),
                      replace=False) if k_len > 1 else np.zeros(0, int)
    sig = math.sqrt(noise / (scale * math.sqrt(n_noise)))
    for kh in range(hkv):
        a_loc = math.sqrt(local * rng.uniform(0.85, 1.15) / (scale * nf))
        s_amp = math.sqrt(sink * rng.uniform(0.85, 1.15) / (scale * n_sink))
        n_amp = math.sqrt(needle * rng.uniform(0.6, 1.4) / (scale * n_need))
        k[:, kh, 0:n_loc:2] = a_loc * np.cos(np.outer(jpos, w))
        k[:, kh, 1:n_loc:2] = a_loc * np.sin(np.outer(jpos, w))
        if k_len:
            k[0, kh, o_s:o_n] = s_amp
        k[need, kh, o_n:o_z] = n_amp
        k[:, kh, o_z:] = sig * rng.standard_normal((k_len, n_noise))
        k[:1, kh, o_z:] = 0.0  # the sink has no noise
        for h in range(kh * g, (kh + 1) * g):
            f = rng.uniform(0.9, 1.1)
            q[:, h, 0:n_loc:2] = f * a_loc * np.cos(np.outer(q_pos, w))
            q[:, h, 1:n_loc:2] = f * a_loc * np.sin(np.outer(q_pos, w))
            q[:, h, o_s:o_n] = s_amp * rng.uniform(0.9, 1.1)
            q[:, h, o_n:o_z] = n_amp * rng.uniform(0.3, 1.0)
            q[:, h, o_z:] = sig * rng.standard_normal((len(q_pos), n_noise))
    v = rng.standard_normal((k_len, hkv, dv))
    return quantize(q), quantize(k), quantize(v)


def random_qkv(rng, sq, sk, hq, hkv, dqk, dv):
    """Plain continuous Gaussian inputs (for dense tests)."""
    return (rng.standard_normal((sq, hq, dqk)), rng.standard_normal((sk, hkv, dqk)),
            rng.standard_normal((sk, hkv, dv)))


def varlen_prefill(rng, lens_q, lens_k, hq, hkv, dqk, dv, dtype=np.float32, structure=True,
                   **kw):
    """Concatenated varlen batch; query rows are the last positions of each sequence."""
    qs, ks, vs = [], [], []
    for sq, sk in zip(lens_q, lens_k):
        if structure:
            q, k, v = structured(rng, np.arange(sq) + sk - sq, sk, hq, hkv, dqk, dv, **kw)
        else:
            q, k, v = random_qkv(rng, sq, sk, hq, hkv, dqk, dv)
        qs.append(q)
        ks.append(k)
        vs.append(v)
    cu_q = np.concatenate([[0], np.cumsum(lens_q)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(lens_k)]).astype(np.int32)
    cat = lambda xs, h, d: (np.concatenate(xs) if xs else np.zeros((0, h, d))).astype(dtype)
    return cat(qs, hq, dqk), cat(ks, hkv, dqk), cat(vs, hkv, dv), cu_q, cu_k


def paged_kv(rng, k, v, cu_k, page_size, spare=3):
    """Packed varlen K and V copied into NaN-filled caches [pages, page_size, Hkv, d] in shuffled
    page order (chunked prefill's view of an engine cache), with their block table (one spare
    column of -1): (k_cache, v_cache, block_table)."""
    lens = np.diff(cu_k)
    pages = (lens + page_size - 1) // page_size
    num_pages = int(pages.sum()) + spare
    ids = rng.permutation(num_pages).astype(np.int32)
    kc = np.full((num_pages, page_size) + k.shape[1:], np.nan, k.dtype)
    vc = np.full((num_pages, page_size) + v.shape[1:], np.nan, v.dtype)
    table = np.full((len(lens), int(pages.max(initial=0)) + 1), -1, np.int32)
    nxt = 0
    for b, n in enumerate(lens):
        table[b, :pages[b]] = ids[nxt:nxt + pages[b]]
        nxt += pages[b]
        for j in range(n):
            kc[table[b, j // page_size], j % page_size] = k[cu_k[b] + j]
            vc[table[b, j // page_size], j % page_size] = v[cu_k[b] + j]
    return kc, vc, table


def paged_decode(rng, lens, q_tokens, hq, hkv, dqk, dv, page_size, dtype=np.float32,
                 extra_pages=2, unused_entry=None, structure=True, **kw):
    """Paged KV cache with a shuffled block table.

    Returns q [B, T, Hq, dqk], k_cache, v_cache [P, page, Hkv, d], block_table [B, maxp] int32,
    seq_lens [B] int32.  Pages not used by any sequence hold random garbage; block-table entries
    beyond a sequence's pages are `unused_entry` (default: valid random page ids)."""
    need = [-(-L // page_size) for L in lens]
    maxp = max(need + [1]) + 1
    num_pages = max(1, sum(need) + extra_pages)
    perm = rng.permutation(num_pages)
    bt = rng.integers(0, num_pages, size=(len(lens), maxp)).astype(np.int32)
    if unused_entry is not None:
        bt[:] = unused_entry
    kc = quantize(rng.standard_normal((num_pages, page_size, hkv, dqk)) * 3)
    vc = quantize(rng.standard_normal((num_pages, page_size, hkv, dv)) * 3)
    q = np.zeros((len(lens), q_tokens, hq, dqk))
    at = 0
    for b, L in enumerate(lens):
        bt[b, :need[b]] = perm[at:at + need[b]]
        at += need[b]
        if structure:
            qq, kk, vv = structured(rng, np.arange(q_tokens) + L - q_tokens, L, hq, hkv, dqk, dv,
                                    **kw)
        else:
            qq, kk, vv = random_qkv(rng, q_tokens, L, hq, hkv, dqk, dv)
        q[b] = qq
        j = np.arange(L)
        kc[bt[b, j // page_size], j % page_size] = kk
        vc[bt[b, j // page_size], j % page_size] = vv
    return (q.astype(dtype), kc.astype(dtype), vc.astype(dtype), bt,
            np.asarray(lens, dtype=np.int32))
