"""Softmax attention through `torch.nn.functional.scaled_dot_product_attention`, backend selectable."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from attnbench.mechanisms.problem import Problem

BACKENDS = ("flash", "efficient", "cudnn", "math")


def sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, backend: str | None = None
) -> torch.Tensor:
    """`q [B,T,H,d]`, `k, v [B,S,G,d]` -> `[B,T,H,d]`; `backend=None` lets PyTorch choose."""
    H, G = q.shape[2], k.shape[2]
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, T, d)
    gqa = G != H
    if gqa and backend in ("efficient", "cudnn"):
        # These backends take no enable_gqa: give them the grouped heads explicitly (an extra copy of K/V).
        kh, vh = (t.repeat_interleave(H // G, dim=1) for t in (kh, vh))
        gqa = False
    with _backend(backend):
        out = F.scaled_dot_product_attention(qh, kh, vh, is_causal=causal, enable_gqa=gqa)
    return out.transpose(1, 2)


@contextlib.contextmanager
def _backend(name: str | None):
    if name is None:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    choice = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }[name]
    with sdpa_kernel(choice):
        yield


def core(problem: Problem, tensors: dict[str, torch.Tensor], backend: str | None = None) -> torch.Tensor:
    return sdpa_attention(tensors["q"], tensors["k"], tensors["v"], causal=problem.causal, backend=backend)
