"""What a task suite's `task:` section may say, and `TaskCell`, one trained-and-evaluated configuration.

A task suite trains one small model per mechanism and cell and records its accuracy on held-out sequences
(`attnbench.tasks`; docs/TASKS.md). In place of `sweep` it has:

    task:
      name: mqar                   # the task: multi-query associative recall
      include_unlisted: true       # also every registered mechanism `mechanisms` does not name (plug-ins), in
                                   # its default form (default false)
      seeds: [0, 1]                # one row per seed (default [0])
      cells:                       # a non-empty list; each key a value or a list of values (swept)
        - seq_len: 64              # T, tokens per sequence                    (>= 4·kv_pairs)
          kv_pairs: 16             # key-value pairs in the context, each queried once
          vocab: 256               # tokens: keys from [1, vocab/2), values from [vocab/2, vocab)
          d_model: 64              # model width D (d = D / heads)
          heads: 1                 # the mixer's heads (default 1)
          layers: 2                # blocks (default 2)
          steps: 800               # optimiser steps for each learning rate
          batch: 64                # sequences per step
          lrs: [1.0e-3, 3.0e-3]    # the learning-rate grid (the row keeps each one's accuracy, reports the best)
          train_size: 20000        # training sequences (seen steps·batch/train_size times)
          test_size: 1000          # held-out sequences, drawn from another seed
          eval_every: 100          # steps between held-out evaluations (default steps/10)
          stop_at: 1.0             # stop a learning rate once held-out accuracy reaches this (default 1.0)
          conv_kernel: 4           # taps of the short causal convolution before every mixer (default 4)
          power_a: 0.01            # how strongly queries cluster after the context (default 0.01)

Nothing here imports torch: these models run in the suite's schema stage.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

TASKS = ("mqar",)
TASK_TARGET = 0.99  # held-out accuracy at which a task row records `steps_to_target` and `time_to_target_s`
LIST_KEYS = ("lrs",)  # cell keys whose list is one value (the grid), not a sweep


@dataclass(frozen=True)
class TaskCell:
    """One task configuration with one seed: what a task case trains and evaluates (see the module docstring)."""

    name: str
    seq_len: int
    kv_pairs: int
    vocab: int
    d_model: int
    heads: int
    layers: int
    steps: int
    batch: int
    lrs: tuple[float, ...]
    train_size: int
    test_size: int
    eval_every: int
    stop_at: float
    conv_kernel: int
    power_a: float
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: what a row records under `task`, and what a worker rebuilds the cell from."""
        data = asdict(self)
        data["lrs"] = list(self.lrs)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskCell:
        return cls(**{**data, "lrs": tuple(data["lrs"])})


def _as_list(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


def _swept(kind: type, low: float, high: float, what: str, *, low_open: bool = False) -> Any:
    """A cell key: one value in range, or a non-empty list of them (swept)."""
    bound = {"gt" if low_open else "ge": low, "le": high}
    if kind is float:
        bound["allow_inf_nan"] = False
    relation = ">" if low_open else "from"
    words = f"{'an integer' if kind is int else 'a number'} {relation} {low} {'and <=' if low_open else 'to'} {high}"
    value = Annotated[kind, Field(**bound)]
    return Annotated[
        list[value], BeforeValidator(_as_list), Field(min_length=1, description=f"{words} or a list of them ({what})")
    ]


def _number(value: Any) -> Any:
    """An integer where a number is asked for is that number (`lrs: [1, 0.5]`); YAML reads `1e-3` as a string."""
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


Rate = Annotated[float, BeforeValidator(_number), Field(gt=0, le=1, allow_inf_nan=False)]


class CellSpec(BaseModel):
    """One entry of `task.cells`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    seq_len: _swept(int, 4, 2**20, "tokens per sequence, at least 4·kv_pairs")
    kv_pairs: _swept(int, 1, 2**18, "key-value pairs per sequence")
    vocab: _swept(int, 4, 2**20, "tokens, at least 2·(kv_pairs + 1)")
    d_model: _swept(int, 1, 2**14, "model width, divisible by heads")
    heads: _swept(int, 1, 2**10, "the mixer's heads") = [1]
    layers: _swept(int, 1, 64, "blocks") = [2]
    steps: _swept(int, 1, 10**7, "optimiser steps per learning rate")
    batch: _swept(int, 1, 2**16, "sequences per step")
    lrs: Annotated[
        list[Rate], BeforeValidator(_as_list), Field(min_length=1, description="learning rates, each > 0 and <= 1")
    ]
    train_size: _swept(int, 1, 10**7, "training sequences")
    test_size: _swept(int, 1, 10**6, "held-out sequences")
    eval_every: _swept(int, 1, 10**7, "steps between held-out evaluations, at most steps") | None = None
    stop_at: _swept(float, 0, 1, "held-out accuracy at which a learning rate stops early") = [1.0]
    conv_kernel: _swept(int, 1, 64, "taps of the short convolution") = [4]
    power_a: _swept(float, 0, 1, "power-law exponent of the query positions", low_open=True) = [0.01]


class TaskSpec(BaseModel):
    """The `task:` section of a task suite."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Literal[TASKS] = Field(description=", ".join(TASKS))
    include_unlisted: bool = Field(False, description="true or false (default false)")
    seeds: Annotated[
        list[Annotated[int, Field(ge=0, le=2**31 - 1)]],
        BeforeValidator(_as_list),
        Field(min_length=1, description="an integer from 0 to 2147483647 or a list of them"),
    ] = [0]
    cells: Annotated[list[CellSpec], Field(min_length=1, description="a non-empty list of cells")]


def cell_points(spec: TaskSpec) -> list[tuple[int, dict[str, Any]]]:
    """Every combination of each cell's swept keys: `(cell index, {key: value})`, with `eval_every` resolved
    (default a tenth of the steps) and `lrs` kept whole."""
    points = []
    for index, cell in enumerate(spec.cells):
        given = cell.model_dump()
        swept = {key: value for key, value in given.items() if key not in LIST_KEYS and value is not None}
        for combination in itertools.product(*swept.values()):
            point = dict(zip(swept, combination, strict=True))
            point["lrs"] = tuple(given["lrs"])
            point.setdefault("eval_every", max(1, point["steps"] // 10))
            points.append((index, point))
    return points


def task_cells(spec: TaskSpec) -> list[tuple[int, TaskCell]]:
    """Every cell with every seed, as `(cell index, TaskCell)`, in the order the cases run."""
    return [
        (index, TaskCell(name=spec.name, seed=seed, **point))
        for index, point in cell_points(spec)
        for seed in spec.seeds
    ]
