"""What every AFT-local kernel shares (triton_aft_local: forward; triton_aft_local_bwd: backward): the band's
weights and offsets, a block of keys at a row tile's scale, and a row tile's sums.

The band form (README.md, "Local"): row t weighs the global sums by `g_t` and its band keys by `cband`
(`band_weights`, in PyTorch from `w_band [T, 2s−1]`, shared over batch and channels). For a tile of BLOCK_T rows
against a block of BLOCK_T keys the band is one `[BLOCK_T, BLOCK_T]` matrix `A` (`band_block`), so the band's
share of a tile is a tensor-core `tl.dot` per block of keys, over the `BLOCK_T + 2s − 2` keys its band touches
(`BLOCK_T + s − 1` causal).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from attnbench.mechanisms.aft.triton_aft_scan import Layout, load_state, load_tile, tile_offsets


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
def band_block(p_cb, W, T, S, t0, k0, BLOCK_T: tl.constexpr):
    """The band's A for rows `t0, ...` against keys `k0, ...`: `[BLOCK_T, BLOCK_T]` from `cband [T, W]`, 0 off
    the band (cband itself is 0 on entries whose key is off the sequence, or in the future when causal)."""
    o_a, m_a = band_offsets(W, T, S, t0, k0, BLOCK_T)
    return tl.load(p_cb + o_a, mask=m_a, other=0.0)


@triton.jit
def band_keys(p_k, p_v, i_b, k0, T, C, o_c, m_c, b_M, BLOCK_T: tl.constexpr):
    """`e^{K−M}` and `e^{K−M}·V` of keys `k0, ...` (0 off the sequence), `[BLOCK_T, BLOCK_C]` fp32."""
    o, mask = tile_offsets(i_b, k0, T, C, o_c, m_c, BLOCK_T)
    b_e = tl.exp(tl.where(mask, load_tile(p_k, o, mask) - b_M[None, :], float("-inf")))
    return b_e, b_e * load_tile(p_v, o, mask)


@triton.jit
def key_range(t0, S, CAUSAL: tl.constexpr, BLOCK_T: tl.constexpr):
    """Keys that the band of rows `t0 .. t0 + BLOCK_T − 1` touches: `[t0 − s + 1, end)`."""
    if CAUSAL:
        return t0 - S + 1, t0 + BLOCK_T
    return t0 - S + 1, t0 + BLOCK_T + S - 1


@triton.jit
def row_sums(
    p_k, p_v, p_cb, p_g, i_b, t0, T, C, o_c, m_c, b_M, b_mu, b_n, b_d, S, W,
    CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """`num − μ·den` and `den` `[BLOCK_T, BLOCK_C]` of rows `t0, ...` relative to the scale M, from the global
    part `g·(N, D)` and the band, and the rows' g: `ȳ = μ + (num − μ·den)/den`.

    Taken about the per-channel centre μ (a mean of V), the band's products are of the size of V's spread, not of
    V: rounded to a 16-bit input dtype they leave an error in ȳ relative to `ȳ − μ`, where `A·(e^{K−M}·V)`
    would leave one relative to `|V|`, which the backward's `V − ȳ` would then expose."""
    o_t = t0 + tl.arange(0, BLOCK_T)
    b_g = tl.load(p_g + o_t, mask=o_t < T, other=0.0)
    b_num = b_g[:, None] * (b_n - b_mu[None, :] * b_d)
    b_den = b_g[:, None] * b_d
    dt = p_k.dtype.element_ty
    k_lo, k_hi = key_range(t0, S, CAUSAL, BLOCK_T)
    for k0 in range(k_lo, k_hi, BLOCK_T):
        b_e, b_ev = band_keys(p_k, p_v, i_b, k0, T, C, o_c, m_c, b_M, BLOCK_T)
        b_a = band_block(p_cb, W, T, S, t0, k0, BLOCK_T).to(dt)
        b_num += tl.dot(b_a, (b_ev - b_e * b_mu[None, :]).to(dt), input_precision=DOT_PRECISION)
        b_den += tl.dot(b_a, b_e.to(dt), input_precision=DOT_PRECISION)
    b_den = tl.where((o_t < T)[:, None] & m_c[None, :], b_den, 1.0)  # no 0/0 on lanes off the tensor
    return b_num, b_den, b_g


@triton.jit
def centre(b_n, b_d):
    """The mean `n/d` of V in a state (0 for an empty state)."""
    return tl.where(b_d > 0, b_n / tl.where(b_d > 0, b_d, 1.0), 0.0)


@triton.jit
def tile_scale(p_total, p_tiles, n_b, i_b, j, o_c, m_c, C, NT, CAUSAL: tl.constexpr):
    """The scale M of row tile `j` of batch row `i_b` (of `n_b`) and its centre `μ = n/d` (0 for an empty
    state), `[BLOCK_C]` each, from the forward's saved state: the tile's own (causal: the state at its end) or
    that of all tokens."""
    if CAUSAL:
        b_m, b_n, b_d = load_state(p_tiles, n_b * NT * C, (i_b.to(tl.int64) * NT + j) * C + o_c, m_c)
    else:
        b_m, b_n, b_d = load_state(p_total, n_b * C, i_b.to(tl.int64) * C + o_c, m_c)
    # Channels off the tensor get M = 0, so that no lane computes −inf − (−inf).
    return tl.where(m_c, b_m, 0.0), centre(b_n, b_d)


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


def band_sizes(lay: Layout, window: int) -> tuple[int, ...]:
    """The kernels' size arguments `T, C, NT, NCHUNK, S, W` (W = 2s − 1 columns of the band)."""
    return lay.T, lay.C, lay.nt, lay.nchunk, window, 2 * window - 1
