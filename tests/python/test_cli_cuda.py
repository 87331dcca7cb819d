"""`blasst attention|decode --device cuda`: the CLI's GPU path against its CPU engine, and
`--dtype` (the inputs' rounding, on either device).

On a machine with a Hopper GPU (`blasst info` lists an sm_90 device) the same 16-bit inputs run
on both devices, and the test checks that the kernels' decisions agree with the CPU engine's
(boundary ties aside: at most 0.5 % of the tiles, and never more than a few), that O and LSE agree
to 16-bit tolerance, and that the statistics JSON matches the mask it came with. The kernels' own
test suite (tests/cuda) does the exact checks; this one covers the CLI's plumbing: upload, dtype
rounding, outputs read back, split count and device recorded. Without such a GPU only the refusal
is tested: `--device cuda` exits 1 with one clear line.
"""

import re
import subprocess

import numpy as np
import pytest

import blasst_inputs as bi
from conftest import cli_path


def _hopper():
    p = cli_path()
    if not p.exists():
        return False
    out = subprocess.run([str(p), "info"], capture_output=True, text=True).stdout
    return re.search(r"device \d+: .*, sm_90,", out) is not None


HOPPER = _hopper()
needs_gpu = pytest.mark.skipif(not HOPPER, reason="no sm_90 GPU: CLI CUDA test skipped")


def _decisions(mask):
    return mask[mask > 0]


def _check_masks_agree(gpu, cpu, seed):
    assert gpu.mask.shape == cpu.mask.shape, f"mask sizes differ (seed {seed})"
    assert np.array_equal(gpu.mask == 0, cpu.mask == 0), f"visited tiles differ (seed {seed})"
    differ = int(np.sum(gpu.mask != cpu.mask))
    visited = int(np.sum(cpu.mask > 0))
    assert differ <= max(2, 0.005 * visited), (
        f"{differ} of {visited} decisions differ between cuda and cpu (seed {seed})")


def _check_stats(res, phase, device_prefix):
    s = res.stats
    assert s["phase"] == phase
    assert s["device"].startswith(device_prefix), s["device"]
    assert s["tiles_visited"] == int(np.sum(res.mask > 0))
    assert s["tiles_skipped"] == int(np.sum(res.mask == 2))
    assert sum(s["per_head"]["visited"]) == s["tiles_visited"]


def _close(name, got, want, seed, rtol=2e-2):
    d = got.astype(np.float64) - want
    rel = np.linalg.norm(d) / max(np.linalg.norm(want), 1e-30)
    assert rel <= rtol, f"{name}: ||cuda - cpu|| / ||cpu|| = {rel:.3g} > {rtol} (seed {seed})"


def _close_lse(gpu, cpu, seed):
    fin = np.isfinite(cpu)
    assert np.array_equal(fin, np.isfinite(gpu)), f"LSE: rows without keys differ (seed {seed})"
    assert np.max(np.abs(gpu[fin] - cpu[fin]), initial=0.0) <= 2e-2, f"LSE differs (seed {seed})"


def test_dtype_rounds_float32_files_like_numpy(cli, seed, rng):
    """--dtype float16 on float32 files equals the run on the same tensors saved as float16, and
    --dtype float32 on float16 files equals the float16 run (the CPU engine computes in float32)."""
    q, k, v, cq, ck = bi.varlen_prefill(rng, [40, 200], [90, 200], 4, 2, 64, 64, structure=False)
    f32 = {"q": q, "k": k, "v": v, "cu-seqlens-q": cq, "cu-seqlens-k": ck}
    f16 = dict(f32, q=q.astype(np.float16), k=k.astype(np.float16), v=v.astype(np.float16))
    flags = ["--causal", "--threshold", "0.01"]
    rounded = cli.invoke("attention", f32, flags + ["--dtype", "float16"])
    native = cli.invoke("attention", f16, flags)
    widened = cli.invoke("attention", f16, flags + ["--dtype", "fp32"])
    for other in (native, widened):
        assert np.array_equal(rounded.o, other.o), f"O differs (seed {seed})"
        assert np.array_equal(rounded.mask, other.mask), f"mask differs (seed {seed})"
    assert rounded.stats["device"] == "cpu"


def test_dtype_bfloat16_rounds_to_nearest_even(cli, seed, rng):
    """--dtype bfloat16: the CPU engine sees each float32 input rounded to bfloat16 (nearest even),
    checked on a decode whose output is one value's V row (one key)."""
    q, kc, vc, bt, sl = bi.paged_decode(rng, [1], 1, 2, 1, 64, 64, 16, structure=False)
    # 1 .. 1 + 2^-6 in steps of 2^-12: bfloat16 neighbours 1, 1 + 2^-7, 1 + 2^-6 and the ties
    # between them (1 + 2^-8 rounds down to the even 1, 1 + 3 * 2^-8 up to the even 1 + 2^-6)
    x = np.float32(1.0) + np.float32(2.0 ** -6) * np.arange(64, dtype=np.float32) / 64
    vc[:] = x
    inputs = {"q": q, "k-cache": kc, "v-cache": vc, "block-table": bt, "seq-lens": sl}
    res = cli.invoke("decode", inputs, ["--dtype", "bfloat16"])
    bits = x.view(np.uint32)
    want = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16).view(np.float32)
    assert np.array_equal(res.o[0, 0, 0], want), f"bfloat16 rounding differs (seed {seed})"
    assert want[16] == 1.0 and want[48] == np.float32(1 + 2.0 ** -6)  # the two ties, to even


