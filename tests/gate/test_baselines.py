"""Stored baselines (`attnbench baseline save`) as the gate's BASE, and `attnbench run --compare-to`
(runs from timed_runs.py)."""

from __future__ import annotations

import json

import pytest
from timed_runs import SINGLE_THREAD, SMOKE, TINY_CLI, derive, invoke, scaled, verdicts

from attnbench.gate.settings import EXIT_CLEAN, EXIT_REGRESSION
from attnbench.gate.sides import load_side
from attnbench.gate.verdicts import compare_paths
from attnbench.results import baseline
from attnbench.results.files import find_runs, read_meta


def test_baseline_save_round_trip(runs, tmp_path):
    store = tmp_path / "baselines"
    result = invoke("baseline", "save", runs[0], "-o", store, "--max-samples", "60")
    assert result.exit_code == 0, result.output
    (path,) = store.glob("*.json")
    meta = read_meta(runs[0])
    assert path.name == baseline.baseline_name("smoke", baseline.device_key(meta)) and path.name.startswith("smoke-")
    base = load_side(path)
    run = load_side(runs[0])
    assert base.kind == "baseline" and base.meta["device"] == meta["device"] and base.meta["timer"] == meta["timer"]
    assert set(base.rows) == set(run.rows)
    for case_id, row in base.rows.items():
        assert len(row["time_samples_ms"]) == 60 and row["time_ms"] == run.rows[case_id]["time_ms"]
        assert row["numerics_ok"] is True and row["status"] == "ok"
    assert sum('"samples_ms"' in line for line in path.read_text().splitlines()) == 2  # one line per case
    # The baseline file, or the folder of baselines (the file of HEAD's suite and device is picked).
    for stored in (path, store):
        assert compare_paths(stored, runs[0]).exit_code == EXIT_CLEAN
        assert set(verdicts(compare_paths(stored, runs[0])).values()) <= {"same", "noisy"}
    slow = derive(runs[0], tmp_path / "slow", rows=scaled(1.5, "sdpa"))
    assert invoke("compare", store, slow).exit_code == EXIT_REGRESSION
    # Refused: an interrupted run, and a baseline of another format version.
    interrupted = derive(runs[0], tmp_path / "interrupted", meta=lambda meta: {**meta, "status": "interrupted"})
    assert invoke("baseline", "save", interrupted, "-o", store).exit_code == 2
    assert invoke("baseline", "save", interrupted, "-o", tmp_path / "b2", "--allow-incomplete").exit_code == 0
    document = json.loads(path.read_text())
    path.write_text(json.dumps({**document, "format_version": 99}))
    assert invoke("compare", path, runs[0]).exit_code == 2


@pytest.mark.slow
def test_run_compare_to_gates_the_run(runs, tmp_path, monkeypatch):
    """`attnbench run --compare-to`: a real run against baselines 20x faster (fails) and 20x slower (passes)."""
    for name, value in SINGLE_THREAD.items():
        monkeypatch.setenv(name, value)
    assert invoke("run", SMOKE, *TINY_CLI, "--compare-to", tmp_path / "nowhere").exit_code == 2
    fast, slow = (
        derive(runs[0], tmp_path / name, rows=scaled(factor)) for name, factor in (("fast", 0.05), ("slow", 20.0))
    )
    fast_store = baseline.save_baseline(fast, tmp_path / "fast-store")
    slow_store = baseline.save_baseline(slow, tmp_path / "slow-store")
    failed = invoke("run", SMOKE, *TINY_CLI, "-o", tmp_path / "out1", "--compare-to", fast_store.parent)
    assert failed.exit_code == EXIT_REGRESSION, failed.output
    assert "FAIL: 2 regressed" in failed.output and len(find_runs(tmp_path / "out1")) == 1
    passed = invoke("run", SMOKE, *TINY_CLI, "-o", tmp_path / "out2", "--compare-to", slow_store)
    assert passed.exit_code == EXIT_CLEAN, passed.output
    assert "PASS: 2 improved" in passed.output
