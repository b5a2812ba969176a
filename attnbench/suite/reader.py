"""Reading a suite file: bounded, strict YAML, whatever the file holds.

A suite is a small text file, so anything else is refused with a message naming the file before it can cost
time or memory: a file over `MAX_SUITE_BYTES`, binary or non-UTF-8 data, YAML whose aliases expand past
`MAX_NODES` values (the "billion laughs"), that refers to itself or nests past `MAX_DEPTH` levels, a key given
twice in one mapping (both lines named; YAML would otherwise keep the last silently), and any tag beyond plain
strings, numbers, booleans, null, lists and mappings. Loading is safe loading only: no tag constructs a Python
object. libyaml parses when PyYAML has it (a 1 MiB file in well under a second), else PyYAML's own parser.

The bounds are checked on the parser's events, before any node is built (`_Bounds`): a bomb or a file of a
million values is refused after reading as many events as the bound allows, so it costs no more than a valid
suite of that size. Keys are checked on the nodes, which are then bounded, before the values are built.
"""

from __future__ import annotations

import codecs
import os
import stat
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from attnbench.suite.errors import NO_VALUE, Loc, SuiteError, error_line, format_path

MAX_SUITE_BYTES = 1 << 20  # 1 MiB: the shipped suites are 1-3 KiB
MAX_NODES = 50_000  # values in the document once every alias is expanded (a suite needs a few hundred)
MAX_DEPTH = 32  # levels of nesting (a suite needs 5)

_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = f"{_TAG}merge"
_MAPPING_TEXT = "a YAML mapping of keys (name, mechanisms, sweep, ...)"


class _SuiteLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """PyYAML's safe loader with dates read as plain strings, numbers that cannot be read reported at their
    line, and the other tags (binary, timestamp, set, omap, pairs) refused rather than built."""

    yaml_implicit_resolvers: ClassVar[dict[str, list]] = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag != f"{_TAG}timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def _number(self, node: Node, construct) -> Any:
        """`construct(self, node)`, a number that Python cannot read (`!!int many`, 5000 digits) reported at its
        line as YAML errors are."""
        try:
            return construct(self, node)
        except (ValueError, OverflowError) as exc:
            value = str(node.value)
            too_long = f"{len(value)} characters, too long to be a number"
            problem = f"not a readable number ({exc if len(value) <= 100 else too_long})"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None

    def construct_suite_int(self, node: Node) -> int:
        return self._number(node, yaml.constructor.SafeConstructor.construct_yaml_int)

    def construct_suite_float(self, node: Node) -> float:
        return self._number(node, yaml.constructor.SafeConstructor.construct_yaml_float)

    def construct_suite_bool(self, node: Node) -> bool:
        """true/false, yes/no, on/off; anything else given the `!!bool` tag is an error at its line."""
        value = self.construct_scalar(node)
        if not isinstance(value, str) or value.lower() not in self.bool_values:
            raise yaml.constructor.ConstructorError(None, None, f"not true or false: {value!r:.40}", node.start_mark)
        return self.bool_values[value.lower()]

    def refuse_tag(self, node: Node) -> Any:
        """The constructor of every tag a suite has no use for."""
        problem = f"the tag {node.tag} is not allowed (a suite holds strings, numbers, true/false, lists, mappings)"
        raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark)


_SuiteLoader.add_constructor(f"{_TAG}int", _SuiteLoader.construct_suite_int)
_SuiteLoader.add_constructor(f"{_TAG}float", _SuiteLoader.construct_suite_float)
_SuiteLoader.add_constructor(f"{_TAG}bool", _SuiteLoader.construct_suite_bool)
for _name in ("binary", "timestamp", "set", "omap", "pairs"):
    _SuiteLoader.add_constructor(f"{_TAG}{_name}", _SuiteLoader.refuse_tag)


def read_suite_file(path: Path) -> dict[str, Any]:
    """The suite file `path` as a mapping, or a `SuiteError` naming the file (and the key, when there is one)."""
    text = _decode(path, _read_bytes(path))
    document = parse_yaml(text, str(path))
    if document is None:
        raise SuiteError(error_line(str(path), "", "the file holds no YAML document", NO_VALUE, _MAPPING_TEXT))
    if not isinstance(document, dict):
        raise SuiteError(error_line(str(path), "", "a suite is a mapping of keys", document, _MAPPING_TEXT))
    return document


