"""Causal AFT decoding, per variant (README.md, "Decoding"); channels `C = H·d` are independent throughout.

- simple: with no position bias, `Y_t = σ(Q_t) ⊙ Σ_{t'≤t} e^{K_t'} V_t' / Σ_{t'≤t} e^{K_t'}` is a ratio of two
  running sums: a state of `3·C` numbers per sequence (the two sums, scaled by the running max of K, and that
  max), whatever the cache length.
- local: keys more than `window − 1` tokens back carry bias 0, so they too enter through the running sums; only
  the last `window − 1` keys and values (and the new ones) are kept as they are, for their banded bias. A step
  also folds the keys that leave the band into the running sums.
- full: every key has its own bias `w[t, t']`, so the whole K, V cache is kept, and a step reads `q_len` rows of
  the bias.

The sums are in the reference's compute dtype (fp32, fp64 for fp64 inputs); K and V are kept in their own dtype.
"""

from __future__ import annotations

import math

import torch

from attnbench.mechanisms.aft.reference import compute_dtype
from attnbench.mechanisms.decoding import CacheModel, Decoding
from attnbench.mechanisms.problem import Problem
from attnbench.mechanisms.registry import Unsupported

State = dict[str, torch.Tensor]


def running_sums(k: torch.Tensor, v: torch.Tensor, acc: torch.dtype) -> State:
    """`Σ e^{K − m} V`, `Σ e^{K − m}` and `m = max K` over the tokens of `k, v [B,n,C]`, each `[B,C]` in `acc`;
    with no tokens, zeros and `m = −inf`."""
    B, C = k.shape[0], k.shape[-1]
    if k.shape[1] == 0:
        zeros = torch.zeros(B, C, dtype=acc, device=k.device)
        return {"num": zeros, "den": zeros.clone(), "max": torch.full_like(zeros, -math.inf)}
    k, v = k.to(acc), v.to(acc)
    top = k.amax(dim=1)
    e = torch.exp(k - top[:, None])
    return {"num": (e * v).sum(dim=1), "den": e.sum(dim=1), "max": top}


def fold(state: State, k: torch.Tensor, v: torch.Tensor) -> State:
    """The running sums with one more token `k, v [B,C]`, rescaled to the new running max."""
    k, v = k.to(state["max"].dtype), v.to(state["max"].dtype)
    top = torch.maximum(state["max"], k)
    down, up = torch.exp(state["max"] - top), torch.exp(k - top)  # down is 0 for an empty state
    return {"num": state["num"] * down + up * v, "den": state["den"] * down + up, "max": top}


def _channels(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], t.shape[1], -1)


