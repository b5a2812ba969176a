"""Non-causal TSSA in Triton: three passes over `w` forward, three over `w` and `dout` backward.

Per (batch b, head h), with S = Σ_t w², n = max(√S, 1e-12), s_t = Σ_c (w_t/n)², Π_t = softmax_h(temp·s_t),
N = Σ_t Π_t w_t², M = Σ_t Π_t, r = 1/(1 + N/(M + 1e-8)) and out_t = -w_t·Π_t·r (README.md derives the
backward). Forward passes: (1) S, (2) Π and N, M, (3) the output. Backward passes: (1) R = Σ_t g·w·Π, (2) the
logit gradient ∂s_t and P = Σ_t ∂s_t·w², (3) dw. The token sums are split over programs (a grid over token tiles
× batch × head) and combined with fp32 atomics, so one long sequence still fills the GPU. Passes that need every
head of a token (the head softmax) run a program per (token tile, batch) that loops over the heads; the second
loop re-reads a tile the first just read, which the L2 cache serves.

`w`, `dout`, `out`, `dw` are `[B,T,H,d]` contiguous (a token row of D = H·d elements, each head d contiguous
elements); Π and ∂s are `[B,T,H]` fp32; S, N, R, P are `[B,H,d]` fp32 and M is `[B,H]` fp32.

`core`, the `triton` implementation's entry point, runs these kernels or, for causal problems, triton_tssa_causal.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from attnbench.mechanisms.problem import Problem
from attnbench.mechanisms.triton_common import head_blocks, scratch
from attnbench.mechanisms.tssa.reference import MASS_EPS, NORM_EPS
from attnbench.mechanisms.tssa.triton_tssa_causal import tssa_causal

# Programs a token-reduction pass aims for: each loops over enough token tiles that the grid is about this big
# (a few waves of 132 SMs), which keeps the number of atomics per address low.
TARGET_PROGRAMS = 1024


@triton.jit
def _sumsq_kernel(p_w, p_sumsq, T, H, D, d, TILES, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """Pass 1: S[b,h,:] += Σ_t w² over this program's TILES token tiles."""
    i_chunk, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    o_c = tl.arange(0, BLOCK_D)
    m_c = o_c < d
    b_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i in range(TILES):
        o_t = (i_chunk * TILES + i) * BLOCK_T + tl.arange(0, BLOCK_T)
        o_row = (i_b * T + o_t).to(tl.int64) * D + i_h * d
        b_w = tl.load(p_w + o_row[:, None] + o_c[None, :], mask=(o_t < T)[:, None] & m_c[None, :], other=0.0)
        b_w = b_w.to(tl.float32)
        b_acc += tl.sum(b_w * b_w, axis=0)
    tl.atomic_add(p_sumsq + i_bh * d + o_c, b_acc, mask=m_c)


@triton.jit
def _inv_norm(p_sumsq, o_c, m_c, NORM_EPS: tl.constexpr):
    """1 / max(‖w‖ over tokens, eps) for one (batch, head): `[BLOCK_D]`, and whether the clamp is inactive."""
    b_norm = tl.sqrt(tl.load(p_sumsq + o_c, mask=m_c, other=0.0))
    return 1.0 / tl.maximum(b_norm, NORM_EPS), b_norm > NORM_EPS


