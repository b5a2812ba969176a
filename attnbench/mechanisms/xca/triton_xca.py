"""XCA in Triton, forward and backward: launches triton_xca_kernels' passes (their header describes them) and
wraps them in an autograd function; `core` is the `triton` implementation's entry point.

Every token pass splits each head's tokens into chunks, one program per (batch row and head, chunk), so that one
long sequence with few heads still fills the GPU; the forward reduce runs a program per block of 16 rows of a
head's d×d maps, and so does the backward reduce.

Only imported when the `triton` implementation runs (the registry loads it lazily).
"""

from __future__ import annotations

import torch
import triton

from attnbench.mechanisms.problem import Problem
from attnbench.mechanisms.registry import Unsupported
from attnbench.mechanisms.triton_common import (
    dot_precision,
    multiprocessors,
    num_warps_for,
    power_of_2_at_least,
    scratch,
)
from attnbench.mechanisms.xca.reference import EPS
from attnbench.mechanisms.xca.triton_xca_kernels import (
    apply_kernel,
    bwd_dv_kernel,
    bwd_qk_kernel,
    bwd_reduce_kernel,
    gram_kernel,
    reduce_kernel,
)

MAX_HEAD_DIM = 128  # the d×d fp32 accumulators live in registers
# Rows of a head's d×d maps one program of a reduce kernel finishes: 8 programs a head at d = 128.
REDUCE_ROWS = 16
MIN_TOKENS_PER_CHUNK = 256  # below this a chunk's program is mostly launch and reduce overhead
# A CPU stands in for this many multiprocessors when sizing chunks (under the interpreter).
CPU_MULTIPROCESSORS = 1


def _grid(heads: int, chunks: int) -> tuple[int]:
    """Programs of a token pass, numbered head-major: program `i` sums chunk `i % chunks` of head `i // chunks`."""
    return (heads * chunks,)


def _chunking(T: int, heads: int, device: torch.device, tokens_per_chunk: int | None) -> tuple[int, int]:
    """(tokens per chunk, chunks) for every token pass: about four programs per SM in all, so that one long
    sequence with few heads still fills the GPU, but never chunks under MIN_TOKENS_PER_CHUNK tokens (each
    program loads its head's d×d maps once per chunk)."""
    if tokens_per_chunk is None:
        chunks = max(1, triton.cdiv(4 * multiprocessors(device, CPU_MULTIPROCESSORS), heads))
        tokens_per_chunk = max(MIN_TOKENS_PER_CHUNK, triton.cdiv(T, chunks))
    return tokens_per_chunk, triton.cdiv(T, tokens_per_chunk)


def _row_blocks(block_d: int) -> tuple[int, int]:
    """Rows of a head's d×d maps per program of the reduce kernels, and the programs a head takes."""
    block_r = min(block_d, REDUCE_ROWS)
    return block_r, block_d // block_r


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    """Batch, token and head strides of a `[B,T,H,d]` tensor (the kernels need only its last stride to be 1)."""
    return t.stride(0), t.stride(1), t.stride(2)


def _unit_last_stride(t: torch.Tensor) -> torch.Tensor:
    """`t` itself when its channels are contiguous (views of a fused projection are), else a contiguous copy."""
    return t if t.stride(-1) == 1 else t.contiguous()


def _passes(q: torch.Tensor, tokens_per_chunk: int | None):
    """What the passes over `q`'s shape share: the token passes' grid, their sizes `T, H, n_chunks,
    tokens_per_chunk`, their meta-parameters, and the per-head block BLOCK_D."""
    B, T, H, d = q.shape
    block_d = power_of_2_at_least(d, 16)
    chunk, n_chunks = _chunking(T, B * H, q.device, tokens_per_chunk)
    meta = dict(D_HEAD=d, BLOCK_D=block_d, PRECISION=dot_precision(q.dtype))
    return _grid(B * H, n_chunks), (T, H, n_chunks, chunk), meta, block_d


def xca_forward(q, k, v, tau, tokens_per_chunk: int | None = None):
    """`q, k, v [B,T,H,d]`, `tau [H]` -> `O [B,T,H,d]` and the fp32 statistics the backward needs:
    `A, Ĝ [B·H, BLOCK_D, BLOCK_D]` and the raw norms `‖q‖, ‖k‖ [B·H, BLOCK_D]`."""
    B, T, H, d = q.shape
    grid, sizes, meta, BLOCK_D = _passes(q, tokens_per_chunk)
    BH, n_chunks, f32, device = B * H, sizes[2], torch.float32, q.device
    g_part = scratch((BH, n_chunks, BLOCK_D, BLOCK_D), f32, device)
    nq_part, nk_part = (scratch((BH, n_chunks, BLOCK_D), f32, device) for _ in range(2))
    gram_kernel[grid](q, k, g_part, nq_part, nk_part, *sizes, *_strides(q), *_strides(k), **meta)
    attn, gram_hat = (scratch((BH, BLOCK_D, BLOCK_D), f32, device) for _ in range(2))
    norm_q, norm_k = (scratch((BH, BLOCK_D), f32, device) for _ in range(2))
    block_r, n_rows = _row_blocks(BLOCK_D)
    reduce_kernel[(BH, n_rows)](
        g_part, nq_part, nk_part, tau, attn, gram_hat, norm_q, norm_k, H, n_chunks,
        EPS=EPS, D_HEAD=d, BLOCK_D=BLOCK_D, BLOCK_R=block_r, num_warps=num_warps_for(block_r * BLOCK_D),
    )  # fmt: skip
    out = scratch((B, T, H, d), q.dtype, device)
    apply_kernel[grid](v, attn, out, *sizes, *_strides(v), *_strides(out), **meta)
    return out, attn, gram_hat, norm_q, norm_k


