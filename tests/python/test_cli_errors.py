"""Every error path of docs/CLI.md "Errors", one test each.

Each bad call must: exit non-zero with 1 or 2 (never a signal), print exactly one line on stderr
starting with "blasst: error:", and leave no output behind: every output (--out, --lse, --stats,
--skip-mask, --dropped-mass) is requested into an empty folder that must still be empty afterwards
(no final file, no temporary file).  Flag-syntax errors (unknown flag, missing value, missing
required flag) must exit 2; bad input files must exit 1 ("2 for usage errors, 1 otherwise").
"""

import numpy as np
import pytest

USAGE, INPUT, EITHER = (2,), (1,), (1, 2)


def _f32(*shape, rng=np.random.default_rng(0)):
    return rng.standard_normal(shape).astype(np.float32)


def attention_inputs():
    return {"q": _f32(8, 2, 16), "k": _f32(10, 1, 16), "v": _f32(10, 1, 8)}


def decode_inputs():
    return {"q": _f32(2, 2, 4, 16), "k-cache": _f32(6, 4, 2, 16), "v-cache": _f32(6, 4, 2, 8),
            "block-table": np.array([[0, 1, 2], [3, 4, 5]], dtype=np.int32),
            "seq-lens": np.array([10, 5], dtype=np.int32)}


OUTPUTS = {"out": "o.npy", "lse": "lse.npy", "stats": "stats.json", "skip-mask": "mask.npy",
           "dropped-mass": "dropped.npy"}


def call(cli, sub, inputs, flags=(), raw_files=None, outputs=OUTPUTS):
    """Run `sub` with `inputs` ({flag: array or None to omit}), extra `flags`, and `raw_files`
    ({flag: bytes} written verbatim).  Returns (proc, out_dir)."""
    d = cli.workdir()
    ind, outd = d / "in", d / "out"
    ind.mkdir()
    outd.mkdir()
    args = [sub]
    for flag, arr in inputs.items():
        if arr is None:
            continue
        args += [f"--{flag}", cli.write(ind, flag, arr)]
    for flag, data in (raw_files or {}).items():
        p = ind / f"{flag}.npy"
        p.write_bytes(data)
        args += [f"--{flag}", p]
    for name, fname in outputs.items():
        args += [f"--{name}", outd / fname]
    args += list(flags)
    return cli.run(args), outd, args


def expect_error(cli, sub, inputs, flags=(), raw_files=None, codes=EITHER, outputs=OUTPUTS):
    proc, outd, args = call(cli, sub, inputs, flags, raw_files, outputs)
    what = f"cmd: blasst {' '.join(str(a) for a in args)}\nstderr: {proc.stderr!r}"
    assert proc.returncode >= 0, f"killed by signal {-proc.returncode}\n{what}"
    assert proc.returncode in codes, f"exit code {proc.returncode}, expected {codes}\n{what}"
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("blasst: error:"), (
        f"stderr must be exactly one line 'blasst: error: ...'\n{what}")
    left = sorted(p.name for p in outd.iterdir())
    assert not left, f"files left in the output folder: {left}\n{what}"
    return proc


def with_(base, **changes):
    d = dict(base)
    for k, v in changes.items():
        d[k.replace("_", "-")] = v
    return d


# ------------------------------------------------------------------------------------------
# sanity: the valid base calls succeed (otherwise the error tests prove nothing)
# ------------------------------------------------------------------------------------------

def test_base_attention_call_succeeds(cli):
    proc, outd, args = call(cli, "attention", attention_inputs(), ["--causal"])
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in outd.iterdir()) == sorted(OUTPUTS.values())


def test_base_decode_call_succeeds(cli):
    proc, outd, args = call(cli, "decode", decode_inputs(), ["--splits", "2"])
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in outd.iterdir()) == sorted(OUTPUTS.values())


# ------------------------------------------------------------------------------------------
# files and dtypes
# ------------------------------------------------------------------------------------------

def test_missing_file(cli):
    d = cli.workdir()
    inputs = attention_inputs()
    flags = ["--k", cli.write(d, "k", inputs["k"]), "--v", cli.write(d, "v", inputs["v"]),
             "--q", d / "does_not_exist.npy"]
    expect_error(cli, "attention", {}, flags, codes=INPUT)