def _read_bytes(path: Path) -> bytes:
    """At most `MAX_SUITE_BYTES` of the file (one more, to tell that it is longer)."""
    file = str(path)
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if stat.S_ISREG(info.st_mode) and info.st_size > MAX_SUITE_BYTES:
                data_size = f"{info.st_size} bytes"
            else:
                data = handle.read(MAX_SUITE_BYTES + 1)
                if len(data) <= MAX_SUITE_BYTES:
                    return data
                data_size = f"more than {MAX_SUITE_BYTES} bytes"
    except FileNotFoundError:
        hint = "" if Path(file).suffix else " (a bare name NAME is looked up as suites/NAME.yaml)"
        raise SuiteError(error_line(file, "", "no such suite file" + hint)) from None
    except IsADirectoryError:
        raise SuiteError(error_line(file, "", "a folder, not a suite file", NO_VALUE, "a YAML file")) from None
    except OSError as exc:
        raise SuiteError(error_line(file, "", f"cannot read the suite ({exc.strerror or exc})")) from None
    allowed = f"a suite file of at most {MAX_SUITE_BYTES} bytes (1 MiB)"
    raise SuiteError(error_line(file, "", f"the file is too large ({data_size})", NO_VALUE, allowed))


def _decode(path: Path, data: bytes) -> str:
    """The bytes as UTF-8 text (a byte-order mark allowed); binary or other encodings are refused."""
    if not data.strip():
        raise SuiteError(error_line(str(path), "", "the file is empty", NO_VALUE, _MAPPING_TEXT))
    if b"\0" in data:
        where = data.index(b"\0")
        problem = f"binary data or UTF-16/32 text (a NUL byte at offset {where}), not UTF-8 YAML text"
        raise SuiteError(error_line(str(path), "", problem, NO_VALUE, "UTF-8 YAML text"))
    try:
        return data.decode("utf-8-sig" if data.startswith(codecs.BOM_UTF8) else "utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problem = f"not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}, offset {exc.start})"
        raise SuiteError(error_line(str(path), "", problem, NO_VALUE, "UTF-8 YAML text")) from None


def parse_yaml(text: str, file: str) -> Any:
    """The YAML document of `text` (None when there is none), checked node by node before any value is built
    from it; any problem is a `SuiteError` whose lines start with `file`, the name of where the text is from."""
    loader = _SuiteLoader(text)
    try:
        _check_bounds(file, text)
        node = loader.get_single_node()
        if node is None:
            return None
        _check_keys(file, loader, node)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise SuiteError(_yaml_error_line(file, exc)) from None
    except SuiteError:
        raise
    except (ArithmeticError, LookupError, TypeError, ValueError) as exc:  # a constructor's own failure
        problem = f"invalid YAML: cannot build a value ({type(exc).__name__}: {str(exc)[:200]})"
        raise SuiteError(error_line(file, "", problem)) from None
    except RecursionError:  # PyYAML's own parser recurses per level; libyaml stops at 1000 levels itself
        problem = f"nested too deeply to read (more than {MAX_DEPTH} levels)"
        raise SuiteError(error_line(file, "", problem, NO_VALUE, f"at most {MAX_DEPTH} levels")) from None
    finally:
        loader.dispose()


