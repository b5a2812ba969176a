"""AFT, the Attention Free Transformer, written from the formulas of Zhai et al. 2021 (README.md).

For batch b, token t and channel c (the D' = H·d channels are independent; heads only group them):

    Y_t = σ(Q_t) ⊙ Σ_t' exp(K_t' + w_{t,t'}) ⊙ V_t' / Σ_t' exp(K_t' + w_{t,t'})        (causal: t' ≤ t)

The variants differ only in the bias w (README.md gives the exact parameterisations):
- full:   w_{t,t'} = w_bias[t, t'], a learned t_max × t_max matrix of which the top-left T × T is used;
- simple: w = 0, so each channel is a softmax over tokens of K weighting V;
- local:  w_{t,t'} = w_band[t, t' − t + s − 1] where |t − t'| < s, and 0 (not −∞) outside the band;
- conv:   tokens on a side × side grid, w_{t,t'} = w_conv[h, Δrow + s//2, Δcol + s//2] for the 2-D offset
          Δ = t' − t inside the s × s window and 0 outside; K has one channel per head (`k [B,T,H,1]`).

Numerics: `exp(K + w)` overflows even in fp32, so every exponent is shifted by maxima that cancel between the
numerator and the denominator: per channel the max of K over the keys a row sees, per row the max of w (with
the 0 that lies outside a band or kernel). The shifts are constants to autograd (detached), which leaves the
gradients exact. Work is in float32 (float64 for float64 inputs); the result is cast back to the input dtype.
Token reductions run over axis 1 of the contiguous `[B, T, D']` view of the inputs: no transposed copy and no
softmax over a strided axis (an eager AFT-simple that reduced over the token axis of a `[B,H,T,d]` tensor was
measured 30–50× slower on a GPU than the other linear-time mechanisms' eager forwards at 16K tokens).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from attnbench.mechanisms.problem import Problem

# Rows of exp(w) materialised at once by the full variant (elements; 2^26 is 256 MiB in float32), beyond the
# T × T bias itself.
FULL_BUDGET = 1 << 26
# Elements of the band terms a local row block keeps for autograd (rows · B · D' · band columns).
BAND_BUDGET = 1 << 25
# Tokens per chunk of the causal scan: within a chunk every row shares one stabiliser, the chunk's running max.
SCAN_CHUNK = 64

Sums = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def core(problem: Problem, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Core: `q, v [B,T,H,d]`, `k [B,T,H,d]` (conv: `[B,T,H,1]`) and the variant's bias -> `[B,T,H,d]`."""
    q, k, v = tensors["q"], tensors["k"], tensors["v"]
    variant, causal, window = problem.params["variant"], problem.causal, problem.params["window"]
    if variant == "simple":
        return simple(q, k, v, causal=causal)
    if variant == "full":
        return full(q, k, v, tensors["w_bias"], causal=causal)
    if variant == "local":
        return local(q, k, v, tensors["w_band"], window=window, causal=causal)
    return conv(q, k, v, tensors["w_conv"])


def simple(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, chunk: int = SCAN_CHUNK) -> torch.Tensor:
    """AFT-simple: `q, k, v [B,T,H,d]` -> `[B,T,H,d]`; causal is a running-max-stabilised cumulative sum."""
    dtype = compute_dtype(q)
    qc, kc, vc = (channels(t, dtype) for t in (q, k, v))  # (B, T, C)
    num, den, _ = prefix_sums(kc, vc, chunk) if causal else total_sums(kc, vc)
    return _output(q, qc, num, den)


def full(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor, *, causal: bool) -> torch.Tensor:
    """AFT-full in its matmul form: `num = exp(w) @ (exp(K) ⊙ V)`, `den = exp(w) @ exp(K)`.

    `q, k, v [B,T,H,d]`, `w [t_max, t_max]` with `t_max >= T` -> `[B,T,H,d]`. The bias is shared over batch and
    channels, so the keys of every batch and channel are the columns of one `[T, B·2D']` matrix and each block of
    query rows is one matmul. Blocks keep `exp(w)` at `rows × T` elements; under autograd each block is
    checkpointed, so the backward recomputes its rows instead of keeping all of them.
    """
    dtype = compute_dtype(q)
    B, T = q.shape[:2]
    qc, kc, vc = (channels(t, dtype) for t in (q, k, v))  # (B, T, C)
    C = qc.shape[-1]
    w = w[:T, :T].to(dtype)
    rows = full_block_rows(B, T, C)
    recompute = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, w))
    keys = None if causal else _stacked_keys(kc, vc)  # (T, B·2C)
    blocks = []
    for start in range(0, T, rows):
        end = min(T, start + rows)
        if causal:
            # Rows [start, end) see keys [0, end): their stabiliser is the running max of K at `end`.
            fn, args = _causal_full_rows, (w[start:end, :end], kc[:, :end], vc[:, :end], start)
        else:
            fn, args = _full_rows, (w[start:end], keys)
        blocks.append(checkpoint(fn, *args, use_reentrant=False) if recompute else fn(*args))
    out = torch.cat(blocks).view(T, B, 2 * C).transpose(0, 1)  # (B, T, 2C)
    return _output(q, qc, out[..., :C], out[..., C:])


