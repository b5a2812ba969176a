"""Expansion: a valid suite becomes exactly the cases it describes, in the order the runner uses, with stable
seeds; `--only` and `--impl` keep a part of them; what a mechanism or implementation cannot do becomes a case
marked unsupported rather than an error.
"""

from __future__ import annotations

import dataclasses
import itertools

from suite_helpers import BASE, error_of, load_text, with_mechanism

from attnbench.mechanisms import registry
from attnbench.mechanisms.problem import Mode

ORDERED = """
name: ordered
mechanisms:
  - name: mha
  - name: gqa
    params: {G: [4, 2]}
impls: [sdpa, reference]
modes: [fwd_bwd, fwd]
levels: [layer, core]
dtypes: [fp32, fp64]
causal: [true, false]
sweep: {T: [64, 16], H: 4, d: 8, B: 2}
"""


def test_expansion_count_and_order(tmp_path):
    suite = load_text(tmp_path, ORDERED)
    got = [
        (
            c.problem.mechanism,
            c.problem.params.get("G"),
            c.impl,
            c.problem.level.value,
            c.mode.value,
            c.dtype,
            c.problem.causal,
            c.problem.T,
        )
        for c in suite.cases
    ]
    entries = [("mha", None), ("gqa", 4), ("gqa", 2)]
    expected = [
        (name, G, impl, level, mode, dtype, causal, T)
        for (name, G), impl, level, mode, dtype, causal, T in itertools.product(
            entries,
            ["sdpa", "reference"],
            ["layer", "core"],
            ["fwd_bwd", "fwd"],
            ["fp32", "fp64"],
            [True, False],
            [16, 64],
        )
    ]
    assert got == expected
    assert len(suite.cases) == 3 * 2 * 2 * 2 * 2 * 2 * 2
    assert len({c.case_id for c in suite.cases}) == len(suite.cases)
    assert all(c.problem.B == 2 and c.problem.H == 4 and c.problem.d == 8 for c in suite.cases)
    assert all(c.unsupported is None for c in suite.cases)
    assert suite.name == "ordered" and suite.device == "cpu"


def test_defaults(tmp_path):
    suite = load_text(tmp_path, BASE)
    mha, gqa = registry.get("mha"), registry.get("gqa")
    assert len(suite.cases) == len(mha.impls) + len(gqa.impls)  # every declared impl, fwd, core, not causal, B=1
    assert {c.mode for c in suite.cases} == {Mode.FWD}
    assert {c.dtype for c in suite.cases} == {"fp32"}
    assert {(c.problem.level.value, c.problem.causal, c.problem.B) for c in suite.cases} == {("core", False, 1)}
    assert {c.dtype for c in load_text(tmp_path, BASE, device="cuda").cases} == {"bf16"}
    assert load_text(tmp_path, BASE).timing == suite.cases[0].timing


def test_suite_impls_skip_what_a_mechanism_does_not_declare(tmp_path):
    text = BASE.replace("- name: mha", "- name: tssa") + "impls: [reference, sdpa]\n"
    suite = load_text(tmp_path, text)
    assert {(c.problem.mechanism, c.impl) for c in suite.cases} == {
        ("tssa", "reference"),
        ("gqa", "reference"),
        ("gqa", "sdpa"),
    }


def test_tokens_give_b(tmp_path):
    suite = load_text(tmp_path, BASE.replace("T: 32", "T: [16, 64, 256]").replace("d: 8", "d: 8, tokens: 100"))
    shapes = sorted({(c.problem.T, c.problem.B) for c in suite.cases})
    assert shapes == [(16, 6), (64, 1), (256, 1)]


def test_width_gives_head_dim(tmp_path):
    suite = load_text(tmp_path, BASE.replace("H: 4", "H: [2, 4]").replace("d: 8", "D: 64"))
    assert sorted({(c.problem.H, c.problem.d, c.problem.D) for c in suite.cases}) == [(2, 32, 64), (4, 16, 64)]
    assert suite.resolved["sweep"] == {"T": [32], "H": [2, 4], "D": [64]}


def test_filters(tmp_path):
    text = BASE + "impls: [reference, sdpa]\n"
    assert {c.problem.mechanism for c in load_text(tmp_path, text, only=["gqa"]).cases} == {"gqa"}
    assert {c.impl for c in load_text(tmp_path, text, impls=["sdpa"]).cases} == {"sdpa"}
    both = load_text(tmp_path, text, only=["mha"], impls=["reference"]).cases
    assert [(c.problem.mechanism, c.impl) for c in both] == [("mha", "reference")]


def test_filter_by_variant(tmp_path, monkeypatch):
    with_mechanism(monkeypatch, dataclasses.replace(registry.get("gqa"), variant_param="G"))
    text = BASE.replace("{G: 2}", "{G: [1, 2]}") + "impls: [reference]\n"
    suite = load_text(tmp_path, text, only=["gqa:2"])
    assert [(c.problem.mechanism, c.problem.params["G"]) for c in suite.cases] == [("gqa", 2)]
    assert "allowed: gqa, gqa:1, gqa:2, mha" in error_of(tmp_path, text, only=["gqa:3"])


