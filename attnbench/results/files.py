"""Results on disk: a run folder holds `meta.json` (what, where, how) and `rows.jsonl` (one row per case).

Rows are appended as each case finishes, each in one write that starts on a fresh line and is flushed to disk
before the next case starts, so an interrupted run keeps every finished row. `meta.json` is replaced atomically
(a temporary file, flushed, then renamed over it), so a reader sees the old meta or the new one, never half of one.
A run folder is never overwritten: the runner picks a fresh name for each run, `--resume` appends only missing
cases, and `refuse_results_path` keeps every other output out of run folders.

Every reader here validates what it reads: a file that is not a run's (not JSON, not UTF-8, a row without its
keys, a meta.json that is no object) is a `ResultsError` naming the file, the line and the key.
Times are recorded as `timestamp()` writes them: UTC, ISO 8601, to the second.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
META_FILE = "meta.json"
ROWS_FILE = "rows.jsonl"

STATUSES = ("ok", "numerics_fail", "oom", "unsupported", "error", "timeout", "crash")

# Every row has these keys (None where they do not apply), plus one column per mechanism parameter.
ROW_FIELDS = (
    "schema_version",
    "case_id",
    "mechanism",
    "variant",
    "impl",
    "mode",
    "level",
    "dtype",
    "causal",
    "B",
    "T",
    "H",
    "G",
    "D",
    "d",
    "params",
    "complexity",
    "status",
    "reason",
    "time_ms",
    "time_p20_ms",
    "time_p80_ms",
    "time_samples_ms",
    "first_call_ms",
    "reps",
    "timing_method",
    "calls_per_sample",
    "launch_bound",
    "kernels",
    "noisy",
    "contention",
    "energy_j",
    "peak_mem_bytes",
    "peak_reserved_bytes",
    "flops",
    "bytes",
    "tflops",
    "gbps",
    "frac_matmul_peak",
    "frac_copy_bw",
    "rel_err",
    "max_abs_err",
    "numerics_ok",
    "numerics_worst",
    "numerics_T",
    "tolerance",
    "numerics_checked",
    "numerics_score",
    "flop_convention",
    "flops_impl",
    "impl_matmul_tflops",
    "ceiling_dtype",
    "rate_flags",
    "started_at",
    "wall_s",
    # Decode rows (`attnbench.measure.decode`): the cache length (= T) and new tokens of the step, the bytes the
    # implementation keeps (measured), per cached token, and by its mechanism's formula.
    "cache_len",
    "q_len",
    "cache_bytes",
    "cache_bytes_per_token",
    "cache_model_bytes",
    "cache_formula",
    # Task rows (docs/TASKS.md): the cell, held-out accuracy (best rate, every rate), time to 99%, throughput, size
    "task",
    "accuracy",
    "accuracy_by_lr",
    "best_lr",
    "steps_to_target",
    "time_to_target_s",
    "tokens_per_s",
    "param_count",
    "final_loss",
    "host",
    "device_index",
)

# The fields that identify a case: two rows with the same key measured the same thing.
KEY_FIELDS = ("mechanism", "params", "impl", "mode", "level", "dtype", "causal", "B", "T", "H", "d")

# What a row must hold to be read at all: its id, its case key and its status. Rows of older runs may lack
# later fields (readers fill those with None); they never lack these.
REQUIRED_ROW_KEYS = ("case_id", *KEY_FIELDS, "status")
# Row fields that are a number (or None) when present; a reader computes with them.
NUMBER_ROW_FIELDS = (
    "time_ms",
    "time_p20_ms",
    "time_p80_ms",
    "first_call_ms",
    "peak_mem_bytes",
    "flops",
    "bytes",
    "tflops",
    "gbps",
    "rel_err",
    "max_abs_err",
    "wall_s",
)
# A run's status in its meta.json: `running` while a runner writes it (or after it was killed outright).
RUN_STATUSES = ("running", "complete", "interrupted", "failed")
# The runner's advisory lock, held by the one process that writes the run (released when it exits or dies).
LOCK_FILE = "run.lock"
# The files of a run folder that only the runner writes.
RUN_FILES = (META_FILE, ROWS_FILE, LOCK_FILE)


class ResultsError(ValueError):
    """A results folder or file that cannot be read as attnbench results."""


def timestamp() -> str:
    """The current time as results record it: `2025-01-31T12:00:00+00:00` (UTC, to the second)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def case_key(case: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a row (or case) that identify it (`KEY_FIELDS`)."""
    return {name: case[name] for name in KEY_FIELDS}


def case_id(case: Mapping[str, Any]) -> str:
    """A short stable id of a case's key (mechanism, its parameters, impl, mode, level, dtype, causal, shape),
    and of a task case's cell (`task`; rows without one keep the ids they always had)."""
    key = case_key(case)
    if case.get("task") is not None:
        key["task"] = case["task"]
    if case.get("mode") == "decode":  # a decode step's new tokens (its cache length is T)
        key["q_len"] = case.get("q_len")
    text = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically and durably: a temporary file beside `path`, flushed to disk, renamed over `path`.
    A reader (or a machine that loses power) sees the old file or the new one, never half of one."""
    text = json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk, where the platform allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` to `fd` (a short write is continued, as `os.write` may stop early)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def append_row(run_dir: Path, row: Mapping[str, Any]) -> None:
    """Append one row on a line of its own and flush it to disk before returning.

    The row goes in one write of one line. When the write fails (a full disk, a quota, an I/O error) the file is
    cut back to its previous end, so that the rows before stay readable and the next append starts cleanly; the
    `OSError` is raised. A file whose last line lacks its newline (torn by an earlier crash) gets one first.
    """
    data = (json.dumps(row, default=str) + "\n").encode()
    fd = os.open(Path(run_dir) / ROWS_FILE, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        end = os.fstat(fd).st_size
        if end and os.pread(fd, 1, end - 1) != b"\n":
            data = b"\n" + data
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, end)
            raise
    finally:
        os.close(fd)


def _short(value: Any, limit: int = 60) -> str:
    """A value as a message shows it: its repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_text(path: Path, what: str) -> str:
    """A file's text; `ResultsError` naming the file when it cannot be read or is not UTF-8 text."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ResultsError(f"{path}: not a {what} (binary: byte {exc.start} is not UTF-8 text)") from None
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None


def read_meta(run_dir: Path) -> dict[str, Any]:
    """A run's meta.json, checked; `ResultsError` for a folder that is no run, a file that is not a run's meta
    (not JSON, not an object, no suite name, an unknown status) or a schema this attnbench does not read."""
    path = Path(run_dir) / META_FILE
    if not path.is_file():
        raise ResultsError(f"{run_dir}: not an attnbench run (no {META_FILE})")
    text = _read_text(path, "run's meta")
    if not text.strip():
        raise ResultsError(f"{path}: empty file, not a run's meta")
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise ResultsError(f"{path}: not JSON ({exc}); a run's meta is one JSON object") from None
    if not isinstance(meta, dict):
        raise ResultsError(f"{path}: a JSON {type(meta).__name__}, not a run's meta (one JSON object)")
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise ResultsError(
            f"{path}: key 'schema_version': {_short(meta.get('schema_version'))}, this attnbench reads {SCHEMA_VERSION}"
        )
    suite = meta.get("suite")
    if not isinstance(suite, dict) or not isinstance(suite.get("name"), str):
        raise ResultsError(f"{path}: key 'suite': {_short(suite)}; expected an object with the suite's 'name'")
    if meta.get("status") not in RUN_STATUSES:
        raise ResultsError(f"{path}: key 'status': {_short(meta.get('status'))}; allowed: {', '.join(RUN_STATUSES)}")
    for key in ("device", "ceilings", "git", "versions", "timer", "limits"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise ResultsError(f"{path}: key {key!r}: {_short(meta[key])}; expected an object")
    return meta


def check_row(where: str, row: Any) -> dict[str, Any]:
    """`row` if it is a row attnbench can read; `ResultsError` naming `where` it was (`<file>:<line>`) and the
    key otherwise."""
    if not isinstance(row, dict):
        raise ResultsError(f"{where}: a JSON {type(row).__name__}, not a row (one JSON object per line)")
    missing = [key for key in REQUIRED_ROW_KEYS if key not in row]
    if missing:
        raise ResultsError(f"{where}: row lacks {', '.join(missing)} (every row has {', '.join(REQUIRED_ROW_KEYS)})")
    if row["status"] not in STATUSES:
        raise ResultsError(f"{where}: key 'status': {_short(row['status'])}; allowed: {', '.join(STATUSES)}")
    for key in ("case_id", "mechanism", "impl", "mode", "level", "dtype"):
        if not isinstance(row[key], str):
            raise ResultsError(f"{where}: key {key!r}: {_short(row[key])}; expected a string")
    for key in ("B", "T", "H", "d"):
        if row[key] is not None and (isinstance(row[key], bool) or not isinstance(row[key], int)):
            raise ResultsError(f"{where}: key {key!r}: {_short(row[key])}; expected an integer")
    for key in NUMBER_ROW_FIELDS:
        value = row.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ResultsError(f"{where}: key {key!r}: {_short(value)}; expected a number or null")
    samples = row.get("time_samples_ms")
    if samples is not None and not (isinstance(samples, list) and all(isinstance(s, int | float) for s in samples)):
        raise ResultsError(f"{where}: key 'time_samples_ms': {_short(samples)}; expected a list of numbers or null")
    return row


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Every complete row of a run, each checked (`check_row`). A torn last line, one without its newline (the
    run was killed while writing it, or is writing it now), is not a row yet and is left out; any other line
    that is not a row is a `ResultsError` naming the file and the line."""
    path = Path(run_dir) / ROWS_FILE
    if not path.exists():
        return []
    text = _read_text(path, "rows file")
    lines = text.split("\n")
    if lines[-1]:
        with contextlib.suppress(ValueError):
            json.loads(lines[-1])
            lines.append("")  # a complete last row without its newline: still a row
    rows = []
    for number, line in enumerate(lines[:-1], 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ResultsError(f"{path}:{number}: not JSON ({exc}); each line of a rows file is one row") from None
        rows.append(check_row(f"{path}:{number}", row))
    return rows


def find_runs(path: Path) -> list[Path]:
    """The run folder `path`, or every run folder below it, sorted by name."""
    path = Path(path)
    if not path.exists():
        raise ResultsError(f"{path}: no such file or folder")
    try:
        if (path / META_FILE).is_file():
            return [path]
        return sorted(p.parent for p in path.rglob(META_FILE) if p.is_file())
    except OSError as exc:
        raise ResultsError(f"{exc.filename or path}: cannot look for runs there ({exc.strerror or exc})") from None


def read_single_run(path: str | os.PathLike) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    """The one run folder at or below `path`, its meta and its rows; `ResultsError` when there is not exactly one
    run there or it has no rows (what the gate and a stored baseline need to read)."""
    runs = find_runs(Path(path))
    if len(runs) != 1:
        found = "no run (no meta.json below it)" if not runs else f"{len(runs)} runs: {', '.join(r.name for r in runs)}"
        raise ResultsError(f"{path}: expected one run folder, found {found}")
    meta = read_meta(runs[0])
    rows = read_rows(runs[0])
    if not rows:
        raise ResultsError(f"{runs[0]}: the run has no rows (status {meta.get('status')!r})")
    return runs[0], meta, rows


def run_folder_of(path: str | os.PathLike) -> Path | None:
    """The run folder that `path` is or lies inside (a folder above it holding a meta.json), or None."""
    absolute = Path(os.path.abspath(path))
    for folder in (absolute, *absolute.parents):
        with contextlib.suppress(OSError):
            if (folder / META_FILE).is_file():
                return folder
    return None


def refuse_results_path(path: str | os.PathLike) -> None:
    """Raise `ResultsError` when writing `path` (a report, a figure, a folder of them, a new run) could damage
    results: it lies inside a run folder (only the runner writes there) or bears a run file's name
    (meta.json, rows.jsonl). Call it on every output path before writing anything."""
    if Path(path).name in RUN_FILES:
        raise ResultsError(
            f"{path}: refusing to write a file named {Path(path).name} (a run's own file); choose another name"
        )
    run = run_folder_of(path)
    if run is not None:
        where = "is a run folder" if Path(os.path.abspath(path)) == run else f"lies inside the run folder {run}"
        raise ResultsError(f"{path}: {where} (only the runner writes there); write outside it")


def iter_rows(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """The rows of each run folder, each with `run`, `run_dir` and `device` saying where it came from."""
    for run_dir in paths:
        meta = read_meta(run_dir)
        device = (meta.get("device") or {}).get("name")
        for row in read_rows(run_dir):
            yield {**row, "run": run_dir.name, "run_dir": str(run_dir), "device": device}


def load(path: str | os.PathLike):
    """A pandas DataFrame of one run folder, or of every run below a folder.

    Columns: every row field (see `ROW_FIELDS`), one column per mechanism parameter, and `run`, `run_dir`,
    `device` naming where each row came from. Raises `ResultsError` when no run is found.
    """
    import pandas as pd

    runs = find_runs(Path(path))
    if not runs:
        raise ResultsError(f"{path}: no attnbench runs found (no {META_FILE} below it)")
    rows = list(iter_rows(runs))
    frame = pd.DataFrame(rows, columns=None if rows else [*ROW_FIELDS, "run", "run_dir", "device"])
    return frame
