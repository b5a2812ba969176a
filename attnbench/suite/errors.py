"""Suite errors that say what to edit: the file, the key path, the problem, the value and what is allowed.

Every problem with a suite is a `SuiteError` with lines of the form

    <file>: <key.path>: <problem>; got <value>; allowed: <...>

A value that came from a device section is reported at its path there (`devices.cpu.sweep.T`), one that came
from a `--set` names that override, and a scalar the schema read as a list of one is reported without the
`[0]` the user never wrote. Pydantic's validation errors are translated into the same form here.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ValidationError

from attnbench.suite.schema import SuiteSpec

NO_VALUE = object()  # an error without a `got` part (a missing key has no value to show)
Loc = tuple[Any, ...]  # a key path: mapping keys and list indices, from the top of the suite

# Pydantic's error types, in the words an error line uses.
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


class SuiteError(ValueError):
    """A suite that cannot be read, validated or expanded: one line per problem found (also in `errors`)."""

    def __init__(self, message: str, errors: Sequence[str] = ()):
        super().__init__(message)
        self.errors = tuple(errors) or (message,)


def format_path(loc: Loc) -> str:
    """`("mechanisms", 1, "params", "G")` → `mechanisms[1].params.G`."""
    text = ""
    for item in loc:
        text += f"[{item}]" if isinstance(item, int) else f".{item}" if text else str(item)
    return text


class ErrorContext:
    """Where values came from (the file, a device section, a --set), so an error points at what to edit.

    `document` is what the key paths are read against: the file as written while device sections are checked,
    then the merged suite once overrides apply. `origins` maps a key path to the device section (`devices.cpu`)
    or the `--set` text that last gave it a value.
    """

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
        """The key path as the user should look for it: under its device section, or naming its --set."""
        for depth in range(len(loc), 0, -1):
            origin = self.origins.get(loc[:depth])
            if origin is None:
                continue
            if origin.startswith("devices."):
                return f"{origin}.{format_path(loc)}"
            return f"{format_path(loc)} (from --set {origin})"
        return format_path(loc)

    def line(self, loc: Loc | str, problem: str, value: Any = NO_VALUE, allowed: Any = None) -> str:
        """One error line. `loc` is a key path, or a plain label such as `--set` for problems outside the file."""
        where = loc if isinstance(loc, str) else self.where(self.trim(loc))
        text = f"{self.file}: {where}: {problem}" if where else f"{self.file}: {problem}"
        if value is not NO_VALUE:
            text += f"; got {value!r}"
        if allowed is not None:
            if not isinstance(allowed, str):
                allowed = ", ".join(str(item) for item in allowed)
            text += f"; allowed: {allowed}"
        return text

    def error(self, loc: Loc | str, problem: str, value: Any = NO_VALUE, allowed: Any = None) -> SuiteError:
        """A `SuiteError` of one `line`, for the caller to raise."""
        return SuiteError(self.line(loc, problem, value, allowed))


def raise_all(lines: Sequence[str]) -> typing.NoReturn:
    """Raise one `SuiteError` listing every line, so a file with several mistakes is fixed in one go."""
    raise SuiteError("\n".join(lines), lines)


def validation_lines(ctx: ErrorContext, exc: ValidationError) -> list[str]:
    """Each problem pydantic found in the suite, as an error line offering what the schema allows there."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = ctx.trim(tuple(err["loc"]))
        kind = err["type"]
        problem = PROBLEMS.get(kind, err["msg"])
        if kind == "greater_than_equal":
            problem = f"must be >= {err['ctx']['ge']}"
        if kind == "too_short" and loc[:1] == ("sweep",):
            problem = "an empty sweep"
        value = NO_VALUE if kind == "missing" else _value_at(ctx.document, loc, err["input"])
        lines.append(ctx.line(loc, problem, value, _allowed(kind, loc, err)))
    return lines


def _allowed(kind: str, loc: Loc, err: Mapping[str, Any]) -> Any:
    """What the schema accepts at `loc`: the known keys for an unknown key, the choices for an unknown value,
    else the field's description."""
    if kind == "extra_forbidden":
        model, _ = _schema_at(loc[:-1])
        names = list(model.model_fields) if model else []
        return [*names, "devices"] if model is SuiteSpec else names  # `devices` is read before validation
    if kind == "literal_error":
        return err["ctx"]["expected"]
    _, field = _schema_at(loc)
    return field.description if field is not None else None


def _value_at(document: Any, loc: Loc, fallback: Any) -> Any:
    """The value at `loc` as the user wrote it (pydantic's copy may already be wrapped in a list)."""
    node = document
    for item in loc:
        listed = isinstance(node, list) and isinstance(item, int) and 0 <= item < len(node)
        found = item in node if isinstance(node, Mapping) else listed
        if not found:
            return fallback
        node = node[item]
    return node


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
