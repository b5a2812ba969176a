"""The tile-carry scan of causal TSSA: every token sum of `triton_tssa_causal.py` is a chunked scan whose chunks
are token tiles; a kernel writes each tile's sum, this scan turns those into each tile's carry (the sum over every
earlier tile, or every later one for the backward's suffix sums), and the next kernel adds the carry to its own
in-tile `tl.cumsum`. One Triton launch for one array or two."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Tiles by features one program of the carry scan holds: a 128-byte line of fp32 carries per tile row, and 64 tiles
# a step so that a long sequence (2048 tiles at T = 128K) takes 32 dependent steps.
SCAN_BLOCK = (64, 32)


@triton.jit
def _carry_scan_kernel(
    p_x, p_y, N_TILES, FX, FY, REVERSE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_F: tl.constexpr
):  # fmt: skip
    """Tile sums to tile carries, in place, along the tiles of `x [B, n_tiles, FX]` and `y [B, n_tiles, FY]` (two
    arrays, one launch): each tile's entry becomes the sum over every earlier tile (every later one if REVERSE).
    A program owns BLOCK_F features of one batch row and walks its tiles BLOCK_N at a time. The carry is exclusive
    by loading the block shifted one tile and scanning that, not by `cumsum - x`, so that one large tile cannot
    swamp the small sum before it."""
    i_f, i_b = tl.program_id(0), tl.program_id(1)
    o_f = i_f * BLOCK_F + tl.arange(0, BLOCK_F)
    m_x, m_y = o_f < FX, (o_f >= FX) & (o_f < FX + FY)
    o_y = tl.where(m_y, o_f - FX, 0)
    b_run = tl.zeros([BLOCK_F], dtype=tl.float32)
    n_blocks = tl.cdiv(N_TILES, BLOCK_N)
    for i in range(n_blocks):
        i_block = n_blocks - 1 - i if REVERSE else i
        o_n = i_block * BLOCK_N + tl.arange(0, BLOCK_N)
        # The neighbour whose sum the carry adds next; one outside this block is in b_run already (and was
        # overwritten by its own carry).
        o_src = o_n + 1 if REVERSE else o_n - 1
        m_src = (o_src >= i_block * BLOCK_N) & (o_src < tl.minimum(N_TILES, (i_block + 1) * BLOCK_N))
        b_src = _load_pair(p_x, p_y, i_b * N_TILES + o_src, FX, FY, o_f, o_y, m_src, m_x, m_y)
        b_carry = b_run[None, :] + tl.cumsum(b_src, axis=0, reverse=REVERSE)
        b_own = _load_pair(p_x, p_y, i_b * N_TILES + o_n, FX, FY, o_f, o_y, o_n < N_TILES, m_x, m_y)
        b_run += tl.sum(b_own, axis=0)
        m_n = (o_n < N_TILES)[:, None]
        o_row = (i_b * N_TILES + o_n).to(tl.int64)[:, None]
        tl.store(p_x + o_row * FX + o_f[None, :], b_carry, mask=m_n & m_x[None, :])
        tl.store(p_y + o_row * FY + o_y[None, :], b_carry, mask=m_n & m_y[None, :])


@triton.jit
def _load_pair(p_x, p_y, o_tile, FX, FY, o_f, o_y, m_n, m_x, m_y):
    """Rows `o_tile` `[BLOCK_N]` of x or y (whichever owns the feature) as one `[BLOCK_N, BLOCK_F]` block."""
    o_row = o_tile.to(tl.int64)[:, None]
    b_x = tl.load(p_x + o_row * FX + o_f[None, :], mask=m_n[:, None] & m_x[None, :], other=0.0)
    return b_x + tl.load(p_y + o_row * FY + o_y[None, :], mask=m_n[:, None] & m_y[None, :], other=0.0)


def scan_carries(x: torch.Tensor, y: torch.Tensor | None = None, reverse: bool = False) -> None:
    """Turn the tile sums in `x [B, n_tiles, ...]` (and `y`, laid out the same) into tile carries, in place."""
    B, n_tiles = x.shape[:2]
    features_x = x.numel() // (B * n_tiles)
    features_y = 0 if y is None else y.numel() // (B * n_tiles)
    block_n, block_f = SCAN_BLOCK
    grid = (triton.cdiv(features_x + features_y, block_f), B)
    _carry_scan_kernel[grid](
        x, x if y is None else y, n_tiles, features_x, features_y, reverse, BLOCK_N=block_n, BLOCK_F=block_f
    )
