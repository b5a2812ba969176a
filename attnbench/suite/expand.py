"""A validated suite → the ordered list of `Case`s the runner measures.

For each mechanism entry, each combination of its parameters, each implementation, each shape of the sweep,
each `causal`, level, mode and dtype, one `Case`. Everything the schema cannot check on its own is checked
here, against the registry: the mechanism and implementation names, the parameters and their values, and
whether each shape is one the mechanism accepts. A shape it accepts but does not define (no causal form) and a
mode or dtype an implementation does not support become cases marked unsupported, not errors.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from attnbench.mechanisms import registry
from attnbench.mechanisms.problem import Level, Mode, Problem
from attnbench.suite.case import Case, Limits, TimingSettings
from attnbench.suite.errors import NO_VALUE, ErrorContext, Loc
from attnbench.suite.schema import DEFAULT_DTYPES, MechanismEntry, SuiteSpec
from attnbench.suite.shapes import Shape, sweep_shapes


def _mechanism(ctx: ErrorContext, index: int, entry: MechanismEntry) -> registry.Mechanism:
    """The registered mechanism an entry names."""
    registered = registry.mechanisms()
    if entry.name not in registered:
        raise ctx.error(("mechanisms", index, "name"), "unknown mechanism", entry.name, list(registered))
    return registered[entry.name]


def _entry_impls(
    ctx: ErrorContext, index: int, entry: MechanismEntry, spec: SuiteSpec, mechanism: registry.Mechanism
) -> list[registry.Impl]:
    """The entry's own implementations; else the suite's that the mechanism declares; else all it declares."""
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


def _check_suite_impls(ctx: ErrorContext, spec: SuiteSpec) -> None:
    """A suite-level implementation may be skipped by some mechanisms, but must belong to at least one."""
    known = sorted({impl.name for _, impl in registry.all_impls()})
    for position, name in enumerate(spec.impls or ()):
        if name not in known:
            raise ctx.error(("impls", position), "unknown implementation", name, known)


def _param_allowed(param: registry.Param) -> str:
    """What a parameter accepts, in the words of an error's `allowed`."""
    if param.choices is not None:
        return ", ".join(str(choice) for choice in param.choices)
    if param.default is None or isinstance(param.default, int):
        low = param.minimum if param.minimum is not None else -MAX_PARAM_INT
        optional = " or null" if param.default is None else ""
        return f"an integer from {low} to {MAX_PARAM_INT}{optional} ({param.doc})"
    return param.doc


MAX_PARAM_INT = 2**31 - 1  # a parameter is a size, a count or a base: past this no tensor could use it


def _check_bounded(value: Any) -> None:
    """A parameter value the mechanism accepted but no case could run with: a huge integer, an infinite or
    undefined number. Raises ValueError (its message is the problem)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_PARAM_INT:
        raise ValueError(f"out of range (at most {MAX_PARAM_INT} in size)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("not a finite number")


def _param_sets(
    ctx: ErrorContext, index: int, entry: MechanismEntry, mechanism: registry.Mechanism
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
                _check_bounded(value)
            except ValueError as exc:
                problem = re.sub(r", got .*$", "", str(exc))  # the value follows as `got`
                raise ctx.error(loc, problem, value, _param_allowed(declared[name])) from None
        swept[name] = values
    return [dict(zip(swept, combination, strict=True)) for combination in itertools.product(*swept.values())]


@dataclass(frozen=True)
class _Point:
    """Where in the suite a problem is built: the entry, its mechanism and parameters, shape, causal, level."""

    index: int
    mechanism: registry.Mechanism
    params: dict[str, Any]
    shape: Shape
    causal: bool
    level: str

    def build(self, params: Mapping[str, Any]) -> Problem:
        """The mechanism's problem at this point with `params` (raises what `Mechanism.problem` raises)."""
        return self.mechanism.problem(**self.shape.dims(), causal=self.causal, level=self.level, **params)


