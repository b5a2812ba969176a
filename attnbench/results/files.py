"""Results on disk: a run folder holds `meta.json` (what, where, how) and `rows.jsonl` (one row per case).

Rows are appended and flushed as each case finishes, so an interrupted run keeps every finished row. A run
folder is never overwritten: the runner picks a fresh name for each run, and `--resume` appends only missing cases.
Times are recorded as `timestamp()` writes them: UTC, ISO 8601, to the second.
"""

from __future__ import annotations

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
    "started_at",
    "wall_s",
)

# The fields that identify a case: two rows with the same key measured the same thing.
KEY_FIELDS = ("mechanism", "params", "impl", "mode", "level", "dtype", "causal", "B", "T", "H", "d")


class ResultsError(ValueError):
    """A results folder or file that cannot be read as attnbench results."""


def timestamp() -> str:
    """The current time as results record it: `2025-01-31T12:00:00+00:00` (UTC, to the second)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def case_key(case: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a row (or case) that identify it (`KEY_FIELDS`)."""
    return {name: case[name] for name in KEY_FIELDS}


def case_id(case: Mapping[str, Any]) -> str:
    """A short stable id of a case's key (mechanism, its parameters, impl, mode, level, dtype, causal, shape)."""
    text = json.dumps(case_key(case), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def append_row(run_dir: Path, row: Mapping[str, Any]) -> None:
    """Append one row and flush it to disk before returning."""
    with open(run_dir / ROWS_FILE, "a") as f:
        f.write(json.dumps(row, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_meta(run_dir: Path) -> dict[str, Any]:
    """A run's meta.json; `ResultsError` for a folder that is no run or a schema this attnbench does not read."""
    path = Path(run_dir) / META_FILE
    if not path.is_file():
        raise ResultsError(f"{run_dir}: not an attnbench run (no {META_FILE})")
    meta = json.loads(path.read_text())
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise ResultsError(
            f"{path}: schema_version {meta.get('schema_version')!r}, this attnbench reads {SCHEMA_VERSION}"
        )
    return meta


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Every complete row of a run; a torn last line (the run was killed mid-write) is skipped."""
    path = Path(run_dir) / ROWS_FILE
    if not path.is_file():
        return []
    rows = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise ResultsError(f"{path}:{number}: not JSON ({exc})") from exc
    return rows


def find_runs(path: Path) -> list[Path]:
    """The run folder `path`, or every run folder below it, sorted by name."""
    path = Path(path)
    if not path.exists():
        raise ResultsError(f"{path}: no such file or folder")
    if (path / META_FILE).is_file():
        return [path]
    return sorted(p.parent for p in path.rglob(META_FILE))


def iter_rows(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """The rows of each run folder, each with `run`, `run_dir` and `device` saying where it came from."""
    for run_dir in paths:
        meta = read_meta(run_dir)
        for row in read_rows(run_dir):
            yield {**row, "run": run_dir.name, "run_dir": str(run_dir), "device": meta["device"]["name"]}


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
