"""What a decode implementation provides: one autoregressive step on a prefilled cache, and the tensors it keeps.

In mode `decode` a problem's `T` is the cache length `M`: `q_len` new tokens (1, or up to `MAX_Q_LEN` for
speculative decoding) attend to the `M` cached tokens and to each other, new token `i` seeing positions
`<= M + i`. The core tensors are drawn for the whole `M + q_len` tokens, as for a causal forward over them; an
implementation's decode path (`Impl.decode`, `fn(problem, tensors, q_len) -> Decoding`) builds its cache or
state from the first `M` tokens (the prefill, not timed) and returns the step that processes the last `q_len`.
The step's output must equal the last `q_len` rows of the causal core over all `M + q_len` tokens.

What the implementation keeps between steps (`Decoding.kept`: a KV cache, a factor cache, a recurrent state, a
window) is measured from the tensors themselves, and checked against the mechanism's `cache_model` formula.
This module imports no torch: the registry imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from attnbench.mechanisms.problem import MAX_Q_LEN, Level, Problem

if TYPE_CHECKING:
    import torch

# The comparison the decode summary reports: the cache length from which the first mechanism configuration's
# decode step (TPA's factor cache, any ranks) overtakes the second's (GQA with 4 key/value heads), as the TPA
# paper claims beyond ~16K cached tokens. (mechanism, parameters the rows must have)
DECODE_CHALLENGER: tuple[str, dict] = ("tpa", {})
DECODE_BASELINE: tuple[str, dict] = ("gqa", {"G": 4})
# How a decode step's time grows with the cache length, from the mechanism's complexity in T: a quadratic
# mechanism's step reads its whole cache (linear in M), a linear one's reads a fixed state (constant).
DECODE_COMPLEXITY = {"quadratic": "linear", "linear": "constant"}


@dataclass(frozen=True)
class CacheModel:
    """What a mechanism's decode cache or state holds, by formula: `per_token` bytes for each cached token of
    one sequence (0 for a fixed-size state) over a batch of `batch`, plus `fixed` bytes for the whole batch that
    do not grow with the cache (a recurrent state, a window). `formula` says it in words, with the problem's
    numbers (the row and the summary print it)."""

    per_token: int
    fixed: int
    formula: str
    batch: int = 1
    window: int | None = None  # the most cached tokens kept (AFT-local's band); None: all of them

    def total(self, cached: int, q_len: int) -> int:
        """Bytes of the batch's cache after a step of `q_len` new tokens on `cached` tokens per sequence."""
        kept = cached if self.window is None else min(cached, self.window)
        return self.batch * self.per_token * (kept + q_len) + self.fixed


@dataclass(frozen=True)
class Decoding:
    """One decode step, ready to run on a prefilled cache.

    `step()` processes the `q_len` new tokens and returns their outputs `[B, q_len, H, d]`; it may be called
    again and again (it writes the same new entries each time, and a recurrent state's step returns the next
    state rather than overwrite its own), which is what lets it be timed. `kept` is everything the implementation
    keeps between steps (a cache with the new tokens' entries at its end; a state as it stands between steps): its
    bytes are the cache (or state) bytes of the row. `inputs` is what one step reads besides `kept`: the new
    tokens' inputs and the rows of learned parameters it needs; with `kept` and the output they make the step's
    bytes.
    """

    step: Callable[[], torch.Tensor]
    kept: Mapping[str, torch.Tensor]
    inputs: Mapping[str, torch.Tensor] = field(default_factory=dict)

    @property
    def kept_bytes(self) -> int:
        """Bytes of what the implementation keeps between steps, from the tensors themselves."""
        return nbytes(self.kept)

    def step_bytes(self, out: torch.Tensor) -> int:
        """Bytes one step moves at least: read everything kept and the step's inputs, write its output."""
        return self.kept_bytes + nbytes(self.inputs) + out.numel() * out.element_size()


def decode_unsupported(problem: Problem) -> str | None:
    """Why mode `decode` does not define this problem (an implementation with a decode path), or None."""
    if not problem.causal:
        return "decode is autoregressive: it needs the causal form"
    if problem.level is not Level.CORE:
        return "decode is measured at the core level (the cache holds the core's inputs)"
    return None


def check_q_len(q_len: int) -> int:
    """`q_len` itself when it is an integer from 1 to `MAX_Q_LEN`; ValueError naming it otherwise."""
    if isinstance(q_len, bool) or not isinstance(q_len, int) or not 1 <= q_len <= MAX_Q_LEN:
        raise ValueError(f"q_len must be an integer from 1 to {MAX_Q_LEN}, got {q_len!r}")
    return q_len


def split_tokens(tensor: torch.Tensor, cached: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`[B, M + q_len, ...]` -> the cached tokens `[B, M, ...]` and the new ones `[B, q_len, ...]` (views)."""
    return tensor[:, :cached], tensor[:, cached:]


def nbytes(tensors: Mapping[str, torch.Tensor]) -> int:
    """Bytes of the tensors' elements."""
    return sum(t.numel() * t.element_size() for t in tensors.values())
