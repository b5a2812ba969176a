"""The regression gate: compare two runs (or a run and a stored baseline) case by case, and say what got slower.

Cases are joined on their full key (`results.case_id`: mechanism, its parameters, impl, mode, level, dtype,
causal, shape); cases present on one side only are listed. A case **regressed** when all of these hold:

1. its median got slower by more than `threshold` (relative, default 5%) and by more than `floor_us`
   (absolute, default 1 µs): the change is big enough to matter;
2. the one-sided Mann–Whitney U test of the raw timing samples says HEAD is slower at `alpha` (default 0.01),
   and the bootstrap interval (`confidence`, default 95%) of the ratio of medians lies above 1: the change is
   beyond the noise of the samples. In a paired A/B run (`run_ab`) the one-sided Wilcoxon signed-rank test
   of the per-round log ratios must also say HEAD is slower at `alpha`: samples of one round share the
   machine's state, so there the round, not the sample, is the independent unit (`round_test`).

Improvements are found the same way, mirrored. A change past the threshold that is not beyond the noise is
`noisy` (shown, never a failure). The threshold is what absorbs run-to-run drift, which samples taken within one
run cannot see; docs/REGRESSION.md shows the numbers behind these defaults. Numerics and statuses are gated too:
a case that passed in BASE and fails its numerics in HEAD (`numerics_broke`), or that ran in BASE and ends in
HEAD as oom, error, crash, timeout or unsupported (`broke`), fails the gate whatever its speed.

Exit codes: 0 clean, 1 regression, 2 bad input. `run_ab` measures two revisions interleaved on one device (the
most noise-resistant setup) and writes one run folder per side, which `compare_paths` then reads.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from attnbench.results import baseline
from attnbench.results import files as results
from attnbench.results.files import ResultsError

if TYPE_CHECKING:
    from rich.console import Console

    from attnbench.suite.case import Case
    from attnbench.suite.load import Suite

EXIT_CLEAN, EXIT_REGRESSION, EXIT_BAD_INPUT = 0, 1, 2

# Verdicts, most severe first; the first three fail the gate (regressions beyond the tolerated count).
VERDICTS = (
    "numerics_broke",
    "broke",
    "regressed",
    "improved",
    "noisy",
    "fixed",
    "failing",
    "ignored",
    "same",
    "unsupported",
)
TIMED_STATUSES = ("ok", "numerics_fail")  # statuses whose rows carry timing samples
MAX_BOOTSTRAP_SAMPLES = 1000  # larger sides are thinned to this many order statistics before resampling


class CompareError(ResultsError):
    """Input the gate cannot compare: a missing folder, an unreadable run or baseline, a bad ignore file."""


@dataclass(frozen=True)
class GateSettings:
    """When a case counts as regressed (see the module docstring) and how many regressions are tolerated.

    `ignore` holds case ids or `fnmatch` patterns (`*` and `?` only) over case labels (`case_label`); an
    ignored case is still compared and shown, but its timing never fails the gate (its numerics and status
    still do).
    """

    threshold: float = 0.05
    floor_us: float = 1.0
    alpha: float = 0.01
    confidence: float = 0.95
    resamples: int = 2000
    max_regressions: int = 0
    ignore: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.threshold < 0 or self.floor_us < 0:
            raise ValueError(f"threshold and floor must be >= 0, got {self.threshold} and {self.floor_us}")
        if not (0 < self.alpha < 1 and 0 < self.confidence < 1):
            raise ValueError(f"alpha and confidence must lie in (0, 1), got {self.alpha} and {self.confidence}")
        if self.resamples < 100 or self.max_regressions < 0:
            raise ValueError(f"resamples must be >= 100 and max_regressions >= 0, got {self.resamples}")

    def describe(self) -> str:
        return (
            f"regressed = median slower by > {self.threshold:.1%} and > {self.floor_us:g} µs, and beyond noise "
            f"(one-sided Mann–Whitney U p < {self.alpha:g} and the {self.confidence:.0%} bootstrap interval of "
            f"the median ratio above 1; in A/B runs also the one-sided Wilcoxon signed-rank p < {self.alpha:g} "
            f"over the paired rounds); {self.max_regressions} regression(s) tolerated"
        )


# Loading ---------------------------------------------------------------------------------------------------


@dataclass
class Side:
    """One side of a comparison: a run folder or a stored baseline, its meta and its rows by case id."""

    path: Path
    kind: str  # "run" or "baseline"
    meta: dict[str, Any]
    rows: dict[str, dict[str, Any]]

    @property
    def device(self) -> str:
        return (self.meta.get("device") or {}).get("name") or "unknown device"

    @property
    def suite(self) -> str:
        return (self.meta.get("suite") or {}).get("name") or "unknown suite"

    def describe(self) -> str:
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
    runs = results.find_runs(path)
    if len(runs) != 1:
        held = [p.name for p in path.glob("*.json")]
        if not runs and held:
            raise CompareError(f"{path}: a folder of baselines ({', '.join(sorted(held))}); name one file")
        found = "no run (no meta.json below it)" if not runs else f"{len(runs)} runs: {', '.join(r.name for r in runs)}"
        raise CompareError(f"{path}: expected one run folder, found {found}")
    meta = results.read_meta(runs[0])
    rows = results.read_rows(runs[0])
    if not rows:
        raise CompareError(f"{runs[0]}: the run has no rows (status {meta.get('status')!r})")
    return Side(runs[0], "run", meta, _by_case(runs[0], rows))


def _by_case(path: Path, rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    keyed: dict[str, dict[str, Any]] = {}
    for number, row in enumerate(rows, 1):
        missing = [name for name in ("case_id", "status", *results.KEY_FIELDS) if name not in row]
        if missing:
            raise CompareError(f"{path}: row {number} lacks {', '.join(missing)} (not attnbench results)")
        keyed[row["case_id"]] = row  # a repeated case (a resume gone wrong) counts as its last measurement
    return keyed


def is_baseline_folder(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and not results.find_runs(path) and any(path.glob("*.json"))


def resolve_base(path: str | os.PathLike, head: Side) -> Side:
    """BASE as given, or (a folder of baselines) the baseline stored for HEAD's suite and device. A folder with
    no run in it is taken for a folder of baselines, so that an empty one says which file it lacks."""
    if is_baseline_folder(path) or (Path(path).is_dir() and not results.find_runs(Path(path))):
        return load_side(baseline.find_baseline(path, head.suite, head.device))
    return load_side(path)


def check_base_path(path: str | os.PathLike) -> None:
    """Fail early (before a run) on a BASE that cannot be a run folder, baseline file or baseline folder."""
    path = Path(path)
    if not path.exists():
        raise CompareError(f"{path}: no such file or folder")
    if path.is_file() and not baseline.is_baseline_file(path):
        raise CompareError(f"{path}: not a baseline file (.json)")
    if path.is_dir() and not results.find_runs(path) and not any(path.glob("*.json")):
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


def _matches(pattern: str, case_id: str, label: str) -> bool:
    if pattern in (case_id, label):
        return True
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")  # labels hold [ ], which fnmatch reads
    return re.fullmatch(regex, label) is not None or fnmatch.fnmatchcase(case_id, pattern)


# Statistics ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """HEAD against BASE for one case's timing samples."""

    base_ms: float  # median of BASE's samples
    head_ms: float
    n_base: int
    n_head: int
    ratio: float  # head_ms / base_ms
    low: float | None = None  # bootstrap interval of the ratio; computed only where a verdict depends on it
    high: float | None = None
    p_slower: float | None = None  # one-sided Mann–Whitney U: HEAD's samples tend to be larger
    p_faster: float | None = None
    # Paired A/B runs only: the number of paired rounds and the one-sided Wilcoxon signed-rank p-values of the
    # per-round log ratios of medians (HEAD slower, HEAD faster); see `round_test`.
    n_rounds: int | None = None
    p_rounds_slower: float | None = None
    p_rounds_faster: float | None = None

    @property
    def diff_us(self) -> float:
        return (self.head_ms - self.base_ms) * 1e3


