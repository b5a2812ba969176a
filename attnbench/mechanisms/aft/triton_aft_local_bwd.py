"""AFT-local's backward in Triton (README.md, "Local backward"): three kernels from `dY` and the forward's saved
states, none of them with an atomic.

1. `_local_bwd_rows_kernel`, per row tile: recompute `num, den`, write dQ, `ρ = dY·σ(Q)/den` and the centred
   `υ = ρ·(ȳ − μ)` (scratch: `scratch_dtype`), and each chunk's sums of `g·ρ`, `g·ρ·ȳ` for the global part.
2. `_local_bwd_keys_kernel`, per key tile: the global part plus, over the row tiles whose band reaches it,
   `Aᵀρ` and `(V − μ)·Aᵀρ − Aᵀυ`; writes dK, dV.
3. `_local_band_grad_kernel`, per (row tile, key tile) pair on the band: the bias gradient
   `dA = Σ_{b,c} ρ·(e^{K−M}·(V − μ))ᵀ − υ·(e^{K−M})ᵀ`, summed over batch rows and every channel inside the
   program and stored once, so it is reproducible run to run.

μ is a per-channel centre, the mean `n/d` of the saved state of the row tile (causal) or of all tokens, that
every kernel reading υ takes from the same place. dK and dA hold `ρ·(V_t' − ȳ_t)`, which cancels when V varies
little about a large mean; taken about μ, both factors of every band product are of the size of V's spread, so
the products run in the input dtype on the tensor cores with fp32 accumulation. For fp16 the operands are
scaled per row (dA) or per channel (keys) before rounding: ρ has fp32's range (den can be far below 1).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from attnbench.mechanisms.aft.triton_aft_band import (
    band_block,
    band_keys,
    band_offsets,
    band_sizes,
    row_sums,
    tile_scale,
)
from attnbench.mechanisms.aft.triton_aft_scan import (
    Layout,
    channel_configs,
    chunk_tails,
    load_state,
    load_tile,
    scan_tile,
    tile_offsets,
)
from attnbench.mechanisms.triton_common import (
    dot_precision,
    launchable,
    multiprocessors,
    scratch,
)

CPU_MULTIPROCESSORS = 2  # the band gradient's batch groups are sized as if a CPU had this many


@triton.jit
def _unit_rows(b_x, b_y):
    """`[BLOCK_T, 1]`-broadcast largest magnitude of each row of two tiles (1 for an all-zero row)."""
    b_r = tl.maximum(tl.max(tl.abs(b_x), axis=1), tl.max(tl.abs(b_y), axis=1))
    return tl.where(b_r > 0, b_r, 1.0)


@triton.autotune(
    configs=channel_configs(), key=["C", "CAUSAL"], prune_configs_by=launchable(f"{__name__}:_local_bwd_rows_kernel")
)
@triton.jit
def _local_bwd_rows_kernel(
    p_q, p_k, p_v, p_dy, p_dq, p_rho, p_ups, p_cb, p_g, p_total, p_tiles, p_z, T, C, NT, NCHUNK, S, W,
    CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr, BLOCK_T: tl.constexpr, TILES_PER_CHUNK,
    BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Per row tile: dQ, ρ, the centred υ and the chunk's sums of `g·ρ`, `g·ρ·ȳ` into `z [2, B, NCHUNK, C]`
    (causal: rescaled to the chunk's first tile, as AFT-simple's)."""
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
        _, b_mu = tile_scale(p_total, p_tiles, n_b, i_b, j, o_c, m_c, C, NT, CAUSAL)
        b_num, b_den, b_g = row_sums(
            p_k, p_v, p_cb, p_g, i_b, t0, T, C, o_c, m_c, b_m, b_mu, b_num, b_den, S, W,
            CAUSAL, DOT_PRECISION, BLOCK_T, BLOCK_C,
        )  # fmt: skip
        b_dev = tl.where(mask, b_num / b_den, 0.0)  # ȳ − μ
        b_ybar = tl.where(mask, b_mu[None, :] + b_dev, 0.0)
        b_dy = load_tile(p_dy, o, mask)
        b_s = tl.sigmoid(load_tile(p_q, o, mask))
        tl.store(p_dq + o, (b_dy * b_ybar * b_s * (1 - b_s)).to(p_dq.dtype.element_ty), mask=mask)
        b_rho = tl.where(mask, b_dy * b_s / b_den, 0.0)
        tl.store(p_rho + o, b_rho.to(p_rho.dtype.element_ty), mask=mask)
        tl.store(p_ups + o, (b_rho * b_dev).to(p_ups.dtype.element_ty), mask=mask)
        b_sum = tl.sum(b_g[:, None] * b_rho, axis=0)
        b_sum2 = tl.sum(b_g[:, None] * b_rho * b_ybar, axis=0)
        if CAUSAL:
            b_sum, b_sum2 = b_sum * tl.exp(b_first - b_m), b_sum2 * tl.exp(b_first - b_m)
        b_z += b_sum
        b_z2 += b_sum2
    o_z = (i_b.to(tl.int64) * NCHUNK + i_n) * C + o_c
    tl.store(p_z + o_z, b_z, mask=m_c)
    tl.store(p_z + n_b * NCHUNK * C + o_z, b_z2, mask=m_c)


