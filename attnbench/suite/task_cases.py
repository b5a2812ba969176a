"""A task suite → its cases: one per mechanism entry, parameter set, implementation, cell, seed and dtype.

A task case is a `Case` whose `task` is a `TaskCell`: its problem is the mechanism's layer at the cell's shape
(B = batch, T = seq_len, H = heads, d = d_model/heads), always causal (the model predicts the next token, so
its mixer must not see ahead), in mode `fwd_bwd` (training). A mechanism without a causal form is recorded
`unsupported` with the reason, as is a dtype training cannot use. The implementation is the entry's, else the
first of the suite's `impls` the mechanism declares, else the mechanism's first (its eager reference).

`check_task` runs in the schema stage (no torch): what pydantic cannot check field by field, each error naming
the cell's key.
"""

from __future__ import annotations

from attnbench.mechanisms import registry
from attnbench.mechanisms.problem import Level, Mode, Problem
from attnbench.suite.case import Case, Limits, TimingSettings
from attnbench.suite.errors import NO_VALUE, ErrorContext
from attnbench.suite.expand import _check_suite_impls, _entry_impls, _mechanism, _param_sets
from attnbench.suite.schema import DEFAULT_DTYPES, MechanismEntry, SuiteSpec
from attnbench.suite.task import TaskCell, cell_points, task_cells

MAX_TASK_CASES = 10_000  # every case trains a model: far past what anyone would queue
# Dtypes a task trains in: parameters in fp64 or fp32 (tf32: fp32 with TF32 matmuls), or fp32 parameters under
# bf16 autocast. fp16 would need loss scaling, which the training loop does not do.
TRAINABLE_DTYPES = ("fp64", "fp32", "tf32", "bf16")


def check_task(ctx: ErrorContext, spec: SuiteSpec) -> None:
    """The cross-key rules of each cell (seq_len ≥ 4·kv_pairs, vocab ≥ 2·(kv_pairs + 1), heads divide d_model,
    eval_every ≤ steps) and the number of cases, checked for every combination a cell sweeps."""
    task = spec.task
    for index, point in cell_points(task):
        at = ("task", "cells", index)
        kv = point["kv_pairs"]
        if point["seq_len"] < 4 * kv:
            problem = f"too short for kv_pairs={kv}: the pairs and one query slot per key need 4·kv_pairs tokens"
            raise ctx.error((*at, "seq_len"), problem, point["seq_len"], f"an integer from {4 * kv}")
        if point["vocab"] < 2 * (kv + 1):
            problem = f"too small for kv_pairs={kv} distinct keys and values"
            raise ctx.error((*at, "vocab"), problem, point["vocab"], f"an integer from {2 * (kv + 1)}")
        if point["d_model"] % point["heads"]:
            problem = f"not divisible by heads={point['heads']} (d = d_model / heads)"
            raise ctx.error((*at, "d_model"), problem, point["d_model"], "multiples of every heads of the cell")
        if point["eval_every"] > point["steps"]:
            problem = f"more than steps={point['steps']}: nothing would be evaluated during training"
            raise ctx.error((*at, "eval_every"), problem, point["eval_every"], f"an integer from 1 to {point['steps']}")
    settings = sum(len(entry.impls or [None]) for entry in spec.mechanisms)
    total = len(cell_points(task)) * len(task.seeds) * len(spec.dtypes or [None]) * settings
    if total > MAX_TASK_CASES:
        problem = f"expands to {total} task cases"
        raise ctx.error("", problem, NO_VALUE, f"at most {MAX_TASK_CASES} (each trains a model; split the suite)")


def _entries(spec: SuiteSpec) -> list[MechanismEntry]:
    """The suite's entries, then (with `include_unlisted`) one default entry per registered mechanism it does
    not name."""
    entries = list(spec.mechanisms)
    if spec.task.include_unlisted:
        named = {entry.name for entry in entries}
        entries += [MechanismEntry(name=name) for name in registry.mechanisms() if name not in named]
    return entries


