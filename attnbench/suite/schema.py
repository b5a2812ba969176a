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
    modes: [fwd, fwd_bwd]          # fwd | bwd | fwd_bwd                          (default [fwd])
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

Every list-valued key also takes a scalar. The `description` of each field is what an error message offers as
"allowed", so it is written for the person editing the file.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from attnbench.mechanisms.problem import DTYPES, Level, Mode
from attnbench.suite.case import Limits, TimingSettings

DEVICES = ("cpu", "cuda")
DEFAULT_DTYPES = {"cuda": "bf16", "cpu": "fp32"}
AXES = ("B", "T", "H", "d", "D", "tokens")
ALTERNATIVES = {"d": "D", "D": "d", "B": "tokens", "tokens": "B"}  # a sweep gives one of each pair
FIXED_KEYS = ("name", "mechanisms", "devices")  # not overridable by a device section or --set


def _as_list(value: Any) -> Any:
    """A scalar read as a list of one, so `dtypes: fp32` means `dtypes: [fp32]`."""
    return value if isinstance(value, list) else [value]


def _listed(item: Any, what: str) -> Any:
    """A non-empty list of `item`; a scalar means a list of one."""
    return Annotated[list[item], BeforeValidator(_as_list), Field(min_length=1, description=what)]


Positive = Annotated[int, Field(ge=1)]
ModeName = Literal[tuple(mode.value for mode in Mode)]
LevelName = Literal[tuple(level.value for level in Level)]
DtypeName = Literal[tuple(DTYPES)]


def _axis(what: str) -> Any:
    """A sweep axis: one or more positive sizes."""
    return _listed(Positive, f"a positive integer or a non-empty list of them ({what})")


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

    T: _axis("tokens per sequence")
    H: _axis("query heads")
    d: _axis("head dim") | None = None
    D: _axis("model width, d = D/H") | None = None
    B: _axis("batch") | None = None
    tokens: _axis("B·T, B = max(1, tokens // T)") | None = None


def _record_model(record: type) -> type[BaseModel]:
    """A strict model with the fields and defaults of a frozen dataclass (TimingSettings, Limits), so the
    dataclass stays the one place those fields are declared."""
    hints = typing.get_type_hints(record)
    fields: dict[str, Any] = {}
    for spec in dataclasses.fields(record):
        kind = hints[spec.name]
        if kind is bool:
            fields[spec.name] = (kind, Field(spec.default, description=f"true or false (default {spec.default})"))
        else:
            what = "an integer" if kind is int else "a number"
            fields[spec.name] = (kind, Field(spec.default, ge=0, description=f"{what} >= 0 (default {spec.default})"))
    return create_model(f"{record.__name__}Spec", __base__=_Strict, **fields)


TimingSpec = _record_model(TimingSettings)
LimitsSpec = _record_model(Limits)


class SuiteSpec(_Strict):
    """A whole suite as validated for one device (after its device section and any --set overrides)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="letters, digits, _ and -")
    description: str = Field("", description="any text")
    mechanisms: Annotated[list[MechanismEntry], Field(min_length=1, description="a non-empty list of mechanisms")]
    impls: _listed(str, "implementation names") | None = None
    modes: _listed(ModeName, "fwd, bwd, fwd_bwd") = ["fwd"]
    levels: _listed(LevelName, "core, layer") = ["core"]
    dtypes: _listed(DtypeName, ", ".join(DTYPES)) | None = None
    causal: _listed(bool, "true, false or a list of them") = [False]
    sweep: Sweep = Field(description="the shape axes T, H, d or D, B or tokens")
    timing: TimingSpec = Field(default_factory=TimingSpec, description="a mapping of TimingSettings fields")
    limits: LimitsSpec = Field(default_factory=LimitsSpec, description="a mapping of Limits fields")


OVERRIDABLE = tuple(name for name in SuiteSpec.model_fields if name not in FIXED_KEYS)
