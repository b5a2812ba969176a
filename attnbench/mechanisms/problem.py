"""What one benchmark case computes: the mechanism, its shape, its own parameters, level and mode.

Every implementation of a mechanism receives a `Problem` and a dict of tensors and must compute the same
function as the mechanism's reference. Nothing here imports torch at module level.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from types import MappingProxyType
from typing import Any


class Mode(str, Enum):
    """What is timed: the forward pass, the backward pass alone, or both; or `decode`, one autoregressive step:
    `q_len` new tokens attend to a cache of `T` tokens prefilled beforehand (untimed)."""

    FWD = "fwd"
    BWD = "bwd"
    FWD_BWD = "fwd_bwd"
    DECODE = "decode"

    @property
    def needs_grad(self) -> bool:
        return self in (Mode.BWD, Mode.FWD_BWD)


# The modes that run a mechanism's core over a whole sequence (every implementation's `target`); `decode` runs
# an implementation's own decode path instead (`Impl.decode`).
TRAINING_MODES = (Mode.FWD, Mode.BWD, Mode.FWD_BWD)
# New tokens one decode step takes: 1, or a few for speculative decoding (a draft verified in one step).
MAX_Q_LEN = 4


class Level(str, Enum):
    """`core`: the token mixer from its projected inputs. `layer`: core plus input and output projections."""

    CORE = "core"
    LAYER = "layer"


# Suite dtype names -> (torch dtype name, bytes per element, whether TF32 matmuls are allowed).
DTYPES: Mapping[str, tuple[str, int, bool]] = MappingProxyType(
    {
        "fp64": ("float64", 8, False),
        "fp32": ("float32", 4, False),
        "tf32": ("float32", 4, True),
        "bf16": ("bfloat16", 2, False),
        "fp16": ("float16", 2, False),
    }
)


def torch_dtype(name: str):
    """The torch dtype of a suite dtype name (`tf32` is float32 storage with TF32 matmuls)."""
    import torch

    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return getattr(torch, DTYPES[name][0])


def itemsize(name: str) -> int:
    return DTYPES[name][1]


@dataclass(frozen=True)
class Problem:
    """One instance of a mechanism.

    `H` query heads of width `d` (model width `D = H·d`), batch `B`, `T` tokens. `params` holds the
    mechanism's own parameters (G, ranks, window, variant, ...) with defaults already resolved by the
    mechanism (see `Mechanism.resolve`).
    """

    mechanism: str
    B: int
    T: int
    H: int
    d: int
    causal: bool = False
    level: Level = Level.CORE
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "level", Level(self.level))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def D(self) -> int:
        return self.H * self.d

    def with_(self, **changes: Any) -> Problem:
        return replace(self, **changes)

    def describe(self) -> str:
        own = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        causal = " causal" if self.causal else ""
        return f"{self.mechanism}[{own}] {self.level.value}{causal} B={self.B} T={self.T} H={self.H} d={self.d}"
