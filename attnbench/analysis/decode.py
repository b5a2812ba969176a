"""Decode rows (`mode: decode`): what each mechanism keeps per token, and the cache length from which one
mechanism's decode step overtakes another's.

In a decode row T is the cache length M. The cache table gives, per mechanism configuration, the bytes per
cached token (or the fixed state) measured from the implementation's tensors beside the mechanism's formula.
The overtaking length M* compares the best implementation of each side at every M (as the crossover along T
does), with a bootstrap interval from the kept timing samples (`attnbench.analysis.crossover`). Which two
mechanisms are compared comes from `attnbench.mechanisms.decoding` (`DECODE_CHALLENGER`, `DECODE_BASELINE`):
analysis code names no mechanism.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from attnbench.analysis.crossover import crossover_interval, find_crossover
from attnbench.analysis.rows import config_name, format_number, measured
from attnbench.mechanisms.decoding import DECODE_BASELINE, DECODE_CHALLENGER

# What fixes one comparison besides the cache length: the run, dtype, shape and new tokens per step.
PANEL = ("run", "dtype", "B", "H", "d", "q_len")
OVERTAKE_COLUMNS = (
    "run",
    "dtype",
    "B",
    "H",
    "d",
    "q_len",
    "name",
    "baseline",
    "kind",
    "M_star",
    "M_low",
    "M_high",
    "text",
)


def decode_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The decode rows of a prepared frame, with `name` (the mechanism configuration) and `q_len` filled."""
    rows = frame[frame["mode"] == "decode"].copy()
    names = zip(rows["mechanism"], rows["variant"], rows["shown_params"], strict=True)
    rows["name"] = [config_name(m, v, p) for m, v, p in names]
    rows["q_len"] = pd.to_numeric(rows["q_len"], errors="coerce").fillna(1).astype(int)
    return rows


def _matches(rows: pd.DataFrame, mechanism: str, params: Mapping[str, Any]) -> pd.Series:
    """Rows of `mechanism` whose parameters include `params`."""
    given = [all(p.get(key) == value for key, value in params.items()) for p in rows["params"]]
    return (rows["mechanism"] == mechanism) & pd.Series(given, index=rows.index, dtype=bool)


def cache_table(rows: pd.DataFrame) -> list[list[Any]]:
    """One line per mechanism configuration, dtype and head shape: the measured bytes per cached token and
    sequence (a fixed state: its bytes per sequence), the formula, whether every row matched it, and how many
    times smaller than the largest per-token cache of the same shape it is."""
    kept = rows[rows["cache_bytes"].notna()]
    lines = []
    for (dtype, H, d), shape in kept.groupby(["dtype", "H", "d"], sort=True):
        per_token = pd.to_numeric(shape["cache_bytes_per_token"], errors="coerce")
        largest = per_token.max()
        for name, group in shape.groupby("name", sort=True):
            token = pd.to_numeric(group["cache_bytes_per_token"], errors="coerce").median()
            match = (group["cache_bytes"] == group["cache_model_bytes"]).all()
            if math.isnan(token):  # a fixed state or window: bytes per sequence, whatever M beyond the window
                state = (group["cache_bytes"] / group["B"]).max()
                measured_text, ratio = f"{format_number(state)} per sequence (fixed)", ""
            else:
                measured_text = format_number(token)
                ratio = f"{largest / token:.3g}×" if largest and token else ""
            formula = group["cache_formula"].iloc[0] or "?"
            lines.append([name, dtype, f"H={format_number(H)} d={format_number(d)}", measured_text, formula,
                          "yes" if match else "**no**", ratio])  # fmt: skip
    return lines


def _best_times(rows: pd.DataFrame) -> pd.DataFrame:
    """Measured rows with `x` (the cache length) and `norm` (1), the columns `crossover_interval` reads."""
    good = rows[measured(rows, "time_ms")].copy()
    good["x"], good["norm"] = good["T"], 1.0
    return good


def overtakes(rows: pd.DataFrame) -> pd.DataFrame:
    """Per panel (`PANEL`) and configuration of the challenger: the cache length M* from which its best decode
    step is faster than the baseline's best, with a 95% bootstrap interval (`OVERTAKE_COLUMNS`)."""
    records = []
    challenger = rows[_matches(rows, *DECODE_CHALLENGER)]
    baseline = rows[_matches(rows, *DECODE_BASELINE)]
    for key, base in baseline.groupby(list(PANEL), sort=True):
        panel = challenger[(challenger[list(PANEL)] == pd.Series(key, index=list(PANEL))).all(axis=1)]
        theirs = _best_times(base)
        for name, mine_rows in panel.groupby("name", sort=True):
            mine = _best_times(mine_rows)
            best_mine, best_theirs = mine.groupby("x")["time_ms"].min(), theirs.groupby("x")["time_ms"].min()
            common = sorted(set(best_mine.index) & set(best_theirs.index))
            found = find_crossover(common, [best_mine[m] / best_theirs[m] for m in common], "faster", axis="M")
            low, high, text = crossover_interval(mine, theirs, found)
            found_fields = {"kind": found.kind, "M_star": found.x, "M_low": low, "M_high": high, "text": text}
            where = dict(zip(PANEL, key, strict=True))
            records.append(where | {"name": name, "baseline": base["name"].iloc[0]} | found_fields)
    return pd.DataFrame.from_records(records, columns=OVERTAKE_COLUMNS)


def decode_section(frame: pd.DataFrame, md_table) -> str:
    """The summary's decode section (empty without decode rows): the cache table and the overtaking lengths,
    as Markdown tables made by `md_table(headers, rows)`."""
    rows = decode_rows(frame)
    if rows.empty:
        return ""
    parts = ["## Decode: cache per token and overtaking length\n"]
    headers = ["mechanism", "dtype", "heads", "bytes per token (measured)", "formula", "matches", "smaller by"]
    parts.append(
        "What each implementation keeps between steps, measured from its tensors (sum of their bytes) after a step, "
        "per cached token and sequence, beside its mechanism's formula; `smaller by` is against the largest "
        "per-token cache of the same shape.\n\n" + md_table(headers, cache_table(rows))
    )
    found = overtakes(rows)
    challenger, baseline = (config_name(m, "", p) for m, p in (DECODE_CHALLENGER, DECODE_BASELINE))
    if found.empty:
        parts.append(f"\nNo {challenger} and {baseline} decode rows on a common shape: no overtaking length.\n")
        return "\n".join(parts)
    lines = [
        [r.name, r.baseline, r.dtype, f"B={r.B:g} H={r.H:g} d={r.d:g} q_len={r.q_len}", r.text]
        for r in found.itertuples()
    ]
    parts.append(
        f"\nThe cache length M* from which {challenger}'s best decode step is faster than {baseline}'s (best "
        "implementation of each at every M; 95% bootstrap interval from the kept samples):\n\n"
        + md_table(["mechanism", "against", "dtype", "shape", "M*"], lines)
    )
    return "\n".join(parts)