def test_not_an_npy_file(cli):
    expect_error(cli, "attention", with_(attention_inputs(), q=None),
                 raw_files={"q": b"this is not a numpy file\n" * 10}, codes=INPUT)


def test_truncated_npy_file(cli, tmp_path):
    p = tmp_path / "full.npy"
    np.save(p, _f32(8, 2, 16))
    data = p.read_bytes()
    expect_error(cli, "attention", with_(attention_inputs(), q=None),
                 raw_files={"q": data[:len(data) - 100]}, codes=INPUT)


def test_float64_input(cli):
    base = attention_inputs()
    expect_error(cli, "attention", {k: v.astype(np.float64) for k, v in base.items()},
                 codes=INPUT)


def test_fortran_order_input(cli):
    base = attention_inputs()
    q = np.asfortranarray(base["q"])
    assert q.flags.f_contiguous and not q.flags.c_contiguous
    expect_error(cli, "attention", with_(base, q=q), codes=INPUT)


def test_mixed_dtypes(cli):
    base = attention_inputs()
    expect_error(cli, "attention", with_(base, q=base["q"].astype(np.float16)), codes=INPUT)


# ------------------------------------------------------------------------------------------
# shapes
# ------------------------------------------------------------------------------------------

def test_wrong_rank(cli):
    expect_error(cli, "attention", with_(attention_inputs(), q=_f32(8, 32)), codes=INPUT)


def test_kv_shape_mismatch(cli):
    expect_error(cli, "attention", with_(attention_inputs(), v=_f32(9, 1, 8)), codes=INPUT)


def test_qk_head_dim_mismatch(cli):
    expect_error(cli, "attention", with_(attention_inputs(), k=_f32(10, 1, 32)), codes=INPUT)


def paged_attention_inputs():
    """Two sequences of 3 / 5 queries and 10 / 5 keys in a cache of 6 pages of 4 slots."""
    return {"q": _f32(8, 2, 16), "k-cache": _f32(6, 4, 1, 16), "v-cache": _f32(6, 4, 1, 8),
            "block-table": np.array([[0, 1, 2], [3, 4, 5]], dtype=np.int32),
            "cu-seqlens-q": np.array([0, 3, 8], dtype=np.int32), "cu-seqlens-k": np.array([0, 10, 15], dtype=np.int32)}


def test_base_paged_attention_call_succeeds(cli):
    proc, outd, args = call(cli, "attention", paged_attention_inputs(), ["--causal"])
    assert proc.returncode == 0, proc.stderr


def test_paged_attention_errors(cli):
    base = paged_attention_inputs()
    expect_error(cli, "attention", with_(base, k=_f32(10, 1, 16)), codes=USAGE)  # --k beside --k-cache
    expect_error(cli, "attention", with_(base, cu_seqlens_q=None, cu_seqlens_k=None), codes=USAGE)
    expect_error(cli, "attention", with_(base, block_table=None), codes=USAGE)
    expect_error(cli, "attention", with_(base, block_table=np.array([[0, 1, 2]], dtype=np.int32)), codes=INPUT)
    expect_error(cli, "attention", with_(base, block_table=np.array([[0, 1, 6], [3, 4, 5]], dtype=np.int32)),
                 codes=INPUT)  # a page outside the cache
    expect_error(cli, "attention", with_(base, cu_seqlens_k=np.array([0, 13, 15], dtype=np.int32)),
                 codes=INPUT)  # 13 keys in 3 pages of 4 slots
    expect_error(cli, "attention", with_(base, v_cache=_f32(6, 4, 2, 8)), codes=INPUT)


def test_hq_not_multiple_of_hkv(cli):
    expect_error(cli, "attention",
                 with_(attention_inputs(), q=_f32(8, 3, 16), k=_f32(10, 2, 16),
                       v=_f32(10, 2, 8)), codes=INPUT)


# ------------------------------------------------------------------------------------------
# policy and geometry flags
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["-0.1", "nan", "inf"])
def test_bad_threshold(cli, value):
    expect_error(cli, "attention", attention_inputs(), ["--threshold", value])


def test_negative_scale_factor(cli):
    expect_error(cli, "attention", attention_inputs(), ["--scale-factor", "-2"])


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_scale_factor(cli, value):
    expect_error(cli, "decode", decode_inputs(), ["--scale-factor", value])


