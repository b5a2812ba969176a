"""TPA's reference: against a naive loop formulation (core and layer, values and gradients), the identities that
tie it to MHA and MQA, and the authors' rotary (its sign, relative positions, its bf16 tables)."""

from __future__ import annotations

import math

import pytest
import torch
from float64_checks import assert_close_with_grads

from attnbench.measure import numerics
from attnbench.mechanisms import registry
from attnbench.mechanisms.problem import Level
from attnbench.mechanisms.tpa.reference import qkv, rope_tables, rotate

TPA = registry.get("tpa")
FACTOR_NAMES = ("A_q", "B_q", "A_k", "B_k", "A_v", "B_v")


def naive_rope(x: torch.Tensor, position: int, base: float) -> torch.Tensor:
    """One vector `x [d]` rotated by the authors' −θ rule, one frequency pair at a time."""
    d = x.shape[0]
    half = d // 2
    first, second = [], []
    for i in range(half):
        theta = position * base ** (-2 * i / d)
        c, s = math.cos(theta), math.sin(theta)
        first.append(x[i] * c + x[i + half] * s)
        second.append(-x[i] * s + x[i + half] * c)
    return torch.stack(first + second)


def naive_core(factors: dict[str, torch.Tensor], causal: bool, base: float = 10000) -> torch.Tensor:
    """TPA by explicit loops over batch, tokens and heads: `[B,T,H,d]`."""
    B, T, H, _ = factors["A_q"].shape
    d = factors["B_q"].shape[-1]
    out = []
    for b in range(B):
        formed = {}
        for part in "qkv":
            A, Bf = factors[f"A_{part}"][b], factors[f"B_{part}"][b]  # (T, H, R), (T, R, d)
            rank = A.shape[-1]
            rows = []
            for t in range(T):
                basis = [Bf[t, r] if part == "v" else naive_rope(Bf[t, r], t, base) for r in range(rank)]
                rows.append([sum(A[t, h, r] * basis[r] for r in range(rank)) / rank for h in range(H)])
            formed[part] = rows
        q, k, v = formed["q"], formed["k"], formed["v"]
        per_token = []
        for i in range(T):
            heads = []
            for h in range(H):
                keys = range(i + 1) if causal else range(T)
                scores = torch.stack([q[i][h] @ k[j][h] for j in keys]) / math.sqrt(d)
                weights = torch.softmax(scores, dim=0)
                heads.append(sum(w * v[j][h] for w, j in zip(weights, keys, strict=True)))
            per_token.append(torch.stack(heads))
        out.append(torch.stack(per_token))
    return torch.stack(out)


