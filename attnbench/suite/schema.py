"""What a suite file may say: the pydantic models that validate it, and the constants of its layout.

A suite names mechanisms (with their own parameters), implementations, modes, levels, dtypes and the shape
axes to sweep; every combination becomes one `Case`. docs/SUITES.md is the long form of this schema:

    name: seqlen                   # required, [A-Za-z0-9_-]+
    description: "..."             # optional
    mechanisms:                    # required, non-empty
      - name: gqa                  # a registered mechanism (`attnbench list`)
        params: {G: [2, 4]}        # its own parameters (registry `Mechanism.params`); a list is swept
        impls: [reference]         # optional; must be implementations the mechanism declares
    impls: [reference, sdpa]       # default for entries without `impls`; undeclared names are skipped per
                                   # mechanism; absent: every implementation each mechanism declares
    modes: [fwd, fwd_bwd]          # fwd | bwd | fwd_bwd | decode                 (default [fwd])
    q_len: [1, 3]                  # decode: new tokens per step, 1 to 4; T is the cache length (default 1)
    levels: [core, layer]          # core | layer                                 (default [core])
    dtypes: [bf16]                 # fp64 | fp32 | tf32 | bf16 | fp16             (default bf16 on cuda, fp32 on cpu)
    causal: [false, true]          # bool or list of bools                        (default false)
    sweep:                         # Cartesian product; every axis a positive integer or a non-empty list
      T: [256, 512]                # required
      H: 16                        # required
      d: 64                        # head dim, or D (model width, d = D/H) -- one of the two
      B: 1                         # batch (default 1), or tokens (B = max(1, tokens // T)) -- not both
    timing: {...}                  # fields of `attnbench.suite.case.TimingSettings`
    limits: {...}                  # fields of `attnbench.suite.case.Limits`
    devices:                       # optional overrides for one device (any key above but name, mechanisms)
      cpu: {sweep: {T: [128, 256], d: 32}, dtypes: [fp32]}

A task suite (trained models, accuracy rows) has a `task:` section in place of `sweep` (`attnbench.suite.task`).

Every list-valued key also takes a scalar. Every number has a range (`AXIS_MAXIMUM`, `SETTING_RANGES`): sizes no
machine could hold and settings that cannot work (`max_reps: 0`, `rep_ms: .inf`) are errors here, not failures
of every case later. The `description` of each field is what an error message offers as "allowed", so it is
written for the person editing the file and states the range.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from attnbench.mechanisms.problem import DTYPES, MAX_Q_LEN, Level, Mode
from attnbench.suite.case import Limits, TimingSettings
from attnbench.suite.task import TaskSpec

DEVICES = ("cpu", "cuda")
DEFAULT_DTYPES = {"cuda": "bf16", "cpu": "fp32"}
AXES = ("B", "T", "H", "d", "D", "tokens")
ALTERNATIVES = {"d": "D", "D": "d", "B": "tokens", "tokens": "B"}  # a sweep gives one of each pair
FIXED_KEYS = ("name", "mechanisms", "devices")  # not overridable by a device section or --set
NAME_MAX_LENGTH = 100  # the name starts the run folder's name, which the file system limits to 255 bytes

# The largest value of each sweep axis: far past any benchmark (T = 16M tokens), yet small enough that every
# shape's sizes multiply without overflow. `attnbench.suite.shapes.MAX_ELEMENTS` then bounds the product.
AXIS_MAXIMUM = {"T": 2**24, "H": 2**12, "d": 2**14, "D": 2**20, "B": 2**20, "tokens": 2**32}


@dataclass(frozen=True)
class Range:
    """The values a number of `timing` or `limits` may take: from `low` (itself allowed unless `low_open`) to
    `high`, finite, and what else bounds it (`also`, for the error message)."""

    low: float
    high: float
    low_open: bool = False
    also: str = ""

    def constraints(self, kind: type) -> dict[str, Any]:
        """Pydantic `Field` arguments enforcing this range on a field of type `kind`."""
        bounds: dict[str, Any] = {"gt" if self.low_open else "ge": self.low, "le": self.high}
        return bounds if kind is int else {**bounds, "allow_inf_nan": False}

    def describe(self, kind: type) -> str:
        """`an integer from 1 to 100000`, `a number > 0 and <= 604800`: the range in words."""
        what = "an integer" if kind is int else "a number"
        text = f"{what} > {self.low} and <= {self.high}" if self.low_open else f"{what} from {self.low} to {self.high}"
        return text + (f", {self.also}" if self.also else "")


HOUR_MS = 3_600_000
# Every number of `TimingSettings` and `Limits`. Each timed sample is kept in the row, so `max_reps` is bounded;
# a case gets at most a week, and warming up or repeating it at most an hour. A number missing here is only
# bounded to be finite and >= 0 (tests/suite/test_suite_schema.py asks for an entry for each).
SETTING_RANGES = {
    "warmup_ms": Range(0, HOUR_MS),
    "rep_ms": Range(0, HOUR_MS),
    "min_reps": Range(1, 100_000, also="at most max_reps"),
    "max_reps": Range(1, 100_000, also="at least min_reps"),
    "energy_s": Range(0, 3600),
    "case_timeout_s": Range(0, 7 * 24 * 3600, low_open=True),
    "reference_max_elements": Range(1, 2**40),
}


def _as_list(value: Any) -> Any:
    """A scalar read as a list of one, so `dtypes: fp32` means `dtypes: [fp32]`."""
    return value if isinstance(value, list) else [value]


def _listed(item: Any, what: str) -> Any:
    """A non-empty list of `item`; a scalar means a list of one."""
    return Annotated[list[item], BeforeValidator(_as_list), Field(min_length=1, description=what)]


ModeName = Literal[tuple(mode.value for mode in Mode)]
LevelName = Literal[tuple(level.value for level in Level)]
DtypeName = Literal[tuple(DTYPES)]
QLen = Annotated[int, Field(ge=1, le=MAX_Q_LEN)]  # new tokens of one decode step


def _axis(name: str, what: str) -> Any:
    """A sweep axis: one or more sizes from 1 to the axis's maximum."""
    size = Annotated[int, Field(ge=1, le=AXIS_MAXIMUM[name])]
    return _listed(size, f"an integer from 1 to {AXIS_MAXIMUM[name]} or a non-empty list of them ({what})")


