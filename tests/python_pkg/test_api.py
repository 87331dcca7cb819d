"""The Python package against the float64 reference of tests/python (numpy on the CPU engine, torch
where installed) and its error paths; CUDA tests skip without a GPU."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
import blasst  # noqa: E402
import blasst_inputs as inputs  # noqa: E402
import blasst_ref as ref  # noqa: E402

try:
    import torch
except ImportError:  # torch is optional
    torch = None


@pytest.fixture
def rng():
    seed = int(os.environ.get("BLASST_TEST_SEED", np.random.SeedSequence().entropy % (2**32)))
    print(f"seed {seed}")
    return np.random.default_rng(seed)


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


@pytest.mark.parametrize("scale_factor", [None, 4.0])
def test_prefill_matches_reference(rng, scale_factor):
    q, k, v, cu_q, cu_k = inputs.varlen_prefill(rng, [17, 0, 300], [40, 5, 700], 8, 2, 64, 32)
    mode = "scale_factor" if scale_factor else "dense"
    want = ref.prefill(q, k, v, cu_q, cu_k, causal=True, mode=mode, value=scale_factor or 0.0, block_q=16,
                       block_k=32, order="sink-first")
    o, lse, stats = blasst.prefill(q, k, v, causal=True, scale_factor=scale_factor, cu_seqlens_q=cu_q,
                                   cu_seqlens_k=cu_k, block_q=16, block_k=32, order="sink-first",
                                   return_lse=True, return_stats=True)
    assert o.shape == want["o"].shape and o.dtype == np.float32
    assert rel(o, want["o"]) < 1e-5
    finite = np.isfinite(want["lse"])
    assert np.array_equal(finite, np.isfinite(lse))
    assert np.allclose(lse[finite], want["lse"][finite], rtol=1e-5, atol=1e-5)
    assert stats.visited == want["visited"].reshape(-1).tolist()
    assert stats.skipped == want["skipped"].reshape(-1).tolist()
    if scale_factor:
        assert 0.05 < stats.sparsity < 0.95
    vis, skp = stats.per_head()
    assert sum(vis) == stats.tiles_visited and sum(skp) == stats.tiles_skipped


def test_decode_matches_reference(rng):
    q, kc, vc, bt, sl = inputs.paged_decode(rng, [1, 300, 1000], 2, 8, 2, 64, 64, 16)
    want = ref.decode(q, kc, vc, bt, sl, mode="scale_factor", value=8.0, block_k=32, splits=3, max_seed=True)
    o, stats = blasst.decode(q, kc, vc, bt, sl, scale_factor=8.0, block_k=32, splits=3, max_seed=True,
                             return_stats=True)
    assert rel(o, want["o"]) < 1e-5
    assert stats.skipped == want["skipped"].reshape(-1).tolist()
    o3 = blasst.decode(q[:, 1], kc, vc, bt, sl - 1)  # 3-D q: one token per sequence
    assert o3.shape == (3, 8, 64)


def test_threshold_zero_is_dense_bitwise(rng):
    q, k, v, _, _ = inputs.varlen_prefill(rng, [200], [200], 4, 4, 64, 64)
    assert np.array_equal(blasst.prefill(q, k, v, causal=True), blasst.prefill(q, k, v, causal=True, threshold=0.0))


def test_float16_inputs_give_float16_output(rng):
    q, k, v, _, _ = inputs.varlen_prefill(rng, [64], [64], 2, 2, 32, 32, dtype=np.float16)
    o = blasst.prefill(q, k, v)
    assert o.dtype == np.float16
    want = ref.prefill(q, k, v)["o"]
    assert rel(o, want) < 2e-3


def test_strided_inputs_need_no_copy(rng):
    qkv = rng.standard_normal((50, 3, 4, 64)).astype(np.float32)  # packed [tokens, 3, heads, d]
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    assert not q.flags.c_contiguous
    assert rel(blasst.prefill(q, k, v), ref.prefill(q, k, v)["o"]) < 1e-5


def test_errors(rng):
    q = rng.standard_normal((10, 4, 32)).astype(np.float32)
    k = rng.standard_normal((12, 3, 32)).astype(np.float32)
    with pytest.raises(ValueError, match="multiple"):
        blasst.prefill(q, k, k)  # 4 query heads over 3 KV heads
    k2 = k[:, :2]
    with pytest.raises(ValueError, match="scale_factor or threshold"):
        blasst.prefill(q, k2, k2, scale_factor=1.0, threshold=0.1)
    with pytest.raises(ValueError, match="threshold"):
        blasst.prefill(q, k2, k2, threshold=-1.0)
    with pytest.raises(ValueError, match="visit order"):
        blasst.prefill(q, k2, k2, order="sideways")
    with pytest.raises(TypeError):
        blasst.prefill(q.astype(np.float64), k2, k2)
    with pytest.raises(ValueError, match="dimensions"):
        blasst.prefill(q[0], k2, k2)
    cu = np.array([0, 10], np.int32)
    with pytest.raises(ValueError, match="together"):
        blasst.prefill(q, k2, k2, cu_seqlens_q=cu)
    with pytest.raises(TypeError, match="int32"):
        blasst.prefill(q, k2, k2, cu_seqlens_q=cu.astype(np.int64), cu_seqlens_k=np.array([0, 12], np.int64))
    qd, kc, vc, bt, sl = inputs.paged_decode(rng, [5], 1, 4, 2, 32, 32, 4)
    with pytest.raises(ValueError, match="block_table"):
        blasst.decode(qd, kc, vc, bt + 1000, sl)
    with pytest.raises(ValueError, match="splits"):
        blasst.decode(qd, kc, vc, bt, sl, splits=0)


@pytest.mark.skipif(torch is None, reason="torch not installed")
def test_torch_cpu_tensors(rng):
    q, k, v, _, _ = inputs.varlen_prefill(rng, [100], [100], 4, 2, 64, 64)
    o = blasst.prefill(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), causal=True)
    assert isinstance(o, torch.Tensor)
    assert rel(o.numpy(), ref.prefill(q, k, v, causal=True)["o"]) < 1e-5


cuda_ok = torch is not None and torch.cuda.is_available() and blasst.with_cuda \
    and torch.cuda.get_device_capability() == (9, 0)


def _decode_on_cuda(q, kc, vc, bt, sl):
    """A decode batch on the GPU: Q and the caches in bfloat16, the table and lengths as they are."""
    dev = lambda x: torch.from_numpy(x).to("cuda", torch.bfloat16)
    return dev(q), dev(kc), dev(vc), torch.from_numpy(bt).cuda(), torch.from_numpy(sl).cuda()


@pytest.mark.skipif(not cuda_ok, reason="no sm_90 GPU (or torch / the CUDA backend) here")
def test_cuda_decode_matches_cpu_engine(rng):
    q, kc, vc, bt, sl = inputs.paged_decode(rng, [1, 3000, 9000], 1, 32, 8, 128, 128, 64)
    qg, kg, vg, btg, slg = _decode_on_cuda(q, kc, vc, bt, sl)
    o, lse, stats = blasst.decode(qg, kg, vg, btg, slg, scale_factor=16.0, max_seed=True, return_lse=True,
                                  return_stats=True, max_seq_len=9000)
    torch.cuda.synchronize()
    assert o.dtype == torch.bfloat16 and o.is_cuda
    # The CPU engine on the same bf16 values with the plan's split count is the oracle.
    bf = lambda x: x.cpu().float().numpy()
    splits = blasst._C.decode_cuda_plan(qg, kg, vg, btg, slg, 0.0, 1, 16.0, 128, 0, True, 9000).splits
    want, want_stats = blasst.decode(bf(qg), bf(kg), bf(vg), bt, sl, scale_factor=16.0, splits=splits,
                                     max_seed=True, return_stats=True)
    assert rel(o.float().cpu().numpy(), want) < 1.2e-2
    mism = sum(a != b for a, b in zip(stats.skipped, want_stats.skipped))
    assert mism <= max(1, stats.tiles_visited // 1000)


@pytest.mark.skipif(not cuda_ok, reason="no sm_90 GPU (or torch / the CUDA backend) here")
def test_cuda_dense_decode_on_small_rings(rng):
    # Dense with long chunks (64 tiles over 2 splits): two CTAs per SM of one K and one V stage.
    q, kc, vc, bt, sl = inputs.paged_decode(rng, [8192, 17, 5000], 1, 32, 8, 128, 128, 16)
    qg, kg, vg, btg, slg = _decode_on_cuda(q, kc, vc, bt, sl)
    plan = blasst.DecodePlan(qg, kg, vg, btg, slg, splits=2, max_seq_len=8192)
    assert plan.plan.small_rings
    o = plan.run(qg, kg, vg, btg, slg)
    torch.cuda.synchronize()
    bf = lambda x: x.cpu().float().numpy()
    want = blasst.decode(bf(qg), bf(kg), bf(vg), bt, sl, splits=2)
    assert rel(o.float().cpu().numpy(), want) < 1.2e-2


@pytest.mark.skipif(not cuda_ok, reason="no sm_90 GPU (or torch / the CUDA backend) here")
@pytest.mark.parametrize("d", [64, 128, 256])
def test_cuda_prefill_matches_cpu_engine(rng, d):
    q, k, v, cu_q, cu_k = inputs.varlen_prefill(rng, [17, 0, 700, 300], [40, 5, 700, 1300], 8, 2, d, d)
    dev = lambda x: torch.from_numpy(x).to("cuda", torch.bfloat16)
    qg, kg, vg = dev(q), dev(k), dev(v)
    cqg, ckg = torch.from_numpy(cu_q).cuda(), torch.from_numpy(cu_k).cuda()
    o, lse, stats = blasst.prefill(qg, kg, vg, causal=True, scale_factor=64.0, cu_seqlens_q=cqg, cu_seqlens_k=ckg,
                                   max_seqlen_q=700, return_lse=True, return_stats=True)
    torch.cuda.synchronize()
    assert o.dtype == torch.bfloat16 and o.is_cuda and lse.dtype == torch.float32
    bf = lambda x: x.cpu().float().numpy()
    want, want_lse, want_stats = blasst.prefill(bf(qg), bf(kg), bf(vg), causal=True, scale_factor=64.0,
                                                cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, return_lse=True,
                                                return_stats=True)
    assert stats.batch == 4 and stats.heads == 8 and stats.lambdas == want_stats.lambdas
    assert stats.visited == want_stats.visited
    mism = sum(a != b for a, b in zip(stats.skipped, want_stats.skipped))
    assert mism <= max(1, stats.tiles_visited // 1000)
    assert 0 < stats.sparsity < 1  # random inputs: few tiles fall below the threshold
    if mism == 0:  # the same decisions: the same attention up to bf16 rounding
        assert rel(o.float().cpu().numpy(), want) < 1.2e-2
        finite = np.isfinite(want_lse)
        assert np.array_equal(finite, np.isfinite(lse.cpu().numpy()))
        assert np.allclose(lse.cpu().numpy()[finite], want_lse[finite], atol=2e-3, rtol=1e-4)
    # Dense, without cu_seqlens (one sequence), from strided views: no copy needed.
    qt = qg[:300].transpose(0, 1).contiguous().transpose(0, 1)  # [300, Hq, d] with token stride d
    o1 = blasst.prefill(qt, kg[:300], vg[:300], causal=False)
    want1 = blasst.prefill(bf(qt), bf(kg[:300]), bf(vg[:300]), causal=False)
    assert rel(o1.float().cpu().numpy(), want1) < 1.2e-2


@pytest.mark.parametrize("page_size", [1, 16, 100])
def test_paged_prefill_equals_packed(rng, page_size):
    q, k, v, cu_q, cu_k = inputs.varlen_prefill(rng, [17, 0, 120], [40, 5, 300], 4, 2, 32, 16)
    kc, vc, table = inputs.paged_kv(rng, k, v, cu_k, page_size)
    kw = dict(causal=True, scale_factor=4.0, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, block_q=16, block_k=32,
              return_lse=True, return_stats=True)
    o, lse, stats = blasst.prefill(q, kc, vc, block_table=table, **kw)
    want, want_lse, want_stats = blasst.prefill(q, k, v, **kw)
    assert np.array_equal(o, want) and np.array_equal(lse, want_lse, equal_nan=True)
    assert stats.skipped == want_stats.skipped and stats.visited == want_stats.visited
    with pytest.raises(ValueError):  # the key counts come from cu_seqlens
        blasst.prefill(q, kc, vc, block_table=table)
    bad = table.copy()
    bad[2, 0] = kc.shape[0]  # a page outside the cache
    with pytest.raises(ValueError):
        blasst.prefill(q, kc, vc, block_table=bad, **kw)
    wide = np.concatenate([table, table], axis=1)[:, :table.shape[1]]  # rows not max_pages apart
    with pytest.raises(ValueError, match="contiguous"):
        blasst.prefill(q, kc, vc, block_table=wide, **kw)


def test_decode_block_table_rows_must_be_contiguous(rng):
    q, kc, vc, bt, sl = inputs.paged_decode(rng, [100, 300], 1, 4, 2, 32, 32, 16)
    wide = np.concatenate([bt, bt], axis=1)[:, :1]  # one column of a wider table: rows 2 M apart
    with pytest.raises(ValueError, match="contiguous"):
        blasst.decode(q, kc, vc, wide, np.minimum(sl, 16).astype(np.int32))


@pytest.mark.skipif(not cuda_ok, reason="no sm_90 GPU (or torch / the CUDA backend) here")
def test_cuda_paged_prefill_equals_packed(rng):
    q, k, v, cu_q, cu_k = inputs.varlen_prefill(rng, [17, 0, 700, 300], [40, 5, 700, 1300], 8, 2, 128, 128)
    kc, vc, table = inputs.paged_kv(rng, k, v, cu_k, 64)
    dev = lambda x: torch.from_numpy(x).to("cuda", torch.bfloat16)
    cqg, ckg, tg = torch.from_numpy(cu_q).cuda(), torch.from_numpy(cu_k).cuda(), torch.from_numpy(table).cuda()
    kw = dict(causal=True, scale_factor=64.0, cu_seqlens_q=cqg, cu_seqlens_k=ckg, max_seqlen_q=700,
              return_lse=True)
    o, lse = blasst.prefill(dev(q), dev(kc), dev(vc), block_table=tg, **kw)
    want, want_lse = blasst.prefill(dev(q), dev(k), dev(v), **kw)
    torch.cuda.synchronize()
    assert torch.equal(o, want)
    torch.testing.assert_close(lse, want_lse, rtol=0, atol=0, equal_nan=True)


@pytest.mark.skipif(not cuda_ok, reason="no sm_90 GPU (or torch / the CUDA backend) here")
def test_cuda_prefill_errors(rng):
    q, k, v, _, _ = inputs.varlen_prefill(rng, [10], [10], 4, 2, 96, 96)
    dev = lambda x, dt=torch.bfloat16: torch.from_numpy(x).to("cuda", dt)
    with pytest.raises(ValueError, match="head dims 64, 128 and 256"):
        blasst.prefill(dev(q), dev(k), dev(v))
    q, k, v, _, _ = inputs.varlen_prefill(rng, [10], [10], 4, 2, 64, 64)
    with pytest.raises(ValueError, match="bfloat16 or float16"):
        blasst.prefill(dev(q, torch.float32), dev(k, torch.float32), dev(v, torch.float32))
    with pytest.raises(ValueError, match="block_q 64, block_k 128"):
        blasst.prefill(dev(q), dev(k), dev(v), block_q=16)
    with pytest.raises(ValueError, match="expected a CUDA tensor"):
        blasst.prefill(dev(q), torch.from_numpy(k), dev(v))


def test_scale_factor_from_calibration(tmp_path):
    import json
    import math
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({"prefill": {"alpha": 2.0, "beta": 5.0, "r2": 0.9, "s_min": 0.2, "s_max": 0.8}}))
    assert blasst.scale_factor_for(str(path), "prefill", 0.5) == pytest.approx(2.0 * math.exp(2.5))
    assert blasst.scale_factor_for([{"decode": {"alpha": 1.0, "beta": 1.0}}, str(path)], "prefill", 0.2) == \
        pytest.approx(2.0 * math.exp(1.0))
    with pytest.raises(ValueError, match="outside the calibrated range"):
        blasst.scale_factor_for(str(path), "prefill", 0.99)
    with pytest.raises(ValueError, match="no decode calibration"):
        blasst.scale_factor_for(str(path), "decode", 0.5)


def test_calibration_geometry(tmp_path):
    import json
    geo = {"block_q": 64, "block_k": 176, "order": "reverse", "splits": 1, "max_seed": False}
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({"prefill": {"alpha": 2.0, "beta": 5.0, "geometry": geo}}))
    assert blasst.calibration_geometry(str(path), "prefill") == geo
    assert blasst.calibration_geometry([{"decode": {"alpha": 1.0, "beta": 1.0}}, str(path)], "prefill") == geo
    assert blasst.calibration_geometry({"decode": {"alpha": 1.0, "beta": 1.0}}, "decode") is None  # none recorded
    assert blasst.calibration_geometry(str(path), "decode") is None


def test_decode_plan_reuses_its_buffers(rng):
    q, kc, vc, bt, sl = inputs.paged_decode(rng, [300, 1000], 1, 8, 2, 64, 64, 16)
    plan = blasst.DecodePlan(q, kc, vc, bt, sl, scale_factor=8.0, block_k=32, splits=2, return_lse=True)
    o1, lse1 = plan.run(q, kc, vc, bt, sl)
    want = ref.decode(q, kc, vc, bt, sl, mode="scale_factor", value=8.0, block_k=32, splits=2)
    assert rel(o1, want["o"]) < 1e-5
    assert plan.stats(sl).skipped == want["skipped"].reshape(-1).tolist()
    q2 = q * 0.5
    o2, _ = plan.run(q2, kc, vc, bt, sl)
    assert o2 is o1  # the planned buffer, overwritten
    assert rel(o2, ref.decode(q2, kc, vc, bt, sl, mode="scale_factor", value=8.0, block_k=32, splits=2)["o"]) < 1e-5
    with pytest.raises(ValueError, match="plan was made for"):
        plan.run(q[:1], kc, vc, bt[:1], sl[:1])


@pytest.mark.skipif(not cuda_ok, reason="no sm_90 GPU (or torch / the CUDA backend) here")
def test_cuda_decode_plan_in_a_graph(rng):
    q, kc, vc, bt, sl = inputs.paged_decode(rng, [2000, 5000], 1, 32, 8, 128, 128, 64)
    qg, kg, vg, btg, slg = _decode_on_cuda(q, kc, vc, bt, sl)
    plan = blasst.DecodePlan(qg, kg, vg, btg, slg, max_seq_len=5000, scale_factor=16.0, max_seed=True)
    direct = plan.run(qg, kg, vg, btg, slg).clone()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = plan.run(qg, kg, vg, btg, slg)
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, direct)


def test_calibration_sweeps_equal_the_engine(rng):
    q, k, v, cu_q, cu_k = inputs.varlen_prefill(rng, [300, 700], [300, 700], 4, 2, 32, 32)
    lambdas = [1e-4, 1e-3, 1e-2, 0.1]
    points = blasst.calibrate.sweep("prefill", (q, k, cu_q, cu_k), block_q=16, block_k=32, lambdas=lambdas)
    assert len(points) == 2 * len(lambdas)
    for i, lam in enumerate(lambdas):
        _, st = blasst.prefill(q, k, v, causal=True, threshold=lam, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
                               block_q=16, block_k=32, return_stats=True)
        for b in range(2):
            vis = sum(st.visited[b * 4:(b + 1) * 4])
            skp = sum(st.skipped[b * 4:(b + 1) * 4])
            assert points[b * len(lambdas) + i]["sparsity"] == pytest.approx(skp / vis)
            assert points[b * len(lambdas) + i]["scale_factor"] == pytest.approx(lam * [300, 700][b])
    qd, kc, vc, bt, sl = inputs.paged_decode(rng, [400, 900], 1, 8, 2, 32, 32, 16)
    dpts = blasst.calibrate.sweep("decode", (qd, kc, bt, sl), block_k=32, splits=2, max_seed=True, lambdas=lambdas)
    _, st = blasst.decode(qd, kc, vc, bt, sl, threshold=lambdas[2], block_k=32, splits=2, max_seed=True,
                          return_stats=True)
    assert dpts[2]["sparsity"] == pytest.approx(sum(st.skipped[:2]) / sum(st.visited[:2]))


def test_calibration_fit_and_runtime_lookup(rng, tmp_path):
    q, k, _, cu_q, cu_k = inputs.varlen_prefill(rng, [600, 900], [600, 900], 4, 2, 32, 32)
    cal = blasst.calibrate.fit("prefill", [(q, k, cu_q, cu_k)], block_q=16, block_k=32, model="test")
    fit = cal["prefill"]
    assert fit["points"] >= 2 and fit["geometry"]["block_q"] == 16 and fit["model"] == "test"
    path = tmp_path / "cal.json"
    blasst.calibrate.save(cal, str(path))
    s = (fit["s_min"] + fit["s_max"]) / 2
    assert blasst.scale_factor_for(str(path), "prefill", s) == pytest.approx(fit["alpha"] * np.exp(fit["beta"] * s))
    assert blasst.calibration_geometry(str(path), "prefill") == fit["geometry"]  # what the fit recorded


def test_calibration_default_tile_is_the_gpu_default(rng):
    """block_k=None calibrates with the CUDA kernel's default tile: prefill by head dim (192 at 128,
    80 at 256, 128 otherwise), decode 128; a prefill sweep with it equals one with that tile given."""
    lambdas = [1e-3, 1e-2, 0.1]
    samples = {}
    for d in (64, 128, 256):
        q, k, _, cu_q, cu_k = inputs.varlen_prefill(rng, [500], [500], 2, 1, d, d)
        samples[d] = (q, k, cu_q, cu_k)
        tile = blasst.prefill_block_k(d)
        assert tile == {64: 128, 128: 192, 256: 80}[d]
        assert blasst.calibrate.default_block_k("prefill", samples[d]) == tile
        assert (blasst.calibrate.sweep("prefill", samples[d], lambdas=lambdas)
                == blasst.calibrate.sweep("prefill", samples[d], block_k=tile, lambdas=lambdas))
    qd, kc, _, bt, sl = inputs.paged_decode(rng, [400], 1, 8, 2, 128, 128, 16)
    assert blasst.calibrate.default_block_k("decode", (qd, kc, bt, sl)) == 128
    with pytest.raises(ValueError, match="head dims"):
        blasst.calibrate.fit("prefill", [samples[64], samples[128]], lambdas=lambdas)


def test_synthetic_inputs_have_their_structure():
    q, k, v = blasst.synthetic_qkv(64, 256, 4, 2, 64, seed=3)
    assert q.shape == (64, 4, 64) and k.shape == (256, 2, 64) and v.shape == (256, 2, 64)
    assert q.dtype == np.float32 and k.dtype == np.float32 and v.dtype == np.float32
    q2, k2, v2 = blasst.synthetic_qkv(64, 256, 4, 2, 64, seed=3)
    assert np.array_equal(q, q2) and np.array_equal(k, k2) and np.array_equal(v, v2)
    assert not np.array_equal(blasst.synthetic_qkv(64, 256, 4, 2, 64, seed=4)[1], k)
    assert blasst.synthetic_qkv(1, 8, 2, 1, 64, 32)[2].shape == (8, 1, 32)
    # Logits of head 0 (KV head 0): the 4 sinks about `sink` (12) above the keys far from the
    # query, and each query's own position (i + 192) about `local` (10) above them.
    s = q[:, 0, :].astype(np.float64) @ k[:, 0, :].T.astype(np.float64) / 8.0
    far = s[:, 8:64].mean()
    assert s[:, :4].mean() - far > 8.0
    assert np.mean([s[i, i + 192] for i in range(64)]) - far > 6.0
    with pytest.raises(ValueError):
        blasst.synthetic_qkv(4, 4, 3, 2, 64)
