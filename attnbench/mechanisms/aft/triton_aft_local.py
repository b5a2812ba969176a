"""AFT-local in Triton, non-causal and causal, forward and backward (README.md: design, bytes, status).

The band form: row t weighs the global sums by `g_t` and its band keys by `cband` (`band_weights`, in PyTorch
from `w_band [T, 2s−1]`, shared over batch and channels; autograd takes `dcband` back to `w_band`). Then:

    num_t = g_t·N_t + Σ_t' A[t,t']·e^{K_t'−M}·V_t',  den_t = g_t·D_t + Σ_t' A[t,t']·e^{K_t'−M},  Y = σ(Q)·num/den

where `(N, D)` are AFT-simple's sums (all tokens, or triton_aft_scan's causal scan with its per-tile scale M), and
`A` is the band written out for a tile of rows against a block of keys (triton_aft_band). The forward is one
kernel after the chunk states (non-causal), or one pass with one tile per program chained by AFT-simple's
look-back (causal); the backward's three kernels are in triton_aft_local_bwd.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from attnbench.mechanisms.aft.triton_aft_band import band_offsets, band_sizes, band_weights, centre, row_sums
from attnbench.mechanisms.aft.triton_aft_local_bwd import backward
from attnbench.mechanisms.aft.triton_aft_scan import (
    Layout,
    channel_configs,
    chunk_states,
    layout,
    load_state,
    load_tile,
    look_back_tile,
    per_tile,
    tile_offsets,
    unpublished,
)
from attnbench.mechanisms.triton_common import dot_precision, launchable, scratch

__all__ = ["band_offsets", "band_weights", "local"]


@triton.autotune(configs=channel_configs(), key=["C"], prune_configs_by=launchable(f"{__name__}:_local_fwd_kernel"))
@triton.jit
def _local_fwd_kernel(
    p_q, p_k, p_v, p_y, p_cb, p_g, p_total, T, C, NT, NCHUNK, S, W,
    DOT_PRECISION: tl.constexpr, BLOCK_T: tl.constexpr, TILES_PER_CHUNK, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Non-causal: `Y = σ(Q)·(μ + (num − μ·den)/den)` from the total state of the batch row and the band."""
    i_c, i_n, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    b_m, b_n, b_d = load_state(p_total, tl.num_programs(2).to(tl.int64) * C, i_b.to(tl.int64) * C + o_c, m_c)
    b_mu = centre(b_n, b_d)
    j0 = i_n * TILES_PER_CHUNK
    for j in range(j0, tl.minimum(j0 + TILES_PER_CHUNK, NT)):
        o, mask = tile_offsets(i_b, j * BLOCK_T, T, C, o_c, m_c, BLOCK_T)
        b_num, b_den, _ = row_sums(
            p_k, p_v, p_cb, p_g, i_b, j * BLOCK_T, T, C, o_c, m_c, b_m, b_mu, b_n[None, :], b_d[None, :], S, W,
            False, DOT_PRECISION, BLOCK_T, BLOCK_C,
        )  # fmt: skip
        b_y = tl.sigmoid(load_tile(p_q, o, mask)) * (b_mu[None, :] + b_num / b_den)
        tl.store(p_y + o, b_y.to(p_y.dtype.element_ty), mask=mask)


@triton.jit
def _local_fwd_causal_kernel(
    p_q, p_k, p_v, p_y, p_cb, p_g, p_agg, p_tiles, p_ticket, T, C, NT, S, W,
    DOT_PRECISION: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Causal, one tile per program in one pass over Q, K, V: the tile's rows' global sums from AFT-simple's
    look-back (`look_back_tile`, which keeps the state after every tile: the backward recomputes from it and
    takes its centres from it), then the band, then Y."""
    i_b, t0, o_c, m_c, o, mask, b_m, b_num, b_den, b_n, b_d = look_back_tile(
        p_k, p_v, p_agg, p_tiles, p_ticket, T, C, NT, BLOCK_T, BLOCK_C
    )
    b_mu = centre(b_n, b_d)
    b_num, b_den, _ = row_sums(
        p_k, p_v, p_cb, p_g, i_b, t0, T, C, o_c, m_c, b_m, b_mu, b_num, b_den, S, W,
        True, DOT_PRECISION, BLOCK_T, BLOCK_C,
    )  # fmt: skip
    b_y = tl.sigmoid(load_tile(p_q, o, mask)) * (b_mu[None, :] + b_num / b_den)
    tl.store(p_y + o, b_y.to(p_y.dtype.element_ty), mask=mask)


def _forward(q, k, v, cband, g, window: int, causal: bool, lay: Layout):
    """`Y` and the states the backward recomputes from: the total (non-causal), or the state after every tile
    (causal)."""
    y = scratch(q.shape, q.dtype, q.device)
    T, C, NT, NCHUNK, S, W = band_sizes(lay, window)
    if not causal:
        _, total = chunk_states(k, v, lay)
        _local_fwd_kernel[lay.grid](
            q, k, v, y, cband, g, total, T, C, NT, NCHUNK, S, W, DOT_PRECISION=dot_precision(q.dtype),
            **lay.tiling(),
        )  # fmt: skip
        return y, total
    meta, grid, tickets = per_tile(lay, q.device)
    agg, tiles = unpublished(3, lay, q.device), unpublished(3, lay, q.device)
    _local_fwd_causal_kernel[grid](
        q, k, v, y, cband, g, agg, tiles, tickets, T, C, NT, S, W,
        DOT_PRECISION=dot_precision(q.dtype), BLOCK_T=lay.block_t, **meta,
    )  # fmt: skip
    return y, tiles


class LocalAFT(torch.autograd.Function):
    """`q, k, v [B,T,C]` contiguous, `cband [T, 2s−1]` and `g [T]` fp32 -> `Y [B,T,C]`; gradients for q, k, v
    and cband (g is a constant: it depends on w only through the detached row max)."""

    @staticmethod
    def forward(ctx, q, k, v, cband, g, window: int, causal: bool, lay: Layout):
        y, saved = _forward(q, k, v, cband, g, window, causal, lay)
        ctx.save_for_backward(q, k, v, cband, g, saved)
        ctx.window, ctx.causal, ctx.lay = window, causal, lay
        return y

    @staticmethod
    def backward(ctx, dy):
        q, k, v, cband, g, saved = ctx.saved_tensors
        dq, dk, dv, dcband = backward(q, k, v, cband, g, dy.contiguous(), saved, ctx.window, ctx.causal, ctx.lay)
        if ctx.lay.T == 1:  # one token: Y = σ(Q)·V for any K and w, so dK and dw are exactly 0, not roundoff
            dk.zero_()
            dcband.zero_()
        return dq, dk, dv, dcband, None, None, None, None


def local(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w_band: torch.Tensor,
    window: int,
    causal: bool,
    *,
    tiles_per_chunk: int | None = None,
) -> torch.Tensor:
    """AFT-local: `q, k, v [B,T,H,d]`, `w_band [t_max, 2·window − 1]` -> `[B,T,H,d]` in q's dtype."""
    B, T = q.shape[:2]
    qc, kc, vc = (t.reshape(B, T, -1).contiguous() for t in (q, k, v))
    g, cband = band_weights(w_band[:T].float(), window, causal)  # (T,), (T, 2s−1)
    lay = layout(B, T, qc.shape[-1], q.device, tiles_per_chunk)
    return LocalAFT.apply(qc, kc, vc, cband.contiguous(), g.contiguous(), window, causal, lay).view(q.shape)
