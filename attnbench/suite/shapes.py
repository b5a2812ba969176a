"""The shapes of a suite's sweep, and the bounds on how much a suite may ask for, checked without torch.

`sweep_shapes` turns the sweep axes into shapes (d from d or D/H, B from B or tokens); `check_size` refuses a
suite whose combinations would run to more cases than anyone could run, before any list of them is built, and a
shape whose tensors no device could hold. Both run in the schema stage, before torch is imported.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

from attnbench.suite.errors import NO_VALUE, ErrorContext, Loc
from attnbench.suite.schema import SuiteSpec

MAX_CASES = 100_000  # far beyond any real sweep (the full GPU seqlen suite is a few thousand cases)
MAX_ELEMENTS = 2**40  # B·T·H·d of one shape: one such tensor is 2 TiB in bf16, more than any device holds


@dataclass(frozen=True)
class Shape:
    """One point of the sweep, with the suite key each size came from (to blame it for an impossible shape)."""

    B: int
    T: int
    H: int
    d: int
    source: Mapping[str, tuple[Loc, int]]  # axis of the problem → (suite key it came from, that key's value)

    def dims(self) -> dict[str, int]:
        return {"B": self.B, "T": self.T, "H": self.H, "d": self.d}


def _sweep_keys(spec: SuiteSpec, ctx: ErrorContext) -> tuple[tuple[str, list[int]], tuple[str, list[int]]]:
    """Which of d/D gives the head dim and which of B/tokens the batch, with their values."""
    sweep = spec.sweep
    if sweep.d is not None and sweep.D is not None:
        problem, allowed = "give d (head dim) or D (model width), not both", "one of d and D (d = D/H)"
        raise ctx.error(("sweep",), problem, {"d": sweep.d, "D": sweep.D}, allowed)
    if sweep.d is None and sweep.D is None:
        raise ctx.error(("sweep",), "missing the head dim", NO_VALUE, "d (head dim) or D (model width)")
    if sweep.B is not None and sweep.tokens is not None:
        allowed = "one of B and tokens (B = max(1, tokens // T))"
        raise ctx.error(("sweep",), "give B or tokens, not both", {"B": sweep.B, "tokens": sweep.tokens}, allowed)
    width = ("d", sweep.d) if sweep.d is not None else ("D", sweep.D)
    batch = ("B", sweep.B or [1]) if sweep.tokens is None else ("tokens", sweep.tokens)
    return width, batch


def check_size(spec: SuiteSpec, ctx: ErrorContext) -> None:
    """Refuse a suite whose combinations exceed `MAX_CASES`, counted from the lengths of its lists alone (each
    implementation only multiplies it further), so a sweep of a million shapes fails at once."""
    (width_key, widths), (batch_key, batches) = _sweep_keys(spec, ctx)
    sweep = spec.sweep
    factors = {
        "sweep.T": len(sweep.T),
        "sweep.H": len(sweep.H),
        f"sweep.{width_key}": len(widths),
        f"sweep.{batch_key}": len(batches),
        "causal": len(spec.causal),
        "levels": len(spec.levels),
        "modes": len(spec.modes),
        "dtypes": len(spec.dtypes or [None]),
    }
    per_entry = [
        math.prod(len(value) if isinstance(value, list) else 1 for value in entry.params.values())
        * len(entry.impls or spec.impls or [None])
        for entry in spec.mechanisms
    ]
    total = math.prod(factors.values()) * sum(per_entry)
    if total > MAX_CASES:
        counts = " × ".join(f"{count} {key}" for key, count in factors.items() if count > 1)
        problem = f"expands to {total} cases ({counts}, over {sum(per_entry)} mechanism settings)"
        raise ctx.error("", problem, NO_VALUE, f"at most {MAX_CASES} cases in one suite (split it into several)")


def sweep_shapes(spec: SuiteSpec, ctx: ErrorContext) -> list[Shape]:
    """Every shape of the sweep: d from d or D/H, B from B (default 1) or max(1, tokens // T). A D that H does
    not divide, or a shape of more than `MAX_ELEMENTS` elements, is an error naming its key."""
    (width_key, widths), (batch_key, batches) = _sweep_keys(spec, ctx)
    shapes = []
    for T, H, width, batch in itertools.product(spec.sweep.T, spec.sweep.H, widths, batches):
        if width_key == "D" and width % H:
            problem = f"D={width} is not divisible by H={H} (d = D/H)"
            raise ctx.error(("sweep", "D"), problem, width, "multiples of every H of the sweep")
        d = width if width_key == "d" else width // H
        B = batch if batch_key == "B" else max(1, batch // T)
        source = {
            "T": (("sweep", "T"), T),
            "H": (("sweep", "H"), H),
            "d": (("sweep", width_key), width),
            "B": (("sweep", batch_key), batch),
        }
        shape = Shape(B, T, H, d, source)
        if B * T * H * d > MAX_ELEMENTS:
            largest = max(shape.dims(), key=lambda axis: shape.dims()[axis])
            loc, value = source[largest]
            problem = f"B·T·H·d = {B * T * H * d} elements at B={B} T={T} H={H} d={d}, more than any device holds"
            raise ctx.error(loc, problem, value, f"shapes of at most {MAX_ELEMENTS} (2**40) elements")
        shapes.append(shape)
    return shapes
