"""The XCA kernels in Triton, forward and backward: two passes over the tokens each way, fp32 statistics in
between (triton_xca launches them and holds the autograd function).

With `Ĝ = diag(1/‖q‖)(q kᵀ)diag(1/‖k‖)` (per batch row and head, `q, k` as `d×T`), `A = softmax_rows(τ·Ĝ)`
and `O = A v`:

forward   pass 1  reads q, k; each program sums one chunk of tokens into a `d×d` Gram and two norm vectors
          reduce  one program per (b, h) and block of rows adds the chunks' partials, normalises, applies τ,
                  softmaxes -> A, Ĝ
          pass 2  reads v, writes `O = A v`, chunk by chunk
backward  pass 1  reads dO, v; sums `dA = dO vᵀ` per chunk and writes `dv = Aᵀ dO` (A is saved)
          reduce  per (b, h) and block of rows: softmax backward `dS = A ⊙ (dA − rowsum(dA ⊙ A))`, `dτ = Σ dS ⊙ Ĝ`, `dĜ = τ·dS`, and the
                  normalisation's backward folded into two `d×d` maps and two vectors (see `bwd_reduce_kernel`)
          pass 2  reads q, k, writes dq, dk

Partials are written per chunk and added by the reduce kernels, not accumulated with atomics, so every run
gives the same bits and the autotuner may rerun a pass. Heads narrower than 16 or not a power of two are
padded to `BLOCK_D = max(16, next_pow2(d))` with masks (tl.dot needs every dimension >= 16); the padded
rows and columns of every saved statistic are written (zeros, or a harmless uniform softmax row), so no
buffer holds unwritten memory.

Only imported when the `triton` implementation runs (the registry loads it lazily).
"""

from __future__ import annotations

import triton
import triton.language as tl

from attnbench.mechanisms.triton_common import autotune_configs, launchable

# Token blocks the autotuner tries on a GPU for the passes over the tokens, with their warps: 8 from 64 tokens,
# where a d = 128 head's d×d fp32 accumulator and the token tiles would otherwise crowd 4 warps' registers.
TOKEN_BLOCKS = {32: (4,), 64: (8,), 128: (8,)}


def token_configs(small: bool = False) -> list[triton.Config]:
    """Autotune configs over the token block BLOCK_T (a fresh list for every kernel). `small` adds 16 tokens with
    a two-stage pipeline: the one config of the backward's q, k pass that fits an A100's 163 KB at d = 128 in
    fp32 (its two d×d fp32 maps alone take 128 KB)."""
    configs = autotune_configs("BLOCK_T", tuple(TOKEN_BLOCKS), TOKEN_BLOCKS)
    if small and len(configs) > 1:  # on a GPU (the interpreter has one config)
        configs.append(triton.Config({"BLOCK_T": 16}, num_warps=4, num_stages=2))
    return configs


