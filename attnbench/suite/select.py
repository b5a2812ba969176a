"""`--only` and `--impl`: which of a suite's cases a run keeps.

`--only` names a mechanism as `NAME`, `NAME:VARIANT`, or either followed by `[PARAM=VALUE,...]`, the form cases are
described in (`tpa[R_k=2,R_v=2]`, `aft:local[window=64]`): a case is kept when its name (or name and variant)
matches and it has each given parameter at the given value. The bracket is what tells apart two entries of one
mechanism that differ in a parameter other than the variant, such as TPA's ranks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from attnbench.mechanisms import registry
from attnbench.suite.case import Case
from attnbench.suite.errors import ErrorContext

ONLY_PATTERN = re.compile(r"^(?P<label>[^\[\]]+?)(?:\[(?P<params>[^\[\]]*)\])?$")


def parse_value(text: str) -> Any:
    """A parameter value as written in `--only`: an integer, a float, true/false, null/None, or text."""
    lowered = text.lower()
    if lowered in ("null", "none"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_only(ctx: ErrorContext, text: str) -> tuple[str, dict[str, Any]]:
    """`NAME[:VARIANT][[PARAM=VALUE,...]]` -> (the label, the parameters it pins)."""
    match = ONLY_PATTERN.match(text.strip())
    if not match:
        raise ctx.error("--only", "is not NAME, NAME:VARIANT or either with [PARAM=VALUE,...]", text)
    pinned: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in (match["params"] or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ctx.error("--only", f"a bracket holds PARAM=VALUE pairs, not {item!r}", text)
        pinned[key.strip()] = parse_value(value.strip())
    return match["label"].strip(), pinned


def _labels(case: Case) -> tuple[str, str]:
    """The names `--only` matches a case by: its mechanism, and `mechanism:variant` (the name alone when the
    mechanism has no variants)."""
    mechanism = registry.get(case.problem.mechanism)
    variant = mechanism.variant(case.problem)
    return case.problem.mechanism, f"{case.problem.mechanism}:{variant}" if variant else case.problem.mechanism


def _same(have: Any, want: Any) -> bool:
    """A case's parameter against a pinned value (numbers compare by value: 64 pins 64.0)."""
    if isinstance(have, bool) or isinstance(want, bool) or have is None or want is None:
        return have is want
    return have == want


def _matches(ctx: ErrorContext, case: Case, label: str, pinned: dict[str, Any], text: str) -> bool:
    """Whether `case` is one `--only text` keeps; an unknown parameter of a matching mechanism is an error."""
    if label not in _labels(case):
        return False
    params = case.problem.params
    unknown = sorted(set(pinned) - set(params))
    if unknown:
        problem = f"{case.problem.mechanism} has no parameter {', '.join(unknown)}"
        raise ctx.error("--only", problem, text, sorted(params))
    return all(_same(params[key], value) for key, value in pinned.items())


def filter_cases(ctx: ErrorContext, cases: list[Case], only: Sequence[str], impls: Sequence[str]) -> list[Case]:
    """The cases `--only` (mechanisms) and `--impl` (implementations) keep; a filter matching nothing is an
    error listing what the suite has."""
    if only:
        wanted = [(text, *parse_only(ctx, text)) for text in only]
        existing = sorted({name for case in cases for name in _labels(case)})
        for text, label, pinned in wanted:
            if not any(_matches(ctx, case, label, pinned, text) for case in cases):
                raise ctx.error("--only", "matches no mechanism of this suite", text, existing)
        cases = [case for case in cases if any(_matches(ctx, case, *rest, text) for text, *rest in wanted)]
    if impls:
        existing = sorted({case.impl for case in cases})
        for name in impls:
            if name not in existing:
                raise ctx.error("--impl", "matches no implementation of this suite", name, existing)
        cases = [case for case in cases if case.impl in impls]
    if not cases:
        raise ctx.error("", "expands to zero cases", {"only": list(only), "impls": list(impls)})
    return cases
