"""Causal AFT decoding: the running sums fold one token at a time exactly; AFT-simple keeps 3·H·d numbers and
AFT-local its window and those sums, whatever the cache length; AFT-full its whole K, V cache."""

from __future__ import annotations

import torch

from attnbench.mechanisms import registry
from attnbench.mechanisms.aft.decode import fold, running_sums


def test_folding_tokens_one_by_one_equals_the_sums_over_all(seed):
    gen = torch.Generator().manual_seed(seed)
    k = 30 * torch.randn(2, 19, 7, generator=gen, dtype=torch.float64)  # spread K: the running max moves a lot
    v = torch.randn(2, 19, 7, generator=gen, dtype=torch.float64)
    state = running_sums(k[:, :0], v[:, :0], torch.float64)  # empty: zeros and a max of -inf
    for t in range(19):
        state = fold(state, k[:, t], v[:, t])
    whole = running_sums(k, v, torch.float64)
    torch.testing.assert_close(state["max"], whole["max"], rtol=0, atol=0)
    torch.testing.assert_close(state["num"] / state["den"], whole["num"] / whole["den"], rtol=1e-12, atol=1e-12)


def _kept(variant: str, M: int, **params) -> tuple[int, int]:
    mechanism = registry.get("aft")
    problem = mechanism.problem(B=2, T=M, H=3, d=5, causal=True, variant=variant, **params)
    tensors = mechanism.make_tensors(problem.with_(T=M + 3), torch.bfloat16, "meta", None)
    decoding = mechanism.impl("reference").load_decode()(problem, tensors, 3)
    return decoding.kept_bytes, mechanism.cache_model(problem, 2).total(M, 3)


def test_what_each_variant_keeps():
    C = 3 * 5
    assert _kept("simple", 10) == _kept("simple", 900) == (2 * 3 * C * 4,) * 2
    window = 2 * 2 * C * 2 * (8 - 1 + 3) + 2 * 3 * C * 4  # K, V of 7 cached and 3 new tokens; the sums
    assert _kept("local", 8, window=8) == _kept("local", 900, window=8) == (window, window)
    assert _kept("full", 50) == (2 * 2 * C * 2 * 53,) * 2
