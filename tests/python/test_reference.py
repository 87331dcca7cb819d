"""Self-tests of the float64 reference (blasst_ref.py); they do not need the CLI.

* dense output equals plain softmax attention;
* threshold 0, lambda >= 1 and scale factor <= 0 equal dense;
* the kept-set shortcut of the reference equals a FlashAttention-style online recurrence
  (running m, l, acc with rescaling, per-split states merged by LSE) that re-derives every
  decision from its own running max;
* the dropped-mass bound of section 2.9;
* the visit orders, split chunking and mask layout on hand-checked examples.
"""

import math

import numpy as np
import pytest

import blasst_inputs as bi
import blasst_ref as ref


def plain_attention(q, k, v, scale, see):
    """q [Sq, d], k [Sk, d], v [Sk, dv], see [Sq, Sk] -> o, lse (float64)."""
    s = scale * q @ k.T
    o = np.zeros((q.shape[0], v.shape[1]))
    lse = np.full(q.shape[0], -np.inf)
    for i in range(q.shape[0]):
        js = np.nonzero(see[i])[0]
        if len(js) == 0:
            continue
        row = s[i, js]
        p = np.exp(row - row.max())
        o[i] = p @ v[js] / p.sum()
        lse[i] = row.max() + math.log(p.sum())
    return o, lse


def _state_update(m, l, acc, s_tile, v_tile):
    """One FlashAttention step for one row; s_tile may hold -inf (masked)."""
    mt = np.max(s_tile)
    m_new = max(m, mt)
    if m_new == -np.inf:
        return m, l, acc
    alpha = 0.0 if m == -np.inf else math.exp(m - m_new)
    p = np.where(np.isfinite(s_tile), np.exp(s_tile - m_new), 0.0)
    return m_new, l * alpha + p.sum(), acc * alpha + p @ v_tile


def online_group(s, v, tiles_per_split, bk, lam, seeds=None):
    """s: [R, Sk] logits of one vote group (-inf masked); tiles_per_split: list of tile lists
    (each visited in its order, own state). seeds: per split None or an [R] initial m.
    Returns o [R, dv], lse [R], {tile: kept}."""
    r, sk = s.shape
    dv = v.shape[1]
    lnlam = math.log(lam) if 0 < lam < 1 else None
    decisions = {}
    parts = []
    for si, tiles in enumerate(tiles_per_split):
        seed = None if seeds is None else seeds[si]
        m = [(-np.inf if seed is None else float(seed[i])) for i in range(r)]
        l = [0.0] * r
        acc = [np.zeros(dv) for _ in range(r)]
        for idx, t in enumerate(tiles):
            lo, hi = t * bk, min(sk, (t + 1) * bk)
            skip = False
            if lnlam is not None and not (idx == 0 and seed is None):
                skip = True
                for i in range(r):
                    row = s[i, lo:hi]
                    if not np.isfinite(row).any():
                        continue
                    if not (math.isfinite(m[i]) and np.max(row) - m[i] < lnlam):
                        skip = False
                        break
            decisions[t] = not skip
            if skip:
                continue
            for i in range(r):
                m[i], l[i], acc[i] = _state_update(m[i], l[i], acc[i], s[i, lo:hi], v[lo:hi])
        # the split's own (o, lse); a split whose state never accumulated has lse -inf
        o_s = np.zeros((r, dv))
        lse_s = np.full(r, -np.inf)
        for i in range(r):
            if l[i] > 0:
                o_s[i] = acc[i] / l[i]
                lse_s[i] = m[i] + math.log(l[i])
        parts.append((o_s, lse_s))
    o = np.zeros((r, dv))
    lse = np.full(r, -np.inf)
    for i in range(r):
        ls = np.array([p[1][i] for p in parts])
        if not np.isfinite(ls).any():
            continue
        mx = ls.max()
        w = np.where(np.isfinite(ls), np.exp(ls - mx), 0.0)
        o[i] = sum(w[j] * parts[j][0][i] for j in range(len(parts))) / w.sum()
        lse[i] = mx + math.log(w.sum())
    return o, lse, decisions


def test_orders_and_chunks():
    assert ref.visit_order([0, 1, 2, 3], "forward") == [0, 1, 2, 3]
    assert ref.visit_order([0, 1, 2, 3], "reverse") == [3, 2, 1, 0]
    assert ref.visit_order([0, 1, 2, 3], "sink-first") == [0, 3, 2, 1]
    assert ref.visit_order([0], "sink-first") == [0]
    assert ref.split_chunks(list(range(10)), 3) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert ref.split_chunks(list(range(10)), 8) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert ref.split_chunks(list(range(3)), 8) == [[0], [1], [2]]
    assert ref.split_chunks([], 4) == []
    assert ref.effective_lambda("scale_factor", 2.0, 4) == 0.5
    assert ref.effective_lambda("scale_factor", 2.0, 2) == 0.0
    assert ref.effective_lambda("scale_factor", 2.0, 0) == 0.0
    assert ref.effective_lambda("threshold", 0.0, 10) == 0.0
    assert ref.effective_lambda("threshold", 1.0, 10) == 0.0


