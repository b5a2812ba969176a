"""Suites: a YAML file → a validated suite → the ordered list of `Case`s the runner measures.

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

Every list-valued key also takes a scalar. Device sections and `--set` overrides merge into the top level
(mappings key by key; a sweep axis replaces its alternative, d ↔ D and B ↔ tokens). Every error is a
`SuiteError` reading `<file>: <key.path>: <problem>; got <value>; allowed: <...>`, raised before anything runs.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model

from attnbench.mechanisms import registry
from attnbench.mechanisms.problem import DTYPES, Level, Mode, Problem
from attnbench.suite.case import Case, Limits, TimingSettings

DEVICES = ("cpu", "cuda")
DEFAULT_DTYPES = {"cuda": "bf16", "cpu": "fp32"}
AXES = ("B", "T", "H", "d", "D", "tokens")
ALTERNATIVES = {"d": "D", "D": "d", "B": "tokens", "tokens": "B"}  # a sweep gives one of each pair
FIXED_KEYS = ("name", "mechanisms", "devices")  # not overridable by a device section or --set
SUITES_DIR = Path(__file__).resolve().parents[2] / "suites"


class SuiteError(ValueError):
    """A suite that cannot be read, validated or expanded: one line per problem found (also in `errors`)."""

    def __init__(self, message: str, errors: Sequence[str] = ()):
        super().__init__(message)
        self.errors = tuple(errors) or (message,)


@dataclass(frozen=True)
class Suite:
    """A suite resolved for one device: its settings and every case, in the order they run."""

    name: str
    path: Path
    device: str  # "cpu" or "cuda"
    resolved: dict  # the suite after device overrides and --set, JSON-serialisable
    timing: TimingSettings
    limits: Limits
    cases: tuple[Case, ...]


def _as_list(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


def _listed(item: Any, what: str) -> Any:
    """A non-empty list of `item`; a scalar means a list of one."""
    return Annotated[list[item], BeforeValidator(_as_list), Field(min_length=1, description=what)]


Positive = Annotated[int, Field(ge=1)]
ModeName = Literal[tuple(mode.value for mode in Mode)]
LevelName = Literal[tuple(level.value for level in Level)]
DtypeName = Literal[tuple(DTYPES)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class MechanismEntry(_Strict):
    name: str = Field(description="a registered mechanism")
    params: dict[str, Any] = Field(default_factory=dict, description="the mechanism's own parameters")
    impls: _listed(str, "implementations the mechanism declares") | None = None


def _axis(what: str) -> Any:
    return _listed(Positive, f"a positive integer or a non-empty list of them ({what})")


class Sweep(_Strict):
    T: _axis("tokens per sequence")
    H: _axis("query heads")
    d: _axis("head dim") | None = None
    D: _axis("model width, d = D/H") | None = None
    B: _axis("batch") | None = None
    tokens: _axis("B·T, B = max(1, tokens // T)") | None = None


def _record_model(record: type) -> type[BaseModel]:
    """A strict model with the fields and defaults of a frozen dataclass (TimingSettings, Limits)."""
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


_NO_VALUE = object()
Loc = tuple[Any, ...]


def format_path(loc: Loc) -> str:
    """`("mechanisms", 1, "params", "G")` → `mechanisms[1].params.G`."""
    text = ""
    for item in loc:
        text += f"[{item}]" if isinstance(item, int) else f".{item}" if text else str(item)
    return text


class _Context:
    """Where values came from (the file, a device section, a --set), so an error points at what to edit."""

    def __init__(self, file: str, document: Any, origins: Mapping[Loc, str]):
        self.file = file
        self.document = document
        self.origins = origins

    def trim(self, loc: Loc) -> Loc:
        """Drop a list index the document does not have (a scalar the schema read as a list of one)."""
        node = self.document
        for depth, item in enumerate(loc):
            if isinstance(item, int) and not isinstance(node, list):
                return loc[:depth]
            if isinstance(node, list) and isinstance(item, int) and item < len(node):
                node = node[item]
            elif isinstance(node, Mapping):
                node = node.get(item)
            else:
                node = None
        return loc

    def where(self, loc: Loc) -> str:
        for depth in range(len(loc), 0, -1):
            origin = self.origins.get(loc[:depth])
            if origin is None:
                continue
            if origin.startswith("devices."):
                return f"{origin}.{format_path(loc)}"
            return f"{format_path(loc)} (from --set {origin})"
        return format_path(loc)

    def line(self, loc: Loc | str, problem: str, value: Any = _NO_VALUE, allowed: Any = None) -> str:
        where = loc if isinstance(loc, str) else self.where(self.trim(loc))
        text = f"{self.file}: {where}: {problem}" if where else f"{self.file}: {problem}"
        if value is not _NO_VALUE:
            text += f"; got {value!r}"
        if allowed is not None:
            if not isinstance(allowed, str):
                allowed = ", ".join(str(item) for item in allowed)
            text += f"; allowed: {allowed}"
        return text

    def error(self, loc: Loc | str, problem: str, value: Any = _NO_VALUE, allowed: Any = None) -> SuiteError:
        return SuiteError(self.line(loc, problem, value, allowed))


def _unwrap_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside `Annotated[list[Model] | None, ...]`, if any."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _unwrap_model(typing.get_args(annotation)[0])
    if origin is not None:
        for arg in typing.get_args(annotation):
            found = _unwrap_model(arg)
            if found is not None:
                return found
        return None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _schema_at(loc: Loc) -> tuple[type[BaseModel] | None, Any]:
    """The model reached by following `loc` from the suite, and the field it ends on."""
    model: type[BaseModel] | None = SuiteSpec
    field = None
    for item in loc:
        if isinstance(item, int):
            continue
        if model is None or item not in model.model_fields:
            return None, None
        field = model.model_fields[item]
        model = _unwrap_model(field.annotation)
    return model, field


PROBLEMS = {
    "extra_forbidden": "unknown key",
    "missing": "required key missing",
    "too_short": "empty list",
    "literal_error": "unknown value",
    "int_type": "not an integer",
    "float_type": "not a number",
    "bool_type": "not true or false",
    "string_type": "not a string",
    "list_type": "not a list",
    "dict_type": "not a mapping",
    "model_type": "not a mapping",
    "string_pattern_mismatch": "not a valid name",
}


def _pydantic_lines(ctx: _Context, exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors(include_url=False):
        loc = ctx.trim(tuple(err["loc"]))
        kind = err["type"]
        problem = PROBLEMS.get(kind, err["msg"])
        if kind == "greater_than_equal":
            problem = f"must be >= {err['ctx']['ge']}"
        if kind == "too_short" and loc[:1] == ("sweep",):
            problem = "an empty sweep"
        if kind == "extra_forbidden":
            model, _ = _schema_at(loc[:-1])
            names = list(model.model_fields) if model else []
            allowed = [*names, "devices"] if model is SuiteSpec else names
        elif kind == "literal_error":
            allowed = err["ctx"]["expected"]
        else:
            _, field = _schema_at(loc)
            allowed = field.description if field is not None else None
        value = _NO_VALUE if kind == "missing" else _value_at(ctx.document, loc, err["input"])
        lines.append(ctx.line(loc, problem, value, allowed))
    return lines


def _value_at(document: Any, loc: Loc, fallback: Any) -> Any:
    node = document
    for item in loc:
        listed = isinstance(node, list) and isinstance(item, int) and 0 <= item < len(node)
        found = item in node if isinstance(node, Mapping) else listed
        if not found:
            return fallback
        node = node[item]
    return node


def _raise_all(lines: Sequence[str]) -> typing.NoReturn:
    raise SuiteError("\n".join(lines), lines)


def find_suite(path: str | Path) -> Path:
    """`path` itself, or for a bare name like `seqlen` the file `suites/seqlen.yaml` (here, then shipped)."""
    path = Path(path)
    if path.exists() or path.suffix or len(path.parts) > 1:
        return path
    for folder in (Path("suites"), SUITES_DIR):
        candidate = folder / f"{path.name}.yaml"
        if candidate.is_file():
            return candidate
    return path


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read the suite ({exc.strerror or exc})") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(f"{path}: {where}invalid YAML: {problem}") from None
    if not isinstance(document, dict):
        raise SuiteError(f"{path}: a suite is a mapping of keys (name, mechanisms, sweep, ...); got {document!r}")
    return document


def _merge(base: dict, layer: Mapping, origin: str, origins: dict[Loc, str], at: Loc = ()) -> None:
    """Merge `layer` into `base` in place: mappings key by key, anything else replaced."""
    for key, value in layer.items():
        loc = (*at, key)
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            base[key] = dict(base[key])
            _merge(base[key], value, origin, origins, loc)
            continue
        base[key] = copy.deepcopy(value)
        origins[loc] = origin
        alternative = ALTERNATIVES.get(key) if at == ("sweep",) else None
        if alternative and alternative not in layer:
            base.pop(alternative, None)


def _parse_set(ctx: _Context, text: str) -> dict[str, Any]:
    """`T=256,512` → `{"sweep": {"T": [256, 512]}}`; `timing.rep_ms=5` → `{"timing": {"rep_ms": 5}}`."""
    allowed = f"KEY=VALUE, KEY one of {', '.join(AXES)} or a dotted path under {', '.join(OVERRIDABLE)}"
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ctx.error("--set", "expected KEY=VALUE", text, allowed)
    path = ("sweep", key) if key in AXES else tuple(key.split("."))
    if path[0] not in OVERRIDABLE or not all(path):
        raise ctx.error("--set", f"unknown key {key!r}", text, allowed)
    try:
        if "," in raw and not raw.strip().startswith(("[", "{")):
            value: Any = [yaml.safe_load(item) for item in raw.split(",")]
        else:
            value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ctx.error("--set", f"the value is not YAML ({getattr(exc, 'problem', exc)})", text) from None
    layer: Any = value
    for part in reversed(path):
        layer = {part: layer}
    return layer


def _resolve(path: Path, document: dict[str, Any], device: str, overrides: Sequence[str]) -> tuple[SuiteSpec, _Context]:
    """The suite as seen by `device`: top level, then `devices.<device>`, then each --set, validated."""
    merged = {key: copy.deepcopy(value) for key, value in document.items() if key != "devices"}
    origins: dict[Loc, str] = {}
    ctx = _Context(str(path), document, origins)
    devices = document.get("devices") or {}
    if not isinstance(devices, Mapping):
        raise ctx.error(("devices",), "not a mapping", devices, "cpu: {...}, cuda: {...}")
    for name, section in devices.items():
        if name not in DEVICES:
            raise ctx.error(("devices", name), "unknown device", name, DEVICES)
        if section is not None and not isinstance(section, Mapping):
            raise ctx.error(("devices", name), "not a mapping", section, "keys of the suite but name, mechanisms")
        for key in section or {}:
            if key in FIXED_KEYS:
                raise ctx.error(("devices", name, key), "cannot be set per device", _NO_VALUE, OVERRIDABLE)
    _merge(merged, devices.get(device) or {}, f"devices.{device}", origins)
    for text in overrides:
        _merge(merged, _parse_set(ctx, text), text, origins)
    ctx.document = merged
    try:
        spec = SuiteSpec.model_validate(merged)
    except ValidationError as exc:
        _raise_all(_pydantic_lines(ctx, exc))
    return spec, ctx


@dataclass(frozen=True)
class _Shape:
    B: int
    T: int
    H: int
    d: int
    source: Mapping[str, tuple[Loc, int]]  # axis of the problem → (suite key it came from, that key's value)

    def dims(self) -> dict[str, int]:
        return {"B": self.B, "T": self.T, "H": self.H, "d": self.d}


def _shapes(spec: SuiteSpec, ctx: _Context) -> list[_Shape]:
    sweep = spec.sweep
    if sweep.d is not None and sweep.D is not None:
        raise ctx.error(("sweep",), "give d (head dim) or D (model width), not both", {"d": sweep.d, "D": sweep.D})
    if sweep.d is None and sweep.D is None:
        raise ctx.error(("sweep",), "missing the head dim", _NO_VALUE, "d (head dim) or D (model width)")
    if sweep.B is not None and sweep.tokens is not None:
        raise ctx.error(("sweep",), "give B or tokens, not both", {"B": sweep.B, "tokens": sweep.tokens})
    width_key, widths = ("d", sweep.d) if sweep.d is not None else ("D", sweep.D)
    batch_key, batches = ("B", sweep.B or [1]) if sweep.tokens is None else ("tokens", sweep.tokens)
    shapes = []
    for T, H, width, batch in itertools.product(sweep.T, sweep.H, widths, batches):
        if width_key == "D" and width % H:
            raise ctx.error(("sweep", "D"), f"D={width} is not divisible by H={H} (d = D/H)", width)
        d = width if width_key == "d" else width // H
        B = batch if batch_key == "B" else max(1, batch // T)
        source = {
            "T": (("sweep", "T"), T),
            "H": (("sweep", "H"), H),
            "d": (("sweep", width_key), width),
            "B": (("sweep", batch_key), batch),
        }
        shapes.append(_Shape(B, T, H, d, source))
    return shapes


def _mechanism(ctx: _Context, index: int, entry: MechanismEntry) -> registry.Mechanism:
    registered = registry.mechanisms()
    if entry.name not in registered:
        raise ctx.error(("mechanisms", index, "name"), "unknown mechanism", entry.name, list(registered))
    return registered[entry.name]


def _entry_impls(
    ctx: _Context, index: int, entry: MechanismEntry, spec: SuiteSpec, mechanism: registry.Mechanism
) -> list[registry.Impl]:
    declared = mechanism.impl_names
    if entry.impls is not None:
        for position, name in enumerate(entry.impls):
            if name not in declared:
                loc = ("mechanisms", index, "impls", position)
                raise ctx.error(loc, f"not an implementation of {mechanism.name}", name, declared)
        return [mechanism.impl(name) for name in entry.impls]
    if spec.impls is None:
        return list(mechanism.impls)
    chosen = [mechanism.impl(name) for name in spec.impls if name in declared]
    if not chosen:
        problem = f"{mechanism.name} declares none of the suite's impls (give this entry its own impls)"
        raise ctx.error(("mechanisms", index), problem, spec.impls, declared)
    return chosen


def _check_suite_impls(ctx: _Context, spec: SuiteSpec) -> None:
    known = sorted({impl.name for _, impl in registry.all_impls()})
    for position, name in enumerate(spec.impls or ()):
        if name not in known:
            raise ctx.error(("impls", position), "unknown implementation", name, known)


def _param_allowed(param: registry.Param) -> str:
    if param.choices is not None:
        return ", ".join(str(choice) for choice in param.choices)
    if param.default is None or isinstance(param.default, int):
        bound = f" >= {param.minimum}" if param.minimum is not None else ""
        optional = " or null" if param.default is None else ""
        return f"an integer{bound}{optional} ({param.doc})"
    return param.doc


def _param_sets(
    ctx: _Context, index: int, entry: MechanismEntry, mechanism: registry.Mechanism
) -> list[dict[str, Any]]:
    """Every combination of the entry's parameter values (only the parameters it names)."""
    declared = mechanism.params
    swept: dict[str, list[Any]] = {}
    for name, given in entry.params.items():
        loc = ("mechanisms", index, "params", name)
        if name not in declared:
            allowed = [f"{key} ({param.doc})" for key, param in declared.items()] or f"none ({mechanism.name})"
            raise ctx.error(loc, f"not a parameter of {mechanism.name}", name, allowed)
        values = given if isinstance(given, list) else [given]
        if not values:
            raise ctx.error(loc, "an empty sweep", given, _param_allowed(declared[name]))
        for value in values:
            try:
                if isinstance(value, (list, dict)):
                    raise ValueError("not a scalar (a list sweeps scalar values)")
                declared[name].check(mechanism.name, name, value)
            except ValueError as exc:
                problem = re.sub(r", got .*$", "", str(exc))  # the value follows as `got`
                raise ctx.error(loc, problem, value, _param_allowed(declared[name])) from None
        swept[name] = values
    return [dict(zip(swept, combination, strict=True)) for combination in itertools.product(*swept.values())]