def naive_layer(problem, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """The layer with the factor maps applied token by token, then `naive_core`, then `W_o`."""
    x, H, d = tensors["x"], problem.H, problem.d
    factors = {}
    for part in "qkv":
        rank = problem.params[f"R_{part}"]
        W_A, W_B = tensors[f"W_A{part}"], tensors[f"W_B{part}"]
        factors[f"A_{part}"] = _per_token(problem, lambda b, t, W=W_A, r=rank: (x[b, t] @ W).view(H, r))
        factors[f"B_{part}"] = _per_token(problem, lambda b, t, W=W_B, r=rank: (x[b, t] @ W).view(r, d))
    core = naive_core(factors, problem.causal, problem.params["rope_base"])
    return _per_token(problem, lambda b, t: core[b, t].reshape(-1) @ tensors["W_o"])


def _per_token(problem, fn) -> torch.Tensor:
    """`fn(b, t)` for every batch row and token, stacked `[B, T, ...]`."""
    return torch.stack([torch.stack([fn(b, t) for t in range(problem.T)]) for b in range(problem.B)])


def _inputs(problem, seed: int) -> dict[str, torch.Tensor]:
    return numerics.make_inputs(TPA, problem, "fp64", "cpu", seed, requires_grad=True)


@pytest.mark.parametrize("causal", [False, True])
def test_core_matches_naive_loops(causal, seed):
    problem = TPA.problem(B=2, T=5, H=3, d=6, causal=causal, R_q=3, R_k=2, R_v=2)
    assert_close_with_grads(
        lambda t: TPA.reference(problem, t), lambda t: naive_core(t, causal), _inputs(problem, seed), seed
    )


@pytest.mark.parametrize("causal", [False, True])
def test_layer_matches_naive_loops(causal, seed):
    problem = TPA.problem(B=1, T=4, H=2, d=4, causal=causal, R_q=2, R_k=1, R_v=3, level=Level.LAYER)
    assert_close_with_grads(
        lambda t: TPA.run_reference(problem, t), lambda t: naive_layer(problem, t), _inputs(problem, seed), seed
    )


def _rotated(x: torch.Tensor, base: float = 10000) -> torch.Tensor:
    """`x [B,T,R,d]` with every vector rotated by `naive_rope` at its token's position."""
    B, T, R, _ = x.shape
    rows = [[torch.stack([naive_rope(x[b, t, r], t, base) for r in range(R)]) for t in range(T)] for b in range(B)]
    return torch.stack([torch.stack(row) for row in rows])


@pytest.mark.parametrize("causal", [False, True])
def test_one_hot_head_factors_give_mha(causal, seed):
    """Non-contextual A with `a_i = H·e_i` (rank H): head h reads feature factor h, so TPA is MHA on the
    rotated B factors."""
    B, T, H, d = 2, 9, 3, 8
    problem = TPA.problem(B=B, T=T, H=H, d=d, causal=causal, R_q=H, R_k=H, R_v=H)
    tensors = numerics.make_inputs(TPA, problem, "fp64", "cpu", seed, requires_grad=False)
    one_hot = (H * torch.eye(H, dtype=torch.float64)).expand(B, T, H, H)
    tensors |= {"A_q": one_hot, "A_k": one_hot, "A_v": one_hot}
    mha = registry.get("mha")
    expected = mha.reference(
        mha.problem(B=B, T=T, H=H, d=d, causal=causal),
        {"q": _rotated(tensors["B_q"]), "k": _rotated(tensors["B_k"]), "v": tensors["B_v"]},
    )
    torch.testing.assert_close(TPA.reference(problem, tensors), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_rank_one_shared_head_factors_give_mqa(causal, seed):
    """`R_k = R_v = 1` with `a = 1_H`: every head reads the same key and value, which is MQA."""
    B, T, H, d = 2, 7, 4, 6
    problem = TPA.problem(B=B, T=T, H=H, d=d, causal=causal, R_q=3, R_k=1, R_v=1)
    tensors = numerics.make_inputs(TPA, problem, "fp64", "cpu", seed, requires_grad=False)
    ones = torch.ones(B, T, H, 1, dtype=torch.float64)
    tensors |= {"A_k": ones, "A_v": ones}
    q = tensors["A_q"] @ _rotated(tensors["B_q"]) / 3
    mqa = registry.get("mqa")
    expected = mqa.reference(
        mqa.problem(B=B, T=T, H=H, d=d, causal=causal),
        {"q": q, "k": _rotated(tensors["B_k"]), "v": tensors["B_v"]},
    )
    torch.testing.assert_close(TPA.reference(problem, tensors), expected, rtol=1e-12, atol=1e-12)


def test_rotary_uses_the_authors_sign():
    """At position 1 the first frequency is θ = 1: `e_0` goes to `(cos 1, ..., −sin 1, ...)`."""
    d = 6
    x = torch.zeros(1, 2, 1, d, dtype=torch.float64)
    x[..., 0] = 1.0
    cos, sin = rope_tables(2, d, base=10000, precision="exact", dtype=torch.float64, device="cpu")
    y = rotate(x, cos, sin)[0, 1, 0]
    expected = torch.zeros(d, dtype=torch.float64)
    expected[0], expected[d // 2] = math.cos(1.0), -math.sin(1.0)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(rotate(x, cos, sin)[0, 1, 0], naive_rope(x[0, 1, 0], 1, 10000), rtol=0, atol=1e-15)


@pytest.mark.parametrize("causal", [False, True])
def test_scores_depend_only_on_relative_position(causal, seed):
    """Shifting every token by the same offset rotates Q and K but leaves every score and output unchanged."""
    problem = TPA.problem(B=2, T=11, H=3, d=8, causal=causal)
    tensors = numerics.make_inputs(TPA, problem, "fp64", "cpu", seed, requires_grad=False)
    q0, k0, v0 = qkv(problem, tensors, start=0)
    q1, k1, v1 = qkv(problem, tensors, start=37)
    assert not torch.allclose(q0, q1), "the offset must move the absolute positions"
    scores0 = torch.einsum("bihd,bjhd->bhij", q0, k0)
    scores1 = torch.einsum("bihd,bjhd->bhij", q1, k1)
    torch.testing.assert_close(scores1, scores0, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(v1, v0, rtol=0, atol=0)


def test_authors_rope_precision_is_about_1e3_off_exact(seed):
    """The authors' bf16 tables move the output by ≈1e-3 relative: visible, but not more than ≈1e-2."""
    exact = TPA.problem(B=2, T=64, H=4, d=16, causal=True)
    authors = exact.with_(params={**exact.params, "rope_precision": "authors"})
    tensors = numerics.make_inputs(TPA, exact, "fp64", "cpu", seed, requires_grad=False)
    out_exact, out_authors = TPA.reference(exact, tensors), TPA.reference(authors, tensors)
    rel = ((out_authors - out_exact).norm() / out_exact.norm()).item()
    assert 1e-4 < rel < 1e-2, rel
    cos_e, sin_e = rope_tables(64, 16, base=10000, precision="exact", dtype=torch.float64, device="cpu")
    cos_a, sin_a = rope_tables(64, 16, base=10000, precision="authors", dtype=torch.float64, device="cpu")
    assert 0 < (cos_a - cos_e).abs().max() <= 2**-8 and 0 < (sin_a - sin_e).abs().max() <= 2**-8
