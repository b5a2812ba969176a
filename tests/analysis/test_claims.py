"""Papers' claims against synthetic runs whose ratios are known: a right ratio is reproduced, a planted wrong one
is caught, a missing or failed side is "not measured here", and a bad claims file is one line and exit 2."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from synthetic_runs import make_row, write_run

from attnbench.analysis.claims import Claim, check_runs, read_claims, time_ratio_interval, verdict
from attnbench.analysis.rows import AnalysisError
from attnbench.cli import cli

SHIPPED_CLAIMS = Path(__file__).resolve().parents[2] / "suites" / "claims" / "papers.yaml"
T_LONG = 16384
TSSA_BYTES, TSSA_MS = 97.0 * 2**20, 1.7

CLAIMS = """
claims:
  - name: memory-16k
    paper: "A et al., Figure 1"
    metric: memory
    ratio: 130
    tolerance: 1.5
    where: {level: layer, mode: fwd, dtype: fp32, B: 1, H: 8, T: 16384}
    numerator: {mechanism: mha, impl: sdpa_math}
    denominator: {mechanism: tssa, impl: reference}
  - name: time-16k
    paper: "A et al., Figure 1"
    metric: time
    ratio: 25
    compare: at_least
    tolerance: 1.25
    device: cuda
    where: {level: layer, mode: fwd, dtype: fp32, B: 1, H: 8, T: 16384}
    numerator: {mechanism: mha, impl: sdpa_math}
    denominator: {mechanism: tssa, impl: reference}
