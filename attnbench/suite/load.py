"""Loading a suite: a YAML file → the suite as one device sees it → a validated, expanded `Suite`.

The file is read, its `devices.<device>` section and each `--set KEY=VALUE` are merged into the top level
(mappings key by key; a sweep axis replaces its alternative, d ↔ D and B ↔ tokens), the result is validated
against `attnbench.suite.schema` and expanded into cases by `attnbench.suite.expand`. Every problem is a
`SuiteError` (`attnbench.suite.errors`) raised before anything runs, and every device section is checked
whichever device is asked for, so a suite that loads on one machine loads on the other.

Loading has two stages. `check_suite` is the schema stage: the file read as bounded, strict YAML
(`attnbench.suite.reader`), its keys, types and ranges, the device sections, the number of cases and the shapes;
it never imports torch, so a malformed suite fails in a fraction of a second, before a device is even chosen.
`load_suite` then picks the device (CUDA when there is one, which imports torch) and expands the cases against
the mechanism registry (which imports the mechanisms, and torch with them).

`load_suite`, `check_suite`, `Suite`, `SuiteError` and `find_suite` are the names the rest of attnbench imports
from here.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from attnbench.suite.case import Case, Limits, TimingSettings
from attnbench.suite.errors import NO_VALUE, ErrorContext, Loc, SuiteError, raise_all, validation_lines
from attnbench.suite.expand import expand_cases
from attnbench.suite.reader import parse_yaml, read_suite_file
from attnbench.suite.schema import ALTERNATIVES, AXES, DEFAULT_DTYPES, DEVICES, FIXED_KEYS, OVERRIDABLE, SuiteSpec
from attnbench.suite.select import filter_cases
from attnbench.suite.shapes import check_size, sweep_shapes
from attnbench.suite.task_cases import check_task, expand_task_cases

__all__ = ["SUITES_DIR", "CheckedSuite", "Suite", "SuiteError", "check_suite", "find_suite", "load_suite"]

SUITES_DIR = Path(__file__).resolve().parents[2] / "suites"  # the suites shipped with attnbench


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


def _merge(base: dict, layer: Mapping, origin: str, origins: dict[Loc, str], at: Loc = ()) -> None:
    """Merge `layer` into `base` in place: mappings key by key, anything else replaced. Each replaced key path
    is recorded in `origins` as coming from `origin`, for error messages."""
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
            base.pop(alternative, None)  # giving d drops the D it replaces (and B drops tokens), and back


def _parse_set(ctx: ErrorContext, text: str) -> dict[str, Any]:
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
            value: Any = [parse_yaml(item, "value") for item in raw.split(",")]
        else:
            value = parse_yaml(raw, "value")
    except SuiteError as exc:
        raise ctx.error("--set", f"the value is not YAML ({exc})", text) from None
    layer: Any = value
    for part in reversed(path):
        layer = {part: layer}
    return layer


def _check_device_sections(ctx: ErrorContext, devices: Any) -> None:
    """`devices` is a mapping of known devices to mappings of keys a device may override."""
    if not isinstance(devices, Mapping):
        raise ctx.error(("devices",), "not a mapping", devices, "cpu: {...}, cuda: {...}")
    for name, section in devices.items():
        if name not in DEVICES:
            raise ctx.error(("devices", name), "unknown device", name, DEVICES)
        if section is not None and not isinstance(section, Mapping):
            raise ctx.error(("devices", name), "not a mapping", section, "keys of the suite but name, mechanisms")
        for key in section or {}:
            if key in FIXED_KEYS:
                raise ctx.error(("devices", name, key), "cannot be set per device", NO_VALUE, OVERRIDABLE)


def _resolve(
    path: Path, document: dict[str, Any], device: str, overrides: Sequence[str]
) -> tuple[SuiteSpec, ErrorContext]:
    """The suite as seen by `device`: top level, then `devices.<device>`, then each --set, validated."""
    merged = {key: copy.deepcopy(value) for key, value in document.items() if key != "devices"}
    origins: dict[Loc, str] = {}
    ctx = ErrorContext(str(path), document, origins)
    devices = document.get("devices") or {}
    _check_device_sections(ctx, devices)
    _merge(merged, devices.get(device) or {}, f"devices.{device}", origins)
    for text in overrides:
        _merge(merged, _parse_set(ctx, text), text, origins)
    ctx.document = merged
    if "task" in merged and "sweep" in merged:
        problem = "a task suite has no sweep (its cells give the shapes)"
        raise ctx.error(("sweep",), problem, NO_VALUE, "task.cells (--set task.cells=[...])")
    try:
        spec = SuiteSpec.model_validate(merged)
    except ValidationError as exc:
        raise_all(validation_lines(ctx, exc))
    return spec, ctx


def _resolved_dict(spec: SuiteSpec, dtypes: list[str]) -> dict[str, Any]:
    """The suite as run, for the run's metadata: defaults filled in, keys left unset (None) dropped."""
    data = spec.model_dump(mode="json")
    data["dtypes"] = dtypes
    for section in ("sweep", "task"):
        if data[section] is None:
            del data[section]
    if "sweep" in data:
        data["sweep"] = {axis: values for axis, values in data["sweep"].items() if values is not None}
    for entry in data["mechanisms"]:
        if entry["impls"] is None:
            del entry["impls"]
    if data["impls"] is None:
        del data["impls"]
    return data


