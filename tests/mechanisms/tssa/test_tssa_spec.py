"""TSSA's declarations: its cost models (no matmul in the core, three passes over `w`), the argument checks and
the tensors it draws. The models against counted FLOPs and bytes are checked for every mechanism in
`test_cost_models.py`."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from attnbench.measure import numerics
from attnbench.mechanisms import registry
from attnbench.mechanisms.problem import Level, Mode

MECH = registry.get("tssa")


@pytest.mark.parametrize("level", [Level.CORE, Level.LAYER])
def test_flops_model_has_no_core_matmul_causal_or_not(level, seed):
    """Every step of the core is element-wise or a reduction: `15·B·T·D` element-wise FLOPs and no matmul; the
    layer adds its two `D×D` projections. The causal form is prefix sums, not a mask, so the counter agrees on
    the causal reference too (the generic test counts only the non-causal form)."""
    for causal in (False, True):
        problem = MECH.problem(B=2, T=7, H=3, d=5, causal=causal, level=level)
        counted = MECH.flops(problem)
        assert counted.other == 15 * problem.B * problem.T * problem.D
        assert counted.matmul == (4 * problem.B * problem.T * problem.D**2 if level is Level.LAYER else 0)
    tensors = numerics.make_inputs(MECH, problem, "fp32", "cpu", seed, requires_grad=False)
    with FlopCounterMode(display=False) as counter:
        MECH.run_reference(problem, tensors)
    assert counted.matmul == counter.get_total_flops()


def test_min_bytes_model():
    problem = MECH.problem(B=2, T=64, H=4, d=8)
    s, BTD, BHT = 2, 2 * 64 * 32, 2 * 4 * 64
    assert MECH.min_bytes(problem, Mode.FWD, s) == s * BTD * 4 + 4 * BHT
    assert MECH.min_bytes(problem, Mode.BWD, s) == s * BTD * 7 + 4 * BHT * 5
    assert MECH.min_bytes(problem, Mode.FWD_BWD, s) == s * BTD * 11 + 4 * BHT * 6
    layer = problem.with_(level=Level.LAYER)
    assert MECH.min_bytes(layer, Mode.FWD, s) > MECH.min_bytes(problem, Mode.FWD, s)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(T=8, causal=True, t_max=7), "t_max"),
        (dict(T=8, causal=True, t_max=0), "t_max"),
        (dict(T=8, causal=True, t_max=2.5), "t_max"),
        (dict(T=8, causal=True, t_max=True), "t_max"),
        (dict(T=0), "T"),
        (dict(T=8, window=3), "window"),
    ],
)
def test_bad_arguments_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MECH.problem(**{"B": 1, "H": 2, "d": 4, **kwargs})


def test_t_max_is_ignored_without_causal():
    problem = MECH.problem(B=1, T=8, H=2, d=4, t_max=4)
    assert "beta" not in MECH.make_tensors(problem, torch.float64, "cpu", None)


def test_make_tensors_shapes_and_draws():
    problem = MECH.problem(B=2, T=5, H=3, d=4, causal=True, t_max=11, level=Level.LAYER)
    tensors = MECH.make_tensors(problem, torch.float32, "cpu", torch.Generator().manual_seed(0))
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    D = 12
    assert shapes == {
        "x": (2, 5, D),
        "W_in": (D, D),
        "b_in": (D,),
        "W_o": (D, D),
        "b_o": (D,),
        "temp": (3,),
        "beta": (3, 11),
    }
    assert not torch.equal(tensors["temp"], torch.ones(3)) and (tensors["temp"] - 1).abs().max() < 0.5
    meta = MECH.make_tensors(problem.with_(level=Level.CORE), torch.bfloat16, "meta", None)
    assert {n: tuple(t.shape) for n, t in meta.items()} == {"w": (2, 5, 3, 4), "temp": (3,), "beta": (3, 11)}
