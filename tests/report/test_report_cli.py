"""`attnbench report` and `attnbench show` from the command line, on the real small run: the page is written where
asked and never inside a run, bad input is one line and exit 2, and `show` fits an 80-column terminal."""

from __future__ import annotations

import json

from click.testing import CliRunner

from attnbench.cli import cli


def test_report_writes_one_page_and_refuses_bad_paths(small_run, tmp_path):
    page = tmp_path / "out" / "report.html"
    done = CliRunner().invoke(cli, ["report", str(small_run.parent), "-o", str(page)])
    assert done.exit_code == 0, done.output
    assert str(page) in done.output and page.read_text().startswith("<!DOCTYPE html>")
    inside = CliRunner().invoke(cli, ["report", str(small_run), "-o", str(small_run / "report.html")])
    assert inside.exit_code == 2 and "inside the run folder" in inside.output
    assert not (small_run / "report.html").exists()
    missing = CliRunner().invoke(cli, ["report", str(tmp_path / "nothing"), "-o", str(page)])
    assert missing.exit_code == 2 and str(tmp_path / "nothing") in missing.output


def test_show_fits_an_80_column_terminal_and_keeps_every_time(small_run):
    rows = [json.loads(line) for line in (small_run / "rows.jsonl").read_text().splitlines() if line.strip()]
    done = CliRunner(env={"COLUMNS": "80"}).invoke(cli, ["show", str(small_run)])
    assert done.exit_code == 0, done.output
    assert max(len(line) for line in done.output.splitlines()) <= 80
    assert "left out to fit 80 columns" in done.output
    for row in rows:
        if row.get("time_ms") is not None:
            assert f"{row['time_ms']:.3f}" in done.output


def test_the_gate_table_fits_80_and_120_columns_and_cuts_no_number(small_run, tmp_path):
    from test_compare_page import _slowed_pair

    base, head = tmp_path / "base" / small_run.name, tmp_path / "head" / small_run.name
    _slowed_pair(small_run, base, head, factor=3.0)
    for width in (80, 120):
        done = CliRunner(env={"COLUMNS": str(width)}).invoke(
            cli, ["compare", str(base), str(head), "--normalize", "none", "--all"]
        )
        assert done.exit_code == 1, done.output  # the slowed case, steady on both sides, is a regression
        assert max(len(line) for line in done.output.splitlines()) <= width
        assert "+200.0%" in done.output  # the change, whole
        assert "…" not in done.output  # nothing cut short