def _problem(
    ctx: _Context,
    index: int,
    mechanism: registry.Mechanism,
    params: dict[str, Any],
    shape: _Shape,
    causal: bool,
    level: str,
) -> tuple[Problem, str | None]:
    """The checked problem, and why the mechanism does not define it (None when it does)."""
    try:
        return mechanism.problem(**shape.dims(), causal=causal, level=level, **params), None
    except registry.Unsupported as exc:
        resolved = {
            name: param.check(mechanism.name, name, params.get(name, param.default))
            for name, param in mechanism.params.items()
        }
        problem = Problem(mechanism.name, shape.B, shape.T, shape.H, shape.d, causal, Level(level), resolved)
        return problem, str(exc)
    except ValueError as exc:
        loc, value = _blame(mechanism, index, params, shape, causal, level, str(exc))
        at = " ".join(f"{axis}={size}" for axis, size in shape.dims().items())
        at += f" causal={causal} level={level}"
        raise ctx.error(loc, f"impossible shape at {at}: {exc}", value) from None


def _blame(
    mechanism: registry.Mechanism,
    index: int,
    params: dict[str, Any],
    shape: _Shape,
    causal: bool,
    level: str,
    message: str,
) -> tuple[Loc, Any]:
    """The suite key to point at for a shape the mechanism rejects: a parameter the entry sets whose default
    makes the shape valid (those the mechanism's message names first), else the sweep axis it names first."""

    def mentioned(name: str) -> float:
        found = re.search(rf"\b{re.escape(name)}\b", message)
        return found.start() if found else float("inf")

    for name in sorted(params, key=mentioned):
        value = params[name]
        others = {key: other for key, other in params.items() if key != name}
        try:
            mechanism.problem(**shape.dims(), causal=causal, level=level, **others)
        except registry.Unsupported:
            pass
        except ValueError:
            continue
        return ("mechanisms", index, "params", name), value
    named = [(match.start(), match.group()) for match in re.finditer(r"\b[BTHd]\b", message)]
    if named:
        return shape.source[min(named)[1]]
    return ("mechanisms", index), mechanism.name