@triton.jit
def _band_to_keys(
    p_rho, p_ups, p_cb, p_total, p_tiles, n_b, i_b, j, b_v, T, C, NT, S, W, o_c, m_c, b_M,
    CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr, SCALE: tl.constexpr, BLOCK_T: tl.constexpr,
    BLOCK_C: tl.constexpr, DT: tl.constexpr,
):  # fmt: skip
    """The band's share of key tile `j` at scale `b_M`, `[BLOCK_T, BLOCK_C]` each: `Σ_r Aᵀρ_r` (for dV) and
    `Σ_r (V − μ_r)·Aᵀρ_r − Aᵀυ_r` (for dK), over the row tiles r whose band reaches its keys (causal: each row
    tile's ρ, υ rescaled from its own scale to the keys')."""
    t0 = j * BLOCK_T
    b_bn = tl.zeros([BLOCK_T, BLOCK_C], tl.float32)
    b_bk = tl.zeros([BLOCK_T, BLOCK_C], tl.float32)
    r_lo = j if CAUSAL else tl.maximum(t0 - S + 1, 0) // BLOCK_T  # first row tile whose band reaches the keys
    for r in range(r_lo, tl.minimum((t0 + BLOCK_T + S - 2) // BLOCK_T + 1, NT)):
        o_r, m_r = tile_offsets(i_b, r * BLOCK_T, T, C, o_c, m_c, BLOCK_T)
        b_rho, b_ups = load_tile(p_rho, o_r, m_r), load_tile(p_ups, o_r, m_r)
        b_Mr, b_mu = tile_scale(p_total, p_tiles, n_b, i_b, r, o_c, m_c, C, NT, CAUSAL)
        if CAUSAL:
            b_f = tl.where(m_c, tl.exp(b_M - b_Mr), 0.0)  # rows' scale >= keys'
            b_rho, b_ups = b_rho * b_f[None, :], b_ups * b_f[None, :]
        b_at = tl.trans(band_block(p_cb, W, T, S, r * BLOCK_T, t0, BLOCK_T)).to(DT)  # (keys, rows)
        if SCALE:  # per channel: the dot sums over rows
            b_s = tl.maximum(tl.max(tl.abs(b_rho), axis=0), tl.max(tl.abs(b_ups), axis=0))
            b_s = tl.where(b_s > 0, b_s, 1.0)[None, :]
            b_rho, b_ups = b_rho / b_s, b_ups / b_s
        b_p = tl.dot(b_at, b_rho.to(DT), input_precision=DOT_PRECISION)
        b_pu = tl.dot(b_at, b_ups.to(DT), input_precision=DOT_PRECISION)
        if SCALE:
            b_p, b_pu = b_p * b_s, b_pu * b_s
        b_bn += b_p
        b_bk += (b_v - b_mu[None, :]) * b_p - b_pu
    return b_bn, b_bk


@triton.autotune(
    configs=channel_configs(), key=["C", "CAUSAL"], prune_configs_by=launchable(f"{__name__}:_local_bwd_keys_kernel")
)
@triton.jit
def _local_bwd_keys_kernel(
    p_k, p_v, p_dk, p_dv, p_rho, p_ups, p_cb, p_g, p_total, p_tiles, p_h, T, C, NT, NCHUNK, S, W,
    CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr, SCALE: tl.constexpr, BLOCK_T: tl.constexpr,
    TILES_PER_CHUNK, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Per key tile: `dV = e^{K−M}·(U + Aᵀρ)`, `dK = e^{K−M}·(V·U − U' + band)`, U and U' the global part.

    Non-causal: `p_h` holds the chunks' sums of `g·ρ`, `g·ρ·ȳ`, U and U' their totals. Causal: U, U' are the
    reverse sums over rows at or after the key, walked from the chunk's last tile starting at `h [2, B,
    NCHUNK, C]`."""
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
        b_M, _ = tile_scale(p_total, p_tiles, n_b, i_b, 0, o_c, m_c, C, NT, CAUSAL)
        for i_p in range(NCHUNK):
            o_h = (i_b.to(tl.int64) * NCHUNK + i_p) * C + o_c
            b_h += tl.load(p_h + o_h, mask=m_c, other=0.0)
            b_h2 += tl.load(p_h + n_b * NCHUNK * C + o_h, mask=m_c, other=0.0)
    j0 = i_n * TILES_PER_CHUNK
    j1 = tl.minimum(j0 + TILES_PER_CHUNK, NT)
    for i in range(j1 - j0):
        j = j1 - 1 - i
        t0 = j * BLOCK_T
        o, mask = tile_offsets(i_b, t0, T, C, o_c, m_c, BLOCK_T)
        if CAUSAL:
            b_M, b_mu = tile_scale(p_total, p_tiles, n_b, i_b, j, o_c, m_c, C, NT, CAUSAL)
        b_k, b_v = load_tile(p_k, o, mask), load_tile(p_v, o, mask)
        b_e = tl.exp(tl.where(mask, b_k - b_M[None, :], float("-inf")))
        b_bn, b_bk = _band_to_keys(
            p_rho, p_ups, p_cb, p_total, p_tiles, n_b, i_b, j, b_v, T, C, NT, S, W, o_c, m_c, b_M,
            CAUSAL, DOT_PRECISION, SCALE, BLOCK_T, BLOCK_C, p_k.dtype.element_ty,
        )  # fmt: skip
        if CAUSAL:
            o_t = t0 + tl.arange(0, BLOCK_T)
            b_g = tl.load(p_g + o_t, mask=o_t < T, other=0.0)[:, None]
            b_rho = load_tile(p_rho, o, mask)
            b_grho = b_g * b_rho
            b_gups = b_g * (load_tile(p_ups, o, mask) + b_mu[None, :] * b_rho)  # g·ρ·ȳ, uncentred
            b_u = tl.cumsum(b_grho, axis=0, reverse=True) + b_h[None, :]
            b_u2 = tl.cumsum(b_gups, axis=0, reverse=True) + b_h2[None, :]
            o_p = (i_b.to(tl.int64) * NT + j - 1) * C + o_c
            b_prev = tl.load(p_tiles + o_p, mask=tl.where(j > 0, m_c, False), other=float("-inf"))
            b_f = tl.exp(b_prev - b_M)  # decay to the previous tile's scale; 0 before the first tile
            b_h = b_f * (b_h + tl.sum(b_grho, axis=0))
            b_h2 = b_f * (b_h2 + tl.sum(b_gups, axis=0))
        else:
            b_u = b_h[None, :]
            b_u2 = b_h2[None, :]
        tl.store(p_dv + o, (b_e * (b_u + b_bn)).to(p_dv.dtype.element_ty), mask=mask)
        tl.store(p_dk + o, (b_e * (b_v * b_u - b_u2 + b_bk)).to(p_dk.dtype.element_ty), mask=mask)


@triton.autotune(
    configs=channel_configs(), key=["C", "CAUSAL"], prune_configs_by=launchable(f"{__name__}:_local_band_grad_kernel")
)
@triton.jit
def _local_band_grad_kernel(
    p_k, p_v, p_rho, p_ups, p_total, p_tiles, p_dcb, B, ROWS_PER_GROUP, T, C, NT, S, W,
    CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr, SCALE: tl.constexpr, BLOCK_T: tl.constexpr,
    BLOCK_C: tl.constexpr,
):  # fmt: skip
    """dA of row tile `r` (axis 1) against the `i`-th key tile its band reaches (axis 0), summed over every
    channel and the batch rows of group `i_g` (axis 2): `dcb [groups, T, W]`, each band entry stored once."""
    i_k, r, i_g = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    t0 = r * BLOCK_T
    j = tl.maximum(t0 - S + 1, 0) // BLOCK_T + i_k
    j_hi = r if CAUSAL else tl.minimum((t0 + BLOCK_T + S - 2) // BLOCK_T, NT - 1)
    if j <= j_hi:
        dt = p_k.dtype.element_ty
        n_b = tl.cast(B, tl.int64)
        b_da = tl.zeros([BLOCK_T, BLOCK_T], tl.float32)
        for i_row in range(i_g * ROWS_PER_GROUP, tl.minimum((i_g + 1) * ROWS_PER_GROUP, B)):
            i_b = tl.cast(i_row, tl.int64)
            for c0 in range(0, C, BLOCK_C):
                o_c = c0 + tl.arange(0, BLOCK_C)
                m_c = o_c < C
                b_M, b_mu = tile_scale(p_total, p_tiles, n_b, i_b, r, o_c, m_c, C, NT, CAUSAL)
                o_r, m_r = tile_offsets(i_b, t0, T, C, o_c, m_c, BLOCK_T)
                b_rho, b_ups = load_tile(p_rho, o_r, m_r), load_tile(p_ups, o_r, m_r)
                b_e, b_ev = band_keys(p_k, p_v, i_b, j * BLOCK_T, T, C, o_c, m_c, b_M, BLOCK_T)
                b_evc = b_ev - b_e * b_mu[None, :]  # e^{K−M}·(V − μ)
                if SCALE:  # per row: the dot sums over channels
                    b_s = _unit_rows(b_rho, b_ups)[:, None]
                    b_rho, b_ups = b_rho / b_s, b_ups / b_s
                b_part = tl.dot(b_rho.to(dt), tl.trans(b_evc.to(dt)), input_precision=DOT_PRECISION)
                b_part -= tl.dot(b_ups.to(dt), tl.trans(b_e.to(dt)), input_precision=DOT_PRECISION)
                if SCALE:
                    b_part = b_part * b_s
                b_da += b_part
        o_a, m_a = band_offsets(W, T, S, t0, j * BLOCK_T, BLOCK_T)
        o_k = j * BLOCK_T + tl.arange(0, BLOCK_T)
        tl.store(p_dcb + i_g.to(tl.int64) * T * W + o_a, b_da, mask=m_a & (o_k < T)[None, :])


def band_gradient(k, v, rho, ups, saved, window: int, causal: bool, lay: Layout) -> torch.Tensor:
    """`dcband [T, 2s − 1]`: one program per (row tile, key tile) pair on the band, over batch rows in as few
    groups as fill the GPU (about four programs per multiprocessor); the groups' partial sums are added here."""
    reach = triton.cdiv(window - 1, lay.block_t) + 2 if causal else triton.cdiv(2 * window - 2, lay.block_t) + 2
    per_group = max(1, lay.B * reach * lay.nt // (4 * multiprocessors(k.device, CPU_MULTIPROCESSORS)))
    per_group = min(per_group, lay.B)
    groups = triton.cdiv(lay.B, per_group)
    T, C, NT, _, S, W = band_sizes(lay, window)
    # Entries no program stores (keys off the sequence; causal, the future) are 0.
    dcb = torch.zeros((groups, T, W), dtype=torch.float32, device=k.device)
    _local_band_grad_kernel[(reach, NT, groups)](
        k, v, rho, ups, saved, saved, dcb, lay.B, per_group, T, C, NT, S, W,
        CAUSAL=causal, DOT_PRECISION=dot_precision(k.dtype), SCALE=k.dtype == torch.float16, BLOCK_T=lay.block_t,
    )  # fmt: skip
    return dcb[0] if groups == 1 else dcb.sum(0)


def scratch_dtype(dtype: torch.dtype) -> torch.dtype:
    """What ρ and υ are kept in between the passes: bf16 for bf16 problems (the band products round them to bf16
    anyway, and centred, that rounding is relative to V's spread), fp32 otherwise (fp16's range is too narrow
    for ρ; fp32 problems keep fp32)."""
    return torch.bfloat16 if dtype == torch.bfloat16 else torch.float32


def backward(q, k, v, cband, g, dy, saved, window: int, causal: bool, lay: Layout):
    """`dQ, dK, dV` and the band's `dcband` from `dY` and the forward's saved states: the rows pass, the chunks'
    tails (causal), the keys pass and the band gradient."""
    dq, dk, dv = (scratch(q.shape, q.dtype, q.device) for _ in range(3))
    rho, ups = (scratch(q.shape, scratch_dtype(q.dtype), q.device) for _ in range(2))
    z = lay.state(2, lay.nchunk, q.device)
    meta = dict(CAUSAL=causal, DOT_PRECISION=dot_precision(q.dtype), **lay.tiling())
    sizes = band_sizes(lay, window)
    _local_bwd_rows_kernel[lay.grid](q, k, v, dy, dq, rho, ups, cband, g, saved, saved, z, *sizes, **meta)
    if not causal:
        h = z
    elif lay.nchunk == 1:
        h = torch.zeros_like(z)
    else:
        h = chunk_tails(z, saved, lay)
    _local_bwd_keys_kernel[lay.grid](
        k, v, dk, dv, rho, ups, cband, g, saved, saved, h, *sizes, SCALE=q.dtype == torch.float16, **meta
    )  # fmt: skip
    return dq, dk, dv, band_gradient(k, v, rho, ups, saved, window, causal, lay)
