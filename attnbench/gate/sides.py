"""The two sides of a comparison: a run folder or a stored baseline each, read into rows by case id.

Also what names a case to the user: its label (`case_label`) and the ignore patterns matched against it.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnbench.gate.settings import CompareError
from attnbench.results import baseline
from attnbench.results.files import KEY_FIELDS, find_runs, read_single_run


@dataclass
class Side:
    """One side of a comparison: a run folder or a stored baseline, its meta and its rows by case id."""

    path: Path
    kind: str  # "run" or "baseline"
    meta: dict[str, Any]
    rows: dict[str, dict[str, Any]]

    @property
    def device(self) -> str:
        """The name of the device the side was measured on."""
        return (self.meta.get("device") or {}).get("name") or "unknown device"

    @property
    def device_key(self) -> str:
        """The device model the side's timings belong to (`attnbench.results.baseline.device_key`)."""
        return baseline.device_key(self.meta) or "unknown device"

    def row_device(self, case_id: str) -> str:
        """The device model one case of this side was measured on."""
        return baseline.row_device_key(self.meta, self.rows[case_id]) or "unknown device"

    @property
    def suite(self) -> str:
        """The name of the suite the side ran."""
        return (self.meta.get("suite") or {}).get("name") or "unknown suite"

    def describe(self) -> str:
        """Path, kind, suite, device, A/B ref and commit on one line, as the reports print it."""
        git = self.meta.get("git") or {}
        commit = (git.get("commit") or "unknown")[:10] + (" (dirty)" if git.get("dirty") else "")
        ab = self.meta.get("ab")
        source = f"ref {ab['ref']} " if ab else ""
        return f"{self.path} ({self.kind}): suite {self.suite} on {self.device}, {source}@ {commit}"


def load_side(path: str | os.PathLike) -> Side:
    """A run folder (with meta.json) or a baseline file; `CompareError` says why anything else is refused."""
    path = Path(path)
    if not path.exists():
        raise CompareError(f"{path}: no such file or folder")
    if path.is_file():
        if not baseline.is_baseline_file(path):
            raise CompareError(f"{path}: neither a run folder nor a baseline file (.json)")
        meta, rows = baseline.read_baseline(path)
        return Side(path, "baseline", meta, _by_case(path, rows))
    held = [p.name for p in path.glob("*.json")]
    if held and not find_runs(path):
        raise CompareError(f"{path}: a folder of baselines ({', '.join(sorted(held))}); name one file")
    run_dir, meta, rows = read_single_run(path)
    return Side(run_dir, "run", meta, _by_case(run_dir, rows))


def _by_case(path: Path, rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows keyed by case id; a row without the key fields is refused (the file is not attnbench results)."""
    keyed: dict[str, dict[str, Any]] = {}
    for number, row in enumerate(rows, 1):
        missing = [name for name in ("case_id", "status", *KEY_FIELDS) if name not in row]
        if missing:
            raise CompareError(f"{path}: row {number} lacks {', '.join(missing)} (not attnbench results)")
        keyed[row["case_id"]] = row  # a repeated case (a resume gone wrong) counts as its last measurement
    return keyed


def is_baseline_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder of baseline files (and holds no run)."""
    path = Path(path)
    return path.is_dir() and not find_runs(path) and any(path.glob("*.json"))


def resolve_base(path: str | os.PathLike, head: Side) -> Side:
    """BASE as given, or (a folder of baselines) the baseline stored for HEAD's suite and device. A folder with
    no run in it is taken for a folder of baselines, so that an empty one says which file it lacks."""
    if is_baseline_folder(path) or (Path(path).is_dir() and not find_runs(Path(path))):
        return load_side(baseline.find_baseline(path, head.suite, head.device_key))
    return load_side(path)


def check_base_path(path: str | os.PathLike) -> None:
    """Fail early (before a run) on a BASE that cannot be a run folder, baseline file or baseline folder."""
    path = Path(path)
    if not path.exists():
        raise CompareError(f"{path}: no such file or folder")
    if path.is_file() and not baseline.is_baseline_file(path):
        raise CompareError(f"{path}: not a baseline file (.json)")
    if path.is_dir() and not find_runs(path) and not any(path.glob("*.json")):
        raise CompareError(f"{path}: holds neither a run (meta.json) nor baselines (*.json)")


def read_ignore_file(path: str | os.PathLike) -> tuple[str, ...]:
    """Patterns of an ignore file: one case id or label pattern per line; blank lines and `#` comments skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise CompareError(f"{path}: cannot read the ignore file ({exc.strerror or exc})") from None
    return tuple(line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip())


def case_label(row: Mapping[str, Any]) -> str:
    """`gqa[G=2] core causal B=1 T=64 H=4 d=32 sdpa fwd fp32`: the line `attnbench run --dry-run` prints."""
    own = ",".join(f"{key}={value}" for key, value in sorted((row.get("params") or {}).items()))
    causal = " causal" if row.get("causal") else ""
    return (
        f"{row['mechanism']}[{own}] {row['level']}{causal} B={row['B']} T={row['T']} H={row['H']} d={row['d']} "
        f"{row['impl']} {row['mode']} {row['dtype']}"
    )


def matches(pattern: str, case_id: str, label: str) -> bool:
    """Whether an ignore pattern names this case: its id, its label, or a `*`/`?` pattern over either."""
    if pattern in (case_id, label):
        return True
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")  # labels hold [ ], which fnmatch reads
    return re.fullmatch(regex, label) is not None or fnmatch.fnmatchcase(case_id, pattern)
