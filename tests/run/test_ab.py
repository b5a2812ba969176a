"""The A/B runner (`attnbench compare --ab`): two revisions of a tiny git repository measured interleaved in one
job, each side running its own code, then gated B against A.

Workers run single-threaded (OMP_NUM_THREADS=1): this machine's two cores are shared, and a two-thread kernel
that loses a core waits out whole scheduler slices, which turns 0.05 ms into 20 ms.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from attnbench.cli import cli
from attnbench.gate.settings import EXIT_REGRESSION
from attnbench.results.files import find_runs, read_meta, read_rows
from attnbench.run.ab import Checkout

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "suites" / "smoke.yaml"
# Two cases (MHA through its reference and SDPA, forward, fp32), 50 to 100 timing samples per round.
TINY = ["modes=fwd", "levels=core", "causal=false", "timing.rep_ms=30", "timing.min_reps=50", "timing.max_reps=100"]
TINY_CLI = ["--device", "cpu", "--only", "mha", "--impl", "reference,sdpa", *[x for s in TINY for x in ("--set", s)]]
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SLOW_SDPA = """

import time as _time

_core = core


def core(problem, tensors, backend=None):  # noqa: F811 - revision B: 2 ms slower
    _time.sleep(0.002)
    return _core(problem, tensors, backend)
"""


def git(repo: Path, *args: str) -> str:
    """`git ARGS` in `repo` as a throwaway identity; its output."""
    command = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    return subprocess.run([*command, *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.slow
def test_ab_runs_each_revisions_code_interleaved(tmp_path):
    """A tiny git repository with two revisions of the mechanisms: B's SDPA sleeps 2 ms per call. The A/B run
    must measure each revision's own code (B's SDPA regressed, the reference unchanged), interleaved."""
    repo = tmp_path / "repo"
    shutil.copytree(
        REPO / "attnbench" / "mechanisms",
        repo / "attnbench" / "mechanisms",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "A")
    sdpa = repo / "attnbench" / "mechanisms" / "softmax" / "sdpa.py"
    sdpa.write_text(sdpa.read_text() + SLOW_SDPA)
    git(repo, "commit", "-q", "-am", "B")
    out, report = tmp_path / "results", tmp_path / "ab.json"
    result = CliRunner(env=SINGLE_THREAD).invoke(
        cli,
        [
            "compare",
            "--ab",
            "HEAD~1",
            "HEAD",
            str(SMOKE),
            "--repo",
            str(repo),
            "--rounds",
            "8",
            "-o",
            str(out),
            "--json",
            str(report),
            *TINY_CLI,
        ],
    )
    assert result.exit_code == EXIT_REGRESSION, result.output
    data = json.loads(report.read_text())
    by_impl = {case["impl"]: case for case in data["cases"]}
    assert by_impl["sdpa"]["verdict"] == "regressed" and by_impl["sdpa"]["diff_us"] > 1500
    assert by_impl["sdpa"]["n_rounds"] == 8 and by_impl["sdpa"]["p_rounds_slower"] < 0.01
    assert by_impl["reference"]["verdict"] in ("same", "noisy"), by_impl["reference"]
    side_a, side_b = sorted(find_runs(out))
    assert side_a.parent == side_b.parent and side_a.parent.name.startswith("smoke-cpu-ab-")
    meta_a, meta_b = read_meta(side_a), read_meta(side_b)
    assert meta_a["ab"]["commit"] == git(repo, "rev-parse", "HEAD~1") and meta_a["ab"]["side"] == "A"
    assert meta_b["ab"]["commit"] == git(repo, "rev-parse", "HEAD") and meta_b["status"] == "complete"
    assert meta_a["ab"]["job"] == meta_b["ab"]["job"] == side_a.parent.name
    for run in (side_a, side_b):
        rows = read_rows(run)
        assert all(len(row["round_medians_ms"]) == 8 for row in rows)
        assert [row["status"] for row in rows] == ["ok", "ok"]
        assert all(row["numerics_ok"] for row in rows)  # numerics checked in the first round


def test_a_side_without_an_implementations_module_lacks_it(tmp_path):
    """A revision that predates a kernel's module records its cases as unsupported (the other side runs them)."""
    side = Checkout("A", "old", tmp_path, None, files=frozenset({"mechanisms/softmax/sdpa.py"}))
    assert side.lacks("attnbench.mechanisms.softmax.sdpa:core") is None
    assert side.lacks("attnbench.mechanisms.xca.triton_xca:xca") == "old has no attnbench/mechanisms/xca/triton_xca.py"
    assert side.lacks("fault_mechanism:raises") is None  # a plugin outside the package is never checked
    assert Checkout("B", "folder", tmp_path, None).lacks("attnbench.mechanisms.xca.triton_xca:xca") is None
    env = side.worker_env()
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path.resolve()) and env["PYTHONSAFEPATH"] == "1"
