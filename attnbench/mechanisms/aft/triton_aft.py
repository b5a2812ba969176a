"""AFT-simple in Triton, non-causal and causal, forward and backward (README.md: design, bytes, status); also
the `triton` implementation's entry point `core`, which runs AFT-local from triton_aft_local.

The tiling, the per-channel state `(m, n, d)` of a run of tokens and the chunk carries are triton_aft_scan's.
Forward, non-causal: chunk states and their total, then `Y = σ(Q)·n/d` (`_simple_fwd_kernel`: reads Q, writes
Y). Causal: each chunk scans its tiles from its carry; the rows of a tile are the carry rescaled to the tile's
scale plus cumulative sums of `e^{K−M}` inside the tile, and the state after every tile is kept for the backward
(fp32, 3 values per channel per tile). With one chunk (enough programs from B and C alone) the chunk-state pass
is skipped and the causal forward reads Q, K, V once.

Backward (`ρ_t = dY_t·σ(Q_t)/den_t`, `υ_t = ρ_t·ybar_t`, `ybar = num/den`):
`dQ = dY·ybar·σ'(Q)`, `dV_t' = e^{K_t'−M}·Σ_{t≥t'} ρ_t·e^{M−M_t}`,
`dK_t' = e^{K_t'−M}·Σ_{t≥t'} (ρ_t V_t' − υ_t)·e^{M−M_t}`
(non-causal: over all t, one M). Non-causal: `_simple_bwd_query_kernel` (reads Q, dY, writes dQ, sums ρ per
chunk) then `_simple_bwd_key_kernel` (reads K, V, writes dK, dV). Causal: the reverse sums run tile by tile from
the last; chunks get the sums of the chunks after them from `_bwd_chunk_sums_kernel` (one recomputing pass) and
triton_aft_scan's chunk tails, then `_simple_bwd_causal_kernel` recomputes each tile from its saved state and
writes dQ, dK, dV.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from attnbench.mechanisms.aft.spec import triton_unsupported
from attnbench.mechanisms.aft.triton_aft_local import local
from attnbench.mechanisms.aft.triton_aft_scan import (
    Layout,
    channel_configs,
    chunk_tails,
    forward_states,
    layout,
    load_state,
    load_tile,
    scan_tile,
    store_state,
    tile_offsets,
)
from attnbench.mechanisms.problem import Problem
from attnbench.mechanisms.registry import Unsupported
from attnbench.mechanisms.triton_common import launchable, scratch


@triton.autotune(
    configs=channel_configs(), key=["C", "CAUSAL"], prune_configs_by=launchable(f"{__name__}:_simple_fwd_kernel")
)
@triton.jit
def _simple_fwd_kernel(
    p_q, p_k, p_v, p_y, p_carry, p_total, p_tiles, T, C, NT, NCHUNK,
    CAUSAL: tl.constexpr, BLOCK_T: tl.constexpr, TILES_PER_CHUNK, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """`Y = σ(Q)·num/den`; causal: scans the chunk's tiles from its carry and saves the state after each tile in
    `tiles [3, B, NT, C]`."""
    i_c, i_n, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    n_b = tl.num_programs(2).to(tl.int64)
    j0 = i_n * TILES_PER_CHUNK
    if CAUSAL:
        b_m, b_n, b_d = load_state(p_carry, n_b * NCHUNK * C, (i_b.to(tl.int64) * NCHUNK + i_n) * C + o_c, m_c)
    else:
        b_m, b_n, b_d = load_state(p_total, n_b * C, i_b.to(tl.int64) * C + o_c, m_c)
        b_ybar = b_n / tl.where(m_c, b_d, 1.0)
    for j in range(j0, tl.minimum(j0 + TILES_PER_CHUNK, NT)):
        o, mask = tile_offsets(i_b, j * BLOCK_T, T, C, o_c, m_c, BLOCK_T)
        b_q = load_tile(p_q, o, mask)
        if CAUSAL:
            b_k, b_v = load_tile(p_k, o, mask), load_tile(p_v, o, mask)
            b_m, _, b_num, b_den, b_n, b_d = scan_tile(b_k, b_v, mask, m_c, b_m, b_n, b_d)
            b_y = tl.sigmoid(b_q) * b_num / b_den
            store_state(p_tiles, n_b * NT * C, (i_b.to(tl.int64) * NT + j) * C + o_c, m_c, b_m, b_n, b_d)
        else:
            b_y = tl.sigmoid(b_q) * b_ybar[None, :]
        tl.store(p_y + o, b_y.to(p_y.dtype.element_ty), mask=mask)


@triton.autotune(
    configs=channel_configs(), key=["C"], prune_configs_by=launchable(f"{__name__}:_simple_bwd_query_kernel")
)
@triton.jit
def _simple_bwd_query_kernel(
    p_q, p_dy, p_dq, p_total, p_part, T, C, NT, NCHUNK,
    BLOCK_T: tl.constexpr, TILES_PER_CHUNK, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Non-causal: `dQ = dY·ybar·σ'(Q)` and the chunk's `Σ_t dY·σ(Q)` into `part [B, NCHUNK, C]`."""
    i_c, i_n, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    _, b_n, b_d = load_state(p_total, tl.num_programs(2).to(tl.int64) * C, i_b.to(tl.int64) * C + o_c, m_c)
    b_ybar = b_n / tl.where(m_c, b_d, 1.0)
    b_acc = tl.zeros([BLOCK_C], tl.float32)
    j0 = i_n * TILES_PER_CHUNK
    for j in range(j0, tl.minimum(j0 + TILES_PER_CHUNK, NT)):
        o, mask = tile_offsets(i_b, j * BLOCK_T, T, C, o_c, m_c, BLOCK_T)
        b_dy = load_tile(p_dy, o, mask)
        b_s = tl.sigmoid(load_tile(p_q, o, mask))
        tl.store(p_dq + o, (b_dy * b_ybar[None, :] * b_s * (1 - b_s)).to(p_dq.dtype.element_ty), mask=mask)
        b_acc += tl.sum(b_dy * b_s, axis=0)
    tl.store(p_part + (i_b.to(tl.int64) * NCHUNK + i_n) * C + o_c, b_acc, mask=m_c)


