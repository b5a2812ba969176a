"""Published claims beside a run's measurements: "A is R times B at this setting", checked.

A claim is a ratio of one measured row to another, in time or in peak memory, with the number a paper reports
for it. Claims are data, not code: a YAML file (for a suite, `suites/claims/<suite>.yaml`) lists them as

    claims:
      - name: long-context-memory          # a short handle, unique in the file
        paper: "Author et al. 2024, arXiv 0000.00000, Figure 1"
        says: "17 GB against 0.13 GB at 16K tokens"   # what the paper shows, in its words and units
        metric: memory                     # memory (peak bytes), time (median, from the kept samples) or
                                           # cache (bytes kept per cached token, decode rows)
        ratio: 130                         # the paper's A/B
        compare: about                     # about: R within `tolerance`; at_least: R or more
        tolerance: 1.5                     # a factor: about R means R/1.5 .. R·1.5
        device: cuda                       # optional: the device the paper measured on; other runs say
                                           # "not measured here" (for times; peak bytes are the same tensors)
        where: {level: layer, mode: fwd, dtype: fp32, B: 1, D: 384}   # row fields both sides share
        numerator: {mechanism: ..., impl: ..., T: 16384, H: 8}         # row fields of A; `params` selects
                                                                       # the mechanism's own: {params: {G: 4}}
        denominator: {mechanism: ..., impl: ..., T: 16384, H: 8}       # row fields of B
        setting: "what the paper measured, and how the rows differ from it"

Our ratio comes with an interval. Time: a percentile bootstrap (scipy) of the ratio of the two rows' medians,
resampling each row's kept timing samples; with fewer than two samples on a side, the p20-p80 corners. Memory:
one measurement of each side, exact (the allocator's count is not a random draw), so the interval is the
point; the same for a cache's bytes, counted from its tensors. The verdict is `reproduced` when the interval
meets the paper's range (`about`: R/tolerance to R·tolerance; `at_least`: R/tolerance or more), `not
reproduced` when it does not, and `not measured here` when a side has no row that ran (missing, out of memory,
unsupported) or the claim is about another device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from scipy import stats

from attnbench.analysis.rows import AnalysisError, prepare
from attnbench.results.files import find_runs, read_meta, read_rows

# Row fields a claim may select on (what tells one measured case from another in a run).
SELECT_KEYS = (
    "mechanism", "variant", "impl", "mode", "level", "dtype", "causal", "B", "T", "H", "G", "D", "d", "params",
)  # fmt: skip
VERDICTS = ("reproduced", "not reproduced", "not measured here")
METRIC_COLUMN = {"time": "time_ms", "memory": "peak_mem_bytes", "cache": "cache_bytes_per_token"}
EXACT = {"memory": "one allocator measurement a side", "cache": "one count of the cache's tensors a side"}
RESAMPLES = 2000
CONFIDENCE = 0.95


class Claim(BaseModel):
    """One published ratio and the two rows that measure it (the module docstring shows the file format)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="a short handle, unique in the file")
    paper: str = Field(min_length=1, description="the paper and the figure or table the number comes from")
    says: str = Field("", description="what the paper shows, in its own units")
    metric: Literal["time", "memory", "cache"] = Field(description="time, memory or cache")
    ratio: float = Field(gt=0, allow_inf_nan=False, description="a number > 0: the paper's A/B")
    compare: Literal["about", "at_least"] = Field("about", description="about or at_least")
    tolerance: float = Field(1.5, ge=1, le=100, allow_inf_nan=False, description="a factor from 1 to 100")
    device: Literal["cpu", "cuda"] | None = Field(None, description="cpu, cuda or absent (any device)")
    where: dict[str, Any] = Field(default_factory=dict, description=f"row fields: {', '.join(SELECT_KEYS)}")
    numerator: dict[str, Any] = Field(description=f"row fields of A: {', '.join(SELECT_KEYS)}")
    denominator: dict[str, Any] = Field(description=f"row fields of B: {', '.join(SELECT_KEYS)}")
    setting: str = Field("", description="the paper's setting and how the rows differ from it")

    @field_validator("where", "numerator", "denominator")
    @classmethod
    def _known_fields(cls, selector: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(selector) - set(SELECT_KEYS))
        if unknown:
            raise ValueError(f"unknown row field {unknown[0]!r}; allowed: {', '.join(SELECT_KEYS)}")
        return selector

    def side(self, which: str) -> dict[str, Any]:
        """The row fields of the numerator or the denominator, the shared `where` included."""
        return {**self.where, **getattr(self, which)}