def full_block_rows(B: int, T: int, C: int) -> int:
    """Query rows per block of the full variant: all `T` while `exp(w)` rows and keys fit `FULL_BUDGET`."""
    return max(1, min(T, FULL_BUDGET // max(T, 2 * B * C)))


def local(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w_band: torch.Tensor,
    *,
    window: int,
    causal: bool,
    chunk: int = SCAN_CHUNK,
) -> torch.Tensor:
    """AFT-local as three sums of positive weights: the keys before the band, the band, the keys after it.

    `q, k, v [B,T,H,d]`, `w_band [t_max, 2·window − 1]` (column `j` is the offset `t' − t = j − window + 1`)
    -> `[B,T,H,d]`. Outside the band the bias is 0, so the keys `t' <= t − s` and `t' >= t + s` (non-causal)
    enter through prefix and suffix sums of `e^K V` and `e^K`; the band's keys enter directly with their weight
    `e^{K + w}`. Nothing is subtracted, so the result is exact to rounding for any bias, however negative (a
    "global sum minus band" form loses every digit once `e^w` is far below 1). The three parts are brought to
    one stabiliser per row and channel, the largest of their own, so no weight exceeds 1.
    """
    dtype = compute_dtype(q)
    T = q.shape[1]
    qc, kc, vc = (channels(t, dtype) for t in (q, k, v))  # (B, T, C)
    parts = [_shifted(prefix_sums(kc, vc, chunk), window, before=True)]
    if not causal:
        flipped = prefix_sums(kc.flip(1), vc.flip(1), chunk)
        parts.append(_shifted(tuple(x.flip(1) for x in flipped), window, before=False))
    w = _band_bias(w_band[:T].to(dtype), window, causal)  # (T, columns), −inf where there is no key
    top = _band_max(kc.detach(), w.detach(), window)  # (B, T, C)
    for _, _, scale in parts:
        top = torch.maximum(top, scale)
    num, den = _band_sums(kc, vc, top, w, window)
    for part_num, part_den, scale in parts:
        factor = torch.exp(scale - top)  # at most 1; 0 where the part is empty (scale −inf)
        num = num + factor * part_num
        den = den + factor * part_den
    return _output(q, qc, num, den)


def _shifted(sums: Sums, window: int, *, before: bool) -> Sums:
    """Prefix sums `Σ_{t' <= i}` moved to row `t = i + s` (`before`: the keys `t' <= t − s`), or suffix sums
    `Σ_{t' >= i}` moved to row `t = i − s` (the keys `t' >= t + s`). Rows with no such key get empty sums
    (0, with the stabiliser −inf)."""
    num, den, scale = sums
    T, s = num.shape[1], window
    moved = []
    for x, empty in ((num, 0.0), (den, 0.0), (scale, -math.inf)):
        if before:  # row t reads index t − s
            moved.append(F.pad(x[:, : max(0, T - s)], (0, 0, min(s, T), 0), value=empty))
        else:  # row t reads index t + s
            moved.append(F.pad(x[:, s:], (0, 0, 0, min(s, T)), value=empty))
    return moved[0], moved[1], moved[2]


def _band_bias(w: torch.Tensor, window: int, causal: bool) -> torch.Tensor:
    """`w [T, 2s−1]` -> the band's bias `[T, columns]` (`s` columns causal, the keys up to the row), −inf where
    the column's key `t + j − s + 1` is outside the sequence."""
    T, s = w.shape[0], window
    columns = s if causal else 2 * s - 1
    keys = torch.arange(T, device=w.device)[:, None] + torch.arange(columns, device=w.device) - (s - 1)
    return w[:, :columns].masked_fill((keys < 0) | (keys >= T), -math.inf)


def _band_keys(k: torch.Tensor, v: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """K and V padded by `s − 1` tokens on each side, so that key `t'` sits at index `t' + s − 1`."""
    s = window
    return F.pad(k, (0, 0, s - 1, s - 1)), F.pad(v, (0, 0, s - 1, s - 1))


def _band_max(k: torch.Tensor, w: torch.Tensor, window: int) -> torch.Tensor:
    """`max_j (K_{t'} + w[t, j])` over the band's keys, `[B,T,C]` (the key `t' = t` is always there)."""
    k_pad, _ = _band_keys(k, k, window)
    T = k.shape[1]
    top = None
    for j in range(w.shape[1]):
        term = k_pad[:, j : j + T] + w[:, j, None]
        top = term if top is None else torch.maximum(top, term)
    return top


def _band_sums(
    k: torch.Tensor, v: torch.Tensor, top: torch.Tensor, w: torch.Tensor, window: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`Σ_j e^{K_t' + w[t,j] − top_t} V_t'` and `Σ_j e^{K_t' + w[t,j] − top_t}` over the band keys
    `t' = t + j − s + 1`, `[B,T,C]` each. Row blocks bound the memory that autograd keeps (checkpointed, like
    the full variant's)."""
    B, T, C = k.shape
    k_pad, v_pad = _band_keys(k, v, window)
    columns = w.shape[1]
    recompute = torch.is_grad_enabled() and any(t.requires_grad for t in (k, v, w))
    rows = max(1, min(T, BAND_BUDGET // (B * C * columns))) if recompute else T
    nums, dens = [], []
    for start in range(0, T, rows):
        end = min(T, start + rows)
        args = (k_pad, v_pad, top[:, start:end], w[start:end], start)
        num, den = checkpoint(_band_rows, *args, use_reentrant=False) if recompute else _band_rows(*args)
        nums.append(num)
        dens.append(den)
    return torch.cat(nums, dim=1), torch.cat(dens, dim=1)


def _band_rows(
    k_pad: torch.Tensor, v_pad: torch.Tensor, top: torch.Tensor, w: torch.Tensor, start: int
) -> tuple[torch.Tensor, torch.Tensor]:
    rows = w.shape[0]
    num = den = 0.0
    for j in range(w.shape[1]):
        keys = slice(start + j, start + j + rows)  # key t + j − s + 1 of rows t = start, ..., start + rows − 1
        e = torch.exp(k_pad[:, keys] + w[:, j, None] - top)  # (B, rows, C), at most 1; 0 outside the sequence
        num = num + e * v_pad[:, keys]
        den = den + e
    return num, den


def conv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w_conv: torch.Tensor) -> torch.Tensor:
    """AFT-conv (non-causal): `q, v [B,T,H,d]`, `k [B,T,H,1]`, `w_conv [H,s,s]` -> `[B,T,H,d]`, T = side².

    `Y = σ(Q) ⊙ [g·Σ e^K V + conv2d(e^K V, C)] / [g·Σ e^K + conv2d(e^K, C)]` per head, with the kernel
    `C = e^{w − m} − e^{−m}` and `g = e^{−m}` for `m = max(0, max w)` per head. The conv2d is a cross-correlation
    with zero padding s//2: tap (i, j) of head h links token (r, c) to token (r + i − s//2, c + j − s//2).
    """
    dtype = compute_dtype(q)
    B, T, H, d = q.shape
    side, s = math.isqrt(T), w_conv.shape[-1]
    kh, vh = k.to(dtype), v.to(dtype)  # (B, T, H, 1), (B, T, H, d)
    e = torch.exp(kh - kh.detach().amax(dim=1, keepdim=True))  # (B, T, H, 1)
    x = torch.cat([e * vh, e], dim=-1)  # (B, T, H, d+1): numerator and denominator terms side by side
    w = w_conv.to(dtype)
    m = w.detach().amax(dim=(1, 2)).clamp(min=0)  # (H,)
    g = torch.exp(-m)
    kernel = torch.exp(w - m[:, None, None]) - g[:, None, None]  # (H, s, s)
    weight = kernel.repeat_interleave(d + 1, dim=0).unsqueeze(1)  # (H·(d+1), 1, s, s), depthwise
    image = x.reshape(B, side, side, H * (d + 1)).permute(0, 3, 1, 2)  # (B, H·(d+1), side, side), channels-last
    near = F.conv2d(image, weight, padding=s // 2, groups=H * (d + 1))
    near = near.permute(0, 2, 3, 1).reshape(B, T, H, d + 1)
    out = g[:, None] * x.sum(dim=1, keepdim=True) + near  # (B, T, H, d+1)
    y = torch.sigmoid(q.to(dtype)) * out[..., :d] / out[..., d:]
    return y.to(q.dtype)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def channels(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`[B,T,H,e]` -> `[B,T,H·e]` in `dtype` (a view when the dtype already matches)."""
    return x.reshape(x.shape[0], x.shape[1], -1).to(dtype)


def total_sums(k: torch.Tensor, v: torch.Tensor) -> Sums:
    """Non-causal `Σ_t e^{K_t − m} V_t` and `Σ_t e^{K_t − m}` over all tokens, `[B,1,C]` each, and `m [B,1,C]`."""
    scale = k.detach().amax(dim=1, keepdim=True)  # (B, 1, C)
    e = torch.exp(k - scale)  # (B, T, C)
    return (e * v).sum(dim=1, keepdim=True), e.sum(dim=1, keepdim=True), scale


def prefix_sums(k: torch.Tensor, v: torch.Tensor, chunk: int = SCAN_CHUNK) -> Sums:
    """Causal `Σ_{t'≤t} e^{K_t' − m_t} V_t'` and `Σ_{t'≤t} e^{K_t' − m_t}`, and the stabiliser `m`, all `[B,T,C]`.

    `m_t` is the running max of K at the end of t's chunk of `chunk` tokens. Within a chunk the sums are
    cumulative sums; the carry from earlier chunks is rescaled from their maxima to this one in float64, so it
    neither overflows nor underflows unless K's running max spans more than ~700 over the sequence. A row loses
    its terms to underflow only if K's running max rises by more than ~85 (fp32) later in the same chunk.
    """
    B, T, C = k.shape
    n = -(-T // chunk)
    pad = n * chunk - T
    kc = F.pad(k, (0, 0, 0, pad), value=-math.inf).view(B, n, chunk, C)
    vc = F.pad(v, (0, 0, 0, pad)).view(B, n, chunk, C)
    m = kc.detach().amax(dim=2).cummax(dim=1).values  # (B, n, C): running max at each chunk's end
    e = torch.exp(kc - m[:, :, None])  # (B, n, chunk, C), at most 1; padding gives 0
    num = torch.cumsum(e * vc, dim=2)
    den = torch.cumsum(e, dim=2)
    carry_num, carry_den = _carry(num[:, :, -1], den[:, :, -1], m)
    num = (num + carry_num[:, :, None]).view(B, n * chunk, C)[:, :T]
    den = (den + carry_den[:, :, None]).view(B, n * chunk, C)[:, :T]
    scale = m[:, :, None].expand(B, n, chunk, C).reshape(B, n * chunk, C)[:, :T]
    return num, den, scale


def _carry(num: torch.Tensor, den: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums of the chunks before each chunk, rescaled to its max: `[B,n,C]` totals (each relative to its own
    chunk's `m`) -> `[B,n,C]` carries relative to the chunk's `m`."""
    top = m[:, -1:].double()
    down = torch.exp(m.double() - top)  # (B, n, C), at most 1
    carries = []
    for total in (num, den):
        before = F.pad(torch.cumsum(total.double() * down, dim=1)[:, :-1], (0, 0, 1, 0))
        carries.append((before / down).to(total.dtype))
    return carries[0], carries[1]


def _stacked_keys(k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`exp(K − max over tokens) ⊙ V` and `exp(K − max)` side by side, token-major: `[B,S,C]` -> `[S, B·2C]`."""
    e = torch.exp(k - k.detach().amax(dim=1, keepdim=True))  # (B, S, C)
    x = torch.cat([e * v, e], dim=-1)  # (B, S, 2C)
    return x.transpose(0, 1).reshape(x.shape[1], -1)


def _full_rows(w_rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """`exp(w_rows − row max) @ keys`: `w_rows [rows, S]`, `keys [S, N]` -> `[rows, N]`."""
    p = torch.exp(w_rows - w_rows.detach().amax(dim=1, keepdim=True))  # (rows, S), each row's max is 1
    return p @ keys


def _causal_full_rows(w_rows: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int) -> torch.Tensor:
    rows, keys = w_rows.shape
    query_pos = torch.arange(start, start + rows, device=w_rows.device)[:, None]
    future = torch.arange(keys, device=w_rows.device)[None, :] > query_pos
    return _full_rows(w_rows.masked_fill(future, -math.inf), _stacked_keys(k, v))


def _output(q: torch.Tensor, qc: torch.Tensor, num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """`σ(Q) ⊙ num / den` back in `q`'s shape `[B,T,H,d]` and dtype."""
    return (torch.sigmoid(qc) * num / den).reshape(q.shape).to(q.dtype)
