"""Terminal tables fit an 80- or 120-column terminal: columns are dropped (and named) before any number is cut,
and text wraps."""

from __future__ import annotations

import re

import numpy as np
import pytest
from rich.console import Console

from attnbench.cli.tables import DROP_ORDER, rows_table, summary_tables


def _rows(rng: np.random.Generator, count: int = 12) -> list[dict]:
    rows = []
    for k in range(count):
        status = "error" if k == 3 else "ok"
        rows.append({
            "mechanism": "mechanism_with_a_long_name", "variant": "variant_eleven" if k % 2 else "",
            "impl": "reference",
            "level": "layer", "mode": "fwd_bwd", "dtype": "bf16", "causal": bool(k % 3), "B": int(rng.integers(1, 64)),
            "T": int(2 ** rng.integers(7, 17)), "H": 16, "d": 128, "status": status,
            "time_ms": float(rng.uniform(1, 99999)), "peak_mem_bytes": float(rng.uniform(1, 2**36)),
            "tflops": float(rng.uniform(0.001, 999)), "gbps": float(rng.uniform(0.01, 9999)),
            "rel_err": float(rng.uniform(1e-9, 1e-2)), "params": {"window": 64, "G": 4},
            "reason": "RuntimeError: a long message that must wrap rather than widen the table past the terminal"
            if status == "error" else None,
        })  # fmt: skip
    return rows


def _printed(table, width: int) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"), color_system=None)  # noqa: SIM115
    console.print(table)
    return console.export_text()


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("all_columns", [False, True])
def test_a_run_table_fits_the_terminal_and_cuts_no_number(seed, width, all_columns):
    rows = _rows(np.random.default_rng(seed))
    text = _printed(rows_table(rows, all_columns=all_columns, width=width), width)
    assert max(len(line) for line in text.splitlines()) <= width
    for row in rows:
        assert f"{row['time_ms']:.3f}" in text and f"{row['peak_mem_bytes'] / 2**20:.1f}" in text
        assert re.search(rf"\b{row['T']}\b", text)
    dropped = re.search(r"left out to fit \d+ columns: (.*)", text)
    if dropped:
        assert set(dropped.group(1).replace(" ", "").split(",")) <= set(DROP_ORDER)


def test_a_wide_terminal_keeps_every_column_and_a_narrow_one_names_what_it_left_out(seed):
    rows = _rows(np.random.default_rng(seed))
    wide = _printed(rows_table(rows, width=200), 200)
    assert "left out" not in wide and "gbps" in wide
    narrow = _printed(rows_table(rows, width=80), 80)
    header = next(line for line in narrow.splitlines() if "mechanism" in line)
    assert "left out to fit 80 columns: gbps" in narrow and "gbps" not in header and "time_ms" in header


@pytest.mark.parametrize("width", [80, 120])
def test_the_end_of_run_summary_fits_and_keeps_the_failure_reason_whole(seed, width):
    rows = _rows(np.random.default_rng(seed))
    text = "\n".join(_printed(table, width) for table in summary_tables(rows, width=width))
    assert max(len(line) for line in text.splitlines()) <= width
    reason = next(row["reason"] for row in rows if row["reason"])
    assert all(word in text for word in reason.split())


@pytest.mark.parametrize("width", [80, 120])
def test_the_end_of_a_run_says_where_the_results_are_and_what_to_run_next(seed, width, tmp_path):
    from types import SimpleNamespace

    from attnbench.cli.run import _print_summary

    run_dir = tmp_path / "results" / "seqlen-cpu-20250101-000000"
    summary = SimpleNamespace(rows=_rows(np.random.default_rng(seed)), run_dir=run_dir, interrupted=False)
    console = Console(width=width, record=True, file=open("/dev/null", "w"), color_system=None)  # noqa: SIM115
    _print_summary(summary, console)
    text = console.export_text()
    assert f"results: {run_dir}" in text
    for command in ("show", "plot"):
        assert f"attnbench {command} {run_dir}" in text
    assert f"attnbench report {run_dir} -o report.html" in text
    tables = text.split("results:")[0]
    assert max(len(line) for line in tables.splitlines()) <= width


def test_decode_and_task_rows_show_what_tells_them_apart():
    """Two decode steps that differ only in q_len, and two task cells at one T, print as different lines, with
    their cache size and accuracy; plain rows get none of these columns."""
    base = {"mechanism": "m", "variant": "", "impl": "reference", "level": "core", "dtype": "fp32", "causal": True,
            "B": 1, "T": 512, "H": 2, "d": 8, "status": "ok", "time_ms": 1.0}  # fmt: skip
    decode = [{**base, "mode": "decode", "q_len": q, "cache_bytes": 3 * 2**10 * q} for q in (1, 3)]
    task = [
        {**base, "mode": "fwd_bwd", "task": {"kv_pairs": kv}, "accuracy": acc} for kv, acc in ((8, 0.5), (16, 0.25))
    ]
    decode_text = _printed(rows_table(decode), 200)
    assert "q_len" in decode_text and "cache_KiB" in decode_text and "accuracy" not in decode_text
    assert re.search(r"\b1\s.*\b3\.0\b", decode_text) and re.search(r"\b3\s.*\b9\.0\b", decode_text)
    task_text = _printed(rows_table(task), 200)
    assert "kv_pairs" in task_text and "0.500" in task_text and "0.250" in task_text and "q_len" not in task_text
    assert "q_len" not in _printed(rows_table([{**base, "mode": "fwd"}]), 200)
