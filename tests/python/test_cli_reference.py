"""The `blasst` CLI against the independent float64 reference (blasst_ref.py).

Every test draws fresh random inputs (seed printed in every assertion message; set
BLASST_TEST_SEED to reproduce) and checks:
  * O and LSE to 1e-5 relative (||o - ref|| / ||ref|| and max|o - ref| / max|ref|), -inf LSE
    exactly where the reference has rows that see no key;
  * the skip mask byte for byte, hence every decision;
  * STATS.json: phase, heads, policy, lambda, geometry, tiles_visited, tiles_skipped, sparsity,
    per_head and per_sequence_head;
  * where asked, --dropped-mass against the reference (1e-6 absolute + 1e-4 relative) and the
    bound of BLASST.md 2.9.
Skipping cases use structured inputs (sink, recency, needles; blasst_inputs.py) and assert that
the sparsity is well inside (0, 1).
"""

import math

import numpy as np
import pytest

import blasst_inputs as bi
import blasst_ref as ref

RTOL = 1e-5
DROP_ATOL, DROP_RTOL = 1e-6, 1e-4


class Ctx:
    def __init__(self, seed, res, r):
        self.seed, self.res, self.r = seed, res, r

    def __call__(self, what):
        return (f"{what}\n  seed {self.seed} (rerun with BLASST_TEST_SEED={self.seed})\n"
                f"  closest decision in the reference: {self.r['min_margin']:.3g} from ln(lambda)\n"
                f"  cmd: {self.res.cmd}")


def _rel_close(name, got, want, msg):
    assert got.shape == want.shape, msg(f"{name}: shape {got.shape} != {want.shape}")
    assert np.all(np.isfinite(got)), msg(f"{name}: non-finite values")
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    if scale == 0.0:
        assert np.all(got == 0), msg(f"{name}: reference is all zero, CLI is not")
        return
    d = got.astype(np.float64) - want
    rel_norm = np.linalg.norm(d) / np.linalg.norm(want)
    rel_max = np.max(np.abs(d)) / scale
    at = np.unravel_index(np.argmax(np.abs(d)), d.shape)
    assert rel_norm <= RTOL and rel_max <= RTOL, msg(
        f"{name}: ||d||/||ref|| = {rel_norm:.3g}, max|d|/max|ref| = {rel_max:.3g} (tolerance "
        f"{RTOL}); worst at {tuple(int(x) for x in at)}: cli {got[at]!r} ref {want[at]!r}")


def _isclose(a, b, rel=1e-6, abs_=1e-12):
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=abs_)


def _nested_equal(got, want):
    """JSON [[..]..] (one list per sequence) equals the int array want [batch, heads]."""
    got = list(got)
    return len(got) == want.shape[0] and all(
        [int(x) for x in row] == want[i].tolist() and len(row) == want.shape[1]
        for i, row in enumerate(got))