def _seed(problem: Problem, dtype: str) -> int:
    """A stable seed from the problem and dtype: reruns, and every impl and mode of one problem, see the same
    inputs, so their errors against the reference are comparable."""
    key = {
        "mechanism": problem.mechanism,
        "params": dict(sorted(problem.params.items())),
        "level": problem.level.value,
        "causal": problem.causal,
        "B": problem.B,
        "T": problem.T,
        "H": problem.H,
        "d": problem.d,
        "dtype": dtype,
    }
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


def _expand(ctx: _Context, spec: SuiteSpec, device: str) -> list[Case]:
    """Every case of the suite, ordered mechanism entry, params, impl, level, mode, dtype, causal, shape."""
    _check_suite_impls(ctx, spec)
    shapes = _shapes(spec, ctx)
    timing = TimingSettings(**spec.timing.model_dump())
    limits = Limits(**spec.limits.model_dump())
    dtypes = spec.dtypes or [DEFAULT_DTYPES[device]]
    keyed: list[tuple[tuple, Case]] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(spec.mechanisms):
        mechanism = _mechanism(ctx, index, entry)
        impls = _entry_impls(ctx, index, entry, spec, mechanism)
        for p_index, params in enumerate(_param_sets(ctx, index, entry, mechanism)):
            for shape, (c_index, causal), (l_index, level) in itertools.product(
                shapes, enumerate(spec.causal), enumerate(spec.levels)
            ):
                problem, reason = _problem(ctx, index, mechanism, params, shape, causal, level)
                for (i_index, impl), (m_index, mode), (t_index, dtype) in itertools.product(
                    enumerate(impls), enumerate(spec.modes), enumerate(dtypes)
                ):
                    mode = Mode(mode)
                    why = reason or impl.unsupported_reason(problem, mode, dtype)
                    case = Case(problem, impl.name, mode, dtype, timing, limits, _seed(problem, dtype), why)
                    case_id = case.case_id
                    if case_id in seen:
                        problem_text = f"repeats the case {case.describe()} (a value repeats, or entries overlap)"
                        raise ctx.error(("mechanisms", index), problem_text, _NO_VALUE, None)
                    seen[case_id] = index
                    order = (index, p_index, i_index, l_index, m_index, t_index, c_index)
                    keyed.append(((*order, shape.T, shape.B, shape.H, shape.d), case))
    keyed.sort(key=lambda item: item[0])
    return [case for _, case in keyed]


