"""XCA's declarations: the cost models and the non-causal restriction. The models against counted FLOPs and bytes
are checked for every mechanism in `test_cost_models.py`."""

from __future__ import annotations

import pytest

from attnbench.mechanisms import registry
from attnbench.mechanisms.problem import Level, Mode

XCA = registry.get("xca")


def test_causal_is_unsupported():
    with pytest.raises(registry.Unsupported, match="xca has no causal form"):
        XCA.problem(B=1, T=8, H=2, d=4, causal=True)
    causal = XCA.problem(B=1, T=8, H=2, d=4).with_(causal=True)
    for impl in XCA.impls:
        assert "no causal form" in impl.unsupported_reason(causal, Mode.FWD, "fp32")


def test_flops_and_bytes_follow_the_models():
    """Core `4·B·T·D·d` (Gram and map, `2·B·T·D·d` each), layer `+ 8·B·T·D²`; bytes `s·B·T·D` times 4 forward
    (read q, k, v, write O) and 7 backward (read q, k, v, dO, write dq, dk, dv)."""
    B, T, H, d, s = 2, 40, 3, 8, 2
    D = H * d
    core = XCA.problem(B=B, T=T, H=H, d=d)
    layer = core.with_(level=Level.LAYER)
    assert XCA.flops(core).matmul == 4 * B * T * D * d
    assert XCA.flops(layer).matmul == 4 * B * T * D * d + 8 * B * T * D**2
    assert XCA.min_bytes(core, Mode.FWD, s) == 4 * s * B * T * D
    assert XCA.min_bytes(core, Mode.BWD, s) == 7 * s * B * T * D