def check(res, r, seed, *, phase, mode, value, geometry, check_dropped=False, sparse=None):
    """Compare one CLI result with the reference dict `r`.

    sparse: None, or (lo, hi): assert lo < reference sparsity < hi (the case really skips)."""
    msg = Ctx(seed, res, r)
    visited, skipped = r["visited"], r["skipped"]
    tot_v, tot_s = int(visited.sum()), int(skipped.sum())
    if sparse is not None:
        sp = tot_s / max(tot_v, 1)
        assert sparse[0] < sp < sparse[1], msg(
            f"test input did not give the intended sparsity: reference sparsity {sp:.3f} not in "
            f"{sparse} (test design problem, not a CLI bug)")

    # --- decisions: the skip mask, byte for byte -------------------------------------------
    m = res.mask
    assert m is not None and m.ndim == 1 and m.dtype == np.uint8, msg(
        f"skip mask must be 1-D uint8, got {None if m is None else (m.shape, m.dtype)}")
    assert m.shape == r["mask"].shape, msg(
        f"skip mask length {m.shape[0]} != reference {r['mask'].shape[0]}")
    bad = np.nonzero(m != r["mask"])[0]
    assert bad.size == 0, msg(
        f"skip mask differs in {bad.size} of {m.size} entries; first at {bad[:8].tolist()}: "
        f"cli {m[bad[:8]].tolist()} ref {r['mask'][bad[:8]].tolist()} "
        f"(0 not visited, 1 kept, 2 skipped)")

    # --- stats ----------------------------------------------------------------------------
    st = res.stats
    assert st["phase"] == phase, msg(f"stats phase {st['phase']!r} != {phase!r}")
    assert st["heads"] == ("query" if phase == "prefill" else "kv"), msg(
        f"stats heads {st['heads']!r}")
    assert st["tiles_visited"] == tot_v and st["tiles_skipped"] == tot_s, msg(
        f"stats totals visited/skipped {st['tiles_visited']}/{st['tiles_skipped']} != "
        f"reference {tot_v}/{tot_s}")
    want_sp = tot_s / tot_v if tot_v else 0.0
    assert _isclose(st["sparsity"], want_sp, rel=1e-9), msg(
        f"stats sparsity {st['sparsity']!r} != {want_sp!r}")
    psh = st["per_sequence_head"]
    assert _nested_equal(psh["visited"], visited), msg(
        f"per_sequence_head.visited {psh['visited']} != reference {visited.tolist()}")
    assert _nested_equal(psh["skipped"], skipped), msg(
        f"per_sequence_head.skipped {psh['skipped']} != reference {skipped.tolist()}")
    ph = st["per_head"]
    assert list(ph["visited"]) == visited.sum(axis=0).tolist(), msg(
        f"per_head.visited {ph['visited']} != {visited.sum(axis=0).tolist()}")
    assert list(ph["skipped"]) == skipped.sum(axis=0).tolist(), msg(
        f"per_head.skipped {ph['skipped']} != {skipped.sum(axis=0).tolist()}")
    lam = st["lambda"]
    assert len(lam) == len(r["lambdas"]) and all(
        _isclose(a, b) for a, b in zip(lam, r["lambdas"])), msg(
        f"stats lambda {lam} != reference {r['lambdas']}")
    assert st["policy"]["mode"] == mode, msg(f"policy.mode {st['policy']['mode']!r} != {mode!r}")
    if mode != "dense":
        assert _isclose(st["policy"]["value"], value), msg(
            f"policy.value {st['policy']['value']!r} != {value!r}")
    geo = st["geometry"]
    for key, want in geometry.items():
        assert key in geo and geo[key] == want, msg(f"geometry[{key!r}] = {geo.get(key)!r} "
                                                    f"!= {want!r} (geometry {geo})")
    if phase == "decode":
        assert "block_q" not in geo, msg(f"decode geometry has block_q: {geo}")

    # --- outputs --------------------------------------------------------------------------
    assert res.o.dtype == np.float32, msg(f"O dtype {res.o.dtype}")
    _rel_close("O", res.o, r["o"], msg)
    lse = res.lse
    assert lse.dtype == np.float32 and lse.shape == r["lse"].shape, msg(
        f"LSE {lse.dtype} {lse.shape} != float32 {r['lse'].shape}")
    ninf = np.isneginf(r["lse"])
    assert np.array_equal(np.isneginf(lse), ninf), msg(
        f"LSE -inf at {np.argwhere(np.isneginf(lse) != ninf)[:5].tolist()} (cli/ref disagree)")
    assert not np.any(np.isnan(lse)) and not np.any(np.isposinf(lse)), msg("LSE has nan/+inf")
    if np.any(~ninf):
        _rel_close("LSE", lse[~ninf], r["lse"][~ninf], msg)
    if ninf.any():
        zero_rows = res.o[ninf]
        assert np.all(zero_rows == 0), msg("O is not 0 on rows that see no key")

    if check_dropped:
        dm = res.dropped
        assert dm is not None and dm.dtype == np.float32 and dm.shape == r["dropped"].shape, msg(
            f"dropped mass {None if dm is None else (dm.dtype, dm.shape)}")
        err = np.abs(dm.astype(np.float64) - r["dropped"])
        tol = DROP_ATOL + DROP_RTOL * np.abs(r["dropped"])
        at = np.unravel_index(np.argmax(err - tol), err.shape)
        assert np.all(err <= tol), msg(
            f"dropped mass differs at {tuple(int(x) for x in at)}: cli {dm[at]!r} "
            f"ref {r['dropped'][at]!r}")
        # BLASST.md 2.9: dropped share <= (skipped tiles the row sees) * BK * lambda
        lam_row = _lambda_per_row(r, phase, dm.shape)
        bound = r["skipped_seen"] * r["block_k"] * lam_row
        assert np.all(r["dropped"] <= bound * (1 + 1e-12)), msg("reference breaks bound 2.9")
        over = dm.astype(np.float64) - bound * (1 + 1e-6)
        at = np.unravel_index(np.argmax(over), over.shape)
        assert np.all(over <= 0), msg(
            f"CLI dropped mass above the bound of 2.9 at {tuple(int(x) for x in at)}: "
            f"{dm[at]!r} > {bound[at]!r}")
        assert np.all(dm[r["skipped_seen"] == 0] == 0), msg(
            "CLI reports dropped mass on rows without skipped tiles")


