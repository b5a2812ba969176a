"""XCA forward and backward in Triton: two passes over the tokens each way, fp32 statistics in between.

With `Ĝ = diag(1/‖q‖)(q kᵀ)diag(1/‖k‖)` (per batch row and head, `q, k` as `d×T`), `A = softmax_rows(τ·Ĝ)`
and `O = A v`:

forward   pass 1  reads q, k; each program sums one chunk of tokens into a `d×d` Gram and two norm vectors
          reduce  one program per (b, h) adds the chunks' partials, normalises, applies τ, softmaxes -> A, Ĝ
          pass 2  reads v, writes `O = A v`, chunk by chunk
backward  pass 1  reads dO, v; sums `dA = dO vᵀ` per chunk and writes `dv = Aᵀ dO` (A is saved)
          reduce  softmax backward `dS = A ⊙ (dA − rowsum(dA ⊙ A))`, `dτ = Σ dS ⊙ Ĝ`, `dĜ = τ·dS`, and the
                  normalisation's backward folded into two `d×d` maps and two vectors (see `_bwd_reduce_kernel`)
          pass 2  reads q, k, writes dq, dk

Partials are written per chunk and added by the reduce kernels, not accumulated with atomics, so every run
gives the same bits and the autotuner may rerun a pass. Heads narrower than 16 or not a power of two are
padded to `BLOCK_D = max(16, next_pow2(d))` with masks (tl.dot needs every dimension >= 16); the padded
rows and columns of every saved statistic are written (zeros, or a harmless uniform softmax row), so no
buffer holds unwritten memory.

Only imported when the `triton` implementation runs (the registry loads it lazily).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from attnbench.mechanisms.problem import Problem
from attnbench.mechanisms.registry import Unsupported
from attnbench.mechanisms.xca.reference import EPS

MAX_HEAD_DIM = 128  # the d×d fp32 accumulators live in registers
MIN_TOKENS_PER_CHUNK = 256  # below this a chunk's program is mostly launch and reduce overhead


def _configs() -> list[triton.Config]:
    if os.environ.get("TRITON_INTERPRET") == "1":
        return [triton.Config({"BLOCK_T": 16}, num_warps=4)]
    return [triton.Config({"BLOCK_T": bt}, num_warps=w) for bt in (32, 64, 128) for w in (4, 8)]


@triton.autotune(configs=_configs(), key=["D_HEAD"])
@triton.jit
def _gram_kernel(
    q,
    k,
    g_part,
    nq_part,
    nk_part,
    T,
    H,
    n_chunks,
    tokens_per_chunk,
    stride_qb,
    stride_qt,
    stride_qh,
    stride_kb,
    stride_kt,
    stride_kh,
    D_HEAD: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    """Forward pass 1, one program per (b·H + h, chunk): `Σ_t q_t k_tᵀ`, `Σ_t q_t²`, `Σ_t k_t²` over the chunk.
    Reads the chunk's q and k once; writes `BLOCK_D² + 2·BLOCK_D` fp32 partials."""
    i_pid = tl.program_id(0)
    i_bh, i_c = i_pid // n_chunks, i_pid % n_chunks
    i_b, i_h = i_bh // H, i_bh % H
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < D_HEAD
    p_q = q + i_b.to(tl.int64) * stride_qb + i_h.to(tl.int64) * stride_qh
    p_k = k + i_b.to(tl.int64) * stride_kb + i_h.to(tl.int64) * stride_kh
    t_start = i_c * tokens_per_chunk
    t_end = tl.minimum(t_start + tokens_per_chunk, T)
    b_g = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
    b_nq = tl.zeros([BLOCK_D], dtype=tl.float32)
    b_nk = tl.zeros([BLOCK_D], dtype=tl.float32)
    for t0 in range(t_start, t_end, BLOCK_T):
        o_t = (t0 + tl.arange(0, BLOCK_T)).to(tl.int64)
        m_td = (o_t < t_end)[:, None] & m_d[None, :]
        b_q = tl.load(p_q + o_t[:, None] * stride_qt + o_d[None, :], mask=m_td, other=0.0)  # (BLOCK_T, BLOCK_D)
        b_k = tl.load(p_k + o_t[:, None] * stride_kt + o_d[None, :], mask=m_td, other=0.0)
        b_g = tl.dot(tl.trans(b_q), b_k, b_g, input_precision=PRECISION)  # (BLOCK_D, BLOCK_D)
        b_q32, b_k32 = b_q.to(tl.float32), b_k.to(tl.float32)
        b_nq += tl.sum(b_q32 * b_q32, axis=0)
        b_nk += tl.sum(b_k32 * b_k32, axis=0)
    o_part = i_bh.to(tl.int64) * n_chunks + i_c
    tl.store(g_part + o_part * BLOCK_D * BLOCK_D + o_d[:, None] * BLOCK_D + o_d[None, :], b_g)
    tl.store(nq_part + o_part * BLOCK_D + o_d, b_nq)
    tl.store(nk_part + o_part * BLOCK_D + o_d, b_nk)


