"""TPA's declarations: the cost-model identities and the argument checks. The models against counted FLOPs and
bytes are checked for every mechanism in `test_cost_models.py`."""

from __future__ import annotations

import pytest

from attnbench.mechanisms import registry
from attnbench.mechanisms.problem import Level

TPA = registry.get("tpa")


@pytest.mark.parametrize("level", [Level.CORE, Level.LAYER])
def test_causal_saves_half_of_the_attention_flops_only(level):
    """Causal halves the `4·B·H·T²·d` attention; forming Q, K, V and the projections cost the same."""
    for kwargs in TPA.test_problems:
        problem = TPA.problem(**{**kwargs, "causal": False}, level=level)
        causal = problem.with_(causal=True)
        attention = 4 * problem.B * problem.H * problem.T**2 * problem.d
        assert TPA.flops(problem).matmul - TPA.flops(causal).matmul == attention // 2


def test_kv_cache_per_token_counts_the_key_and_value_factors():
    """`(R_k + R_v)·(H + d)` elements per token, against `2·H·d` for MHA: 192 against 4096 at H=32, d=64, R=1."""
    problem = TPA.problem(B=1, T=4, H=32, d=64, R_k=1, R_v=1)
    assert TPA.derived(problem) == {"kv_cache_per_token": 192}


@pytest.mark.parametrize("rank", ["R_q", "R_k", "R_v"])
def test_rank_zero_is_rejected_by_name(rank):
    with pytest.raises(ValueError, match=rank):
        TPA.problem(B=1, T=4, H=2, d=4, **{rank: 0})


def test_odd_head_dim_is_rejected():
    with pytest.raises(ValueError, match="d=5"):
        TPA.problem(B=1, T=4, H=2, d=5)