@pytest.mark.parametrize("flag,value", [("--threshold", "abc"), ("--threshold", "0.1x"),
                                        ("--block-k", "12abc"), ("--splits", "1.5")])
def test_malformed_number(cli, flag, value):
    expect_error(cli, "decode", decode_inputs(), [flag, value])


def test_both_threshold_and_scale_factor(cli):
    expect_error(cli, "attention", attention_inputs(),
                 ["--threshold", "0.1", "--scale-factor", "2"])


def test_bogus_order(cli):
    expect_error(cli, "attention", attention_inputs(), ["--order", "bogus"])


def test_block_k_zero(cli):
    expect_error(cli, "attention", attention_inputs(), ["--block-k", "0"])


def test_block_q_zero(cli):
    expect_error(cli, "attention", attention_inputs(), ["--block-q", "0"])


def test_splits_zero(cli):
    expect_error(cli, "decode", decode_inputs(), ["--splits", "0"])


# ------------------------------------------------------------------------------------------
# command-line syntax
# ------------------------------------------------------------------------------------------

def test_unknown_flag(cli):
    expect_error(cli, "attention", attention_inputs(), ["--no-such-flag"], codes=USAGE)


def test_flag_missing_its_value(cli):
    expect_error(cli, "attention", attention_inputs(), ["--block-k"], codes=USAGE)


def test_missing_required_flag(cli):
    expect_error(cli, "attention", with_(attention_inputs(), v=None), codes=USAGE)


def test_missing_out_flag(cli):
    outs = {k: v for k, v in OUTPUTS.items() if k != "out"}
    expect_error(cli, "attention", attention_inputs(), codes=USAGE, outputs=outs)


def test_flag_given_twice(cli):
    expect_error(cli, "attention", attention_inputs(), ["--block-k", "16", "--block-k=32"],
                 codes=USAGE)


def test_unexpected_positional_argument(cli):
    expect_error(cli, "attention", attention_inputs(), ["stray"], codes=USAGE)


def test_unknown_subcommand(cli):
    proc = cli.run(["frobnicate"])
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("blasst: error:"), proc.stderr


# ------------------------------------------------------------------------------------------
# cu_seqlens
# ------------------------------------------------------------------------------------------

def _cu(*xs, dtype=np.int32):
    return np.array(xs, dtype=dtype)


def test_cu_seqlens_only_q(cli):
    expect_error(cli, "attention", with_(attention_inputs(), cu_seqlens_q=_cu(0, 3, 8)))


def test_cu_seqlens_only_k(cli):
    expect_error(cli, "attention", with_(attention_inputs(), cu_seqlens_k=_cu(0, 4, 10)))


def test_cu_seqlens_not_starting_at_zero(cli):
    expect_error(cli, "attention", with_(attention_inputs(), cu_seqlens_q=_cu(1, 3, 8),
                                         cu_seqlens_k=_cu(0, 4, 10)), codes=INPUT)


def test_cu_seqlens_decreasing(cli):
    expect_error(cli, "attention", with_(attention_inputs(), cu_seqlens_q=_cu(0, 5, 3, 8),
                                         cu_seqlens_k=_cu(0, 4, 6, 10)), codes=INPUT)


def test_cu_seqlens_last_not_total(cli):
    expect_error(cli, "attention", with_(attention_inputs(), cu_seqlens_q=_cu(0, 3, 7),
                                         cu_seqlens_k=_cu(0, 4, 10)), codes=INPUT)


def test_cu_seqlens_wrong_dtype(cli):
    expect_error(cli, "attention", with_(attention_inputs(),
                                         cu_seqlens_q=_cu(0, 3, 8, dtype=np.int64),
                                         cu_seqlens_k=_cu(0, 4, 10, dtype=np.int64)),
                 codes=INPUT)


def test_cu_seqlens_batch_mismatch(cli):
    expect_error(cli, "attention", with_(attention_inputs(), cu_seqlens_q=_cu(0, 3, 8),
                                         cu_seqlens_k=_cu(0, 2, 4, 10)), codes=INPUT)


# ------------------------------------------------------------------------------------------
# decode
# ------------------------------------------------------------------------------------------

def test_decode_block_table_negative(cli):
    base = decode_inputs()
    bt = base["block-table"].copy()
    bt[1, 0] = -1
    expect_error(cli, "decode", with_(base, block_table=bt), codes=INPUT)


