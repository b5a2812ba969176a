"""Fixtures of the report tests: a real small CPU run (seconds on a quiet machine: three short lengths, forward
only, plain multi-head attention and a grouped variant with as many key/value heads, which computes the same, and
a linear-time mechanism that is unsupported when causal), and a headless Chromium driven by selenium.

The browser tests need Debian's `chromium` and `chromium-driver` (`apt-get install -y chromium chromium-driver`).
Without them they fail, saying so; set ATTNBENCH_SKIP_BROWSER_TESTS=1 to skip them instead on a machine that
cannot have a browser. Nothing is downloaded at test time: the driver is /usr/bin/chromedriver, never
selenium-manager.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SEQLEN_SUITE = Path(__file__).resolve().parents[2] / "suites" / "seqlen.yaml"
RUN_OPTIONS = {
    "overrides": ["T=64,128,256", "modes=fwd", "causal=false,true", "timing.rep_ms=3", "timing.warmup_ms=1"],
    "only": ["mha", "gqa", "xca"],
}
CHROMIUM = os.environ.get("ATTNBENCH_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ATTNBENCH_CHROMEDRIVER", "/usr/bin/chromedriver")
SKIP_BROWSER = "ATTNBENCH_SKIP_BROWSER_TESTS"


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real CPU run of the seqlen suite, reduced to seconds."""
    from attnbench.run.runner import run_suite
    from attnbench.suite.load import load_suite

    suite = load_suite(SEQLEN_SUITE, device="cpu", **RUN_OPTIONS)
    selection = {"device": "cpu", "only": RUN_OPTIONS["only"], "impls": [], "overrides": RUN_OPTIONS["overrides"]}
    summary = run_suite(suite, tmp_path_factory.mktemp("report-results"), selection=selection)  # as the CLI does
    assert not summary.interrupted
    return summary.run_dir


@pytest.fixture(scope="session")
def small_report(small_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report page of `small_run`."""
    from attnbench.report.page import build_report

    return build_report(small_run, tmp_path_factory.mktemp("report") / "report.html")


def _missing_browser() -> str | None:
    """What is missing to drive a headless Chromium, or None."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not (os.path.isfile(path) and os.access(path, os.X_OK))]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]')")
    return ", ".join(missing) or None


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium (selenium WebDriver) with a fixed window size, shared by the browser tests."""
    missing = _missing_browser()
    if missing:
        if os.environ.get(SKIP_BROWSER) == "1":
            pytest.skip(f"{SKIP_BROWSER}=1: browser tests skipped ({missing} missing)")
        pytest.fail(
            f"the HTML report's browser tests need headless Chromium; missing: {missing}. Install them with "
            f"`apt-get install -y chromium chromium-driver` (Debian), or set {SKIP_BROWSER}=1 to skip these tests",
            pytrace=False,
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
