"""TSSA's reference against a naive, loop-by-loop transcription of its equations (the mechanism's README.md),
the identities between its causal and non-causal forms, closed forms and numerical edges.

The naive version builds every number from scalar tensors in explicit loops over batch, tokens, heads and
channels, so autograd through it gives the gradients the reference must match (float64, tiny shapes).
"""

from __future__ import annotations

import pytest
import torch
from float64_checks import assert_close_with_grads

from attnbench.measure import numerics
from attnbench.mechanisms import registry
from attnbench.mechanisms.problem import Level
from attnbench.mechanisms.tssa import reference

MECH = registry.get("tssa")


def naive_core(w: torch.Tensor, temp: torch.Tensor, beta: torch.Tensor | None, causal: bool) -> torch.Tensor:
    """`w [B,T,H,d]` -> `[B,T,H,d]`, one scalar at a time."""
    per_batch = [_naive_causal(wb, temp, beta) if causal else _naive_noncausal(wb, temp) for wb in w]
    return torch.stack([torch.stack([torch.stack([torch.stack(row) for row in tok]) for tok in o]) for o in per_batch])


def _softmax(logits: list[torch.Tensor]) -> list[torch.Tensor]:
    top = max(logits, key=lambda v: v.detach().item())
    exps = [torch.exp(v - top) for v in logits]
    total = sum(exps)
    return [e / total for e in exps]


def _naive_noncausal_pi(w: torch.Tensor, temp: torch.Tensor) -> list[list[torch.Tensor]]:
    """`w [T,H,d]` -> Π as a T×H list of scalars."""
    T, H, d = w.shape
    norms = [
        [torch.clamp(sum(w[t, h, c] ** 2 for t in range(T)).sqrt(), min=1e-12) for c in range(d)] for h in range(H)
    ]
    logits = [[temp[h] * sum((w[t, h, c] / norms[h][c]) ** 2 for c in range(d)) for h in range(H)] for t in range(T)]
    return [_softmax(row) for row in logits]


def _naive_noncausal(w: torch.Tensor, temp: torch.Tensor) -> list:
    """`w [T,H,d]` -> the output as a T×H×d nest of scalars."""
    T, H, d = w.shape
    pi = _naive_noncausal_pi(w, temp)
    out = [[[None] * d for _ in range(H)] for _ in range(T)]
    for h in range(H):
        mass = sum(pi[t][h] for t in range(T)) + 1e-8
        for c in range(d):
            dots = sum(pi[t][h] / mass * w[t, h, c] ** 2 for t in range(T))
            for t in range(T):
                out[t][h][c] = -w[t, h, c] * pi[t][h] / (1 + dots)
    return out


def _naive_causal_pi(w: torch.Tensor, temp: torch.Tensor, beta: torch.Tensor) -> list[list[torch.Tensor]]:
    T, H, d = w.shape
    pi = []
    for t in range(T):
        logits = []
        for h in range(H):
            total = 0
            for c in range(d):
                den = torch.clamp(sum(w[s, h, c] ** 2 for s in range(t + 1)), min=1e-12)
                total = total + w[t, h, c] ** 2 / den + beta[h, t]
            logits.append(temp[h] * total)
        pi.append(_softmax(logits))
    return pi


def _naive_causal(w: torch.Tensor, temp: torch.Tensor, beta: torch.Tensor) -> list:
    T, H, d = w.shape
    pi = _naive_causal_pi(w, temp, beta)
    out = [[[None] * d for _ in range(H)] for _ in range(T)]
    for t in range(T):
        for h in range(H):
            mass = sum(pi[s][h] for s in range(t + 1)) + 1e-8
            for c in range(d):
                dots = sum(pi[s][h] * w[s, h, c] ** 2 for s in range(t + 1)) / mass
                out[t][h][c] = -w[t, h, c] * pi[t][h] / (1 + dots)
    return out