@triton.jit
def _reduce_kernel(
    g_part,
    nq_part,
    nk_part,
    tau,
    attn,
    gram_hat,
    norm_q,
    norm_k,
    H,
    n_chunks,
    EPS: tl.constexpr,
    D_HEAD: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Forward reduce, one program per (b, h): add the chunks, `Ĝ = G / (max(‖q‖, eps) max(‖k‖, eps)ᵀ)`,
    `A = softmax_rows(τ_h·Ĝ)` over the `d` real columns. Writes A, Ĝ (padded, fp32) and the raw norms."""
    i_bh = tl.program_id(0)
    o_d = tl.arange(0, BLOCK_D)
    o_dd = o_d[:, None] * BLOCK_D + o_d[None, :]
    b_g = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
    b_nq2 = tl.zeros([BLOCK_D], dtype=tl.float32)
    b_nk2 = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i_c in range(n_chunks):
        o_part = i_bh.to(tl.int64) * n_chunks + i_c
        b_g += tl.load(g_part + o_part * BLOCK_D * BLOCK_D + o_dd)
        b_nq2 += tl.load(nq_part + o_part * BLOCK_D + o_d)
        b_nk2 += tl.load(nk_part + o_part * BLOCK_D + o_d)
    b_nq, b_nk = tl.sqrt_rn(b_nq2), tl.sqrt_rn(b_nk2)
    b_ghat = b_g / (tl.maximum(b_nq, EPS)[:, None] * tl.maximum(b_nk, EPS)[None, :])
    b_tau = tl.load(tau + i_bh % H).to(tl.float32)
    b_s = tl.where((o_d < D_HEAD)[None, :], b_ghat * b_tau, float("-inf"))
    b_e = tl.exp(b_s - tl.max(b_s, axis=1)[:, None])
    b_a = b_e / tl.sum(b_e, axis=1)[:, None]
    o_out = i_bh.to(tl.int64) * BLOCK_D * BLOCK_D + o_dd
    tl.store(attn + o_out, b_a)
    tl.store(gram_hat + o_out, b_ghat)
    tl.store(norm_q + i_bh.to(tl.int64) * BLOCK_D + o_d, b_nq)
    tl.store(norm_k + i_bh.to(tl.int64) * BLOCK_D + o_d, b_nk)


@triton.autotune(configs=_configs(), key=["D_HEAD"])
@triton.jit
def _apply_kernel(
    v,
    attn,
    out,
    T,
    H,
    n_chunks,
    tokens_per_chunk,
    stride_vb,
    stride_vt,
    stride_vh,
    stride_ob,
    stride_ot,
    stride_oh,
    D_HEAD: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    """Forward pass 2, one program per (b·H + h, chunk): `O_t = A v_t` for the chunk's tokens. Reads v once,
    writes O once; A is read once per chunk."""
    i_pid = tl.program_id(0)
    i_bh, i_c = i_pid // n_chunks, i_pid % n_chunks
    i_b, i_h = i_bh // H, i_bh % H
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < D_HEAD
    b_a = tl.load(attn + i_bh.to(tl.int64) * BLOCK_D * BLOCK_D + o_d[:, None] * BLOCK_D + o_d[None, :])
    # O[t, i] = Σ_j v[t, j] A[i, j]; A is cast to v's dtype so that 16-bit inputs use the tensor cores.
    b_at = tl.trans(b_a).to(v.dtype.element_ty)
    p_v = v + i_b.to(tl.int64) * stride_vb + i_h.to(tl.int64) * stride_vh
    p_o = out + i_b.to(tl.int64) * stride_ob + i_h.to(tl.int64) * stride_oh
    t_start = i_c * tokens_per_chunk
    t_end = tl.minimum(t_start + tokens_per_chunk, T)
    for t0 in range(t_start, t_end, BLOCK_T):
        o_t = (t0 + tl.arange(0, BLOCK_T)).to(tl.int64)
        m_td = (o_t < t_end)[:, None] & m_d[None, :]
        b_v = tl.load(p_v + o_t[:, None] * stride_vt + o_d[None, :], mask=m_td, other=0.0)  # (BLOCK_T, BLOCK_D)
        b_o = tl.dot(b_v, b_at, input_precision=PRECISION)
        tl.store(p_o + o_t[:, None] * stride_ot + o_d[None, :], b_o.to(out.dtype.element_ty), mask=m_td)


@triton.autotune(configs=_configs(), key=["D_HEAD"])
@triton.jit
def _bwd_dv_kernel(
    d_out,
    v,
    attn,
    dv,
    da_part,
    T,
    H,
    n_chunks,
    tokens_per_chunk,
    stride_gb,
    stride_gt,
    stride_gh,
    stride_vb,
    stride_vt,
    stride_vh,
    stride_dvb,
    stride_dvt,
    stride_dvh,
    D_HEAD: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    """Backward pass 1, one program per (b·H + h, chunk): partial `dA = Σ_t dO_t v_tᵀ` over the chunk, and
    `dv_t = Aᵀ dO_t` for its tokens. Reads dO and v once, writes dv once and `BLOCK_D²` fp32 partials."""
    i_pid = tl.program_id(0)
    i_bh, i_c = i_pid // n_chunks, i_pid % n_chunks
    i_b, i_h = i_bh // H, i_bh % H
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < D_HEAD
    p_g = d_out + i_b.to(tl.int64) * stride_gb + i_h.to(tl.int64) * stride_gh
    p_v = v + i_b.to(tl.int64) * stride_vb + i_h.to(tl.int64) * stride_vh
    p_dv = dv + i_b.to(tl.int64) * stride_dvb + i_h.to(tl.int64) * stride_dvh
    b_a = tl.load(attn + i_bh.to(tl.int64) * BLOCK_D * BLOCK_D + o_d[:, None] * BLOCK_D + o_d[None, :])
    t_start = i_c * tokens_per_chunk
    t_end = tl.minimum(t_start + tokens_per_chunk, T)
    b_da = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
    for t0 in range(t_start, t_end, BLOCK_T):
        o_t = (t0 + tl.arange(0, BLOCK_T)).to(tl.int64)
        m_td = (o_t < t_end)[:, None] & m_d[None, :]
        b_do = tl.load(p_g + o_t[:, None] * stride_gt + o_d[None, :], mask=m_td, other=0.0)  # (BLOCK_T, BLOCK_D)
        b_v = tl.load(p_v + o_t[:, None] * stride_vt + o_d[None, :], mask=m_td, other=0.0)
        b_da = tl.dot(tl.trans(b_do), b_v, b_da, input_precision=PRECISION)  # dA[i, j] += Σ_t dO[t, i] v[t, j]
        b_dv = tl.dot(b_do, b_a.to(b_do.dtype), input_precision=PRECISION)  # dv[t, j] = Σ_i dO[t, i] A[i, j]
        tl.store(p_dv + o_t[:, None] * stride_dvt + o_d[None, :], b_dv.to(dv.dtype.element_ty), mask=m_td)
    o_part = i_bh.to(tl.int64) * n_chunks + i_c
    tl.store(da_part + o_part * BLOCK_D * BLOCK_D + o_d[:, None] * BLOCK_D + o_d[None, :], b_da)


@triton.jit
def _bwd_reduce_kernel(
    da_part,
    attn,
    gram_hat,
    norm_q,
    norm_k,
    tau,
    mix_q,
    mix_k,
    vec,
    dtau,
    H,
    n_chunks,
    EPS: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Backward reduce, one program per (b, h). With `dĜ = τ·A ⊙ (dA − rowsum(dA ⊙ A))`, `q̂ = q / n_q`:

    `dq = (1/n_q) ⊙ (dĜ diag(1/n_k) k − (r/n_q) ⊙ q)` with `r = rowsum(dĜ ⊙ Ĝ)` (`= q̂·dq̂` per channel, so
    no token sum is needed), and symmetrically `dk = (1/n_k) ⊙ ((diag(1/n_q) dĜ)ᵀ q − (c/n_k) ⊙ k)` with
    `c = colsum(dĜ ⊙ Ĝ)`. A channel whose norm is clamped to eps has no projection term (the clamp's
    gradient is zero). Writes `mix_q = dĜ diag(1/n_k)`, `mix_k = diag(1/n_q) dĜ` (entries of order 1/d,
    safe to round to 16 bits), `vec = [1/n_q, r/n_q, 1/n_k, c/n_k]` and this head's share of dτ."""
    i_bh = tl.program_id(0)
    o_d = tl.arange(0, BLOCK_D)
    o_dd = o_d[:, None] * BLOCK_D + o_d[None, :]
    b_da = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
    for i_c in range(n_chunks):
        b_da += tl.load(da_part + (i_bh.to(tl.int64) * n_chunks + i_c) * BLOCK_D * BLOCK_D + o_dd)
    o_mat = i_bh.to(tl.int64) * BLOCK_D * BLOCK_D + o_dd
    o_vec = i_bh.to(tl.int64) * BLOCK_D + o_d
    b_a = tl.load(attn + o_mat)
    b_ghat = tl.load(gram_hat + o_mat)
    b_nq, b_nk = tl.load(norm_q + o_vec), tl.load(norm_k + o_vec)
    b_ds = b_a * (b_da - tl.sum(b_da * b_a, axis=1)[:, None])
    tl.store(dtau + i_bh, tl.sum(tl.sum(b_ds * b_ghat, axis=1), axis=0))
    b_dghat = b_ds * tl.load(tau + i_bh % H).to(tl.float32)
    b_inv_q = 1.0 / tl.maximum(b_nq, EPS)
    b_inv_k = 1.0 / tl.maximum(b_nk, EPS)
    b_r = tl.where(b_nq >= EPS, tl.sum(b_dghat * b_ghat, axis=1) * b_inv_q, 0.0)
    b_c = tl.where(b_nk >= EPS, tl.sum(b_dghat * b_ghat, axis=0) * b_inv_k, 0.0)
    tl.store(mix_q + o_mat, b_dghat * b_inv_k[None, :])
    tl.store(mix_k + o_mat, b_dghat * b_inv_q[:, None])
    o_vec4 = i_bh.to(tl.int64) * 4 * BLOCK_D + o_d
    tl.store(vec + o_vec4, b_inv_q)
    tl.store(vec + o_vec4 + BLOCK_D, b_r)
    tl.store(vec + o_vec4 + 2 * BLOCK_D, b_inv_k)
    tl.store(vec + o_vec4 + 3 * BLOCK_D, b_c)


@triton.autotune(configs=_configs(), key=["D_HEAD"])
@triton.jit
def _bwd_qk_kernel(
    q,
    k,
    mix_q,
    mix_k,
    vec,
    dq,
    dk,
    T,
    H,
    n_chunks,
    tokens_per_chunk,
    stride_qb,
    stride_qt,
    stride_qh,
    stride_kb,
    stride_kt,
    stride_kh,
    stride_gb,
    stride_gt,
    stride_gh,
    D_HEAD: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    """Backward pass 2, one program per (b·H + h, chunk): dq and dk from the reduce's maps (see
    `_bwd_reduce_kernel`). Reads q and k once, writes dq and dk (which share strides) once."""
    i_pid = tl.program_id(0)
    i_bh, i_c = i_pid // n_chunks, i_pid % n_chunks
    i_b, i_h = i_bh // H, i_bh % H
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < D_HEAD
    o_mat = i_bh.to(tl.int64) * BLOCK_D * BLOCK_D + o_d[:, None] * BLOCK_D + o_d[None, :]
    b_mqt = tl.trans(tl.load(mix_q + o_mat)).to(q.dtype.element_ty)
    b_mk = tl.load(mix_k + o_mat).to(q.dtype.element_ty)
    o_vec = i_bh.to(tl.int64) * 4 * BLOCK_D + o_d
    b_inv_q, b_r = tl.load(vec + o_vec), tl.load(vec + o_vec + BLOCK_D)
    b_inv_k, b_c = tl.load(vec + o_vec + 2 * BLOCK_D), tl.load(vec + o_vec + 3 * BLOCK_D)
    p_q = q + i_b.to(tl.int64) * stride_qb + i_h.to(tl.int64) * stride_qh
    p_k = k + i_b.to(tl.int64) * stride_kb + i_h.to(tl.int64) * stride_kh
    o_g = i_b.to(tl.int64) * stride_gb + i_h.to(tl.int64) * stride_gh
    t_start = i_c * tokens_per_chunk
    t_end = tl.minimum(t_start + tokens_per_chunk, T)
    for t0 in range(t_start, t_end, BLOCK_T):
        o_t = (t0 + tl.arange(0, BLOCK_T)).to(tl.int64)
        m_td = (o_t < t_end)[:, None] & m_d[None, :]
        b_q = tl.load(p_q + o_t[:, None] * stride_qt + o_d[None, :], mask=m_td, other=0.0)  # (BLOCK_T, BLOCK_D)
        b_k = tl.load(p_k + o_t[:, None] * stride_kt + o_d[None, :], mask=m_td, other=0.0)
        # dq[t, i] = (1/n_q,i)·(Σ_j mix_q[i, j] k[t, j] − (r/n_q)_i q[t, i])
        b_dq = tl.dot(b_k, b_mqt, input_precision=PRECISION) - b_r[None, :] * b_q.to(tl.float32)
        # dk[t, j] = (1/n_k,j)·(Σ_i q[t, i] mix_k[i, j] − (c/n_k)_j k[t, j])
        b_dk = tl.dot(b_q, b_mk, input_precision=PRECISION) - b_c[None, :] * b_k.to(tl.float32)
        o_tg = o_g + o_t[:, None] * stride_gt + o_d[None, :]
        tl.store(dq + o_tg, (b_dq * b_inv_q[None, :]).to(dq.dtype.element_ty), mask=m_td)
        tl.store(dk + o_tg, (b_dk * b_inv_k[None, :]).to(dk.dtype.element_ty), mask=m_td)


def _empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Every buffer a kernel writes is allocated here (tests fill them with NaN to catch unwritten elements)."""
    return torch.empty(shape, dtype=dtype, device=device)


def _grid(heads: int, chunks: int) -> tuple[int]:
    """Programs of a token pass, numbered head-major: program `i` sums chunk `i % chunks` of head `i // chunks`."""
    return (heads * chunks,)


def _block_d(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


def _precision(dtype: torch.dtype) -> str:
    """fp32 inputs: exact fp32 dots, TF32 only where torch's matmuls allow it. 16-bit inputs ignore it."""
    return "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"


def _chunking(T: int, heads: int, device: torch.device, tokens_per_chunk: int | None) -> tuple[int, int]:
    """(tokens per chunk, chunks) for every token pass: about four programs per SM in all, so that one long
    sequence with few heads still fills the GPU, but never chunks under MIN_TOKENS_PER_CHUNK tokens (each
    program loads its head's d×d maps once per chunk)."""
    if tokens_per_chunk is None:
        sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
        chunks = max(1, triton.cdiv(4 * sms, heads))
        tokens_per_chunk = max(MIN_TOKENS_PER_CHUNK, triton.cdiv(T, chunks))
    return tokens_per_chunk, triton.cdiv(T, tokens_per_chunk)


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


def _unit_last_stride(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def xca_forward(q, k, v, tau, tokens_per_chunk: int | None = None):
    """`q, k, v [B,T,H,d]`, `tau [H]` -> `O [B,T,H,d]` and the fp32 statistics the backward needs:
    `A, Ĝ [B·H, BLOCK_D, BLOCK_D]` and the raw norms `‖q‖, ‖k‖ [B·H, BLOCK_D]`."""
    B, T, H, d = q.shape
    BH, BLOCK_D, device = B * H, _block_d(d), q.device
    chunk, n_chunks = _chunking(T, BH, device, tokens_per_chunk)
    precision = _precision(q.dtype)
    g_part = _empty((BH, n_chunks, BLOCK_D, BLOCK_D), torch.float32, device)
    nq_part = _empty((BH, n_chunks, BLOCK_D), torch.float32, device)
    nk_part = _empty((BH, n_chunks, BLOCK_D), torch.float32, device)
    _gram_kernel[_grid(BH, n_chunks)](
        q,
        k,
        g_part,
        nq_part,
        nk_part,
        T,
        H,
        n_chunks,
        chunk,
        *_strides(q),
        *_strides(k),
        D_HEAD=d,
        BLOCK_D=BLOCK_D,
        PRECISION=precision,
    )
    attn = _empty((BH, BLOCK_D, BLOCK_D), torch.float32, device)
    gram_hat = _empty((BH, BLOCK_D, BLOCK_D), torch.float32, device)
    norm_q = _empty((BH, BLOCK_D), torch.float32, device)
    norm_k = _empty((BH, BLOCK_D), torch.float32, device)
    _reduce_kernel[(BH,)](
        g_part,
        nq_part,
        nk_part,
        tau,
        attn,
        gram_hat,
        norm_q,
        norm_k,
        H,
        n_chunks,
        EPS=EPS,
        D_HEAD=d,
        BLOCK_D=BLOCK_D,
        num_warps=4 if BLOCK_D <= 64 else 8,
    )
    out = _empty((B, T, H, d), q.dtype, device)
    _apply_kernel[_grid(BH, n_chunks)](
        v,
        attn,
        out,
        T,
        H,
        n_chunks,
        chunk,
        *_strides(v),
        *_strides(out),
        D_HEAD=d,
        BLOCK_D=BLOCK_D,
        PRECISION=precision,
    )
    return out, attn, gram_hat, norm_q, norm_k


def xca_backward(q, k, v, tau, attn, gram_hat, norm_q, norm_k, d_out, tokens_per_chunk: int | None = None):
    """Gradients `dq, dk, dv [B,T,H,d]` and `dtau [H]` from the forward's statistics and `d_out [B,T,H,d]`."""
    B, T, H, d = q.shape
    BH, BLOCK_D, device = B * H, _block_d(d), q.device
    chunk, n_chunks = _chunking(T, BH, device, tokens_per_chunk)
    precision = _precision(q.dtype)
    dv = _empty((B, T, H, d), v.dtype, device)
    da_part = _empty((BH, n_chunks, BLOCK_D, BLOCK_D), torch.float32, device)
    _bwd_dv_kernel[_grid(BH, n_chunks)](
        d_out,
        v,
        attn,
        dv,
        da_part,
        T,
        H,
        n_chunks,
        chunk,
        *_strides(d_out),
        *_strides(v),
        *_strides(dv),
        D_HEAD=d,
        BLOCK_D=BLOCK_D,
        PRECISION=precision,
    )
    mix_q = _empty((BH, BLOCK_D, BLOCK_D), torch.float32, device)
    mix_k = _empty((BH, BLOCK_D, BLOCK_D), torch.float32, device)
    vec = _empty((BH, 4, BLOCK_D), torch.float32, device)
    dtau = _empty((B, H), torch.float32, device)
    _bwd_reduce_kernel[(BH,)](
        da_part,
        attn,
        gram_hat,
        norm_q,
        norm_k,
        tau,
        mix_q,
        mix_k,
        vec,
        dtau,
        H,
        n_chunks,
        EPS=EPS,
        BLOCK_D=BLOCK_D,
        num_warps=4 if BLOCK_D <= 64 else 8,
    )
    dq = _empty((B, T, H, d), q.dtype, device)
    dk = _empty((B, T, H, d), k.dtype, device)
    _bwd_qk_kernel[_grid(BH, n_chunks)](
        q,
        k,
        mix_q,
        mix_k,
        vec,
        dq,
        dk,
        T,
        H,
        n_chunks,
        chunk,
        *_strides(q),
        *_strides(k),
        *_strides(dq),
        D_HEAD=d,
        BLOCK_D=BLOCK_D,
        PRECISION=precision,
    )
    return dq, dk, dv, dtau.sum(dim=0).to(tau.dtype)


class XCAFunction(torch.autograd.Function):
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