"""


def layer_rows(memory_ratio: float, time_ratio: float, softmax_status: str = "ok") -> list[dict]:
    """A layer at T = 16384, D = 384, H = 8: the eager softmax `memory_ratio` and `time_ratio` times TSSA."""
    common = {"B": 1, "H": 8, "d": 48, "level": "layer"}
    softmax = make_row(
        "mha", "sdpa_math", T_LONG, status=softmax_status, time_ms=TSSA_MS * time_ratio,
        mem=TSSA_BYTES * memory_ratio, **common,
    )  # fmt: skip
    tssa = make_row("tssa", "reference", T_LONG, time_ms=TSSA_MS, mem=TSSA_BYTES, **common)
    shorter = make_row("tssa", "reference", 1024, time_ms=0.3, mem=TSSA_BYTES / 16, **common)
    return [softmax, tssa, shorter]


def run_with(tmp_path: Path, rows: list[dict], device: str = "cuda", name: str = "papers-gpu0") -> Path:
    """A run folder of `rows` measured on `device`, with the claims file beside it."""
    run = write_run(tmp_path / "results" / name, rows, suite="papers")
    meta = json.loads((run / "meta.json").read_text())
    meta["device"]["type"] = device
    (run / "meta.json").write_text(json.dumps(meta))
    (tmp_path / "claims.yaml").write_text(CLAIMS)
    return run


def outcomes_of(tmp_path: Path, rows: list[dict], device: str = "cuda") -> dict[str, object]:
    run = run_with(tmp_path, rows, device)
    return {item.claim.name: item for item in check_runs(run, tmp_path / "claims.yaml")}


def test_the_papers_ratios_are_reproduced_when_the_rows_show_them(tmp_path):
    found = outcomes_of(tmp_path, layer_rows(memory_ratio=125.0, time_ratio=40.0))
    memory, time = found["memory-16k"], found["time-16k"]
    assert memory.verdict == "reproduced"
    assert memory.ours == pytest.approx(125.0) and memory.low == memory.high == memory.ours
    assert time.verdict == "reproduced"
    assert time.low < 40.0 < time.high and time.high / time.low < 1.1, "30 samples at 3% spread: a narrow interval"
    assert "bootstrap" in time.note


def test_a_planted_wrong_ratio_is_caught(tmp_path):
    found = outcomes_of(tmp_path, layer_rows(memory_ratio=8.0, time_ratio=12.0))
    assert found["memory-16k"].verdict == "not reproduced"
    assert found["memory-16k"].ours == pytest.approx(8.0)
    assert found["time-16k"].verdict == "not reproduced"


def test_too_large_a_memory_ratio_is_not_about_the_papers(tmp_path):
    assert outcomes_of(tmp_path, layer_rows(memory_ratio=400.0, time_ratio=40.0))["memory-16k"].verdict == (
        "not reproduced"
    )


def test_a_side_that_did_not_run_is_not_measured_here(tmp_path):
    found = outcomes_of(tmp_path, layer_rows(memory_ratio=125.0, time_ratio=40.0, softmax_status="oom"))
    memory = found["memory-16k"]
    assert memory.verdict == "not measured here" and math.isnan(memory.ours)
    assert "oom" in memory.note and "numerator" in memory.note


def test_a_run_at_other_shapes_says_which_values_it_has(tmp_path):
    """A run of the suite at its CPU shapes (here H = 4) has no row for a claim at H = 8: the note names the values
    the run has, so that the `--set` which would measure the claim is plain."""
    rows = layer_rows(memory_ratio=125.0, time_ratio=40.0)
    for row in rows:
        row["H"], row["d"] = 4, 96
    memory = outcomes_of(tmp_path, rows)["memory-16k"]
    assert memory.verdict == "not measured here"
    assert "no such row" in memory.note and memory.note.endswith("the run has H 4")


def test_a_time_claim_about_another_device_is_not_measured_on_this_one(tmp_path):
    found = outcomes_of(tmp_path, layer_rows(memory_ratio=125.0, time_ratio=40.0), device="cpu")
    assert found["time-16k"].verdict == "not measured here"
    assert "cuda" in found["time-16k"].note and "cpu" in found["time-16k"].note
    assert found["memory-16k"].verdict == "reproduced", "peak bytes are checked on any device"


def test_a_selector_that_matches_several_rows_is_an_error(tmp_path):
    rows = layer_rows(memory_ratio=125.0, time_ratio=40.0)
    run = run_with(tmp_path, rows)
    claims = read_claims(tmp_path / "claims.yaml")
    loose = claims[0].model_copy(update={"where": {"level": "layer"}, "denominator": {"mechanism": "tssa"}})
    (tmp_path / "loose.yaml").write_text(json.dumps({"claims": [loose.model_dump()]}))
    with pytest.raises(AnalysisError, match="matches 2 rows"):
        check_runs(run, tmp_path / "loose.yaml")


def test_the_time_interval_falls_back_to_the_quantiles_without_samples():
    top = {"time_samples_ms": None, "time_p20_ms": 9.0, "time_p80_ms": 11.0}
    bottom = {"time_samples_ms": [1.0], "time_p20_ms": 0.9, "time_p80_ms": 1.1}
    low, high, how = time_ratio_interval(top, bottom)
    assert (low, high) == pytest.approx((9.0 / 1.1, 11.0 / 0.9))
    assert "p20" in how


def test_verdict_bounds():
    about = Claim(name="c", paper="p", metric="memory", ratio=10, tolerance=2, numerator={"T": 1}, denominator={"T": 2})
    assert verdict(about, 19.0, 19.0) == "reproduced"
    assert verdict(about, 21.0, 21.0) == "not reproduced"
    assert verdict(about, 4.0, 6.0) == "reproduced", "an interval that reaches the range counts"
    assert verdict(about, 3.0, 4.9) == "not reproduced"
    at_least = about.model_copy(update={"compare": "at_least"})
    assert verdict(at_least, 1000.0, 1000.0) == "reproduced"
    assert verdict(at_least, 3.0, 4.9) == "not reproduced"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("claims: []", "claims"),
        ("claims:\n  - {name: a, paper: p, metric: speed, ratio: 2, numerator: {}, denominator: {}}", "metric"),
        ("claims:\n  - {name: a, paper: p, metric: time, ratio: -2, numerator: {}, denominator: {}}", "ratio"),
        ("claims:\n  - {name: a, paper: p, metric: time, ratio: 2, numerator: {heads: 8}, denominator: {}}", "heads"),
        ("claims:\n  - {name: a, paper: p, metric: time, ratio: 2, numerator: {}, denominator: {}, x: 1}", "x"),
        ("claims: [", "YAML"),
    ],
)
def test_a_bad_claims_file_is_named_with_its_key(tmp_path, text, named):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(AnalysisError) as caught:
        read_claims(path)
    assert str(path) in str(caught.value) and named in str(caught.value)


def test_the_command_prints_each_claim_and_writes_markdown(tmp_path):
    run = run_with(tmp_path, layer_rows(memory_ratio=125.0, time_ratio=12.0))
    table = tmp_path / "claims.md"
    result = CliRunner().invoke(
        cli, ["claims", str(run), "--claims", str(tmp_path / "claims.yaml"), "--markdown", str(table)]
    )
    assert result.exit_code == 0, result.output
    assert "memory-16k" in result.output and "not reproduced" in result.output
    text = table.read_text()
    assert "| memory-16k |" in text and "**reproduced**" in text and "**not reproduced**" in text


def test_the_command_refuses_a_bad_claims_file_with_exit_2(tmp_path):
    run = run_with(tmp_path, layer_rows(memory_ratio=125.0, time_ratio=40.0))
    (tmp_path / "claims.yaml").write_text("claims:\n  - {name: a}\n")
    result = CliRunner().invoke(cli, ["claims", str(run), "--claims", str(tmp_path / "claims.yaml")])
    assert result.exit_code == 2
    assert "claims.yaml" in result.output and "allowed" in result.output


def test_the_command_finds_the_claims_of_the_runs_suite(tmp_path):
    run = run_with(tmp_path, layer_rows(memory_ratio=125.0, time_ratio=40.0))
    result = CliRunner().invoke(cli, ["claims", str(run)])
    assert result.exit_code == 0, result.output
    assert "tost-memory-16k" in result.output, "suites/claims/papers.yaml, the shipped claims of suite papers"


def test_the_shipped_claims_load():
    claims = read_claims(SHIPPED_CLAIMS)
    assert {claim.metric for claim in claims} == {"time", "memory"}
    assert all(claim.setting and claim.says for claim in claims)


def decode_rows(tpa_cache_per_token: float) -> list[dict]:
    """Decode rows at H = 32, d = 64: MHA's cache 16384 B per token (fp32), TPA at two ranks, one planted."""
    common = {"B": 1, "H": 32, "d": 64, "mode": "decode", "causal": True}
    mha = make_row("mha", "sdpa", 8192, time_ms=1.0, cache_bytes_per_token=16384.0, **common)
    rank1 = make_row(
        "tpa", "sdpa", 8192, time_ms=1.0, cache_bytes_per_token=tpa_cache_per_token,
        params={"R_q": 16, "R_k": 1, "R_v": 1}, **common,
    )  # fmt: skip
    rank2 = make_row(
        "tpa", "sdpa", 8192, time_ms=1.0, cache_bytes_per_token=1536.0, params={"R_q": 16, "R_k": 2, "R_v": 2}, **common
    )
    rank2["case_id"] += "-rank2"
    return [mha, rank1, rank2]


