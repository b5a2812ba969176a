"""Helpers of the runner's tests: the fault-injection mechanism registered here and in every worker, tiny
suites of it, and the CLI run in a subprocess (to be signalled) or in-process."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml
from click.testing import CliRunner

from attnbench.cli import cli
from attnbench.mechanisms import registry
from attnbench.results.files import META_FILE, find_runs, read_rows

TESTS_DIR = Path(__file__).resolve().parent.parent  # holds fault_mechanism.py


def use_fault_mechanism(monkeypatch) -> None:
    """Register the fault-injection mechanism in this process and in every worker process it starts."""
    monkeypatch.setenv(registry.PLUGIN_ENV, "fault_mechanism")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])))
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    registry.mechanisms.cache_clear()


def write_suite(path: Path, impls, T=(8,), timeout_s=3.0) -> Path:
    """A suite of the fault-injection mechanism: the given implementations, forward, fp32, timed briefly."""
    suite = {
        "name": "faults",
        "mechanisms": [{"name": "faulty"}],
        "impls": list(impls),
        "modes": ["fwd"],
        "levels": ["core"],
        "dtypes": ["fp32"],
        "causal": False,
        "sweep": {"B": 1, "T": list(T), "H": 2, "d": 4},
        "timing": {"warmup_ms": 1, "rep_ms": 2, "min_reps": 2, "max_reps": 4},
        "limits": {"case_timeout_s": timeout_s},
    }
    path.write_text(yaml.safe_dump(suite))
    return path


def only_run(out: Path) -> Path:
    """The one run folder below `out`."""
    runs = find_runs(out)
    assert len(runs) == 1, runs
    return runs[0]


def invoke(*args: str):
    """`attnbench ARGS` run in this process; its result (exit code, output)."""
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def start(*args: str) -> subprocess.Popen:
    """`attnbench ARGS` started in a subprocess, its output (stdout and stderr) piped."""
    command = [sys.executable, "-m", "attnbench.cli", *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_until(condition, timeout_s: float = 120.0) -> None:
    """Poll `condition()` until it holds; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def rows_written(out: Path, at_least: int) -> bool:
    """Whether the one run below `out` has `at_least` rows on disk."""
    runs = find_runs(out) if out.exists() else []
    return bool(runs) and len(read_rows(runs[0])) >= at_least


def meta_written(out: Path) -> bool:
    """Whether a run folder below `out` has its meta.json."""
    return out.exists() and any(out.glob(f"*/{META_FILE}"))


def resume_command(output: str) -> list[str]:
    """The arguments of the `attnbench run ... --resume RUN` command that `output` tells the user to run."""
    line = next(line for line in output.splitlines() if "attnbench run " in line and "--resume" in line)
    words = shlex.split(line[line.index("attnbench run ") :])
    assert words[:2] == ["attnbench", "run"], words
    return words[1:]


def assert_clean_run(run_dir: Path, cases: int) -> list[dict]:
    """The run is readable, complete, and holds each of its `cases` cases exactly once, one row per line."""
    from attnbench.results.files import ROWS_FILE, read_meta

    text = (run_dir / ROWS_FILE).read_text()
    assert text.endswith("\n") and all(line.startswith("{") for line in text.splitlines()), text[-300:]
    rows = read_rows(run_dir)
    assert len(rows) == cases and len({row["case_id"] for row in rows}) == cases
    assert read_meta(run_dir)["status"] == "complete"
    return rows
