"""AFT-simple in Triton, non-causal and causal, forward and backward (README.md: design, bytes, status); also
the `triton` implementation's entry point `core`, which runs AFT-local from triton_aft_local.

The tiling, the per-channel state `(m, n, d)` of a run of tokens and the non-causal chunk states are
triton_aft_scan's. Forward, non-causal: chunk states and their total, then `Y = σ(Q)·n/d` (`_simple_fwd_kernel`:
reads Q, writes Y). Backward (`ρ_t = dY_t·σ(Q_t)/den_t`, `υ_t = ρ_t·ybar_t`, `ybar = num/den`):
`dQ = dY·ybar·σ'(Q)`, `dV_t' = e^{K_t'−M}·Σ_{t≥t'} ρ_t·e^{M−M_t}`,
`dK_t' = e^{K_t'−M}·Σ_{t≥t'} (ρ_t V_t' − υ_t)·e^{M−M_t}` (non-causal: over all t, one M):
`_simple_bwd_query_kernel` (reads Q, dY, writes dQ, sums ρ per chunk), then `_simple_bwd_key_kernel` (reads K, V,
writes dK, dV).

Causal, each direction is one pass with one tile per program (README.md, "Causal: one pass each way"): a tile
publishes its own summary, looks back along the sequence for the summaries of the tiles it depends on (stopping at
the first that already includes everything beyond it), publishes its inclusive summary and writes its outputs.
The forward (`_simple_fwd_causal_kernel`) reads Q, K, V once and keeps the state after every tile; the backward
(`_simple_bwd_causal_kernel`) recomputes each tile from the state before it, runs the reverse sums the same way
from the sequence's end, and reads Q, K, V, dY once.
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
    chunk_states,
    layout,
    load_state,
    load_tile,
    look_back_tile,
    per_tile,
    publish,
    scan_tile,
    tile_offsets,
    unpublished,
)
from attnbench.mechanisms.problem import Problem
from attnbench.mechanisms.registry import Unsupported
from attnbench.mechanisms.triton_common import launchable, scratch


@triton.autotune(configs=channel_configs(), key=["C"], prune_configs_by=launchable(f"{__name__}:_simple_fwd_kernel"))
@triton.jit
def _simple_fwd_kernel(
    p_q, p_y, p_total, T, C, NT, BLOCK_T: tl.constexpr, TILES_PER_CHUNK, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Non-causal: `Y = σ(Q)·n/d` with the total state of the batch row."""
    i_c, i_n, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    _, b_n, b_d = load_state(p_total, tl.num_programs(2).to(tl.int64) * C, i_b.to(tl.int64) * C + o_c, m_c)
    b_ybar = b_n / tl.where(m_c, b_d, 1.0)
    j0 = i_n * TILES_PER_CHUNK
    for j in range(j0, tl.minimum(j0 + TILES_PER_CHUNK, NT)):
        o, mask = tile_offsets(i_b, j * BLOCK_T, T, C, o_c, m_c, BLOCK_T)
        b_y = tl.sigmoid(load_tile(p_q, o, mask)) * b_ybar[None, :]
        tl.store(p_y + o, b_y.to(p_y.dtype.element_ty), mask=mask)