def _output(q: torch.Tensor, num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """`σ(Q) ⊙ num / den` for one token, `[B,C]`, in the sums' dtype."""
    return torch.sigmoid(q.to(num.dtype)) * num / den


def _simple(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, M: int):
    acc = compute_dtype(q)
    state = running_sums(k[:, :M], v[:, :M], acc)
    new = {"q": q[:, M:].clone(), "k": k[:, M:].clone(), "v": v[:, M:].clone()}

    def step() -> torch.Tensor:
        running, outs = state, []
        for i in range(new["q"].shape[1]):
            running = fold(running, new["k"][:, i], new["v"][:, i])
            outs.append(_output(new["q"][:, i], running["num"], running["den"]))
        return torch.stack(outs, dim=1)

    return state, step, new


def _local(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w_band: torch.Tensor, M: int, window: int):
    acc, q_len = compute_dtype(q), q.shape[1] - M
    kept = min(M, window - 1)  # cached tokens still inside the band of the first new token
    state = running_sums(k[:, : M - kept], v[:, : M - kept], acc)
    cache = {"k": k[:, M - kept :].clone(), "v": v[:, M - kept :].clone(), **state}
    new = {"q": q[:, M:].clone(), "k": k[:, M:].clone(), "v": v[:, M:].clone(), "w_band": w_band[M:].clone()}

    def step() -> torch.Tensor:
        cache["k"][:, kept:], cache["v"][:, kept:] = new["k"], new["v"]
        kc, vc, outs = cache["k"].to(acc), cache["v"].to(acc), []
        for i in range(q_len):
            seen = kept + i + 1  # window entries up to the new token i; entry j is position M − kept + j
            offsets = torch.arange(seen, device=q.device) - (seen - 1)  # t' − t, from −(kept + i) to 0
            bias = torch.where(offsets > -window, new["w_band"][i, (offsets + window - 1).clamp(min=0)].to(acc), 0)
            logits = kc[:, :seen] + bias[None, :, None]
            top = torch.maximum(cache["max"], logits.amax(dim=1))
            e, carry = torch.exp(logits - top[:, None]), torch.exp(cache["max"] - top)
            num = cache["num"] * carry + (e * vc[:, :seen]).sum(dim=1)
            outs.append(_output(new["q"][:, i], num, cache["den"] * carry + e.sum(dim=1)))
        running = {name: cache[name] for name in ("num", "den", "max")}
        for j in range(max(0, kept + q_len - (window - 1))):  # keys the next token's band no longer holds
            running = fold(running, kc[:, j], vc[:, j])
        return torch.stack(outs, dim=1)

    return cache, step, new


def _full(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w_bias: torch.Tensor, M: int):
    acc, q_len = compute_dtype(q), q.shape[1] - M
    new = {"q": q[:, M:].clone(), "k": k[:, M:].clone(), "v": v[:, M:].clone()}
    new["w_bias"] = w_bias[M : M + q_len, : M + q_len].clone()

    def step() -> torch.Tensor:
        k[:, M:], v[:, M:] = new["k"], new["v"]
        outs = []
        for i in range(q_len):
            seen = M + i + 1
            logits = k[:, :seen].to(acc) + new["w_bias"][i, :seen].to(acc)[None, :, None]
            e = torch.exp(logits - logits.amax(dim=1, keepdim=True))
            num, den = (e * v[:, :seen].to(acc)).sum(dim=1), e.sum(dim=1)
            outs.append(_output(new["q"][:, i], num, den))
        return torch.stack(outs, dim=1)

    return {"k": k, "v": v}, step, new


def reference_decode(problem: Problem, tensors: dict[str, torch.Tensor], q_len: int) -> Decoding:
    """Decode path of `reference` for the causal variants: simple, local and full (conv has no causal form)."""
    name, M = problem.params["variant"], problem.T
    q, k, v = (_channels(tensors[part]) for part in "qkv")  # (B, M + q_len, C), views
    if name == "simple":
        kept, step, new = _simple(q, k, v, M)
    elif name == "local":
        kept, step, new = _local(q, k, v, tensors["w_band"], M, problem.params["window"])
    elif name == "full":
        kept, step, new = _full(q, k, v, tensors["w_bias"], M)
    else:
        raise Unsupported(f"aft: variant {name} has no decode path (it has no causal form)")
    shape = tensors["q"][:, M:].shape

    def step_out() -> torch.Tensor:
        return step().reshape(shape).to(tensors["q"].dtype)

    return Decoding(step_out, kept, new)


def cache_model(problem: Problem, itemsize: int) -> CacheModel:
    """simple: the running sums, `3·H·d` numbers per sequence; local: those and the K, V of the last
    `window − 1` tokens and the new ones; full: K and V of every token, `2·H·d·s` bytes per token."""
    name, B, C, acc = problem.params["variant"], problem.B, problem.D, 8 if itemsize == 8 else 4
    sums = B * 3 * C * acc
    if name == "simple":
        return CacheModel(0, sums, f"state 3·H·d = {3 * C} numbers × {acc} B per sequence, independent of M", B)
    if name == "local":
        window = problem.params["window"] - 1
        formula = f"K, V of the last window−1 = {window} tokens and the new ones (2·H·d·s B each) + 3·H·d sums"
        return CacheModel(2 * C * itemsize, sums, formula, B, window=window)
    if name == "full":
        return CacheModel(2 * C * itemsize, 0, f"K, V: 2·H·d·s = 2·{C}·{itemsize} B per token", B)
    raise Unsupported(f"aft: variant {name} has no decode path (it has no causal form)")