def _label(case: Case) -> tuple[str, str]:
    mechanism = registry.get(case.problem.mechanism)
    variant = mechanism.variant(case.problem)
    return case.problem.mechanism, f"{case.problem.mechanism}:{variant}" if variant else case.problem.mechanism


def _filter(ctx: _Context, cases: list[Case], only: Sequence[str], impls: Sequence[str]) -> list[Case]:
    if only:
        labels = [_label(case) for case in cases]
        existing = sorted({name for pair in labels for name in pair})
        for wanted in only:
            if not any(wanted in pair for pair in labels):
                raise ctx.error("--only", "matches no mechanism of this suite", wanted, existing)
        cases = [case for case, pair in zip(cases, labels, strict=True) if any(wanted in pair for wanted in only)]
    if impls:
        existing = sorted({case.impl for case in cases})
        for wanted in impls:
            if wanted not in existing:
                raise ctx.error("--impl", "matches no implementation of this suite", wanted, existing)
        cases = [case for case in cases if case.impl in impls]
    if not cases:
        raise ctx.error("", "expands to zero cases", {"only": list(only), "impls": list(impls)})
    return cases


def _resolved_dict(spec: SuiteSpec, dtypes: list[str]) -> dict[str, Any]:
    data = spec.model_dump(mode="json")
    data["dtypes"] = dtypes
    data["sweep"] = {axis: values for axis, values in data["sweep"].items() if values is not None}
    for entry in data["mechanisms"]:
        if entry["impls"] is None:
            del entry["impls"]
    if data["impls"] is None:
        del data["impls"]
    return data


