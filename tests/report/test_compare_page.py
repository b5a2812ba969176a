"""`attnbench compare BASE HEAD --html`: the gate's verdicts as a page, in Chromium: the headline, every compared
case once, failing verdicts first, and the same sortable, filterable table as the report."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

try:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
except ImportError:  # without selenium the `browser` fixture fails, saying what to install
    By = Select = None

from attnbench.cli import cli


def _rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "rows.jsonl").read_text().splitlines() if line.strip()]


def _write(run_dir, rows: list[dict]) -> None:
    (run_dir / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def _with_steady_case(rows: list[dict], case_id: str, factor: float) -> list[dict]:
    """The rows with `case_id`'s timing replaced by 24 steady samples around its median, times `factor`: what
    the page shows must not hinge on how few or how scattered the samples of a run on a busy machine were."""
    for row in rows:
        if row["case_id"] == case_id:
            samples = [row["time_ms"] * factor * (1 + 0.002 * (i % 6)) for i in range(24)]
            row["time_samples_ms"] = samples
            row["time_ms"] = sorted(samples)[12]
            row["time_p20_ms"], row["time_p80_ms"] = sorted(samples)[4], sorted(samples)[19]
    return rows


def _slowed_pair(run_dir, base, head, factor: float) -> str:
    """Copies of the run as BASE and HEAD with one timed case steady in both and `factor` times slower in HEAD;
    every other case is the same measurement on both sides. Returns the slowed case_id."""
    shutil.copytree(run_dir, base)
    shutil.copytree(run_dir, head)
    rows = _rows(base)
    slowed = next(row for row in rows if row["status"] == "ok" and row.get("time_samples_ms"))["case_id"]
    _write(base, _with_steady_case(rows, slowed, 1.0))
    _write(head, _with_steady_case(_rows(head), slowed, factor))
    return slowed


def test_the_gate_page_shows_the_verdicts_failures_first(browser, small_run, tmp_path):
    base, head = tmp_path / "base" / small_run.name, tmp_path / "head" / small_run.name
    slowed = _slowed_pair(small_run, base, head, factor=20.0)
    page, report = tmp_path / "gate.html", tmp_path / "gate.json"
    result = CliRunner().invoke(
        cli, ["compare", str(base), str(head), "--html", str(page), "--json", str(report), "--normalize", "none"]
    )
    assert result.exit_code == 1, result.output
    verdicts = json.loads(report.read_text())
    browser.get(page.resolve().as_uri())
    assert browser.find_element(By.ID, "headline").text.startswith("FAIL")
    rows = browser.find_elements(By.CSS_SELECTOR, "#cases-table tbody tr")
    compared = verdicts["cases"] + verdicts.get("only_base", []) + verdicts.get("only_head", [])
    assert len(rows) == len(compared)
    assert rows[0].get_attribute("data-case") == slowed and rows[0].get_attribute("data-verdict") == "regressed"
    Select(browser.find_element(By.ID, "cases-table-filter-verdict")).select_by_value("regressed")
    shown = [row for row in rows if row.is_displayed()]
    assert [row.get_attribute("data-case") for row in shown] == [slowed]
    bad = CliRunner().invoke(cli, ["compare", str(base), str(head), "--html", str(head / "x.html")])
    assert bad.exit_code == 2 and "inside the run folder" in bad.output