def _lambda_per_row(r, phase, shape):
    lam = np.asarray(r["lambdas"], dtype=np.float64)
    if phase == "decode":
        return lam.reshape((-1,) + (1,) * (len(shape) - 1)) * np.ones(shape)
    seq_of_row = r["seq_of_row"]
    return lam[seq_of_row][:, None] * np.ones(shape)


def _seq_of_row(cu_q):
    cu_q = np.asarray(cu_q)
    return np.repeat(np.arange(len(cu_q) - 1), np.diff(cu_q))


def _policy_flags(mode, value):
    if mode == "threshold":
        return ["--threshold", repr(float(value))]
    if mode == "scale_factor":
        return ["--scale-factor", repr(float(value))]
    return []


def run_prefill(cli, seed, q, k, v, cu_q=None, cu_k=None, *, causal, mode="dense", value=0.0,
                block_q=None, block_k=None, order=None, scale=None, dropped=False, sparse=None,
                extra_flags=()):
    inputs = {"q": q, "k": k, "v": v}
    if cu_q is not None:
        inputs["cu-seqlens-q"] = np.asarray(cu_q, dtype=np.int32)
        inputs["cu-seqlens-k"] = np.asarray(cu_k, dtype=np.int32)
    flags = list(extra_flags) + _policy_flags(mode, value)
    if causal:
        flags.append("--causal")
    if block_q is not None:
        flags += ["--block-q", str(block_q)]
    if block_k is not None:
        flags += ["--block-k", str(block_k)]
    if order is not None:
        flags += ["--order", order]
    if scale is not None:
        flags += ["--softmax-scale", repr(float(scale))]
    outputs = ("out", "lse", "stats", "skip-mask") + (("dropped-mass",) if dropped else ())
    res = cli.invoke("attention", inputs, flags, outputs)
    bq, bk, od = block_q or 64, block_k or ref.prefill_block_k(q.shape[-1]), order or "reverse"
    r = ref.prefill(q, k, v, cu_q, cu_k, causal, scale, mode, value, bq, bk, od)
    r["seq_of_row"] = _seq_of_row(cu_q if cu_q is not None else [0, q.shape[0]])
    check(res, r, seed, phase="prefill", mode=mode, value=value,
          geometry={"block_q": bq, "block_k": bk, "order": od, "splits": 1, "max_seed": False},
          check_dropped=dropped, sparse=sparse)
    return res, r


def run_decode(cli, seed, q, kc, vc, bt, sl, *, mode="dense", value=0.0, block_k=None,
               splits=None, max_seed=False, scale=None, dropped=False, sparse=None):
    inputs = {"q": q, "k-cache": kc, "v-cache": vc, "block-table": bt, "seq-lens": sl}
    flags = _policy_flags(mode, value)
    if block_k is not None:
        flags += ["--block-k", str(block_k)]
    if splits is not None:
        flags += ["--splits", str(splits)]
    if max_seed:
        flags.append("--max-seed")
    if scale is not None:
        flags += ["--softmax-scale", repr(float(scale))]
    outputs = ("out", "lse", "stats", "skip-mask") + (("dropped-mass",) if dropped else ())
    res = cli.invoke("decode", inputs, flags, outputs)
    bk, ns = block_k or 128, splits or 1
    r = ref.decode(q, kc, vc, bt, sl, scale, mode, value, bk, ns, max_seed)
    check(res, r, seed, phase="decode", mode=mode, value=value,
          geometry={"block_k": bk, "splits": ns, "max_seed": bool(max_seed)},
          check_dropped=dropped, sparse=sparse)
    return res, r


SPARSE = (0.05, 0.95)


# ------------------------------------------------------------------------------------------
# prefill, dense
# ------------------------------------------------------------------------------------------

def test_prefill_dense_defaults(cli, seed, rng):
    """One sequence, non-causal, no geometry flags: defaults BQ 64, BK 128, reverse."""
    sq, sk = int(rng.integers(200, 400)), int(rng.integers(300, 700))
    q, k, v = bi.random_qkv(rng, sq, sk, 3, 3, 64, 64)
    run_prefill(cli, seed, q.astype(np.float32), k.astype(np.float32), v.astype(np.float32),
                causal=False)


