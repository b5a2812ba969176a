"""Causal TSSA in Triton: every token sum is a prefix sum, done as a chunked scan (one chunk = one token tile).

Per (batch b, head h) and token t: C_t = Σ_{t'≤t} w², s_t = Σ_c w_t²/max(C_t, 1e-12), Π_t = softmax_h(temp·(s_t +
d·beta[h,t])), A_t = Σ_{t'≤t} Π w², M_t = Σ_{t'≤t} Π, r_t = 1/(1 + A_t/(M_t + 1e-8)), out_t = -w_t·Π_t·r_t.
A scan is three steps: a kernel writes each tile's sum, `scan_carries` (triton_tssa_carries.py) turns those (a
`[B, T/BLOCK_T, H, d]` array, 1/BLOCK_T of `w` in fp32) in place into each tile's carry, and the next kernel adds
the carry to its own in-tile `tl.cumsum`. Every step is a Triton launch: no torch operation runs between them.
Forward passes: (1) tile sums of w², (2) Π (needs C, so all heads of a token) and tile sums of Πw², Π, (3) the
output. The backward runs the same way with suffix sums (README.md derives it): (1) tile sums of ∂A = ∂L/∂A and
∂Z = ∂L/∂(M + 1e-8), (2) the head-softmax backward to the logit gradient ∂s, ∂temp, ∂beta and tile sums of
∂C = ∂L/∂C, (3) dw. Prefix quantities the backward needs are recomputed in-tile from the carries the forward
saved; besides the output only Π (and in the backward ∂s), `[B,T,H]` fp32, are stored per token.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from attnbench.mechanisms.triton_common import head_blocks, scratch
from attnbench.mechanisms.tssa.reference import MASS_EPS, PREFIX_EPS
from attnbench.mechanisms.tssa.triton_tssa_carries import scan_carries

# The non-causal tile: each tile is also a scan chunk whose carries (2D + H fp32 numbers) are written, scanned and
# read back, 4/(s·BLOCK_T) of a pass over w (6% at d = 128 bf16). A tile of 8192 elements halved that share but
# left the all-heads passes at 255 registers a thread at every head width (32 tile elements a thread).
TILE_ELEMENTS = 4096
# Tile elements a thread holds, per pass: its warps are BLOCK_T·BLOCK_D / (32 · this), 4 to 16. The forward's
# streaming passes hold a tile or two; the memberships pass and the backward's streaming passes keep several
# `[BLOCK_T, BLOCK_D]` fp32 temporaries (in-tile prefix and suffix sums) live at once, the logit gradient the most.
PER_THREAD = {"stream": 32, "memberships": 16, "backward": 16, "logit_grad": 8}
# The clamps of the passes that take both.
EPS = {"PREFIX_EPS": PREFIX_EPS, "MASS_EPS": MASS_EPS}


@triton.jit
def _tile_sumsq_kernel(p_w, p_cw2, T, H, D, d, N_TILES, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """Forward pass 1: Σ_t w² over one token tile of one (batch, head), into its slot of `[B, n_tiles, H, d]`."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    o_t = i_t * BLOCK_T + tl.arange(0, BLOCK_T)
    o_c = tl.arange(0, BLOCK_D)
    m_c = o_c < d
    o_row = (i_b * T + o_t).to(tl.int64)
    b_w = tl.load(p_w + o_row[:, None] * D + i_h * d + o_c[None, :], mask=(o_t < T)[:, None] & m_c[None, :], other=0.0)
    b_w = b_w.to(tl.float32)
    o_tile = ((i_b * N_TILES + i_t) * H + i_h).to(tl.int64)
    tl.store(p_cw2 + o_tile * d + o_c, tl.sum(b_w * b_w, axis=0), mask=m_c)


@triton.jit
def _prefix_sum(b_w2, p_carry_w2, o_c, m_c):
    """C_t `[BLOCK_T, BLOCK_D]`: the carry of earlier tiles + the in-tile prefix sum of w² (exactly w_0² at the
    first token)."""
    return tl.load(p_carry_w2 + o_c, mask=m_c, other=0.0)[None, :] + tl.cumsum(b_w2, axis=0)


