"""TPA's decode cache: the factor cache measured from the tensors an implementation keeps, at the paper's shape
(H = 32, d = 64, bf16), against the KV caches of MHA, GQA-4 and MQA — the table of the TPA paper, reproduced
from tensors rather than from the formula."""

from __future__ import annotations

import pytest
import torch

from attnbench.mechanisms import registry

H, d, M, ITEMSIZE = 32, 64, 4096, 2  # the TPA paper's d_model 2048, bf16

# (mechanism, parameters) -> bytes per cached token and layer by the paper's formula, written out here.
PAPER_TABLE = {
    ("mha", ()): 2 * H * d * ITEMSIZE,
    ("gqa", (("G", 4),)): 2 * 4 * d * ITEMSIZE,
    ("mqa", ()): 2 * d * ITEMSIZE,
    ("tpa", (("R_k", 1), ("R_v", 1))): (1 + 1) * (H + d) * ITEMSIZE,
    ("tpa", (("R_k", 2), ("R_v", 2))): (2 + 2) * (H + d) * ITEMSIZE,
    ("tpa", (("R_k", 4), ("R_v", 4))): (4 + 4) * (H + d) * ITEMSIZE,
}


def measured_per_token(name: str, params: dict, impl: str = "reference", B: int = 2, q_len: int = 1) -> float:
    """Bytes the implementation keeps after one step, per cached token and sequence (meta tensors: nothing is
    allocated, the sizes are real)."""
    mechanism = registry.get(name)
    problem = mechanism.problem(B=B, T=M, H=H, d=d, causal=True, **params)
    full = problem.with_(T=M + q_len)
    tensors = mechanism.make_tensors(full, torch.bfloat16, "meta", None)
    decoding = mechanism.impl(impl).load_decode()(problem, tensors, q_len)
    return decoding.kept_bytes / (B * (M + q_len))


@pytest.mark.parametrize(("key", "expected"), PAPER_TABLE.items(), ids=[k[0] + str(dict(k[1])) for k in PAPER_TABLE])
def test_the_cache_per_token_is_the_papers(key, expected):
    name, params = key[0], {"R_q": 16, **dict(key[1])} if key[0] == "tpa" else dict(key[1])
    for impl in registry.get(name).impls:
        if impl.decode:
            assert measured_per_token(name, params, impl.name) == expected, impl.name
    problem = registry.get(name).problem(B=3, T=M, H=H, d=d, causal=True, **params)
    model = registry.get(name).cache_model(problem, ITEMSIZE)
    assert model.per_token == expected and model.total(M, 2) == 3 * expected * (M + 2)


def test_tpa_rank_one_keeps_a_21st_of_mha():
    mha = measured_per_token("mha", {})
    tpa = measured_per_token("tpa", {"R_q": 16, "R_k": 1, "R_v": 1})
    assert mha / tpa == pytest.approx(2 * H * d / (2 * (H + d)))  # 4096 / 96 = 21.3
    assert 21 < mha / tpa < 22


def test_the_factor_cache_holds_rotated_key_factors(seed):
    """The cached B_k is rotated at each token's own position (the prefill's and the step's)."""
    from attnbench.mechanisms.tpa.reference import rope_tables, rotate

    mechanism = registry.get("tpa")
    problem = mechanism.problem(B=1, T=9, H=3, d=8, causal=True, R_k=2)
    full = problem.with_(T=11)
    gen = torch.Generator().manual_seed(seed)
    tensors = mechanism.make_tensors(full, torch.float64, "cpu", gen)
    raw = tensors["B_k"].clone()
    decoding = mechanism.impl("reference").load_decode()(problem, tensors, 2)
    decoding.step()
    cos, sin = rope_tables(11, 8, base=10000, precision="exact", dtype=torch.float64, device="cpu")
    torch.testing.assert_close(decoding.kept["B_k"], rotate(raw, cos, sin))