@triton.jit
def _memberships_kernel(
    p_w, p_temp, p_sumsq, p_pi, p_pisq, p_mass, T, H, D, d,
    NORM_EPS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """Pass 2, one token tile of one batch row, all heads: Π (stored), N[b,h,:] += Σ_t Π w², M[b,h] += Σ_t Π."""
    i_t, i_b = tl.program_id(0), tl.program_id(1)
    o_t = i_t * BLOCK_T + tl.arange(0, BLOCK_T)
    o_c = tl.arange(0, BLOCK_D)
    o_h = tl.arange(0, BLOCK_H)
    m_t, m_c, m_h = o_t < T, o_c < d, o_h < H
    m_tc = m_t[:, None] & m_c[None, :]
    o_row = (i_b * T + o_t).to(tl.int64)
    b_logit = tl.full([BLOCK_T, BLOCK_H], float("-inf"), dtype=tl.float32)
    for h in range(H):
        b_w = tl.load(p_w + o_row[:, None] * D + h * d + o_c[None, :], mask=m_tc, other=0.0).to(tl.float32)
        b_inv, _ = _inv_norm(p_sumsq + (i_b * H + h) * d, o_c, m_c, NORM_EPS)
        b_wn = b_w * b_inv[None, :]
        b_a = tl.load(p_temp + h).to(tl.float32) * tl.sum(b_wn * b_wn, axis=1)
        b_logit = tl.where(o_h[None, :] == h, b_a[:, None], b_logit)
    b_exp = tl.exp(b_logit - tl.max(b_logit, axis=1)[:, None])
    b_pi = b_exp / tl.sum(b_exp, axis=1)[:, None]
    b_pi = tl.where(m_t[:, None], b_pi, 0.0)
    tl.store(p_pi + o_row[:, None] * H + o_h[None, :], b_pi, mask=m_t[:, None] & m_h[None, :])
    for h in range(H):
        b_w = tl.load(p_w + o_row[:, None] * D + h * d + o_c[None, :], mask=m_tc, other=0.0).to(tl.float32)
        b_pih = tl.sum(tl.where(o_h[None, :] == h, b_pi, 0.0), axis=1)
        tl.atomic_add(p_pisq + (i_b * H + h) * d + o_c, tl.sum(b_pih[:, None] * b_w * b_w, axis=0), mask=m_c)
        tl.atomic_add(p_mass + i_b * H + h, tl.sum(b_pih, axis=0))


@triton.jit
def _output_kernel(
    p_w, p_pi, p_pisq, p_mass, p_out, T, H, D, d, MASS_EPS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr
):
    """Pass 3: out = -w·Π·r with r = 1/(1 + N/(M + 1e-8)), one token tile of one (batch, head)."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    o_t = i_t * BLOCK_T + tl.arange(0, BLOCK_T)
    o_c = tl.arange(0, BLOCK_D)
    m_t, m_c = o_t < T, o_c < d
    m_tc = m_t[:, None] & m_c[None, :]
    o_row = (i_b * T + o_t).to(tl.int64)
    b_dots = tl.load(p_pisq + i_bh * d + o_c, mask=m_c, other=0.0) / (tl.load(p_mass + i_bh) + MASS_EPS)
    b_r = 1.0 / (1.0 + b_dots)
    b_pi = tl.load(p_pi + o_row * H + i_h, mask=m_t, other=0.0)
    o_wd = o_row[:, None] * D + i_h * d + o_c[None, :]
    b_w = tl.load(p_w + o_wd, mask=m_tc, other=0.0).to(tl.float32)
    b_out = -b_w * b_pi[:, None] * b_r[None, :]
    tl.store(p_out + o_wd, b_out.to(p_out.dtype.element_ty), mask=m_tc)


@triton.jit
def _gradsum_kernel(p_w, p_g, p_pi, p_gwpi, T, H, D, d, TILES, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """Backward pass 1: R[b,h,:] += Σ_t g·w·Π over this program's TILES token tiles."""
    i_chunk, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    o_c = tl.arange(0, BLOCK_D)
    m_c = o_c < d
    b_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i in range(TILES):
        o_t = (i_chunk * TILES + i) * BLOCK_T + tl.arange(0, BLOCK_T)
        m_t = o_t < T
        m_tc = m_t[:, None] & m_c[None, :]
        o_row = (i_b * T + o_t).to(tl.int64)
        o_wd = o_row[:, None] * D + i_h * d + o_c[None, :]
        b_w = tl.load(p_w + o_wd, mask=m_tc, other=0.0).to(tl.float32)
        b_g = tl.load(p_g + o_wd, mask=m_tc, other=0.0).to(tl.float32)
        b_pi = tl.load(p_pi + o_row * H + i_h, mask=m_t, other=0.0)
        b_acc += tl.sum(b_g * b_w * b_pi[:, None], axis=0)
    tl.atomic_add(p_gwpi + i_bh * d + o_c, b_acc, mask=m_c)


@triton.jit
def _head_grads(p_pisq, p_mass, p_gwpi, o_c, m_c, MASS_EPS: tl.constexpr):
    """For one (batch, head): r = 1/(1 + dots), ∂N = ∂L/∂N `[BLOCK_D]` and ∂Z = ∂L/∂(M + 1e-8) (a scalar)."""
    b_z = tl.load(p_mass) + MASS_EPS
    b_dots = tl.load(p_pisq + o_c, mask=m_c, other=0.0) / b_z
    b_r = 1.0 / (1.0 + b_dots)
    b_ddots = tl.load(p_gwpi + o_c, mask=m_c, other=0.0) * b_r * b_r  # ∂L/∂dots = R·r²
    return b_r, b_ddots / b_z, -tl.sum(b_ddots * b_dots, axis=0) / b_z


@triton.jit
def _logit_grad_kernel(
    p_w, p_g, p_temp, p_pi, p_sumsq, p_pisq, p_mass, p_gwpi, p_ds, p_dtemp, p_dnorm, T, H, D, d,
    NORM_EPS: tl.constexpr, MASS_EPS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_H: tl.constexpr,
):  # fmt: skip
    """Backward pass 2, one token tile of one batch row, all heads: ∂Π, the head-softmax backward to the logit
    gradient, ∂s = temp·∂a (stored), ∂temp += Σ_t ∂a·s and P[b,h,:] += Σ_t ∂s·w²."""
    i_t, i_b = tl.program_id(0), tl.program_id(1)
    o_t = i_t * BLOCK_T + tl.arange(0, BLOCK_T)
    o_c = tl.arange(0, BLOCK_D)
    o_h = tl.arange(0, BLOCK_H)
    m_t, m_c, m_h = o_t < T, o_c < d, o_h < H
    m_tc = m_t[:, None] & m_c[None, :]
    m_th = m_t[:, None] & m_h[None, :]
    o_row = (i_b * T + o_t).to(tl.int64)
    b_pi = tl.load(p_pi + o_row[:, None] * H + o_h[None, :], mask=m_th, other=0.0)
    b_dpi = tl.zeros([BLOCK_T, BLOCK_H], dtype=tl.float32)
    b_s = tl.zeros([BLOCK_T, BLOCK_H], dtype=tl.float32)
    for h in range(H):
        o_wd = o_row[:, None] * D + h * d + o_c[None, :]
        b_w = tl.load(p_w + o_wd, mask=m_tc, other=0.0).to(tl.float32)
        b_g = tl.load(p_g + o_wd, mask=m_tc, other=0.0).to(tl.float32)
        o_bh = (i_b * H + h) * d
        b_inv, _ = _inv_norm(p_sumsq + o_bh, o_c, m_c, NORM_EPS)
        b_r, b_dn, b_dz = _head_grads(p_pisq + o_bh, p_mass + i_b * H + h, p_gwpi + o_bh, o_c, m_c, MASS_EPS)
        b_w2 = b_w * b_w
        b_dpih = tl.sum(b_w2 * b_dn[None, :] - b_g * b_w * b_r[None, :], axis=1) + b_dz
        b_sh = tl.sum(b_w2 * (b_inv * b_inv)[None, :], axis=1)
        b_dpi = tl.where(o_h[None, :] == h, b_dpih[:, None], b_dpi)
        b_s = tl.where(o_h[None, :] == h, b_sh[:, None], b_s)
    b_da = b_pi * (b_dpi - tl.sum(b_pi * b_dpi, axis=1)[:, None])
    b_da = tl.where(m_th, b_da, 0.0)
    tl.atomic_add(p_dtemp + o_h, tl.sum(b_da * b_s, axis=0), mask=m_h)
    b_ds = tl.load(p_temp + o_h, mask=m_h, other=0.0).to(tl.float32)[None, :] * b_da
    tl.store(p_ds + o_row[:, None] * H + o_h[None, :], b_ds, mask=m_th)
    for h in range(H):
        b_w = tl.load(p_w + o_row[:, None] * D + h * d + o_c[None, :], mask=m_tc, other=0.0).to(tl.float32)
        b_dsh = tl.sum(tl.where(o_h[None, :] == h, b_ds, 0.0), axis=1)
        tl.atomic_add(p_dnorm + (i_b * H + h) * d + o_c, tl.sum(b_dsh[:, None] * b_w * b_w, axis=0), mask=m_c)


@triton.jit
def _dw_kernel(
    p_w, p_g, p_pi, p_ds, p_sumsq, p_pisq, p_mass, p_gwpi, p_dnorm, p_dw, T, H, D, d,
    NORM_EPS: tl.constexpr, MASS_EPS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Backward pass 3: dw = -g·Π·r + 2w·(Π·∂N + ∂s/n² + ∂S), ∂S = -P/n⁴ where the norm clamp is inactive."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    o_t = i_t * BLOCK_T + tl.arange(0, BLOCK_T)
    o_c = tl.arange(0, BLOCK_D)
    m_t, m_c = o_t < T, o_c < d
    m_tc = m_t[:, None] & m_c[None, :]
    o_row = (i_b * T + o_t).to(tl.int64)
    b_inv, m_live = _inv_norm(p_sumsq + i_bh * d, o_c, m_c, NORM_EPS)
    b_r, b_dn, _ = _head_grads(p_pisq + i_bh * d, p_mass + i_bh, p_gwpi + i_bh * d, o_c, m_c, MASS_EPS)
    b_inv2 = b_inv * b_inv
    b_dsumsq = tl.where(m_live, -tl.load(p_dnorm + i_bh * d + o_c, mask=m_c, other=0.0) * b_inv2 * b_inv2, 0.0)
    b_pi = tl.load(p_pi + o_row * H + i_h, mask=m_t, other=0.0)
    b_ds = tl.load(p_ds + o_row * H + i_h, mask=m_t, other=0.0)
    o_wd = o_row[:, None] * D + i_h * d + o_c[None, :]
    b_w = tl.load(p_w + o_wd, mask=m_tc, other=0.0).to(tl.float32)
    b_g = tl.load(p_g + o_wd, mask=m_tc, other=0.0).to(tl.float32)
    b_scale = b_pi[:, None] * b_dn[None, :] + b_ds[:, None] * b_inv2[None, :] + b_dsumsq[None, :]
    b_dw = -b_g * b_pi[:, None] * b_r[None, :] + 2.0 * b_w * b_scale
    tl.store(p_dw + o_wd, b_dw.to(p_dw.dtype.element_ty), mask=m_tc)


def tiles_per_program(n_tiles: int, rows: int) -> int:
    """Token tiles one program of a reduction pass loops over, so that `rows` × chunks ≈ TARGET_PROGRAMS."""
    return max(1, min(n_tiles, n_tiles * rows // TARGET_PROGRAMS))


def _launch_sizes(w: torch.Tensor, block_t: int | None):
    """What every pass is launched with: the blocks of `head_blocks` (`cfg`, with BLOCK_H, for the passes over
    all heads of a token; `tile_cfg` without it), the number of token tiles and the sizes `T, H, D, d`."""
    _, T, H, d = w.shape
    cfg = head_blocks(H, d, block_t)
    tile_cfg = {name: value for name, value in cfg.items() if name != "BLOCK_H"}
    return cfg, tile_cfg, triton.cdiv(T, cfg["BLOCK_T"]), (T, H, H * d, d)


def _reduction_grid(n_tiles: int, rows: int) -> tuple[tuple[int, int], int]:
    """Grid of a token-reduction pass over `rows` (batch, head) pairs, and the tiles each program loops over."""
    tiles = tiles_per_program(n_tiles, rows)
    return (triton.cdiv(n_tiles, tiles), rows), tiles


def _forward(w: torch.Tensor, temp: torch.Tensor, block_t: int | None):
    """The three forward passes: the output and what the backward reads (Π, S, N, M)."""
    B, T, H, d = w.shape
    cfg, tile_cfg, n_tiles, dims = _launch_sizes(w, block_t)
    sumsq = torch.zeros(B, H, d, dtype=torch.float32, device=w.device)
    pisq = torch.zeros(B, H, d, dtype=torch.float32, device=w.device)
    mass = torch.zeros(B, H, dtype=torch.float32, device=w.device)
    pi = scratch((B, T, H), torch.float32, w.device)
    out = scratch((B, T, H, d), w.dtype, w.device)
    grid, tiles = _reduction_grid(n_tiles, B * H)
    _sumsq_kernel[grid](w, sumsq, *dims, tiles, **tile_cfg)
    _memberships_kernel[(n_tiles, B)](w, temp, sumsq, pi, pisq, mass, *dims, NORM_EPS=NORM_EPS, **cfg)
    _output_kernel[(n_tiles, B * H)](w, pi, pisq, mass, out, *dims, MASS_EPS=MASS_EPS, **tile_cfg)
    return out, pi, sumsq, pisq, mass


def _backward(g, w, temp, pi, sumsq, pisq, mass, block_t: int | None):
    """The three backward passes from the output gradient `g`: dw and dtemp."""
    B, T, H, d = w.shape
    cfg, tile_cfg, n_tiles, dims = _launch_sizes(w, block_t)
    eps = {"NORM_EPS": NORM_EPS, "MASS_EPS": MASS_EPS}
    gwpi = torch.zeros(B, H, d, dtype=torch.float32, device=w.device)
    dnorm = torch.zeros(B, H, d, dtype=torch.float32, device=w.device)
    dtemp = torch.zeros(H, dtype=torch.float32, device=w.device)
    ds = scratch((B, T, H), torch.float32, w.device)
    dw = scratch((B, T, H, d), w.dtype, w.device)
    grid, tiles = _reduction_grid(n_tiles, B * H)
    _gradsum_kernel[grid](w, g, pi, gwpi, *dims, tiles, **tile_cfg)
    stats = (sumsq, pisq, mass, gwpi)
    _logit_grad_kernel[(n_tiles, B)](w, g, temp, pi, *stats, ds, dtemp, dnorm, *dims, **eps, **cfg)
    _dw_kernel[(n_tiles, B * H)](w, g, pi, ds, *stats, dnorm, dw, *dims, **eps, **tile_cfg)
    return dw, dtemp.to(temp.dtype)


class TSSAFunction(torch.autograd.Function):
    """Non-causal TSSA with the Triton forward and backward; saves w, temp, Π `[B,T,H]` and S, N, M."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, temp: torch.Tensor, block_t: int | None) -> torch.Tensor:
        w, temp = w.contiguous(), temp.contiguous()
        out, pi, sumsq, pisq, mass = _forward(w, temp, block_t)
        ctx.save_for_backward(w, temp, pi, sumsq, pisq, mass)
        ctx.block_t = block_t
        return out

    @staticmethod
    def backward(ctx, dout: torch.Tensor):
        w, temp, pi, sumsq, pisq, mass = ctx.saved_tensors
        dw, dtemp = _backward(dout.contiguous(), w, temp, pi, sumsq, pisq, mass, ctx.block_t)
        return dw, dtemp, None


def tssa(w: torch.Tensor, temp: torch.Tensor, *, block_t: int | None = None) -> torch.Tensor:
    """Non-causal TSSA: `w [B,T,H,d]`, `temp [H]` -> `[B,T,H,d]` in `w.dtype` (fp32 inside).

    `block_t` (a power of two) overrides the token tile, which tests shrink to span several tiles.
    """
    if w.dim() != 4 or temp.shape != (w.shape[2],):
        raise ValueError(f"tssa: w must be [B,T,H,d] and temp [H], got {tuple(w.shape)} and {tuple(temp.shape)}")
    return TSSAFunction.apply(w, temp, block_t)


def core(problem: Problem, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Core: `w [B,T,H,d]`, `temp [H]`, causal also `beta [H, t_max]` -> `[B,T,H,d]`."""
    if problem.causal:
        return tssa_causal(tensors["w"], tensors["temp"], tensors["beta"])
    return tssa(tensors["w"], tensors["temp"])
