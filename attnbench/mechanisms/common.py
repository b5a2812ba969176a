"""Pieces every mechanism shares: random tensors, projection weights and their costs, the `compile` implementation."""

from __future__ import annotations

from functools import partial

import torch

from attnbench.mechanisms.problem import Mode, Problem
from attnbench.mechanisms.registry import Impl, get, reference_recompute

COMPILE_IMPL = Impl(
    name="compile",
    target="attnbench.mechanisms.common:compiled_reference",
    description="torch.compile of the reference (default mode, static shapes)",
    # The compiled graph keeps the reference's checkpoints, so its backward recomputes what the reference's does.
    recompute=reference_recompute,
)


class Draw:
    """Fresh random tensors for one problem, reproducible from a seed.

    On the `meta` device no numbers are drawn (shapes only), which lets the cost models and the memory
    estimates inspect a mechanism's tensors without allocating them.
    """

    def __init__(self, dtype: torch.dtype, device: str | torch.device, generator: torch.Generator | None):
        self.dtype = dtype
        self.device = torch.device(device)
        self.generator = generator

    def normal(self, *shape: int, std: float = 1.0, mean: float = 0.0) -> torch.Tensor:
        """A tensor of `shape` drawn from N(mean, std²)."""
        out = torch.empty(shape, dtype=self.dtype, device=self.device)
        if self.device.type != "meta":
            out.normal_(mean, std, generator=self.generator)
        return out

    def weight(self, fan_in: int, fan_out: int, std: float | None = None) -> torch.Tensor:
        """A projection weight `[fan_in, fan_out]` (applied as `x @ W`), N(0, 1/fan_in) unless `std` is given."""
        return self.normal(fan_in, fan_out, std=fan_in**-0.5 if std is None else std)


def generator_for(device: str | torch.device, seed: int) -> torch.Generator | None:
    """A generator on `device` seeded with `seed`; None on `meta`, where nothing is drawn."""
    device = torch.device(device)
    if device.type == "meta":
        return None
    return torch.Generator(device=device).manual_seed(seed)


# One compiled reference per problem: compiling is slow, and a benchmark calls the same problem many times.
_compiled: dict[str, object] = {}


def compiled_reference(problem: Problem, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """`torch.compile` of the mechanism's reference core, compiled once per problem (static shapes)."""
    key = repr(problem)
    fn = _compiled.get(key)
    if fn is None:
        fn = _compiled[key] = torch.compile(partial(get(problem.mechanism).reference, problem))
    return fn(tensors)


def projection_flops(tokens: int, *shapes: tuple[int, int]) -> int:
    """FLOPs of `tokens` rows through linear maps of the given `(fan_in, fan_out)` shapes."""
    return sum(2 * tokens * fan_in * fan_out for fan_in, fan_out in shapes)


def projection_bytes(tokens: int, itemsize: int, *shapes: tuple[int, int]) -> int:
    """Fewest bytes of linear maps done as separate matmuls: read input and weight, write output."""
    return itemsize * sum(tokens * fan_in + fan_in * fan_out + tokens * fan_out for fan_in, fan_out in shapes)


def mode_bytes(fwd: int, bwd: int, mode: Mode | str) -> int:
    """The bytes of one call in `mode`, from the forward's and the backward's: both together move their sum."""
    return {Mode.FWD: fwd, Mode.BWD: bwd, Mode.FWD_BWD: fwd + bwd}[Mode(mode)]
