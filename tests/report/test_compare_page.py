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


def _slowed_copy(run_dir, target, factor: float) -> str:
    """A copy of the run with one timed case `factor` times slower; returns its case_id."""
    shutil.copytree(run_dir, target)
    rows = [json.loads(line) for line in (target / "rows.jsonl").read_text().splitlines() if line.strip()]
    timed = [row for row in rows if row["status"] == "ok" and row.get("time_samples_ms")]
    slowed = max(timed, key=lambda row: len(row["time_samples_ms"]))  # the case whose noise is best known
    for key in ("time_ms", "time_p20_ms", "time_p80_ms"):
        slowed[key] *= factor
    slowed["time_samples_ms"] = [value * factor for value in slowed["time_samples_ms"]]
    (target / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return slowed["case_id"]


def test_the_gate_page_shows_the_verdicts_failures_first(browser, small_run, tmp_path):
    head = tmp_path / "head" / small_run.name
    slowed = _slowed_copy(small_run, head, factor=20.0)
    page, report = tmp_path / "gate.html", tmp_path / "gate.json"
    result = CliRunner().invoke(
        cli, ["compare", str(small_run), str(head), "--html", str(page), "--json", str(report), "--normalize", "none"]
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
    bad = CliRunner().invoke(cli, ["compare", str(small_run), str(head), "--html", str(head / "x.html")])
    assert bad.exit_code == 2 and "inside the run folder" in bad.output