def _naive_linear(x: torch.Tensor, W: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """`x [B,T,D_in] @ W [D_in,D_out] + bias`, one multiply-add at a time."""
    B, T, fan_in = x.shape
    rows = [
        [
            torch.stack([sum(x[b, t, i] * W[i, j] for i in range(fan_in)) + bias[j] for j in range(W.shape[1])])
            for t in range(T)
        ]
        for b in range(B)
    ]
    return torch.stack([torch.stack(r) for r in rows])


def naive_layer(problem, tensors):
    B, T, H, d = problem.B, problem.T, problem.H, problem.d
    w = _naive_linear(tensors["x"], tensors["W_in"], tensors["b_in"]).view(B, T, H, d)
    core = naive_core(w, tensors["temp"], tensors.get("beta"), problem.causal)
    return _naive_linear(core.reshape(B, T, H * d), tensors["W_o"], tensors["b_o"])


def _inputs(problem, seed):
    return numerics.make_inputs(MECH, problem, "fp64", "cpu", seed, requires_grad=True)


# Every gradient must be nonzero: the naive loops are slow, so each shape has to count.
TOLERANCES = dict(rtol=1e-12, atol=1e-12, grad_rtol=1e-10, grad_atol=1e-12, nonzero_grads=True)


SHAPES = [
    dict(B=2, T=5, H=3, d=4, causal=False),
    dict(B=1, T=6, H=2, d=3, causal=True),
    dict(B=2, T=4, H=3, d=2, causal=True, t_max=7),
]


@pytest.mark.parametrize("kwargs", SHAPES, ids=["noncausal", "causal", "causal-t_max"])
def test_core_matches_naive_loops_forward_and_backward(kwargs, seed):
    problem = MECH.problem(**kwargs)
    assert_close_with_grads(
        lambda t: MECH.reference(problem, t),
        lambda t: naive_core(t["w"], t["temp"], t.get("beta"), problem.causal),
        _inputs(problem, seed),
        seed,
        **TOLERANCES,
    )


@pytest.mark.parametrize("kwargs", SHAPES[:2], ids=["noncausal", "causal"])
def test_layer_matches_naive_loops_forward_and_backward(kwargs, seed):
    problem = MECH.problem(**kwargs, level=Level.LAYER)
    tensors = _inputs(problem, seed)
    assert set(tensors) == {"x", "W_in", "b_in", "W_o", "b_o", "temp"} | ({"beta"} if problem.causal else set())
    assert_close_with_grads(
        lambda t: MECH.run_reference(problem, t), lambda t: naive_layer(problem, t), tensors, seed, **TOLERANCES
    )


def test_memberships_match_naive_and_sum_to_one(seed):
    torch.manual_seed(seed)
    w, temp, beta = (
        torch.randn(1, 5, 3, 4, dtype=torch.float64),
        1 + 0.1 * torch.randn(3, dtype=torch.float64),
        torch.randn(3, 9, dtype=torch.float64),
    )
    for causal, naive in ((False, _naive_noncausal_pi(w[0], temp)), (True, _naive_causal_pi(w[0], temp, beta))):
        pi = reference.memberships(w, temp, beta if causal else None, causal=causal)
        torch.testing.assert_close(pi[0], torch.stack([torch.stack(row) for row in naive]), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(pi.sum(-1), torch.ones(1, 5, dtype=torch.float64))


def test_causal_pi_at_last_token_equals_noncausal_but_output_differs(seed):
    """At the last token the prefix sum of w² is the full token sum, so Π agrees (with the position bias there
    zero); the output does not, since causal `dots` weights tokens by the causal Π."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(2, 9, 3, 5, dtype=torch.float64, generator=gen)
    temp = 1 + 0.1 * torch.randn(3, dtype=torch.float64, generator=gen)
    beta = 0.1 * torch.randn(3, 9, dtype=torch.float64, generator=gen)
    beta[:, -1] = 0
    causal_pi = reference.memberships(w, temp, beta, causal=True)
    full_pi = reference.memberships(w, temp, causal=False)
    torch.testing.assert_close(causal_pi[:, -1], full_pi[:, -1], rtol=1e-12, atol=1e-14)
    assert (causal_pi[:, :-1] - full_pi[:, :-1]).abs().max() > 1e-3
    causal_out = reference.tssa(w, temp, beta, causal=True)
    full_out = reference.tssa(w, temp, causal=False)
    assert (causal_out[:, -1] - full_out[:, -1]).abs().max() > 1e-3


def test_reference_uses_the_memberships_helper(monkeypatch, seed):
    problem = MECH.problem(B=1, T=4, H=2, d=3)
    tensors = numerics.make_inputs(MECH, problem, "fp64", "cpu", seed, requires_grad=False)
    monkeypatch.setattr(
        reference, "memberships", lambda w, temp, beta=None, *, causal: torch.full(w.shape[:3], 0.5, dtype=w.dtype)
    )
    w = tensors["w"]
    dots = (0.5 / (2 + 1e-8) * w.square()).sum(dim=1, keepdim=True)
    torch.testing.assert_close(MECH.reference(problem, tensors), -w * 0.5 / (1 + dots))


def test_reference_rejects_bad_tensors():
    w, temp = torch.randn(1, 5, 2, 3), torch.ones(2)
    with pytest.raises(ValueError, match="beta"):
        reference.tssa(w, temp, torch.zeros(2, 4), causal=True)
    with pytest.raises(ValueError, match="beta"):
        reference.tssa(w, temp, None, causal=True)
    with pytest.raises(ValueError, match="temp"):
        reference.tssa(w, torch.ones(3), causal=False)
    with pytest.raises(ValueError, match="w must"):
        reference.tssa(w[0], temp, causal=False)


def test_single_token_has_closed_form(seed):
    """T = 1: every normalised ŵ² is 1, so Π = softmax(d·temp); π̃ ≈ 1 makes dots = w² (causal adds d·beta)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(3, 1, 4, 5, dtype=torch.float64, generator=gen)
    temp = 1 + 0.1 * torch.randn(4, dtype=torch.float64, generator=gen)
    beta = 0.1 * torch.randn(4, 2, dtype=torch.float64, generator=gen)
    for causal, logits in ((False, 5 * temp), (True, 5 * temp * (1 + beta[:, 0]))):
        pi = torch.softmax(logits, dim=0).view(1, 1, 4, 1)
        dots = pi / (pi + 1e-8) * w.square()
        expected = -w * pi / (1 + dots)
        torch.testing.assert_close(reference.tssa(w, temp, beta if causal else None, causal=causal), expected)


@pytest.mark.parametrize("causal", [False, True])
def test_batch_rows_are_independent(causal, seed):
    problem = MECH.problem(B=3, T=6, H=2, d=3, causal=causal)
    tensors = numerics.make_inputs(MECH, problem, "fp64", "cpu", seed, requires_grad=False)
    together = MECH.reference(problem, tensors)
    for b in range(3):
        alone = MECH.reference(problem.with_(B=1), {**tensors, "w": tensors["w"][b : b + 1]})
        torch.testing.assert_close(alone[0], together[b], rtol=0, atol=1e-15)


@pytest.mark.parametrize("causal", [False, True])
def test_half_inputs_are_computed_in_fp32(causal):
    """Token sums of w² overflow fp16 (65504) at |w| ≈ 256; the reference must not."""
    gen = torch.Generator().manual_seed(1)
    w = (300 * torch.randn(1, 40, 2, 4, generator=gen)).half()
    temp, beta = torch.ones(2, dtype=torch.float16), torch.zeros(2, 40, dtype=torch.float16)
    out = reference.tssa(w, temp, beta if causal else None, causal=causal)
    assert out.dtype == torch.float16
    expected = reference.tssa(w.double(), temp.double(), beta.double() if causal else None, causal=causal)
    assert torch.isfinite(out).all()
    assert numerics.errors(out, expected)[0] < 1e-3


def test_output_is_bounded_by_input():
    """`out = -w·Π/(1 + dots)` with `0 < Π ≤ 1` and `dots ≥ 0`: never larger than `w`, always of opposite sign."""
    w = torch.randn(2, 17, 3, 5, dtype=torch.float64)
    for causal in (False, True):
        out = reference.tssa(
            w, torch.ones(3, dtype=torch.float64), torch.zeros(3, 17, dtype=torch.float64), causal=causal
        )
        assert (out.abs() <= w.abs()).all()
        assert (out * w <= 0).all()