@pytest.mark.parametrize("d", [128, 256])
def test_prefill_default_tile_follows_head_dim(cli, seed, rng, d):
    """Without --block-k the key tile is the CUDA prefill kernel's default at the head dim (192 at
    128, 80 at 256: blasst_ref.prefill_block_k), with a threshold so that tiles are skipped."""
    n = int(rng.integers(500, 800))
    q, k, v, _, _ = bi.varlen_prefill(rng, [n], [n], 2, 1, d, d)
    res, _ = run_prefill(cli, seed, q, k, v, causal=True, mode="threshold", value=bi.snap_lambda(0.1, 1 / math.sqrt(d)))
    assert res.stats["geometry"]["block_k"] == ref.prefill_block_k(d) == {128: 192, 256: 80}[d]


@pytest.mark.parametrize("causal", [False, True])
def test_prefill_dense_varlen_gqa(cli, seed, rng, causal):
    """Varlen with empty sequences (q 0 / k 0 / both), lengths 1, 17, 1013, Sq > Sk (rows that
    see nothing under the causal mask), Sq < Sk; GQA 8/2."""
    lens_q = [0, 1, 17, 1013, 4, 0, 9, 30]
    lens_k = [0, 1, 17, 1013, 0, 7, 3, 200]
    q, k, v, cq, ck = bi.varlen_prefill(rng, lens_q, lens_k, 8, 2, 64, 48, structure=False)
    run_prefill(cli, seed, q, k, v, cq, ck, causal=causal, block_q=64, block_k=128,
                order=str(rng.choice(ref.ORDERS)), dropped=True)


# ------------------------------------------------------------------------------------------
# prefill, skipping
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("order", ref.ORDERS)
def test_prefill_threshold_orders(cli, seed, rng, order):
    """Causal, GQA 8/2, one long sequence, every visit order, with the dropped-mass check."""
    n = int(rng.integers(1200, 1700))
    q, k, v, cq, ck = bi.varlen_prefill(rng, [n], [n], 8, 2, 64, 64)
    lam = bi.snap_lambda(0.1, 1 / 8)
    run_prefill(cli, seed, q, k, v, causal=True, mode="threshold", value=lam, block_q=64,
                block_k=128, order=order, dropped=True, sparse=SPARSE)


@pytest.mark.parametrize("block_q", [16, 64])
@pytest.mark.parametrize("block_k", [16, 32, 128])
def test_prefill_block_sizes(cli, seed, rng, block_q, block_k):
    """Odd geometries; a prefix-cached sequence (Sq < Sk) and one with Sq = Sk."""
    n = int(rng.integers(800, 1200))
    lens_q, lens_k = [n, 260], [n, 900]
    q, k, v, cq, ck = bi.varlen_prefill(rng, lens_q, lens_k, 4, 2, 64, 64)
    lam = bi.snap_lambda(0.1, 1 / 8)
    run_prefill(cli, seed, q, k, v, cq, ck, causal=True, mode="threshold", value=lam,
                block_q=block_q, block_k=block_k, order=str(rng.choice(ref.ORDERS)),
                dropped=True, sparse=SPARSE)


@pytest.mark.parametrize("order", ref.ORDERS)
def test_prefill_scale_factor_varlen(cli, seed, rng, order):
    """lambda_b = a / Sk_b per sequence: lengths 0, 1, 17 (lambda >= 1: dense), 1013, a
    prefix-cached 300/2000 sequence, and q 0 / k 64; GQA 8/2."""
    lens_q = [1, 17, 1013, 0, 300, 0]
    lens_k = [1, 17, 1013, 0, 2000, 64]
    q, k, v, cq, ck = bi.varlen_prefill(rng, lens_q, lens_k, 8, 2, 64, 64)
    run_prefill(cli, seed, q, k, v, cq, ck, causal=True, mode="scale_factor", value=100.0,
                block_q=64, block_k=64, order=order, dropped=True, sparse=SPARSE)


def test_prefill_noncausal_threshold(cli, seed, rng):
    sq, sk = int(rng.integers(200, 500)), int(rng.integers(700, 1100))
    q, k, v, cq, ck = bi.varlen_prefill(rng, [sq], [sk], 4, 4, 64, 64)
    lam = bi.snap_lambda(0.1, 1 / 8)
    run_prefill(cli, seed, q, k, v, causal=False, mode="threshold", value=lam, block_q=64,
                block_k=32, order=str(rng.choice(ref.ORDERS)), dropped=True, sparse=SPARSE)


def test_prefill_mqa(cli, seed, rng):
    """MQA: 6 query heads on one KV head; causal with Sq < Sk."""
    q, k, v, cq, ck = bi.varlen_prefill(rng, [333, 700], [1000, 700], 6, 1, 64, 64)
    lam = bi.snap_lambda(0.1, 1 / 8)
    run_prefill(cli, seed, q, k, v, cq, ck, causal=True, mode="threshold", value=lam,
                block_q=64, block_k=128, order=str(rng.choice(ref.ORDERS)), dropped=True,
                sparse=SPARSE)


