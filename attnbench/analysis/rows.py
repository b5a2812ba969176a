"""Result rows made ready for analysis: typed columns, derived columns, the complexity of each row's mechanism,
filters, and the names that tell mechanism configurations apart.

Pure pandas: every other analysis module works on the frame `prepare` returns.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from attnbench.mechanisms import registry
from attnbench.results.files import ROW_FIELDS

NOT_RUN = ("oom", "unsupported", "error", "timeout", "crash")  # statuses of cases that produced no timing
NUMERIC_COLUMNS = (
    "B", "T", "H", "G", "D", "d", "time_ms", "time_p20_ms", "time_p80_ms", "peak_mem_bytes", "flops", "bytes",
    "tflops", "gbps",
)  # fmt: skip
MODE_ORDER = {"fwd": 0, "bwd": 1, "fwd_bwd": 2}


class AnalysisError(ValueError):
    """Results that cannot answer the question asked (no rows, an axis the runs did not sweep, a bad filter)."""


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with typed columns and what the analysis derives from each row.

    Adds: `case` ("fwd core bf16 causal"), `shown_params` (see `config_name`), `numerics_failed` (status
    numerics_fail, or numerics_ok False), and TF/s and GB/s where a row has FLOPs or bytes but no rate; fills
    `complexity` where a row does not record it (see `complexities`).
    """
    frame = frame.copy()
    for column in ROW_FIELDS:
        if column not in frame:
            frame[column] = None
    for column in NUMERIC_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    frame["D"] = frame["D"].fillna(frame["H"] * frame["d"])
    for column in ("mechanism", "impl", "mode", "level", "dtype"):
        frame[column] = frame[column].fillna("?").astype(str)
    frame["variant"] = frame["variant"].fillna("").astype(str)
    frame["params"] = [p if isinstance(p, Mapping) else {} for p in frame["params"]]
    frame["shown_params"] = _shown_params(frame)
    frame["causal"] = frame["causal"].fillna(False).astype(bool)
    frame["status"] = frame["status"].fillna("error").astype(str)
    frame["numerics_failed"] = (frame["status"] == "numerics_fail") | frame["numerics_ok"].eq(False)
    frame["tflops"] = frame["tflops"].fillna(frame["flops"] / frame["time_ms"] / 1e9)
    frame["gbps"] = frame["gbps"].fillna(frame["bytes"] / frame["time_ms"] / 1e6)
    # A rate above the run's own measured ceiling is a timing artefact (a clock, a cache, a load spike), not a
    # throughput: the row keeps its time, but its rates are never drawn or summarised as real.
    flags = frame["rate_flags"] if "rate_flags" in frame else [None] * len(frame)
    flagged = pd.Series([isinstance(flag, list) and bool(flag) for flag in flags], index=frame.index)
    frame.loc[flagged, ["tflops", "gbps", "frac_matmul_peak", "frac_copy_bw"]] = float("nan")
    frame["case"] = [
        case_name(*values)
        for values in zip(frame["mode"], frame["level"], frame["dtype"], frame["causal"], strict=True)
    ]
    frame["complexity"] = complexities(frame)
    return frame


def complexities(frame: pd.DataFrame) -> list[str | None]:
    """Each row's complexity in T ("linear" or "quadratic"): the one the row records, which the runner took from
    the registry when it measured the case; for rows of runs written before rows recorded it, the registry's
    value now (None for a mechanism this checkout does not register)."""
    recorded = list(frame["complexity"])
    keys = list(zip(frame["mechanism"], frame["variant"], strict=True))
    missing = sorted({key for key, value in zip(keys, recorded, strict=True) if not isinstance(value, str)})
    looked_up = {key: registered_complexity(*key) for key in missing}
    return [value if isinstance(value, str) else looked_up[key] for key, value in zip(keys, recorded, strict=True)]


def registered_complexity(mechanism: str, variant: str = "") -> str | None:
    """The registry's complexity for a mechanism (and variant); None when the mechanisms cannot be loaded here
    (a plugin module that is not installed), so that such results still load without a verdict."""
    try:
        return registry.complexity(mechanism, variant)
    except ImportError:
        return None


