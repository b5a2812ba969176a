"""The sweep survives: every failure becomes its case's status, interrupted runs resume, nothing is overwritten.

These tests run real sweeps (worker processes and all) on a fault-injection mechanism (tests/fault_mechanism.py)
whose implementations raise, run out of memory, hang, die, poison their process or compute the wrong thing.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from fault_runs import only_run, use_fault_mechanism, write_suite

from attnbench.cli import cli
from attnbench.mechanisms import registry
from attnbench.results import load
from attnbench.results.files import ROW_FIELDS, ROWS_FILE, SCHEMA_VERSION, STATUSES, find_runs, read_meta, read_rows
from attnbench.run.folders import fresh_run_dir

FAULTS = {
    "reference": ("ok", None),
    "raises": ("error", "deliberate failure"),
    "oom": ("oom", "out of memory"),
    "hang": ("timeout", "budget"),
    "dies": ("crash", "SIGKILL"),
    "poisoned": ("crash", "illegal memory access"),
    "wrong": ("numerics_fail", "RMS error"),
}


@pytest.fixture
def faulty(monkeypatch):
    """Register the fault-injection mechanism here and in every worker process."""
    use_fault_mechanism(monkeypatch)
    yield
    registry.mechanisms.cache_clear()


@pytest.mark.slow
def test_every_failure_is_recorded_and_the_sweep_goes_on(faulty, tmp_path):
    suite = write_suite(tmp_path / "faults.yaml", FAULTS)
    out = tmp_path / "results"
    result = CliRunner().invoke(cli, ["run", str(suite), "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run_dir = only_run(out)
    rows = {row["impl"]: row for row in read_rows(run_dir)}
    assert set(rows) == set(FAULTS)
    for impl, (status, fragment) in FAULTS.items():
        assert rows[impl]["status"] == status, rows[impl]
        if fragment:
            assert fragment in rows[impl]["reason"], rows[impl]["reason"]
    assert rows["reference"]["numerics_ok"] is True and rows["reference"]["time_ms"] > 0
    assert rows["wrong"]["numerics_ok"] is False and rows["wrong"]["time_ms"] > 0
    assert read_meta(run_dir)["status"] == "complete"


def test_rows_follow_the_schema_and_load_into_pandas(faulty, tmp_path):
    suite = write_suite(tmp_path / "faults.yaml", ["reference", "raises"], T=(8, 12))
    out = tmp_path / "results"
    assert CliRunner().invoke(cli, ["run", str(suite), "-o", str(out)]).exit_code == 0
    run_dir = only_run(out)
    meta = read_meta(run_dir)
    for key in ("suite", "git", "device", "versions", "tf32", "timer", "ceilings", "started_at", "finished_at"):
        assert meta[key] is not None, key
    assert meta["ceilings"]["copy_gbps"] > 0 and meta["ceilings"]["matmul_tflops"] > 0
    assert meta["timer"]["rep_ms"] == 2
    for row in read_rows(run_dir):
        assert set(ROW_FIELDS) <= set(row), set(ROW_FIELDS) - set(row)
        assert row["status"] in STATUSES
        assert row["schema_version"] == SCHEMA_VERSION
    frame = load(tmp_path)
    assert len(frame) == 4 and set(frame["status"]) == {"ok", "error"}
    assert list(frame["T"].sort_values()) == [8, 8, 12, 12]


@pytest.mark.slow
def test_a_run_is_never_overwritten(faulty, tmp_path):
    suite = write_suite(tmp_path / "faults.yaml", ["reference"])
    out = tmp_path / "results"
    for _ in range(2):
        assert CliRunner().invoke(cli, ["run", str(suite), "-o", str(out)]).exit_code == 0
    runs = find_runs(out)
    assert len(runs) == 2 and all(len(read_rows(r)) == 1 for r in runs)


def test_a_rejected_suite_writes_nothing_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nmechanisms: [{name: nosuch}]\nsweep: {T: [8], H: 2, d: 4}\n")
    out = tmp_path / "results"
    result = CliRunner().invoke(cli, ["run", str(bad), "-o", str(out)])
    assert result.exit_code == 2
    assert "nosuch" in result.output and str(bad) in result.output
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_an_interrupted_run_keeps_its_rows_and_resumes(faulty, tmp_path, how):
    suite = write_suite(tmp_path / "slow.yaml", ["slow"], T=range(4, 16))
    out = tmp_path / "results"
    command = [sys.executable, "-m", "attnbench.cli", "run", str(suite), "-o", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    rows_file = None
    while time.monotonic() < deadline:
        runs = find_runs(out) if out.exists() else []
        rows_file = runs[0] / ROWS_FILE if runs else None
        if rows_file and rows_file.exists() and len(rows_file.read_text().splitlines()) >= 2:
            break
        time.sleep(0.1)
    process.send_signal(how)
    output = process.communicate(timeout=60)[0].decode()
    run_dir = rows_file.parent
    before = read_rows(run_dir)
    assert 2 <= len(before) < 12, output
    status = read_meta(run_dir)["status"]
    if how == signal.SIGKILL:
        assert status == "running"  # killed outright: nothing could mark it, the rows are still whole
    else:
        assert process.returncode == 130, output
        assert status == "interrupted"
        assert "--resume" in output
    result = CliRunner().invoke(cli, ["run", str(suite), "--resume", str(run_dir)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    after = read_rows(run_dir)
    assert len(after) == 12 and len({row["case_id"] for row in after}) == 12
    assert after[: len(before)] == before
    assert all(row["status"] == "ok" for row in after)
    assert read_meta(run_dir)["status"] == "complete"
    assert find_runs(out) == [run_dir]


def test_resume_refuses_another_suite(faulty, tmp_path):
    suite = write_suite(tmp_path / "faults.yaml", ["reference"])
    out = tmp_path / "results"
    assert CliRunner().invoke(cli, ["run", str(suite), "-o", str(out)]).exit_code == 0
    other = tmp_path / "other.yaml"
    other.write_text(suite.read_text().replace("name: faults", "name: other"))
    result = CliRunner().invoke(cli, ["run", str(other), "--resume", str(only_run(out))])
    assert result.exit_code == 2 and "not 'other'" in result.output


def test_dry_run_lists_cases_and_writes_nothing(faulty, tmp_path):
    suite = write_suite(tmp_path / "faults.yaml", ["reference", "wrong"], T=(8, 16))
    out = tmp_path / "results"
    result = CliRunner().invoke(cli, ["run", str(suite), "--dry-run", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "4 cases" in result.output and "T=16" in result.output
    assert not out.exists()


def test_show_prints_a_run(faulty, tmp_path):
    suite = write_suite(tmp_path / "faults.yaml", ["reference"])
    out = tmp_path / "results"
    assert CliRunner().invoke(cli, ["run", str(suite), "-o", str(out)]).exit_code == 0
    result = CliRunner().invoke(cli, ["show", str(out)])
    assert result.exit_code == 0 and "faulty" in result.output and "ok" in result.output


def test_run_folders_are_fresh_even_within_one_second(tmp_path):
    """Both runners name folders through `fresh_run_dir`: a second folder never reuses the first's name."""
    folders = [fresh_run_dir(tmp_path / "out", "faults-cpu") for _ in range(3)]
    assert len(set(folders)) == 3 and all(path.is_dir() for path in folders)
    assert all(path.name.startswith("faults-cpu-") for path in folders)
