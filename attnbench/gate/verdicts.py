"""Two sides compared: every case joined on its key gets a verdict, and the comparison says whether it fails.

A case's status decides first (`numerics_broke`, `broke`, `fixed`, `failing`, `unsupported`); a case that ran
on both sides then gets its timing verdict (`attnbench.gate.stats`), unless an ignore pattern names it.
Differences between the two sides' environments (device, versions, timer settings, ...) become warnings.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from attnbench.gate.noise import SuiteNoise, suite_changes
from attnbench.gate.settings import (
    DEFAULT_SETTINGS,
    EXIT_CLEAN,
    EXIT_REGRESSION,
    VERDICTS,
    CompareError,
    GateSettings,
)
from attnbench.gate.sides import Side, case_label, load_side, matches, resolve_base
from attnbench.gate.stats import Change, min_round_p, rounds_needed, timing_verdict
from attnbench.results.files import KEY_FIELDS


@dataclass
class CaseResult:
    """One case's verdict, its rows on each side (None where it is missing), its timing change and a note."""

    case_id: str
    label: str
    verdict: str
    base: dict[str, Any] | None
    head: dict[str, Any] | None
    change: Change | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The case as the JSON report writes it: key, verdict, statuses, note and every number of its change."""
        row = self.head or self.base or {}
        data: dict[str, Any] = {
            "case_id": self.case_id,
            "label": self.label,
            "verdict": self.verdict,
            **{name: row.get(name) for name in KEY_FIELDS},
            "base_status": self.base and self.base["status"],
            "head_status": self.head and self.head["status"],
            "note": self.note,
        }
        if self.change is not None:
            data.update(asdict(self.change), diff_us=self.change.diff_us)
        return data


@dataclass
class Comparison:
    """Everything the gate found: both sides, the settings, the compared cases (most severe first), the cases
    on one side only, and the warnings."""

    base: Side
    head: Side
    settings: GateSettings
    cases: list[CaseResult]
    only_base: list[CaseResult]
    only_head: list[CaseResult]
    warnings: list[str]
    noise: SuiteNoise | None = None  # None when no case was timed on both sides

    def of(self, *verdicts: str) -> list[CaseResult]:
        """The compared cases with one of these verdicts."""
        return [case for case in self.cases if case.verdict in verdicts]

    @property
    def counts(self) -> Counter:
        """Compared cases per verdict."""
        return Counter(case.verdict for case in self.cases)

    @property
    def failures(self) -> list[CaseResult]:
        """What fails the gate: every numerics or status break, and the regressions once past the tolerance."""
        broken = self.of("numerics_broke", "broke")
        regressed = self.of("regressed")
        return broken + (regressed if len(regressed) > self.settings.max_regressions else [])

    @property
    def exit_code(self) -> int:
        """`EXIT_REGRESSION` when anything fails the gate, else `EXIT_CLEAN`."""
        return EXIT_REGRESSION if self.failures else EXIT_CLEAN

    def headline(self) -> str:
        """`PASS: ...` or `FAIL: ...` with the count of each notable verdict, as every report ends."""
        counts = self.counts
        parts = [f"{counts[v]} {v.replace('_', ' ')}" for v in VERDICTS[:5] if counts[v]]
        tolerated = ""
        if counts["regressed"] and counts["regressed"] <= self.settings.max_regressions:
            tolerated = f" ({counts['regressed']} regression(s) tolerated)"
        verdict = "FAIL" if self.failures else "PASS"
        changes = ", ".join(parts) or "no change beyond the threshold"
        return f"{verdict}: {changes}{tolerated}, {len(self.cases)} cases compared"

    def to_dict(self) -> dict[str, Any]:
        """The whole comparison as the JSON report writes it (format `attnbench-compare`, version 2: `ratio` is
        after the shared drift is divided out, `raw_ratio` before; `noise` says what was divided out)."""
        return {
            "format": "attnbench-compare",
            "format_version": 2,
            "result": "fail" if self.failures else "pass",
            "exit_code": self.exit_code,
            "headline": self.headline(),
            "base": {"path": str(self.base.path), "kind": self.base.kind, "meta": self.base.meta},
            "head": {"path": str(self.head.path), "kind": self.head.kind, "meta": self.head.meta},
            "settings": {**asdict(self.settings), "rule": self.settings.describe()},
            "warnings": self.warnings,
            "noise": self.noise.to_dict() if self.noise else None,
            "counts": dict(self.counts),
            "failures": [case.case_id for case in self.failures],
            "cases": [case.to_dict() for case in self.cases],
            "only_base": [case.to_dict() for case in self.only_base],
            "only_head": [case.to_dict() for case in self.only_head],
        }


def compare(base: Side, head: Side, settings: GateSettings = DEFAULT_SETTINGS) -> Comparison:
    """Join BASE and HEAD on the case key and give every case a verdict (see `VERDICTS`). Raises `CompareError`
    when the two sides have no case in common: a gate that compared nothing must not pass."""
    joined = [case_id for case_id in head.rows if case_id in base.rows]
    if not joined:
        raise CompareError(
            f"BASE ({base.path}, {len(base.rows)} cases) and HEAD ({head.path}, {len(head.rows)} cases) have no "
            "case in common: nothing to compare (a different suite, device or shape set?)"
        )
    refuse_other_models(base, head, joined)
    cases = [_status_verdict(case_id, base.rows[case_id], head.rows[case_id]) for case_id in joined]
    noise = _time_cases(cases, settings, paired_rounds(base, head))
    only_base = [_one_side(case_id, row, "base") for case_id, row in base.rows.items() if case_id not in head.rows]
    only_head = [_one_side(case_id, row, "head") for case_id, row in head.rows.items() if case_id not in base.rows]
    cases.sort(key=lambda case: (VERDICTS.index(case.verdict), -(case.change.ratio if case.change else 0)))
    warnings = environment_warnings(base.meta, head.meta) + _noise_warnings(noise, settings)
    rounds = sorted({case.change.n_rounds for case in cases if case.change and case.change.n_rounds})
    if rounds and min_round_p(rounds[0]) >= settings.alpha:
        warnings.append(
            f"only {rounds[0]} paired round(s) per case: the round-level test cannot reach p < {settings.alpha:g}, "
            f"so no case can be flagged (use --rounds {rounds_needed(settings.alpha)} or more)"
        )
    if only_base or only_head:
        warnings.append(
            f"{len(only_base)} case(s) only in BASE and {len(only_head)} only in HEAD: they are listed, not compared"
        )
    return Comparison(base, head, settings, cases, only_base, only_head, warnings, noise)


def refuse_other_models(base: Side, head: Side, joined: list[str]) -> None:
    """`CompareError` when any case was measured on one device model in BASE and another in HEAD (a run that
    mixed models, or two runs on different hardware): a timing on an H100 says nothing about one on an A100,
    so the gate compares nothing rather than pass or fail on it."""
    differ = [case_id for case_id in joined if base.row_device(case_id) != head.row_device(case_id)]
    if not differ:
        return
    first = differ[0]
    raise CompareError(
        f"BASE and HEAD measured {len(differ)} of {len(joined)} common case(s) on different device models, e.g. "
        f"{case_label(head.rows[first])}: {base.row_device(first)!r} in BASE, {head.row_device(first)!r} in HEAD. "
        "Timings are not comparable across device models: compare runs made on one model (a run whose workers "
        "ran on several says so in its meta.json, mixed_devices), or the baseline stored for HEAD's model"
    )


def _time_cases(cases: list[CaseResult], settings: GateSettings, paired: bool) -> SuiteNoise | None:
    """Give every case timed on both sides its `Change` (all at once: the suite's drift and the correction for
    the number of cases depend on every case) and its timing verdict; None when no case was timed."""
    timed = [
        case
        for case in cases
        if case.verdict in ("same", "numerics_broke")
        and case.base.get("time_samples_ms")
        and case.head.get("time_samples_ms")
    ]
    for case in cases:
        if case.verdict == "same" and case not in timed:
            case.note = "no timing samples on one side"
    if not timed:
        return None
    changes, noise = suite_changes(
        [(case.base["time_samples_ms"], case.head["time_samples_ms"]) for case in timed],
        settings,
        [any(matches(pattern, case.case_id, case.label) for pattern in settings.controls) for case in timed],
        [(case.base.get("round_medians_ms"), case.head.get("round_medians_ms")) if paired else (None, None)
         for case in timed],
    )  # fmt: skip
    for case, change in zip(timed, changes, strict=True):
        case.change = change
        if case.verdict == "same":
            case.verdict = timing_verdict(change, settings)
            _ignore(case, settings)
    return noise


def _noise_warnings(noise: SuiteNoise | None, settings: GateSettings) -> list[str]:
    """A warning when the shared drift divided out is itself past the threshold: a change that slowed every case
    alike looks exactly like it."""
    if noise is None or noise.normalize == "none" or abs(math.log(noise.shared)) <= math.log1p(settings.threshold):
        return []
    over = f"the {noise.controls} control case(s)" if noise.normalize == "controls" else f"all {noise.cases} cases"
    return [
        f"every case moved by {noise.shared - 1:+.1%} together (median over {over}); divided out as drift of the "
        "machine: a change that slowed every case alike cannot be told from it (compare with --normalize none, "
        "or name control cases whose code does not change with --control)"
    ]


def _one_side(case_id: str, row: dict[str, Any], side: str) -> CaseResult:
    """A case measured on one side only (a suite change, an interrupted run): listed with its status."""
    base, head = (row, None) if side == "base" else (None, row)
    return CaseResult(case_id, case_label(row), f"only_{side}", base, head, note=row["status"])


def paired_rounds(base: Side, head: Side) -> bool:
    """Whether the two sides are the A and B runs of one A/B job, whose rounds were measured in pairs."""
    jobs = [(side.meta.get("ab") or {}).get("job") for side in (base, head)]
    return jobs[0] is not None and jobs[0] == jobs[1]


def _status_verdict(case_id: str, base: dict[str, Any], head: dict[str, Any]) -> CaseResult:
    """The case's verdict from its statuses alone (`same` where both ran and passed their numerics)."""
    result = CaseResult(case_id, case_label(head), "same", base, head)
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
    return result


def _ignore(result: CaseResult, settings: GateSettings) -> None:
    """Mark the case `ignored` (noting what it would have been) when an ignore pattern names it."""
    if any(matches(pattern, result.case_id, result.label) for pattern in settings.ignore):
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
    base: str | os.PathLike, head: str | os.PathLike, settings: GateSettings = DEFAULT_SETTINGS
) -> Comparison:
    """Compare HEAD (a run folder or baseline file) with BASE (the same, or a folder of baselines, from which
    the one of HEAD's suite and device is taken). Raises `CompareError` (a `ResultsError`) on bad input."""
    head_side = load_side(head)
    return compare(resolve_base(base, head_side), head_side, settings)
