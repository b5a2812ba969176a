"""The fault drill: a run stopped at any point, on a full disk, by two Ctrl-C, or resumed twice at once or with
other settings ends, after the `--resume` command it prints, as a readable, complete run (or a clear refusal):
never a duplicate row, never an unreadable one, never a traceback.

Every test drives the `attnbench` command, in-process or in a subprocess that it signals, on the fault-injection
mechanism (tests/fault_mechanism.py) with tiny cases.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import time

import pytest
from fault_runs import (
    assert_clean_run,
    invoke,
    meta_written,
    only_run,
    resume_command,
    rows_written,
    start,
    use_fault_mechanism,
    wait_until,
)
from fault_runs import write_suite as fault_suite

from attnbench.mechanisms import registry
from attnbench.results import files
from attnbench.results.files import LOCK_FILE, META_FILE, ROWS_FILE, read_meta, read_rows
from attnbench.run.runner import run_case
from attnbench.run.workers import WorkerSlot
from attnbench.suite.load import load_suite


@pytest.fixture
def faulty(monkeypatch):
    """Register the fault-injection mechanism here and in every worker process."""
    use_fault_mechanism(monkeypatch)
    yield
    registry.mechanisms.cache_clear()


def test_a_torn_row_is_kept_aside_and_the_next_row_starts_on_a_fresh_line(faulty, tmp_path):
    suite = fault_suite(tmp_path / "faults.yaml", ["reference"], T=(8, 12, 16))
    assert invoke("run", suite, "-o", tmp_path / "out").exit_code == 0
    run_dir = only_run(tmp_path / "out")
    lines = (run_dir / ROWS_FILE).read_bytes().splitlines(keepends=True)
    torn = lines[-1][: len(lines[-1]) // 2]  # the runner was killed while writing its last row
    (run_dir / ROWS_FILE).write_bytes(b"".join(lines[:-1]) + torn)
    meta = read_meta(run_dir)
    files.write_json(run_dir / META_FILE, {**meta, "status": "running"})
    assert len(read_rows(run_dir)) == 2  # the torn row is not a row yet

    result = invoke("run", suite, "--resume", run_dir)
    assert result.exit_code == 0, result.output
    assert_clean_run(run_dir, 3)
    kept = read_meta(run_dir)["torn_rows"]
    assert len(kept) == 1 and kept[0]["bytes"] == len(torn)
    assert (run_dir / kept[0]["file"]).read_bytes() == torn + b"\n"


def test_a_full_disk_fails_the_run_cleanly_and_the_printed_resume_finishes_it(faulty, tmp_path, monkeypatch):
    suite = fault_suite(tmp_path / "faults.yaml", ["reference"], T=(8, 12, 16))
    real_write, writes = files._write_all, []

    def disk_fills_on_the_second_row(fd, data):
        writes.append(data)
        if len(writes) == 2:
            real_write(fd, data[: len(data) // 2])  # part of the row reaches the disk, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(fd, data)

    monkeypatch.setattr(files, "_write_all", disk_fills_on_the_second_row)
    result = invoke("run", suite, "-o", tmp_path / "out", "--set", "T=8,12,16")
    assert result.exit_code == 2, result.output
    assert "No space left on device" in result.output and ROWS_FILE in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    run_dir = only_run(tmp_path / "out")
    assert read_meta(run_dir)["status"] == "failed"
    assert (run_dir / ROWS_FILE).read_bytes().endswith(b"\n") and len(read_rows(run_dir)) == 1

    monkeypatch.setattr(files, "_write_all", real_write)
    command = resume_command(result.output)
    assert "--set" in command  # the hint repeats the options the run's fingerprint needs
    resumed = invoke(*command)
    assert resumed.exit_code == 0, resumed.output
    assert_clean_run(run_dir, 3)


def test_a_signal_before_the_ceilings_leaves_a_resumable_run(faulty, tmp_path):
    suite = fault_suite(tmp_path / "faults.yaml", ["reference"], T=(8, 12))
    process = start("run", suite, "-o", tmp_path / "out")
    wait_until(lambda: meta_written(tmp_path / "out"))
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 130, output
    assert "Traceback" not in output
    run_dir = only_run(tmp_path / "out")
    meta = read_meta(run_dir)
    assert meta["status"] == "interrupted" and meta["ceilings"] is None and not read_rows(run_dir)

    resumed = invoke(*resume_command(output))
    assert resumed.exit_code == 0, resumed.output
    assert_clean_run(run_dir, 2)
    assert read_meta(run_dir)["ceilings"]["copy_gbps"] > 0


def test_a_double_ctrl_c_still_marks_the_run_and_prints_the_resume_command(faulty, tmp_path):
    suite = fault_suite(tmp_path / "slow.yaml", ["slow"], T=range(4, 14))
    process = start("run", suite, "-o", tmp_path / "out", "--impl", "slow")
    wait_until(lambda: rows_written(tmp_path / "out", 2))
    for _ in range(6):  # Ctrl-C pressed again and again while the run stops
        process.send_signal(signal.SIGINT)
        time.sleep(0.01)
    output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 130, output
    assert "Traceback" not in output
    run_dir = only_run(tmp_path / "out")
    assert read_meta(run_dir)["status"] == "interrupted"
    before = read_rows(run_dir)

    command = resume_command(output)
    assert command[command.index("--impl") + 1] == "slow"
    resumed = invoke(*command)
    assert resumed.exit_code == 0, resumed.output
    assert assert_clean_run(run_dir, 10)[: len(before)] == before


def test_a_second_writer_is_refused_while_the_first_finishes_the_run(faulty, tmp_path):
    suite = fault_suite(tmp_path / "slow.yaml", ["slow"], T=range(4, 12))
    process = start("run", suite, "-o", tmp_path / "out")
    wait_until(lambda: rows_written(tmp_path / "out", 1))
    run_dir = only_run(tmp_path / "out")
    rows_before = (run_dir / ROWS_FILE).read_bytes()

    second = invoke("run", suite, "--resume", run_dir)
    assert second.exit_code == 2, second.output
    assert f"pid {process.pid}" in second.output and "another attnbench process" in second.output
    assert (run_dir / ROWS_FILE).read_bytes().startswith(rows_before)  # the second one wrote nothing

    output = process.communicate(timeout=120)[0].decode()
    assert process.returncode == 0, output
    assert_clean_run(run_dir, 8)
    assert (run_dir / LOCK_FILE).exists()


def test_a_resume_with_other_settings_is_refused_unless_forced_and_then_recorded(faulty, tmp_path):
    suite = fault_suite(tmp_path / "faults.yaml", ["reference"], T=(8,))
    assert invoke("run", suite, "-o", tmp_path / "out").exit_code == 0
    run_dir = only_run(tmp_path / "out")
    meta_before = (run_dir / META_FILE).read_bytes()

    refused = invoke("run", suite, "--resume", run_dir, "--set", "T=8,12")
    assert refused.exit_code == 2, refused.output
    assert "other settings" in refused.output and "sweep" in refused.output and "--force" in refused.output
    assert (run_dir / META_FILE).read_bytes() == meta_before and len(read_rows(run_dir)) == 1

    forced = invoke("run", suite, "--resume", run_dir, "--set", "T=8,12", "--force")
    assert forced.exit_code == 0, forced.output
    assert_clean_run(run_dir, 2)
    resumes = read_meta(run_dir)["resumes"]
    assert resumes[-1]["forced"] is True and any("sweep" in change for change in resumes[-1]["changes"])
    assert json.loads(meta_before)["fingerprint"] != resumes[-1]["fingerprint"]

    again = invoke("run", suite, "--resume", run_dir)  # the run's own settings: nothing missing, nothing added
    assert again.exit_code == 0, again.output
    assert len(read_rows(run_dir)) == 2 and read_meta(run_dir)["resumes"][-1]["forced"] is False


def test_force_goes_only_with_resume(faulty, tmp_path):
    suite = fault_suite(tmp_path / "faults.yaml", ["reference"])
    result = invoke("run", suite, "--force", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "--resume" in result.output and not (tmp_path / "out").exists()


def test_each_worker_has_its_own_log_and_a_crash_quotes_only_what_its_case_wrote(faulty, tmp_path):
    suite = load_suite(fault_suite(tmp_path / "faults.yaml", ["dies"]), device="cpu")
    slot = WorkerSlot("cpu", tmp_path / "workers")
    try:
        first = slot.get()
        with open(first.log_path, "a") as log:
            log.write("warning left by an earlier case\n")
        row = run_case(slot, suite.cases[0], {}, "cpu")
        second = slot.get()
    finally:
        slot.close()
    assert row["status"] == "crash" and "SIGKILL" in row["reason"], row
    assert "earlier case" not in row["reason"]
    assert [first.log_path.name, second.log_path.name] == ["worker-1.log", "worker-2.log"]


def test_a_run_whose_set_up_failed_says_failed_and_resumes(faulty, tmp_path, monkeypatch):
    from attnbench.run import runner

    def no_ceilings(workers, run_dir):
        raise runner.RunError(f"{run_dir}: could not measure the device's ceilings: worker process died (simulated)")

    suite = fault_suite(tmp_path / "faults.yaml", ["reference"], T=(8, 12))
    monkeypatch.setattr(runner, "device_ceilings", no_ceilings)
    result = invoke("run", suite, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "ceilings" in result.output and "Traceback" not in result.output
    run_dir = only_run(tmp_path / "out")
    assert read_meta(run_dir)["status"] == "failed" and not read_rows(run_dir)

    monkeypatch.undo()
    use_fault_mechanism(monkeypatch)
    resumed = invoke("run", suite, "--resume", run_dir)
    assert resumed.exit_code == 0, resumed.output
    assert_clean_run(run_dir, 2)
