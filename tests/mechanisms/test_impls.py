"""Every registered implementation against its mechanism's reference, parametrised from the registry.

A new mechanism or implementation is covered here without new test code: declare `test_problems` in its spec.
Forward and backward (gradients of every input and learned parameter), at both levels, in fp32 on the CPU
(Triton kernels under TRITON_INTERPRET=1, also fp16); a GPU-marked variant repeats it in bf16 on a GPU. The
references themselves are checked in `test_references.py`, the cost models in `test_cost_models.py`.
"""

from __future__ import annotations

import pytest

from attnbench.measure import numerics
from attnbench.mechanisms import registry
from attnbench.mechanisms.problem import Level, Mode

CPU_SKIPS = {"compile"}  # compiled once per mechanism below: inductor on a 2-core CPU costs ~10 s a shape


def _cases():
    for mechanism, impl in registry.all_impls():
        if impl.name == "reference":
            continue
        for index, kwargs in enumerate(mechanism.test_problems):
            if impl.name in CPU_SKIPS and index > 0:
                continue
            if kwargs.get("causal", False) not in impl.causal:
                continue
            yield pytest.param(mechanism.name, impl.name, index, id=f"{mechanism.name}-{impl.name}-{index}")


@pytest.mark.parametrize(("mechanism_name", "impl_name", "index"), list(_cases()))
@pytest.mark.parametrize("level", [Level.CORE, Level.LAYER])
def test_impl_matches_reference(mechanism_name, impl_name, index, level, seed):
    mechanism = registry.get(mechanism_name)
    impl = mechanism.impl(impl_name)
    reason = impl.unavailable_reason("cpu")
    if reason:
        pytest.skip(reason)
    if impl.name in CPU_SKIPS and level is Level.LAYER:
        pytest.skip("compile is checked at the core level on the CPU")
    problem = mechanism.problem(**mechanism.test_problems[index], level=level)
    dtypes = ["fp32", "fp16"] if "triton" in impl.needs else ["fp32"]
    for dtype in dtypes:
        unsupported = impl.unsupported_reason(problem, Mode.FWD_BWD, dtype)
        if unsupported:
            pytest.skip(unsupported)
        result = numerics.compare(mechanism, impl.load(), problem, dtype, "cpu", mode=Mode.FWD_BWD, seed=seed)
        assert result.ok, f"{problem.describe()} {impl.name} {dtype}: {result}"


@pytest.mark.gpu
@pytest.mark.parametrize(("mechanism_name", "impl_name", "index"), list(_cases()))
def test_impl_matches_reference_bf16_gpu(mechanism_name, impl_name, index, seed):
    mechanism = registry.get(mechanism_name)
    impl = mechanism.impl(impl_name)
    reason = impl.unavailable_reason("cuda")
    if reason:
        pytest.skip(reason)
    problem = mechanism.problem(**mechanism.test_problems[index])
    unsupported = impl.unsupported_reason(problem, Mode.FWD_BWD, "bf16")
    if unsupported:
        pytest.skip(unsupported)
    result = numerics.compare(mechanism, impl.load(), problem, "bf16", "cuda", mode=Mode.FWD_BWD, seed=seed)
    assert result.ok, f"{problem.describe()} {impl.name} bf16: {result}"
