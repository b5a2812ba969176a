"""The scaling summary of one or more runs: fitted exponents along every swept axis, crossovers with the baseline
and memory walls along T, as tables and as a Markdown report.

Pure pandas/numpy/scipy (matplotlib is never imported here): `attnbench plot` draws what the analysis computes,
and `runs.load_runs` with `summarize` work on their own in a notebook.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench.analysis.crossover import CONFIDENCE as CROSSOVER_CONFIDENCE
from attnbench.analysis.crossover import CROSSOVER_COLUMNS, RESAMPLES, crossovers
from attnbench.analysis.decode import decode_section
from attnbench.analysis.fits import CONFIDENCE, FIT_COLUMNS, MIN_FIT_POINTS, SLACK, fit_series
from attnbench.analysis.rows import config_name, format_number, held_params
from attnbench.analysis.runs import RunInfo
from attnbench.analysis.series import series_frame
from attnbench.analysis.task_summary import split_task_rows, task_section
from attnbench.mechanisms import CROSSOVER_BASELINE


@dataclass
class Summary:
    """What `summarize` found: the runs, the fits (one row per series and x-axis), the crossovers, as tables
    and as a Markdown text."""

    runs: list[RunInfo]
    fits: pd.DataFrame
    crossovers: pd.DataFrame
    markdown: str

    def write(self, out_dir: Path, figures: Sequence[Path] = ()) -> list[Path]:
        """Write summary.md (with the list of figures), summary.csv (the fits) and crossover.csv."""
        out_dir = Path(out_dir)
        text = self.markdown
        if figures:
            text += "\n## Figures\n\n" + "".join(f"- {Path(f).name}\n" for f in figures)
        written = [out_dir / "summary.md", out_dir / "summary.csv", out_dir / "crossover.csv"]
        written[0].write_text(text)
        self.fits.to_csv(written[1], index=False)
        self.crossovers.to_csv(written[2], index=False)
        return written


def summarize(frame: pd.DataFrame, runs: Sequence[RunInfo], axes: Sequence[str] = ("T",)) -> Summary:
    """Fits along every axis in `axes`, crossovers and OOM walls along T, and their Markdown report."""
    fits, crossing = [], pd.DataFrame()
    speed = split_task_rows(frame)[0]  # task rows train a model: their T is a setting, not a swept size
    for x in axes:
        series = series_frame(speed, x)
        fits.append(fit_series(series))
        if x == "T":
            crossing = crossovers(series)
    table = pd.concat(fits, ignore_index=True) if fits else pd.DataFrame(columns=FIT_COLUMNS)
    if crossing.empty:
        crossing = pd.DataFrame(columns=CROSSOVER_COLUMNS)
    markdown = render_markdown(list(runs), table, crossing, frame)
    return Summary(list(runs), table, crossing, markdown)


def render_markdown(runs: list[RunInfo], fits: pd.DataFrame, crossing: pd.DataFrame, frame: pd.DataFrame) -> str:
    """The Markdown report: the runs, shared parameters, exponents per axis, crossovers, walls, numerics."""
    parts = ["# attnbench summary\n", _runs_section(runs), _params_section(frame)]
    for x in dict.fromkeys(fits["x_axis"]):
        parts.append(_fits_section(x, fits[fits["x_axis"] == x], several_runs=len(runs) > 1))
    if "T" in set(fits["x_axis"]):
        parts.append(_crossover_section(crossing, frame))
    parts.append(_walls_section(fits))
    parts.append(decode_section(frame, md_table))
    parts.append(_numerics_section(split_task_rows(frame)[0]))
    parts.append(task_section(frame, md_table))
    return "\n".join(part for part in parts if part)


def _runs_section(runs: list[RunInfo]) -> str:
    """A table of the runs: suite, device, commit, rows and the ceilings measured."""
    rows = []
    for run in runs:
        ceilings = run.ceilings
        matmul = ceilings.get("matmul_tflops")
        copy = ceilings.get("copy_gbps")
        rows.append([
            run.label, run.suite, run.device, run.commit, str(run.rows),
            f"{matmul:.3g} TFLOP/s ({ceilings.get('matmul_dtype', '?')})" if matmul else "—",
            f"{copy:.4g} GB/s" if copy else "—",
        ])  # fmt: skip
    headers = ["run", "suite", "device", "commit", "rows", "matmul ceiling", "copy ceiling"]
    return "## Runs\n\n" + md_table(headers, rows)


def _params_section(frame: pd.DataFrame) -> str:
    """The mechanism parameters left out of every name because every row shares them."""
    held = held_params(frame)
    if not held:
        return ""
    return "Mechanism parameters shared by every row: " + "; ".join(f"{k} {v}" for k, v in held.items()) + ".\n"


def _fits_section(x: str, fits: pd.DataFrame, several_runs: bool) -> str:
    """The exponents along `x`, one line per series, then those that disagree with the complexity."""
    lines = [
        f"## Scaling exponents in {x}\n",
        f"Each series fitted as a + b·{x}^p over every measured {x} (least squares on log time; a ≥ 0 is the fixed "
        f"cost of a call, which bends the short end; with only {MIN_FIT_POINTS} lengths a plain power law b·{x}^p), "
        f"{CONFIDENCE:.0%} interval of p from the fit's covariance; the slope at top is d log t / d log {x} at the "
        f"largest {x}. Cases that failed numerics are left out. Against the mechanism's complexity: ✓ agrees (the "
        f"interval, widened by {SLACK:g}, holds it and excludes the other complexity), ✗ disagrees (see below), "
        "? the interval holds both 1 and 2: it cannot tell.\n",
    ]
    headers = [*(["run"] if several_runs else []), "mechanism", "impl", "case", "shape",
               "time exponent [95% CI]", "slope at top", "points", "expected", "memory exponent [95% CI]",
               "points"]  # fmt: skip
    if (fits["varying"].str.contains("B=")).any():
        lines.append(
            f"B varies with {x} in these runs (a token budget): exponents are of time and memory per sequence (÷ B), "
            "which grow as the mechanism's cost does whatever the batch schedule.\n"
        )
    rows = []
    for record in fits[fits["largest_x_run"].notna()].itertuples(index=False):
        expected = "" if pd.isna(record.time_expected) else f"~{record.time_expected:g}"
        mark = {"agrees": " ✓", "disagrees": " ✗", "inconclusive": " ?"}.get(record.time_verdict, "")
        rows.append([
            *([record.run] if several_runs else []), record.name, record.impl, record.case,
            record.fixed + (f", {record.varying}" if record.varying else ""),
            _fit_cell(record.time_exponent, record.time_low, record.time_high, record.time_note),
            "" if pd.isna(record.time_top_slope) else f"{record.time_top_slope:.2f}",
            _points_cell(record.time_points), expected + mark,
            _fit_cell(record.memory_exponent, record.memory_low, record.memory_high, record.memory_note),
            _points_cell(record.memory_points),
        ])  # fmt: skip
    lines.append(md_table(headers, rows))
    disagreements = fits[fits["time_verdict"] == "disagrees"]
    if len(disagreements):
        lines.append("\n**Exponents that disagree with the mechanism's complexity:**\n")
        lines.extend(
            f"- {r.name} {r.impl} ({r.case}, {r.fixed}{', ' + r.run if several_runs else ''}): {r.time_note}"
            for r in disagreements.itertuples(index=False)
        )
    return "\n".join(lines) + "\n"


def _fit_cell(exponent: float, low: float, high: float, note: str) -> str:
    """ "1.98 [1.90, 2.06]", or "no fit (why)"."""
    if pd.isna(exponent):
        return "no fit (" + (note.split(",")[0] if note else "no data") + ")"
    return f"{exponent:.2f} [{low:.2f}, {high:.2f}]"


def _points_cell(points: str) -> str:
    """ "512;1024;2048" → "3 (512–2048)"."""
    if not points:
        return ""
    values = points.split(";")
    return f"{len(values)} ({values[0]}–{values[-1]})"


def _crossover_section(crossing: pd.DataFrame, frame: pd.DataFrame) -> str:
    """The crossover table along T, or why there is none."""
    baseline = CROSSOVER_BASELINE
    title = f"## Crossover with {baseline.upper()}\n"
    if not (frame["mechanism"] == baseline).any():
        return title + f"\nNo {baseline} rows in these runs: no crossover to report.\n"
    if crossing.empty:
        return title + f"\nNo linear-time mechanism measured at the same case and shape as {baseline}.\n"
    intro = (
        f"\nThe length T* from which each linear-time mechanism's best implementation is faster (and uses less "
        f"peak memory) than {baseline}'s best, interpolated in log-log between measured lengths. The time "
        f"crossover's {CROSSOVER_CONFIDENCE:.0%} interval comes from {RESAMPLES} bootstrap replicates of every "
        "row's kept timing samples (<128: ahead already at the shortest length in some replicates; >8192: "
        "still behind at the longest).\n\n"
    )
    rows = []
    for (run, case, fixed, name), group in crossing.groupby(["run", "case", "fixed", "name"], sort=True):
        by_metric = {r.metric: r for r in group.itertuples(index=False)}
        time, memory = by_metric["time"], by_metric["memory"]
        if time.kind == memory.kind == "none":
            continue  # the mechanism never ran at this case: listed among the cases that did not run
        note = (
            "" if pd.isna(time.baseline_oom_from) else f"{baseline} OOM from T={format_number(time.baseline_oom_from)}"
        )
        rows.append([run, name, case, fixed, time.text, memory.text, note])
    headers = ["run", "mechanism", "case", "shape", "faster from", "leaner from", "note"]
    if crossing["run"].nunique() == 1:
        headers, rows = headers[1:], [row[1:] for row in rows]
    return title + intro + md_table(headers, rows)


def _walls_section(fits: pd.DataFrame) -> str:
    """Where series ran out of memory along T (or the only axis fitted), and the cases that did not run."""
    along_t = fits[fits["x_axis"] == "T"] if (fits["x_axis"] == "T").any() else fits
    if along_t.empty:
        return ""
    x = along_t["x_axis"].iloc[0]
    hit = along_t[along_t["first_oom_x"].notna()]
    lines = [f"## Memory wall (out of memory along {x})\n"]
    if hit.empty:
        lines.append(f"No case ran out of memory (largest {x} run: {format_number(along_t['largest_x_run'].max())}).")
    else:
        rows = [
            [
                r.run,
                r.name,
                r.impl,
                r.case,
                r.fixed,
                format_number(r.longest_x_before_oom),
                format_number(r.first_oom_x),
            ]
            for r in hit.itertuples(index=False)
        ]
        lines.append(
            md_table(["run", "mechanism", "impl", "case", "shape", f"longest {x} before OOM", "first OOM"], rows)
        )
        lines.append(f"{len(along_t) - len(hit)} other series ran without running out of memory.")
    failed = along_t[along_t["not_run"] != ""]
    if len(failed):
        several = along_t["run"].nunique() > 1
        lines.append("\nOther cases that did not run:\n")
        lines.extend(
            f"- {r.name} {r.impl} ({r.case}, {r.fixed}{', ' + r.run if several else ''}): {_compact(r.not_run)}"
            for r in failed.itertuples(index=False)
        )
    return "\n".join(lines) + "\n"


def _compact(not_run: str) -> str:
    """ "unsupported at 128,256,512,1024,2048" → "unsupported at 128–2048 (5 values)"."""
    parts = []
    for part in not_run.split("; "):
        status, _, values = part.partition(" at ")
        listed = values.split(",")
        parts.append(part if len(listed) <= 4 else f"{status} at {listed[0]}–{listed[-1]} ({len(listed)} values)")
    return "; ".join(parts)


def _numerics_section(frame: pd.DataFrame) -> str:
    """The cases that failed their numerics check, and why."""
    failed = frame[frame["numerics_failed"]]
    if failed.empty:
        return "## Numerics\n\nEvery measured case passed its numerics check (or was not checked).\n"
    lines = [f"## Numerics\n\n{len(failed)} case(s) failed the numerics check; they are drawn as red rings and "
             "left out of every fit:\n"]  # fmt: skip
    for row in failed.itertuples(index=False):
        name = config_name(row.mechanism, row.variant, row.shown_params)
        shape = " ".join(f"{a}={format_number(getattr(row, a))}" for a in ("B", "T", "H", "d"))
        reason = row.reason if isinstance(row.reason, str) and row.reason else "numerics_ok is false"
        lines.append(f"- {row.run}: {name} {row.impl} ({row.case}, {shape}): {reason}")
    return "\n".join(lines) + "\n"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; a `|` inside a cell is escaped."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines.extend("| " + " | ".join(cell(v) for v in row) + " |" for row in rows)
    return "\n".join(lines) + "\n"
