"""AFT-simple in Triton, non-causal and causal, forward and backward (README.md: design, bytes, status).

`q, k, v [B,T,H,d]` are read as `[B,T,C]` with the C = H·d channels contiguous. A program owns BLOCK_C channels
of one batch row and a chunk of TILES_PER_CHUNK·BLOCK_T tokens, which it walks in `[BLOCK_T, BLOCK_C]` tiles:
every load is a contiguous tile, and chunks give enough programs when B = 1 and T is long.

The state of a run of tokens, per channel, is `(m, n, d)`: m the max of K over the run, `n = Σ e^{K−m}·V`,
`d = Σ e^{K−m}`, all fp32. Two states merge exactly by rescaling to the larger m.

Forward, non-causal: chunk states (`_chunk_state_kernel`: reads K, V), their total (`_chunk_carry_kernel`), then
`Y = σ(Q)·n/d` (`_simple_fwd_kernel`: reads Q, writes Y). Causal: the carry kernel gives each chunk the state of
the tokens before it, and each chunk scans its tiles from there: a tile's rows share its scale
`M = max(carry m, tile max of K)` (the running max at the tile's end), the rows are the carry rescaled plus
cumulative sums of `e^{K−M}` inside the tile, and the state after every tile is kept for the backward (fp32,
3 values per channel per tile). With one chunk (enough programs from B and C alone) the chunk-state pass is
skipped and the causal forward reads Q, K, V once.

Backward (`ρ_t = dY_t·σ(Q_t)/den_t`, `υ_t = ρ_t·ybar_t`, `ybar = num/den`):
`dQ = dY·ybar·σ'(Q)`, `dV_t' = e^{K_t'−M}·Σ_{t≥t'} ρ_t·e^{M−M_t}`,
`dK_t' = e^{K_t'−M}·Σ_{t≥t'} (ρ_t V_t' − υ_t)·e^{M−M_t}`
(non-causal: over all t, one M). Non-causal: `_simple_bwd_query_kernel` (reads Q, dY, writes dQ, sums ρ per
chunk) then `_simple_bwd_key_kernel` (reads K, V, writes dK, dV). Causal: the reverse sums run tile by tile from
the last, each step decaying by `e^{M_{j−1}−M_j} ≤ 1`; chunks get the sums of the chunks after them from
`_bwd_chunk_sums_kernel` (one recomputing pass) and `_bwd_carry_kernel`, then `_simple_bwd_causal_kernel`
recomputes each tile from its saved state and writes dQ, dK, dV.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from attnbench.mechanisms.aft.spec import triton_unsupported
from attnbench.mechanisms.problem import Problem
from attnbench.mechanisms.registry import Unsupported


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def buffer(shape: tuple[int, ...], dtype: torch.dtype, device) -> torch.Tensor:
    """Every buffer the kernels fill comes from here (tests fill it with NaN to catch an unwritten element)."""
    return torch.empty(shape, dtype=dtype, device=device)


def _configs() -> list[triton.Config]:
    """Channel blocks to try on a GPU (untuned guesses: no GPU was at hand); a single config when interpreted."""
    if _interpreted():
        return [triton.Config({"BLOCK_C": 16}, num_warps=1)]
    return [triton.Config({"BLOCK_C": c}, num_warps=w) for c in (32, 64, 128) for w in (4, 8)]


@triton.jit
def _tile(i_b, t0, T, C, o_c, m_c, BLOCK_T: tl.constexpr):
    """Element offsets `[BLOCK_T, BLOCK_C]` of tokens `t0, ...` of batch row `i_b` and the mask of real ones
    (`t0` may be negative: a band's keys before the first token)."""
    o_t = t0 + tl.arange(0, BLOCK_T)
    o = (i_b.to(tl.int64) * T + o_t[:, None]) * C + o_c[None, :]
    return o, ((o_t >= 0) & (o_t < T))[:, None] & m_c[None, :]


@triton.jit
def _load_state(p_s, plane, o, mask):
    """A state `(m, n, d)` from planes of `p_s`; masked lanes read as the empty state `(−inf, 0, 0)`."""
    b_m = tl.load(p_s + o, mask=mask, other=float("-inf"))
    b_n = tl.load(p_s + plane + o, mask=mask, other=0.0)
    b_d = tl.load(p_s + 2 * plane + o, mask=mask, other=0.0)
    return b_m, b_n, b_d


@triton.jit
def _store_state(p_s, plane, o, mask, b_m, b_n, b_d):
    tl.store(p_s + o, b_m, mask=mask)
    tl.store(p_s + plane + o, b_n, mask=mask)
    tl.store(p_s + 2 * plane + o, b_d, mask=mask)


@triton.jit
def _merge(b_m, b_n, b_d, b_m2, b_n2, b_d2, m_c):
    """State of two runs of tokens; channels off the tensor get m = 0 so that no lane computes −inf − (−inf)."""
    b_M = tl.where(m_c, tl.maximum(b_m, b_m2), 0.0)
    b_f, b_f2 = tl.exp(b_m - b_M), tl.exp(b_m2 - b_M)
    return b_M, b_n * b_f + b_n2 * b_f2, b_d * b_f + b_d2 * b_f2


@triton.jit
def _scan_tile(b_k, b_v, mask, m_c, b_m, b_n, b_d):
    """One tile of the causal scan from the state `(b_m, b_n, b_d)` of the tokens before it.

    Returns the tile's scale M `[BLOCK_C]`, `e = e^{K−M}` (0 off the sequence), the rows' `num, den` relative to
    M `[BLOCK_T, BLOCK_C]` (den 1 on channels off the tensor, so that no lane divides 0 by 0), and the state
    after the tile."""
    b_M = tl.where(m_c, tl.maximum(b_m, tl.max(tl.where(mask, b_k, float("-inf")), axis=0)), 0.0)
    b_f = tl.exp(b_m - b_M)  # rescales the carry; 0 for the empty state
    b_e = tl.exp(tl.where(mask, b_k - b_M[None, :], float("-inf")))
    b_ev = b_e * b_v
    b_num = tl.cumsum(b_ev, axis=0) + (b_n * b_f)[None, :]
    b_den = tl.where(m_c[None, :], tl.cumsum(b_e, axis=0) + (b_d * b_f)[None, :], 1.0)
    return b_M, b_e, b_num, b_den, b_n * b_f + tl.sum(b_ev, axis=0), b_d * b_f + tl.sum(b_e, axis=0)


@triton.jit
def _load_tile(p_x, o, mask):
    return tl.load(p_x + o, mask=mask, other=0.0).to(tl.float32)


@triton.autotune(configs=_configs(), key=["C"])
@triton.jit
def _chunk_state_kernel(
    p_k, p_v, p_s, T, C, NT, NCHUNK, BLOCK_T: tl.constexpr, TILES_PER_CHUNK: tl.constexpr, BLOCK_C: tl.constexpr
):
    """State of every chunk on its own: `s [3, B, NCHUNK, C]`."""
    i_c, i_n, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    b_m = tl.full([BLOCK_C], float("-inf"), tl.float32)
    b_n = tl.zeros([BLOCK_C], tl.float32)
    b_d = tl.zeros([BLOCK_C], tl.float32)
    j0 = i_n * TILES_PER_CHUNK
    for j in range(j0, tl.minimum(j0 + TILES_PER_CHUNK, NT)):
        o, mask = _tile(i_b, j * BLOCK_T, T, C, o_c, m_c, BLOCK_T)
        b_k = _load_tile(p_k, o, mask)
        b_M = tl.where(m_c, tl.maximum(b_m, tl.max(tl.where(mask, b_k, float("-inf")), axis=0)), 0.0)
        b_f = tl.exp(b_m - b_M)
        b_e = tl.exp(tl.where(mask, b_k - b_M[None, :], float("-inf")))
        b_n = b_n * b_f + tl.sum(b_e * _load_tile(p_v, o, mask), axis=0)
        b_d = b_d * b_f + tl.sum(b_e, axis=0)
        b_m = b_M
    o_s = (i_b.to(tl.int64) * NCHUNK + i_n) * C + o_c
    _store_state(p_s, tl.num_programs(2).to(tl.int64) * NCHUNK * C, o_s, m_c, b_m, b_n, b_d)


@triton.autotune(configs=_configs(), key=["C"])
@triton.jit
def _chunk_carry_kernel(p_s, p_carry, p_total, C, NCHUNK, BLOCK_C: tl.constexpr):
    """`carry [3, B, NCHUNK, C]`: the state of the chunks before each chunk; `total [3, B, C]`: of all chunks."""
    i_c, i_b = tl.program_id(0), tl.program_id(1)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    plane = tl.num_programs(1).to(tl.int64) * NCHUNK * C
    b_m = tl.full([BLOCK_C], float("-inf"), tl.float32)
    b_n = tl.zeros([BLOCK_C], tl.float32)
    b_d = tl.zeros([BLOCK_C], tl.float32)
    for i_n in range(NCHUNK):
        o_s = (i_b.to(tl.int64) * NCHUNK + i_n) * C + o_c
        _store_state(p_carry, plane, o_s, m_c, b_m, b_n, b_d)
        b_m2, b_n2, b_d2 = _load_state(p_s, plane, o_s, m_c)
        b_m, b_n, b_d = _merge(b_m, b_n, b_d, b_m2, b_n2, b_d2, m_c)
    _store_state(p_total, tl.num_programs(1).to(tl.int64) * C, i_b.to(tl.int64) * C + o_c, m_c, b_m, b_n, b_d)


@triton.autotune(configs=_configs(), key=["C", "CAUSAL"])
@triton.jit
def _simple_fwd_kernel(
    p_q,
    p_k,
    p_v,
    p_y,
    p_carry,
    p_total,
    p_tiles,
    T,
    C,
    NT,
    NCHUNK,
    CAUSAL: tl.constexpr,
    BLOCK_T: tl.constexpr,
    TILES_PER_CHUNK: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """`Y = σ(Q)·num/den`; causal: scans the chunk's tiles from its carry and saves the state after each tile in
    `tiles [3, B, NT, C]`."""
    i_c, i_n, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    n_b = tl.num_programs(2).to(tl.int64)
    j0 = i_n * TILES_PER_CHUNK
    if CAUSAL:
        b_m, b_n, b_d = _load_state(p_carry, n_b * NCHUNK * C, (i_b.to(tl.int64) * NCHUNK + i_n) * C + o_c, m_c)
    else:
        b_m, b_n, b_d = _load_state(p_total, n_b * C, i_b.to(tl.int64) * C + o_c, m_c)
        b_ybar = b_n / tl.where(m_c, b_d, 1.0)
    for j in range(j0, tl.minimum(j0 + TILES_PER_CHUNK, NT)):
        o, mask = _tile(i_b, j * BLOCK_T, T, C, o_c, m_c, BLOCK_T)
        b_q = _load_tile(p_q, o, mask)
        if CAUSAL:
            b_k, b_v = _load_tile(p_k, o, mask), _load_tile(p_v, o, mask)
            b_m, _, b_num, b_den, b_n, b_d = _scan_tile(b_k, b_v, mask, m_c, b_m, b_n, b_d)
            b_y = tl.sigmoid(b_q) * b_num / b_den
            _store_state(p_tiles, n_b * NT * C, (i_b.to(tl.int64) * NT + j) * C + o_c, m_c, b_m, b_n, b_d)
        else:
            b_y = tl.sigmoid(b_q) * b_ybar[None, :]
        tl.store(p_y + o, b_y.to(p_y.dtype.element_ty), mask=mask)


@triton.autotune(configs=_configs(), key=["C"])
@triton.jit
def _simple_bwd_query_kernel(
    p_q, p_dy, p_dq, p_total, p_part, T, C, NT, NCHUNK,
    BLOCK_T: tl.constexpr, TILES_PER_CHUNK: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Non-causal: `dQ = dY·ybar·σ'(Q)` and the chunk's `Σ_t dY·σ(Q)` into `part [B, NCHUNK, C]`."""
    i_c, i_n, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    _, b_n, b_d = _load_state(p_total, tl.num_programs(2).to(tl.int64) * C, i_b.to(tl.int64) * C + o_c, m_c)
    b_ybar = b_n / tl.where(m_c, b_d, 1.0)
    b_acc = tl.zeros([BLOCK_C], tl.float32)
    j0 = i_n * TILES_PER_CHUNK
    for j in range(j0, tl.minimum(j0 + TILES_PER_CHUNK, NT)):
        o, mask = _tile(i_b, j * BLOCK_T, T, C, o_c, m_c, BLOCK_T)
        b_dy = _load_tile(p_dy, o, mask)
        b_s = tl.sigmoid(_load_tile(p_q, o, mask))
        tl.store(p_dq + o, (b_dy * b_ybar[None, :] * b_s * (1 - b_s)).to(p_dq.dtype.element_ty), mask=mask)
        b_acc += tl.sum(b_dy * b_s, axis=0)
    tl.store(p_part + (i_b.to(tl.int64) * NCHUNK + i_n) * C + o_c, b_acc, mask=m_c)


@triton.autotune(configs=_configs(), key=["C"])
@triton.jit
def _simple_bwd_key_kernel(
    p_k, p_v, p_dk, p_dv, p_total, p_part, T, C, NT, NCHUNK,
    BLOCK_T: tl.constexpr, TILES_PER_CHUNK: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Non-causal: with `g = Σ_t dY·σ(Q)`, `dV = e^{K−m}·g/d` and `dK = e^{K−m}·(V − ybar)·g/d`."""
    i_c, i_n, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    b_m, b_n, b_d = _load_state(p_total, tl.num_programs(2).to(tl.int64) * C, i_b.to(tl.int64) * C + o_c, m_c)
    b_g = tl.zeros([BLOCK_C], tl.float32)
    for i_p in range(NCHUNK):
        b_g += tl.load(p_part + (i_b.to(tl.int64) * NCHUNK + i_p) * C + o_c, mask=m_c, other=0.0)
    b_d = tl.where(m_c, b_d, 1.0)
    b_ybar, b_r = b_n / b_d, b_g / b_d
    j0 = i_n * TILES_PER_CHUNK
    for j in range(j0, tl.minimum(j0 + TILES_PER_CHUNK, NT)):
        o, mask = _tile(i_b, j * BLOCK_T, T, C, o_c, m_c, BLOCK_T)
        b_e = tl.exp(tl.where(mask, _load_tile(p_k, o, mask) - b_m[None, :], float("-inf")))
        b_dv = b_e * b_r[None, :]
        tl.store(p_dv + o, b_dv.to(p_dv.dtype.element_ty), mask=mask)
        tl.store(p_dk + o, (b_dv * (_load_tile(p_v, o, mask) - b_ybar[None, :])).to(p_dk.dtype.element_ty), mask=mask)


@triton.autotune(configs=_configs(), key=["C"])
@triton.jit
def _bwd_chunk_sums_kernel(
    p_q, p_k, p_v, p_dy, p_tiles, p_z, T, C, NT, NCHUNK,
    BLOCK_T: tl.constexpr, TILES_PER_CHUNK: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Causal: each chunk's `Z = Σ_j e^{M_first − M_j}·Σ_{t in tile j} ρ_t` and `Z'` (with υ) into
    `z [2, B, NCHUNK, C]`, relative to the scale of the chunk's first tile; tiles recomputed from their states."""
    i_c, i_n, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    n_b = tl.num_programs(2).to(tl.int64)
    b_z = tl.zeros([BLOCK_C], tl.float32)
    b_z2 = tl.zeros([BLOCK_C], tl.float32)
    j0 = i_n * TILES_PER_CHUNK
    o_s = (i_b.to(tl.int64) * NT + j0 - 1) * C + o_c  # the state after the tile before the chunk
    b_m, b_n, b_d = _load_state(p_tiles, n_b * NT * C, o_s, tl.where(j0 > 0, m_c, False))
    b_first = tl.zeros([BLOCK_C], tl.float32)
    for j in range(j0, tl.minimum(j0 + TILES_PER_CHUNK, NT)):
        o, mask = _tile(i_b, j * BLOCK_T, T, C, o_c, m_c, BLOCK_T)
        b_k, b_v = _load_tile(p_k, o, mask), _load_tile(p_v, o, mask)
        b_m, _, b_num, b_den, b_n, b_d = _scan_tile(b_k, b_v, mask, m_c, b_m, b_n, b_d)
        b_first = tl.where(j == j0, b_m, b_first)
        b_rho = _load_tile(p_dy, o, mask) * tl.sigmoid(_load_tile(p_q, o, mask)) / b_den
        b_f = tl.exp(b_first - b_m)
        b_z += b_f * tl.sum(b_rho, axis=0)
        b_z2 += b_f * tl.sum(b_rho * b_num / b_den, axis=0)
    o_z = (i_b.to(tl.int64) * NCHUNK + i_n) * C + o_c
    tl.store(p_z + o_z, b_z, mask=m_c)
    tl.store(p_z + n_b * NCHUNK * C + o_z, b_z2, mask=m_c)


@triton.autotune(configs=_configs(), key=["C"])
@triton.jit
def _bwd_carry_kernel(p_z, p_tiles, p_h, C, NT, NCHUNK, TILES_PER_CHUNK: tl.constexpr, BLOCK_C: tl.constexpr):
    """Causal: `h [2, B, NCHUNK, C]`, the sums of the chunks after each chunk rescaled to the scale of its last
    tile: `H_c = e^{M_last(c) − M_first(c+1)}·(Z_{c+1} + e^{M_first(c+1) − M_last(c+1)}·H_{c+1})`."""
    i_c, i_b = tl.program_id(0), tl.program_id(1)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    plane = tl.num_programs(1).to(tl.int64) * NCHUNK * C
    b_h = tl.zeros([BLOCK_C], tl.float32)
    b_h2 = tl.zeros([BLOCK_C], tl.float32)
    for i in range(NCHUNK):
        i_n = NCHUNK - 1 - i
        o_z = (i_b.to(tl.int64) * NCHUNK + i_n) * C + o_c
        tl.store(p_h + o_z, b_h, mask=m_c)
        tl.store(p_h + plane + o_z, b_h2, mask=m_c)
        j0 = i_n * TILES_PER_CHUNK
        j1 = tl.minimum(j0 + TILES_PER_CHUNK, NT)
        o_t = i_b.to(tl.int64) * NT * C + o_c
        b_first = tl.load(p_tiles + o_t + j0 * C, mask=m_c, other=0.0)
        b_last = tl.load(p_tiles + o_t + (j1 - 1) * C, mask=m_c, other=0.0)
        b_prev = tl.load(p_tiles + o_t + (j0 - 1) * C, mask=tl.where(j0 > 0, m_c, False), other=float("-inf"))
        b_f = tl.exp(b_first - b_last)
        b_g = tl.exp(b_prev - b_first)
        b_h = b_g * (tl.load(p_z + o_z, mask=m_c, other=0.0) + b_f * b_h)
        b_h2 = b_g * (tl.load(p_z + plane + o_z, mask=m_c, other=0.0) + b_f * b_h2)


@triton.autotune(configs=_configs(), key=["C"])
@triton.jit
def _simple_bwd_causal_kernel(
    p_q, p_k, p_v, p_dy, p_dq, p_dk, p_dv, p_tiles, p_h, T, C, NT, NCHUNK,
    BLOCK_T: tl.constexpr, TILES_PER_CHUNK: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Causal: tiles from the chunk's last, each recomputed from the saved state before it; writes dQ, dK, dV."""
    i_c, i_n, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    n_b = tl.num_programs(2).to(tl.int64)
    o_h = (i_b.to(tl.int64) * NCHUNK + i_n) * C + o_c
    b_g = tl.load(p_h + o_h, mask=m_c, other=0.0)
    b_g2 = tl.load(p_h + n_b * NCHUNK * C + o_h, mask=m_c, other=0.0)
    j0 = i_n * TILES_PER_CHUNK
    j1 = tl.minimum(j0 + TILES_PER_CHUNK, NT)
    for i in range(j1 - j0):
        j = j1 - 1 - i
        o, mask = _tile(i_b, j * BLOCK_T, T, C, o_c, m_c, BLOCK_T)
        o_s = (i_b.to(tl.int64) * NT + j - 1) * C + o_c  # the state after the previous tile
        b_prev, b_n, b_d = _load_state(p_tiles, n_b * NT * C, o_s, tl.where(j > 0, m_c, False))
        b_k, b_v = _load_tile(p_k, o, mask), _load_tile(p_v, o, mask)
        b_M, b_e, b_num, b_den, _, _ = _scan_tile(b_k, b_v, mask, m_c, b_prev, b_n, b_d)
        b_dy = _load_tile(p_dy, o, mask)
        b_s = tl.sigmoid(_load_tile(p_q, o, mask))
        b_ybar = b_num / b_den
        tl.store(p_dq + o, (b_dy * b_ybar * b_s * (1 - b_s)).to(p_dq.dtype.element_ty), mask=mask)
        b_rho = b_dy * b_s / b_den
        b_u = tl.cumsum(b_rho, axis=0, reverse=True) + b_g[None, :]
        b_u2 = tl.cumsum(b_rho * b_ybar, axis=0, reverse=True) + b_g2[None, :]
        tl.store(p_dv + o, (b_e * b_u).to(p_dv.dtype.element_ty), mask=mask)
        tl.store(p_dk + o, (b_e * (b_v * b_u - b_u2)).to(p_dk.dtype.element_ty), mask=mask)
        b_f = tl.exp(b_prev - b_M)  # decay to the previous tile's scale; 0 before the first tile
        b_g = b_f * (b_g + tl.sum(b_rho, axis=0))
        b_g2 = b_f * (b_g2 + tl.sum(b_rho * b_ybar, axis=0))


@dataclass(frozen=True)
class Layout:
    """How `[B, T, C]` is cut: tiles of `block_t` tokens, chunks of `tiles_per_chunk` tiles, one program per
    (channel block, chunk, batch row)."""

    B: int
    T: int
    C: int
    block_t: int
    tiles_per_chunk: int

    @property
    def nt(self) -> int:
        return triton.cdiv(self.T, self.block_t)

    @property
    def nchunk(self) -> int:
        return triton.cdiv(self.nt, self.tiles_per_chunk)

    def grid(self, meta) -> tuple[int, int, int]:
        return triton.cdiv(self.C, meta["BLOCK_C"]), self.nchunk, self.B

    def grid_rows(self, meta) -> tuple[int, int]:
        return triton.cdiv(self.C, meta["BLOCK_C"]), self.B

    def state(self, planes: int, n: int, device) -> torch.Tensor:
        return buffer((planes, self.B, n, self.C), torch.float32, device)


def layout(B: int, T: int, C: int, device: torch.device, tiles_per_chunk: int | None = None) -> Layout:
    """Tiles of 64 tokens (16 when interpreted); chunks small enough for about 4 programs per SM, counting
    channel blocks of 64."""
    block_t = 16 if _interpreted() else 64
    nt = triton.cdiv(T, block_t)
    if tiles_per_chunk is None:
        sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 2
        chunks = max(1, (4 * sms) // (B * triton.cdiv(C, 64)))
        tiles_per_chunk = triton.cdiv(nt, min(nt, chunks))
    return Layout(B, T, C, block_t, tiles_per_chunk)


def chunk_states(k: torch.Tensor, v: torch.Tensor, lay: Layout) -> tuple[torch.Tensor, torch.Tensor]:
    """`carry [3, B, NCHUNK, C]` (state before each chunk) and `total [3, B, C]`, from `k, v [B,T,C]`."""
    states, carry = lay.state(3, lay.nchunk, k.device), lay.state(3, lay.nchunk, k.device)
    total = buffer((3, lay.B, lay.C), torch.float32, k.device)
    common = dict(BLOCK_T=lay.block_t, TILES_PER_CHUNK=lay.tiles_per_chunk)
    _chunk_state_kernel[lay.grid](k, v, states, lay.T, lay.C, lay.nt, lay.nchunk, **common)
    _chunk_carry_kernel[lay.grid_rows](states, carry, total, lay.C, lay.nchunk)
    return carry, total


def empty_carry(lay: Layout, device) -> torch.Tensor:
    carry = torch.zeros(3, lay.B, 1, lay.C, dtype=torch.float32, device=device)
    carry[0] = float("-inf")
    return carry


def chunk_tails(z: torch.Tensor, tiles: torch.Tensor, lay: Layout) -> torch.Tensor:
    """`h [2, B, NCHUNK, C]`: the reverse sums entering each chunk from the chunks after it (causal)."""
    h = buffer(z.shape, z.dtype, z.device)
    _bwd_carry_kernel[lay.grid_rows](z, tiles, h, lay.C, lay.nt, lay.nchunk, TILES_PER_CHUNK=lay.tiles_per_chunk)
    return h


def _forward(q, k, v, causal: bool, lay: Layout):
    y = buffer(q.shape, q.dtype, q.device)
    common = dict(BLOCK_T=lay.block_t, TILES_PER_CHUNK=lay.tiles_per_chunk)
    if causal and lay.nchunk == 1:
        carry = total = empty_carry(lay, q.device)  # the causal kernel reads no total
    else:
        carry, total = chunk_states(k, v, lay)
    tiles = lay.state(3, lay.nt, q.device) if causal else total
    _simple_fwd_kernel[lay.grid](q, k, v, y, carry, total, tiles, lay.T, lay.C, lay.nt, lay.nchunk, causal, **common)
    return y, tiles


def _backward(q, k, v, dy, saved, causal: bool, lay: Layout):
    dq, dk, dv = (buffer(q.shape, q.dtype, q.device) for _ in range(3))
    common = dict(BLOCK_T=lay.block_t, TILES_PER_CHUNK=lay.tiles_per_chunk)
    sizes = (lay.T, lay.C, lay.nt, lay.nchunk)
    if not causal:
        part = buffer((lay.B, lay.nchunk, lay.C), torch.float32, q.device)
        _simple_bwd_query_kernel[lay.grid](q, dy, dq, saved, part, *sizes, **common)
        _simple_bwd_key_kernel[lay.grid](k, v, dk, dv, saved, part, *sizes, **common)
        return dq, dk, dv
    if lay.nchunk == 1:
        h = torch.zeros(2, lay.B, 1, lay.C, dtype=torch.float32, device=q.device)
    else:
        z = lay.state(2, lay.nchunk, q.device)
        _bwd_chunk_sums_kernel[lay.grid](q, k, v, dy, saved, z, *sizes, **common)
        h = chunk_tails(z, saved, lay)
    _simple_bwd_causal_kernel[lay.grid](q, k, v, dy, dq, dk, dv, saved, h, *sizes, **common)
    return dq, dk, dv


class SimpleAFT(torch.autograd.Function):
    """`q, k, v [B,T,C]` contiguous -> `Y [B,T,C]`; saves the fp32 states the backward recomputes from."""

    @staticmethod
    def forward(ctx, q, k, v, causal: bool, lay: Layout):
        y, saved = _forward(q, k, v, causal, lay)
        ctx.save_for_backward(q, k, v, saved)
        ctx.causal, ctx.lay = causal, lay
        return y

    @staticmethod
    def backward(ctx, dy):
        q, k, v, saved = ctx.saved_tensors
        dq, dk, dv = _backward(q, k, v, dy.contiguous(), saved, ctx.causal, ctx.lay)
        if ctx.lay.T == 1:
            dk.zero_()  # one token: Y = σ(Q)·V for any K, so dK is exactly 0 (computed, it is roundoff of V·ρ − ρ·V)
        return dq, dk, dv, None, None


def simple(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, tiles_per_chunk: int | None = None):
    """AFT-simple: `q, k, v [B,T,H,d]` -> `[B,T,H,d]` in q's dtype (fp32 statistics)."""
    B, T = q.shape[:2]
    qc, kc, vc = (t.reshape(B, T, -1).contiguous() for t in (q, k, v))
    lay = layout(B, T, qc.shape[-1], q.device, tiles_per_chunk)
    return SimpleAFT.apply(qc, kc, vc, causal, lay).view(q.shape)


def core(problem: Problem, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """The `triton` implementation of AFT: this kernel for simple, `triton_aft_local` for local; full and conv
    are `Unsupported` (spec.triton_unsupported says why)."""
    reason = triton_unsupported(problem)
    if reason:
        raise Unsupported(reason)
    q, k, v = tensors["q"], tensors["k"], tensors["v"]
    if problem.params["variant"] == "simple":
        return simple(q, k, v, causal=problem.causal)
    from attnbench.mechanisms.aft.triton_aft_local import local

    return local(q, k, v, tensors["w_band"], problem.params["window"], problem.causal)