def median_ratio_interval(
    base: np.ndarray, head: np.ndarray, confidence: float, resamples: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile bootstrap interval of median(head) / median(base), each side resampled on its own."""
    base, head = _thinned(base), _thinned(head)
    tail = (1 - confidence) / 2
    ratios = np.median(rng.choice(head, (resamples, len(head))), axis=1) / np.median(
        rng.choice(base, (resamples, len(base))), axis=1
    )
    low, high = np.quantile(ratios, [tail, 1 - tail])
    return float(low), float(high)


def _thinned(samples: np.ndarray) -> np.ndarray:
    """Evenly spaced order statistics of a very large side: the same distribution, a bootstrap 4x cheaper per
    4x fewer samples, and an interval only slightly wider (so never more eager to flag)."""
    if len(samples) <= MAX_BOOTSTRAP_SAMPLES:
        return samples
    return np.asarray(baseline.thin_samples(samples, MAX_BOOTSTRAP_SAMPLES))


def rank_test(base: np.ndarray, head: np.ndarray) -> tuple[float, float]:
    """One-sided Mann–Whitney U p-values: (HEAD slower, HEAD faster). Both 1 when every sample is equal."""
    from scipy.stats import mannwhitneyu

    if np.ptp(np.concatenate([base, head])) == 0:
        return 1.0, 1.0
    slower = mannwhitneyu(head, base, alternative="greater").pvalue
    faster = mannwhitneyu(head, base, alternative="less").pvalue
    return float(slower), float(faster)


def round_test(base_rounds: Sequence[float], head_rounds: Sequence[float]) -> tuple[float, float]:
    """One-sided Wilcoxon signed-rank p-values (HEAD slower, HEAD faster) of the per-round log ratios of paired
    rounds. Samples within a round share the machine's state of that moment, so in an A/B run the round, not
    the sample, is the independent unit: this test sees the noise between rounds that the rank test of the
    pooled samples mistakes for a difference. Both 1 when every round ties."""
    from scipy.stats import wilcoxon

    logs = np.log(np.asarray(head_rounds, dtype=float)) - np.log(np.asarray(base_rounds, dtype=float))
    if not np.any(logs):
        return 1.0, 1.0
    slower = wilcoxon(logs, alternative="greater", zero_method="zsplit").pvalue
    faster = wilcoxon(logs, alternative="less", zero_method="zsplit").pvalue
    return float(slower), float(faster)


def min_round_p(rounds: int) -> float:
    """The smallest one-sided p-value the signed-rank test of `rounds` paired rounds can give (all agree)."""
    return 0.5**rounds


def timing_change(
    base_samples: Sequence[float],
    head_samples: Sequence[float],
    settings: GateSettings,
    seed: int = 0,
    base_rounds: Sequence[float] | None = None,
    head_rounds: Sequence[float] | None = None,
) -> Change:
    """The change of one case; the noise tests run only when the change passes the threshold and floor.
    `base_rounds`, `head_rounds`: per-round medians of a paired A/B run (round i of each side measured back to
    back), which add the round-level test to the noise criterion."""
    base, head = np.asarray(base_samples, dtype=float), np.asarray(head_samples, dtype=float)
    base_ms, head_ms = float(np.median(base)), float(np.median(head))
    change = Change(base_ms, head_ms, len(base), len(head), head_ms / base_ms)
    if _paired(base_rounds, head_rounds):
        change = replace(change, n_rounds=len(base_rounds))
    if not _past_threshold(change, settings):
        return change
    rng = np.random.default_rng(seed)
    low, high = median_ratio_interval(base, head, settings.confidence, settings.resamples, rng)
    p_slower, p_faster = rank_test(base, head)
    change = replace(change, low=low, high=high, p_slower=p_slower, p_faster=p_faster)
    if _paired(base_rounds, head_rounds):
        p_rounds_slower, p_rounds_faster = round_test(base_rounds, head_rounds)
        change = replace(
            change, n_rounds=len(base_rounds), p_rounds_slower=p_rounds_slower, p_rounds_faster=p_rounds_faster
        )
    return change


def _rounds_needed(alpha: float) -> int:
    rounds = 2
    while min_round_p(rounds) >= alpha:
        rounds += 1
    return rounds


def _paired(base_rounds: Sequence[float] | None, head_rounds: Sequence[float] | None) -> bool:
    return bool(base_rounds) and bool(head_rounds) and len(base_rounds) == len(head_rounds) >= 2


def _past_threshold(change: Change, settings: GateSettings) -> bool:
    slower = change.ratio > 1 + settings.threshold and change.diff_us > settings.floor_us
    faster = 1 / change.ratio > 1 + settings.threshold and -change.diff_us > settings.floor_us
    return slower or faster


def timing_verdict(change: Change, settings: GateSettings) -> str:
    if not _past_threshold(change, settings):
        return "same"
    if change.ratio > 1:
        beyond_noise = change.p_slower < settings.alpha and change.low > 1
        if change.p_rounds_slower is not None:
            beyond_noise = beyond_noise and change.p_rounds_slower < settings.alpha
        return "regressed" if beyond_noise else "noisy"
    beyond_noise = change.p_faster < settings.alpha and change.high < 1
    if change.p_rounds_faster is not None:
        beyond_noise = beyond_noise and change.p_rounds_faster < settings.alpha
    return "improved" if beyond_noise else "noisy"


# Comparing -------------------------------------------------------------------------------------------------


@dataclass
class CaseResult:
    case_id: str
    label: str
    verdict: str
    base: dict[str, Any] | None
    head: dict[str, Any] | None
    change: Change | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        row = self.head or self.base or {}
        data: dict[str, Any] = {
            "case_id": self.case_id,
            "label": self.label,
            "verdict": self.verdict,
            **{name: row.get(name) for name in results.KEY_FIELDS},
            "base_status": self.base and self.base["status"],
            "head_status": self.head and self.head["status"],
            "note": self.note,
        }
        if self.change is not None:
            data.update(asdict(self.change), diff_us=self.change.diff_us)
        return data


@dataclass
class Comparison:
    base: Side
    head: Side
    settings: GateSettings
    cases: list[CaseResult]
    only_base: list[CaseResult]
    only_head: list[CaseResult]
    warnings: list[str]

    def of(self, *verdicts: str) -> list[CaseResult]:
        return [case for case in self.cases if case.verdict in verdicts]

    @property
    def counts(self) -> Counter:
        return Counter(case.verdict for case in self.cases)

    @property
    def failures(self) -> list[CaseResult]:
        """What fails the gate: every numerics or status break, and the regressions once past the tolerance."""
        broken = self.of("numerics_broke", "broke")
        regressed = self.of("regressed")
        return broken + (regressed if len(regressed) > self.settings.max_regressions else [])

    @property
    def exit_code(self) -> int:
        return EXIT_REGRESSION if self.failures else EXIT_CLEAN

    def headline(self) -> str:
        counts = self.counts
        parts = [f"{counts[v]} {v.replace('_', ' ')}" for v in VERDICTS[:5] if counts[v]]
        tolerated = ""
        if counts["regressed"] and counts["regressed"] <= self.settings.max_regressions:
            tolerated = f" ({counts['regressed']} regression(s) tolerated)"
        verdict = "FAIL" if self.failures else "PASS"
        changes = ", ".join(parts) or "no change beyond the threshold"
        return f"{verdict}: {changes}{tolerated}, {len(self.cases)} cases compared"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "attnbench-compare",
            "format_version": 1,
            "result": "fail" if self.failures else "pass",
            "exit_code": self.exit_code,
            "headline": self.headline(),
            "base": {"path": str(self.base.path), "kind": self.base.kind, "meta": self.base.meta},
            "head": {"path": str(self.head.path), "kind": self.head.kind, "meta": self.head.meta},
            "settings": {**asdict(self.settings), "rule": self.settings.describe()},
            "warnings": self.warnings,
            "counts": dict(self.counts),
            "failures": [case.case_id for case in self.failures],
            "cases": [case.to_dict() for case in self.cases],
            "only_base": [case.to_dict() for case in self.only_base],
            "only_head": [case.to_dict() for case in self.only_head],
        }


def compare(base: Side, head: Side, settings: GateSettings = GateSettings()) -> Comparison:
    """Join BASE and HEAD on the case key and give every case a verdict (see `VERDICTS`)."""
    cases = [
        _compare_case(case_id, base.rows[case_id], head.rows[case_id], settings, paired_rounds(base, head))
        for case_id in head.rows
        if case_id in base.rows
    ]
    only_base = [_one_side(case_id, row, "base") for case_id, row in base.rows.items() if case_id not in head.rows]
    only_head = [_one_side(case_id, row, "head") for case_id, row in head.rows.items() if case_id not in base.rows]
    cases.sort(key=lambda case: (VERDICTS.index(case.verdict), -(case.change.ratio if case.change else 0)))
    warnings = environment_warnings(base.meta, head.meta)
    rounds = sorted({case.change.n_rounds for case in cases if case.change and case.change.n_rounds})
    if rounds and min_round_p(rounds[0]) >= settings.alpha:
        warnings.append(
            f"only {rounds[0]} paired round(s) per case: the round-level test cannot reach p < {settings.alpha:g}, "
            f"so no case can be flagged (use --rounds {_rounds_needed(settings.alpha)} or more)"
        )
    if only_base or only_head:
        warnings.append(
            f"{len(only_base)} case(s) only in BASE and {len(only_head)} only in HEAD: they are listed, not compared"
        )
    return Comparison(base, head, settings, cases, only_base, only_head, warnings)


def _one_side(case_id: str, row: dict[str, Any], side: str) -> CaseResult:
    """A case measured on one side only (a suite change, an interrupted run): listed with its status."""
    base, head = (row, None) if side == "base" else (None, row)
    return CaseResult(case_id, case_label(row), f"only_{side}", base, head, note=row["status"])


def paired_rounds(base: Side, head: Side) -> bool:
    """Whether the two sides are the A and B runs of one A/B job, whose rounds were measured in pairs."""
    jobs = [(side.meta.get("ab") or {}).get("job") for side in (base, head)]
    return jobs[0] is not None and jobs[0] == jobs[1]


def _compare_case(
    case_id: str, base: dict[str, Any], head: dict[str, Any], settings: GateSettings, paired: bool = False
) -> CaseResult:
    label = case_label(head)
    result = CaseResult(case_id, label, "same", base, head)
    before, after = base["status"], head["status"]
    # A row says `numerics_fail` when its check failed; `numerics_ok` False on an `ok` row is read the same way.
    wrong = after == "numerics_fail" or (after == "ok" and head.get("numerics_ok") is False)
    if before == "ok" and base.get("numerics_ok") is not False and wrong:
        result.verdict, result.note = "numerics_broke", head.get("reason") or "numerics failed"
    elif before == "ok" and after != "ok":
        result.verdict, result.note = "broke", f"ok → {after}: {head.get('reason') or ''}".rstrip(": ")
    elif before != "ok" and after == "ok":
        result.verdict, result.note = "fixed", f"{before} → ok"
    elif before == after == "unsupported":
        result.verdict = "unsupported"
    elif before != "ok" and after != "ok":
        result.verdict, result.note = "failing", f"{before} → {after}: {head.get('reason') or ''}".rstrip(": ")
    if result.verdict in ("same", "numerics_broke") and base.get("time_samples_ms") and head.get("time_samples_ms"):
        result.change = timing_change(
            base["time_samples_ms"],
            head["time_samples_ms"],
            settings,
            int(case_id[:8], 16),
            base.get("round_medians_ms") if paired else None,
            head.get("round_medians_ms") if paired else None,
        )
        if result.verdict == "same":
            result.verdict = timing_verdict(result.change, settings)
            _ignore(result, settings)
    elif result.verdict == "same":
        result.note = "no timing samples on one side"
    return result


def _ignore(result: CaseResult, settings: GateSettings) -> None:
    if any(_matches(pattern, result.case_id, result.label) for pattern in settings.ignore):
        if result.verdict != "same":
            result.note = f"ignored; would be {result.verdict}"
        result.verdict = "ignored"


# What differs between the two sides. (section, keys or None for all, what it is, consequence)
ENVIRONMENT_CHECKS = (
    ("device", ("name", "type", "capability", "driver", "cuda"), "device", "timings are not comparable"),
    ("versions", ("python", "torch", "triton", "numpy"), "library version", "timings may differ for that reason"),
    ("timer", None, "timer setting", "timings may differ for that reason"),
    ("tf32", None, "TF32 setting", "fp32 timings and errors are not comparable"),
    ("limits", ("check_numerics",), "numerics setting", "numerics are gated only where both sides checked them"),
)


def environment_warnings(base: Mapping[str, Any], head: Mapping[str, Any]) -> list[str]:
    """One line per difference in device, driver, library versions, timer settings, TF32 flags, and for runs
    that did not complete."""
    warnings = []
    for section, keys, what, consequence in ENVIRONMENT_CHECKS:
        before, after = base.get(section) or {}, head.get(section) or {}
        for key in keys or sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                warnings.append(
                    f"different {what}: {section}.{key} is {before.get(key)!r} in BASE, {after.get(key)!r} in HEAD "
                    f"({consequence})"
                )
    base_suite, head_suite = (base.get("suite") or {}).get("name"), (head.get("suite") or {}).get("name")
    if base_suite != head_suite:
        warnings.append(f"different suites: {base_suite!r} in BASE, {head_suite!r} in HEAD")
    for side, meta in (("BASE", base), ("HEAD", head)):
        if meta.get("status") != "complete":
            warnings.append(f"{side} is a run that did not complete (status {meta.get('status')!r})")
    return warnings


def compare_paths(
    base: str | os.PathLike, head: str | os.PathLike, settings: GateSettings = GateSettings()
) -> Comparison:
    """Compare HEAD (a run folder or baseline file) with BASE (the same, or a folder of baselines, from which
    the one of HEAD's suite and device is taken). Raises `CompareError` (a `ResultsError`) on bad input."""
    head_side = load_side(head)
    return compare(resolve_base(base, head_side), head_side, settings)


# Reports ---------------------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _percent(ratio: float | None) -> str:
    return "" if ratio is None else f"{(ratio - 1) * 100:+.1f}%"


def _interval(change: Change | None) -> str:
    if change is None or change.low is None:
        return ""
    return f"[{_percent(change.low)}, {_percent(change.high)}]"


def _p_value(change: Change | None) -> str:
    if change is None or change.p_slower is None:
        return ""
    text = f"{min(change.p_slower, change.p_faster):.1g}"
    if change.p_rounds_slower is not None:
        text += f" (rounds {min(change.p_rounds_slower, change.p_rounds_faster):.2g})"
    return text


def _cells(case: CaseResult) -> list[str]:
    change = case.change
    return [
        case.verdict.replace("_", " "),
        case.label,
        _ms(change.base_ms) if change else (case.base or {}).get("status", ""),
        _ms(change.head_ms) if change else (case.head or {}).get("status", ""),
        _percent(change.ratio) if change else "",
        _interval(change),
        _p_value(change),
        f"{change.n_base}/{change.n_head}" if change else "",
        case.note,
    ]


COLUMNS = ("verdict", "case", "base ms", "head ms", "change", "interval", "p", "n", "note")
NUMERIC_COLUMNS = ("base ms", "head ms", "change", "p", "n")
VERDICT_STYLE = {
    "numerics_broke": "bold red",
    "broke": "bold red",
    "regressed": "bold red",
    "improved": "green",
    "noisy": "yellow",
    "fixed": "green",
    "failing": "magenta",
    "ignored": "dim",
    "same": "",
    "unsupported": "dim",
}


def print_report(comparison: Comparison, console: Console, *, show_all: bool = False) -> None:
    """The terminal report: both sides, warnings, every case that is not `same` (all with `show_all`)."""
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    console.print(Text(f"BASE  {comparison.base.describe()}"))
    console.print(Text(f"HEAD  {comparison.head.describe()}"))
    console.print(Text(f"gate  {comparison.settings.describe()}", style="dim"))
    if comparison.warnings:
        body = "\n".join(f"- {line}" for line in comparison.warnings)
        console.print(Panel(Text(body), title="WARNING: the two sides differ", border_style="bold yellow"))
    shown = comparison.cases if show_all else [c for c in comparison.cases if c.verdict not in ("same", "unsupported")]
    if shown:
        table = Table(title=None if show_all else "cases that are not the same")
        for column in COLUMNS:
            table.add_column(column, justify="right" if column in NUMERIC_COLUMNS else "left")
        for case in shown:
            cells = _cells(case)
            table.add_row(Text(cells[0], style=VERDICT_STYLE[case.verdict]), *map(Text, cells[1:]))
        console.print(table)
    for what, listed in (("only in BASE", comparison.only_base), ("only in HEAD", comparison.only_head)):
        if listed:
            console.print(f"{len(listed)} case(s) {what}:")
            for case in listed:
                console.print(f"  {case.label}  ({case.note})", markup=False)
    style = "bold red" if comparison.failures else "bold green"
    console.print(Text(comparison.headline(), style=style))


def to_markdown(comparison: Comparison, *, title: str = "attnbench regression gate") -> str:
    """A PR comment or CI job summary: the verdict, warnings, failures and changes, every case folded away."""
    mark = "❌" if comparison.failures else "✅"
    lines = [f"## {mark} {title}: {comparison.headline()}", ""]
    if comparison.warnings:
        lines += ["> [!WARNING]", *[f"> - {_md(line)}" for line in comparison.warnings], ""]
    changed = [case for case in comparison.cases if case.verdict not in ("same", "unsupported", "ignored")]
    if changed:
        lines += [*_md_table(changed), ""]
    else:
        lines += ["No case changed beyond the threshold.", ""]
    lines += ["<details><summary>All compared cases</summary>", "", *_md_table(comparison.cases), "", "</details>", ""]
    for what, listed in (("only in BASE", comparison.only_base), ("only in HEAD", comparison.only_head)):
        if listed:
            lines += [f"<details><summary>{len(listed)} case(s) {what}</summary>", ""]
            lines += [f"- `{case.label}` ({case.note})" for case in listed] + ["", "</details>", ""]
    lines += [
        f"- **BASE** {_md(comparison.base.describe())}",
        f"- **HEAD** {_md(comparison.head.describe())}",
        f"- **gate** {_md(comparison.settings.describe())}",
        "",
    ]
    return "\n".join(lines)


def _md_table(cases: Sequence[CaseResult]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for case in cases:
        cells = _cells(case)
        cells[0] = f"**{cells[0]}**" if case.verdict in VERDICTS[:3] else cells[0]
        cells[1] = f"`{cells[1]}`"
        lines.append("| " + " | ".join(_md(cell) for cell in cells) + " |")
    return lines


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_reports(
    comparison: Comparison, *, markdown: str | os.PathLike | None = None, json_path: str | os.PathLike | None = None
) -> None:
    for path, text in ((markdown, to_markdown), (json_path, _json_text)):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text(comparison))


def _json_text(comparison: Comparison) -> str:
    return json.dumps(comparison.to_dict(), indent=2, default=str) + "\n"


def report(
    comparison: Comparison,
    *,
    console: Console | None = None,
    markdown: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
    show_all: bool = False,
) -> Comparison:
    """Print the terminal report to `console` (if given) and write the markdown and JSON reports."""
    if console is not None:
        print_report(comparison, console, show_all=show_all)
    write_reports(comparison, markdown=markdown, json_path=json_path)
    return comparison


def gate(
    base: str | os.PathLike,
    head: str | os.PathLike,
    settings: GateSettings = GateSettings(),
    **outputs: Any,
) -> Comparison:
    """`compare_paths`, then `report(comparison, **outputs)`: what `attnbench compare BASE HEAD` does."""
    return report(compare_paths(base, head, settings), **outputs)


# A/B: two revisions interleaved on one device --------------------------------------------------------------


@dataclass(frozen=True)
class Checkout:
    """One side of an A/B run: a folder holding an `attnbench` package, whose code the side's worker runs.

    `files` lists the mechanism files the side's revision has (paths below `attnbench/`, as
    `mechanisms/softmax/sdpa.py`); an implementation whose module is not among them is recorded as unsupported on
    that side. None: the package is the revision's whole, nothing to check.
    """

    label: str  # "A" or "B"
    ref: str  # as the user named it: a git revision or a folder
    root: Path
    commit: str | None
    env: Mapping[str, str] = field(default_factory=dict)  # extra environment of the side's worker
    files: frozenset[str] | None = None

    def lacks(self, target: str) -> str | None:
        """Why this side cannot run the implementation `module:function`, or None when it can."""
        module = target.split(":", 1)[0]
        if self.files is None or not module.startswith("attnbench.mechanisms."):
            return None
        path = module.removeprefix("attnbench.").replace(".", "/")
        if f"{path}.py" in self.files or f"{path}/__init__.py" in self.files:
            return None
        return f"{self.ref} has no attnbench/{path}.py"


def checkout(ref: str, dest: str | os.PathLike, label: str, *, repo: str | os.PathLike = ".") -> Checkout:
    """A package for one side: this checkout's harness (suite, worker, timing, numerics: the same for both
    sides, so both are measured alike) with `attnbench/mechanisms/` (specs, references, kernels) from `ref`.

    `ref` is a folder holding `attnbench/` (a working tree with uncommitted changes, say) or a git revision of
    `repo`, read with `git archive` (read-only: no worktree, branch or index of the repository is touched). Mechanism
    folders `ref` lacks keep this checkout's files, so the registry still imports; their implementations are
    recorded as unsupported on that side (`Checkout.lacks`).
    """
    import attnbench
    from attnbench.run import environment

    package = Path(dest) / "attnbench"
    shutil.copytree(Path(attnbench.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    folder = Path(ref)
    if (folder / "attnbench" / "mechanisms").is_dir():
        state = environment.git_state(folder.resolve())
        commit = state["commit"] and state["commit"] + ("-dirty" if state["dirty"] else "")
        source = folder / "attnbench" / "mechanisms"
        shutil.copytree(
            source, package / "mechanisms", dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
        )
        files = {f"mechanisms/{path.relative_to(source).as_posix()}" for path in source.rglob("*") if path.is_file()}
        return Checkout(label, ref, Path(dest), commit, files=frozenset(files))
    commit = _git(repo, "rev-parse", "--verify", "--end-of-options", f"{ref}^{{commit}}").decode().strip()
    archive = _git(repo, "archive", "--format=tar", commit, "--", "attnbench/mechanisms")
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        members = [member for member in tar.getmembers() if member.isfile()]
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")  # refuses links and paths that leave dest
        else:
            tar.extractall(dest)
    files = {member.name.removeprefix("attnbench/") for member in members}
    return Checkout(label, ref, Path(dest), commit, files=frozenset(files))


def _git(repo: str | os.PathLike, *args: str) -> bytes:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CompareError(f"git {' '.join(args[:1])} failed: {exc}") from None
    if done.returncode != 0:
        raise CompareError(f"git {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def merge_rounds(case: Case, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One row from the rounds of one case on one side: the samples of every round, their statistics, the
    numerics of the first round (the only one that checks them); the first failing round's status wins."""
    failed = next((index for index, row in enumerate(rows) if row["status"] not in TIMED_STATUSES), None)
    if failed is not None:
        row = dict(rows[failed])
        if len(rows) > 1:
            row["reason"] = f"round {failed + 1} of {len(rows)}: {row.get('reason')}"
        return {**row, **case.row_base()}
    samples = [sample for row in rows for sample in row["time_samples_ms"]]
    median = float(np.median(samples))
    first = rows[0]
    merged = {
        **first,
        "time_ms": median,
        "time_p20_ms": float(np.percentile(samples, 20)),
        "time_p80_ms": float(np.percentile(samples, 80)),
        "time_samples_ms": samples,
        "reps": len(samples),
        "round_medians_ms": [float(np.median(row["time_samples_ms"])) for row in rows],
        "peak_mem_bytes": max((r["peak_mem_bytes"] for r in rows if r.get("peak_mem_bytes") is not None), default=None),
        "wall_s": round(sum(r.get("wall_s") or 0 for r in rows), 3),
    }
    scale = first["time_ms"] / median  # rates follow the merged median
    for rate in ("tflops", "gbps", "frac_matmul_peak", "frac_copy_bw"):
        if first.get(rate) is not None:
            merged[rate] = first[rate] * scale
    return {**merged, **case.row_base()}  # HEAD's case key, whatever the side's code computes for it


class _AbSide:
    """A side's run folder, meta and worker (started on first use, replaced after a timeout or a crash)."""

    def __init__(self, checkout: Checkout, run_dir: Path, device: str):
        self.checkout, self.run_dir, self.device = checkout, run_dir, device
        self.worker = None
        self.meta: dict[str, Any] = {}

    def request(self, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        from attnbench.run.runner import Worker

        if self.worker is None:
            root = self.checkout.root.resolve()
            path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
            env = {"PYTHONPATH": path, "PYTHONSAFEPATH": "1", **self.checkout.env}
            # `python -m attnbench.run.worker` puts its working folder first on sys.path, ahead of PYTHONPATH: started
            # from a checkout of attnbench, the worker would import that checkout, whatever the side. So the
            # worker starts in the side's folder (and PYTHONSAFEPATH drops that entry where Python has it).
            log_path = (self.run_dir / "worker.log").resolve()
            previous = os.getcwd()
            os.chdir(root)
            try:
                self.worker = Worker(self.device, log_path, env)
            finally:
                os.chdir(previous)
        return self.worker.request(message, timeout_s)

    def measure(self, case: Case) -> dict[str, Any]:
        """The case's row from this side's worker; what the worker cannot report becomes the row's status."""
        from attnbench.measure.case import empty_row
        from attnbench.mechanisms import registry
        from attnbench.run.runner import WorkerLost

        impl = registry.get(case.problem.mechanism).impl(case.impl)
        why = case.unsupported or self.checkout.lacks(impl.target) or impl.unavailable_reason(self.device)
        if why:
            return {**empty_row(case), "status": "unsupported", "reason": why, "wall_s": 0.0}
        message = {"op": "case", "case": case.to_dict(), "ceilings": self.meta["ceilings"]}
        try:
            reply = self.request(message, case.limits.case_timeout_s)
        except WorkerLost as lost:
            self.close()
            return {**empty_row(case), "status": lost.status, "reason": lost.reason, "wall_s": None}
        if reply.get("fatal"):
            self.close()
        return reply["row"]

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None


def run_ab(
    suite: Suite,
    sides: Sequence[Checkout],
    out_dir: str | os.PathLike = "results",
    *,
    rounds: int = 8,
    on_case: Callable[[int, int, Case, dict[str, Any] | None], None] | None = None,
) -> list[Path]:
    """Measure every case of `suite` with each side's code, interleaved: case by case, `rounds` rounds in the
    order A B, B A, A B, ... (a drift in time hits both sides alike), each side in its own worker process.
    Writes one run folder per side under `<out_dir>/<suite>-<device>-ab-<time>/` and returns them. SIGTERM or
    Ctrl-C marks both runs interrupted and raises KeyboardInterrupt."""
    from attnbench.run import environment
    from attnbench.run.runner import WORKER_START_TIMEOUT_S, run_meta

    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    group = _fresh_dir(Path(out_dir), f"{suite.name}-{suite.device}-ab")
    ab = [_AbSide(side, group / f"{side.label}-{baseline.device_slug(side.ref)[:40]}", suite.device) for side in sides]
    previous_handler = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    status = "interrupted"
    try:
        for side in ab:
            side.run_dir.mkdir()
            side.meta = run_meta(suite, side.request({"op": "ceilings"}, WORKER_START_TIMEOUT_S))
            commit = side.checkout.commit
            side.meta["git"] = {"commit": commit, "dirty": bool(commit and commit.endswith("-dirty"))}
            side.meta["ab"] = {
                "side": side.checkout.label,
                "ref": side.checkout.ref,
                "commit": commit,
                "rounds": rounds,
                "job": group.name,  # the A and B runs of one job share it: their rounds are paired
                "mechanisms_from": side.checkout.ref,
                "harness": environment.git_state(),
                "with": [str(other.run_dir) for other in ab if other is not side],
            }
            results.write_json(side.run_dir / results.META_FILE, side.meta)
        for index, case in enumerate(suite.cases):
            if on_case:
                on_case(index, len(suite.cases), case, None)
            rows = _interleave(case, ab, rounds)
            for side in ab:
                results.append_row(side.run_dir, rows[side.checkout.label])
            if on_case:
                on_case(index, len(suite.cases), case, rows[ab[-1].checkout.label])
        status = "complete"
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        for side in ab:
            side.close()
            if side.meta:
                side.meta.update(status=status, finished_at=_now())
                results.write_json(side.run_dir / results.META_FILE, side.meta)
    return [side.run_dir for side in ab]


def _interleave(case: Case, sides: Sequence[_AbSide], rounds: int) -> dict[str, dict[str, Any]]:
    """One case, `rounds` rounds over the sides (alternating their order); numerics are checked in round 1."""
    measured: dict[str, list[dict[str, Any]]] = {side.checkout.label: [] for side in sides}
    for round_index in range(rounds):
        timed = case if round_index == 0 else replace(case, limits=replace(case.limits, check_numerics=False))
        for side in sides if round_index % 2 == 0 else sides[::-1]:
            done = measured[side.checkout.label]
            if done and done[-1]["status"] not in TIMED_STATUSES:
                continue  # a failed (or unsupported) case is not measured again
            done.append(side.measure(timed))
    return {label: merge_rounds(case, rows) for label, rows in measured.items()}


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _fresh_dir(out_dir: Path, base: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        path = out_dir / (f"{base}-{stamp}" if attempt == 0 else f"{base}-{stamp}-{attempt + 1}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise CompareError(f"{out_dir}: no free folder name for {base}-{stamp}")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def ab_compare(
    ref_a: str,
    ref_b: str,
    suite_path: str | os.PathLike,
    *,
    repo: str | os.PathLike = ".",
    device: str | None = None,
    overrides: Sequence[str] = (),
    only: Sequence[str] = (),
    impls: Sequence[str] = (),
    rounds: int = 8,
    out_dir: str | os.PathLike = "results",
    settings: GateSettings = GateSettings(),
    on_case: Callable[[int, int, Case, dict[str, Any] | None], None] | None = None,
) -> Comparison:
    """Run `suite_path` (expanded by this checkout's suite code) with REF_A's and REF_B's implementations
    interleaved on one device, then compare B (HEAD) against A (BASE). Raises `CompareError`, `SuiteError`."""
    from attnbench.suite.load import load_suite

    suite = load_suite(suite_path, device=device, overrides=overrides, only=only, impls=impls)
    with tempfile.TemporaryDirectory(prefix="attnbench-ab-") as tmp:
        sides = [checkout(ref_a, Path(tmp) / "A", "A", repo=repo), checkout(ref_b, Path(tmp) / "B", "B", repo=repo)]
        run_a, run_b = run_ab(suite, sides, out_dir, rounds=rounds, on_case=on_case)
    return compare_paths(run_a, run_b, settings)
