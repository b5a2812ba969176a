"""The look-backs of the causal AFT kernels, on hand-made published values: the forward's
(`triton_aft_scan.prefix_state`, the state of the tiles before a tile, in AFT-simple's and AFT-local's causal
forward) and AFT-simple's backward's (`triton_aft._look_back`, the reverse sums of the tiles after it).

The kernel tests run the interpreter's programs one after another, so every tile finds its neighbour already
finished and takes its inclusive value in one step. Here some tiles have published only their own value, on
some channels and not others, so the walk must combine several tiles, each rescaled to a common scale, and stop
at the first inclusive value: the result must not depend on where the walk stops. (A tile that has published
nothing yet makes the reader wait; programs run one at a time here, so that case cannot be shown.)
"""

from __future__ import annotations

import os

import pytest
import torch

triton = pytest.importorskip("triton")

if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton kernels need a GPU or TRITON_INTERPRET=1", allow_module_level=True)

import triton.language as tl  # noqa: E402

from attnbench.mechanisms.aft.triton_aft import _look_back  # noqa: E402
from attnbench.mechanisms.aft.triton_aft_scan import prefix_state  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NT, C, BLOCK_C = 7, 5, 8  # 3 lanes off the tensor


@triton.jit
def _probe(p_agg, p_incl, p_tiles, p_out, j, NT, C, BLOCK_C: tl.constexpr):
    """`_look_back` for tile j of batch row 0; writes its two sums to `out [2, C]`."""
    o_c = tl.arange(0, BLOCK_C)
    m_c = o_c < C
    b_M = tl.load(p_tiles + j * C + o_c, mask=m_c, other=0.0)
    b_h, b_h2 = _look_back(p_agg, p_incl, p_tiles, NT * C, tl.program_id(0), j, b_M, NT, C, o_c, m_c)
    tl.store(p_out + o_c, b_h, mask=m_c)
    tl.store(p_out + C + o_c, b_h2, mask=m_c)


def _published(seed: int, keep_inclusive: float):
    """Tile scales (non-decreasing, several units apart), each tile's own sums, and the inclusive sums where a
    random draw keeps them (always on the last tile, where they equal its own)."""
    gen = torch.Generator().manual_seed(seed)
    scales = torch.cumsum(torch.rand(NT, C, generator=gen) * 4.0, dim=0)
    agg = torch.randn(2, NT, C, generator=gen, dtype=torch.float64)
    incl = torch.empty_like(agg)
    incl[:, -1] = agg[:, -1]
    for tile in range(NT - 2, -1, -1):
        decay = torch.exp(scales[tile] - scales[tile + 1]).double()
        incl[:, tile] = agg[:, tile] + decay * incl[:, tile + 1]
    after = torch.zeros_like(agg)  # what tile j must receive: the inclusive sums of tile j+1 at j's scale
    after[:, :-1] = torch.exp(scales[:-1] - scales[1:]).double() * incl[:, 1:]
    hidden = torch.rand(NT, C, generator=gen) >= keep_inclusive
    hidden[-1] = False
    shown = incl.clone()
    shown[:, hidden] = float("nan")
    tiles = torch.zeros(3, 1, NT, C)
    tiles[0, 0] = scales
    return tiles, agg.float(), shown.float(), after.float()


@pytest.mark.parametrize("keep_inclusive", [0.0, 0.5], ids=["aggregates-only", "mixed-per-channel"])
def test_look_back_adds_later_tiles_until_an_inclusive_sum(keep_inclusive, seed):
    tiles, agg, incl, after = _published(seed, keep_inclusive)
    for j in range(NT):
        out = torch.full((2, C), float("nan"), device=DEVICE)
        _probe[(1,)](agg.to(DEVICE), incl.to(DEVICE), tiles.to(DEVICE), out, j, NT, C, BLOCK_C=BLOCK_C)
        torch.testing.assert_close(out.cpu(), after[:, j], rtol=1e-5, atol=1e-6, msg=f"tile {j}")


@triton.jit
def _prefix_probe(p_agg, p_tiles, p_out, j, NT, C, BLOCK_C: tl.constexpr):
    """`prefix_state` for tile j of batch row 0; writes `(m, n, d)` to `out [3, C]`."""
    o_c = tl.arange(0, BLOCK_C)
    m_c = o_c < C
    b_m, b_n, b_d = prefix_state(p_agg, p_tiles, NT * C, tl.program_id(0), j, NT, C, o_c, m_c)
    tl.store(p_out + o_c, b_m, mask=m_c)
    tl.store(p_out + C + o_c, b_n, mask=m_c)
    tl.store(p_out + 2 * C + o_c, b_d, mask=m_c)


def _states(seed: int, keep_inclusive: float):
    """Each tile's own state `(m, n, d)` with maxima tens apart (so merging must rescale), the inclusive states
    (shown where a random draw keeps them, always on the first tile) and the exact state before each tile."""
    gen = torch.Generator().manual_seed(seed)
    own = torch.stack(
        [
            torch.randn(NT, C, generator=gen, dtype=torch.float64) * 30.0,
            torch.randn(NT, C, generator=gen, dtype=torch.float64),
            torch.rand(NT, C, generator=gen, dtype=torch.float64) + 0.5,
        ]
    )
    before = torch.zeros_like(own)
    before[0, 0] = float("-inf")
    for tile in range(1, NT):
        m = own[0, :tile].amax(dim=0)
        scale = torch.exp(own[0, :tile] - m)
        before[:, tile] = torch.stack([m, (own[1, :tile] * scale).sum(0), (own[2, :tile] * scale).sum(0)])
    inclusive = torch.zeros_like(own)
    for tile in range(NT):
        m = own[0, : tile + 1].amax(dim=0)
        scale = torch.exp(own[0, : tile + 1] - m)
        inclusive[:, tile] = torch.stack([m, (own[1, : tile + 1] * scale).sum(0), (own[2, : tile + 1] * scale).sum(0)])
    hidden = torch.rand(NT, C, generator=gen) >= keep_inclusive
    hidden[0] = False
    inclusive[:, hidden] = float("nan")
    return own.float()[:, None], inclusive.float()[:, None], before.float()


@pytest.mark.parametrize("keep_inclusive", [0.0, 0.5], ids=["own-states-only", "mixed-per-channel"])
def test_prefix_state_merges_earlier_tiles_until_an_inclusive_state(keep_inclusive, seed):
    own, inclusive, before = _states(seed, keep_inclusive)
    for j in range(NT):
        out = torch.full((3, C), float("nan"), device=DEVICE)
        _prefix_probe[(1,)](own.to(DEVICE), inclusive.to(DEVICE), out, j, NT, C, BLOCK_C=BLOCK_C)
        torch.testing.assert_close(out.cpu(), before[:, j], rtol=1e-5, atol=1e-6, msg=f"tile {j}")
