"""Softmax attention's reference: against naive loops (core and layer, values and gradients), the MHA/GQA/MQA
equivalences, and the query-blocked path that bounds its memory."""

from __future__ import annotations

import math

import pytest
import torch
from float64_checks import assert_close_with_grads

from attnbench.measure import numerics
from attnbench.mechanisms import registry
from attnbench.mechanisms.problem import Level
from attnbench.mechanisms.softmax import reference

MHA, GQA, MQA = registry.get("mha"), registry.get("gqa"), registry.get("mqa")


def naive_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """`softmax(q·k/√d) v` query by query and head by head; head h reads key/value head h // (H/G)."""
    B, T, H, d = q.shape
    G = k.shape[2]
    rows = []
    for b in range(B):
        for t in range(T):
            heads = []
            for h in range(H):
                g = h // (H // G)
                keys = range(t + 1) if causal else range(T)
                logits = torch.stack([q[b, t, h] @ k[b, s, g] / math.sqrt(d) for s in keys])
                weights = torch.softmax(logits, dim=0)
                heads.append(sum(w * v[b, s, g] for w, s in zip(weights, keys, strict=True)))
            rows.append(torch.stack(heads))
    return torch.stack(rows).view(B, T, H, d)


def naive_layer(problem, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    x, d = tensors["x"], problem.d
    B, T, _ = x.shape
    q = (x @ tensors["W_q"]).view(B, T, -1, d)
    k = (x @ tensors["W_k"]).view(B, T, -1, d)
    v = (x @ tensors["W_v"]).view(B, T, -1, d)
    return naive_core(q, k, v, problem.causal).reshape(B, T, -1) @ tensors["W_o"]


CASES = [
    (MHA, dict(B=2, T=7, H=3, d=5)),
    (GQA, dict(B=1, T=9, H=6, d=3, G=2)),
    (MQA, dict(B=2, T=5, H=4, d=6)),
    (MHA, dict(B=1, T=1, H=2, d=4)),
]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("mechanism", "shape"), CASES, ids=lambda c: getattr(c, "name", None))
def test_core_matches_naive_loops(mechanism, shape, causal, seed):
    problem = mechanism.problem(**shape, causal=causal)
    tensors = numerics.make_inputs(mechanism, problem, "fp64", "cpu", seed, requires_grad=True)
    assert_close_with_grads(
        lambda t: mechanism.reference(problem, t),
        lambda t: naive_core(t["q"], t["k"], t["v"], causal),
        tensors,
        seed,
    )


@pytest.mark.parametrize("causal", [False, True])
def test_layer_matches_naive_loops(causal, seed):
    problem = GQA.problem(B=2, T=6, H=4, d=3, G=2, causal=causal, level=Level.LAYER)
    tensors = numerics.make_inputs(GQA, problem, "fp64", "cpu", seed, requires_grad=True)
    assert_close_with_grads(lambda t: GQA.run_reference(problem, t), lambda t: naive_layer(problem, t), tensors, seed)


@pytest.mark.parametrize("causal", [False, True])
def test_gqa_with_g_equal_h_is_mha(causal, seed):
    mha = MHA.problem(B=2, T=11, H=4, d=5, causal=causal)
    gqa = GQA.problem(B=2, T=11, H=4, d=5, G=4, causal=causal)
    tensors = numerics.make_inputs(MHA, mha, "fp64", "cpu", seed, requires_grad=False)
    torch.testing.assert_close(GQA.reference(gqa, tensors), MHA.reference(mha, tensors), rtol=0, atol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_mqa_is_gqa_with_one_group(causal, seed):
    mqa = MQA.problem(B=2, T=11, H=4, d=5, causal=causal)
    gqa = GQA.problem(B=2, T=11, H=4, d=5, G=1, causal=causal)
    tensors = numerics.make_inputs(MQA, mqa, "fp64", "cpu", seed, requires_grad=False)
    assert tensors["k"].shape[2] == 1
    torch.testing.assert_close(MQA.reference(mqa, tensors), GQA.reference(gqa, tensors), rtol=0, atol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_gqa_equals_mha_on_repeated_key_value_heads(causal, seed):
    """Query head h reads key/value head h // (H/G): repeating each kv head H/G times gives MHA."""
    gqa = GQA.problem(B=1, T=13, H=6, d=4, G=3, causal=causal)
    tensors = numerics.make_inputs(GQA, gqa, "fp64", "cpu", seed, requires_grad=False)
    repeated = {
        "q": tensors["q"],
        "k": tensors["k"].repeat_interleave(2, dim=2),
        "v": tensors["v"].repeat_interleave(2, dim=2),
    }
    mha = MHA.problem(B=1, T=13, H=6, d=4, causal=causal)
    torch.testing.assert_close(GQA.reference(gqa, tensors), MHA.reference(mha, repeated), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("causal", [False, True])
def test_query_blocks_equal_one_block_forward_and_backward(causal, monkeypatch, seed):
    """A budget of a few score rows forces the blocked, checkpointed path; it must equal the one-block path."""
    problem = GQA.problem(B=2, T=23, H=4, d=3, G=2, causal=causal)
    tensors = numerics.make_inputs(GQA, problem, "fp64", "cpu", seed, requires_grad=True)
    whole = GQA.reference(problem, tensors)
    grad_out = torch.randn(whole.shape, dtype=whole.dtype, generator=torch.Generator().manual_seed(seed))
    whole_grads = torch.autograd.grad(whole, list(tensors.values()), grad_out)
    monkeypatch.setattr(reference, "SCORE_BUDGET", 2 * 4 * 23 * 5)  # 5 query rows per block: 5 blocks, last short
    blocked = GQA.reference(problem, tensors)
    blocked_grads = torch.autograd.grad(blocked, list(tensors.values()), grad_out)
    torch.testing.assert_close(blocked, whole, rtol=1e-13, atol=1e-14)
    for got, want in zip(blocked_grads, whole_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_blocked_reference_never_holds_all_scores(monkeypatch, seed):
    """With a budget of B·H·T·16 scores, no matmul may produce more than that many elements at once."""
    problem = MHA.problem(B=1, T=256, H=2, d=8)
    tensors = numerics.make_inputs(MHA, problem, "fp64", "cpu", seed, requires_grad=False)
    budget = 2 * 256 * 16
    monkeypatch.setattr(reference, "SCORE_BUDGET", budget)
    largest = 0
    real_matmul = torch.Tensor.__matmul__

    def spy(a, b):
        nonlocal largest
        out = real_matmul(a, b)
        largest = max(largest, out.numel())
        return out

    monkeypatch.setattr(torch.Tensor, "__matmul__", spy)
    MHA.reference(problem, tensors)
    assert 0 < largest <= budget