def _check_other_device(path: Path, document: dict[str, Any], device: str) -> None:
    """Validate and expand the suite for another device too (without --set), so its errors surface here."""
    try:
        spec, ctx = _resolve(path, document, device, ())
        _expand(ctx, spec, device)
    except SuiteError as exc:
        note = f" (with the {device} settings)"
        lines = [line if f"devices.{device}." in line else line + note for line in exc.errors]
        raise SuiteError("\n".join(lines), lines) from None


def load_suite(
    path: str | Path,
    *,
    device: str | None = None,
    overrides: Sequence[str] = (),
    only: Sequence[str] = (),
    impls: Sequence[str] = (),
) -> Suite:
    """Read, validate and expand a suite for `device` ("cpu", "cuda"; None: cuda when available).

    `overrides` are `--set KEY=VALUE` strings (KEY a sweep axis or a dotted key; VALUE YAML, `a,b` a list),
    applied after the device section. `only` keeps mechanisms by `name` or `name:variant`, `impls` keeps
    implementations by name. Every section of `devices` is validated and expanded, whichever device is asked
    for, so a suite that loads on one machine loads on the other. Raises `SuiteError`.
    """
    path = find_suite(path)
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in DEVICES:
        raise SuiteError(f"{path}: device must be one of {', '.join(DEVICES)}; got {device!r}")
    document = _read(path)
    spec, ctx = _resolve(path, document, device, overrides)
    cases = _filter(ctx, _expand(ctx, spec, device), only, impls)
    for other in DEVICES:
        if other != device:
            _check_other_device(path, document, other)
    return Suite(
        name=spec.name,
        path=path,
        device=device,
        resolved=_resolved_dict(spec, list(spec.dtypes or [DEFAULT_DTYPES[device]])),
        timing=cases[0].timing,
        limits=cases[0].limits,
        cases=tuple(cases),
    )
