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