class ClaimsFile(BaseModel):
    """A claims file: a non-empty list of claims with distinct names."""

    model_config = ConfigDict(extra="forbid")

    claims: list[Claim] = Field(min_length=1, description="a non-empty list of claims")

    @field_validator("claims")
    @classmethod
    def _distinct_names(cls, claims: list[Claim]) -> list[Claim]:
        names = [claim.name for claim in claims]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"claim name {repeated[0]!r} is given twice; allowed: each name once")
        return claims


@dataclass(frozen=True)
class Outcome:
    """A claim checked against one run: our ratio and its interval (NaN when not measured) and the verdict."""

    claim: Claim
    run: str
    device: str
    ours: float
    low: float
    high: float
    verdict: str
    note: str


def read_claims(path: str | Path) -> list[Claim]:
    """The claims of a YAML file. Raises `AnalysisError` naming the file, the key and what is allowed."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AnalysisError(f"{path}: cannot read the claims file ({exc.strerror or exc})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise AnalysisError(f"{path}: not a YAML claims file ({str(exc).splitlines()[0]})") from None
    try:
        return ClaimsFile.model_validate(data).claims
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        allowed = _allowed(first["loc"])
        got = repr(first.get("input"))[:80]
        raise AnalysisError(f"{path}: {where}: {first['msg']}; got {got}{allowed}") from None


def _allowed(loc: Sequence[Any]) -> str:
    """`; allowed: ...` from the description of the field an error is about (empty when there is none)."""
    named = [part for part in loc if isinstance(part, str)]
    if not named:
        return "; allowed: a mapping with a non-empty list `claims`"
    field = (Claim.model_fields | ClaimsFile.model_fields).get(named[-1])
    return f"; allowed: {field.description}" if field is not None and field.description else ""


def check_run(claims: Sequence[Claim], rows: pd.DataFrame, run: str, device: str) -> list[Outcome]:
    """Every claim against the prepared rows of one run measured on `device` (cpu or cuda)."""
    return [_check(claim, rows, run, device) for claim in claims]


def check_runs(path: str | Path, claims: Path | None = None, claims_dir: Path | None = None) -> list[Outcome]:
    """Every run at or below `path` against its claims: those of the file `claims`, or else of
    `claims_dir/<the run's suite>.yaml`. Raises `AnalysisError` when a run has no claims file."""
    found = find_runs(path)
    if not found:
        raise AnalysisError(f"{path}: no attnbench runs found (no meta.json at or below it)")
    read: dict[Path, list[Claim]] = {}
    outcomes = []
    for run_dir in found:
        meta = read_meta(run_dir)
        suite = (meta.get("suite") or {}).get("name") or "?"
        source = claims if claims is not None else Path(claims_dir or ".") / f"{suite}.yaml"
        if not source.is_file():
            raise AnalysisError(
                f"{run_dir}: no claims file for suite {suite!r}: {source} does not exist; "
                "allowed: a claims file there, or one named explicitly (attnbench claims --claims FILE)"
            )
        if source not in read:
            read[source] = read_claims(source)
        device = (meta.get("device") or {}).get("type") or "?"
        frame = prepare(pd.DataFrame(read_rows(run_dir), columns=None))
        outcomes.extend(check_run(read[source], frame, run_dir.name, device))
    return outcomes


def _check(claim: Claim, rows: pd.DataFrame, run: str, device: str) -> Outcome:
    def outcome(ours: float, low: float, high: float, verdict: str, note: str) -> Outcome:
        return Outcome(claim, run, device, ours, low, high, verdict, note)

    if claim.device is not None and claim.device != device:
        note = f"the paper's {claim.metric} is on {claim.device}; this run is on {device}"
        return outcome(math.nan, math.nan, math.nan, "not measured here", note)
    sides = {}
    for which in ("numerator", "denominator"):
        row, missing = _side_row(claim, rows, which)
        if row is None:
            return outcome(math.nan, math.nan, math.nan, "not measured here", missing)
        sides[which] = row
    top, bottom = sides["numerator"], sides["denominator"]
    column = METRIC_COLUMN[claim.metric]
    ours = float(top[column]) / float(bottom[column])
    if claim.metric in EXACT:
        low, high, how = ours, ours, EXACT[claim.metric]
    else:
        low, high, how = time_ratio_interval(top, bottom)
    return outcome(ours, low, high, verdict(claim, low, high), how)


def setting_text(claim: Claim) -> str:
    """The rows a claim compares, in short: `layer fwd fp32 B=1 D=384: mha sdpa_math H=8 / tssa reference H=8`."""
    shared = " ".join(_field_text(key, value) for key, value in claim.where.items())
    top, bottom = (
        " ".join(_field_text(k, v) for k, v in getattr(claim, w).items()) for w in ("numerator", "denominator")
    )
    return f"{shared}: {top} / {bottom}" if shared else f"{top} / {bottom}"


def _field_text(key: str, value: Any) -> str:
    """`T=16384` for a size, the bare value for a name (`mha`, `layer`), `causal`/`non-causal` for the flag."""
    if key == "causal":
        return "causal" if value else "non-causal"
    if key == "params" and isinstance(value, Mapping):
        return " ".join(f"{name}={each}" for name, each in value.items())
    return f"{key}={value}" if key in ("B", "T", "H", "G", "D", "d") else str(value)


def _side_row(claim: Claim, rows: pd.DataFrame, which: str) -> tuple[pd.Series | None, str]:
    """The one row a side of the claim selects, or None and why there is none. Several rows are an error."""
    selector = claim.side(which)
    chosen = rows
    for key, value in selector.items():
        if key not in chosen:
            return None, f"{which}: the run has no {key} column"
        if key == "params":
            chosen = chosen[[_holds(params, value) for params in chosen["params"]]]
        else:
            chosen = chosen[chosen[key] == value]
    described = " ".join(f"{key}={value}" for key, value in selector.items())
    if chosen.empty:
        return None, f"{which} ({described}): no such row in this run{_absent(selector, rows)}"
    if len(chosen) > 1:
        raise AnalysisError(
            f"claim {claim.name}: {which} ({described}) matches {len(chosen)} rows of one run; "
            f"allowed: row fields ({', '.join(SELECT_KEYS)}) that select exactly one"
        )
    row = chosen.iloc[0]
    value = pd.to_numeric(pd.Series([row.get(METRIC_COLUMN[claim.metric])]), errors="coerce").iloc[0]
    if row["status"] != "ok" or not value > 0:
        reason = f": {row['reason']}" if isinstance(row.get("reason"), str) and row["reason"] else ""
        return None, f"{which} ({described}) did not run: {row['status']}{reason}"[:300]
    return row, ""


def _absent(selector: Mapping[str, Any], rows: pd.DataFrame) -> str:
    """Which of the selector's shape and setting values no row of the run has, with the values it has ("; the
    run has H 8, d 32"), so that the `--set` that would measure the claim is plain; empty when each value
    occurs in some row (the combination is what is missing)."""
    missing = []
    for key, value in selector.items():
        if key in rows and key != "params" and not (rows[key] == value).any():
            present = sorted({_field_value(each) for each in rows[key].dropna().unique()})
            missing.append(f"{key} {', '.join(present[:6])}{' ...' if len(present) > 6 else ''}")
    return f"; the run has {'; '.join(missing)}" if missing else ""


def _field_value(value: Any) -> str:
    """A row value as a suite writes it (a whole number read back as a float shows as the integer)."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _holds(params: Any, wanted: Any) -> bool:
    """Whether a row's mechanism parameters include every parameter a claim names, with its value."""
    if not isinstance(wanted, Mapping):
        return False
    return isinstance(params, Mapping) and all(params.get(key) == value for key, value in wanted.items())


