"""The scans both AFT Triton kernels build on (AFT-simple in triton_aft, AFT-local in triton_aft_local*).

`q, k, v [B,T,H,d]` are read as `[B,T,C]` with the C = H·d channels contiguous. A program owns BLOCK_C channels
of one batch row and a chunk of TILES_PER_CHUNK·BLOCK_T tokens, which it walks in `[BLOCK_T, BLOCK_C]` tiles:
every load is a contiguous tile, and chunks give enough programs when B = 1 and T is long (`Layout`).

The state of a run of tokens, per channel, is `(m, n, d)`: m the max of K over the run, `n = Σ e^{K−m}·V`,
`d = Σ e^{K−m}`, all fp32. Two states merge exactly by rescaling to the larger m (`_merge`). Non-causal: chunk
states (`_chunk_state_kernel`: reads K, V) and their running merge (`_chunk_carry_kernel`) give all tokens'
total. A causal tile is scanned from the state before it (`scan_tile`): its rows share its scale
`M = max(m before, tile max of K)`, the running max at the tile's end.

Causal forwards run one tile per program and find the state before their tile by a decoupled look-back on
the states the earlier tiles publish (`publish`, `prefix_state`; README.md, "Causal backward"), keeping the state
after every tile for the backward. AFT-local's causal backward sums run in reverse over chunks of tiles, each step
decaying by `e^{M_{j−1}−M_j} ≤ 1`; a chunk gets the sums of the chunks after it from `_bwd_carry_kernel`
(`chunk_tails`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from attnbench.mechanisms.triton_common import (
    INTERPRETED_BLOCK,
    autotune_configs,
    interpreted,
    launchable,
    multiprocessors,
    scratch,
)

# Channel blocks the autotuner tries on a GPU, each with the warps that keep a `[64, BLOCK_C]` fp32 tile at 16 to
# 32 values a thread (untimed guesses: no GPU was at hand when they were chosen).
CHANNEL_BLOCKS = {32: (4,), 64: (4,), 128: (8,)}
TOKENS_PER_TILE = 64  # on a GPU; INTERPRETED_BLOCK under the interpreter
# A CPU stands in for this many multiprocessors when sizing chunks, so that test shapes span several chunks.
CPU_MULTIPROCESSORS = 2


def channel_configs() -> list[triton.Config]:
    """Autotune configs over the channel block BLOCK_C (a fresh list for every kernel)."""
    return autotune_configs("BLOCK_C", tuple(CHANNEL_BLOCKS), CHANNEL_BLOCKS)


@triton.jit
def tile_offsets(i_b, t0, T, C, o_c, m_c, BLOCK_T: tl.constexpr):
    """Element offsets `[BLOCK_T, BLOCK_C]` of tokens `t0, ...` of batch row `i_b` and the mask of real ones
    (`t0` may be negative: a band's keys before the first token)."""
    o_t = t0 + tl.arange(0, BLOCK_T)
    o = (i_b.to(tl.int64) * T + o_t[:, None]) * C + o_c[None, :]
    return o, ((o_t >= 0) & (o_t < T))[:, None] & m_c[None, :]


@triton.jit
def load_tile(p_x, o, mask):
    """A tile of `p_x` at offsets `o` in fp32, 0 on masked lanes."""
    return tl.load(p_x + o, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def load_state(p_s, plane, o, mask):
    """A state `(m, n, d)` from planes of `p_s`; masked lanes read as the empty state `(−inf, 0, 0)`."""
    b_m = tl.load(p_s + o, mask=mask, other=float("-inf"))
    b_n = tl.load(p_s + plane + o, mask=mask, other=0.0)
    b_d = tl.load(p_s + 2 * plane + o, mask=mask, other=0.0)
    return b_m, b_n, b_d


@triton.jit
def store_state(p_s, plane, o, mask, b_m, b_n, b_d):
    """A state `(m, n, d)` into three planes of `p_s`, `plane` elements apart."""
    tl.store(p_s + o, b_m, mask=mask)
    tl.store(p_s + plane + o, b_n, mask=mask)
    tl.store(p_s + 2 * plane + o, b_d, mask=mask)


@triton.jit
def _merge(b_m, b_n, b_d, b_m2, b_n2, b_d2, m_c):
    """State of two runs of tokens; channels off the tensor get m = 0 so that no lane computes −inf − (−inf)."""
    b_M = tl.where(m_c, tl.maximum(b_m, b_m2), 0.0)
    b_f, b_f2 = tl.exp(b_m - b_M), tl.exp(b_m2 - b_M)
    return b_M, b_n * b_f + b_n2 * b_f2, b_d * b_f + b_d2 * b_f2


@triton.jit
def scan_tile(b_k, b_v, mask, m_c, b_m, b_n, b_d):
    """One tile of the causal scan from the state `(b_m, b_n, b_d)` of the tokens before it.

    Returns the tile's scale M `[BLOCK_C]`, `e = e^{K−M}` (0 off the sequence), the rows' `num, den` relative to
    M `[BLOCK_T, BLOCK_C]` (den 1 on channels off the tensor, so that no lane divides 0 by 0), and the state
    after the tile."""
    b_M = tl.where(m_c, tl.maximum(b_m, tl.max(tl.where(mask, b_k, float("-inf")), axis=0)), 0.0)
    b_f = tl.exp(b_m - b_M)  # rescales the carry; 0 for the empty state
    b_e = tl.exp(tl.where(mask, b_k - b_M[None, :], float("-inf")))
    b_ev = b_e * b_v
    b_num = tl.cumsum(b_ev, axis=0) + (b_n * b_f)[None, :]
    b_den = tl.where(m_c[None, :], tl.cumsum(b_e, axis=0) + (b_d * b_f)[None, :], 1.0)
    return b_M, b_e, b_num, b_den, b_n * b_f + tl.sum(b_ev, axis=0), b_d * b_f + tl.sum(b_e, axis=0)


@triton.autotune(configs=channel_configs(), key=["C"], prune_configs_by=launchable(f"{__name__}:_chunk_state_kernel"))
@triton.jit
def _chunk_state_kernel(p_k, p_v, p_s, T, C, NT, NCHUNK, BLOCK_T: tl.constexpr, TILES_PER_CHUNK, BLOCK_C: tl.constexpr):
    """State of every chunk on its own: `s [3, B, NCHUNK, C]`."""
    i_c, i_n, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    b_m = tl.full([BLOCK_C], float("-inf"), tl.float32)
    b_n = tl.zeros([BLOCK_C], tl.float32)
    b_d = tl.zeros([BLOCK_C], tl.float32)
    j0 = i_n * TILES_PER_CHUNK
    for j in range(j0, tl.minimum(j0 + TILES_PER_CHUNK, NT)):
        o, mask = tile_offsets(i_b, j * BLOCK_T, T, C, o_c, m_c, BLOCK_T)
        b_k = load_tile(p_k, o, mask)
        b_M = tl.where(m_c, tl.maximum(b_m, tl.max(tl.where(mask, b_k, float("-inf")), axis=0)), 0.0)
        b_f = tl.exp(b_m - b_M)
        b_e = tl.exp(tl.where(mask, b_k - b_M[None, :], float("-inf")))
        b_n = b_n * b_f + tl.sum(b_e * load_tile(p_v, o, mask), axis=0)
        b_d = b_d * b_f + tl.sum(b_e, axis=0)
        b_m = b_M
    o_s = (i_b.to(tl.int64) * NCHUNK + i_n) * C + o_c
    store_state(p_s, tl.num_programs(2).to(tl.int64) * NCHUNK * C, o_s, m_c, b_m, b_n, b_d)


@triton.autotune(configs=channel_configs(), key=["C"], prune_configs_by=launchable(f"{__name__}:_chunk_carry_kernel"))
@triton.jit
def _chunk_carry_kernel(p_s, p_carry, p_total, C, NCHUNK, BLOCK_C: tl.constexpr):
    """`carry [3, B, NCHUNK, C]`: the state of the chunks before each chunk; `total [3, B, C]`: of all chunks."""
    i_c, i_b = tl.program_id(0), tl.program_id(1)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    plane = tl.num_programs(1).to(tl.int64) * NCHUNK * C
    b_m = tl.full([BLOCK_C], float("-inf"), tl.float32)
    b_n = tl.zeros([BLOCK_C], tl.float32)
    b_d = tl.zeros([BLOCK_C], tl.float32)
    for i_n in range(NCHUNK):
        o_s = (i_b.to(tl.int64) * NCHUNK + i_n) * C + o_c
        store_state(p_carry, plane, o_s, m_c, b_m, b_n, b_d)
        b_m2, b_n2, b_d2 = load_state(p_s, plane, o_s, m_c)
        b_m, b_n, b_d = _merge(b_m, b_n, b_d, b_m2, b_n2, b_d2, m_c)
    store_state(p_total, tl.num_programs(1).to(tl.int64) * C, i_b.to(tl.int64) * C + o_c, m_c, b_m, b_n, b_d)


@triton.autotune(configs=channel_configs(), key=["C"], prune_configs_by=launchable(f"{__name__}:_bwd_carry_kernel"))
@triton.jit
def _bwd_carry_kernel(p_z, p_tiles, p_h, C, NT, NCHUNK, TILES_PER_CHUNK, BLOCK_C: tl.constexpr):
    """Causal: `h [2, B, NCHUNK, C]`, the sums of the chunks after each chunk rescaled to the scale of its last
    tile: `H_c = e^{M_last(c) − M_first(c+1)}·(Z_{c+1} + e^{M_first(c+1) − M_last(c+1)}·H_{c+1})`."""
    i_c, i_b = tl.program_id(0), tl.program_id(1)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    plane = tl.num_programs(1).to(tl.int64) * NCHUNK * C
    b_h = tl.zeros([BLOCK_C], tl.float32)
    b_h2 = tl.zeros([BLOCK_C], tl.float32)
    for i in range(NCHUNK):
        i_n = NCHUNK - 1 - i
        o_z = (i_b.to(tl.int64) * NCHUNK + i_n) * C + o_c
        tl.store(p_h + o_z, b_h, mask=m_c)
        tl.store(p_h + plane + o_z, b_h2, mask=m_c)
        j0 = i_n * TILES_PER_CHUNK
        j1 = tl.minimum(j0 + TILES_PER_CHUNK, NT)
        o_t = i_b.to(tl.int64) * NT * C + o_c
        b_first = tl.load(p_tiles + o_t + j0 * C, mask=m_c, other=0.0)
        b_last = tl.load(p_tiles + o_t + (j1 - 1) * C, mask=m_c, other=0.0)
        b_prev = tl.load(p_tiles + o_t + (j0 - 1) * C, mask=tl.where(j0 > 0, m_c, False), other=float("-inf"))
        b_f = tl.exp(b_first - b_last)
        b_g = tl.exp(b_prev - b_first)
        b_h = b_g * (tl.load(p_z + o_z, mask=m_c, other=0.0) + b_f * b_h)
        b_h2 = b_g * (tl.load(p_z + plane + o_z, mask=m_c, other=0.0) + b_f * b_h2)


@dataclass(frozen=True)
class Layout:
    """How `[B, T, C]` is cut: tiles of `block_t` tokens, chunks of `tiles_per_chunk` tiles, one program per
    (channel block, chunk, batch row)."""

    B: int
    T: int
    C: int
    block_t: int
    tiles_per_chunk: int

    @property
    def nt(self) -> int:
        return triton.cdiv(self.T, self.block_t)

    @property
    def nchunk(self) -> int:
        return triton.cdiv(self.nt, self.tiles_per_chunk)

    def grid(self, meta) -> tuple[int, int, int]:
        return triton.cdiv(self.C, meta["BLOCK_C"]), self.nchunk, self.B

    def grid_rows(self, meta) -> tuple[int, int]:
        return triton.cdiv(self.C, meta["BLOCK_C"]), self.B

    def state(self, planes: int, n: int, device) -> torch.Tensor:
        return scratch((planes, self.B, n, self.C), torch.float32, device)

    def tiling(self) -> dict[str, int]:
        """The tile and chunk sizes every chunked kernel takes as meta-parameters."""
        return dict(BLOCK_T=self.block_t, TILES_PER_CHUNK=self.tiles_per_chunk)


def layout(B: int, T: int, C: int, device: torch.device, tiles_per_chunk: int | None = None) -> Layout:
    """Tiles of TOKENS_PER_TILE tokens (INTERPRETED_BLOCK when interpreted); chunks small enough for about 4
    programs per multiprocessor, counting channel blocks of 64."""
    block_t = INTERPRETED_BLOCK if interpreted() else TOKENS_PER_TILE
    nt = triton.cdiv(T, block_t)
    if tiles_per_chunk is None:
        sms = multiprocessors(device, CPU_MULTIPROCESSORS)
        chunks = max(1, (4 * sms) // (B * triton.cdiv(C, 64)))
        tiles_per_chunk = triton.cdiv(nt, min(nt, chunks))
    return Layout(B, T, C, block_t, tiles_per_chunk)


def chunk_states(k: torch.Tensor, v: torch.Tensor, lay: Layout) -> tuple[torch.Tensor, torch.Tensor]:
    """`carry [3, B, NCHUNK, C]` (state before each chunk) and `total [3, B, C]`, from `k, v [B,T,C]`."""
    states, carry = lay.state(3, lay.nchunk, k.device), lay.state(3, lay.nchunk, k.device)
    total = scratch((3, lay.B, lay.C), torch.float32, k.device)
    _chunk_state_kernel[lay.grid](k, v, states, lay.T, lay.C, lay.nt, lay.nchunk, **lay.tiling())
    _chunk_carry_kernel[lay.grid_rows](states, carry, total, lay.C, lay.nchunk)
    return carry, total


def chunk_tails(z: torch.Tensor, tiles: torch.Tensor, lay: Layout) -> torch.Tensor:
    """`h [2, B, NCHUNK, C]`: the reverse sums entering each chunk from the chunks after it (causal)."""
    h = scratch(z.shape, z.dtype, z.device)
    _bwd_carry_kernel[lay.grid_rows](z, tiles, h, lay.C, lay.nt, lay.nchunk, TILES_PER_CHUNK=lay.tiles_per_chunk)
    return h


# The decoupled look-back of the one-tile-per-program causal kernels (README.md, "Causal backward"): a tile
# publishes its own summary, walks back over the published summaries of the tiles before it, and publishes the
# summary of everything up to its end. NaN in a published buffer means "not written yet".


@triton.jit
def publish(p_x, o, mask, b_x):
    """Store a carry for the tiles that look back at it; NaN marks "not yet written", so a NaN sum (from NaN
    inputs) is published as +inf: the result is non-finite either way, and no reader waits forever."""
    tl.store(p_x + o, tl.where(b_x == b_x, b_x, float("inf")), mask=mask)


@triton.jit
def prefix_state(p_agg, p_tiles, plane, i_b, j, NT, C, o_c, m_c):
    """The state `(m, n, d)` of the tiles before tile j, from the earlier tiles' published states: walk
    l = j−1, j−2, ... merging each tile's own state (`agg`) until a tile whose state covers everything up to
    its end (`tiles`, the inclusive states) is reached. A lane waits while tile l has published neither."""
    b_m = tl.full(o_c.shape, float("-inf"), tl.float32)
    b_n = tl.zeros(o_c.shape, tl.float32)
    b_d = tl.zeros(o_c.shape, tl.float32)
    b_done = (o_c >= C) | (j == 0)  # the first tile has nothing before it
    b_l = j - 1
    while tl.min(b_done.to(tl.int32), axis=0) == 0:
        live = (b_done == 0) & m_c
        o_l = (i_b.to(tl.int64) * NT + b_l) * C + o_c
        inc_m, inc_n, inc_d = loadpublished(p_tiles, plane, o_l, live)
        agg_m, agg_n, agg_d = loadpublished(p_agg, plane, o_l, live)
        has_inc = live & (inc_m == inc_m) & (inc_n == inc_n) & (inc_d == inc_d)
        has_agg = live & (agg_m == agg_m) & (agg_n == agg_n) & (agg_d == agg_d)
        step = tl.min((b_done | has_inc | has_agg).to(tl.int32), axis=0) == 1  # every live lane can move on
        take = live & step
        b_m2 = tl.where(take, tl.where(has_inc, inc_m, agg_m), float("-inf"))
        b_M = tl.maximum(b_m, b_m2)
        b_Ms = tl.where(b_M > float("-inf"), b_M, 0.0)  # both empty: keep (−inf, 0, 0) without −inf − (−inf)
        b_f, b_f2 = tl.exp(b_m - b_Ms), tl.exp(b_m2 - b_Ms)
        b_n = b_n * b_f + tl.where(take, tl.where(has_inc, inc_n, agg_n), 0.0) * b_f2
        b_d = b_d * b_f + tl.where(take, tl.where(has_inc, inc_d, agg_d), 0.0) * b_f2
        b_m = b_M
        b_done = b_done | (take & has_inc)
        b_l -= step.to(tl.int32)
    return b_m, b_n, b_d


@triton.jit
def loadpublished(p_s, plane, o, live):
    """A published state, read past the caches (another program may have written it since); 0 off `live`."""
    b_m = tl.load(p_s + o, mask=live, other=0.0, volatile=True)
    b_n = tl.load(p_s + plane + o, mask=live, other=0.0, volatile=True)
    b_d = tl.load(p_s + 2 * plane + o, mask=live, other=0.0, volatile=True)
    return b_m, b_n, b_d


@triton.jit
def look_back_tile(p_k, p_v, p_agg, p_tiles, p_ticket, T, C, NT, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    """The shared start of a one-pass causal forward, one tile per program: take the next tile from the
    sequence's start (a ticket per channel block and batch row, in the order programs start, so a program only
    ever waits on programs already running), publish its own state, look back for the state before it, and
    publish the state after it (`tiles [3, B, NT, C]`, which the backward recomputes from). Returns the batch
    row, the tile's first token, its channels and their mask, its element offsets and mask, its scale M, its
    rows' `num, den` relative to M and the state after it `(n, d)`."""
    i_c, i_b = tl.program_id(0), tl.program_id(2)
    j = tl.atomic_add(p_ticket + i_b * tl.num_programs(0) + i_c, 1)
    o_c = i_c * BLOCK_C + tl.arange(0, BLOCK_C)
    m_c = o_c < C
    plane = tl.num_programs(2).to(tl.int64) * NT * C
    o, mask = tile_offsets(i_b, j * BLOCK_T, T, C, o_c, m_c, BLOCK_T)
    o_j = (i_b.to(tl.int64) * NT + j) * C + o_c
    b_k, b_v = load_tile(p_k, o, mask), load_tile(p_v, o, mask)
    b_none = tl.zeros([BLOCK_C], tl.float32)  # the tile on its own: from the empty state (−inf, 0, 0)
    b_m, _, _, _, b_n, b_d = scan_tile(b_k, b_v, mask, m_c, b_none + float("-inf"), b_none, b_none)
    publish(p_agg, o_j, m_c, b_m)
    publish(p_agg + plane, o_j, m_c, b_n)
    publish(p_agg + 2 * plane, o_j, m_c, b_d)
    b_m, b_n, b_d = prefix_state(p_agg, p_tiles, plane, i_b, j, NT, C, o_c, m_c)
    b_m, _, b_num, b_den, b_n, b_d = scan_tile(b_k, b_v, mask, m_c, b_m, b_n, b_d)
    publish(p_tiles, o_j, m_c, b_m)
    publish(p_tiles + plane, o_j, m_c, b_n)
    publish(p_tiles + 2 * plane, o_j, m_c, b_d)
    return i_b, j * BLOCK_T, o_c, m_c, o, mask, b_m, b_num, b_den, b_n, b_d


def per_tile(lay: Layout, device) -> tuple[dict, tuple[int, int, int], torch.Tensor]:
    """Config, grid and zeroed tickets of a one-tile-per-program causal kernel. The config is fixed: the
    autotuner's reruns would find the tickets and published sums of the run before. 32 channels on 4 warps
    compile to ~170 registers a thread (backward; 64 channels on 4 or 8 warps: 255 or ~190), no spills; untimed."""
    meta = dict(BLOCK_C=INTERPRETED_BLOCK, num_warps=1) if interpreted() else dict(BLOCK_C=32, num_warps=4)
    grid = Layout(lay.B, lay.T, lay.C, lay.block_t, 1).grid(meta)
    return meta, grid, torch.zeros(lay.B * grid[0], dtype=torch.int32, device=device)


def unpublished(planes: int, lay: Layout, device) -> torch.Tensor:
    """Per-tile sums that programs publish for one another, NaN until written ("not yet")."""
    return torch.full((planes, lay.B, lay.nt, lay.C), float("nan"), dtype=torch.float32, device=device)