def test_decode_block_table_past_cache(cli):
    base = decode_inputs()
    bt = base["block-table"].copy()
    bt[0, 2] = 6  # num_pages = 6; entry 2 covers positions 8..9 of seq_len 10
    expect_error(cli, "decode", with_(base, block_table=bt), codes=INPUT)


def test_decode_seq_len_beyond_table(cli):
    base = decode_inputs()
    expect_error(cli, "decode", with_(base, seq_lens=np.array([13, 5], np.int32)), codes=INPUT)


def test_decode_negative_seq_len(cli):
    base = decode_inputs()
    expect_error(cli, "decode", with_(base, seq_lens=np.array([10, -1], np.int32)), codes=INPUT)


def test_decode_kv_cache_shape_mismatch(cli):
    base = decode_inputs()
    expect_error(cli, "decode", with_(base, v_cache=_f32(6, 8, 2, 8)), codes=INPUT)


def test_decode_batch_mismatch(cli):
    base = decode_inputs()
    expect_error(cli, "decode", with_(base, q=_f32(3, 2, 4, 16)), codes=INPUT)


# ------------------------------------------------------------------------------------------
# help and info
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sub", ["attention", "decode", "bench", "info"])
def test_help(cli, sub):
    proc = cli.run([sub, "--help"])
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert "usage" in proc.stdout.lower(), proc.stdout


def test_info(cli):
    proc = cli.run(["info"])
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert proc.stdout.strip(), "info printed nothing"


# ------------------------------------------------------------------------------------------
# more decode inputs and unwritable outputs
# ------------------------------------------------------------------------------------------

def test_decode_wrong_rank_cache(cli):
    expect_error(cli, "decode", with_(decode_inputs(), k_cache=_f32(6, 4, 32)), codes=INPUT)


def test_decode_block_table_wrong_dtype(cli):
    base = decode_inputs()
    expect_error(cli, "decode", with_(base, block_table=base["block-table"].astype(np.float32)),
                 codes=INPUT)


def test_decode_seq_lens_wrong_dtype(cli):
    base = decode_inputs()
    expect_error(cli, "decode", with_(base, seq_lens=base["seq-lens"].astype(np.int64)),
                 codes=INPUT)


def test_decode_missing_block_table(cli):
    expect_error(cli, "decode", with_(decode_inputs(), block_table=None), codes=USAGE)


def test_out_in_missing_directory(cli, tmp_path):
    """--out cannot be written: one error line, nothing else left behind."""
    d = cli.workdir()
    outd = d / "out"
    outd.mkdir()
    args = ["attention"]
    for flag, arr in attention_inputs().items():
        args += [f"--{flag}", cli.write(d, flag, arr)]
    args += ["--out", d / "no_such_dir" / "o.npy", "--lse", outd / "lse.npy",
             "--stats", outd / "stats.json"]
    proc = cli.run(args)
    assert proc.returncode in (1, 2), (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("blasst: error:"), proc.stderr
    assert not list(outd.iterdir()), sorted(p.name for p in outd.iterdir())


@pytest.mark.parametrize("sub", ["attention", "decode"])
@pytest.mark.parametrize("bad", ["lse", "skip-mask", "dropped-mass", "stats"])
def test_late_output_failure_leaves_nothing(cli, sub, bad):
    """One later output cannot be written (its folder does not exist): the outputs that could
    be written must not be left behind either ("renamed into place only once every output is
    computed")."""
    d = cli.workdir()
    outd = d / "out"
    outd.mkdir()
    args = [sub]
    for flag, arr in (attention_inputs() if sub == "attention" else decode_inputs()).items():
        args += [f"--{flag}", cli.write(d, flag, arr)]
    for name, fname in OUTPUTS.items():
        args += [f"--{name}", (d / "no_such_dir" / fname) if name == bad else (outd / fname)]
    proc = cli.run(args)
    what = f"cmd: blasst {' '.join(str(a) for a in args)}\nstderr: {proc.stderr!r}"
    assert proc.returncode in (1, 2), f"exit {proc.returncode}\n{what}"
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("blasst: error:"), what
    left = sorted(p.name for p in outd.iterdir())
    assert not left, f"outputs left behind after a failed call: {left}\n{what}"
