"""Softmax decoding: the KV cache is stored with its G key/value heads, never expanded to H, and read in place."""

from __future__ import annotations

import torch

from attnbench.mechanisms import registry


def test_the_gqa_cache_is_stored_with_g_heads_and_not_copied(seed):
    mechanism = registry.get("gqa")
    problem = mechanism.problem(B=2, T=13, H=6, d=10, causal=True, G=3)
    full = problem.with_(T=15)
    tensors = mechanism.make_tensors(full, torch.float32, "cpu", torch.Generator().manual_seed(seed))
    decoding = mechanism.impl("sdpa").load_decode()(problem, tensors, 2)
    assert decoding.kept["k"].shape == (2, 15, 3, 10) and decoding.kept["v"].shape == (2, 15, 3, 10)
    assert decoding.kept["k"].data_ptr() == tensors["k"].data_ptr()  # the cache is the tensor, not a copy
    assert decoding.kept_bytes == 2 * 2 * 15 * 3 * 10 * 4


def test_a_step_can_be_repeated(seed):
    """The timed step runs many times on the same cache: each run writes the same new entries, so every
    output is the same."""
    mechanism = registry.get("mqa")
    problem = mechanism.problem(B=1, T=21, H=4, d=6, causal=True)
    tensors = mechanism.make_tensors(problem.with_(T=24), torch.float64, "cpu", torch.Generator().manual_seed(seed))
    decoding = mechanism.impl("reference").load_decode()(problem, tensors, 3)
    first = decoding.step()
    torch.testing.assert_close(decoding.step(), first, rtol=0, atol=0)
    assert first.shape == (1, 3, 4, 6)