def _yaml_error_line(file: str, exc: yaml.YAMLError) -> str:
    """`suite.yaml: line 3, column 7: invalid YAML: found unexpected ':' (while scanning a plain scalar)`."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    text = f"{file}: {where}invalid YAML: {problem}" + (f" ({context})" if context else "")
    return text if len(text) <= 500 else text[:497] + "..."


class _Bounds:
    """The event-by-event check of a document's size, depth and aliases, made before any node is built: the
    values counted as if every alias were expanded (an alias adds the size of what it names, so a bomb is caught
    after a few hundred bytes, at the cost of its size on disk), the open collections, and the top-level key
    being read (to name it in a message)."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.total = 0  # values so far, aliases expanded
        self.open: list[list] = []  # [anchor, size so far] of each collection being read, outermost first
        self.anchored: dict[str, int] = {}  # the size of each finished anchored value
        self.top_children = 0  # values read directly under the top-level mapping (keys and values)
        self.top_key: Any = None
        self.top_is_mapping = False

    def fail(self, problem: str, allowed: str) -> NoReturn:
        where = format_path((self.top_key,)) if self.top_key is not None else ""
        raise SuiteError(error_line(self.file, where, problem, NO_VALUE, allowed))

    def add(self, event: yaml.Event, size: int) -> None:
        """A value of `size` values read (a scalar, an alias, a finished collection) where the reader is."""
        if self.open:
            self.open[-1][1] += size
        if len(self.open) == 1 and self.top_is_mapping:
            self.top_children += 1
            if isinstance(event, yaml.ScalarEvent) and self.top_children % 2:
                self.top_key = event.value  # a key of the top-level mapping (odd positions)
        if self.total > MAX_NODES:
            self.fail(f"more than {MAX_NODES} values once aliases are expanded", f"at most {MAX_NODES} values")

    def read(self, event: yaml.Event) -> None:
        """Account for one parser event; `fail` as soon as a bound is passed."""
        anchor = getattr(event, "anchor", None)
        if isinstance(event, yaml.AliasEvent):
            if anchor in (entry[0] for entry in self.open):
                line = event.start_mark.line + 1
                problem = f"an alias inside the value it names at line {line} (a structure containing itself)"
                self.fail(problem, "aliases of values defined before them")
            size = self.anchored.get(anchor, 1)  # an undefined alias is the composer's error to report
            self.total += size
            self.add(event, size)
        elif isinstance(event, yaml.ScalarEvent):
            self.total += 1
            if anchor is not None:
                self.anchored[anchor] = 1
            self.add(event, 1)
        elif isinstance(event, yaml.CollectionStartEvent):
            self.total += 1
            self.top_is_mapping = self.top_is_mapping or (not self.open and isinstance(event, yaml.MappingStartEvent))
            self.open.append([anchor, 1])
            if len(self.open) > MAX_DEPTH:
                self.fail(f"nested more than {MAX_DEPTH} levels deep", f"at most {MAX_DEPTH} levels of nesting")
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, size = self.open.pop()
            if anchor is not None:
                self.anchored[anchor] = size
            self.add(event, size)


def _check_bounds(file: str, text: str) -> None:
    """Read the document's events once and refuse it, naming the top-level key, past `MAX_NODES` values (aliases
    expanded) or `MAX_DEPTH` levels, or with an alias inside what it names."""
    bounds = _Bounds(file)
    loader = _SuiteLoader(text)
    try:
        while loader.check_event():
            bounds.read(loader.get_event())
    finally:
        loader.dispose()


def _key_text(node: Node) -> Any:
    return node.value if isinstance(node, ScalarNode) else f"<a {node.id} as a key>"


def _check_keys(file: str, loader: _SuiteLoader, root: Node) -> None:
    """Every key is a string (a name), and no mapping names one twice (`<<` merges may repeat keys: overriding
    them is what they are for). Walks the document as the tree it expands to, which `_check_graph` bounded."""
    stack: list[tuple[Node, Loc]] = [(root, ())]
    while stack:
        node, loc = stack.pop()
        if isinstance(node, SequenceNode):
            stack.extend((child, (*loc, index)) for index, child in enumerate(node.value))
        if not isinstance(node, MappingNode):
            continue
        first_seen: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                stack.append((value_node, loc))
                continue
            key = loader.construct_object(key_node) if isinstance(key_node, ScalarNode) else _key_text(key_node)
            mark = key_node.start_mark
            if not isinstance(key, str) or not isinstance(key_node, ScalarNode):
                problem = f"a key that is not a string at line {mark.line + 1}"
                allowed = "names; quote a key that YAML would read as a number, true/false or null"
                raise SuiteError(error_line(file, format_path(loc), problem, key, allowed))
            if key in first_seen:
                first = first_seen[key]
                at = (
                    f"line {mark.line + 1}"
                    if first.line != mark.line
                    else f"line {mark.line + 1}, column {mark.column + 1}"
                )
                first_at = f"line {first.line + 1}" if first.line != mark.line else f"column {first.column + 1}"
                problem = f"duplicate key at {at} (first given at {first_at})"
                raise SuiteError(error_line(file, format_path((*loc, key)), problem, NO_VALUE, "each key once"))
            first_seen[key] = mark
            stack.append((value_node, (*loc, key)))