@pytest.mark.parametrize("dqk,dv,scale", [(16, 48, None), (64, 32, None), (576, 512, 1 / 32)])
def test_prefill_head_dims(cli, seed, rng, dqk, dv, scale):
    """d_qk != d_v (including MLA's 576/512 with an explicit --softmax-scale)."""
    n = 300 if dqk == 576 else 800
    s = scale if scale is not None else 1 / math.sqrt(dqk)
    q, k, v, cq, ck = bi.varlen_prefill(rng, [n, 50], [n, 120], 4, 2, dqk, dv, scale=s)
    lam = bi.snap_lambda(0.1, s)
    run_prefill(cli, seed, q, k, v, cq, ck, causal=True, mode="threshold", value=lam,
                block_q=16, block_k=32, order=str(rng.choice(ref.ORDERS)), scale=scale,
                dropped=True, sparse=SPARSE)


def test_prefill_float16(cli, seed, rng):
    q, k, v, cq, ck = bi.varlen_prefill(rng, [17, 900, 130], [17, 900, 500], 4, 1, 64, 64,
                                        dtype=np.float16)
    assert q.dtype == np.float16
    lam = bi.snap_lambda(0.1, 1 / 8)
    run_prefill(cli, seed, q, k, v, cq, ck, causal=True, mode="threshold", value=lam,
                block_q=64, block_k=64, order=str(rng.choice(ref.ORDERS)), dropped=True,
                sparse=SPARSE)


def test_prefill_float16_dense_random(cli, seed, rng):
    q, k, v = bi.random_qkv(rng, 150, 260, 2, 1, 32, 32)
    run_prefill(cli, seed, q.astype(np.float16), k.astype(np.float16), v.astype(np.float16),
                causal=True)


@pytest.mark.parametrize("mode,value", [("threshold", 0.0), ("threshold", 1.0),
                                        ("threshold", 3.5), ("scale_factor", 0.0),
                                        ("scale_factor", 1e6)])
def test_prefill_values_that_mean_dense(cli, seed, rng, mode, value):
    """0, lambda >= 1 and a >= Sk are dense: nothing skipped, lambda reported as 0."""
    q, k, v, cq, ck = bi.varlen_prefill(rng, [300], [300], 2, 2, 64, 64)
    res, r = run_prefill(cli, seed, q, k, v, causal=True, mode=mode, value=value, block_q=16,
                         block_k=16)
    assert r["skipped"].sum() == 0


# ------------------------------------------------------------------------------------------
# decode
# ------------------------------------------------------------------------------------------

DECODE_LENS = [0, 1, 2, 17, 1013]  # plus two random lengths per case


@pytest.mark.parametrize("max_seed", [False, True], ids=["noseed", "maxseed"])
@pytest.mark.parametrize("splits", [1, 3, 8])
@pytest.mark.parametrize("q_tokens", [1, 3])
@pytest.mark.parametrize("page_size", [1, 16, 64])
def test_decode_paged(cli, seed, rng, page_size, q_tokens, splits, max_seed):
    """Paged decode, GQA 8/2, shuffled block table, lengths 0, 1, 2 (< q_tokens=3: token 0 sees
    nothing), 17, 1013 and two random ones; threshold or scale factor."""
    lens = DECODE_LENS + [int(x) for x in rng.integers(400, 2500, size=2)]
    rng.shuffle(lens)
    q, kc, vc, bt, sl = bi.paged_decode(rng, lens, q_tokens, 8, 2, 64, 64, page_size)
    if q_tokens == 1 and rng.random() < 0.5:
        q = q[:, 0]  # the 3-D form [batch, Hq, d]
    # 8 unseeded splits of long tiles leave few tiles per split to skip (BLASST.md 6): keep the
    # tiles short there so that the case still skips
    block_k = int(rng.choice([16, 32] if (splits == 8 and not max_seed) else [16, 32, 64, 128]))
    if rng.random() < 0.5:
        mode, value = "threshold", bi.snap_lambda(0.1, 1 / 8)
    else:
        mode, value = "scale_factor", 150.0
    run_decode(cli, seed, q, kc, vc, bt, sl, mode=mode, value=value, block_k=block_k,
               splits=splits, max_seed=max_seed, dropped=True, sparse=(0.02, 0.98))


