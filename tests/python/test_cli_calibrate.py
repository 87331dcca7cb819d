"""`blasst calibrate`: the fit it writes against a least-squares fit of its own curve, and errors."""
import json
import math

import numpy as np

from blasst_inputs import varlen_prefill


def test_calibrate_fit_matches_its_curve(cli, tmp_path, seed):
    rng = np.random.default_rng(seed)
    d = tmp_path / "sample"
    d.mkdir()
    q, k, _, cu_q, cu_k = varlen_prefill(rng, [500, 900], [500, 900], 4, 2, 32, 32)
    np.save(d / "q.npy", q), np.save(d / "k.npy", k)
    np.save(d / "cu_seqlens_q.npy", cu_q), np.save(d / "cu_seqlens_k.npy", cu_k)
    out = tmp_path / "cal.json"
    proc = cli.run(["calibrate", "--phase", "prefill", "--samples", str(d), "--causal", "--block-q", "16",
                    "--block-k", "32", "--out", str(out), "--model", "test"])
    assert proc.returncode == 0, proc.stderr
    cal = json.loads(out.read_text())["prefill"]
    assert cal["model"] == "test" and cal["geometry"]["block_q"] == 16 and cal["geometry"]["block_k"] == 32
    pts = [(p["sparsity"], p["scale_factor"]) for p in cal["curve"] if 0.1 <= p["sparsity"] <= 0.9]
    assert len(pts) == cal["points"] >= 2
    s = np.array([p[0] for p in pts])
    y = np.log([p[1] for p in pts])
    beta, ln_alpha = np.polyfit(s, y, 1)
    assert math.isclose(cal["beta"], beta, rel_tol=1e-6, abs_tol=1e-9)
    assert math.isclose(cal["alpha"], math.exp(ln_alpha), rel_tol=1e-6)
    for p in cal["curve"]:
        assert math.isclose(p["scale_factor"], p["lambda"] * p["kv_len"], rel_tol=1e-12)


def test_calibrate_prefill_tile_follows_head_dim(cli, tmp_path, seed):
    """Prefill without --block-k calibrates with the CUDA kernel's default tile for the samples'
    head dim (192 at 128, 128 at 64); samples of two head dims need --block-k."""
    rng = np.random.default_rng(seed)
    dirs = {}
    for d in (128, 64):
        dirs[d] = tmp_path / f"d{d}"
        dirs[d].mkdir()
        q, k, _, cu_q, cu_k = varlen_prefill(rng, [2000, 3000], [2000, 3000], 4, 2, d, d)
        np.save(dirs[d] / "q.npy", q), np.save(dirs[d] / "k.npy", k)
        np.save(dirs[d] / "cu_seqlens_q.npy", cu_q), np.save(dirs[d] / "cu_seqlens_k.npy", cu_k)
    for d, tile in ((128, 192), (64, 128)):
        out = tmp_path / f"cal{d}.json"
        proc = cli.run(["calibrate", "--phase", "prefill", "--samples", str(dirs[d]), "--causal", "--out", str(out)])
        assert proc.returncode == 0, proc.stderr
        assert json.loads(out.read_text())["prefill"]["geometry"]["block_k"] == tile
    proc = cli.run(["calibrate", "--phase", "prefill", "--samples", f"{dirs[128]},{dirs[64]}", "--causal",
                    "--out", str(tmp_path / "mixed.json")])
    assert proc.returncode == 1 and "head dim" in proc.stderr, proc.stderr
    assert not (tmp_path / "mixed.json").exists()


def test_calibrate_errors(cli, tmp_path):
    for args in (["calibrate", "--out", str(tmp_path / "c.json"), "--synthetic", "512"],  # no phase
                 ["calibrate", "--phase", "prefill", "--out", str(tmp_path / "c.json")],  # no samples
                 ["calibrate", "--phase", "sideways", "--synthetic", "512", "--out", str(tmp_path / "c.json")],
                 ["calibrate", "--phase", "prefill", "--samples", str(tmp_path / "missing"),
                  "--out", str(tmp_path / "c.json")]):
        proc = cli.run(args)
        assert proc.returncode in (1, 2), args
        assert proc.stderr.startswith("blasst: error:") and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert not (tmp_path / "c.json").exists()