class _Strict(BaseModel):
    """No unknown keys and no silent conversions: `T: "32"` is a mistake worth reporting, not a 32."""

    model_config = ConfigDict(extra="forbid", strict=True)


class MechanismEntry(_Strict):
    """One entry of `mechanisms`: a registered mechanism, its own parameters, optionally its implementations."""

    name: str = Field(description="a registered mechanism")
    params: dict[str, Any] = Field(default_factory=dict, description="the mechanism's own parameters")
    impls: _listed(str, "implementations the mechanism declares") | None = None


class Sweep(_Strict):
    """The shape axes; their Cartesian product is the list of shapes. Which of d/D and B/tokens is given, and
    whether D divides by H, is checked when the shapes are built."""

    T: _axis("T", "tokens per sequence")
    H: _axis("H", "query heads")
    d: _axis("d", "head dim") | None = None
    D: _axis("D", "model width, d = D/H") | None = None
    B: _axis("B", "batch") | None = None
    tokens: _axis("tokens", "B·T, B = max(1, tokens // T)") | None = None


def _record_model(record: type) -> type[BaseModel]:
    """A strict model with the fields and defaults of a frozen dataclass (TimingSettings, Limits), so the
    dataclass stays the one place those fields are declared."""
    hints = typing.get_type_hints(record)
    fields: dict[str, Any] = {}
    for spec in dataclasses.fields(record):
        kind = hints[spec.name]
        if typing.get_origin(kind) is Literal:
            allowed = ", ".join(typing.get_args(kind))
            fields[spec.name] = (kind, Field(spec.default, description=f"{allowed} (default {spec.default})"))
        elif kind is bool:
            fields[spec.name] = (kind, Field(spec.default, description=f"true or false (default {spec.default})"))
        else:
            bounds = SETTING_RANGES.get(spec.name, Range(0, float("inf")))
            described = f"{bounds.describe(kind)} (default {spec.default})"
            fields[spec.name] = (kind, Field(spec.default, description=described, **bounds.constraints(kind)))
    return create_model(f"{record.__name__}Spec", __base__=_Strict, **fields)


TimingSpec = _record_model(TimingSettings)
LimitsSpec = _record_model(Limits)


class SuiteSpec(_Strict):
    """A whole suite as validated for one device (after its device section and any --set overrides)."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_-]+$",
        max_length=NAME_MAX_LENGTH,
        description=f"letters, digits, _ and -, at most {NAME_MAX_LENGTH} characters",
    )
    description: str = Field("", description="any text")
    mechanisms: Annotated[list[MechanismEntry], Field(min_length=1, description="a non-empty list of mechanisms")]
    impls: _listed(str, "implementation names") | None = None
    modes: _listed(ModeName, "fwd, bwd, fwd_bwd, decode") = ["fwd"]
    q_len: _listed(QLen, f"decode only: an integer from 1 to {MAX_Q_LEN} or a list of them") = [1]
    levels: _listed(LevelName, "core, layer") = ["core"]
    dtypes: _listed(DtypeName, ", ".join(DTYPES)) | None = None
    causal: _listed(bool, "true, false or a list of them") = [False]
    sweep: Sweep | None = Field(None, description="the shape axes T, H, d or D, B or tokens")
    task: TaskSpec | None = Field(None, description="a task section (attnbench.suite.task) in place of sweep")
    timing: TimingSpec = Field(default_factory=TimingSpec, description="a mapping of TimingSettings fields")
    limits: LimitsSpec = Field(default_factory=LimitsSpec, description="a mapping of Limits fields")


OVERRIDABLE = tuple(name for name in SuiteSpec.model_fields if name not in FIXED_KEYS)
