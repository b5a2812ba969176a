"""The report of a real small CPU run, opened in headless Chromium: what the page shows (metadata, the winners,
every mechanism in the figures' legends, every row), that its table sorts and filters, that a broken sort is
caught, and that it loads with the network off and names no URL to fetch."""

from __future__ import annotations

import json
import re
from pathlib import Path

try:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
except ImportError:  # without selenium the `browser` fixture fails, saying what to install
    By = Select = None

TABLE = "cases-table"


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "rows.jsonl").read_text().splitlines() if line.strip()]


def _meta(run_dir: Path) -> dict:
    return json.loads((run_dir / "meta.json").read_text())


def _open(driver, page: Path) -> None:
    driver.get(page.resolve().as_uri())
    assert driver.find_element(By.ID, TABLE)


def _column(driver, header: str) -> int:
    headers = [th.text.strip().rstrip(" ▲▼") for th in driver.find_elements(By.CSS_SELECTOR, f"#{TABLE} thead th")]
    return headers.index(header)


def _visible_rows(driver) -> list:
    return [row for row in driver.find_elements(By.CSS_SELECTOR, f"#{TABLE} tbody tr") if row.is_displayed()]


def _sort_values(driver, header: str) -> list[float]:
    """Click `header` and read the visible rows' values in that column, in page order (blanks left out)."""
    index = _column(driver, header)
    driver.find_elements(By.CSS_SELECTOR, f"#{TABLE} thead th")[index].click()
    script = f"""return Array.from(document.querySelectorAll('#{TABLE} tbody tr'))
        .filter(r => !r.hidden).map(r => r.cells[{index}].getAttribute('data-sort'));"""
    return [float(value) for value in driver.execute_script(script) if value not in (None, "")]


def sorts_both_ways(driver, header: str) -> bool:
    """Whether clicking `header` sorts the table ascending by it, and clicking again descending."""
    ascending = _sort_values(driver, header)
    descending = _sort_values(driver, header)
    return len(ascending) > 2 and ascending == sorted(ascending) and descending == sorted(ascending, reverse=True)


def test_the_report_of_a_real_run_shows_it_all_and_sorts_and_filters(browser, small_run, small_report, tmp_path):
    rows, meta = _rows(small_run), _meta(small_run)
    _open(browser, small_report)
    runs_text = browser.find_element(By.ID, "runs").text
    assert meta["device"]["name"] in runs_text and meta["git"]["commit"][:12] in runs_text
    assert meta["versions"]["torch"] in runs_text and "rep_ms 3.0" in runs_text
    assert f"ok {sum(r['status'] == 'ok' for r in rows)}" in runs_text
    # who wins: one line per case and length, naming a fastest, leanest and most accurate contender each
    winners = browser.find_elements(By.CSS_SELECTOR, "#winners-table tbody tr")
    groups = {(r["causal"], r["T"]) for r in rows if r["status"] == "ok"}
    assert len(winners) == len(groups)
    headers = [th.text.strip() for th in browser.find_elements(By.CSS_SELECTOR, "#winners-table thead th")]
    assert headers[-3:] == ["fastest", "leanest", "most accurate"]
    assert all(
        cell.find_elements(By.TAG_NAME, "b") for row in winners for cell in row.find_elements(By.CLASS_NAME, "win")
    )
    # every mechanism named in the figures' legends, and the grouped variant equal to plain attention marked so
    legend_text = " ".join(
        t.get_attribute("textContent") for t in browser.find_elements(By.CSS_SELECTOR, "figure svg text")
    )
    for mechanism in {r["mechanism"] for r in rows if r["status"] == "ok"}:
        assert re.search(rf"\b{mechanism}\b", legend_text), mechanism
    assert re.search(r"\b(mha|gqa)  O\(T²\)  ≡ (gqa|mha)\b", legend_text)  # same peak memory, to the byte
    # every row of the run, once
    assert len(_visible_rows(browser)) == len(rows)
    assert {row.get_attribute("data-case") for row in _visible_rows(browser)} == {r["case_id"] for r in rows}
    assert sorts_both_ways(browser, "time ms") and sorts_both_ways(browser, "T")
    # filter by status: only the unsupported (causal) cases remain, then all again
    status = Select(browser.find_element(By.ID, f"{TABLE}-filter-status"))
    status.select_by_value("unsupported")
    shown = _visible_rows(browser)
    assert len(shown) == sum(r["status"] == "unsupported" for r in rows) > 0
    assert {row.get_attribute("data-status") for row in shown} == {"unsupported"}
    assert browser.find_element(By.ID, f"{TABLE}-shown").text == str(len(shown))
    status.select_by_value("")
    assert len(_visible_rows(browser)) == len(rows)
    assert browser.save_screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_broken_sort_is_caught(browser, small_report, tmp_path):
    broken = tmp_path / "broken.html"
    html = small_report.read_text()
    planted = html.replace("return a.value - b.value;", "return 0;")
    assert planted != html
    broken.write_text(planted)
    _open(browser, broken)
    assert not sorts_both_ways(browser, "time ms")


def test_the_report_loads_with_the_network_off_and_names_no_url_to_fetch(browser, small_run, small_report):
    html = small_report.read_text()
    fetched = re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, flags=re.IGNORECASE)
    assert not fetched, fetched
    assert "@import" not in html and "url(http" not in html
    browser.execute_cdp_cmd("Network.enable", {})
    offline = {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0}
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", offline)
    try:
        _open(browser, small_report)
        assert len(_visible_rows(browser)) == len(_rows(small_run))
        assert len(browser.find_elements(By.CSS_SELECTOR, "figure svg")) >= 2
        resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
        assert resources == []
        assert sorts_both_ways(browser, "time ms")  # the script is inline: it runs offline
    finally:
        browser.execute_cdp_cmd("Network.emulateNetworkConditions", {**offline, "offline": False})
