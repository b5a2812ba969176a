"""TPA decoding from the factor cache in Triton: a split-L (flash-decoding) pass and a log-sum-exp merge.

The cache holds, per token, the head factors `A_k [B,L,H,R_k]`, `A_v [B,L,H,R_v]` and the feature factors
`B_k [B,L,R_k,d]` (already rotated), `B_v [B,L,R_v,d]`; the `q_len` new tokens are its last `q_len` positions,
and new token `i` sees positions `j <= L - q_len + i`. K and V are never formed: with `K_t = (1/R_k)·A_k,tᵀ B_k,t`,

    score[h, t] = (1/R_k) · Σ_r A_k[t,h,r] · (q_h · B_k[t,r,:])      one [H·q_len, d] × [d, BLOCK_L] dot per rank
    out[h, :]  += (1/R_v) · Σ_r (p[h,t] · A_v[t,h,r]) @ B_v[t,r,:]   one [H·q_len, BLOCK_L] × [BLOCK_L, d] dot per rank

so every program reads each factor of its tokens once, for all heads and all new tokens at once (README.md,
"Decoding from the factor cache", derives the order and the split).

`_split_kernel`, grid (B, splits): each program streams one contiguous run of the cache in BLOCK_L-token tiles
with an online softmax per (new token, head) row, and writes its normalised partial output and log-sum-exp
(fp32, base 2). `_merge_kernel`, one program per (batch row, output row), weighs the splits' partials by their
log-sum-exps. Only imported when a `triton` implementation runs.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from attnbench.mechanisms.registry import Unsupported
from attnbench.mechanisms.triton_common import (
    INTERPRETED_BLOCK,
    dot_precision,
    interpreted,
    multiprocessors,
    num_warps_for,
    power_of_2_at_least,
    scratch,
)

# Rows (new tokens × heads) times padded head width one program may hold: its fp32 output accumulator of
# 128 × 128 values is 64 registers a thread at 8 warps; the compile check finds no spills up to this size.
MAX_ROW_ELEMENTS = 128 * 128
# A split shorter than this is mostly launch, q load and merge overhead: at H = 32, d = 64, R = 1 its factors
# are 256 · 192 · 2 bytes ≈ 100 KB of contiguous cache.
MIN_SPLIT_TOKENS = 256
# Bytes one cache tile brings on chip (one pipeline stage): per token, its B_k and B_v rows (R·d elements) and
# its A_k and A_v entries gathered for every row of the program (R·rows: each head's entry once per new token).
# Tiles aim at 32 KB and are double-buffered up to 64 KB (measured with the compile check: at most 140 KB of
# shared memory with the layout conversions around the dots, inside sm_80's 163 KB).
TILE_BYTES = 32 * 1024
# Splits the merge weighs at a time: 16 partial rows of up to 128 fp32 values, 16 values a thread at 4 warps.
MERGE_SPLITS = 16
# A CPU (the interpreter) stands in for this many multiprocessors when choosing splits, so test shapes split.
CPU_MULTIPROCESSORS = 4
LOG2_E = 1.4426950408889634
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _split_kernel(
    p_q, p_ak, p_bk, p_av, p_bv, p_opart, p_lse, L, n_tiles, n_splits, H, qk_scale,
    s_qb, s_qi, s_qh, s_akb, s_akt, s_akh, s_bkb, s_bkt, s_bkr, s_avb, s_avt, s_avh, s_bvb, s_bvt, s_bvr,
    Q_LEN: tl.constexpr, R_K: tl.constexpr, R_V: tl.constexpr, D_HEAD: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """One contiguous run of one batch row's cache, every head and new token: partial output and log-sum-exp."""
    i_b, i_s = tl.program_id(0), tl.program_id(1)
    rows = Q_LEN * H
    o_m = tl.arange(0, BLOCK_M)  # row m = new token i, head h: m = i·H + h, as out[b, i, h] is laid out
    o_i, o_h = o_m // H, o_m % H
    m_m = o_m < rows
    o_c = tl.arange(0, BLOCK_D)
    m_c = o_c < D_HEAD
    b64 = i_b.to(tl.int64)
    p_q = p_q + b64 * s_qb + o_i[:, None] * s_qi + o_h[:, None] * s_qh + o_c[None, :]
    b_q = tl.load(p_q, mask=m_m[:, None] & m_c[None, :], other=0.0)  # [BLOCK_M, BLOCK_D], input dtype
    p_ak, p_bk = p_ak + b64 * s_akb + o_h[:, None] * s_akh, p_bk + b64 * s_bkb + o_c[:, None]
    p_av, p_bv = p_av + b64 * s_avb + o_h[:, None] * s_avh, p_bv + b64 * s_bvb + o_c[None, :]
    last = L - Q_LEN + o_i  # the last cache position each row sees
    m_run = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_run = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    start = (i_s * n_tiles // n_splits) * BLOCK_L  # this split's share of the tiles, which differ by one at most
    end = tl.minimum(((i_s + 1) * n_tiles // n_splits) * BLOCK_L, L)
    for t0 in range(start, end, BLOCK_L):
        o_t = t0 + tl.arange(0, BLOCK_L)
        m_t = o_t < end
        m_mt = m_m[:, None] & m_t[None, :]
        b_s = tl.zeros([BLOCK_M, BLOCK_L], dtype=tl.float32)
        for r in tl.static_range(R_K):
            b_bk = tl.load(p_bk + o_t[None, :] * s_bkt + r * s_bkr, mask=m_c[:, None] & m_t[None, :], other=0.0)
            b_qb = tl.dot(b_q, b_bk, input_precision=PRECISION)  # q_h · B_k[t, r, :]
            b_ak = tl.load(p_ak + o_t[None, :] * s_akt + r, mask=m_mt, other=0.0).to(tl.float32)
            b_s += b_ak * b_qb
        b_s = tl.where(m_t[None, :] & (o_t[None, :] <= last[:, None]), b_s * qk_scale, float("-inf"))
        m_new = tl.maximum(m_run, tl.max(b_s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no visible key yet adds nothing
        alpha = tl.exp2(m_run - m_safe)
        b_p = tl.exp2(b_s - m_safe[:, None])
        l_run = l_run * alpha + tl.sum(b_p, axis=1)
        acc = acc * alpha[:, None]
        for r in tl.static_range(R_V):
            b_av = tl.load(p_av + o_t[None, :] * s_avt + r, mask=m_mt, other=0.0).to(tl.float32)
            b_bv = tl.load(p_bv + o_t[:, None] * s_bvt + r * s_bvr, mask=m_t[:, None] & m_c[None, :], other=0.0)
            acc += tl.dot((b_p * b_av).to(b_bv.dtype), b_bv, input_precision=PRECISION)
        m_run = m_new
    seen = l_run > 0.0
    b_o = acc / tl.where(seen, l_run * R_V, 1.0)[:, None]
    b_lse = tl.where(seen, m_run + tl.log2(tl.where(seen, l_run, 1.0)), float("-inf"))
    o_part = (b64 * n_splits + i_s) * rows + o_m
    tl.store(p_opart + o_part[:, None] * D_HEAD + o_c[None, :], b_o, mask=m_m[:, None] & m_c[None, :])
    tl.store(p_lse + o_part, b_lse, mask=m_m)


@triton.jit
def _merge_kernel(
    p_out, p_opart, p_lse, rows, n_splits, D_HEAD: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr
):
    """One output row (batch row, new token and head): the splits' partials weighed by 2^(lse_s − lse_max),
    BLOCK_S splits at a time (independent loads, so a long list of splits is not walked one latency at a time)."""
    i_b, i_m = tl.program_id(0), tl.program_id(1)
    o_c = tl.arange(0, BLOCK_D)
    m_c = o_c < D_HEAD
    o_row = i_b.to(tl.int64) * n_splits * rows + i_m  # partial row of split 0; split s is s·rows further
    lse_max = tl.full([BLOCK_S], float("-inf"), dtype=tl.float32)
    for s0 in range(0, n_splits, BLOCK_S):
        o_s = s0 + tl.arange(0, BLOCK_S)
        lse_max = tl.maximum(lse_max, tl.load(p_lse + o_row + o_s * rows, mask=o_s < n_splits, other=float("-inf")))
    top = tl.max(lse_max, axis=0)  # finite: position 0 is visible to every row
    total = tl.zeros([BLOCK_S], dtype=tl.float32)
    acc = tl.zeros([BLOCK_S, BLOCK_D], dtype=tl.float32)
    for s0 in range(0, n_splits, BLOCK_S):
        o_s = s0 + tl.arange(0, BLOCK_S)
        m_s = o_s < n_splits
        weight = tl.exp2(tl.load(p_lse + o_row + o_s * rows, mask=m_s, other=float("-inf")) - top)
        o_part = (o_row + o_s * rows)[:, None] * D_HEAD + o_c[None, :]
        acc += weight[:, None] * tl.load(p_opart + o_part, mask=m_s[:, None] & m_c[None, :], other=0.0)
        total += weight
    o_out = (i_b.to(tl.int64) * rows + i_m) * D_HEAD + o_c
    tl.store(p_out + o_out, (tl.sum(acc, axis=0) / tl.sum(total, axis=0)).to(p_out.dtype.element_ty), mask=m_c)


def tile_plan(rows: int, r_k: int, r_v: int, d: int, itemsize: int) -> tuple[int, int]:
    """(cache tokens per tile, pipeline stages): the most tokens (a power of two, 16 to 128) whose factors, as
    the program brings them on chip, fit TILE_BYTES, double-buffered unless even 16 tokens take more than twice
    that (fp32 with ranks 4 and many rows), then a single stage. INTERPRETED_BLOCK tokens under the interpreter."""
    per_token = (r_k + r_v) * (power_of_2_at_least(rows, 16) + power_of_2_at_least(d, 16)) * itemsize
    if interpreted():
        return INTERPRETED_BLOCK, 1
    block_l = max(16, min(128, 1 << (max(1, TILE_BYTES // per_token).bit_length() - 1)))
    return block_l, 2 if block_l * per_token <= 2 * TILE_BYTES else 1


def choose_splits(B: int, L: int, sm_count: int) -> int:
    """Splits of the cache per batch row: enough that B · splits fills the GPU's `sm_count` multiprocessors once
    (one program per SM; each holds all heads, so a second wave would only queue), but never splits shorter than
    MIN_SPLIT_TOKENS. At B = 1, L = 128K on 132 SMs: 132 splits of about 1000 tokens; at B >= 132: 1."""
    return max(1, min(math.ceil(sm_count / B), L // MIN_SPLIT_TOKENS))


def split_plan(L: int, splits: int, block_l: int) -> tuple[int, int]:
    """(tiles of the cache, splits): split `s` takes tiles `s·tiles // splits` up to `(s+1)·tiles // splits`, a
    whole number of tiles each, as even as whole tiles allow; never more splits than tiles, so none is empty."""
    tiles = triton.cdiv(L, block_l)
    return tiles, min(splits, tiles)


def cache_bytes(B: int, L: int, H: int, d: int, r_k: int, r_v: int, itemsize: int) -> int:
    """Bytes of the factor cache: `B·L·(R_k + R_v)·(H + d)` elements (MHA's K and V: `2·B·L·H·d`)."""
    return itemsize * B * L * (r_k + r_v) * (H + d)


def bytes_moved(B: int, L: int, H: int, d: int, q_len: int, r_k: int, r_v: int, itemsize: int, splits: int) -> int:
    """Bytes one `tpa_decode` call moves to and from HBM: the cache read once, `q` read and the output written
    once, and the fp32 partials (`splits` outputs and log-sum-exps per row) written by the split pass and read
    back by the merge. One pass over the cache; at long L the cache is nearly all of it."""
    rows = B * q_len * H
    partials = 4 * splits * rows * (d + 1)
    return cache_bytes(B, L, H, d, r_k, r_v, itemsize) + 2 * itemsize * rows * d + 2 * partials


def _checked(q, a_k, b_k, a_v, b_v) -> tuple[int, int, int, int, int, int, int]:
    """(B, q_len, H, d, L, R_k, R_v) of consistent inputs; ValueError naming the tensor otherwise."""
    if q.dim() != 4 or any(t.dim() != 4 for t in (a_k, b_k, a_v, b_v)):
        raise ValueError("tpa_decode: q, a_k, b_k, a_v, b_v must all be 4-d ([B,q_len,H,d], [B,L,H,R], [B,L,R,d])")
    B, q_len, H, d = q.shape
    L, r_k, r_v = a_k.shape[1], a_k.shape[3], a_v.shape[3]
    expected = {"a_k": (B, L, H, r_k), "b_k": (B, L, r_k, d), "a_v": (B, L, H, r_v), "b_v": (B, L, r_v, d)}
    for name, tensor in zip(expected, (a_k, b_k, a_v, b_v), strict=True):
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(f"tpa_decode: {name} has shape {tuple(tensor.shape)}, expected {expected[name]}")
    if not 1 <= q_len <= L:
        raise ValueError(f"tpa_decode: q_len={q_len} must be between 1 and the cache length L={L}")
    if len({t.dtype for t in (q, a_k, b_k, a_v, b_v)}) != 1 or q.dtype not in DTYPES:
        raise Unsupported(f"tpa_decode: inputs must share one of fp32/fp16/bf16, got {q.dtype}, {a_k.dtype}, ...")
    if q_len * H * power_of_2_at_least(d, 16) > MAX_ROW_ELEMENTS:
        raise Unsupported(f"tpa_decode: q_len·H·d = {q_len}·{H}·{d} exceeds {MAX_ROW_ELEMENTS} (one program's rows)")
    return B, q_len, H, d, L, r_k, r_v


def _unit_last_stride(t: torch.Tensor) -> torch.Tensor:
    """`t` itself when its last axis is contiguous (a slice of a preallocated cache is), else a contiguous copy."""
    return t if t.stride(-1) == 1 else t.contiguous()


def tpa_decode(q, a_k, b_k, a_v, b_v, *, scale: float, num_splits: int | None = None) -> torch.Tensor:
    """`q [B,q_len,H,d]` (formed and rotated) against the factor cache `a_k [B,L,H,R_k]`, `b_k [B,L,R_k,d]`
    (rotated), `a_v [B,L,H,R_v]`, `b_v [B,L,R_v,d]`, whose last q_len positions are the new tokens -> `out
    [B,q_len,H,d]` in the inputs' dtype. `num_splits` overrides `choose_splits` (tests use it)."""
    B, q_len, H, d, L, r_k, r_v = _checked(q, a_k, b_k, a_v, b_v)
    q, a_k, b_k, a_v, b_v = (_unit_last_stride(t) for t in (q, a_k, b_k, a_v, b_v))
    rows, device, block_d = q_len * H, q.device, power_of_2_at_least(d, 16)
    block_l, stages = tile_plan(rows, r_k, r_v, d, q.element_size())
    splits = num_splits or choose_splits(B, L, multiprocessors(device, CPU_MULTIPROCESSORS))
    tiles, splits = split_plan(L, splits, block_l)
    o_part = scratch((B, splits, rows, d), torch.float32, device)
    lse = scratch((B, splits, rows), torch.float32, device)
    block_m = power_of_2_at_least(rows, 16)
    _split_kernel[(B, splits)](
        q, a_k, b_k, a_v, b_v, o_part, lse, L, tiles, splits, H, scale * LOG2_E / r_k,
        *q.stride()[:3], *a_k.stride()[:3], *b_k.stride()[:3], *a_v.stride()[:3], *b_v.stride()[:3],
        Q_LEN=q_len, R_K=r_k, R_V=r_v, D_HEAD=d, BLOCK_M=block_m, BLOCK_L=block_l, BLOCK_D=block_d,
        PRECISION=dot_precision(q.dtype), num_warps=num_warps_for(block_m * block_d), num_stages=stages,
    )  # fmt: skip
    out = scratch((B, q_len, H, d), q.dtype, device)
    _merge_kernel[(B, rows)](
        out, o_part, lse, rows, splits, D_HEAD=d, BLOCK_S=MERGE_SPLITS, BLOCK_D=block_d, num_warps=4
    )  # fmt: skip
    return out