def time_ratio_interval(top: Mapping[str, Any], bottom: Mapping[str, Any]) -> tuple[float, float, str]:
    """(low, high, how) of the ratio of two rows' median times: a percentile bootstrap over each row's kept
    samples, or the p20/p80 corners when a row kept fewer than two."""
    a, b = _samples(top), _samples(bottom)
    if len(a) >= 2 and len(b) >= 2:
        result = stats.bootstrap(
            (a, b),
            lambda x, y, axis: np.median(x, axis=axis) / np.median(y, axis=axis),
            n_resamples=RESAMPLES,
            confidence_level=CONFIDENCE,
            method="percentile",
            random_state=np.random.default_rng(0),
        )
        low, high = result.confidence_interval
        return float(low), float(high), f"bootstrap of {len(a)} and {len(b)} timing samples"
    low = float(top["time_p20_ms"]) / float(bottom["time_p80_ms"])
    high = float(top["time_p80_ms"]) / float(bottom["time_p20_ms"])
    return low, high, "p20-p80 corners (fewer than two samples kept)"


def _samples(row: Mapping[str, Any]) -> np.ndarray:
    samples = row.get("time_samples_ms")
    return np.asarray(samples if isinstance(samples, list) else [], dtype=float)


def verdict(claim: Claim, low: float, high: float) -> str:
    """`reproduced` when [low, high] meets the paper's range, `not reproduced` otherwise."""
    floor = claim.ratio / claim.tolerance
    ceiling = math.inf if claim.compare == "at_least" else claim.ratio * claim.tolerance
    return "reproduced" if high >= floor and low <= ceiling else "not reproduced"


