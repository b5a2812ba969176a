"""Mode `decode`: every decode implementation against the float64 causal reference, the bytes it keeps against its
mechanism's formula, and one measured decode row.

A decode step's outputs must equal the last `q_len` rows of the mechanism's causal reference over all `M + q_len`
tokens; the checks run at awkward cache lengths, batches and head shapes, with one and with three new tokens.
"""

from __future__ import annotations

import pytest

from attnbench.measure.case import measure_case
from attnbench.measure.decode import check_problem, decode_comparison
from attnbench.mechanisms import registry
from attnbench.mechanisms.decoding import Decoding, check_q_len
from attnbench.mechanisms.problem import Mode
from attnbench.mechanisms.softmax.decode import kv_decoding, reference_attend
from attnbench.suite.case import Case, Limits, TimingSettings

# Mechanism parameter sets that cover every causal form (and uneven TPA ranks, a GQA group count that is not a
# power of two, an AFT-local window longer than some caches).
FORMS = (
    ("mha", {}),
    ("gqa", {"G": 3}),
    ("mqa", {}),
    ("tpa", {"R_q": 3, "R_k": 1, "R_v": 3}),
    ("tpa", {"R_q": 2, "R_k": 2, "R_v": 2, "rope_precision": "authors"}),
    ("tssa", {}),
    ("aft", {"variant": "simple"}),
    ("aft", {"variant": "local", "window": 6}),
    ("aft", {"variant": "full"}),
)
SHAPES = ((2, 9), (1, 37), (3, 1))  # (B, M): an odd cache, a cache shorter than the local window, one token


def _decode_impls():
    for name, params in FORMS:
        for impl in registry.get(name).impls:
            if impl.decode and impl.unavailable_reason("cpu") is None:
                yield name, params, impl.name


def _problem(name, params, B, M):
    return registry.get(name).problem(B=B, T=M, H=6, d=10, causal=True, **params)


@pytest.mark.parametrize("q_len", [1, 3])
@pytest.mark.parametrize(("name", "params", "impl"), list(_decode_impls()))
def test_every_decode_step_equals_the_last_rows_of_the_causal_reference(name, params, impl, q_len, seed):
    mechanism = registry.get(name)
    build = mechanism.impl(impl).load_decode()
    for B, M in SHAPES:
        if name == "aft" and params["variant"] == "local" and M + q_len < params["window"]:
            continue  # the mechanism wants window <= T
        problem = _problem(name, params, B, M)
        dtypes = ("fp32",) if impl == "triton" else ("fp64", "fp32")
        for dtype in dtypes:
            result = decode_comparison(mechanism, build, problem, q_len, dtype, "cpu", seed + M)
            assert result.ok, f"{problem.describe()} {impl} q_len={q_len} {dtype}: {result.explain()}"
            if dtype == "fp64":
                assert result.rel_err < 1e-12, f"{problem.describe()} {impl}: float64 decode is not exact"


def test_a_wrong_step_fails_the_check(seed):
    """The comparison catches a step that is off by 1% and one that lets the first new token see the second."""
    mechanism = registry.get("mha")
    problem = _problem("mha", {}, 2, 11)
    good = mechanism.impl("reference").load_decode()

    def scaled(problem, tensors, q_len):
        decoding = good(problem, tensors, q_len)
        return Decoding(lambda: decoding.step() * 1.01, decoding.kept, decoding.inputs)

    def peeking(problem, tensors, q_len):  # each new token also sees the one after it
        q = tensors["q"][:, problem.T :].clone()
        return kv_decoding(q, tensors["k"], tensors["v"], problem.T, lambda *a: reference_attend(*a[:3], a[3] + 1))[2]

    assert decode_comparison(mechanism, good, problem, 3, "fp32", "cpu", seed).ok
    assert not decode_comparison(mechanism, scaled, problem, 3, "fp32", "cpu", seed).ok
    assert not decode_comparison(mechanism, peeking, problem, 3, "fp32", "cpu", seed).ok


def test_the_check_runs_at_a_smaller_cache_when_the_reference_is_too_large():
    problem = _problem("mha", {}, 1, 4096)
    smaller = check_problem(registry.get("mha"), problem, 1, max_elements=1 << 16)
    assert smaller.T < problem.T and smaller.T >= 1
    assert check_problem(registry.get("mha"), problem, 1, max_elements=1 << 30) is problem


def test_q_len_is_checked():
    for bad in (0, 5, 1.0, True, "1"):
        with pytest.raises(ValueError, match="q_len must be an integer from 1 to 4"):
            check_q_len(bad)