def _problem(ctx: ErrorContext, point: _Point) -> tuple[Problem, str | None]:
    """The checked problem, and why the mechanism does not define it (None when it does)."""
    mechanism, shape = point.mechanism, point.shape
    try:
        return point.build(point.params), None
    except registry.Unsupported as exc:
        resolved = {
            name: param.check(mechanism.name, name, point.params.get(name, param.default))
            for name, param in mechanism.params.items()
        }
        problem = Problem(
            mechanism.name, shape.B, shape.T, shape.H, shape.d, point.causal, Level(point.level), resolved
        )
        return problem, str(exc)
    except ValueError as exc:
        loc, value = _blame(point, str(exc))
        at = " ".join(f"{axis}={size}" for axis, size in shape.dims().items())
        at += f" causal={point.causal} level={point.level}"
        if loc[2:3] == ("params",):
            allowed = _param_allowed(mechanism.params[loc[3]]) + " that holds at every shape of the sweep"
        else:
            allowed = f"values for which {mechanism.name}'s condition above holds (or split the entry)"
        raise ctx.error(loc, f"impossible shape at {at}: {exc}", value, allowed) from None


def _blame(point: _Point, message: str) -> tuple[Loc, Any]:
    """The suite key to point at for a shape the mechanism rejects: a parameter the entry sets whose default
    makes the shape valid (those the mechanism's message names first), else the sweep axis it names first."""

    def mentioned(name: str) -> float:
        found = re.search(rf"\b{re.escape(name)}\b", message)
        return found.start() if found else float("inf")

    for name in sorted(point.params, key=mentioned):
        others = {key: other for key, other in point.params.items() if key != name}
        try:
            point.build(others)
        except registry.Unsupported:
            pass  # valid, merely undefined: the parameter was what made the shape impossible
        except ValueError:
            continue
        return ("mechanisms", point.index, "params", name), point.params[name]
    named = [(match.start(), match.group()) for match in re.finditer(r"\b[BTHd]\b", message)]
    if named:
        return point.shape.source[min(named)[1]]
    return ("mechanisms", point.index), point.mechanism.name


def case_seed(problem: Problem, dtype: str) -> int:
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


def expand_cases(ctx: ErrorContext, spec: SuiteSpec, device: str) -> list[Case]:
    """Every case of the suite, ordered mechanism entry, params, impl, level, mode, dtype, causal, shape."""
    _check_suite_impls(ctx, spec)
    shapes = sweep_shapes(spec, ctx)
    timing = TimingSettings(**spec.timing.model_dump())
    limits = Limits(**spec.limits.model_dump())
    dtypes = spec.dtypes or [DEFAULT_DTYPES[device]]
    keyed: list[tuple[tuple, Case]] = []
    seen: set[str] = set()
    # Each mode, and a decode mode once per number of new tokens its step takes.
    modes = [(m, Mode(mode), q) for m, mode in enumerate(spec.modes) for q in _q_lens(spec, Mode(mode))]
    for index, entry in enumerate(spec.mechanisms):
        mechanism = _mechanism(ctx, index, entry)
        impls = _entry_impls(ctx, index, entry, spec, mechanism)
        for p_index, params in enumerate(_param_sets(ctx, index, entry, mechanism)):
            for shape, (c_index, causal), (l_index, level) in itertools.product(
                shapes, enumerate(spec.causal), enumerate(spec.levels)
            ):
                problem, reason = _problem(ctx, _Point(index, mechanism, params, shape, causal, level))
                for (i_index, impl), (m_index, mode, q_len), (t_index, dtype) in itertools.product(
                    enumerate(impls), modes, enumerate(dtypes)
                ):
                    why = reason or impl.unsupported_reason(problem, mode, dtype)
                    seed = case_seed(problem, dtype)
                    case = Case(problem, impl.name, mode, dtype, timing, limits, seed, why, q_len=q_len)
                    if case.case_id in seen:
                        problem_text = f"repeats the case {case.describe()} (a value repeats, or entries overlap)"
                        raise ctx.error(("mechanisms", index), problem_text, NO_VALUE, None)
                    seen.add(case.case_id)
                    order = (index, p_index, i_index, l_index, m_index, q_len or 0, t_index, c_index)
                    keyed.append(((*order, shape.T, shape.B, shape.H, shape.d), case))
    keyed.sort(key=lambda item: item[0])
    return [case for _, case in keyed]


def _q_lens(spec: SuiteSpec, mode: Mode) -> list[int | None]:
    """The new tokens per step a decode mode is measured with (the suite's `q_len`); one None for other modes."""
    return list(spec.q_len) if mode is Mode.DECODE else [None]
