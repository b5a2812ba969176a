"""The shape of the code base, checked: sizes, one-way imports, mechanisms named only under `mechanisms/`, and no
reference to a file the repository does not hold.

These keep the layout easy to read as it grows: a new module that breaks a rule fails here with its name.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "attnbench"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def _tracked(*patterns: str) -> list[Path]:
    """Files git tracks (or would track: untracked and not ignored) matching `patterns`."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *patterns],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return sorted(ROOT / name for name in listed if (ROOT / name).is_file())


def _python_sources() -> list[Path]:
    return _tracked("attnbench/*.py", "examples/*.py", "tests/*.py")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_source_file_is_too_long():
    sizes = {path.relative_to(ROOT): len(path.read_text().splitlines()) for path in _python_sources()}
    long = [f"{path}: {lines} lines" for path, lines in sizes.items() if lines > MAX_FILE_LINES]
    assert not long, f"files over {MAX_FILE_LINES} lines (split them by what they do): {long}"


def test_no_function_is_too_long():
    long = []
    for path in _python_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def _imports(path: Path, package: str) -> set[str]:
    """The attnbench modules `path` imports, at module level and inside functions alike."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name == package or name.startswith(package + ".")}


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in _tracked("attnbench/*.py")}
    return {
        name: {m for m in _imports(path, "attnbench") if m in modules and m != name} for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (module -> modules it imports), or None. A package's `__init__` importing its
    own submodules is not a cycle by itself, so edges from a package to its children are kept as any other."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    graph = import_graph()
    importer = next(module for module, imported in graph.items() if imported)
    planted = {**graph, **{target: {importer} for target in graph[importer]}}
    assert find_cycle(planted) is not None


# Which stage may import which: dependencies point one way along the data path.
ALLOWED = {
    "mechanisms": {"mechanisms"},
    "suite": {"suite", "mechanisms", "results"},
    "results": {"results"},
    "measure": {"measure", "mechanisms", "suite", "results", "tasks"},
    "tasks": {"tasks", "mechanisms", "suite", "results"},
    "run": {"run", "suite", "mechanisms", "results", "measure", "gate"},
    "gate": {"gate", "results"},
    "analysis": {"analysis", "results", "mechanisms"},
    "plots": {"plots", "analysis", "results"},
    "report": {"report", "results", "analysis", "plots", "gate"},
}


def test_dependencies_point_one_way():
    wrong = []
    for module, imported in import_graph().items():
        stage = module.split(".")[1] if module.count(".") >= 1 else ""
        if stage not in ALLOWED:
            continue
        for target in imported:
            target_stage = target.split(".")[1] if target.count(".") >= 1 else ""
            if target_stage and target_stage not in ALLOWED[stage]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, wrong


def _code_words(path: Path) -> set[str]:
    """Identifiers and words of string literals in `path`, docstrings and comments left out (prose may name a
    mechanism as an example; code may not)."""
    source = path.read_text()
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(first.lineno)
    words = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NAME:
            words.add(token.string)
        elif token.type == tokenize.STRING and token.start[0] not in docstrings:
            words.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", token.string))
    return words


def mechanism_names() -> set[str]:
    """Every registered mechanism's name, and the softmax family's. Variant names (`full`, `local`) are plain
    words that code elsewhere may use; a variant is named together with its mechanism (`aft:full`) anyway."""
    from attnbench.mechanisms import registry

    return set(registry.mechanisms()) | {"softmax"}


def test_no_module_outside_mechanisms_names_a_mechanism():
    names = mechanism_names()
    found = []
    for path in _tracked("attnbench/*.py"):
        if path.is_relative_to(PACKAGE / "mechanisms"):
            continue
        named = sorted(_code_words(path) & names)
        if named:
            found.append(f"{path.relative_to(ROOT)}: {', '.join(named)}")
    assert not found, f"mechanisms named outside attnbench/mechanisms/: {found}"


OUTSIDE_FILES = re.compile(r"MECHANISMS\.md|ANCHORS\.md|STYLE\.md|\.\./shared\b")
LINK = re.compile(r"\]\((?!https?:|mailto:|#)([^)\s]+)\)")


@pytest.mark.parametrize("pattern", ["*.md", "*.py", "*.yaml", "*.yml", "*.toml", ".ci/*"])
def test_nothing_refers_to_a_file_outside_the_repository(pattern):
    found = []
    for path in _tracked(pattern):
        if path == Path(__file__).resolve():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE_FILES.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not found, found


def test_every_relative_link_in_the_docs_exists():
    broken = []
    for path in _tracked("*.md"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for target in LINK.findall(line):
                if not (path.parent / target.split("#", 1)[0]).exists():
                    broken.append(f"{path.relative_to(ROOT)}:{number}: {target}")
    assert not broken, broken