def test_a_decode_row_records_the_step_and_its_cache(tmp_path):
    mechanism = registry.get("gqa")
    problem = mechanism.problem(B=2, T=21, H=6, d=10, causal=True, G=3)
    timing = TimingSettings(warmup_ms=1, rep_ms=3, min_reps=3, max_reps=20, flush_l2=False, energy_s=0)
    case = Case(problem, "sdpa", Mode.DECODE, "fp32", timing, Limits(case_timeout_s=60), seed=5, q_len=3)
    row, fatal = measure_case(case, "cpu", {"copy_gbps": 10.0})
    assert not fatal and row["status"] == "ok", row["reason"]
    assert (row["mode"], row["cache_len"], row["q_len"], row["T"]) == ("decode", 21, 3, 21)
    assert row["cache_bytes"] == 2 * 2 * (21 + 3) * 3 * 10 * 4  # K and V, B·(M+q_len)·G·d fp32 values each
    assert row["cache_bytes"] == row["cache_model_bytes"] and row["cache_bytes_per_token"] == 2 * 3 * 10 * 4
    assert row["bytes"] > row["cache_bytes"] and row["gbps"] > 0 and row["frac_copy_bw"] == row["gbps"] / 10.0
    assert row["numerics_checked"] and row["numerics_ok"] and row["numerics_T"] == 21
    assert row["time_ms"] > 0 and len(row["time_samples_ms"]) >= 3


def test_a_mechanism_without_a_decode_path_is_unsupported_not_an_error():
    """XCA has no causal form, non-causal TSSA is no decoder, and an implementation without a decode path (the
    compiled reference, a plug-in that declares none) says so."""
    cases = {
        ("xca", "reference", False): "no causal form",  # asked causal below: the mechanism refuses first
        ("tssa", "reference", False): "needs the causal form",
        ("mha", "compile", True): "no decode implementation",
        ("tssa", "triton", True): "no decode implementation",
    }
    for (name, impl, causal), reason in cases.items():
        mechanism = registry.get(name)
        try:
            problem = mechanism.problem(B=1, T=8, H=2, d=4, causal=True if name == "xca" else causal)
        except registry.Unsupported as exc:
            assert reason in str(exc)
            continue
        assert reason in mechanism.impl(impl).unsupported_reason(problem, Mode.DECODE, "fp32")


def test_decode_is_unsupported_at_the_layer_level():
    problem = registry.get("mha").problem(B=1, T=8, H=2, d=4, causal=True, level="layer")
    assert "core level" in registry.get("mha").impl("sdpa").unsupported_reason(problem, Mode.DECODE, "fp32")


def _suite(tmp_path, **keys):
    import yaml

    document = {
        "name": "decode-keys",
        "mechanisms": [{"name": "mha"}, {"name": "linear_attn"}],
        "impls": ["sdpa", "reference"],
        "causal": True,
        "sweep": {"T": [8, 16], "H": 2, "d": 4},
        **keys,
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_q_len_is_a_strict_suite_key(tmp_path):
    from attnbench.suite.errors import SuiteError
    from attnbench.suite.load import load_suite

    for bad, words in ((5, "<= 4"), (0, ">= 1"), ("2", "integer"), ([], "empty list")):
        with pytest.raises(SuiteError, match="q_len") as caught:
            load_suite(_suite(tmp_path, modes="decode", q_len=bad), device="cpu")
        assert words in str(caught.value)
    cases = load_suite(_suite(tmp_path, modes=["fwd", "decode"], q_len=[1, 3]), device="cpu").cases
    decode = [case for case in cases if case.mode is Mode.DECODE]
    assert len(decode) == (2 + 1) * 2 * 2  # mha sdpa and reference, the plug-in reference; two lengths, two q_len
    assert {case.q_len for case in decode} == {1, 3}
    assert all(case.q_len is None for case in cases if case.mode is not Mode.DECODE)
    plug_in = {case.unsupported for case in decode if case.problem.mechanism == "linear_attn"}
    assert all(reason and "no decode implementation" in reason for reason in plug_in)


def test_a_cache_that_disagrees_with_its_formula_is_an_error(monkeypatch):
    """A formula that counted H key/value heads for GQA (an expanded cache) no longer matches what `sdpa` keeps."""
    from attnbench.mechanisms.softmax import decode as softmax_decode

    real = softmax_decode.cache_model
    monkeypatch.setattr(softmax_decode, "cache_model", lambda problem, size, heads: real(problem, size, problem.H))
    problem = registry.get("gqa").problem(B=1, T=9, H=4, d=6, causal=True, G=2)
    timing = TimingSettings(warmup_ms=1, rep_ms=2, min_reps=3, max_reps=10, flush_l2=False, energy_s=0)
    case = Case(problem, "sdpa", Mode.DECODE, "fp32", timing, Limits(check_numerics=False), q_len=1)
    row, _ = measure_case(case, "cpu", {})
    assert row["status"] == "error" and "formula says" in row["reason"]
    assert row["cache_model_bytes"] == 2 * row["cache_bytes"]