@triton.autotune(configs=token_configs(), key=["D_HEAD"], prune_configs_by=launchable(f"{__name__}:gram_kernel"))
@triton.jit
def gram_kernel(
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
    D_HEAD,
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
def reduce_kernel(
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
    D_HEAD,
    BLOCK_D: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    """Forward reduce, one program per (b, h) and block of BLOCK_R rows of the head's d×d maps (softmax rows are
    independent, so a head's reduce spreads over BLOCK_D / BLOCK_R programs): add the chunks' partials,
    `Ĝ = G / (max(‖q‖, eps) max(‖k‖, eps)ᵀ)`, `A = softmax_rows(τ_h·Ĝ)` over the `d` real columns. Writes the
    rows of A, Ĝ (padded, fp32) and of the raw q norms; the first row block writes the k norms."""
    i_bh, i_r = tl.program_id(0), tl.program_id(1)
    o_r = i_r * BLOCK_R + tl.arange(0, BLOCK_R)
    o_d = tl.arange(0, BLOCK_D)
    o_rd = o_r[:, None] * BLOCK_D + o_d[None, :]
    b_g = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
    b_nq2 = tl.zeros([BLOCK_R], dtype=tl.float32)
    b_nk2 = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i_c in range(n_chunks):
        o_part = i_bh.to(tl.int64) * n_chunks + i_c
        b_g += tl.load(g_part + o_part * BLOCK_D * BLOCK_D + o_rd)
        b_nq2 += tl.load(nq_part + o_part * BLOCK_D + o_r)
        b_nk2 += tl.load(nk_part + o_part * BLOCK_D + o_d)
    b_nq, b_nk = tl.sqrt_rn(b_nq2), tl.sqrt_rn(b_nk2)
    b_ghat = b_g / (tl.maximum(b_nq, EPS)[:, None] * tl.maximum(b_nk, EPS)[None, :])
    b_tau = tl.load(tau + i_bh % H).to(tl.float32)
    b_s = tl.where((o_d < D_HEAD)[None, :], b_ghat * b_tau, float("-inf"))
    b_e = tl.exp(b_s - tl.max(b_s, axis=1)[:, None])
    b_a = b_e / tl.sum(b_e, axis=1)[:, None]
    o_out = i_bh.to(tl.int64) * BLOCK_D * BLOCK_D + o_rd
    tl.store(attn + o_out, b_a)
    tl.store(gram_hat + o_out, b_ghat)
    tl.store(norm_q + i_bh.to(tl.int64) * BLOCK_D + o_r, b_nq)
    tl.store(norm_k + i_bh.to(tl.int64) * BLOCK_D + o_d, b_nk, mask=o_d < tl.where(i_r == 0, BLOCK_D, 0))


@triton.autotune(configs=token_configs(), key=["D_HEAD"], prune_configs_by=launchable(f"{__name__}:apply_kernel"))
@triton.jit
def apply_kernel(
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
    D_HEAD,
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


@triton.autotune(configs=token_configs(), key=["D_HEAD"], prune_configs_by=launchable(f"{__name__}:bwd_dv_kernel"))
@triton.jit
def bwd_dv_kernel(
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
    D_HEAD,
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
def bwd_reduce_kernel(
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
    BLOCK_R: tl.constexpr,
):
    """Backward reduce, one program per (b, h) and block of BLOCK_R rows of the d×d maps. With `dĜ = τ·A ⊙ (dA − rowsum(dA ⊙ A))`, `q̂ = q / n_q`:

    `dq = (1/n_q) ⊙ (dĜ diag(1/n_k) k − (r/n_q) ⊙ q)` with `r = rowsum(dĜ ⊙ Ĝ)` (`= q̂·dq̂` per channel, so
    no token sum is needed), and symmetrically `dk = (1/n_k) ⊙ ((diag(1/n_q) dĜ)ᵀ q − (c/n_k) ⊙ k)` with
    `c = colsum(dĜ ⊙ Ĝ)`. A channel whose norm is clamped to eps has no projection term (the clamp's
    gradient is zero). Writes `mix_q = dĜ diag(1/n_k)`, `mix_k = diag(1/n_q) dĜ` (entries of order 1/d,
    safe to round to 16 bits), `vec = [1/n_q, r/n_q, 1/n_k, (c/n_k) of each row block]` (the rows' share of c;
    the q, k pass adds them) and the rows' share of dτ into `dtau [B·H, row blocks]`."""
    i_bh, i_r, n_r = tl.program_id(0), tl.program_id(1), tl.num_programs(1)
    o_r = i_r * BLOCK_R + tl.arange(0, BLOCK_R)
    o_d = tl.arange(0, BLOCK_D)
    o_rd = o_r[:, None] * BLOCK_D + o_d[None, :]
    b_da = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
    for i_c in range(n_chunks):
        b_da += tl.load(da_part + (i_bh.to(tl.int64) * n_chunks + i_c) * BLOCK_D * BLOCK_D + o_rd)
    o_mat = i_bh.to(tl.int64) * BLOCK_D * BLOCK_D + o_rd
    b_a = tl.load(attn + o_mat)
    b_ghat = tl.load(gram_hat + o_mat)
    b_nq = tl.load(norm_q + i_bh.to(tl.int64) * BLOCK_D + o_r)
    b_nk = tl.load(norm_k + i_bh.to(tl.int64) * BLOCK_D + o_d)
    b_ds = b_a * (b_da - tl.sum(b_da * b_a, axis=1)[:, None])
    tl.store(dtau + i_bh.to(tl.int64) * n_r + i_r, tl.sum(tl.sum(b_ds * b_ghat, axis=1), axis=0))
    b_dghat = b_ds * tl.load(tau + i_bh % H).to(tl.float32)
    b_inv_q = 1.0 / tl.maximum(b_nq, EPS)
    b_inv_k = 1.0 / tl.maximum(b_nk, EPS)
    b_r = tl.where(b_nq >= EPS, tl.sum(b_dghat * b_ghat, axis=1) * b_inv_q, 0.0)
    b_c = tl.where(b_nk >= EPS, tl.sum(b_dghat * b_ghat, axis=0) * b_inv_k, 0.0)
    tl.store(mix_q + o_mat, b_dghat * b_inv_k[None, :])
    tl.store(mix_k + o_mat, b_dghat * b_inv_q[:, None])
    o_vec = i_bh.to(tl.int64) * (3 + n_r) * BLOCK_D
    tl.store(vec + o_vec + o_r, b_inv_q)
    tl.store(vec + o_vec + BLOCK_D + o_r, b_r)
    tl.store(vec + o_vec + 2 * BLOCK_D + o_d, b_inv_k, mask=o_d < tl.where(i_r == 0, BLOCK_D, 0))
    tl.store(vec + o_vec + (3 + i_r) * BLOCK_D + o_d, b_c)


@triton.autotune(
    configs=token_configs(small=True), key=["D_HEAD"], prune_configs_by=launchable(f"{__name__}:bwd_qk_kernel")
)
@triton.jit
def bwd_qk_kernel(
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
    n_row_blocks,
    stride_qb,
    stride_qt,
    stride_qh,
    stride_kb,
    stride_kt,
    stride_kh,
    stride_gb,
    stride_gt,
    stride_gh,
    D_HEAD,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    """Backward pass 2, one program per (b·H + h, chunk): dq and dk from the reduce's maps (see
    `bwd_reduce_kernel`). Reads q and k once, writes dq and dk (which share strides) once."""
    i_pid = tl.program_id(0)
    i_bh, i_c = i_pid // n_chunks, i_pid % n_chunks
    i_b, i_h = i_bh // H, i_bh % H
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < D_HEAD
    o_mat = i_bh.to(tl.int64) * BLOCK_D * BLOCK_D + o_d[:, None] * BLOCK_D + o_d[None, :]
    b_mqt = tl.trans(tl.load(mix_q + o_mat)).to(q.dtype.element_ty)
    b_mk = tl.load(mix_k + o_mat).to(q.dtype.element_ty)
    o_vec = i_bh.to(tl.int64) * (3 + n_row_blocks) * BLOCK_D + o_d
    b_inv_q, b_r, b_inv_k = tl.load(vec + o_vec), tl.load(vec + o_vec + BLOCK_D), tl.load(vec + o_vec + 2 * BLOCK_D)
    b_c = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i_r in range(n_row_blocks):  # the row blocks' shares of c/n_k
        b_c += tl.load(vec + o_vec + (3 + i_r) * BLOCK_D)
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
