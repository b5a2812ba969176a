"""Every mechanism's cost models (`flops`, `min_bytes`) against independent counts, parametrised from the registry.

A new mechanism is covered here without new test code: each of its `test_problems` is checked at the core and at
the layer level.

- FLOPs: `flops(problem).matmul` must equal what torch's `FlopCounterMode` counts (matmuls, convolutions, SDPA)
  while the reference runs. The count is taken on the non-causal form of each problem: a causal reference may
  compute work that the model deliberately leaves out (the masked half of a causal softmax is computed and then
  discarded), so a causal model is instead bounded by its non-causal one and by the causal reference's count.
  Identities specific to one mechanism (causal softmax is exactly half) stay in its own tests.
- Bytes: a kernel must read every input element its output depends on and write every output element; a
  backward must read the output gradient and write a gradient for each of those input elements. Which input
  elements the output depends on is found by autograd, in float64: those with a nonzero gradient. Parameter
  vectors (one-dimensional: temperatures `[H]`, biases `[D]`) are left out of this count, as every model leaves
  them out: they are O(D) numbers against O(B·T·D).
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from attnbench.measure import numerics
from attnbench.mechanisms import registry
from attnbench.mechanisms.problem import DTYPES, Level, Mode

LEVELS = [Level.CORE, Level.LAYER]
ITEMSIZES = sorted({itemsize for _, itemsize, _ in DTYPES.values()})


def _test_problems(causal_only: bool = False):
    for mechanism in registry.mechanisms().values():
        for index, kwargs in enumerate(mechanism.test_problems):
            if causal_only and not kwargs.get("causal", False):
                continue
            yield pytest.param(mechanism.name, index, id=f"{mechanism.name}-{index}")


def _problem(mechanism, index: int, level: Level, **changes):
    return mechanism.problem(**{**mechanism.test_problems[index], **changes}, level=level)


def _counted_flops(mechanism, problem, seed: int) -> int:
    """What FlopCounterMode counts while the reference runs once, forward only, in float64."""
    tensors = numerics.make_inputs(mechanism, problem, "fp64", "cpu", seed, requires_grad=False)
    with FlopCounterMode(display=False) as counter:
        mechanism.run_reference(problem, tensors)
    return counter.get_total_flops()


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize(("name", "index"), list(_test_problems()))
def test_matmul_flops_match_the_flop_counter(name, index, level, seed):
    mechanism = registry.get(name)
    counted_form = {"causal": False} if False in mechanism.causal else {}
    problem = _problem(mechanism, index, level, **counted_form)
    assert mechanism.flops(problem).matmul == _counted_flops(mechanism, problem, seed), problem.describe()


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize(("name", "index"), list(_test_problems(causal_only=True)))
def test_causal_flops_are_between_half_and_all_of_the_non_causal(name, index, level, seed):
    """Causal restricts each token to the keys up to itself, at least half of the (query, key) pairs; and it
    never counts more than the causal reference computes."""
    mechanism = registry.get(name)
    causal = _problem(mechanism, index, level)
    causal_flops = mechanism.flops(causal)
    assert causal_flops.matmul <= _counted_flops(mechanism, causal, seed), causal.describe()
    if False not in mechanism.causal:
        return
    full_flops = mechanism.flops(_problem(mechanism, index, level, causal=False))
    for part in ("matmul", "total"):
        causal_part, full_part = getattr(causal_flops, part), getattr(full_flops, part)
        assert full_part <= 2 * causal_part and causal_part <= full_part, f"{causal.describe()}: {part}"


def _elements_read_and_written(mechanism, problem, seed: int) -> tuple[int, int]:
    """(input elements the output depends on, output elements) of one reference call, in float64."""
    tensors = numerics.make_inputs(mechanism, problem, "fp64", "cpu", seed, requires_grad=True)
    out = mechanism.run_reference(problem, tensors)
    grads = torch.autograd.grad(out, list(tensors.values()), numerics.output_grad(out, seed), allow_unused=True)
    used = sum(
        int(torch.count_nonzero(grad))
        for tensor, grad in zip(tensors.values(), grads, strict=True)
        if grad is not None and tensor.dim() > 1
    )
    return used, out.numel()


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize(("name", "index"), list(_test_problems()))
def test_min_bytes_cover_what_the_reference_reads_and_writes(name, index, level, seed):
    mechanism = registry.get(name)
    problem = _problem(mechanism, index, level)
    used, outputs = _elements_read_and_written(mechanism, problem, seed)
    assert used > 0
    for itemsize in ITEMSIZES:
        fwd, bwd, both = (mechanism.min_bytes(problem, mode, itemsize) for mode in Mode)
        where = f"{problem.describe()}, {itemsize}-byte elements"
        assert fwd >= itemsize * (used + outputs), f"{where}: the forward reads the inputs and writes the output"
        assert bwd >= itemsize * (outputs + used), f"{where}: the backward reads dY and writes the gradients"
        assert max(fwd, bwd) <= both <= fwd + bwd, where