@triton.autotune(
    configs=channel_configs(), key=["C"], prune_configs_by=launchable(f"{__name__}:_simple_bwd_key_kernel")
)
@triton.jit
def _simple_bwd_key_kernel(
    p_k, p_v, p_dk, p_dv, p_total, p_part, T, C, NT, NCHUNK,
    BLOCK_T: tl.constexpr, TILES_PER_CHUNK, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Non-causal: with `g = Σ_t dY·σ(Q)`, `dV = e^{K−m}·g/d` and `dK = e^{K−m}·(V − ybar)·g/d`."""
    i_c, i_n, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    b_m, b_n, b_d = load_state(p_total, tl.num_programs(2).to(tl.int64) * C, i_b.to(tl.int64) * C + o_c, m_c)
    b_g = tl.zeros([BLOCK_C], tl.float32)
    for i_p in range(NCHUNK):
        b_g += tl.load(p_part + (i_b.to(tl.int64) * NCHUNK + i_p) * C + o_c, mask=m_c, other=0.0)
    b_d = tl.where(m_c, b_d, 1.0)
    b_ybar, b_r = b_n / b_d, b_g / b_d
    j0 = i_n * TILES_PER_CHUNK
    for j in range(j0, tl.minimum(j0 + TILES_PER_CHUNK, NT)):
        o, mask = tile_offsets(i_b, j * BLOCK_T, T, C, o_c, m_c, BLOCK_T)
        b_e = tl.exp(tl.where(mask, load_tile(p_k, o, mask) - b_m[None, :], float("-inf")))
        b_dv = b_e * b_r[None, :]
        tl.store(p_dv + o, b_dv.to(p_dv.dtype.element_ty), mask=mask)
        tl.store(p_dk + o, (b_dv * (load_tile(p_v, o, mask) - b_ybar[None, :])).to(p_dk.dtype.element_ty), mask=mask)


@triton.autotune(
    configs=channel_configs(), key=["C"], prune_configs_by=launchable(f"{__name__}:_bwd_chunk_sums_kernel")
)
@triton.jit
def _bwd_chunk_sums_kernel(
    p_q, p_k, p_v, p_dy, p_tiles, p_z, T, C, NT, NCHUNK,
    BLOCK_T: tl.constexpr, TILES_PER_CHUNK, BLOCK_C: tl.constexpr,
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
    b_m, b_n, b_d = load_state(p_tiles, n_b * NT * C, o_s, tl.where(j0 > 0, m_c, False))
    b_first = tl.zeros([BLOCK_C], tl.float32)
    for j in range(j0, tl.minimum(j0 + TILES_PER_CHUNK, NT)):
        o, mask = tile_offsets(i_b, j * BLOCK_T, T, C, o_c, m_c, BLOCK_T)
        b_k, b_v = load_tile(p_k, o, mask), load_tile(p_v, o, mask)
        b_m, _, b_num, b_den, b_n, b_d = scan_tile(b_k, b_v, mask, m_c, b_m, b_n, b_d)
        b_first = tl.where(j == j0, b_m, b_first)
        b_rho = load_tile(p_dy, o, mask) * tl.sigmoid(load_tile(p_q, o, mask)) / b_den
        b_f = tl.exp(b_first - b_m)
        b_z += b_f * tl.sum(b_rho, axis=0)
        b_z2 += b_f * tl.sum(b_rho * b_num / b_den, axis=0)
    o_z = (i_b.to(tl.int64) * NCHUNK + i_n) * C + o_c
    tl.store(p_z + o_z, b_z, mask=m_c)
    tl.store(p_z + n_b * NCHUNK * C + o_z, b_z2, mask=m_c)


@triton.autotune(
    configs=channel_configs(), key=["C"], prune_configs_by=launchable(f"{__name__}:_simple_bwd_causal_kernel")
)
@triton.jit
def _simple_bwd_causal_kernel(
    p_q, p_k, p_v, p_dy, p_dq, p_dk, p_dv, p_tiles, p_h, T, C, NT, NCHUNK,
    BLOCK_T: tl.constexpr, TILES_PER_CHUNK, BLOCK_C: tl.constexpr,
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
        o, mask = tile_offsets(i_b, j * BLOCK_T, T, C, o_c, m_c, BLOCK_T)
        o_s = (i_b.to(tl.int64) * NT + j - 1) * C + o_c  # the state after the previous tile
        b_prev, b_n, b_d = load_state(p_tiles, n_b * NT * C, o_s, tl.where(j > 0, m_c, False))
        b_k, b_v = load_tile(p_k, o, mask), load_tile(p_v, o, mask)
        b_M, b_e, b_num, b_den, _, _ = scan_tile(b_k, b_v, mask, m_c, b_prev, b_n, b_d)
        b_dy = load_tile(p_dy, o, mask)
        b_s = tl.sigmoid(load_tile(p_q, o, mask))
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


def _forward(q, k, v, causal: bool, lay: Layout):
    """`Y` and the states the backward recomputes from (every tile's when causal, the total otherwise)."""
    y = scratch(q.shape, q.dtype, q.device)
    carry, total, tiles = forward_states(k, v, causal, lay)
    sizes = (lay.T, lay.C, lay.nt, lay.nchunk)
    _simple_fwd_kernel[lay.grid](q, k, v, y, carry, total, tiles, *sizes, causal, **lay.tiling())
    return y, tiles


def _backward(q, k, v, dy, saved, causal: bool, lay: Layout):
    """`dQ, dK, dV` from `dY` and the forward's saved states."""
    dq, dk, dv = (scratch(q.shape, q.dtype, q.device) for _ in range(3))
    sizes = (lay.T, lay.C, lay.nt, lay.nchunk)
    if not causal:
        part = scratch((lay.B, lay.nchunk, lay.C), torch.float32, q.device)
        _simple_bwd_query_kernel[lay.grid](q, dy, dq, saved, part, *sizes, **lay.tiling())
        _simple_bwd_key_kernel[lay.grid](k, v, dk, dv, saved, part, *sizes, **lay.tiling())
        return dq, dk, dv
    if lay.nchunk == 1:
        h = torch.zeros(2, lay.B, 1, lay.C, dtype=torch.float32, device=q.device)
    else:
        z = lay.state(2, lay.nchunk, q.device)
        _bwd_chunk_sums_kernel[lay.grid](q, k, v, dy, saved, z, *sizes, **lay.tiling())
        h = chunk_tails(z, saved, lay)
    _simple_bwd_causal_kernel[lay.grid](q, k, v, dy, dq, dk, dv, saved, h, *sizes, **lay.tiling())
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
    return local(q, k, v, tensors["w_band"], problem.params["window"], problem.causal)
