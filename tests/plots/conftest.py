"""Fixtures of the plots tests: the synthetic run of the analysis tests, and a real CPU run of the seqlen suite,
reduced to seconds (three lengths, forward only, mha against tssa), shared by every test that needs the
runner's rows as they really are."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The synthetic runs are built by tests/analysis/synthetic_runs.py; this folder may be collected on its own.
ANALYSIS_TESTS = str(Path(__file__).resolve().parents[1] / "analysis")
if ANALYSIS_TESTS not in sys.path:
    sys.path.insert(0, ANALYSIS_TESTS)

from synthetic_runs import write_seqlen_run  # noqa: E402

SEQLEN_SUITE = Path(__file__).resolve().parents[2] / "suites" / "seqlen.yaml"
REAL_LENGTHS = [128, 256, 512]


@pytest.fixture
def seqlen_run(tmp_path: Path) -> Path:
    return write_seqlen_run(tmp_path)


@pytest.fixture(scope="session")
def cpu_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from attnbench.run.runner import run_suite
    from attnbench.suite.load import load_suite

    suite = load_suite(
        SEQLEN_SUITE,
        device="cpu",
        overrides=[f"T={','.join(map(str, REAL_LENGTHS))}", "modes=fwd", "timing.rep_ms=10"],
        only=["mha", "tssa"],
    )
    assert len(suite.cases) == 9  # mha reference and sdpa, tssa reference, at three lengths
    summary = run_suite(suite, tmp_path_factory.mktemp("cpu-results"))
    assert not summary.interrupted
    return summary.run_dir