def _check_settings(ctx: ErrorContext, spec: SuiteSpec) -> None:
    """What the schema checks field by field cannot: `min_reps` no larger than `max_reps`."""
    timing = spec.timing
    if timing.min_reps > timing.max_reps:
        problem = f"must be <= max_reps ({timing.max_reps})"
        raise ctx.error(("timing", "min_reps"), problem, timing.min_reps, f"an integer from 1 to {timing.max_reps}")


def _validate(path: Path, document: dict[str, Any], device: str, overrides: Sequence[str]) -> tuple[SuiteSpec, Any]:
    """The schema stage for one device: the suite resolved for it and validated, its settings consistent, its
    size within bounds and every shape of its sweep well formed. No torch."""
    spec, ctx = _resolve(path, document, device, overrides)
    _check_settings(ctx, spec)
    if spec.task is not None:  # a task suite: cells in place of a sweep (`_resolve` refuses both)
        check_task(ctx, spec)
        return spec, ctx
    if spec.sweep is None:
        raise ctx.error(("sweep",), "required key missing", NO_VALUE, "the shape axes T, H, d or D, B or tokens")
    check_size(spec, ctx)
    sweep_shapes(spec, ctx)
    return spec, ctx


def _expand(ctx: ErrorContext, spec: SuiteSpec, device: str) -> list[Case]:
    """The cases of a sweep, or of a task suite."""
    return expand_task_cases(ctx, spec, device) if spec.task is not None else expand_cases(ctx, spec, device)


def _noted(device: str, exc: SuiteError) -> SuiteError:
    """`exc` with each line that is not already under `devices.<device>` saying it came from that device's
    settings (the suite is checked for every device, whichever one runs it)."""
    note = f" (with the {device} settings)"
    lines = [line if f"devices.{device}." in line else line + note for line in exc.errors]
    return SuiteError("\n".join(lines), lines)


def _schema_error(path: Path, document: dict[str, Any], device: str, overrides: Sequence[str]) -> SuiteError | None:
    """What the schema stage finds wrong with loading for `device`: its settings with the overrides, then every
    other device's settings without them. None when nothing is wrong."""
    try:
        _validate(path, document, device, overrides)
    except SuiteError as exc:
        return exc
    for other in DEVICES:
        if other == device:
            continue
        try:
            _validate(path, document, other, ())
        except SuiteError as exc:
            return _noted(other, exc)
    return None


@dataclass(frozen=True)
class CheckedSuite:
    """A suite file that passed the schema stage (`check_suite`), read once: `load_suite` accepts it in place of
    a path and expands it without reading the file again."""

    path: Path
    document: dict[str, Any]


def check_suite(
    path: str | Path | CheckedSuite, *, device: str | None = None, overrides: Sequence[str] = ()
) -> CheckedSuite:
    """The schema stage of `load_suite`, which never imports torch: read the file (bounded, strict YAML), then
    validate keys, types, ranges, device sections, the number of cases and the shapes for `device` with the
    `--set` overrides and for the other device without them. With `device` None (not chosen yet) the suite
    fails here only when it would fail on every device; `load_suite` checks again once the device is known.
    Raises `SuiteError`."""
    if isinstance(path, CheckedSuite):
        path, document = path.path, path.document
    else:
        path = find_suite(path)
        document = None
    if device is not None and device not in DEVICES:
        raise SuiteError(f"{path}: device must be one of {', '.join(DEVICES)}; got {device!r}")
    if document is None:
        document = read_suite_file(path)
    errors = [_schema_error(path, document, each, overrides) for each in ([device] if device else DEVICES)]
    if all(errors):
        raise errors[0]
    return CheckedSuite(path, document)


def load_suite(
    path: str | Path | CheckedSuite,
    *,
    device: str | None = None,
    overrides: Sequence[str] = (),
    only: Sequence[str] = (),
    impls: Sequence[str] = (),
) -> Suite:
    """Read, validate and expand a suite for `device` ("cpu", "cuda"; None: cuda when available).

    `path` is a suite file, a bare suite name (`find_suite`) or what `check_suite` returned. `overrides` are
    `--set KEY=VALUE` strings (KEY a sweep axis or a dotted key; VALUE YAML, `a,b` a list), applied after the
    device section. `only` keeps mechanisms by `name` or `name:variant`, `impls` keeps implementations by name.
    Every section of `devices` is validated and expanded, whichever device is asked for, so a suite that loads
    on one machine loads on the other. The schema stage (`check_suite`) runs first, before torch is imported.
    Raises `SuiteError`.
    """
    checked = check_suite(path, device=device, overrides=overrides)
    if device is None:
        import torch  # only now: a malformed suite has failed without waiting for torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        checked = check_suite(checked, device=device, overrides=overrides)
    spec, ctx = _validate(checked.path, checked.document, device, overrides)
    cases = filter_cases(ctx, _expand(ctx, spec, device), only, impls)
    for other in DEVICES:
        if other != device:
            try:
                other_spec, other_ctx = _validate(checked.path, checked.document, other, ())
                _expand(other_ctx, other_spec, other)
            except SuiteError as exc:
                raise _noted(other, exc) from None
    return Suite(
        name=spec.name,
        path=checked.path,
        device=device,
        resolved=_resolved_dict(spec, list(spec.dtypes or [DEFAULT_DTYPES[device]])),
        timing=cases[0].timing,
        limits=cases[0].limits,
        cases=tuple(cases),
    )
