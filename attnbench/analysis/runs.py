"""Finding run folders, naming them in figures and tables, and loading their rows for analysis."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench.analysis.rows import AnalysisError, prepare
from attnbench.results.files import find_runs, read_meta, read_rows


@dataclass(frozen=True)
class RunInfo:
    """One run folder: where it is, what it is called in figures and tables, what it measured on."""

    path: Path
    name: str
    label: str
    suite: str
    device: str
    commit: str
    ceilings: Mapping[str, Any]
    rows: int


def load_runs(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    runs: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
) -> tuple[list[RunInfo], pd.DataFrame]:
    """The runs at or below `paths` and their rows, prepared for analysis (see `rows.prepare`).

    `runs` keeps only runs whose name matches one of the glob patterns; `labels` renames runs (keys: a run's
    folder name, its displayed name or its path) for overlaying several runs of one suite. Raises
    `ResultsError` for a missing path or an unreadable run, `AnalysisError` when nothing is left to analyse.
    """
    roots = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    found = list(dict.fromkeys(run for root in roots for run in find_runs(root)))
    where = ", ".join(map(str, roots))
    if not found:
        raise AnalysisError(f"{where}: no attnbench runs found (no meta.json at or below it)")
    names = _run_names(found)
    chosen = _choose_runs(found, names, runs)
    label_of = _run_labels(chosen, names, labels or {})
    infos, rows = [], []
    for path in chosen:
        meta, run_rows = read_meta(path), read_rows(path)
        infos.append(_run_info(path, names[path], label_of[path], meta, len(run_rows)))
        rows.extend({**row, "run": label_of[path], "run_dir": str(path)} for row in run_rows)
    if not rows:
        raise AnalysisError(f"{where}: the runs found hold no result rows yet ({', '.join(names.values())})")
    return infos, prepare(pd.DataFrame(rows))


def _run_names(paths: list[Path]) -> dict[Path, str]:
    """Folder names, lengthened by their parents until no two runs share one."""
    for depth in range(1, 8):
        names = {path: "/".join(path.resolve().parts[-depth:]) for path in paths}
        if len(set(names.values())) == len(names):
            return names
    return {path: str(path) for path in paths}


def _choose_runs(paths: list[Path], names: dict[Path, str], patterns: Sequence[str]) -> list[Path]:
    """The runs whose displayed name or folder name matches one of the glob `patterns` (every run without any)."""
    if not patterns:
        return paths
    chosen = [
        p for p in paths if any(fnmatch.fnmatch(names[p], pat) or fnmatch.fnmatch(p.name, pat) for pat in patterns)
    ]
    if not chosen:
        raise AnalysisError(f"no run matches {list(patterns)}; runs found: {', '.join(names.values())}")
    return chosen


def _run_labels(paths: list[Path], names: dict[Path, str], labels: Mapping[str, str]) -> dict[Path, str]:
    """Each run's label: its displayed name unless `labels` renames it; two runs may not share a label."""
    label_of = {path: names[path] for path in paths}
    for key, label in labels.items():
        matches = [p for p in paths if key in (names[p], p.name) or Path(key).resolve() == p.resolve()]
        if not matches:
            raise AnalysisError(f"--label {key}={label}: no such run; runs: {', '.join(names[p] for p in paths)}")
        for path in matches:
            label_of[path] = label
    repeated = sorted({label for label in label_of.values() if list(label_of.values()).count(label) > 1})
    if repeated:
        raise AnalysisError(f"two runs would share the label {repeated[0]!r}; give each run its own label")
    return label_of


def _run_info(path: Path, name: str, label: str, meta: Mapping[str, Any], rows: int) -> RunInfo:
    """What the figures and the summary say about a run, read from its meta.json."""
    device = meta.get("device") or {}
    git = meta.get("git") or {}
    commit = (git.get("commit") or "unknown")[:10] + (" (dirty)" if git.get("dirty") else "")
    return RunInfo(
        path=path,
        name=name,
        label=label,
        suite=(meta.get("suite") or {}).get("name") or "?",
        device=device.get("name") or device.get("type") or "unknown device",
        commit=commit,
        ceilings=meta.get("ceilings") or {},
        rows=rows,
    )