def paper_range(claim: Claim) -> str:
    """The paper's ratio as a claim reads it: `≈130× (87–195)` or `≥25× (from 17)`."""
    floor = claim.ratio / claim.tolerance
    if claim.compare == "at_least":
        return f"≥{_number(claim.ratio)}× (from {_number(floor)})"
    return f"≈{_number(claim.ratio)}× ({_number(floor)}–{_number(claim.ratio * claim.tolerance)})"


def ours_text(outcome: Outcome) -> str:
    """`118× [110, 126]`, `118× (exact)` or `—`."""
    if math.isnan(outcome.ours):
        return "—"
    if outcome.low == outcome.high:
        return f"{_number(outcome.ours)}×"
    return f"{_number(outcome.ours)}× [{_number(outcome.low)}, {_number(outcome.high)}]"


def _number(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def markdown(outcomes: Sequence[Outcome]) -> str:
    """The outcomes as a Markdown table: claim, the paper's number, ours, the run, the verdict and why."""
    lines = [
        "| claim | paper | paper's ratio | ours | setting | run | verdict | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for item in outcomes:
        paper = f"{item.claim.paper}: {item.claim.says}" if item.claim.says else item.claim.paper
        run = f"{item.run} ({item.device})"
        cells = [item.claim.name, paper, paper_range(item.claim), ours_text(item), setting_text(item.claim), run]
        lines.append("| " + " | ".join([*cells, f"**{item.verdict}**", item.note]) + " |")
    return "\n".join(lines) + "\n"