CACHE_CLAIM = """
claims:
  - name: rank1-cache
    paper: "B et al., the cache table"
    metric: cache
    ratio: 21.333
    tolerance: 1.01
    where: {mode: decode, B: 1, T: 8192, H: 32, d: 64}
    numerator: {mechanism: mha, impl: sdpa}
    denominator: {mechanism: tpa, impl: sdpa, params: {R_k: 1, R_v: 1}}
"""


@pytest.mark.parametrize(("tpa_bytes", "expected"), [(768.0, "reproduced"), (1536.0, "not reproduced")])
def test_a_cache_claim_selects_by_the_mechanisms_parameters(tmp_path, tpa_bytes, expected):
    run = write_run(tmp_path / "results" / "decode-gpu0", decode_rows(tpa_bytes), suite="decode")
    (tmp_path / "cache.yaml").write_text(CACHE_CLAIM)
    (outcome,) = check_runs(run, tmp_path / "cache.yaml")
    assert outcome.verdict == expected
    assert outcome.ours == pytest.approx(16384.0 / tpa_bytes)
    assert "tensors" in outcome.note


def test_a_run_whose_suite_has_no_claims_is_refused_with_exit_2(tmp_path):
    run = write_run(tmp_path / "results" / "seqlen-gpu0", layer_rows(memory_ratio=125.0, time_ratio=40.0))
    result = CliRunner().invoke(cli, ["claims", str(run)])
    assert result.exit_code == 2
    assert "no claims file for suite 'seqlen'" in result.output
