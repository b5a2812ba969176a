"""Every mechanism's cost models (`flops`, `min_bytes`) against independent counts, parametrised from the registry.

A new mechanism is covered here without new test code: each of its `test_problems` is checked at the core and at
the layer level.

- FLOPs: `flops(problem).matmul` must equal what torch's `FlopCounterMode` counts (matmuls, convolutions, SDPA)
  while the reference runs, and in every mode what each implementation that runs here performs
  (`mode_flops(problem, mode, impl)`: twice the forward plus what it recomputes) must equal the count of its
  forward and backward. The convention (`mode_flops(problem, mode)`: the attention term's backward 2.5×) must
  equal the count of a fused SDPA implementation, whose backward recomputes the scores, wherever the model
  names an attention term. The count is taken on the non-causal form of each problem: a causal reference may
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
from torch.utils.flop_counter import (
    FlopCounterMode,
    conv_backward_flop,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

from attnbench.measure import numerics
from attnbench.mechanisms import common, registry
from attnbench.mechanisms.problem import DTYPES, TRAINING_MODES, Level, Mode

ATEN = torch.ops.aten


def _grouped_conv_backward(
    grad_out,
    x,
    w,
    bias,
    stride,
    padding,
    dilation,
    transposed,
    output_padding,
    groups,
    output_mask,
    out_shape=None,
    **kwargs,
):
    """torch's count of a convolution's backward, with the weight gradient of a grouped convolution divided by
    its groups: torch counts it as if every input channel met every output channel (`groups`× too many for a
    depthwise convolution; its forward and input-gradient counts are right)."""
    args = (grad_out, x, w, bias, stride, padding, dilation, transposed, output_padding, groups)
    inputs = conv_backward_flop(*args, [output_mask[0], False, False], out_val=out_shape)
    weights = conv_backward_flop(*args, [False, output_mask[1], False], out_val=out_shape)
    return inputs + weights // groups


# Corrections to FlopCounterMode: it has no formula for the CPU's fused SDPA kernel, counted here with torch's own
# formulas for the fused backends (a backward that computes the scores again, then the four gradient products),
# and it overcounts a grouped convolution's weight gradient.
COUNT_CORRECTIONS = {
    ATEN.convolution_backward: _grouped_conv_backward,
    ATEN._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *args, **kwargs: sdpa_flop_count(q, k, v),
    ATEN._scaled_dot_product_flash_attention_for_cpu_backward: (
        lambda grad, q, k, v, *args, **kwargs: sdpa_backward_flop_count(grad, q, k, v)
    ),
}

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


def _counted_in_mode(mechanism, impl, problem, mode: Mode, seed: int) -> int:
    """What FlopCounterMode counts for one call of `impl` in `mode`, in float64 (the forward of a `bwd` call runs
    outside the count)."""
    core = impl.load()
    tensors = numerics.make_inputs(mechanism, problem, "fp64", "cpu", seed, requires_grad=mode.needs_grad)
    counter = FlopCounterMode(display=False, custom_mapping=COUNT_CORRECTIONS)
    if mode is Mode.FWD:
        with counter, torch.no_grad():
            mechanism.apply(core, problem, tensors)
        return counter.get_total_flops()
    out = None if mode is Mode.FWD_BWD else mechanism.apply(core, problem, tensors)
    with counter:
        out = mechanism.apply(core, problem, tensors) if out is None else out
        torch.autograd.grad(out, list(tensors.values()), numerics.output_grad(out, seed), allow_unused=True)
    return counter.get_total_flops()


@pytest.mark.parametrize("mode", TRAINING_MODES)
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize(("name", "index"), list(_test_problems()))
def test_every_mode_matches_the_flop_counter_by_convention_and_as_run(name, index, level, mode, seed):
    """The reference, and each implementation that declares what its backward recomputes and runs here (not
    compiled, no kernel of our own), performs what the model says; the convention is what a fused SDPA
    implementation performs wherever the model names an attention term, and the reference's count where it
    names none. (A fast path that reassociates the products, as the example plug-in's, does other work than the
    model, which counts the reference's.)"""
    mechanism = registry.get(name)
    counted_form = {"causal": False} if False in mechanism.causal else {}
    problem = _problem(mechanism, index, level, **counted_form)
    counted = {
        impl.name: _counted_in_mode(mechanism, impl, problem, mode, seed)
        for impl in mechanism.impls
        if impl.name == "reference"
        or (impl.recompute is not None and not impl.needs and impl is not common.COMPILE_IMPL)
    }
    for impl_name, count in counted.items():
        assert mechanism.mode_flops(problem, mode, impl_name).matmul == count, f"{impl_name}: {problem.describe()}"
    convention = mechanism.mode_flops(problem, mode).matmul
    if mechanism.flops(problem).attention:
        fused = [impl.name for impl in mechanism.impls if impl.recompute is registry.flash_recompute]
        assert fused and fused[0] in counted, f"{name}: an attention term needs a fused implementation counted here"
        assert convention == counted[fused[0]], problem.describe()
    else:
        assert convention == counted["reference"], problem.describe()


def test_attention_backward_is_two_and_a_half_times_and_projections_twice():
    """The convention per term, at the layer level of MHA: attention `4·B·H·T²·d` forward and 2.5× that
    backward; the four `D×D` projections `8·B·T·D²` forward and 2× that backward."""
    mechanism = registry.get("mha")
    B, T, H, d = 2, 64, 4, 8
    problem = mechanism.problem(B=B, T=T, H=H, d=d, level=Level.LAYER)
    attention, projections = 4 * B * H * T**2 * d, 8 * B * T * (H * d) ** 2
    assert mechanism.flops_for(problem, Mode.FWD) == attention + projections
    assert mechanism.flops_for(problem, Mode.BWD) == 2.5 * attention + 2 * projections
    assert mechanism.flops_for(problem, Mode.BWD, "sdpa_math") == 2 * (attention + projections)
    assert mechanism.flops_for(problem, Mode.BWD, "sdpa") == mechanism.flops_for(problem, Mode.BWD)


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
        fwd, bwd, both = (mechanism.min_bytes(problem, mode, itemsize) for mode in TRAINING_MODES)
        where = f"{problem.describe()}, {itemsize}-byte elements"
        assert fwd >= itemsize * (used + outputs), f"{where}: the forward reads the inputs and writes the output"
        assert bwd >= itemsize * (outputs + used), f"{where}: the backward reads dY and writes the gradients"
        assert max(fwd, bwd) <= both <= fwd + bwd, where