def xca_backward(q, k, v, tau, attn, gram_hat, norm_q, norm_k, d_out, tokens_per_chunk: int | None = None):
    """Gradients `dq, dk, dv [B,T,H,d]` and `dtau [H]` from the forward's statistics and `d_out [B,T,H,d]`."""
    B, T, H, d = q.shape
    grid, sizes, meta, BLOCK_D = _passes(q, tokens_per_chunk)
    BH, n_chunks, f32, device = B * H, sizes[2], torch.float32, q.device
    dv = scratch((B, T, H, d), v.dtype, device)
    da_part = scratch((BH, n_chunks, BLOCK_D, BLOCK_D), f32, device)
    bwd_dv_kernel[grid](d_out, v, attn, dv, da_part, *sizes, *_strides(d_out), *_strides(v), *_strides(dv), **meta)
    mix_q, mix_k = (scratch((BH, BLOCK_D, BLOCK_D), f32, device) for _ in range(2))
    block_r, n_rows = _row_blocks(BLOCK_D)
    vec = scratch((BH, 3 + n_rows, BLOCK_D), f32, device)
    dtau = scratch((B, H, n_rows), f32, device)
    bwd_reduce_kernel[(BH, n_rows)](
        da_part, attn, gram_hat, norm_q, norm_k, tau, mix_q, mix_k, vec, dtau, H, n_chunks,
        EPS=EPS, BLOCK_D=BLOCK_D, BLOCK_R=block_r, num_warps=num_warps_for(block_r * BLOCK_D),
    )  # fmt: skip
    dq = scratch((B, T, H, d), q.dtype, device)
    dk = scratch((B, T, H, d), k.dtype, device)
    bwd_qk_kernel[grid](
        q, k, mix_q, mix_k, vec, dq, dk, *sizes, n_rows, *_strides(q), *_strides(k), *_strides(dq), **meta
    )  # fmt: skip
    return dq, dk, dv, dtau.sum(dim=(0, 2)).to(tau.dtype)


class XCAFunction(torch.autograd.Function):
    """`q, k, v [B,T,H,d]` (last axis contiguous), `tau [H]` -> `O [B,T,H,d]`; saves the inputs and the forward's
    fp32 statistics (`A`, `Ĝ`, the norms), from which the backward needs no recomputation."""

    @staticmethod
    def forward(ctx, q, k, v, tau, tokens_per_chunk):
        q, k, v = (_unit_last_stride(t) for t in (q, k, v))
        tau = tau.contiguous()
        out, attn, gram_hat, norm_q, norm_k = xca_forward(q, k, v, tau, tokens_per_chunk)
        ctx.save_for_backward(q, k, v, tau, attn, gram_hat, norm_q, norm_k)
        ctx.tokens_per_chunk = tokens_per_chunk
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, tau, attn, gram_hat, norm_q, norm_k = ctx.saved_tensors
        d_out = _unit_last_stride(d_out)
        dq, dk, dv, dtau = xca_backward(q, k, v, tau, attn, gram_hat, norm_q, norm_k, d_out, ctx.tokens_per_chunk)
        return dq, dk, dv, dtau, None


def xca(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tau: torch.Tensor, *, tokens_per_chunk: int | None = None
) -> torch.Tensor:
    """`q, k, v [B,T,H,d]` (fp32, fp16 or bf16; last axis contiguous), `tau [H]` -> `[B,T,H,d]`, differentiable.

    `tokens_per_chunk` overrides how many tokens one program of a token reduction sums (tests use it to span
    several chunks at small T)."""
    if q.shape[-1] > MAX_HEAD_DIM:
        raise Unsupported(f"xca triton: head dim d={q.shape[-1]} exceeds {MAX_HEAD_DIM}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise Unsupported(f"xca triton: q, k, v must share one of fp32/fp16/bf16, got {q.dtype}, {k.dtype}, {v.dtype}")
    return XCAFunction.apply(q, k, v, tau, tokens_per_chunk)


def core(problem: Problem, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Core: `q, k, v [B,T,H,d]`, `tau [H]` -> `[B,T,H,d]`."""
    return xca(tensors["q"], tensors["k"], tensors["v"], tensors["tau"])