def _problem(mechanism: registry.Mechanism, cell: TaskCell, params: dict, listed: bool) -> tuple[Problem, str | None]:
    """The layer problem a cell trains, and why the mechanism does not define it (None when it does). A shape
    the mechanism rejects raises ValueError for an entry the suite lists; for one `include_unlisted` added, in
    its default form, it is that case's reason instead (the suite never asked for that form)."""
    shape = dict(B=cell.batch, T=cell.seq_len, H=cell.heads, d=cell.d_model // cell.heads)
    try:
        return mechanism.problem(**shape, causal=True, level=Level.LAYER, **params), None
    except ValueError as exc:
        if listed and not isinstance(exc, registry.Unsupported):
            raise
        resolved = {name: params.get(name, param.default) for name, param in mechanism.params.items()}
        reason = str(exc) if isinstance(exc, registry.Unsupported) else f"its default form does not fit: {exc}"
        return Problem(mechanism.name, causal=True, level=Level.LAYER, params=resolved, **shape), reason


def _impls(ctx: ErrorContext, index: int, entry: MechanismEntry, spec: SuiteSpec) -> list[registry.Impl]:
    """The implementations an entry trains with: its own `impls`; else the first of the suite's that its
    mechanism declares; else the mechanism's first (the eager reference). An entry `include_unlisted` added
    (index past the suite's own) is never an error: it falls back to the mechanism's first."""
    listed = index < len(spec.mechanisms)
    mechanism = _mechanism(ctx, index, entry) if listed else registry.get(entry.name)
    if entry.impls is not None:
        return _entry_impls(ctx, index, entry, spec, mechanism)
    declared = [mechanism.impl(name) for name in spec.impls or () if name in mechanism.impl_names]
    if listed and spec.impls and not declared:
        return _entry_impls(ctx, index, entry, spec, mechanism)  # raises: it declares none of them
    return declared[:1] or [mechanism.impls[0]]


def expand_task_cases(ctx: ErrorContext, spec: SuiteSpec, device: str) -> list[Case]:
    """Every case of a task suite, ordered mechanism entry, parameters, implementation, cell, seed, dtype; the
    mechanism names, implementations and parameters checked as for a sweep (`attnbench.suite.expand`)."""
    _check_suite_impls(ctx, spec)
    limits = Limits(**spec.limits.model_dump())
    timing = TimingSettings(**spec.timing.model_dump())
    dtypes = spec.dtypes or [DEFAULT_DTYPES[device]]
    cells = task_cells(spec.task)
    cases: list[Case] = []
    for index, entry in enumerate(_entries(spec)):
        mechanism = registry.get(entry.name) if index >= len(spec.mechanisms) else _mechanism(ctx, index, entry)
        for params in _param_sets(ctx, index, entry, mechanism):
            for impl in _impls(ctx, index, entry, spec):
                for (cell_index, cell), dtype in ((pair, dtype) for pair in cells for dtype in dtypes):
                    try:
                        problem, reason = _problem(mechanism, cell, params, index < len(spec.mechanisms))
                    except ValueError as exc:
                        at = f"task.cells[{cell_index}] with mechanisms[{index}] ({mechanism.name}): {exc}"
                        raise ctx.error(("mechanisms", index), f"impossible shape at {at}", NO_VALUE, None) from None
                    why = reason or impl.unsupported_reason(problem, Mode.FWD_BWD, dtype)
                    if why is None and dtype not in TRAINABLE_DTYPES:
                        why = f"a task trains in {', '.join(TRAINABLE_DTYPES)}, not {dtype} (no loss scaling)"
                    cases.append(
                        Case(problem, impl.name, Mode.FWD_BWD, dtype, timing, limits, cell.seed, why, task=cell)
                    )
    seen: set[str] = set()
    for case in cases:
        if case.case_id in seen:
            raise ctx.error("mechanisms", f"repeats the task case {case.describe()}", NO_VALUE, None)
        seen.add(case.case_id)
    return cases