def _both_devices(cli, sub, inputs, flags, seed, gpu_flags=(), cpu_flags=()):
    """Runs `sub` with the inputs and flags on cuda (plus gpu_flags) and on the CPU (plus
    cpu_flags), and checks decisions, the GPU's statistics, the geometry, O and LSE."""
    gpu = cli.invoke(sub, inputs, list(flags) + list(gpu_flags) + ["--device", "cuda"])
    cpu = cli.invoke(sub, inputs, list(flags) + list(cpu_flags))
    _check_masks_agree(gpu, cpu, seed)
    _check_stats(gpu, "prefill" if sub == "attention" else "decode", "cuda")
    assert gpu.stats["geometry"] == cpu.stats["geometry"]
    _close("O", gpu.o, cpu.o, seed)
    _close_lse(gpu.lse, cpu.lse, seed)
    return gpu, cpu


@pytest.mark.skipif(HOPPER, reason="a Hopper GPU is present: the refusal is not what runs")
def test_cuda_refused_cleanly_without_gpu(cli, rng):
    q, k, v = bi.random_qkv(rng, 5, 5, 2, 1, 64, 64)
    d = cli.workdir()
    args = ["attention", "--q", cli.write(d, "q", q.astype(np.float16)), "--k",
            cli.write(d, "k", k.astype(np.float16)), "--v", cli.write(d, "v", v.astype(np.float16)),
            "--out", d / "o.npy", "--device", "cuda"]
    proc = cli.run(args)
    assert proc.returncode == 1, proc.stderr
    line = proc.stderr.strip()
    assert line.count("\n") == 0 and line.startswith("blasst: error: --device cuda: "), line
    assert not (d / "o.npy").exists()


@needs_gpu
@pytest.mark.parametrize("causal", [True, False])
def test_prefill_cuda_matches_cpu(cli, seed, rng, causal):
    lens_q, lens_k = [1, 17, 300, 1013, 200], [1, 17, 300, 1013, 700]
    q, k, v, cq, ck = bi.varlen_prefill(rng, lens_q, lens_k, 8, 2, 128, 128, dtype=np.float16)
    inputs = {"q": q, "k": k, "v": v, "cu-seqlens-q": cq, "cu-seqlens-k": ck}
    flags = ["--scale-factor", "40"] + (["--causal"] if causal else [])
    _, cpu = _both_devices(cli, "attention", inputs, flags, seed)
    _check_stats(cpu, "prefill", "cpu")


@needs_gpu
def test_prefill_cuda_paged_cache_equals_packed(cli, seed, rng):
    """--device cuda with --k-cache / --v-cache / --block-table: the packed GPU run, bit for bit."""
    q, k, v, cq, ck = bi.varlen_prefill(rng, [17, 300, 200], [300, 1013, 700], 8, 2, 128, 128, dtype=np.float16)
    flags = ["--causal", "--scale-factor", "40", "--device", "cuda"]
    packed = cli.invoke("attention", {"q": q, "k": k, "v": v, "cu-seqlens-q": cq, "cu-seqlens-k": ck}, flags)
    kc, vc, table = bi.paged_kv(rng, k, v, ck, 16)
    paged = cli.invoke("attention", {"q": q, "k-cache": kc, "v-cache": vc, "block-table": table,
                                     "cu-seqlens-q": cq, "cu-seqlens-k": ck}, flags)
    assert np.array_equal(paged.o, packed.o) and np.array_equal(paged.mask, packed.mask), f"seed {seed}"


@needs_gpu
def test_prefill_cuda_float32_files_run_as_bfloat16(cli, seed, rng):
    q, k, v, cq, ck = bi.varlen_prefill(rng, [129], [129], 4, 4, 64, 64, structure=False)
    inputs = {"q": q, "k": k, "v": v}
    gpu = cli.invoke("attention", inputs, ["--causal", "--device", "cuda"])
    cpu = cli.invoke("attention", inputs, ["--causal", "--dtype", "bfloat16"])
    assert gpu.stats["tiles_skipped"] == 0
    _close("O", gpu.o, cpu.o, seed)
    _close_lse(gpu.lse, cpu.lse, seed)


@needs_gpu
@pytest.mark.parametrize("splits,max_seed", [(1, False), (2, True)])
def test_decode_cuda_matches_cpu(cli, seed, rng, splits, max_seed):
    q, kc, vc, bt, sl = bi.paged_decode(rng, [1, 17, 1013, 2000, 0], 2, 16, 2, 128, 128, 16)
    inputs = {"q": q, "k-cache": kc, "v-cache": vc, "block-table": bt, "seq-lens": sl}
    flags = ["--scale-factor", "20", "--splits", str(splits)] + (["--max-seed"] if max_seed else [])
    _both_devices(cli, "decode", inputs, flags, seed, gpu_flags=["--dtype", "bf16"],
                  cpu_flags=["--dtype", "bfloat16"])


@needs_gpu
def test_decode_cuda_planner_splits_recorded(cli, seed, rng):
    q, kc, vc, bt, sl = bi.paged_decode(rng, [4096], 1, 8, 1, 128, 128, 64, structure=False)
    inputs = {"q": q[:, 0].astype(np.float16), "k-cache": kc.astype(np.float16),
              "v-cache": vc.astype(np.float16), "block-table": bt, "seq-lens": sl}
    gpu = cli.invoke("decode", inputs, ["--device", "cuda"])
    cpu = cli.invoke("decode", inputs, [])
    assert gpu.o.shape == cpu.o.shape == (1, 8, 128)
    assert gpu.stats["geometry"]["splits"] > 1  # one sequence: the planner splits it over the SMs
    assert gpu.stats["tiles_skipped"] == 0
    _close("O", gpu.o, cpu.o, seed)
