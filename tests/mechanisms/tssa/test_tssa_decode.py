"""Causal TSSA decoding: the recurrent state of H·(2d+1) numbers, advanced one token at a time from an empty
prefix, reproduces every row of the causal reference; its size does not depend on the cache length."""

from __future__ import annotations

import pytest
import torch

from attnbench.mechanisms import registry
from attnbench.mechanisms.tssa.decode import advance, prefill
from attnbench.mechanisms.tssa.reference import tssa


def test_token_by_token_equals_the_causal_reference(seed):
    gen = torch.Generator().manual_seed(seed)
    B, T, H, d = 2, 23, 5, 7
    w = torch.randn(B, T, H, d, generator=gen, dtype=torch.float64)
    temp = 1 + 0.1 * torch.randn(H, generator=gen, dtype=torch.float64)
    beta = 0.1 * torch.randn(H, T, generator=gen, dtype=torch.float64)
    truth = tssa(w, temp, beta, causal=True)
    state = prefill(w[:, :1], temp, beta[:, :1])
    rows = [truth[:, :1]]
    for t in range(1, T):
        out, state = advance(state, w[:, t : t + 1], temp, beta[:, t : t + 1])
        rows.append(out)
    torch.testing.assert_close(torch.cat(rows, dim=1), truth, rtol=1e-12, atol=1e-12)
    # and a prefix of 17 tokens then 6 at once: the same rows
    out, _ = advance(prefill(w[:, :17], temp, beta[:, :17]), w[:, 17:], temp, beta[:, 17:])
    torch.testing.assert_close(out, truth[:, 17:], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("dtype", "itemsize", "state_itemsize"), [("bf16", 2, 4), ("fp32", 4, 4), ("fp64", 8, 8)])
def test_the_state_is_h_times_2d_plus_1_numbers_whatever_m(dtype, itemsize, state_itemsize):
    from attnbench.mechanisms.problem import torch_dtype

    mechanism = registry.get("tssa")
    sizes = set()
    for M in (5, 300):
        problem = mechanism.problem(B=3, T=M, H=4, d=6, causal=True)
        tensors = mechanism.make_tensors(problem.with_(T=M + 2), torch_dtype(dtype), "meta", None)
        decoding = mechanism.impl("reference").load_decode()(problem, tensors, 2)
        sizes.add(decoding.kept_bytes)
        assert mechanism.cache_model(problem, itemsize).total(M, 2) == decoding.kept_bytes
    assert sizes == {3 * 4 * (2 * 6 + 1) * state_itemsize}
