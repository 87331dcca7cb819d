"""Shared fixtures for the `blasst` CLI suite.

The CLI is taken from $BLASST_CLI, else <repo>/build/blasst.  When it is missing every test that
needs it is skipped with one clear reason (the reference self-tests in test_reference.py still run).

Random seeds are fresh on every run; set BLASST_TEST_SEED=<n> to reproduce a failure (each
assertion message names the seed).
"""

import json
import os
import secrets
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

CALL_TIMEOUT_S = float(os.environ.get("BLASST_TEST_TIMEOUT", "180"))


def cli_path():
    env = os.environ.get("BLASST_CLI")
    return Path(env) if env else REPO / "build" / "blasst"


def _cli_problem():
    p = cli_path()
    if not p.exists():
        how = "$BLASST_CLI" if os.environ.get("BLASST_CLI") else "./build/blasst (set BLASST_CLI)"
        return f"blasst CLI not found at {p} ({how}); build it first"
    if not os.access(p, os.X_OK):
        return f"blasst CLI at {p} is not executable"
    return None


def pytest_report_header(config):
    problem = _cli_problem()
    return f"blasst CLI: {cli_path()}" + (f"  [MISSING: {problem}]" if problem else "")


def pytest_collection_modifyitems(config, items):
    problem = _cli_problem()
    if problem is None:
        return
    mark = pytest.mark.skip(reason=problem)
    for item in items:
        if "cli" in getattr(item, "fixturenames", ()):
            item.add_marker(mark)


@pytest.fixture
def seed():
    env = os.environ.get("BLASST_TEST_SEED")
    s = int(env) if env else secrets.randbits(31)
    print(f"BLASST_TEST_SEED={s}")
    return s


@pytest.fixture
def rng(seed):
    return np.random.default_rng(seed)


class CliResult:
    """Outputs of one successful CLI call (None where not requested)."""

    def __init__(self, proc, cmd, paths):
        self.proc, self.cmd = proc, cmd
        self.o = np.load(paths["out"]) if "out" in paths else None
        self.lse = np.load(paths["lse"]) if "lse" in paths else None
        self.mask = np.load(paths["skip-mask"]) if "skip-mask" in paths else None
        self.dropped = np.load(paths["dropped-mass"]) if "dropped-mass" in paths else None
        self.stats = json.loads(Path(paths["stats"]).read_text()) if "stats" in paths else None


class Cli:
    OUT_NAMES = {"out": "o.npy", "lse": "lse.npy", "stats": "stats.json",
                 "skip-mask": "mask.npy", "dropped-mass": "dropped.npy"}

    def __init__(self, path, tmp_path):
        self.path = Path(path)
        self.tmp = Path(tmp_path)
        self.calls = 0

    def run(self, args, timeout=CALL_TIMEOUT_S):
        """Run `blasst <args>` (list of str) and return the CompletedProcess."""
        return subprocess.run([str(self.path)] + [str(a) for a in args], capture_output=True,
                              text=True, timeout=timeout)

    def workdir(self):
        self.calls += 1
        d = self.tmp / f"call{self.calls}"
        d.mkdir()
        return d

    def write(self, d, name, arr):
        p = d / f"{name}.npy"
        np.save(p, arr)
        return p

    def invoke(self, sub, inputs, flags=(), outputs=("out", "lse", "stats", "skip-mask"),
               timeout=CALL_TIMEOUT_S):
        """Write `inputs` ({flag: array}) as .npy, run `blasst sub --flag file ... flags`, with
        the requested outputs, assert success and load the outputs."""
        d = self.workdir()
        args = [sub]
        for flag, arr in inputs.items():
            args += [f"--{flag}", self.write(d, flag, arr)]
        paths = {}
        for name in outputs:
            paths[name] = d / self.OUT_NAMES[name]
            args += [f"--{name}", paths[name]]
        args += [str(f) for f in flags]
        cmd = shlex.join([str(self.path)] + [str(a) for a in args])
        proc = self.run(args, timeout=timeout)
        assert proc.returncode == 0, (
            f"blasst exited {proc.returncode}\n  cmd: {cmd}\n  stderr: {proc.stderr.strip()}")
        for name, p in paths.items():
            assert p.exists(), f"output --{name} missing after success\n  cmd: {cmd}"
        return CliResult(proc, cmd, paths)


@pytest.fixture
def cli(tmp_path):
    problem = _cli_problem()
    if problem:
        pytest.skip(problem)
    return Cli(cli_path(), tmp_path)
