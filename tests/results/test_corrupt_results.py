"""Corrupt or foreign result files: every reader names the file, the line and the key, `show` and `run --resume`
exit 2 with one line and no traceback, and nothing is written into the folder they were given.

Run folders here are written by hand, the way the runner lays them out, then damaged one way each.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from attnbench.cli import cli
from attnbench.mechanisms import registry
from attnbench.results.files import (
    META_FILE,
    ROW_FIELDS,
    ROWS_FILE,
    SCHEMA_VERSION,
    ResultsError,
    append_row,
    read_rows,
    refuse_results_path,
    write_json,
)

TESTS_DIR = Path(__file__).resolve().parent.parent  # holds fault_mechanism.py
SUITE = """name: faults
mechanisms: [{name: faulty}]
impls: [reference]
modes: [fwd]
levels: [core]
dtypes: [fp32]
causal: false
sweep: {B: 1, T: [8, 12], H: 2, d: 4}
"""


@pytest.fixture
def suite(monkeypatch, tmp_path) -> Path:
    """A suite of the fault-injection mechanism (registered here), named as the runs below are."""
    monkeypatch.setenv(registry.PLUGIN_ENV, "fault_mechanism")
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    registry.mechanisms.cache_clear()
    path = tmp_path / "faults.yaml"
    path.write_text(SUITE)
    yield path
    registry.mechanisms.cache_clear()


def make_row(T: int, rng) -> dict:
    """A row as the runner writes it, with fresh numbers."""
    row = dict.fromkeys(ROW_FIELDS)
    time_ms = float(rng.uniform(0.01, 2.0))
    row.update(
        schema_version=SCHEMA_VERSION, case_id=f"case-{T}", mechanism="faulty", impl="reference", mode="fwd",
        level="core", dtype="fp32", causal=False, B=1, T=T, H=2, d=4, D=8, params={}, status="ok",
        time_ms=time_ms, time_samples_ms=[time_ms * f for f in rng.uniform(0.9, 1.1, 5)], numerics_ok=True,
    )  # fmt: skip
    return row


def write_run(path: Path, seed: int) -> Path:
    """A small interrupted run of the `faults` suite: its meta and two rows."""
    import numpy as np

    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    meta = {
        "schema_version": SCHEMA_VERSION,
        "suite": {"name": "faults", "device": "cpu"},
        "device": {"type": "cpu", "name": "test CPU"},
        "ceilings": {"copy_gbps": float(rng.uniform(5, 50)), "matmul_tflops": 0.1, "matmul_dtype": "fp32"},
        "status": "interrupted",
    }
    write_json(path / META_FILE, meta)
    for T in (8, 12):
        append_row(path, make_row(T, rng))
    return path


def _lines(run: Path) -> list[str]:
    return (run / ROWS_FILE).read_text().splitlines()


def _without(row_text: str, *keys: str) -> str:
    return json.dumps({key: value for key, value in json.loads(row_text).items() if key not in keys})


# Each damage: what it does to a run folder, the file the message must name (with its line), and a word of it.
DAMAGES = {
    "garbage line mid-file": (
        lambda run: (run / ROWS_FILE).write_text(f"{_lines(run)[0]}\nnot json {{\n{_lines(run)[1]}\n"),
        f"{ROWS_FILE}:2",
        "not JSON",
    ),
    "row missing keys": (
        lambda run: (run / ROWS_FILE).write_text(f"{_lines(run)[0]}\n{_without(_lines(run)[1], 'status', 'T')}\n"),
        f"{ROWS_FILE}:2",
        "T, status",
    ),
    "row that is no object": (lambda run: (run / ROWS_FILE).write_text("[1, 2]\n"), f"{ROWS_FILE}:1", "not a row"),
    "row with a word for a time": (
        lambda run: (run / ROWS_FILE).write_text(
            _lines(run)[0].replace('"time_ms": ', '"time_ms": "fast", "x": ') + "\n"
        ),
        f"{ROWS_FILE}:1",
        "'time_ms'",
    ),
    "binary rows file": (lambda run: (run / ROWS_FILE).write_bytes(bytes(range(256)) * 4), ROWS_FILE, "binary"),
    "truncated meta": (
        lambda run: (run / META_FILE).write_text((run / META_FILE).read_text()[:40]),
        META_FILE,
        "not JSON",
    ),
    "meta that is no object": (lambda run: (run / META_FILE).write_text("[1, 2, 3]\n"), META_FILE, "a JSON list"),
    "empty meta": (lambda run: (run / META_FILE).write_text(""), META_FILE, "empty"),
    "binary meta": (lambda run: (run / META_FILE).write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" * 8), META_FILE, "binary"),
    "meta with an unknown status": (
        lambda run: (run / META_FILE).write_text(
            json.dumps({**json.loads((run / META_FILE).read_text()), "status": "x"})
        ),
        META_FILE,
        "allowed: running, complete",
    ),
}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("command", ["show", "run --resume"])
def test_a_damaged_run_exits_2_naming_the_file(suite, tmp_path, seed, damage, command):
    run = write_run(tmp_path / "results" / "faults-cpu-1", seed)
    harm, named, word = DAMAGES[damage]
    harm(run)
    before = _snapshot(tmp_path / "results")
    args = ["show", str(run)] if command == "show" else ["run", str(suite), "--resume", str(run)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert f"{run / named}" in result.output and word in result.output, result.output
    assert _snapshot(tmp_path / "results") == before  # nothing written, not even a lock


def test_an_intact_run_and_an_empty_rows_file_are_shown(suite, tmp_path, seed):
    run = write_run(tmp_path / "results" / "faults-cpu-1", seed)
    assert len(read_rows(run)) == 2
    shown = CliRunner().invoke(cli, ["show", str(tmp_path / "results")])
    assert shown.exit_code == 0 and "faulty" in shown.output and "interrupted" in shown.output, shown.output
    (run / ROWS_FILE).write_text("")
    assert read_rows(run) == [] and CliRunner().invoke(cli, ["show", str(run)]).exit_code == 0


def test_a_torn_last_line_is_not_a_row_and_the_next_append_starts_a_fresh_line(tmp_path, seed):
    run = write_run(tmp_path / "run", seed)
    with open(run / ROWS_FILE, "a") as rows:
        rows.write('{"case_id": "torn", "mech')
    assert [row["T"] for row in read_rows(run)] == [8, 12]
    append_row(run, {**read_rows(run)[0], "case_id": "case-16", "T": 16})
    with pytest.raises(ResultsError, match=rf"{ROWS_FILE}:3: not JSON"):
        read_rows(run)  # the torn line stays a bad line mid-file: the runner cuts it off before it appends


@pytest.mark.parametrize("inside", ["", "sub", "sub/deeper", META_FILE, ROWS_FILE])
def test_output_paths_in_a_run_folder_are_refused(tmp_path, seed, inside):
    run = write_run(tmp_path / "results" / "faults-cpu-1", seed)
    with pytest.raises(ResultsError, match=r"run folder|a run.s own file"):
        refuse_results_path(run / inside if inside else run)
    refuse_results_path(tmp_path / "results" / "report.json")  # beside a run is fine
    refuse_results_path(tmp_path / "results")


def test_a_new_run_inside_a_run_folder_is_refused(suite, tmp_path, seed):
    run = write_run(tmp_path / "results" / "faults-cpu-1", seed)
    before = _snapshot(tmp_path / "results")
    for out in (run, run / "nested"):
        result = CliRunner().invoke(cli, ["run", str(suite), "-o", str(out)])
        assert result.exit_code == 2 and "run folder" in result.output and "Traceback" not in result.output
    assert _snapshot(tmp_path / "results") == before and not (run / "nested").exists()


def test_a_read_only_output_folder_exits_2_with_one_line(suite, tmp_path, monkeypatch):
    out = tmp_path / "read-only"
    out.mkdir()
    out.chmod(0o555)
    if os.geteuid() == 0:  # permissions do not bind root: make the folder refuse new entries as it would
        real_mkdir = Path.mkdir

        def refuse(path, *args, **kwargs):
            if path.parent == out:
                raise PermissionError(13, "Permission denied", str(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", refuse)
    result = CliRunner().invoke(cli, ["run", str(suite), "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "Permission denied" in result.output and str(out) in result.output and "Traceback" not in result.output
    assert list(out.iterdir()) == []


HEAD = b'{"format": "attnbench-baseline", "format_version": 1, "schema_version": 1, "meta": {}, '


@pytest.mark.parametrize(
    "content, word",
    [
        (b"\xff\xd8\xff\xe0 not text", "binary"),
        (HEAD + b'"cases": [1]}', "objects"),
        (HEAD + b'"cases": {"a": {"status": "ok"}}}', "lacks"),
        (b"", "not JSON"),
    ],
)
def test_a_foreign_baseline_is_named(tmp_path, content, word):
    from attnbench.results.baseline import read_baseline

    path = tmp_path / "seqlen-test-cpu.json"
    path.write_bytes(content)
    with pytest.raises(ResultsError, match=word) as caught:
        read_baseline(path)
    assert str(path) in str(caught.value)
