"""Softmax attention's declarations: the cost-model identities of the FlashAttention convention and the argument
checks. The models against counted FLOPs and bytes are checked for every mechanism in `test_cost_models.py`."""

from __future__ import annotations

import pytest

from attnbench.mechanisms import registry
from attnbench.mechanisms.problem import Level, Mode

MHA, GQA, MQA = registry.get("mha"), registry.get("gqa"), registry.get("mqa")


def test_causal_flops_are_half():
    full = MHA.problem(B=2, T=64, H=4, d=8)
    assert MHA.flops(full.with_(causal=True)).matmul * 2 == MHA.flops(full).matmul


def test_flops_and_bytes_follow_the_flash_attention_models():
    """Core `4·B·H·T²·d`, backward 2.5 times that; flash bytes `s·B·T·d·(2H + 2G)` plus the fp32 log-sum-exp
    forward, `s·B·T·d·(4H + 4G)` plus the log-sum-exp backward."""
    B, T, H, d, G, s = 2, 64, 6, 8, 2, 2
    problem = GQA.problem(B=B, T=T, H=H, d=d, G=G)
    assert GQA.flops(problem).matmul == 4 * B * H * T**2 * d and GQA.flops(problem).other == 0
    assert GQA.flops_for(problem, Mode.BWD) == int(2.5 * 4 * B * H * T**2 * d)
    lse = 4 * B * H * T
    assert GQA.min_bytes(problem, Mode.FWD, s) == s * B * T * d * (2 * H + 2 * G) + lse
    assert GQA.min_bytes(problem, Mode.BWD, s) == s * B * T * d * (4 * H + 4 * G) + lse


def test_fewer_key_value_heads_cost_fewer_projection_flops_and_bytes():
    shape = dict(B=2, T=32, H=4, d=8, level=Level.LAYER)
    mha, gqa, mqa = MHA.problem(**shape), GQA.problem(**shape, G=2), MQA.problem(**shape)
    assert MHA.flops(mha).matmul > GQA.flops(gqa).matmul > MQA.flops(mqa).matmul
    assert MHA.min_bytes(mha, Mode.FWD, 2) > GQA.min_bytes(gqa, Mode.FWD, 2) > MQA.min_bytes(mqa, Mode.FWD, 2)
    assert GQA.derived(gqa) == {"G": 2} and MQA.derived(mqa) == {"G": 1} and MHA.derived(mha) == {"G": 4}


@pytest.mark.parametrize(
    ("mechanism", "kwargs", "name"),
    [
        (GQA, dict(B=1, T=8, H=6, d=4, G=4), "G"),
        (GQA, dict(B=1, T=8, H=6, d=4, G=0), "G"),
        (MHA, dict(B=1, T=0, H=2, d=4), "T"),
        (MHA, dict(B=1, T=8, H=0, d=4), "H"),
        (MQA, dict(B=0, T=8, H=2, d=4), "B"),
    ],
)
def test_bad_arguments_raise_naming_them(mechanism, kwargs, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        mechanism.problem(**kwargs)