@triton.jit
def _prefix_den(b_w2, p_carry_w2, o_c, m_c, PREFIX_EPS: tl.constexpr):
    """den_t = max(C_t, eps) `[BLOCK_T, BLOCK_D]` and whether the clamp is inactive (the gradient flows to C only
    there)."""
    b_c = _prefix_sum(b_w2, p_carry_w2, o_c, m_c)
    return tl.maximum(b_c, PREFIX_EPS), b_c > PREFIX_EPS


@triton.jit
def _suffix(b_x):
    """Inclusive suffix sum along tokens (axis 0): Σ_{t'≥t} x_t'. A reverse scan, not `total - prefix`: the
    gradient with respect to C_t is huge where C_t is small (early tokens), and subtracting it from the total
    would wipe out the small sums after it."""
    return tl.cumsum(b_x, axis=0, reverse=True)


@triton.jit
def _prefix_grads(b_w, b_g, b_pi, p_carry_a, p_carry_m, o_c, m_c, MASS_EPS: tl.constexpr):
    """For one token tile of one (batch, head): w², r_t = 1/(1 + dots_t), ∂A_t `[BLOCK_T, BLOCK_D]` and ∂Z_t
    `[BLOCK_T]`, where dots_t = A_t/Z_t with A, Z = M + 1e-8 rebuilt from the forward's carries."""
    b_w2 = b_w * b_w
    b_a = tl.load(p_carry_a + o_c, mask=m_c, other=0.0)[None, :] + tl.cumsum(b_pi[:, None] * b_w2, axis=0)
    b_z = tl.load(p_carry_m) + tl.cumsum(b_pi, axis=0) + MASS_EPS
    b_dots = b_a / b_z[:, None]
    b_r = 1.0 / (1.0 + b_dots)
    b_ddots = b_g * b_w * b_pi[:, None] * b_r * b_r  # ∂L/∂dots_t
    return b_w2, b_r, b_ddots / b_z[:, None], -tl.sum(b_ddots * b_dots, axis=1) / b_z


