"""AFT-local in Triton, non-causal and causal, forward and backward (README.md: design, bytes, status).

The band form: row t weighs the global sums by `g_t` and its band keys by `cband` (`band_weights`, in PyTorch
from `w_band [T, 2s−1]`, shared over batch and channels; autograd takes `dcband` back to `w_band`). Then:

    num_t = g_t·N_t + Σ_t' A[t,t']·e^{K_t'−M}·V_t',  den_t = g_t·D_t + Σ_t' A[t,t']·e^{K_t'−M},  Y = σ(Q)·num/den

where `(N, D)` are AFT-simple's sums (all tokens, or triton_aft_scan's causal scan with its per-tile scale M), and
`A` is the band written out for a tile of rows against a block of keys. The band is channel-independent, so
for a tile of BLOCK_T rows it is one `[BLOCK_T, BLOCK_T] @ [BLOCK_T, BLOCK_C]` tensor-core matmul per block of
keys, over the `BLOCK_T + 2s − 2` keys the tile's band touches (`BLOCK_T + s − 1` causal): `e^K` is computed once
per key per tile, not once per band entry.

Backward, in two passes over the tokens. `_local_bwd_rows_kernel` recomputes each row tile's `num, den`, writes
dQ and `ρ = dY·σ(Q)/den`, `υ = ρ·ybar` (fp32), adds `dA[t,t'] = Σ_{b,c} ρ_t e^{K_t'}V_t' − υ_t e^{K_t'}` into
`dcband` (fp32 atomics: one add per band entry per batch row and channel block), and sums `g·ρ`, `g·υ` per chunk
for the global part. `_local_bwd_keys_kernel` then walks key tiles (causal: from the last, with triton_aft_scan's
decaying reverse sums), adds the band's `Aᵀ @ ρ` and `Aᵀ @ υ` over the row tiles whose band reaches them, and
writes dK, dV. The backward's band products run at fp32 accuracy (`cancelling_dot_precision`): they cancel.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

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
from attnbench.mechanisms.triton_common import (
    INTERPRETED_BLOCK,
    cancelling_dot_precision,
    dot_precision,
    interpreted,
    launchable,
    scratch,
)


@triton.jit
def band_offsets(W, T, S, t0, k0, BLOCK_T: tl.constexpr):
    """Offsets into `cband [T, W]` of rows `t0, ...` against keys `k0, ...` (`[BLOCK_T, BLOCK_T]`, int64: T·W
    passes 2³¹ at T = 128K once s > 8192) and the mask of the entries on the band."""
    o_t = t0 + tl.arange(0, BLOCK_T)
    o_k = k0 + tl.arange(0, BLOCK_T)
    col = o_k[None, :] - o_t[:, None] + S - 1
    m_a = (o_t < T)[:, None] & (col >= 0) & (col < W)
    return o_t[:, None].to(tl.int64) * W + col, m_a


@triton.jit
def _band_block(p_cb, W, T, S, t0, k0, BLOCK_T: tl.constexpr):
    """The band's C for rows `t0, ...` against keys `k0, ...`: `[BLOCK_T, BLOCK_T]` from `cband [T, W]`, 0 off
    the band (cband itself is 0 on entries whose key is off the sequence, or in the future when causal)."""
    o_a, m_a = band_offsets(W, T, S, t0, k0, BLOCK_T)
    return tl.load(p_cb + o_a, mask=m_a, other=0.0)


@triton.jit
def _keys(p_k, p_v, i_b, k0, T, C, o_c, m_c, b_M, BLOCK_T: tl.constexpr):
    """`e^{K−M}` and `e^{K−M}·V` of keys `k0, ...` (0 off the sequence), `[BLOCK_T, BLOCK_C]` fp32."""
    o, mask = tile_offsets(i_b, k0, T, C, o_c, m_c, BLOCK_T)
    b_e = tl.exp(tl.where(mask, load_tile(p_k, o, mask) - b_M[None, :], float("-inf")))
    return b_e, b_e * load_tile(p_v, o, mask)


@triton.jit
def _key_range(t0, S, CAUSAL: tl.constexpr, BLOCK_T: tl.constexpr):
    """Keys that the band of rows `t0 .. t0 + BLOCK_T − 1` touches: `[t0 − s + 1, end)`."""
    if CAUSAL:
        return t0 - S + 1, t0 + BLOCK_T
    return t0 - S + 1, t0 + BLOCK_T + S - 1


@triton.jit
def _row_sums(
    p_k, p_v, p_cb, p_g, i_b, t0, T, C, o_c, m_c, b_M, b_n, b_d, S, W,
    CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """`num, den [BLOCK_T, BLOCK_C]` of rows `t0, ...` relative to the scale M: `g·(N, D)` plus the band."""
    o_t = t0 + tl.arange(0, BLOCK_T)
    b_g = tl.load(p_g + o_t, mask=o_t < T, other=0.0)
    b_num = b_g[:, None] * b_n
    b_den = b_g[:, None] * b_d
    dt = p_k.dtype.element_ty
    k_lo, k_hi = _key_range(t0, S, CAUSAL, BLOCK_T)
    for k0 in range(k_lo, k_hi, BLOCK_T):
        b_e, b_ev = _keys(p_k, p_v, i_b, k0, T, C, o_c, m_c, b_M, BLOCK_T)
        b_a = _band_block(p_cb, W, T, S, t0, k0, BLOCK_T)
        b_num += tl.dot(b_a.to(dt), b_ev.to(dt), input_precision=DOT_PRECISION)
        b_den += tl.dot(b_a.to(dt), b_e.to(dt), input_precision=DOT_PRECISION)
    b_den = tl.where((o_t < T)[:, None] & m_c[None, :], b_den, 1.0)  # no 0/0 on lanes off the tensor
    return b_num, b_den, b_g


@triton.jit
def _rows_before(p_carry, p_total, i_b, i_n, o_c, m_c, C, NCHUNK, CAUSAL: tl.constexpr):
    """The state a chunk starts from: its carry (causal) or the total of all tokens."""
    n_b = tl.num_programs(2).to(tl.int64)
    if CAUSAL:
        return load_state(p_carry, n_b * NCHUNK * C, (i_b.to(tl.int64) * NCHUNK + i_n) * C + o_c, m_c)
    return load_state(p_total, n_b * C, i_b.to(tl.int64) * C + o_c, m_c)


@triton.autotune(
    configs=channel_configs(), key=["C", "CAUSAL"], prune_configs_by=launchable(f"{__name__}:_local_fwd_kernel")
)
@triton.jit
def _local_fwd_kernel(
    p_q, p_k, p_v, p_y, p_cb, p_g, p_carry, p_total, p_tiles, T, C, NT, NCHUNK, S, W,
    CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr, BLOCK_T: tl.constexpr, TILES_PER_CHUNK,
    BLOCK_C: tl.constexpr,
):  # fmt: skip
    """`Y = σ(Q)·num/den`; causal: the chunk's tiles in order from its carry, saving each tile's state."""
    i_c, i_n, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    n_b = tl.num_programs(2).to(tl.int64)
    b_m, b_n, b_d = _rows_before(p_carry, p_total, i_b, i_n, o_c, m_c, C, NCHUNK, CAUSAL)
    j0 = i_n * TILES_PER_CHUNK
    for j in range(j0, tl.minimum(j0 + TILES_PER_CHUNK, NT)):
        o, mask = tile_offsets(i_b, j * BLOCK_T, T, C, o_c, m_c, BLOCK_T)
        if CAUSAL:
            b_k, b_v = load_tile(p_k, o, mask), load_tile(p_v, o, mask)
            b_m, _, b_num, b_den, b_n, b_d = scan_tile(b_k, b_v, mask, m_c, b_m, b_n, b_d)
            store_state(p_tiles, n_b * NT * C, (i_b.to(tl.int64) * NT + j) * C + o_c, m_c, b_m, b_n, b_d)
        else:
            b_num, b_den = b_n[None, :], b_d[None, :]
        b_num, b_den, _ = _row_sums(
            p_k, p_v, p_cb, p_g, i_b, j * BLOCK_T, T, C, o_c, m_c, b_m, b_num, b_den, S, W,
            CAUSAL, DOT_PRECISION, BLOCK_T, BLOCK_C,
        )  # fmt: skip
        b_y = tl.sigmoid(load_tile(p_q, o, mask)) * b_num / b_den
        tl.store(p_y + o, b_y.to(p_y.dtype.element_ty), mask=mask)


@triton.jit
def _local_bwd_rows_kernel(
    p_q, p_k, p_v, p_dy, p_dq, p_rho, p_ups, p_dcb, p_cb, p_g, p_total, p_tiles, p_z, T, C, NT, NCHUNK, S, W,
    CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr, BWD_PRECISION: tl.constexpr, BLOCK_T: tl.constexpr,
    TILES_PER_CHUNK, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Per row tile: dQ, ρ, υ, the band's `dcband` (atomics) and the chunk's sums of `g·ρ`, `g·υ` into
    `z [2, B, NCHUNK, C]` (causal: rescaled to the chunk's first tile, as AFT-simple's)."""
    i_c, i_n, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    n_b = tl.num_programs(2).to(tl.int64)
    b_z = tl.zeros([BLOCK_C], tl.float32)
    b_z2 = tl.zeros([BLOCK_C], tl.float32)
    b_first = tl.zeros([BLOCK_C], tl.float32)
    if not CAUSAL:
        b_m, b_n, b_d = load_state(p_total, n_b * C, i_b.to(tl.int64) * C + o_c, m_c)
    j0 = i_n * TILES_PER_CHUNK
    for j in range(j0, tl.minimum(j0 + TILES_PER_CHUNK, NT)):
        t0 = j * BLOCK_T
        o, mask = tile_offsets(i_b, t0, T, C, o_c, m_c, BLOCK_T)
        if CAUSAL:
            o_s = (i_b.to(tl.int64) * NT + j - 1) * C + o_c
            b_prev, b_n, b_d = load_state(p_tiles, n_b * NT * C, o_s, tl.where(j > 0, m_c, False))
            b_k, b_v = load_tile(p_k, o, mask), load_tile(p_v, o, mask)
            b_m, _, b_num, b_den, _, _ = scan_tile(b_k, b_v, mask, m_c, b_prev, b_n, b_d)
            b_first = tl.where(j == j0, b_m, b_first)
        else:
            b_num, b_den = b_n[None, :], b_d[None, :]
        b_num, b_den, b_g = _row_sums(
            p_k, p_v, p_cb, p_g, i_b, t0, T, C, o_c, m_c, b_m, b_num, b_den, S, W,
            CAUSAL, DOT_PRECISION, BLOCK_T, BLOCK_C,
        )  # fmt: skip
        b_ybar = b_num / b_den
        b_dy = load_tile(p_dy, o, mask)
        b_s = tl.sigmoid(load_tile(p_q, o, mask))
        tl.store(p_dq + o, (b_dy * b_ybar * b_s * (1 - b_s)).to(p_dq.dtype.element_ty), mask=mask)
        b_rho = tl.where(mask, b_dy * b_s / b_den, 0.0)
        b_ups = b_rho * tl.where(mask, b_ybar, 0.0)
        tl.store(p_rho + o, b_rho.to(p_rho.dtype.element_ty), mask=mask)
        tl.store(p_ups + o, b_ups.to(p_ups.dtype.element_ty), mask=mask)
        b_sum = tl.sum(b_g[:, None] * b_rho, axis=0)
        b_sum2 = tl.sum(b_g[:, None] * b_ups, axis=0)
        if CAUSAL:
            b_sum, b_sum2 = b_sum * tl.exp(b_first - b_m), b_sum2 * tl.exp(b_first - b_m)
        b_z += b_sum
        b_z2 += b_sum2
        k_lo, k_hi = _key_range(t0, S, CAUSAL, BLOCK_T)
        for k0 in range(k_lo, k_hi, BLOCK_T):
            b_e, b_ev = _keys(p_k, p_v, i_b, k0, T, C, o_c, m_c, b_m, BLOCK_T)
            b_da = tl.dot(b_rho, tl.trans(b_ev), input_precision=BWD_PRECISION)
            b_da -= tl.dot(b_ups, tl.trans(b_e), input_precision=BWD_PRECISION)
            o_a, m_a = band_offsets(W, T, S, t0, k0, BLOCK_T)
            o_k = k0 + tl.arange(0, BLOCK_T)
            tl.atomic_add(p_dcb + o_a, b_da, mask=m_a & ((o_k >= 0) & (o_k < T))[None, :])
    o_z = (i_b.to(tl.int64) * NCHUNK + i_n) * C + o_c
    tl.store(p_z + o_z, b_z, mask=m_c)
    tl.store(p_z + n_b * NCHUNK * C + o_z, b_z2, mask=m_c)