def case_name(mode: str, level: str, dtype: str, causal: bool) -> str:
    """ "fwd core bf16 causal": what a row measured, apart from its mechanism, implementation and shape."""
    return f"{mode} {level} {dtype}" + (" causal" if causal else "")


def case_order(case: str) -> tuple:
    """Sort key of a `case_name`: forward before backward, then level, dtype, non-causal first."""
    mode, level, dtype, *causal = case.split()
    return (MODE_ORDER.get(mode, 9), level, dtype, bool(causal))


def natural_key(text: str) -> tuple:
    """Sort key that orders the numbers in a text by value: "T=4096" before "T=16384", "G=2" before "G=16"."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text))


def format_number(value: float) -> str:
    """An axis value or length as text: 4096 → "4096", 0.5 → "0.5", a missing value → "?"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "?"
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def measured(frame: pd.DataFrame, column: str) -> pd.Series:
    """Rows whose `column` is a measurement to draw and fit: status ok, numerics not failed, value > 0."""
    value = frame[column]
    return (frame["status"] == "ok") & ~frame["numerics_failed"] & value.notna() & (value > 0)


def select(frame: pd.DataFrame, mechanisms: Sequence[str] = (), impls: Sequence[str] = ()) -> pd.DataFrame:
    """Rows of the named mechanisms ("name", or "name:variant" for one variant) and implementations."""
    if mechanisms:
        with_variant = frame["mechanism"] + ":" + frame["variant"]
        frame = frame[_matching(frame, "mechanism", mechanisms, frame["mechanism"], with_variant)]
    if impls:
        frame = frame[_matching(frame, "implementation", impls, frame["impl"])]
    return frame


def _matching(frame: pd.DataFrame, what: str, names: Sequence[str], *columns: pd.Series) -> pd.Series:
    """Rows where one of `columns` equals one of `names`; a name that matches no row is an error, which lists
    the names the rows do hold."""
    keep = pd.Series(False, index=frame.index)
    for name in names:
        hit = pd.Series(False, index=frame.index)
        for column in columns:
            hit |= column == name
        if not hit.any():
            held = sorted(set(columns[-1]) | set(columns[0]))
            raise AnalysisError(f"no rows for {what} {name!r}; the runs hold {', '.join(held)}")
        keep |= hit
    return keep


def _shown_params(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Per row, the parameters that tell apart the configurations of its mechanism (and variant) in these
    runs: `m[k=2]` and `m[k=4]` when both were run, plain `m` when only one was (see `held_params`)."""
    differing = {}
    for key, params in frame.groupby(["mechanism", "variant"])["params"]:
        values: dict[str, set[str]] = {}
        for row_params in params:
            for name, value in row_params.items():
                values.setdefault(name, set()).add(repr(value))
        differing[key] = {name for name, seen in values.items() if len(seen) > 1}
    rows = zip(frame["mechanism"], frame["variant"], frame["params"], strict=True)
    return [{k: v for k, v in p.items() if k in differing[m, var]} for m, var, p in rows]


def held_params(frame: pd.DataFrame) -> dict[str, str]:
    """ "m" → "k=4": the parameters every row of a mechanism (and variant) shares, not shown in its name."""
    held = {}
    for (mechanism, variant), rows in frame.groupby(["mechanism", "variant"]):
        first, shown = rows["params"].iloc[0], rows["shown_params"].iloc[0]
        # None is an unset default; the variant's own parameter is already in the name ("m:variant")
        shared = {k: v for k, v in first.items() if v is not None and k not in shown and str(v) != variant}
        if shared:
            held[config_name(mechanism, variant, {})] = ", ".join(f"{k}={v}" for k, v in sorted(shared.items()))
    return held


def config_name(mechanism: str, variant: str, params: Mapping[str, Any], drop: str | None = None) -> str:
    """ "m[k=4]", "m:local[window=64]": the mechanism, its variant and the parameters given (but `drop`)."""
    base = f"{mechanism}:{variant}" if variant else mechanism
    shown = [
        f"{key}={value}"
        for key, value in sorted(params.items())
        if key != drop and value is not None and not (variant and str(value) == variant)
    ]
    return base + (f"[{','.join(shown)}]" if shown else "")
