"""suites/papers.yaml measures the settings of the papers' claims: it expands to the intended cases on each device,
and every claim of suites/claims/papers.yaml selects exactly one of its cases on the devices it is checked on."""

from __future__ import annotations

import pytest

from attnbench.analysis.claims import SELECT_KEYS, read_claims
from attnbench.suite.load import SUITES_DIR, load_suite

PAPERS = SUITES_DIR / "papers.yaml"
CLAIMS = SUITES_DIR / "claims" / "papers.yaml"
IMAGE_TOKENS = [(res // 16) ** 2 for res in (224, 384, 512, 768, 1024)]  # XCiT's resolutions, patch 16


def case_fields(case) -> dict:
    """The row fields a claim selects on, as the runner would write them for this case."""
    problem = case.problem
    return {
        "mechanism": problem.mechanism, "variant": problem.params.get("variant", ""), "impl": case.impl,
        "mode": str(case.mode.value), "level": str(problem.level.value), "dtype": case.dtype,
        "causal": problem.causal, "B": problem.B, "T": problem.T, "H": problem.H, "G": problem.params.get("G"),
        "D": problem.D, "d": problem.d,
    }  # fmt: skip


def test_the_cpu_section_is_the_papers_settings_at_cpu_size():
    cases = load_suite(PAPERS, device="cpu").cases
    assert len(cases) == 56, "a few minutes on 2 cores"
    assert {case.problem.T for case in cases} == {*IMAGE_TOKENS, 8192, 16384}
    assert {(case.problem.H, case.problem.D, case.problem.B) for case in cases} == {(6, 384, 1), (8, 384, 1)}
    assert {(str(c.mode.value), str(c.problem.level.value), c.dtype, c.problem.causal) for c in cases} == {
        ("fwd", "layer", "fp32", False)
    }
    impls = {(case.problem.mechanism, case.impl) for case in cases}
    assert impls == {("mha", "sdpa_math"), ("mha", "sdpa"), ("tssa", "reference"), ("xca", "reference")}


def test_the_gpu_part_reaches_the_papers_sizes():
    cases = load_suite(PAPERS, device="cuda").cases
    lengths = {case.problem.T for case in cases}
    assert {16384, (1232 // 16) ** 2, (1600 // 16) ** 2} <= lengths
    assert {case.impl for case in cases if case.problem.mechanism != "mha"} == {"reference", "triton"}


def selects(fields: dict, selector: dict, params: dict) -> bool:
    """Whether a case (its row fields and mechanism parameters) is one a claim's side selects."""
    wanted = selector.get("params", {})
    plain = {key: value for key, value in selector.items() if key != "params"}
    return all(fields[key] == value for key, value in plain.items()) and all(
        params.get(key) == value for key, value in wanted.items()
    )


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_every_papers_claim_selects_one_case_of_the_suite(device):
    check_claims_against_suite(CLAIMS, PAPERS, device)


@pytest.mark.parametrize("claims", sorted(CLAIMS.parent.glob("*.yaml")), ids=lambda path: path.stem)
def test_every_shipped_claims_file_matches_its_suite_on_the_gpu(claims):
    assert (SUITES_DIR / claims.name).is_file(), f"{claims} names no shipped suite"
    check_claims_against_suite(claims, SUITES_DIR / claims.name, "cuda")


def check_claims_against_suite(claims_path, suite_path, device: str) -> None:
    """Each claim of `claims_path` that applies on `device` selects exactly one case a side of the suite there."""
    cases = load_suite(suite_path, device=device).cases
    measured = [(case_fields(case), dict(case.problem.params)) for case in cases]
    for claim in read_claims(claims_path):
        if claim.device not in (None, device):
            continue
        for which in ("numerator", "denominator"):
            selector = claim.side(which)
            assert set(selector) <= set(SELECT_KEYS)
            matching = [fields for fields, params in measured if selects(fields, selector, params)]
            assert len(matching) == 1, f"{claim.name} {which} on {device}: {len(matching)} cases"
