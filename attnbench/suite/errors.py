"""Suite errors that say what to edit: the file, the key path, the problem, the value and what is allowed.

Every problem with a suite is a `SuiteError` with lines of the form

    <file>: <key.path>: <problem>; got <value>; allowed: <...>

A value that came from a device section is reported at its path there (`devices.cpu.sweep.T`), one that came
from a `--set` names that override, and a scalar the schema read as a list of one is reported without the
`[0]` the user never wrote. Pydantic's validation errors are translated into the same form here.

Whatever the file holds, a message stays short: values and keys are shortened (`shorten`), and a suite with
hundreds of mistakes reports the first `MAX_LINES` of them and how many more there are.
"""

from __future__ import annotations

import reprlib
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ValidationError

from attnbench.suite.schema import SuiteSpec

NO_VALUE = object()  # an error without a `got` part (a missing key has no value to show)
Loc = tuple[Any, ...]  # a key path: mapping keys and list indices, from the top of the suite
MAX_LINES = 20  # error lines a message shows; `SuiteError.errors` keeps them all

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
    "string_too_long": "too long",
    "finite_number": "not a finite number",
}
# Pydantic's range errors: the context key holding the bound, and how the line states it.
BOUNDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"), "less_than_equal": ("le", "<=")}


class _ShortRepr(reprlib.Repr):
    """`repr` cut to a readable length at every level: a 50 MB string or a list of a million items shows its
    start, never its whole self, and building the text never costs more than the part shown."""

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = 60
        self.maxother = 60
        self.maxlong = 40
        self.maxlist = self.maxtuple = self.maxset = self.maxdict = 8
        self.maxlevel = 2

    def repr_int(self, value: int, level: int) -> str:
        if value.bit_length() > 4 * self.maxlong:  # Python refuses str() of ints past 4300 digits
            return f"<an integer of {value.bit_length()} bits>"
        return super().repr_int(value, level)


_SHORT = _ShortRepr()


SHORT_LENGTH = 160  # the most characters of a value an error line shows


def shorten(value: Any) -> str:
    """`repr(value)`, shortened (`'aaaa...aaaa'`, `[1, 2, 3, ...]`) so that any value fits an error line."""
    text = _SHORT.repr(value)
    return text if len(text) <= SHORT_LENGTH else text[: SHORT_LENGTH - 3] + "..."


class SuiteError(ValueError):
    """A suite that cannot be read, validated or expanded: one line per problem found (also in `errors`)."""

    def __init__(self, message: str, errors: Sequence[str] = ()):
        super().__init__(message)
        self.errors = tuple(errors) or (message,)


def format_path(loc: Loc) -> str:
    """`("mechanisms", 1, "params", "G")` → `mechanisms[1].params.G`; a key too long to read is shortened."""
    text = ""
    for item in loc:
        name = item if isinstance(item, str) and len(item) <= 40 else shorten(item)
        text += f"[{item}]" if isinstance(item, int) and not isinstance(item, bool) else f".{name}" if text else name
    return text


def error_line(file: str, where: str, problem: str, value: Any = NO_VALUE, allowed: Any = None) -> str:
    """`<file>: <where>: <problem>; got <value>; allowed: <allowed>`, leaving out the parts not given."""
    text = f"{file}: {where}: {problem}" if where else f"{file}: {problem}"
    if value is not NO_VALUE:
        text += f"; got {shorten(value)}"
    if allowed is not None:
        if not isinstance(allowed, str):
            allowed = ", ".join(str(item) for item in allowed)
        text += f"; allowed: {allowed}"
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
        return error_line(self.file, where, problem, value, allowed)

    def error(self, loc: Loc | str, problem: str, value: Any = NO_VALUE, allowed: Any = None) -> SuiteError:
        """A `SuiteError` of one `line`, for the caller to raise."""
        return SuiteError(self.line(loc, problem, value, allowed))


def raise_all(lines: Sequence[str]) -> typing.NoReturn:
    """Raise one `SuiteError` listing every line, so a file with several mistakes is fixed in one go (the
    message shows the first `MAX_LINES` and counts the rest; `errors` holds them all)."""
    shown = list(lines[:MAX_LINES])
    if len(lines) > MAX_LINES:
        shown.append(f"... and {len(lines) - MAX_LINES} more problems")
    raise SuiteError("\n".join(shown), lines)


def validation_lines(ctx: ErrorContext, exc: ValidationError) -> list[str]:
    """Each problem pydantic found in the suite, as an error line offering what the schema allows there."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        problem = PROBLEMS.get(kind, err["msg"])
        if kind in BOUNDS:
            name, relation = BOUNDS[kind]
            problem = f"must be {relation} {format_number(err['ctx'][name])}"
        if kind == "too_short" and loc[:1] == ("sweep",):
            problem = "an empty sweep"
        if loc[-1:] == ("[key]",):  # pydantic's marker for a mapping key of the wrong type: show the key
            loc = ctx.trim(loc[:-1])
            lines.append(ctx.line(loc, "a key that is not a string", err["input"], "keys are names (strings)"))
            continue
        loc = ctx.trim(loc)
        value = NO_VALUE if kind == "missing" else _value_at(ctx.document, loc, err["input"])
        lines.append(ctx.line(loc, problem, value, _allowed(kind, loc, err)))
    return lines


def format_number(number: float) -> str:
    """`300.0` → `300`, `0.5` → `0.5`: a bound as the user would write it."""
    return str(int(number)) if isinstance(number, float) and number.is_integer() else str(number)


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
    return _description(field) if field is not None else None


def _description(field: Any) -> str | None:
    """A field's description, or that of the annotated type inside it (`_listed(...) | None` keeps it there)."""
    if getattr(field, "description", None):
        return field.description
    for arg in typing.get_args(getattr(field, "annotation", field)):
        for meta in getattr(arg, "__metadata__", ()):
            if getattr(meta, "description", None):
                return meta.description
        found = _description(arg) if typing.get_args(arg) else None
        if found:
            return found
    return None


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