def test_filter_by_aft_variant(tmp_path):
    text = "name: x\nmechanisms: [{name: aft, params: {variant: [simple, full]}}]\nsweep: {T: 16, H: 2, d: 8}\n"
    suite = load_text(tmp_path, text, only=["aft:simple"])
    assert {c.problem.params["variant"] for c in suite.cases} == {"simple"}


TWO_RANKS = (
    "name: x\nmechanisms: [{name: tpa, params: {R_k: [1, 2], R_v: 2}}]\n"
    "impls: [reference]\nsweep: {T: 16, H: 2, d: 8}\n"
)


def test_filter_by_parameters_in_a_bracket(tmp_path):
    """Two entries of one mechanism differing only in a non-variant parameter: the bracket picks one."""
    suite = load_text(tmp_path, TWO_RANKS, only=["tpa[R_k=2,R_v=2]"])
    assert {(c.problem.params["R_k"], c.problem.params["R_v"]) for c in suite.cases} == {(2, 2)}
    assert {c.problem.params["R_k"] for c in load_text(tmp_path, TWO_RANKS, only=["tpa"]).cases} == {1, 2}
    local = "name: x\nmechanisms: [{name: aft, params: {variant: local, window: [3, 5]}}]\nsweep: {T: 16, H: 2, d: 8}\n"
    suite = load_text(tmp_path, local, only=["aft:local[window=5,t_max=null]"])
    assert {c.problem.params["window"] for c in suite.cases} == {5}


def test_a_bracket_naming_an_unknown_parameter_or_value_is_an_error(tmp_path):
    assert "tpa has no parameter R_x" in error_of(tmp_path, TWO_RANKS, only=["tpa[R_x=2]"])
    assert "allowed: R_k, R_q, R_v, rope_base" in error_of(tmp_path, TWO_RANKS, only=["tpa[R_x=2]"])
    assert "matches no mechanism" in error_of(tmp_path, TWO_RANKS, only=["tpa[R_k=3]"])
    assert "PARAM=VALUE" in error_of(tmp_path, TWO_RANKS, only=["tpa[R_k]"])


def test_commas_inside_a_bracket_do_not_split_option_values():
    from attnbench.cli.run import split_values

    assert split_values(("mha,tpa[R_k=1,R_v=2]", "aft:local[window=5]")) == (
        "mha",
        "tpa[R_k=1,R_v=2]",
        "aft:local[window=5]",
    )


def test_a_mechanism_without_a_causal_form_gives_unsupported_cases(tmp_path):
    text = "name: x\nmechanisms: [{name: xca}]\nimpls: [reference]\ncausal: [false, true]\nsweep: {T: 16, H: 2, d: 8}\n"
    suite = load_text(tmp_path, text)
    by_causal = {c.problem.causal: c for c in suite.cases}
    assert by_causal[False].unsupported is None
    assert "causal" in by_causal[True].unsupported
    assert dict(by_causal[True].problem.params) == dict(registry.get("xca").problem(B=1, T=16, H=2, d=8).params)


def test_an_impl_without_a_mode_gives_unsupported_cases(tmp_path, monkeypatch):
    mha = registry.get("mha")
    forward_only = dataclasses.replace(mha.impl("sdpa"), name="sdpa_fwd", modes=frozenset({Mode.FWD}))
    with_mechanism(monkeypatch, dataclasses.replace(mha, impls=(*mha.impls, forward_only)))
    text = "name: x\nmechanisms: [{name: mha, impls: [sdpa, sdpa_fwd]}]\nmodes: [fwd, bwd]\nsweep: {T: 8, H: 1, d: 4}\n"
    suite = load_text(tmp_path, text)
    reasons = {(c.impl, c.mode.value): c.unsupported for c in suite.cases}
    assert reasons[("sdpa", "bwd")] is None and reasons[("sdpa_fwd", "fwd")] is None
    assert reasons[("sdpa_fwd", "bwd")] == "sdpa_fwd does not support mode bwd"


def test_seeds_are_stable_and_shared_by_the_impls_of_a_problem(tmp_path):
    first = load_text(tmp_path, ORDERED)
    again = load_text(tmp_path, ORDERED)
    assert [c.seed for c in first.cases] == [c.seed for c in again.cases]
    by_problem: dict = {}
    for case in first.cases:
        by_problem.setdefault((case.problem.describe(), case.dtype), set()).add(case.seed)
    assert all(len(seeds) == 1 for seeds in by_problem.values())
    assert len({seeds.pop() for seeds in by_problem.values()}) == len(by_problem)
    assert all(0 <= case.seed < 2**31 for case in first.cases)
