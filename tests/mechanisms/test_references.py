"""Every mechanism's reference, checked in float64 from what the registry declares: no mechanism-specific code.

At the layer level the only tensor with a batch or a token axis is the input `x [B,T,D]`; everything else is a
learned weight shared by every row and token. That makes two properties checkable for any mechanism, in value
and in every gradient: batch rows do not interact, and a causal output at token t does not depend on later
tokens. Each mechanism's own tests (`tests/mechanisms/<name>/`) check its reference against a naive formulation.
"""

from __future__ import annotations

import pytest
import torch
from float64_checks import assert_close_with_grads

from attnbench.measure import numerics
from attnbench.mechanisms import registry
from attnbench.mechanisms.problem import TRAINING_MODES, Level


def _test_problems():
    for mechanism in registry.mechanisms().values():
        for index in range(len(mechanism.test_problems)):
            yield pytest.param(mechanism.name, index, id=f"{mechanism.name}-{index}")


@pytest.mark.parametrize("name", list(registry.mechanisms()))
def test_every_mechanism_declares_what_the_runner_needs(name):
    mechanism = registry.get(name)
    assert mechanism.complexity in ("linear", "quadratic")
    assert mechanism.paper.startswith("https://")
    assert "reference" in mechanism.impl_names and "compile" in mechanism.impl_names
    assert mechanism.test_problems, "declare small awkward test_problems"
    assert any(kw["T"] % 2 for kw in mechanism.test_problems), "test an odd T"
    for kwargs in mechanism.test_problems:
        problem = mechanism.problem(**kwargs)
        for mode in TRAINING_MODES:
            assert mechanism.flops_for(problem, mode) >= 0
            assert mechanism.min_bytes(problem, mode, 2) > 0


@pytest.mark.parametrize("name", list(registry.mechanisms()))
def test_reference_is_exact_in_float64(name, seed):
    """The reference is dtype-generic: its layer runs end to end in float64, with the declared output shape."""
    mechanism = registry.get(name)
    for kwargs in mechanism.test_problems:
        problem = mechanism.problem(**kwargs, level=Level.LAYER)
        tensors = numerics.make_inputs(mechanism, problem, "fp64", "cpu", seed, requires_grad=False)
        out = mechanism.run_reference(problem, tensors)
        assert out.dtype == torch.float64
        assert out.shape == (problem.B, problem.T, problem.D) or out.shape[:2] == (problem.B, problem.T)
        assert torch.isfinite(out).all()


def _layer_inputs(mechanism, problem, seed: int) -> dict[str, torch.Tensor]:
    tensors = numerics.make_inputs(mechanism, problem, "fp64", "cpu", seed, requires_grad=True)
    assert tensors["x"].shape == (problem.B, problem.T, problem.D), "the layer input is x [B,T,D]"
    return tensors


@pytest.mark.parametrize(("name", "index"), list(_test_problems()))
def test_batch_rows_are_independent(name, index, seed):
    """Each batch row alone gives its row of the batched layer, and the weights' gradients are the sums of the
    rows' gradients: no sum or maximum runs over the batch axis."""
    mechanism = registry.get(name)
    problem = mechanism.problem(**mechanism.test_problems[index], level=Level.LAYER)
    if problem.B == 1:
        pytest.skip("one batch row")
    row = problem.with_(B=1)

    def row_by_row(tensors):
        rows = [mechanism.run_reference(row, {**tensors, "x": tensors["x"][b : b + 1]}) for b in range(problem.B)]
        return torch.cat(rows)

    def batched(tensors):
        return mechanism.run_reference(problem, tensors)

    assert_close_with_grads(row_by_row, batched, _layer_inputs(mechanism, problem, seed), seed)


@pytest.mark.parametrize(("name", "index"), list(_test_problems()))
def test_causal_outputs_do_not_see_later_tokens(name, index, seed):
    """A causal layer run on the first tokens alone gives the first rows of the full run, and the later tokens
    get no gradient from them."""
    mechanism = registry.get(name)
    kwargs = mechanism.test_problems[index]
    if not kwargs.get("causal", False) or kwargs["T"] < 2:
        pytest.skip("needs a causal problem with at least two tokens")
    problem = mechanism.problem(**kwargs, level=Level.LAYER)
    prefix = mechanism.problem(**{**kwargs, "T": (problem.T + 1) // 2}, level=Level.LAYER)

    def on_the_prefix(tensors):
        return mechanism.run_reference(prefix, {**tensors, "x": tensors["x"][:, : prefix.T]})

    def first_rows_of_the_whole(tensors):
        return mechanism.run_reference(problem, tensors)[:, : prefix.T]

    assert_close_with_grads(on_the_prefix, first_rows_of_the_whole, _layer_inputs(mechanism, problem, seed), seed)