@triton.jit
def _simple_fwd_causal_kernel(
    p_q, p_k, p_v, p_y, p_agg, p_tiles, p_ticket, T, C, NT, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Causal, one tile per program, in one pass over Q, K, V: the tile's rows' sums from the look-back
    (`look_back_tile`, which also keeps the state after every tile for the backward), then Y."""
    _, _, _, _, o, mask, _, b_num, b_den, _, _ = look_back_tile(
        p_k, p_v, p_agg, p_tiles, p_ticket, T, C, NT, BLOCK_T, BLOCK_C
    )
    b_y = tl.sigmoid(load_tile(p_q, o, mask)) * b_num / b_den
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


@triton.jit
def _look_back(p_agg, p_incl, p_tiles, plane, i_b, j, b_M, NT, C, o_c, m_c):
    """The reverse sums `Σ_{l>j} e^{M_j−M_l}·(Σ_{t in tile l} ρ_t, Σ υ_t)` entering tile j, from the later tiles'
    published sums: walk l = j+1, j+2, ... adding each tile's own sums (`agg`) until a tile whose sums include
    everything after it (`incl`) is reached. A lane waits (re-reads) while tile l has published neither."""
    b_h = tl.zeros_like(b_M)
    b_h2 = tl.zeros_like(b_M)
    # The last tile has nothing after it. Masks are negated with `== 0`: the interpreter breaks `~` on them.
    b_done = (o_c >= C) | (j == NT - 1)
    b_l = j + 1
    while tl.min(b_done.to(tl.int32), axis=0) == 0:
        live = (b_done == 0) & m_c
        o_l = (i_b.to(tl.int64) * NT + b_l) * C + o_c
        b_inc = tl.load(p_incl + o_l, mask=live, other=0.0, volatile=True)
        b_inc2 = tl.load(p_incl + plane + o_l, mask=live, other=0.0, volatile=True)
        b_agg = tl.load(p_agg + o_l, mask=live, other=0.0, volatile=True)
        b_agg2 = tl.load(p_agg + plane + o_l, mask=live, other=0.0, volatile=True)
        has_inc = live & (b_inc == b_inc) & (b_inc2 == b_inc2)
        has_agg = live & (b_agg == b_agg) & (b_agg2 == b_agg2)
        step = tl.min((b_done | has_inc | has_agg).to(tl.int32), axis=0) == 1  # every live lane can move on
        b_f = tl.exp(b_M - tl.load(p_tiles + o_l, mask=live, other=0.0))  # tile l's scale M_l >= M_j
        b_add = tl.where(has_inc, b_inc, b_agg) * b_f
        b_add2 = tl.where(has_inc, b_inc2, b_agg2) * b_f
        take = live & step
        b_h += tl.where(take, b_add, 0.0)
        b_h2 += tl.where(take, b_add2, 0.0)
        b_done = b_done | (take & has_inc)
        b_l += step.to(tl.int32)
    return b_h, b_h2


@triton.jit
def _simple_bwd_causal_kernel(
    p_q, p_k, p_v, p_dy, p_dq, p_dk, p_dv, p_tiles, p_agg, p_incl, p_ticket, T, C, NT,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Causal, one tile per program, in one pass: recompute the tile from the saved state before it, write dQ,
    publish the tile's own reverse sums, look back for the later tiles' sums, publish the inclusive sums, write
    dK, dV. Tiles are taken from the sequence's end in the order programs start (a ticket per channel block and
    batch row), so a program only ever waits on programs that are already running."""
    i_c, i_b = tl.program_id(0), tl.program_id(2)
    j = NT - 1 - tl.atomic_add(p_ticket + i_b * tl.num_programs(0) + i_c, 1)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    plane = tl.num_programs(2).to(tl.int64) * NT * C
    o, mask = tile_offsets(i_b, j * BLOCK_T, T, C, o_c, m_c, BLOCK_T)
    o_j = (i_b.to(tl.int64) * NT + j) * C + o_c
    b_prev, b_n, b_d = load_state(p_tiles, plane, o_j - C, tl.where(j > 0, m_c, False))  # before the tile
    b_k, b_v = load_tile(p_k, o, mask), load_tile(p_v, o, mask)
    b_M, b_e, b_num, b_den, _, _ = scan_tile(b_k, b_v, mask, m_c, b_prev, b_n, b_d)
    b_dy = load_tile(p_dy, o, mask)
    b_s = tl.sigmoid(load_tile(p_q, o, mask))
    b_ybar = b_num / b_den
    tl.store(p_dq + o, (b_dy * b_ybar * b_s * (1 - b_s)).to(p_dq.dtype.element_ty), mask=mask)
    b_rho = b_dy * b_s / b_den
    b_z, b_z2 = tl.sum(b_rho, axis=0), tl.sum(b_rho * b_ybar, axis=0)
    publish(p_agg, o_j, m_c, b_z)
    publish(p_agg + plane, o_j, m_c, b_z2)
    b_h, b_h2 = _look_back(p_agg, p_incl, p_tiles, plane, i_b, j, b_M, NT, C, o_c, m_c)
    publish(p_incl, o_j, m_c, b_z + b_h)
    publish(p_incl + plane, o_j, m_c, b_z2 + b_h2)
    b_u = tl.cumsum(b_rho, axis=0, reverse=True) + b_h[None, :]
    b_u2 = tl.cumsum(b_rho * b_ybar, axis=0, reverse=True) + b_h2[None, :]
    tl.store(p_dv + o, (b_e * b_u).to(p_dv.dtype.element_ty), mask=mask)
    tl.store(p_dk + o, (b_e * (b_v * b_u - b_u2)).to(p_dk.dtype.element_ty), mask=mask)


def _forward(q, k, v, causal: bool, lay: Layout):
    """`Y` and the states the backward recomputes from (the state after every tile when causal, the total
    otherwise)."""
    y = scratch(q.shape, q.dtype, q.device)
    if not causal:
        _, total = chunk_states(k, v, lay)
        _simple_fwd_kernel[lay.grid](q, y, total, lay.T, lay.C, lay.nt, **lay.tiling())
        return y, total
    meta, grid, tickets = per_tile(lay, q.device)
    agg, tiles = unpublished(3, lay, q.device), unpublished(3, lay, q.device)
    _simple_fwd_causal_kernel[grid](q, k, v, y, agg, tiles, tickets, lay.T, lay.C, lay.nt, BLOCK_T=lay.block_t, **meta)
    return y, tiles


def _causal_backward(q, k, v, dy, dq, dk, dv, tiles, lay: Layout) -> None:
    """One program per tile, from the last; the tiles' own and inclusive reverse sums are published for the
    tiles before them."""
    meta, grid, tickets = per_tile(lay, q.device)
    agg, incl = unpublished(2, lay, q.device), unpublished(2, lay, q.device)
    sizes = (lay.T, lay.C, lay.nt)
    _simple_bwd_causal_kernel[grid](
        q, k, v, dy, dq, dk, dv, tiles, agg, incl, tickets, *sizes, BLOCK_T=lay.block_t, **meta
    )


def _backward(q, k, v, dy, saved, causal: bool, lay: Layout):
    """`dQ, dK, dV` from `dY` and the forward's saved states."""
    dq, dk, dv = (scratch(q.shape, q.dtype, q.device) for _ in range(3))
    sizes = (lay.T, lay.C, lay.nt, lay.nchunk)
    if not causal:
        part = scratch((lay.B, lay.nchunk, lay.C), torch.float32, q.device)
        _simple_bwd_query_kernel[lay.grid](q, dy, dq, saved, part, *sizes, **lay.tiling())
        _simple_bwd_key_kernel[lay.grid](k, v, dk, dv, saved, part, *sizes, **lay.tiling())
        return dq, dk, dv
    _causal_backward(q, k, v, dy, dq, dk, dv, saved, lay)
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
    """AFT-simple: `q, k, v [B,T,H,d]` -> `[B,T,H,d]` in q's dtype (fp32 statistics). `tiles_per_chunk` sets the
    non-causal kernels' chunks (tests force several); the causal kernels take one tile per program."""
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
