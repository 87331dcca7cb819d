"""torch custom ops and the transformers backend (skipped where torch or transformers is missing)."""
import math

import pytest

torch = pytest.importorskip("torch")
import blasst  # noqa: E402
import blasst.ops  # noqa: E402,F401


def _qkv(seed, s=96, hq=4, hkv=2, d=32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(s, hq, d, generator=g), torch.randn(s, hkv, d, generator=g), torch.randn(s, hkv, d, generator=g))


def test_custom_op_matches_function():
    q, k, v = _qkv(0)
    want = blasst.prefill(q, k, v, causal=True, scale_factor=4.0, block_k=16)
    got = torch.ops.blasst.prefill(q, k, v, True, 0.0, 4.0, None, 64, 16, "reverse")
    assert torch.equal(got, want)


def test_custom_ops_trace_under_compile():
    q, k, v = _qkv(1)

    def f(q, k, v):
        return torch.ops.blasst.prefill(q * 1.0, k, v, True, 0.0, None, None, 64, 128, "reverse") + 1.0

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    assert torch.allclose(compiled(q, k, v), f(q, k, v))
    kc = k.view(1, 96, 2, 32)
    table, lens = torch.zeros(1, 1, dtype=torch.int32), torch.full((1,), 96, dtype=torch.int32)

    def g(q, kc, vc):
        return torch.ops.blasst.decode(q, kc, vc, table, lens, 0.0, 8.0, None, 128, 1, False, 96)

    qd = q[:2].reshape(1, 2, 4, 32)
    assert torch.allclose(torch.compile(g, backend="aot_eager", fullgraph=True)(qd, kc, kc), g(qd, kc, kc))


