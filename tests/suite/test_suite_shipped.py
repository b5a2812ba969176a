"""The suites shipped in suites/: each loads for both devices, and a bare name finds its file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attnbench.mechanisms import plugins, registry
from attnbench.suite.load import SUITES_DIR, find_suite, load_suite

SHIPPED = sorted(SUITES_DIR.glob("*.yaml"))


def built_in_mechanisms() -> set[str]:
    """The mechanisms attnbench itself ships; plug-ins installed alongside add others no shipped suite names."""
    return {mechanism.name for module in registry.MECHANISM_MODULES for mechanism in plugins.import_mechanisms(module)}


def test_find_suite_by_name():
    assert find_suite("seqlen") in (Path("suites/seqlen.yaml"), SUITES_DIR / "seqlen.yaml")
    assert find_suite("other/seqlen.yaml") == Path("other/seqlen.yaml")


def test_suites_are_shipped():
    assert SHIPPED, f"no suite in {SUITES_DIR}"


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("path", SHIPPED, ids=[path.stem for path in SHIPPED])
def test_shipped_suite_loads(path, device):
    suite = load_suite(path, device=device)
    assert suite.name == path.stem
    assert suite.cases
    assert len({c.case_id for c in suite.cases}) == len(suite.cases)
    json.dumps(suite.resolved)
    if device == "cpu":
        assert not {c.impl for c in suite.cases} & {"compile"}, "compile is too slow for a CPU section"
    assert path.read_text().startswith("#"), "a shipped suite opens with a comment saying what it measures"


def test_the_cpu_seqlen_suite_stays_small_and_covers_every_mechanism():
    suite = load_suite(SUITES_DIR / "seqlen.yaml", device="cpu")
    assert 150 <= len(suite.cases) <= 300
    assert {c.problem.mechanism for c in suite.cases} == built_in_mechanisms()
    assert {c.impl for c in suite.cases} <= {"reference", "sdpa"}
