"""XCA's reference: against naive loops and a transcription of the authors' layer (values and gradients), the
one-pass identity its kernel relies on, and edge shapes (one channel, one token, zero channels, fp16 sums)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from float64_checks import assert_close_with_grads

from attnbench.measure import numerics
from attnbench.mechanisms import registry
from attnbench.mechanisms.problem import Level
from attnbench.mechanisms.xca.reference import normalise, xca

XCA = registry.get("xca")


def naive_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """XCA by loops over batch, heads and channel pairs; sums over tokens as dot products. `[B,T,H,d]`."""
    B, _, H, d = q.shape
    out = torch.zeros_like(v)
    for b in range(B):
        for h in range(H):
            qs, ks, vs = q[b, :, h], k[b, :, h], v[b, :, h]  # (T, d)
            q_norm = [max(torch.sqrt(qs[:, i] @ qs[:, i]), torch.tensor(1e-12)) for i in range(d)]
            k_norm = [max(torch.sqrt(ks[:, j] @ ks[:, j]), torch.tensor(1e-12)) for j in range(d)]
            for i in range(d):
                logits = torch.stack([(qs[:, i] / q_norm[i]) @ (ks[:, j] / k_norm[j]) * tau[h] for j in range(d)])
                weights = torch.softmax(logits, dim=0)
                out[b, :, h, i] = sum(weights[j] * vs[:, j] for j in range(d))
    return out


def naive_layer(problem, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """The layer token by token: `x_t W_qkv + b` split q | k | v with heads major, the naive core, `W_proj`."""
    H, d = problem.H, problem.d
    qkv = _per_token(problem, lambda b, t: (tensors["x"][b, t] @ tensors["W_qkv"] + tensors["b_qkv"]).view(3, H, d))
    core = naive_core(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], tensors["tau"])
    return _per_token(problem, lambda b, t: core[b, t].reshape(-1) @ tensors["W_proj"] + tensors["b_proj"])


def _per_token(problem, fn) -> torch.Tensor:
    """`fn(b, t)` for every batch row and token, stacked `[B, T, ...]`."""
    return torch.stack([torch.stack([fn(b, t) for t in range(problem.T)]) for b in range(problem.B)])


def xcit_layer(problem, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """A transcription of the authors' `XCA.forward` (nn.Linear weights transposed to `x @ W`)."""
    x, H = tensors["x"], problem.H
    B, N, C = x.shape
    qkv = (x @ tensors["W_qkv"] + tensors["b_qkv"]).reshape(B, N, 3, H, C // H).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0].transpose(-2, -1), qkv[1].transpose(-2, -1), qkv[2].transpose(-2, -1)
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    attn = ((q @ k.transpose(-2, -1)) * tensors["tau"].view(H, 1, 1)).softmax(dim=-1)
    return (attn @ v).permute(0, 3, 1, 2).reshape(B, N, C) @ tensors["W_proj"] + tensors["b_proj"]


@pytest.mark.parametrize("shape", [dict(B=2, T=7, H=3, d=5), dict(B=1, T=1, H=2, d=4), dict(B=1, T=6, H=1, d=1)])
def test_core_matches_naive_loops(shape, seed):
    problem = XCA.problem(**shape)
    tensors = numerics.make_inputs(XCA, problem, "fp64", "cpu", seed, requires_grad=True)
    assert_close_with_grads(
        lambda t: XCA.reference(problem, t), lambda t: naive_core(t["q"], t["k"], t["v"], t["tau"]), tensors, seed
    )


def test_layer_matches_naive_loops_and_the_authors_layout(seed):
    problem = XCA.problem(B=2, T=5, H=2, d=3, level=Level.LAYER)
    tensors = numerics.make_inputs(XCA, problem, "fp64", "cpu", seed, requires_grad=True)
    assert_close_with_grads(lambda t: XCA.run_reference(problem, t), lambda t: naive_layer(problem, t), tensors, seed)
    assert_close_with_grads(lambda t: XCA.run_reference(problem, t), lambda t: xcit_layer(problem, t), tensors, seed)


def test_normalised_gram_is_the_rescaled_raw_gram(seed):
    """`q̂ k̂ᵀ = diag(1/‖q‖)(q kᵀ)diag(1/‖k‖)`: one pass over q and k gives both the Gram and the norms."""
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(2, 3, 6, 41, dtype=torch.float64, generator=gen) for _ in range(2))  # (B, H, d, T)
    one_pass = q @ k.transpose(-1, -2) / (q.norm(dim=-1)[..., :, None] * k.norm(dim=-1)[..., None, :])
    torch.testing.assert_close(normalise(q) @ normalise(k).transpose(-1, -2), one_pass, rtol=1e-12, atol=1e-14)


def test_single_channel_heads_copy_the_values(seed):
    """With d = 1 the map is a 1×1 softmax, i.e. 1: O = v whatever q, k and τ are."""
    problem = XCA.problem(B=2, T=9, H=3, d=1)
    tensors = numerics.make_inputs(XCA, problem, "fp64", "cpu", seed, requires_grad=False)
    torch.testing.assert_close(XCA.reference(problem, tensors), tensors["v"], rtol=0, atol=1e-15)


def test_half_precision_sums_do_not_overflow(seed):
    """Σq² over 4096 tokens of size 8 is 2.6e5, beyond fp16's 65504: the reference accumulates in fp32."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (8 * torch.randn(1, 4096, 2, 16, generator=gen) for _ in range(3))
    tau = torch.ones(2)
    out = xca(q.half(), k.half(), v.half(), tau.half())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    expected = xca(q.half().double(), k.half().double(), v.half().double(), tau.double())
    assert numerics.errors(out, expected)[0] < 1e-3


def test_zero_channel_is_clamped_not_nan(seed):
    """A channel that is zero over all tokens normalises to zero (the 1e-12 clamp), with finite gradients."""
    problem = XCA.problem(B=1, T=5, H=2, d=4)
    tensors = numerics.make_inputs(XCA, problem, "fp64", "cpu", seed, requires_grad=False)
    tensors["q"][..., 0, 1] = 0.0
    tensors = {name: t.requires_grad_() for name, t in tensors.items()}
    out = XCA.reference(problem, tensors)
    grads = torch.autograd.grad(out.sum(), list(tensors.values()))
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