def test_decode_dense_defaults(cli, seed, rng):
    """Dense, continuous random inputs, no geometry flags (BK 128, 1 split)."""
    lens = [int(x) for x in rng.integers(1, 900, size=3)] + [0]
    q, kc, vc, bt, sl = bi.paged_decode(rng, lens, 2, 4, 2, 64, 64, 16, structure=False)
    run_decode(cli, seed, q, kc, vc, bt, sl)


def test_decode_mqa_odd_group(cli, seed, rng):
    """MQA with 5 query heads, 4 query tokens, splits 3 with max seeding."""
    lens = [1500, 3, 600]
    q, kc, vc, bt, sl = bi.paged_decode(rng, lens, 4, 5, 1, 64, 64, 16)
    run_decode(cli, seed, q, kc, vc, bt, sl, mode="threshold", value=bi.snap_lambda(0.1, 1 / 8),
               block_k=32, splits=3, max_seed=True, dropped=True, sparse=(0.02, 0.98))


def test_decode_mla_dims(cli, seed, rng):
    """d_qk 576 / d_v 512 (MLA), one KV head, 8 query heads, explicit softmax scale."""
    lens = [700, 64, 1]
    q, kc, vc, bt, sl = bi.paged_decode(rng, lens, 1, 8, 1, 576, 512, 64, scale=1 / 32)
    run_decode(cli, seed, q, kc, vc, bt, sl, mode="threshold", value=bi.snap_lambda(0.1, 1 / 32),
               block_k=64, splits=2, scale=1 / 32, dropped=True, sparse=(0.02, 0.98))


def test_decode_float16(cli, seed, rng):
    lens = [900, 40, 0, 1300]
    q, kc, vc, bt, sl = bi.paged_decode(rng, lens, 3, 8, 2, 64, 64, 16, dtype=np.float16)
    run_decode(cli, seed, q, kc, vc, bt, sl, mode="scale_factor", value=150.0, block_k=64,
               splits=3, max_seed=bool(rng.random() < 0.5), dropped=True, sparse=(0.02, 0.98))


def test_decode_unused_table_entries_not_checked(cli, seed, rng):
    """docs/CLI.md: only block-table entries covering seq_len positions are read and checked;
    the rest hold -1 here."""
    lens = [300, 0, 129]
    q, kc, vc, bt, sl = bi.paged_decode(rng, lens, 1, 4, 2, 64, 64, 16, unused_entry=-1)
    assert (bt == -1).any()
    run_decode(cli, seed, q, kc, vc, bt, sl, mode="threshold", value=bi.snap_lambda(0.1, 1 / 8),
               block_k=16)


# ------------------------------------------------------------------------------------------
# flag syntax, threads, empty batches
# ------------------------------------------------------------------------------------------

def test_flag_equals_syntax_and_threads(cli, seed, rng):
    """`--flag=value` equals `--flag value`; --threads 1 and 3 give the same decisions and the
    reference's outputs."""
    q, k, v, cq, ck = bi.varlen_prefill(rng, [500, 77], [800, 77], 4, 2, 64, 64)
    lam = bi.snap_lambda(0.1, 1 / 8)
    base = dict(causal=True, mode="threshold", value=lam, block_q=16, block_k=32,
                order="sink-first", dropped=True, sparse=SPARSE)
    res1, r = run_prefill(cli, seed, q, k, v, cq, ck, extra_flags=["--threads", "1"], **base)
    res3, _ = run_prefill(cli, seed, q, k, v, cq, ck, extra_flags=["--threads=3"], **base)
    inputs = {"q": q, "k": k, "v": v, "cu-seqlens-q": cq, "cu-seqlens-k": ck}
    res_eq = cli.invoke("attention", inputs,
                        ["--causal", f"--threshold={lam!r}", "--block-q=16", "--block-k=32",
                         "--order=sink-first", "--threads=2"])
    msg = f"seed {seed} (BLASST_TEST_SEED={seed})\n  cmd: {res_eq.cmd}"
    assert np.array_equal(res_eq.mask, r["mask"]), msg
    assert res_eq.stats["geometry"] == res1.stats["geometry"], msg
    np.testing.assert_allclose(res_eq.o, res1.o, rtol=1e-6, atol=1e-6, err_msg=msg)
    np.testing.assert_allclose(res3.o, res1.o, rtol=1e-6, atol=1e-6, err_msg=msg)


