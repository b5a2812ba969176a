"""The accuracy verdict: fixed per-dtype tolerances, with the reference's own low-precision error as a floor."""

from __future__ import annotations

import math

import torch

from attnbench.measure import numerics
from attnbench.mechanisms import registry
from attnbench.mechanisms.problem import Mode


def test_a_wrong_result_fails_and_says_why(seed):
    mechanism = registry.get("mha")
    problem = mechanism.problem(B=1, T=9, H=2, d=6)

    def off_by_a_little(problem, tensors):
        return mechanism.reference(problem, tensors) * 1.01

    result = numerics.compare(mechanism, off_by_a_little, problem, "fp32", "cpu", seed=seed)
    assert not result.ok
    assert "out: relative L2 error" in result.explain() and "beyond" in result.explain()


def test_nan_anywhere_fails(seed):
    mechanism = registry.get("mha")
    problem = mechanism.problem(B=1, T=9, H=2, d=6)

    def poisons_one_element(problem, tensors):
        out = mechanism.reference(problem, tensors)
        poison = torch.zeros_like(out).flatten()
        poison[3] = math.nan
        return out + poison.view_as(out)

    result = numerics.compare(mechanism, poisons_one_element, problem, "fp32", "cpu", mode=Mode.FWD_BWD, seed=seed)
    assert not result.ok and math.isnan(result.rel_err)


def test_near_zero_gradients_pass_when_the_reference_itself_is_no_better(seed):
    """XCA at T = 1: q̂ = sign(q), so the exact dq is ~0 and any rounding is a huge relative error."""
    mechanism = registry.get("xca")
    problem = mechanism.problem(B=1, T=1, H=3, d=12)
    result = numerics.compare(mechanism, mechanism.reference, problem, "fp32", "cpu", mode=Mode.FWD_BWD, seed=seed)
    assert result.per_tensor["dq"] > result.tolerance
    assert result.ok and "within" in result.explain()


def test_errors_are_relative_l2_and_max_abs():
    expected = torch.tensor([3.0, 4.0], dtype=torch.float64)
    rel, abs_err = numerics.errors(torch.tensor([3.0, 4.5]), expected)
    assert math.isclose(rel, 0.1) and math.isclose(abs_err, 0.5)
