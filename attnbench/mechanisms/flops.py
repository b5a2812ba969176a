"""FLOP counts and the convention by which rows count a backward.

A mechanism's model gives its forward FLOPs as a `FlopCount` (matmul work, element-wise work, and the part of
the matmul work that is attention over a T×T score matrix); `FlopCount.in_mode` turns it into the FLOPs of one
call in a mode, given what that call's backward computes again.
"""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.mechanisms.problem import Mode, Problem

# How backward FLOPs are counted (recorded in every run's meta.json and every row's `flop_convention`). The
# backward of any term is 2× its forward (a gradient for each operand of every product), except the attention
# core over a T×T score matrix, which is 2.5×: a FlashAttention backward computes the scores QKᵀ again (5
# matmuls against the forward's 2), and FlashAttention's benchmarks count it so. Projections, factor maps and
# element-wise work are 2×. Rows record these FLOPs as `flops`, the same for every implementation so that
# rates compare, and what the implementation actually performs (no recompute, or a whole checkpointed block
# recomputed) as `flops_impl`.
BWD_FACTOR = 2
ATTENTION_BWD_FACTOR = 2.5
FLOP_CONVENTION_ID = "bwd=2x;attention_core_bwd=2.5x"


@dataclass(frozen=True)
class FlopCount:
    """Forward FLOPs (one multiply-add = 2): `matmul` is what torch's FlopCounterMode counts (mm/bmm/SDPA/conv),
    `other` the element-wise work the model counts on top (0 for softmax attention, by the FlashAttention
    convention), and `attention` the part of `matmul` that is attention over a T×T score matrix (QKᵀ and P·V),
    the one term whose backward the convention counts as 2.5× its forward."""

    matmul: int
    other: int = 0
    attention: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.attention <= self.matmul:
            raise ValueError(f"FlopCount: attention={self.attention} must lie in [0, matmul={self.matmul}]")

    @property
    def total(self) -> int:
        return self.matmul + self.other

    def __add__(self, other: FlopCount) -> FlopCount:
        return FlopCount(self.matmul + other.matmul, self.other + other.other, self.attention + other.attention)

    def times(self, factor: int) -> FlopCount:
        return FlopCount(factor * self.matmul, factor * self.other, factor * self.attention)

    def in_mode(self, mode: Mode, recomputed: FlopCount) -> FlopCount:
        """The FLOPs of one call in `mode`, this being the forward's: the backward is `BWD_FACTOR` × the forward
        plus `recomputed`, the forward work it does again."""
        backward = self.times(BWD_FACTOR) + recomputed
        return {Mode.FWD: self, Mode.BWD: backward, Mode.FWD_BWD: self + backward}[Mode(mode)]


NO_FLOPS = FlopCount(0)


def flash_recompute(problem: Problem, forward: FlopCount) -> FlopCount:
    """What a FlashAttention-style backward computes again: the scores QKᵀ, half the attention term."""
    again = int((ATTENTION_BWD_FACTOR - BWD_FACTOR) * forward.attention)
    return FlopCount(matmul=again, attention=again)
