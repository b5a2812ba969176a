"""AFT's declarations: the cost models of each variant, the argument checks, the tensors of each variant and the
coverage of its test problems. The models against counted FLOPs and bytes are checked for every mechanism in
`test_cost_models.py`."""

from __future__ import annotations

import pytest
import torch

from attnbench.mechanisms import registry
from attnbench.mechanisms.aft.spec import BIAS, VARIANTS
from attnbench.mechanisms.problem import Level, Mode

AFT = registry.get("aft")
F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_flops_and_bytes_follow_the_models():
    simple = AFT.problem(B=2, T=64, H=4, d=8, variant="simple")
    C = simple.D
    assert AFT.flops(simple) == registry.FlopCount(matmul=0, other=8 * 2 * 64 * C)
    assert AFT.min_bytes(simple, Mode.FWD, 2) == 4 * 2 * 2 * 64 * C
    assert AFT.min_bytes(simple, Mode.BWD, 2) == 7 * 2 * 2 * 64 * C
    full = AFT.problem(B=2, T=64, H=4, d=8, variant="full")
    full_causal = full.with_(causal=True)
    assert AFT.flops(full).matmul == 4 * 2 * 64 * 64 * C
    assert AFT.flops(full_causal).matmul == 4 * 2 * C * 64 * 65 // 2
    local = AFT.problem(B=1, T=10, H=1, d=1, variant="local", window=3)
    pairs = sum(1 for t in range(10) for t2 in range(10) if abs(t - t2) < 3)
    causal_pairs = sum(1 for t in range(10) for t2 in range(t + 1) if t - t2 < 3)
    assert AFT.flops(local).other == 8 * 10 + 4 * pairs
    assert AFT.flops(local.with_(causal=True)).other == 8 * 10 + 4 * causal_pairs
    assert AFT.min_bytes(local, Mode.FWD, 4) == 4 * (4 * 10 + pairs)
    for problem in (simple, full, local):
        layer = problem.with_(level=Level.LAYER)
        assert AFT.min_bytes(layer, Mode.FWD_BWD, 2) > AFT.min_bytes(problem, Mode.FWD_BWD, 2)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(T=8, variant="local", window=9), "window"),
        (dict(T=16, variant="conv", window=9), "window"),  # side 4: at most 7
        (dict(T=16, variant="conv", window=4), "window"),  # even
        (dict(T=8, variant="full", t_max=7), "t_max"),
        (dict(T=8, variant="local", window=2, t_max=5), "t_max"),
        (dict(T=8, variant="attention"), "variant"),
        (dict(T=10, variant="conv", window=3), "T"),
        (dict(T=8, variant="local", window=0), "window"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        AFT.problem(B=1, H=2, d=4, **kwargs)


def test_causal_conv_is_unsupported_and_unused_params_are_ignored():
    with pytest.raises(registry.Unsupported, match="conv"):
        AFT.problem(B=1, T=16, H=2, d=4, causal=True, variant="conv", window=3)
    # window and t_max only constrain the variants that use them.
    AFT.problem(B=1, T=2, H=2, d=4, variant="simple", window=9, t_max=1)
    AFT.problem(B=1, T=2, H=2, d=4, variant="full", window=9)
    AFT.problem(B=1, T=4, H=2, d=4, variant="conv", window=3, t_max=1)


def test_tensors_of_every_variant():
    shapes = {"full": (12, 12), "local": (12, 5), "conv": (2, 3, 3)}
    for variant in VARIANTS:
        problem = AFT.problem(B=1, T=9, H=2, d=4, variant=variant, window=3, t_max=None if variant == "conv" else 12)
        core = AFT.make_tensors(problem, F64, "cpu", _gen(0))
        assert core["k"].shape == (1, 9, 2, 1 if variant == "conv" else 4)
        bias = BIAS.get(variant)
        assert set(core) == {"q", "k", "v"} | ({bias} if bias else set())
        if bias:
            assert core[bias].shape == shapes[variant]
            assert 0.05 < core[bias].std() < 0.2  # N(0, 0.1²), never 0
        layer = AFT.make_tensors(problem.with_(level=Level.LAYER), F64, "cpu", _gen(0))
        assert layer["W_k"].shape == (8, 2 if variant == "conv" else 8)
        projected = AFT.project(problem, layer)
        assert set(projected) == set(core) and projected["k"].shape == core["k"].shape


def test_test_problems_cover_every_variant():
    problems = [AFT.problem(**kwargs) for kwargs in AFT.test_problems]
    for variant in VARIANTS:
        mine = [p for p in problems if p.params["variant"] == variant]
        assert len(mine) >= 3
        assert any(p.T % 2 for p in mine) and any(p.B == 1 for p in mine) and any(p.T == 1 for p in mine)
        assert {p.causal for p in mine} == ({False} if variant == "conv" else {False, True})
