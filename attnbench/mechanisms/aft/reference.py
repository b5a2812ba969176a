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
    rows = max(1, min(T, FULL_BUDGET // max(T, 2 * B * C)))
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
    """AFT-local in its band form: `num_t = Σ_t' e^K_t' V_t' + Σ_band C_{t,t'} e^K_t' V_t'` with `C = e^w − 1`.

    `q, k, v [B,T,H,d]`, `w_band [t_max, 2·window − 1]` (column `j` is the offset `t' − t = j − window + 1`)
    -> `[B,T,H,d]`. With the row max `m_t` of w (0 included) subtracted, the global sums weigh `g_t = e^{−m_t}`
    and the band `C_{t,t'} = e^{w − m_t} − e^{−m_t}`. The band form cancels when `w ≪ 0` (C → −1).
    """
    dtype = compute_dtype(q)
    T = q.shape[1]
    qc, kc, vc = (channels(t, dtype) for t in (q, k, v))  # (B, T, C)
    num, den, scale = prefix_sums(kc, vc, chunk) if causal else total_sums(kc, vc)
    g, band = band_weights(w_band[:T].to(dtype), window, causal)  # (T,), (T, 2s−1)
    near_num, near_den = _band_sums(kc, vc, scale, band, window, causal)
    return _output(q, qc, g[:, None] * num + near_num, g[:, None] * den + near_den)


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


def band_weights(w: torch.Tensor, window: int, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """`w [T, 2s−1]` -> `g [T]`, the weight of the global sums, and `band [T, 2s−1]`, the band's `C`.

    Row t subtracts `m_t = max(0, max over its valid band entries of w)`: `g_t = e^{−m_t}` and
    `band[t, j] = e^{w[t,j] − m_t} − e^{−m_t}` where key `t + j − s + 1` exists (and, causal, `j < s`), else 0.
    """
    T, s = w.shape[0], window
    offsets = torch.arange(2 * s - 1, device=w.device) - (s - 1)  # (2s−1,): t' − t of each column
    keys = torch.arange(T, device=w.device)[:, None] + offsets  # (T, 2s−1)
    valid = (keys >= 0) & (keys < T)
    if causal:
        valid &= offsets <= 0
    w = w.masked_fill(~valid, -math.inf)
    m = w.detach().amax(dim=1).clamp(min=0)  # (T,)
    g = torch.exp(-m)
    band = (torch.exp(w - m[:, None]) - g[:, None]).masked_fill(~valid, 0.0)
    return g, band


def _band_sums(
    k: torch.Tensor, v: torch.Tensor, scale: torch.Tensor, band: torch.Tensor, window: int, causal: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """`Σ_j band[t, j] e^{K_t' − m_t} V_t'` and `Σ_j band[t, j] e^{K_t' − m_t}` over the band keys
    `t' = t + j − s + 1`, `[B,T,C]` each. `scale` is `[B,1,C]` or `[B,T,C]`; row blocks bound the memory that
    autograd keeps (checkpointed, like the full variant's)."""
    B, T, C = k.shape
    s = window
    k_pad = F.pad(k, (0, 0, s - 1, s - 1), value=-math.inf)  # key t' at index t' + s − 1
    v_pad = F.pad(v, (0, 0, s - 1, s - 1))
    columns = s if causal else 2 * s - 1
    recompute = torch.is_grad_enabled() and any(t.requires_grad for t in (k, v, band))
    rows = max(1, min(T, BAND_BUDGET // (B * C * columns))) if recompute else T
    nums, dens = [], []
    for start in range(0, T, rows):
        end = min(T, start + rows)
        rows_scale = scale if scale.shape[1] == 1 else scale[:, start:end]
        args = (k_pad, v_pad, rows_scale, band[start:end, :columns], start)
        num, den = checkpoint(_band_rows, *args, use_reentrant=False) if recompute else _band_rows(*args)
        nums.append(num)
        dens.append(den)
    return torch.cat(nums, dim=1), torch.cat(dens, dim=1)


def _band_rows(
    k_pad: torch.Tensor, v_pad: torch.Tensor, scale: torch.Tensor, band: torch.Tensor, start: int
) -> tuple[torch.Tensor, torch.Tensor]:
    rows = band.shape[0]
    num = den = 0.0
    for j in range(band.shape[1]):
        keys = slice(start + j, start + j + rows)  # key t + j − s + 1 of rows t = start, ..., start + rows − 1
        e = torch.exp(k_pad[:, keys] - scale) * band[:, j, None]  # (B, rows, C); 0 where the key is padding
        num = num + e * v_pad[:, keys]
        den = den + e
    return num, den


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
