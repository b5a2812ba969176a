"""The fault drill for suite files: every malformed suite of `drill_suites.DRILLS` (syntax, types, unknown keys at
every level, impossible values, bombs, huge, binary, empty, missing files, folders) given to `attnbench run`,
with --dry-run and for real with -o, must exit 2 at once with one message naming the file (and the key and what
is allowed there, where there is a key), no traceback, and nothing written.

Every drill runs in-process through the click command (milliseconds each); a few run as real subprocesses, and
the schema-stage ones are checked in a fresh interpreter to fail without importing torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from drill_suites import BASE, DRILLS, Drill

from attnbench.cli import cli

ROOT = Path(__file__).resolve().parents[2]
# Generous bounds for a machine loaded by other work: on a quiet one the in-process runs take milliseconds and
# the schema stage of a fresh process a fraction of a second.
IN_PROCESS_LIMIT_S = 10.0
SUBPROCESS_LIMIT_S = 30.0
BY_NAME = {drill.name: drill for drill in DRILLS}


def test_the_drill_has_a_hundred_distinct_suites():
    assert len(DRILLS) >= 100
    assert len(BY_NAME) == len(DRILLS), "two drills share a name"
    contents = [drill.content for drill in DRILLS if isinstance(drill.content, bytes)]
    assert len(set(contents)) == len(contents), "two drills are the same file"


def assert_refused(drill: Drill, path: Path, code: int, output: str) -> None:
    """One clean refusal: exit 2, the file named, the key and allowed values where there is a key."""
    assert code == 2, f"{drill.name}: exit {code}\n{output}"
    assert "Traceback" not in output, output
    message = output[output.index("Error: ") :] if "Error: " in output else output
    assert str(path) in message, f"{drill.name}: the file is not named in {message!r}"
    assert len(message) < 4000, f"{drill.name}: a {len(message)}-character message"
    if drill.key is not None:
        named = any(f"{path}: {drill.key}{end}" in message for end in (": ", " ("))  # " (": from a --set
        assert named, f"{drill.name}: key {drill.key!r} not named in {message!r}"
        assert "; allowed: " in message, f"{drill.name}: no allowed values in {message!r}"
    if drill.allowed:
        allowed = message[message.index("; allowed: ") :]
        assert drill.allowed in allowed, f"{drill.name}: {drill.allowed!r} not offered in {message!r}"


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.mark.parametrize("drill", DRILLS, ids=[drill.name for drill in DRILLS])
def test_a_malformed_suite_is_refused_cleanly(tmp_path, drill):
    suite_dir = tmp_path / "suite"
    suite_dir.mkdir()
    path = drill.path(suite_dir)
    before = files_under(suite_dir)
    out_dir = tmp_path / "out"
    for args in (["--dry-run"], ["-o", str(out_dir)]):
        started = time.perf_counter()
        result = CliRunner().invoke(cli, ["run", str(path), *args])
        elapsed = time.perf_counter() - started
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
        assert_refused(drill, path, result.exit_code, result.output)
        assert elapsed < IN_PROCESS_LIMIT_S, f"{drill.name}: {elapsed:.1f} s"
    assert not out_dir.exists(), f"{drill.name}: wrote {files_under(out_dir)}"
    assert files_under(suite_dir) == before


# A few drills as a user meets them: a fresh `attnbench` process, timed from start to exit.
SUBPROCESS_DRILLS = ["billion laughs", "50 MB", "duplicate axis on one line", "T 2**70", "a folder"]


@pytest.mark.parametrize("name", SUBPROCESS_DRILLS)
def test_a_malformed_suite_is_refused_by_a_fresh_process(tmp_path, name):
    drill = BY_NAME[name]
    path = drill.path(tmp_path)
    out_dir = tmp_path / "out"
    args = ["--dry-run"] if len(name) % 2 else ["-o", str(out_dir)]  # both forms, over the set
    # A torch that cannot be imported: the schema stage must refuse these suites without it.
    poisoned = tmp_path / "no-torch"
    (poisoned / "torch").mkdir(parents=True)
    (poisoned / "torch" / "__init__.py").write_text("raise ImportError('the schema stage imported torch')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(poisoned), os.environ.get("PYTHONPATH")]))}
    before = files_under(tmp_path)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "attnbench.cli", "run", str(path), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env=env if drill.stage == "schema" else None,
    )
    elapsed = time.perf_counter() - started
    assert_refused(drill, path, result.returncode, result.stdout + result.stderr)
    assert elapsed < SUBPROCESS_LIMIT_S, f"{name}: {elapsed:.1f} s"
    assert files_under(tmp_path) == before, "something was written (the process ran in this folder)"


CHECK_WITHOUT_TORCH = textwrap.dedent(
    """
    import json, sys, time
    from attnbench.suite.load import SuiteError, check_suite
    slowest, unrefused = 0.0, []
    for path in sys.argv[1:]:
        started = time.perf_counter()
        try:
            check_suite(path)
            unrefused.append(path)
        except SuiteError:
            pass
        slowest = max(slowest, time.perf_counter() - started)
    print(json.dumps({"torch": "torch" in sys.modules, "unrefused": unrefused, "slowest_s": slowest}))
    """
)


def test_the_schema_stage_refuses_without_importing_torch(tmp_path):
    paths = []
    for index, drill in enumerate(drill for drill in DRILLS if drill.stage == "schema"):
        folder = tmp_path / str(index)
        folder.mkdir()
        paths.append(str(drill.path(folder)))
    result = subprocess.run(
        [sys.executable, "-c", CHECK_WITHOUT_TORCH, *paths], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["unrefused"] == []
    assert report["torch"] is False, "the schema stage imported torch"
    assert report["slowest_s"] < IN_PROCESS_LIMIT_S


def test_the_drill_catches_a_suite_that_is_not_malformed(tmp_path):
    """The drill's checks can fail: a valid suite passes through the same command and is not refused."""
    path = tmp_path / "suite.yaml"
    path.write_text(BASE)
    result = CliRunner().invoke(cli, ["run", str(path), "--dry-run", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    with pytest.raises(AssertionError, match="exit 0"):
        assert_refused(Drill("valid", BASE.encode()), path, result.exit_code, result.output)