def test_varlen_custom_op_matches_function_packed_and_paged():
    g = torch.Generator().manual_seed(3)
    lens_q, lens_k, page = [5, 0, 40], [30, 7, 90], 16
    cu_q = torch.tensor([0] + list(torch.tensor(lens_q).cumsum(0)), dtype=torch.int32)
    cu_k = torch.tensor([0] + list(torch.tensor(lens_k).cumsum(0)), dtype=torch.int32)
    q, k, v = torch.randn(45, 4, 32, generator=g), torch.randn(127, 2, 32, generator=g), torch.randn(127, 2, 32, generator=g)
    want = blasst.prefill(q, k, v, causal=True, scale_factor=4.0, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, block_k=16)
    got = torch.ops.blasst.prefill_varlen(q, k, v, cu_q, cu_k, 40, None, True, 0.0, 4.0, None, 64, 16, "reverse")
    assert torch.equal(got, want)
    # The same keys in a paged cache: pages in reverse order, one spare column of -1.
    pages = [(n + page - 1) // page for n in lens_k]
    ids = list(range(sum(pages)))[::-1]
    table = torch.full((3, max(pages) + 1), -1, dtype=torch.int32)
    kc, vc = torch.full((len(ids), page, 2, 32), float("nan")), torch.full((len(ids), page, 2, 32), float("nan"))
    for b, n in enumerate(lens_k):
        table[b, :pages[b]] = torch.tensor(ids[sum(pages[:b]):sum(pages[:b + 1])], dtype=torch.int32)
        for j in range(n):
            kc[table[b, j // page], j % page] = k[int(cu_k[b]) + j]
            vc[table[b, j // page], j % page] = v[int(cu_k[b]) + j]
    paged = torch.ops.blasst.prefill_varlen(q, kc, vc, cu_q, cu_k, 40, table, True, 0.0, 4.0, None, 64, 16, "reverse")
    assert torch.equal(paged, want)

    def f(q, k, v):
        return torch.ops.blasst.prefill_varlen(q * 1.0, k, v, cu_q, cu_k, 40, table, True, 0.0, 4.0, None, 64, 16,
                                               "reverse") + 1.0

    assert torch.equal(torch.compile(f, backend="aot_eager", fullgraph=True)(q, kc, vc), f(q, kc, vc))


transformers = pytest.importorskip("transformers")


def _tiny_llama(hidden_size=128):
    """Two layers, 4 query / 2 KV heads: head dim hidden_size / 4."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=512, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=2048)
    return cfg, LlamaForCausalLM(cfg).eval()


def test_transformers_backend_matches_sdpa_and_collects_stats():
    from blasst.integrations import transformers as bt

    bt.register()  # dense
    cfg, model = _tiny_llama()
    ids = torch.randint(0, 512, (1, 300), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.config._attn_implementation = "sdpa"
        ref = model(ids).logits
        ref_gen = model.generate(ids[:, :200], max_new_tokens=12, do_sample=False)
        model.config._attn_implementation = "blasst"
        got = model(ids).logits
        gen = model.generate(ids[:, :200], max_new_tokens=12, do_sample=False)
    assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4)
    assert torch.equal(gen, ref_gen)
    assert bt.stats.sparsity("prefill") == 0.0 and bt.stats.layers["decode"]

    bt.stats.reset()
    bt.register(prefill_scale_factor=4.0, decode_scale_factor=4.0, block_k=16)
    with torch.no_grad():
        model(ids)
    assert set(bt.stats.layers["prefill"]) == {0, 1}
    assert "prefill: sparsity" in str(bt.stats)


def test_transformers_batched_prefill_is_one_packed_call_per_layer():
    # A batch of equal-length prompts runs as one packed (cu_seqlens) call: the same logits and the
    # same tile counts as the prompts one by one, each with its own lambda.
    from blasst.integrations import transformers as bt

    _, model = _tiny_llama()
    ids = torch.randint(0, 512, (3, 260), generator=torch.Generator().manual_seed(3))
    calls = []
    real = bt._prefill
    bt._prefill = lambda *a, **kw: calls.append(kw.get("cu_seqlens_q")) or real(*a, **kw)
    try:
        bt.register()  # dense, against SDPA
        with torch.no_grad():
            model.config._attn_implementation = "sdpa"
            ref = model(ids).logits
            model.config._attn_implementation = "blasst"
            got = model(ids).logits
        assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4)
        assert len(calls) == 2 and all(c is not None and c.tolist() == [0, 260, 520, 780] for c in calls)

        bt.register(prefill_scale_factor=250.0, block_q=16, block_k=16)  # lambda 0.96: skips even here
        bt.stats.reset()
        with torch.no_grad():
            batched = model(ids).logits
        together = {layer: (s.visited, s.skipped) for layer, s in bt.stats.layers["prefill"].items()}
        bt.stats.reset()
        with torch.no_grad():
            alone = torch.cat([model(ids[b:b + 1]).logits for b in range(3)])
        one_by_one = {layer: (s.visited, s.skipped) for layer, s in bt.stats.layers["prefill"].items()}
        assert together == one_by_one and together[0][1] > 0
        assert torch.allclose(batched, alone, atol=1e-5, rtol=1e-5)
    finally:
        bt._prefill = real
        bt.register(block_q=64, block_k=None)
        bt.stats.reset()


def test_transformers_decode_plans_are_shared_by_layers_and_steps():
    # One plan per key-tile bucket of the length: 12 steps from 200 keys stay within 256 (and the
    # layers share it), and a new bucket makes a new plan. Outputs as SDPA's (the generate test).
    from blasst.integrations import transformers as bt

    _, model = _tiny_llama()
    ids = torch.randint(0, 512, (1, 300), generator=torch.Generator().manual_seed(4))
    made = []
    real = bt._DecodePlan
    bt._DecodePlan = lambda *a, **kw: made.append(kw["max_seq_len"]) or real(*a, **kw)
    try:
        bt.register(decode_scale_factor=8.0)
        bt._plans.clear()
        with torch.no_grad():
            model.config._attn_implementation = "blasst"
            model.generate(ids[:, :200], max_new_tokens=12, do_sample=False)
            assert made == [256]
            model.generate(ids[:, :250], max_new_tokens=12, do_sample=False)  # 250 .. 261 keys
            assert made == [256, 384]
    finally:
        bt._DecodePlan = real
        bt.register()


def test_transformers_prefill_block_k_is_prefill_only():
    from blasst.integrations import transformers as bt

    cfg, model = _tiny_llama()
    ids = torch.randint(0, 512, (1, 300), generator=torch.Generator().manual_seed(2))

    def prefill_visited(**kw):
        bt.stats.reset()
        bt.register(prefill_scale_factor=4.0, decode_scale_factor=4.0, **kw)
        with torch.no_grad():
            model.config._attn_implementation = "blasst"
            model(ids)
        return bt.stats.layers["prefill"][0].visited

    try:
        both16 = prefill_visited(block_k=16, prefill_block_k=None)
        assert prefill_visited(block_k=32, prefill_block_k=16) == both16  # prefill takes its own tile
        assert prefill_visited(block_k=32, prefill_block_k=None) != both16

        def decode_visited(**kw):
            bt.stats.reset()
            bt.register(prefill_scale_factor=4.0, decode_scale_factor=4.0, **kw)
            with torch.no_grad():
                model.generate(ids[:, :100], max_new_tokens=3, do_sample=False)
            return bt.stats.layers["decode"][0].visited

        # Decode keeps block_k (fewer, larger tiles at 32 than at 16), whatever prefill takes.
        assert decode_visited(block_k=32, prefill_block_k=16) < decode_visited(block_k=16, prefill_block_k=16)
    finally:
        bt.register(block_k=None, prefill_block_k=None)


@pytest.mark.skipif(not (torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)),
                    reason="no sm_90 GPU here")
def test_transformers_backend_on_cuda_matches_sdpa():
    from blasst.integrations import transformers as bt

    bt.register(collect_stats=False, block_q=64, block_k=128)  # dense, no per-layer synchronisation
    _, model = _tiny_llama(256)
    model = model.to("cuda", torch.bfloat16)  # head dim 64
    ids = torch.randint(0, 512, (1, 700), generator=torch.Generator().manual_seed(1)).cuda()
    with torch.no_grad():
        model.config._attn_implementation = "sdpa"
        ref = model(ids).logits.float()
        model.config._attn_implementation = "blasst"
        got = model(ids).logits.float()
    assert (got - ref).abs().max() < 0.05 * ref.abs().max()
    bt.stats.reset()
    bt.register(prefill_scale_factor=16.0, decode_scale_factor=16.0, collect_stats=True)
    with torch.no_grad():
        gen = model.generate(ids[:, :600], max_new_tokens=8, do_sample=False)
    assert gen.shape == (1, 608)
    assert set(bt.stats.layers["prefill"]) == {0, 1} and bt.stats.layers["decode"]
    bt.register(collect_stats=True)


def test_transformers_refuses_padded_batches():
    from blasst.integrations import transformers as bt

    bt.register(block_q=64, block_k=128)
    cfg, model = _tiny_llama()
    ids = torch.randint(0, 512, (2, 100), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(2, 100, dtype=torch.long)
    mask[1, :30] = 0  # left padding
    model.config._attn_implementation = "blasst"
    with torch.no_grad():
        model(ids)  # unpadded: fine
        with pytest.raises(ValueError, match="padded"):
            model(ids, attention_mask=mask)


def test_register_runs_a_calibration_under_its_geometry():
    from blasst.integrations import transformers as bt

    def cal(prefill_tile, decode_tile=128, order="reverse"):
        geo = {"block_k": prefill_tile, "order": order, "splits": 1, "max_seed": False}
        return {"prefill": {"alpha": 2.0, "beta": 5.0, "geometry": {"block_q": 64, **geo}},
                "decode": {"alpha": 1.0, "beta": 4.0, "geometry": {**geo, "block_k": decode_tile, "order": "forward"}}}

    try:
        bt.register(prefill_block_k=None, block_k=None, order="reverse", block_q=64)  # earlier tests' settings
        bt.register(calibration=cal(176), target_sparsity=0.5)  # no tile asked for: the calibration's
        assert bt.settings.prefill_block_k == 176 and bt.settings.block_k is None
        assert bt.settings.prefill_scale_factor == pytest.approx(2.0 * math.exp(2.5))
        bt.register(calibration=cal(192), target_sparsity=0.5)  # an adopted tile does not stick
        assert bt.settings.prefill_block_k == 192
        bt.register(prefill_scale_factor=3.0)  # no calibration: nothing checked, the adopted tile dropped
        assert bt.settings.prefill_block_k is None
        bt.register(calibration=cal(176), target_sparsity=0.5, prefill_block_k=176)
        assert bt.settings.prefill_block_k == 176
        with pytest.raises(ValueError, match="176-key tiles, but block_k / prefill_block_k ask for 192"):
            bt.register(calibration=cal(176), target_sparsity=0.5, prefill_block_k=192)
        assert bt.settings.prefill_block_k == 176  # a refused call changes nothing
        with pytest.raises(ValueError, match="decode calibration was measured with 64-key tiles"):
            bt.register(calibration=cal(176, decode_tile=64), target_sparsity=0.5, prefill_block_k=None)
        with pytest.raises(ValueError, match="order='sink_first'"):
            bt.register(calibration=cal(176, order="sink_first"), target_sparsity=0.5)
    finally:
        bt.register(prefill_block_k=None, block_k=None, order="reverse", block_q=64)


def test_padding_check_layer_is_not_inherited_through_a_reused_config_id():
    from blasst.integrations import transformers as bt

    class Config:
        pass

    gone, cfg = Config(), Config()
    # As if a freed config's id had come back as cfg's: its entry must not give cfg the old layer.
    bt._first_full_layer[id(cfg)] = (lambda: gone, 0)
    assert bt._first_full_layer_of(cfg, 3) == 3
    assert bt._first_full_layer_of(cfg, 5) == 3
    assert bt._first_full_layer_of(None, 2) == bt._first_full_layer_of(None, 7)


def test_transformers_gemma3_sliding_layers_stay_dense():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from blasst.integrations import transformers as bt

    bt.register(block_q=64, block_k=128)
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=64, sliding_window=64,
                           layer_types=["sliding_attention"] * 3 + ["full_attention"], max_position_embeddings=1024)
    model = Gemma3ForCausalLM(cfg).eval()
    # Token 0 is Gemma-3's pad token: generate() masks it out of a prompt (padding, which the
    # backend refuses: checked at the end), so the prompt here avoids it.
    ids = torch.randint(1, 512, (1, 300), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        model.config._attn_implementation = "sdpa"
        ref = model(ids).logits
        ref_gen = model.generate(ids[:, :200], max_new_tokens=8, do_sample=False)
        model.config._attn_implementation = "blasst"
        with pytest.warns(UserWarning, match="sliding window"):
            got = model(ids).logits
        gen = model.generate(ids[:, :200], max_new_tokens=8, do_sample=False)
    assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4)
    assert torch.equal(gen, ref_gen)
    assert set(bt.stats.layers["prefill"]) >= {3}
    padded = ids[:, :200].clone()
    padded[0, 63] = cfg.pad_token_id
    with torch.no_grad(), pytest.raises(ValueError, match="padded"):
        model.generate(padded, max_new_tokens=2, do_sample=False)


def test_transformers_capture_feeds_calibration():
    from blasst.integrations import transformers as bt

    bt.register(capture=[])
    cfg, model = _tiny_llama()
    ids = torch.randint(0, 512, (1, 600), generator=torch.Generator().manual_seed(2))
    model.config._attn_implementation = "blasst"
    with torch.no_grad():
        model(ids)
    caught = bt.settings.capture
    bt.settings.capture = None
    assert [c["layer"] for c in caught] == [0, 1] and caught[0]["phase"] == "prefill"
    points = blasst.calibrate.sweep("prefill", caught[0]["sample"], softmax_scale=caught[0]["scale"], block_k=32)
    assert points and all(0.0 <= p["sparsity"] <= 1.0 for p in points)