@pytest.mark.parametrize("page_size", [1, 16, 100])
def test_prefill_paged_cache_equals_packed(cli, seed, rng, page_size):
    """Chunked prefill against a paged cache (--k-cache, --v-cache, --block-table; NaN in every
    unused slot): the packed run's outputs bit for bit, which the reference checks."""
    q, k, v, cq, ck = bi.varlen_prefill(rng, [17, 0, 120], [40, 5, 300], 4, 2, 32, 16)
    res, _ = run_prefill(cli, seed, q, k, v, cq, ck, causal=True, mode="scale_factor", value=4.0,
                         block_q=16, block_k=32)
    kc, vc, table = bi.paged_kv(rng, k, v, ck, page_size)
    paged = cli.invoke("attention", {"q": q, "k-cache": kc, "v-cache": vc, "block-table": table,
                                     "cu-seqlens-q": cq, "cu-seqlens-k": ck},
                       ["--causal", "--scale-factor", "4", "--block-q", "16", "--block-k", "32"])
    assert np.array_equal(paged.o, res.o), f"seed {seed}"
    assert np.array_equal(paged.lse, res.lse, equal_nan=True) and np.array_equal(paged.mask, res.mask)
    assert paged.stats["tiles_skipped"] == res.stats["tiles_skipped"]


def test_prefill_all_sequences_empty(cli, seed, rng):
    """Nothing to attend to at all: O all zero, LSE all -inf, nothing visited, sparsity 0."""
    q, k, v, cq, ck = bi.varlen_prefill(rng, [0, 3, 0], [0, 0, 5], 4, 2, 64, 32,
                                        structure=False)
    res, r = run_prefill(cli, seed, q, k, v, cq, ck, causal=True, mode="scale_factor",
                         value=2.0, dropped=True)
    assert r["visited"].sum() == 0 and res.stats["sparsity"] == 0


@pytest.mark.parametrize("total_k", [0, 5])
def test_prefill_no_query_rows(cli, seed, rng, total_k):
    """total_q = 0 (a batch of empty prompts) is a valid input: empty O and LSE."""
    q, k, v, cq, ck = bi.varlen_prefill(rng, [0, 0], [0, total_k], 2, 1, 16, 8,
                                        structure=False)
    assert q.shape == (0, 2, 16)
    res, r = run_prefill(cli, seed, q, k, v, cq, ck, causal=False)
    assert res.o.shape == (0, 2, 8) and res.lse.shape == (0, 2) and res.mask.size == 0


def test_decode_empty_batch(cli, seed, rng):
    """batch = 0 is a valid input: empty O and LSE."""
    q, kc, vc, bt, sl = bi.paged_decode(rng, [], 2, 4, 2, 16, 8, 4, structure=False)
    assert q.shape == (0, 2, 4, 16) and bt.shape[0] == 0
    res, r = run_decode(cli, seed, q, kc, vc, bt, sl)
    assert res.o.shape == (0, 2, 4, 8) and res.mask.size == 0


def test_decode_all_sequences_empty(cli, seed, rng):
    q, kc, vc, bt, sl = bi.paged_decode(rng, [0, 0], 2, 4, 1, 32, 32, 8, structure=False)
    res, r = run_decode(cli, seed, q, kc, vc, bt, sl, mode="threshold", value=0.01, splits=4,
                        max_seed=True, dropped=True)
    assert r["visited"].sum() == 0 and res.stats["sparsity"] == 0


# ------------------------------------------------------------------------------------------
# random configurations (nothing tuned: geometry, heads, dims, lengths, policy all drawn)
# ------------------------------------------------------------------------------------------

def _pow2_scale(rng, dqk):
    """Default scale where 1/sqrt(d_qk) is a power of two (exact float32 logits), else an
    explicit power-of-two --softmax-scale near it."""
    if dqk in (16, 64, 256) and rng.random() < 0.8:
        return None, 1 / math.sqrt(dqk)
    s = 2.0 ** -round(math.log2(math.sqrt(dqk)) + rng.choice([-0.5, 0.5]))
    return s, s


def _policy(rng, scale, lens):
    """A random policy; thresholds and scale factors snapped away from ties (blasst_inputs)."""
    u = rng.random()
    if u < 0.15:
        return "dense", 0.0
    lam0 = math.exp(rng.uniform(math.log(1e-3), math.log(0.5)))
    if u < 0.6:
        return "threshold", bi.snap_lambda(lam0, scale)
    return "scale_factor", bi.snap_scale_factor(float(np.float32(lam0 * max(int(np.median(lens)), 1))), lens, scale)


def _strengths(rng):
    return dict(sink=rng.uniform(0, 14), local=rng.uniform(0, 12), needle=rng.uniform(0, 8),
                noise=rng.uniform(0.3, 1.5), n_needles=int(rng.integers(0, 6)))


