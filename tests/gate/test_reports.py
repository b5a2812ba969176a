"""`attnbench compare`: its exit codes and its markdown and JSON reports (runs from timed_runs.py)."""

from __future__ import annotations

import json

import pytest
from timed_runs import derive, invoke, scaled

from attnbench.gate.settings import EXIT_REGRESSION


def test_exit_codes(runs, tmp_path):
    slow = derive(runs[0], tmp_path / "slow", rows=scaled(1.5))
    assert invoke("compare", runs[0], runs[0]).exit_code == 0
    result = invoke("compare", runs[0], slow)
    assert result.exit_code == 1 and "FAIL" in result.output and "regressed" in result.output
    assert invoke("compare", runs[0], slow, "--max-regressions", "2").exit_code == 0
    assert invoke("compare", runs[0], slow, "--threshold", "0.6").exit_code == 0
    missing = invoke("compare", runs[0], tmp_path / "nowhere")
    assert missing.exit_code == 2 and "no such file or folder" in missing.output
    future = derive(runs[0], tmp_path / "future", meta=lambda meta: {**meta, "schema_version": 99})
    schema = invoke("compare", future, runs[0])
    assert schema.exit_code == 2 and "'schema_version': 99" in schema.output
    not_rows = derive(runs[0], tmp_path / "alien", rows=lambda row: {"case_id": row["case_id"], "t": 1})
    assert invoke("compare", runs[0], not_rows).exit_code == 2
    (tmp_path / "empty").mkdir()
    assert invoke("compare", tmp_path / "empty", runs[0]).exit_code == 2
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    assert invoke("compare", tmp_path / "other.json", runs[0]).exit_code == 2
    assert invoke("compare", runs[0]).exit_code == 2
    assert invoke("compare", runs[0], runs[0], "--threshold", "-1").exit_code == 2
    assert invoke("compare", runs[0], runs[0], "--ignore-file", tmp_path / "nothing.txt").exit_code == 2


def test_markdown_and_json_reports(runs, tmp_path):
    slow = derive(runs[0], tmp_path / "slow", rows=scaled(1.5, "sdpa"))
    markdown, report = tmp_path / "out" / "summary.md", tmp_path / "out" / "report.json"
    result = invoke("compare", runs[0], slow, "--markdown", markdown, "--json", report)
    assert result.exit_code == EXIT_REGRESSION
    text = markdown.read_text()
    assert text.startswith("## ❌") and "**regressed**" in text and "mha[] core" in text and "+50.0%" in text
    data = json.loads(report.read_text())
    assert data["result"] == "fail" and data["exit_code"] == 1 and data["counts"] == {"regressed": 1, "same": 1}
    (failure,) = data["failures"]
    case = next(case for case in data["cases"] if case["case_id"] == failure)
    assert case["impl"] == "sdpa" and case["ratio"] == pytest.approx(1.5) and case["p_slower"] < 0.01
    assert invoke("compare", runs[0], runs[0], "--markdown", markdown, "--json", report).exit_code == 0
    # A report never lands inside a run folder or over a run's own files: bad input, before anything is written.
    for where in (slow / "summary.md", tmp_path / "out" / "meta.json"):
        refused = invoke("compare", runs[0], slow, "--markdown" if where.suffix == ".md" else "--json", where)
        assert refused.exit_code == 2 and not where.exists(), refused.output
    # A report that cannot be written (its folder would be under a file) is bad input too, not a gate failure.
    (tmp_path / "a-file").write_text("")
    unwritable = invoke("compare", runs[0], slow, "--json", tmp_path / "a-file" / "report.json")
    assert unwritable.exit_code == 2 and "a-file" in unwritable.output, unwritable.output
    assert markdown.read_text().startswith("## ✅") and json.loads(report.read_text())["result"] == "pass"