@pytest.mark.parametrize("causal", [False, True])
def test_dense_equals_plain_softmax(causal):
    rng = np.random.default_rng(1)
    lens_q, lens_k = [5, 0, 37, 3, 20], [9, 0, 37, 0, 11]
    cu_q, cu_k = np.cumsum([0] + lens_q), np.cumsum([0] + lens_k)
    hq, hkv, d, dv = 4, 2, 8, 5
    q = rng.standard_normal((cu_q[-1], hq, d)).astype(np.float32)
    k = rng.standard_normal((cu_k[-1], hkv, d)).astype(np.float32)
    v = rng.standard_normal((cu_k[-1], hkv, dv)).astype(np.float32)
    r = ref.prefill(q, k, v, cu_q, cu_k, causal, None, "dense", 0.0, 4, 8, "reverse")
    for b in range(len(lens_q)):
        sq, sk = lens_q[b], lens_k[b]
        ii, jj = np.arange(sq)[:, None], np.arange(sk)[None, :]
        see = (jj <= ii + sk - sq) if causal else np.ones((sq, sk), bool)
        for h in range(hq):
            o, lse = plain_attention(q[cu_q[b]:cu_q[b + 1], h].astype(np.float64),
                                     k[cu_k[b]:cu_k[b + 1], h // 2].astype(np.float64),
                                     v[cu_k[b]:cu_k[b + 1], h // 2].astype(np.float64),
                                     1 / math.sqrt(d), see)
            np.testing.assert_allclose(r["o"][cu_q[b]:cu_q[b + 1], h], o, rtol=1e-12, atol=1e-12)
            np.testing.assert_array_equal(np.isfinite(r["lse"][cu_q[b]:cu_q[b + 1], h]),
                                          np.isfinite(lse))
            fin = np.isfinite(lse)
            np.testing.assert_allclose(r["lse"][cu_q[b]:cu_q[b + 1], h][fin], lse[fin],
                                       rtol=1e-12)
    assert r["skipped"].sum() == 0
    assert set(np.unique(r["mask"])) <= {0, 1}
    assert r["visited"].sum() == (r["mask"] == 1).sum()


@pytest.mark.parametrize("mode,value", [("threshold", 0.0), ("threshold", 1.0),
                                        ("threshold", 7.5), ("scale_factor", 0.0),
                                        ("scale_factor", 5000.0)])
def test_no_skip_settings_equal_dense(mode, value):
    rng = np.random.default_rng(2)
    q, k, v, _, _ = bi.varlen_prefill(rng, [300], [300], 2, 2, 16, 16)
    dense = ref.prefill(q, k, v, None, None, True, None, "dense", 0.0, 16, 16, "forward")
    r = ref.prefill(q, k, v, None, None, True, None, mode, value, 16, 16, "forward")
    np.testing.assert_array_equal(r["o"], dense["o"])
    np.testing.assert_array_equal(r["mask"], dense["mask"])
    assert r["lambdas"] == [0.0]


def _prefill_online(q, k, v, causal, lam, bq, bk, order):
    sq, hq, d = q.shape
    sk, hkv, _ = k.shape
    g = hq // hkv
    o = np.zeros((sq, hq, v.shape[2]))
    lse = np.full((sq, hq), -np.inf)
    nt, nqt = -(-sk // bk), -(-sq // bq)
    mask = np.zeros((hq, nqt, nt), np.uint8)
    ii, jj = np.arange(sq)[:, None], np.arange(sk)[None, :]
    see = (jj <= ii + sk - sq) if causal else np.ones((sq, sk), bool)
    for h in range(hq):
        s = (q[:, h].astype(np.float64) @ k[:, h // g].astype(np.float64).T) / math.sqrt(d)
        s = np.where(see, s, -np.inf)
        for qt in range(nqt):
            r0, r1 = qt * bq, min(sq, (qt + 1) * bq)
            vis = [t for t in range(nt) if see[r0:r1, t * bk:(t + 1) * bk].any()]
            if order == "forward":
                tiles = vis
            elif order == "reverse":
                tiles = vis[::-1]
            else:
                tiles = [vis[0]] + vis[1:][::-1] if vis else []
            oo, ll, dec = online_group(s[r0:r1], v[:, h // g].astype(np.float64), [tiles], bk,
                                       lam)
            o[r0:r1, h], lse[r0:r1, h] = oo, ll
            for t, kept in dec.items():
                mask[h, qt, t] = 1 if kept else 2
    return o, lse, mask.ravel()


@pytest.mark.parametrize("order", ref.ORDERS)
@pytest.mark.parametrize("causal,sq,sk", [(True, 150, 150), (True, 70, 190), (True, 90, 70),
                                          (False, 60, 130)])
def test_prefill_walk_matches_online_recurrence(order, causal, sq, sk):
    rng = np.random.default_rng(3 + sq + sk)
    q, k, v, _, _ = bi.varlen_prefill(rng, [sq], [sk], 4, 2, 16, 16)
    lam = 0.1
    r = ref.prefill(q, k, v, None, None, causal, None, "threshold", lam, 16, 16, order)
    o, lse, mask = _prefill_online(q, k, v, causal, lam, 16, 16, order)
    np.testing.assert_array_equal(r["mask"], mask)
    np.testing.assert_allclose(r["o"], o, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(np.isinf(r["lse"]), np.isinf(lse))
    np.testing.assert_allclose(r["lse"][np.isfinite(lse)], lse[np.isfinite(lse)], rtol=1e-12)
    sp = r["skipped"].sum() / r["visited"].sum()
    assert 0 < sp < 1, sp
    # section 2.9
    assert np.all(r["dropped"] <= r["skipped_seen"] * 16 * lam + 1e-15)


def _paged(rng, lens, ps, hkv, d, dv, nq, hq):
    q, kc, vc, bt, sl = bi.paged_decode(rng, lens, nq, hq, hkv, d, dv, ps)
    logical = []
    for b, L in enumerate(lens):
        j = np.arange(L)
        logical.append((kc[bt[b, j // ps], j % ps], vc[bt[b, j // ps], j % ps]))
    return q, kc, vc, bt, sl, logical


@pytest.mark.parametrize("splits,max_seed", [(1, False), (3, False), (3, True), (8, True)])
@pytest.mark.parametrize("nq", [1, 3])
def test_decode_walk_matches_online_recurrence(splits, max_seed, nq):
    rng = np.random.default_rng(10 * splits + nq + max_seed)
    lens = [0, 1, 2, 45, 130, 97]
    hkv, hq, d, dv, bk, ps = 2, 8, 16, 12, 16, 8
    q, kc, vc, bt, sl, logical = _paged(rng, lens, ps, hkv, d, dv, nq, hq)
    lam = 0.1
    r = ref.decode(q, kc, vc, bt, sl, None, "threshold", lam, bk, splits, max_seed)
    g = hq // hkv
    total_skipped = 0
    for b, L in enumerate(lens):
        kk, vv = logical[b]
        nt = -(-L // bk)
        off = sum(hkv * -(-x // bk) for x in lens[:b])
        for kh in range(hkv):
            rows = q[b, :, kh * g:(kh + 1) * g].astype(np.float64).reshape(nq * g, d)
            s = rows @ kk[:, kh].astype(np.float64).T / math.sqrt(d)
            tok = np.repeat(np.arange(nq), g)
            see = np.arange(L)[None, :] <= tok[:, None] + L - nq
            s = np.where(see, s, -np.inf)
            vis = list(range(nt))
            c = -(-nt // splits) if nt else 1
            chunks = [vis[i * c:(i + 1) * c] for i in range(splits) if vis[i * c:(i + 1) * c]]
            seeds = None
            if max_seed and L:
                t0 = s[:, :min(bk, L)].max(axis=1)
                seeds = [None] + [t0] * (len(chunks) - 1)
            o, lse, dec = online_group(s, vv[:, kh].astype(np.float64), chunks, bk, lam, seeds)
            np.testing.assert_allclose(r["o"][b, :, kh * g:(kh + 1) * g].reshape(nq * g, dv), o,
                                       rtol=1e-10, atol=1e-12)
            rl = r["lse"][b, :, kh * g:(kh + 1) * g].reshape(nq * g)
            np.testing.assert_array_equal(np.isinf(rl), np.isinf(lse))
            np.testing.assert_allclose(rl[np.isfinite(lse)], lse[np.isfinite(lse)], rtol=1e-12)
            for t in range(nt):
                assert r["mask"][off + kh * nt + t] == (1 if dec[t] else 2)
                total_skipped += not dec[t]
    assert total_skipped == r["skipped"].sum() > 0
    assert np.all(r["dropped"] <= r["skipped_seen"] * bk * lam + 1e-15)
    # 3-D Q gives the same as 4-D with one token
    if nq == 1:
        r3 = ref.decode(q[:, 0], kc, vc, bt, sl, None, "threshold", lam, bk, splits, max_seed)
        np.testing.assert_array_equal(r3["o"], r["o"][:, 0])
        np.testing.assert_array_equal(r3["mask"], r["mask"])


def test_dropped_mass_brute_force():
    rng = np.random.default_rng(5)
    q, k, v, _, _ = bi.varlen_prefill(rng, [200], [200], 1, 1, 16, 16)
    lam = 0.1
    r = ref.prefill(q, k, v, None, None, True, None, "threshold", lam, 16, 16, "reverse")
    mask = r["mask"].reshape(-1, 13)
    s = q[:, 0].astype(np.float64) @ k[:, 0].astype(np.float64).T / 4.0
    for i in range(200):
        row = s[i, :i + 1]
        p = np.exp(row - row.max())
        st = mask[i // 16][np.arange(i + 1) // 16]
        assert math.isclose(r["dropped"][i, 0], p[st == 2].sum() / p.sum(), rel_tol=1e-12,
                            abs_tol=1e-300)
    assert r["dropped"].max() > 0