@pytest.mark.parametrize("case", range(30))
def test_prefill_random_config(cli, seed, rng, case):
    rng = np.random.default_rng([seed, case])  # distinct cases even with BLASST_TEST_SEED
    hkv = int(rng.choice([1, 2, 3]))
    g = int(rng.choice([g for g in (1, 2, 4, 5) if g * hkv <= 8]))
    hq = hkv * g
    dqk = int(rng.choice([16, 32, 64, 128, 256]))
    dv = int(rng.choice([8, 16, 64, 96]))
    flag_scale, scale = _pow2_scale(rng, dqk)
    bq = int(rng.choice([1, 3, 16, 64, 100]))
    bk = int(rng.choice([1, 5, 16, 48, 128, 256]))
    causal = bool(rng.random() < 0.7)
    order = str(rng.choice(ref.ORDERS))
    nb = int(rng.integers(1, 5))
    cap = 1500
    while True:
        lens_k = [0 if rng.random() < 0.1 else int(rng.integers(1, cap)) for _ in range(nb)]
        lens_q = []
        for sk in lens_k:
            u = rng.random()
            if u < 0.4:
                lens_q.append(sk)
            elif u < 0.85:
                lens_q.append(int(rng.integers(0, sk + 1)))
            else:
                lens_q.append(int(rng.integers(0, 200)))
        if sum(lens_q) == 0:
            continue  # total_q = 0 is covered by test_prefill_no_query_rows
        work = sum(hq * -(-sq // bq) * -(-sk // bk) for sq, sk in zip(lens_q, lens_k))
        flops = sum(hq * sq * sk for sq, sk in zip(lens_q, lens_k))
        if work <= 30000 and flops <= 8_000_000:
            break
        cap = max(8, cap * 2 // 3)
    dtype = np.float16 if rng.random() < 0.25 else np.float32
    q, k, v, cq, ck = bi.varlen_prefill(rng, lens_q, lens_k, hq, hkv, dqk, dv, dtype=dtype,
                                        scale=scale, **_strengths(rng))
    mode, value = _policy(rng, scale, lens_k)
    varlen = nb > 1 or rng.random() < 0.5
    print(f"prefill: lens_q {lens_q} lens_k {lens_k} hq {hq} hkv {hkv} d {dqk}/{dv} "
          f"BQ {bq} BK {bk} {order} causal {causal} {np.dtype(dtype).name} {mode} {value}")
    run_prefill(cli, seed, q, k, v, cq if varlen else None, ck if varlen else None,
                causal=causal, mode=mode, value=value, block_q=bq, block_k=bk, order=order,
                scale=flag_scale, dropped=True)


@pytest.mark.parametrize("case", range(30))
def test_decode_random_config(cli, seed, rng, case):
    rng = np.random.default_rng([seed, case])  # distinct cases even with BLASST_TEST_SEED
    hkv = int(rng.choice([1, 2, 4]))
    g = int(rng.choice([1, 3, 4, 8]))
    hq = hkv * g
    nq = int(rng.choice([1, 2, 3, 5]))
    dqk = int(rng.choice([16, 32, 64, 128, 256]))
    dv = int(rng.choice([8, 16, 64, 96]))
    flag_scale, scale = _pow2_scale(rng, dqk)
    ps = int(rng.choice([1, 2, 16, 64, 128]))
    bk = int(rng.choice([1, 7, 16, 64, 128, 256]))
    splits = int(rng.choice([1, 2, 3, 5, 8, 16, 64]))
    max_seed = bool(rng.random() < 0.5)
    nb = int(rng.integers(1, 6))
    cap = 3000
    while True:
        lens = [int(rng.choice([0, 1, 2, int(rng.integers(1, cap))], p=[.05, .05, .05, .85]))
                for _ in range(nb)]
        if sum(hkv * -(-L // bk) for L in lens) <= 20000:
            break
        cap = max(8, cap * 2 // 3)
    dtype = np.float16 if rng.random() < 0.25 else np.float32
    q, kc, vc, bt, sl = bi.paged_decode(rng, lens, nq, hq, hkv, dqk, dv, ps, dtype=dtype,
                                        scale=scale, extra_pages=int(rng.integers(0, 4)),
                                        **_strengths(rng))
    if nq == 1 and rng.random() < 0.5:
        q = q[:, 0]
    mode, value = _policy(rng, scale, lens)
    print(f"decode: lens {lens} T {nq} hq {hq} hkv {hkv} d {dqk}/{dv} page {ps} BK {bk} "
          f"splits {splits} max_seed {max_seed} {np.dtype(dtype).name} {mode} {value}")
    run_decode(cli, seed, q, kc, vc, bt, sl, mode=mode, value=value, block_k=bk, splits=splits,
               max_seed=max_seed, scale=flag_scale, dropped=True)