@triton.jit
def _memberships_kernel(
    p_w, p_temp, p_beta, p_carry_w2, p_pi, p_cpw2, p_cpi, T, H, D, d, N_TILES, T_MAX,
    PREFIX_EPS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """Forward pass 2, one token tile of one batch row, all heads: Π (stored) and the tile sums of Πw², Π."""
    i_t, i_b = tl.program_id(0), tl.program_id(1)
    o_t = i_t * BLOCK_T + tl.arange(0, BLOCK_T)
    o_c = tl.arange(0, BLOCK_D)
    o_h = tl.arange(0, BLOCK_H)
    m_t, m_c, m_h = o_t < T, o_c < d, o_h < H
    m_tc = m_t[:, None] & m_c[None, :]
    o_row = (i_b * T + o_t).to(tl.int64)
    o_tile = ((i_b * N_TILES + i_t) * H).to(tl.int64)
    b_logit = tl.full([BLOCK_T, BLOCK_H], float("-inf"), dtype=tl.float32)
    for h in range(H):
        b_w = tl.load(p_w + o_row[:, None] * D + h * d + o_c[None, :], mask=m_tc, other=0.0).to(tl.float32)
        b_w2 = b_w * b_w
        b_den, _ = _prefix_den(b_w2, p_carry_w2 + (o_tile + h) * d, o_c, m_c, PREFIX_EPS)
        b_beta = tl.load(p_beta + h * T_MAX + o_t, mask=m_t, other=0.0).to(tl.float32)
        b_a = tl.load(p_temp + h).to(tl.float32) * (tl.sum(b_w2 / b_den, axis=1) + d * b_beta)
        b_logit = tl.where(o_h[None, :] == h, b_a[:, None], b_logit)
    b_exp = tl.exp(b_logit - tl.max(b_logit, axis=1)[:, None])
    b_pi = b_exp / tl.sum(b_exp, axis=1)[:, None]
    b_pi = tl.where(m_t[:, None], b_pi, 0.0)
    tl.store(p_pi + o_row[:, None] * H + o_h[None, :], b_pi, mask=m_t[:, None] & m_h[None, :])
    tl.store(p_cpi + o_tile + o_h, tl.sum(b_pi, axis=0), mask=m_h)
    for h in range(H):
        b_w = tl.load(p_w + o_row[:, None] * D + h * d + o_c[None, :], mask=m_tc, other=0.0).to(tl.float32)
        b_pih = tl.sum(tl.where(o_h[None, :] == h, b_pi, 0.0), axis=1)
        tl.store(p_cpw2 + (o_tile + h) * d + o_c, tl.sum(b_pih[:, None] * b_w * b_w, axis=0), mask=m_c)


@triton.jit
def _output_kernel(
    p_w, p_pi, p_carry_a, p_carry_m, p_out, T, H, D, d, N_TILES,
    MASS_EPS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Forward pass 3: out_t = -w_t·Π_t/(1 + A_t/(M_t + 1e-8)), one token tile of one (batch, head)."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    o_t = i_t * BLOCK_T + tl.arange(0, BLOCK_T)
    o_c = tl.arange(0, BLOCK_D)
    m_t, m_c = o_t < T, o_c < d
    m_tc = m_t[:, None] & m_c[None, :]
    o_row = (i_b * T + o_t).to(tl.int64)
    o_tile = ((i_b * N_TILES + i_t) * H + i_h).to(tl.int64)
    o_wd = o_row[:, None] * D + i_h * d + o_c[None, :]
    b_w = tl.load(p_w + o_wd, mask=m_tc, other=0.0).to(tl.float32)
    b_pi = tl.load(p_pi + o_row * H + i_h, mask=m_t, other=0.0)
    b_a = tl.load(p_carry_a + o_tile * d + o_c, mask=m_c, other=0.0)[None, :] + tl.cumsum(
        b_pi[:, None] * b_w * b_w, axis=0
    )
    b_z = tl.load(p_carry_m + o_tile) + tl.cumsum(b_pi, axis=0) + MASS_EPS
    b_out = -b_w * b_pi[:, None] / (1.0 + b_a / b_z[:, None])
    tl.store(p_out + o_wd, b_out.to(p_out.dtype.element_ty), mask=m_tc)


@triton.jit
def _tile_gradsum_kernel(
    p_w, p_g, p_pi, p_carry_a, p_carry_m, p_cda, p_cdz, T, H, D, d, N_TILES,
    MASS_EPS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Backward pass 1: tile sums of ∂A `[B, n_tiles, H, d]` and ∂Z `[B, n_tiles, H]`, one (batch, head) tile."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    o_t = i_t * BLOCK_T + tl.arange(0, BLOCK_T)
    o_c = tl.arange(0, BLOCK_D)
    m_t, m_c = o_t < T, o_c < d
    m_tc = m_t[:, None] & m_c[None, :]
    o_row = (i_b * T + o_t).to(tl.int64)
    o_tile = ((i_b * N_TILES + i_t) * H + i_h).to(tl.int64)
    o_wd = o_row[:, None] * D + i_h * d + o_c[None, :]
    b_w = tl.load(p_w + o_wd, mask=m_tc, other=0.0).to(tl.float32)
    b_g = tl.load(p_g + o_wd, mask=m_tc, other=0.0).to(tl.float32)
    b_pi = tl.load(p_pi + o_row * H + i_h, mask=m_t, other=0.0)
    _, _, b_da, b_dz = _prefix_grads(b_w, b_g, b_pi, p_carry_a + o_tile * d, p_carry_m + o_tile, o_c, m_c, MASS_EPS)
    tl.store(p_cda + o_tile * d + o_c, tl.sum(b_da, axis=0), mask=m_c)
    tl.store(p_cdz + o_tile, tl.sum(b_dz, axis=0))


@triton.jit
def _logit_grad_kernel(
    p_w, p_g, p_temp, p_beta, p_pi, p_carry_w2, p_carry_a, p_carry_m, p_carry_da, p_carry_dz, p_ds, p_dtemp, p_dbeta,
    p_cdc, T, H, D, d, N_TILES, T_MAX,
    PREFIX_EPS: tl.constexpr, MASS_EPS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_H: tl.constexpr,
):  # fmt: skip
    """Backward pass 2, one token tile of one batch row, all heads: ∂Π_t = -Σ_c g·w·r + Σ_c Ā_t·w² + Z̄_t (Ā, Z̄
    the suffix sums of ∂A, ∂Z), the head-softmax backward to ∂a, then ∂s = temp·∂a (stored), ∂temp, ∂beta and
    the tile sums of ∂C_t = -∂s_t·w_t²/den_t²."""
    i_t, i_b = tl.program_id(0), tl.program_id(1)
    o_t = i_t * BLOCK_T + tl.arange(0, BLOCK_T)
    o_c = tl.arange(0, BLOCK_D)
    o_h = tl.arange(0, BLOCK_H)
    m_t, m_c, m_h = o_t < T, o_c < d, o_h < H
    m_tc = m_t[:, None] & m_c[None, :]
    m_th = m_t[:, None] & m_h[None, :]
    o_row = (i_b * T + o_t).to(tl.int64)
    o_tile = ((i_b * N_TILES + i_t) * H).to(tl.int64)
    b_pi = tl.load(p_pi + o_row[:, None] * H + o_h[None, :], mask=m_th, other=0.0)
    b_dpi = tl.zeros([BLOCK_T, BLOCK_H], dtype=tl.float32)
    b_stat = tl.zeros([BLOCK_T, BLOCK_H], dtype=tl.float32)
    for h in range(H):
        o_wd = o_row[:, None] * D + h * d + o_c[None, :]
        b_w = tl.load(p_w + o_wd, mask=m_tc, other=0.0).to(tl.float32)
        b_g = tl.load(p_g + o_wd, mask=m_tc, other=0.0).to(tl.float32)
        b_pih = tl.sum(tl.where(o_h[None, :] == h, b_pi, 0.0), axis=1)
        o_bh = o_tile + h
        b_w2, b_r, b_da, b_dz = _prefix_grads(
            b_w, b_g, b_pih, p_carry_a + o_bh * d, p_carry_m + o_bh, o_c, m_c, MASS_EPS
        )
        b_da_sum = tl.load(p_carry_da + o_bh * d + o_c, mask=m_c, other=0.0)[None, :] + _suffix(b_da)
        b_dz_sum = tl.load(p_carry_dz + o_bh) + _suffix(b_dz)
        b_dpih = tl.sum(b_da_sum * b_w2 - b_g * b_w * b_r, axis=1) + b_dz_sum
        b_den, _ = _prefix_den(b_w2, p_carry_w2 + o_bh * d, o_c, m_c, PREFIX_EPS)
        b_beta = tl.load(p_beta + h * T_MAX + o_t, mask=m_t, other=0.0).to(tl.float32)
        b_stath = tl.sum(b_w2 / b_den, axis=1) + d * b_beta  # the logit divided by temp
        b_dpi = tl.where(o_h[None, :] == h, b_dpih[:, None], b_dpi)
        b_stat = tl.where(o_h[None, :] == h, b_stath[:, None], b_stat)
    b_dlogit = b_pi * (b_dpi - tl.sum(b_pi * b_dpi, axis=1)[:, None])
    b_dlogit = tl.where(m_th, b_dlogit, 0.0)
    tl.atomic_add(p_dtemp + o_h, tl.sum(b_dlogit * b_stat, axis=0), mask=m_h)
    b_ds = tl.load(p_temp + o_h, mask=m_h, other=0.0).to(tl.float32)[None, :] * b_dlogit
    tl.store(p_ds + o_row[:, None] * H + o_h[None, :], b_ds, mask=m_th)
    tl.atomic_add(p_dbeta + o_h[None, :] * T_MAX + o_t[:, None], d * b_ds, mask=m_th)
    for h in range(H):
        b_w = tl.load(p_w + o_row[:, None] * D + h * d + o_c[None, :], mask=m_tc, other=0.0).to(tl.float32)
        b_w2 = b_w * b_w
        b_den, m_live = _prefix_den(b_w2, p_carry_w2 + (o_tile + h) * d, o_c, m_c, PREFIX_EPS)
        b_dsh = tl.sum(tl.where(o_h[None, :] == h, b_ds, 0.0), axis=1)
        b_dc = tl.where(m_live, -b_dsh[:, None] * b_w2 / (b_den * b_den), 0.0)
        tl.store(p_cdc + (o_tile + h) * d + o_c, tl.sum(b_dc, axis=0), mask=m_c)


@triton.jit
def _next_dc(p_w, p_ds, o_row, o_t, b_c, i_h, o_col, m_c, t_end, T, H, D, PREFIX_EPS: tl.constexpr):
    """∂C_{t+1} = -∂s_{t+1}·w_{t+1}²/den_{t+1}² beside each token t, `[BLOCK_T, BLOCK_D]` (0 for the tile's last
    token, whose successors are in the carry): its reverse prefix sum is the suffix sum strictly after t, taken
    without subtracting ∂C_t. The shifted rows are the tile's own but one, so they come from cache."""
    m_next = (o_t + 1 < t_end) & (o_t + 1 < T)
    o_next = o_row + 1
    b_w = tl.load(p_w + o_next[:, None] * D + o_col[None, :], mask=m_next[:, None] & m_c[None, :], other=0.0)
    b_w2 = b_w.to(tl.float32) * b_w.to(tl.float32)
    b_ds = tl.load(p_ds + o_next * H + i_h, mask=m_next, other=0.0)
    b_c_next = b_c + b_w2
    b_den = tl.maximum(b_c_next, PREFIX_EPS)
    return tl.where((b_c_next > PREFIX_EPS) & m_next[:, None], -b_ds[:, None] * b_w2 / (b_den * b_den), 0.0)


@triton.jit
def _dw_kernel(
    p_w, p_g, p_pi, p_ds, p_carry_w2, p_carry_a, p_carry_m, p_carry_da, p_carry_dc, p_dw, T, H, D, d, N_TILES,
    PREFIX_EPS: tl.constexpr, MASS_EPS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Backward pass 3: dw = -g·Π·r + 2w·(Π·Ā + ∂s/den + C̄), Ā and C̄ the suffix sums of ∂A and ∂C.

    Token t's own share of `∂s/den + C̄`, `∂s_t/den_t + ∂C_t = ∂s_t·C_{t-1}/den_t²`, is formed in that form, and the
    rest of C̄ is the suffix sum strictly after t: `∂s_t/den_t` and `∂C_t` are of size `∂s_t/w_t²` at an early
    token whose prefix is one small `w_t` (exactly cancelling at the first token), and summed apart they leave
    fp32's rounding of that size in dw (README.md, "Numerical notes")."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    o_t = i_t * BLOCK_T + tl.arange(0, BLOCK_T)
    o_c = tl.arange(0, BLOCK_D)
    m_t, m_c = o_t < T, o_c < d
    m_tc = m_t[:, None] & m_c[None, :]
    o_row = (i_b * T + o_t).to(tl.int64)
    o_tile = ((i_b * N_TILES + i_t) * H + i_h).to(tl.int64)
    o_wd = o_row[:, None] * D + i_h * d + o_c[None, :]
    b_w = tl.load(p_w + o_wd, mask=m_tc, other=0.0).to(tl.float32)
    b_g = tl.load(p_g + o_wd, mask=m_tc, other=0.0).to(tl.float32)
    b_pi = tl.load(p_pi + o_row * H + i_h, mask=m_t, other=0.0)
    b_ds = tl.load(p_ds + o_row * H + i_h, mask=m_t, other=0.0)
    b_w2, b_r, b_da, _ = _prefix_grads(b_w, b_g, b_pi, p_carry_a + o_tile * d, p_carry_m + o_tile, o_c, m_c, MASS_EPS)
    b_da_sum = tl.load(p_carry_da + o_tile * d + o_c, mask=m_c, other=0.0)[None, :] + _suffix(b_da)
    b_c = _prefix_sum(b_w2, p_carry_w2 + o_tile * d, o_c, m_c)
    b_den = tl.maximum(b_c, PREFIX_EPS)
    b_own = tl.where(b_c > PREFIX_EPS, b_ds[:, None] * (b_c - b_w2) / (b_den * b_den), b_ds[:, None] / b_den)
    t_end = i_t * BLOCK_T + BLOCK_T
    b_dc_next = _next_dc(p_w, p_ds, o_row, o_t, b_c, i_h, i_h * d + o_c, m_c, t_end, T, H, D, PREFIX_EPS)
    b_dc_after = tl.load(p_carry_dc + o_tile * d + o_c, mask=m_c, other=0.0)[None, :] + _suffix(b_dc_next)
    b_scale = b_pi[:, None] * b_da_sum + b_own + b_dc_after
    b_dw = -b_g * b_pi[:, None] * b_r + 2.0 * b_w * b_scale
    tl.store(p_dw + o_wd, b_dw.to(p_dw.dtype.element_ty), mask=m_tc)


def _launch_sizes(w: torch.Tensor, block_t: int | None):
    """What every pass is launched with: the blocks of `head_blocks` (`cfg`, with BLOCK_H, for the passes over
    all heads of a token; `tile_cfg` without it), the number of token tiles and the sizes `T, H, D, d, N_TILES`.
    The warps are each pass's own (`_warps`)."""
    _, T, H, d = w.shape
    cfg = head_blocks(H, d, block_t, TILE_ELEMENTS)
    cfg.pop("num_warps")
    tile_cfg = {name: value for name, value in cfg.items() if name != "BLOCK_H"}
    n_tiles = triton.cdiv(T, cfg["BLOCK_T"])
    return cfg, tile_cfg, n_tiles, (T, H, H * d, d, n_tiles)


def _warps(cfg: dict[str, int], kind: str) -> dict[str, int]:
    """`cfg` with the warps of a pass of `kind` (a key of PER_THREAD)."""
    warps = cfg["BLOCK_T"] * cfg["BLOCK_D"] // (32 * PER_THREAD[kind])
    return {**cfg, "num_warps": min(16, max(4, warps))}


def _forward(w: torch.Tensor, temp: torch.Tensor, beta: torch.Tensor, block_t: int | None):
    """The three forward passes and the scans between them: the output and what the backward reads (Π and the
    tile carries of Σw², ΣΠw², ΣΠ). Each carry buffer first holds the tile sums, which the scan turns into carries."""
    B, T, H, d = w.shape
    cfg, tile_cfg, n_tiles, dims = _launch_sizes(w, block_t)
    stream, members = _warps(tile_cfg, "stream"), _warps(cfg, "memberships")
    carry_w2, carry_a = (scratch((B, n_tiles, H, d), torch.float32, w.device) for _ in range(2))
    carry_m, pi = scratch((B, n_tiles, H), torch.float32, w.device), scratch((B, T, H), torch.float32, w.device)
    _tile_sumsq_kernel[(n_tiles, B * H)](w, carry_w2, *dims, **stream)
    scan_carries(carry_w2)
    t_max = beta.shape[1]
    _memberships_kernel[(n_tiles, B)](
        w, temp, beta, carry_w2, pi, carry_a, carry_m, *dims, t_max, PREFIX_EPS=PREFIX_EPS, **members
    )
    scan_carries(carry_a, carry_m)
    out = scratch((B, T, H, d), w.dtype, w.device)
    _output_kernel[(n_tiles, B * H)](w, pi, carry_a, carry_m, out, *dims, MASS_EPS=MASS_EPS, **stream)
    return out, (pi, carry_w2, carry_a, carry_m)


def _backward(g, w, temp, beta, pi, carry_w2, carry_a, carry_m, block_t: int | None):
    """The three backward passes and the suffix scans between them, from the output gradient `g`: dw, dtemp,
    dbeta."""
    B, T, H, d = w.shape
    cfg, tile_cfg, n_tiles, dims = _launch_sizes(w, block_t)
    stream, logit = _warps(tile_cfg, "backward"), _warps(cfg, "logit_grad")
    carry_da, carry_dc = (scratch((B, n_tiles, H, d), torch.float32, w.device) for _ in range(2))
    carry_dz, ds = scratch((B, n_tiles, H), torch.float32, w.device), scratch((B, T, H), torch.float32, w.device)
    _tile_gradsum_kernel[(n_tiles, B * H)](
        w, g, pi, carry_a, carry_m, carry_da, carry_dz, *dims, MASS_EPS=MASS_EPS, **stream
    )
    scan_carries(carry_da, carry_dz, reverse=True)
    t_max = beta.shape[1]
    dtemp = torch.zeros(H, dtype=torch.float32, device=w.device)
    dbeta = torch.zeros(H, t_max, dtype=torch.float32, device=w.device)
    carries = (carry_w2, carry_a, carry_m, carry_da)
    _logit_grad_kernel[(n_tiles, B)](
        w, g, temp, beta, pi, *carries, carry_dz, ds, dtemp, dbeta, carry_dc, *dims, t_max, **EPS, **logit
    )
    scan_carries(carry_dc, reverse=True)
    dw = scratch((B, T, H, d), w.dtype, w.device)
    _dw_kernel[(n_tiles, B * H)](w, g, pi, ds, *carries, carry_dc, dw, *dims, **EPS, **stream)
    return dw, dtemp.to(temp.dtype), dbeta.to(beta.dtype)


class CausalTSSAFunction(torch.autograd.Function):
    """Causal TSSA with the Triton forward and backward; saves w, temp, beta, Π `[B,T,H]` and the tile carries
    of Σw², ΣΠw², ΣΠ (`(2D + H)·T/BLOCK_T` fp32 numbers per batch row)."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, temp: torch.Tensor, beta: torch.Tensor, block_t: int | None) -> torch.Tensor:
        w, temp, beta = w.contiguous(), temp.contiguous(), beta.contiguous()
        out, state = _forward(w, temp, beta, block_t)
        ctx.save_for_backward(w, temp, beta, *state)
        ctx.block_t = block_t
        return out

    @staticmethod
    def backward(ctx, dout: torch.Tensor):
        w, temp, beta, *state = ctx.saved_tensors
        dw, dtemp, dbeta = _backward(dout.contiguous(), w, temp, beta, *state, ctx.block_t)
        return dw, dtemp, dbeta, None


def tssa_causal(w: torch.Tensor, temp: torch.Tensor, beta: torch.Tensor, *, block_t: int | None = None) -> torch.Tensor:
    """Causal TSSA: `w [B,T,H,d]`, `temp [H]`, `beta [H, t_max]` (t_max >= T) -> `[B,T,H,d]` in `w.dtype`.

    `block_t` (a power of two) overrides the token tile, which is also the scan's chunk.
    """
    if beta.dim() != 2 or beta.shape[0] != w.shape[2] or beta.shape[1] < w.shape[1]:
        raise ValueError(f"tssa: beta must be [H, t_max] with t_max >= T = {w.shape[1]}, got {tuple(beta.shape)}")
    return CausalTSSAFunction.apply(w, temp, beta, block_t)
