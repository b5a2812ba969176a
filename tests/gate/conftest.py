"""The real runs every gate test compares, measured once per test run (see timed_runs.py)."""

from __future__ import annotations

import pytest
from timed_runs import SINGLE_THREAD, resolves, tiny_suite

from attnbench.run.runner import run_suite


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """Two back-to-back real runs of the tiny suite. The first is measured again (up to three times in all)
    while none of its cases resolves a 10% change, so that the 10% test has a case it can demand a verdict of."""
    out = tmp_path_factory.mktemp("runs")
    for attempt in range(3):
        first = run_suite(tiny_suite(), out / f"first-{attempt}", worker_env=SINGLE_THREAD)
        if any(resolves(row["time_samples_ms"]) for row in first.rows if row["status"] == "ok"):
            break
    second = run_suite(tiny_suite(), out / "second", worker_env=SINGLE_THREAD)
    for summary in (first, second):
        assert not summary.interrupted and summary.counts == {"ok": 2}, summary.rows
        assert all(len(row["time_samples_ms"]) >= 300 for row in summary.rows)
    return first.run_dir, second.run_dir