@triton.jit
def _band_to_keys(
    p_rho, p_ups, p_cb, p_tiles, o_tiles, i_b, j, T, C, NT, S, W, o_c, m_c, b_M,
    CAUSAL: tl.constexpr, BWD_PRECISION: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """The band's `Aᵀρ` and `Aᵀυ` `[BLOCK_T, BLOCK_C]` for key tile `j` at scale `b_M`, summed over the row tiles
    whose band reaches its keys (causal: each row tile's ρ, υ rescaled from its own scale to the keys')."""
    t0 = j * BLOCK_T
    b_bn = tl.zeros([BLOCK_T, BLOCK_C], tl.float32)
    b_bd = tl.zeros([BLOCK_T, BLOCK_C], tl.float32)
    r_lo = j if CAUSAL else tl.maximum(t0 - S + 1, 0) // BLOCK_T  # first row tile whose band reaches the keys
    for r in range(r_lo, tl.minimum((t0 + BLOCK_T + S - 2) // BLOCK_T + 1, NT)):
        o_r, m_r = tile_offsets(i_b, r * BLOCK_T, T, C, o_c, m_c, BLOCK_T)
        b_rho, b_ups = load_tile(p_rho, o_r, m_r), load_tile(p_ups, o_r, m_r)
        if CAUSAL:
            b_f = tl.exp(b_M - tl.load(p_tiles + o_tiles + r * C, mask=m_c, other=0.0))  # rows' scale >= keys'
            b_rho, b_ups = b_rho * b_f[None, :], b_ups * b_f[None, :]
        b_a = _band_block(p_cb, W, T, S, r * BLOCK_T, t0, BLOCK_T)  # (rows, keys)
        b_at = tl.trans(b_a)
        b_bn += tl.dot(b_at, b_rho, input_precision=BWD_PRECISION)
        b_bd += tl.dot(b_at, b_ups, input_precision=BWD_PRECISION)
    return b_bn, b_bd


@triton.autotune(
    configs=channel_configs(), key=["C", "CAUSAL"], prune_configs_by=launchable(f"{__name__}:_local_bwd_keys_kernel")
)
@triton.jit
def _local_bwd_keys_kernel(
    p_k, p_v, p_dk, p_dv, p_rho, p_ups, p_cb, p_g, p_total, p_tiles, p_h, T, C, NT, NCHUNK, S, W,
    CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr, BWD_PRECISION: tl.constexpr, BLOCK_T: tl.constexpr,
    TILES_PER_CHUNK, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Per key tile: `dV = e^{K−M}·(U + Aᵀρ)`, `dK = e^{K−M}·(V·(U + Aᵀρ) − (U' + Aᵀυ))`, U the global part.

    Non-causal: `p_h` holds the chunks' sums, U is their total. Causal: U is the reverse sum of `g·ρ` over rows
    at or after the key, walked from the chunk's last tile starting at `h [2, B, NCHUNK, C]`."""
    i_c, i_n, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    n_b = tl.num_programs(2).to(tl.int64)
    b_h = tl.zeros([BLOCK_C], tl.float32)
    b_h2 = tl.zeros([BLOCK_C], tl.float32)
    if CAUSAL:
        o_h = (i_b.to(tl.int64) * NCHUNK + i_n) * C + o_c
        b_h += tl.load(p_h + o_h, mask=m_c, other=0.0)
        b_h2 += tl.load(p_h + n_b * NCHUNK * C + o_h, mask=m_c, other=0.0)
    else:
        b_M, _, _ = load_state(p_total, n_b * C, i_b.to(tl.int64) * C + o_c, m_c)
        for i_p in range(NCHUNK):
            o_h = (i_b.to(tl.int64) * NCHUNK + i_p) * C + o_c
            b_h += tl.load(p_h + o_h, mask=m_c, other=0.0)
            b_h2 += tl.load(p_h + n_b * NCHUNK * C + o_h, mask=m_c, other=0.0)
    j0 = i_n * TILES_PER_CHUNK
    j1 = tl.minimum(j0 + TILES_PER_CHUNK, NT)
    o_tiles = i_b.to(tl.int64) * NT * C + o_c
    for i in range(j1 - j0):
        j = j1 - 1 - i
        t0 = j * BLOCK_T
        o, mask = tile_offsets(i_b, t0, T, C, o_c, m_c, BLOCK_T)
        if CAUSAL:
            b_M = tl.load(p_tiles + o_tiles + j * C, mask=m_c, other=0.0)
        b_k, b_v = load_tile(p_k, o, mask), load_tile(p_v, o, mask)
        b_e = tl.exp(tl.where(mask, b_k - b_M[None, :], float("-inf")))
        b_bn, b_bd = _band_to_keys(
            p_rho, p_ups, p_cb, p_tiles, o_tiles, i_b, j, T, C, NT, S, W, o_c, m_c, b_M,
            CAUSAL, BWD_PRECISION, BLOCK_T, BLOCK_C,
        )  # fmt: skip
        if CAUSAL:
            o_t = t0 + tl.arange(0, BLOCK_T)
            b_g = tl.load(p_g + o_t, mask=o_t < T, other=0.0)[:, None]
            b_grho = b_g * load_tile(p_rho, o, mask)
            b_gups = b_g * load_tile(p_ups, o, mask)
            b_u = tl.cumsum(b_grho, axis=0, reverse=True) + b_h[None, :] + b_bn
            b_u2 = tl.cumsum(b_gups, axis=0, reverse=True) + b_h2[None, :] + b_bd
            b_prev = tl.load(p_tiles + o_tiles + (j - 1) * C, mask=tl.where(j > 0, m_c, False), other=float("-inf"))
            b_f = tl.exp(b_prev - b_M)  # decay to the previous tile's scale; 0 before the first tile
            b_h = b_f * (b_h + tl.sum(b_grho, axis=0))
            b_h2 = b_f * (b_h2 + tl.sum(b_gups, axis=0))
        else:
            b_u = b_h[None, :] + b_bn
            b_u2 = b_h2[None, :] + b_bd
        tl.store(p_dv + o, (b_e * b_u).to(p_dv.dtype.element_ty), mask=mask)
        tl.store(p_dk + o, (b_e * (b_v * b_u - b_u2)).to(p_dk.dtype.element_ty), mask=mask)


def band_weights(w: torch.Tensor, window: int, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """`w [T, 2s−1]` -> `g [T]`, the weight of the global sums, and `cband [T, 2s−1]`: row t weighs key t' by
    `e^{w − m_t}` in its band and `e^{−m_t}` outside (bias 0) as `g·(all keys) + cband·(band keys)`, `g = e^{−m}`,
    `cband = e^{w − m} − e^{−m}`, `m_t = max(0, band max of w)`. A row whose band holds every key it sees takes
    `g = 0`, `cband = e^{w − m}`, m the band max: "all keys minus band" would be rounding noise there, which a
    very negative bias (e^w ≪ 1) would divide out as the answer."""
    T, s = w.shape[0], window
    offsets = torch.arange(2 * s - 1, device=w.device) - (s - 1)  # (2s−1,): t' − t of each column
    keys = torch.arange(T, device=w.device)[:, None] + offsets  # (T, 2s−1)
    valid = (keys >= 0) & (keys < T)
    if causal:
        valid &= offsets <= 0
    rows = torch.arange(T, device=w.device)
    outside = rows >= s if causal else (rows >= s) | (rows + s - 1 < T - 1)  # a key off the band exists
    w = w.masked_fill(~valid, -math.inf)
    top = w.detach().amax(dim=1)
    m = torch.where(outside, top.clamp(min=0), top)  # (T,)
    g = torch.where(outside, torch.exp(-m), torch.zeros_like(m))
    band = (torch.exp(w - m[:, None]) - g[:, None]).masked_fill(~valid, 0.0)
    return g, band


def _sizes(lay: Layout, window: int) -> tuple[int, ...]:
    """The kernels' size arguments `T, C, NT, NCHUNK, S, W` (W = 2s − 1 columns of the band)."""
    return lay.T, lay.C, lay.nt, lay.nchunk, window, 2 * window - 1


def _forward(q, k, v, cband, g, window: int, causal: bool, lay: Layout):
    """`Y` and the states the backward recomputes from (every tile's when causal, the total otherwise)."""
    y = scratch(q.shape, q.dtype, q.device)
    carry, total, tiles = forward_states(k, v, causal, lay)
    _local_fwd_kernel[lay.grid](
        q, k, v, y, cband, g, carry, total, tiles, *_sizes(lay, window),
        CAUSAL=causal, DOT_PRECISION=dot_precision(q.dtype), **lay.tiling(),
    )  # fmt: skip
    return y, tiles


def _backward(q, k, v, cband, g, dy, saved, window: int, causal: bool, lay: Layout):
    """`dQ, dK, dV` and the band's `dcband` from `dY` and the forward's saved states: the rows pass, the chunks'
    tails (causal), then the keys pass."""
    dq, dk, dv = (scratch(q.shape, q.dtype, q.device) for _ in range(3))
    rho, ups = (scratch(q.shape, torch.float32, q.device) for _ in range(2))
    dcband = torch.zeros_like(cband)
    z = lay.state(2, lay.nchunk, q.device)
    meta = dict(
        CAUSAL=causal,
        DOT_PRECISION=dot_precision(q.dtype),
        BWD_PRECISION=cancelling_dot_precision(q.dtype),
        **lay.tiling(),
    )
    # One fixed config for the rows pass: autotuning reruns a kernel, which would add its atomics more than once.
    rows = dict(BLOCK_C=INTERPRETED_BLOCK, num_warps=1) if interpreted() else dict(BLOCK_C=64, num_warps=4)
    _local_bwd_rows_kernel[lay.grid(rows)](
        q, k, v, dy, dq, rho, ups, dcband, cband, g, saved, saved, z, *_sizes(lay, window), **meta, **rows
    )  # fmt: skip
    if not causal:
        h = z
    elif lay.nchunk == 1:
        h = torch.zeros_like(z)
    else:
        h = chunk_tails(z, saved, lay)
    _local_bwd_keys_kernel[lay.grid](
        k, v, dk, dv, rho, ups, cband, g, saved, saved, h, *_sizes(lay, window), **meta
    )  # fmt: skip
    return dq, dk, dv, dcband


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
        dq, dk, dv, dcband = _backward(q, k, v, cband, g, dy.contiguous(), saved, ctx.window, ctx.causal, ctx.lay)
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
