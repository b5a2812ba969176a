"""Where out-of-tree mechanisms come from: installed packages, and modules named in `ATTNBENCH_MECHANISMS`.

An installed package registers mechanisms by declaring an entry point in the `attnbench.mechanisms` group of its
`pyproject.toml`, whose value names a module:

    [project.entry-points."attnbench.mechanisms"]
    my_mechanism = "my_package.spec"

That module exposes `MECHANISMS`, a tuple of `Mechanism`s, exactly as a built-in `spec.py` does
(`examples/linear-attention/` in the repository is a complete, installable one). A module that is on the Python
path but not installed is named in the `ATTNBENCH_MECHANISMS` environment variable instead (comma-separated);
worker processes inherit it, so they register the same mechanisms as the process that started them.

This module only finds and imports those modules, without importing the registry; the registry decides what a
failure means (a built-in module that fails is a bug and raises, a plug-in that fails is reported and skipped).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

ENTRY_POINT_GROUP = "attnbench.mechanisms"
PLUGIN_ENV = "ATTNBENCH_MECHANISMS"


class PluginRejected(ValueError):
    """A mechanism module that imported but cannot be registered; the message is the whole explanation."""


@dataclass(frozen=True)
class PluginSource:
    """One out-of-tree mechanism module, and how it was named (for messages)."""

    module: str
    origin: str

    def failure(self, exc: Exception) -> str:
        """The one-line report of this module failing to load: what it is, where it was named, and why."""
        reason = str(exc) if isinstance(exc, PluginRejected) else f"{type(exc).__name__}: {_first_line(exc)}"
        return f"mechanism module {self.module!r} (from {self.origin}) failed to load: {reason}"


def plugin_sources() -> list[PluginSource]:
    """The out-of-tree mechanism modules, in registration order.

    Entry points come first, sorted by package and entry-point name so that the order does not depend on how the
    packages happen to lie on the path; then the modules of `ATTNBENCH_MECHANISMS` in the order given. A module
    named more than once (installed, and also named in the variable) is loaded once, at its first place.
    """
    from importlib.metadata import entry_points

    sources = [
        PluginSource(point.value.partition(":")[0].strip(), f"entry point {point.name!r} of package {package}")
        for package, point in sorted(
            ((_package_of(point), point) for point in entry_points(group=ENTRY_POINT_GROUP)),
            key=lambda pair: (pair[0], pair[1].name),
        )
    ]
    sources += [PluginSource(name.strip(), PLUGIN_ENV) for name in os.environ.get(PLUGIN_ENV, "").split(",")]
    unique: dict[str, PluginSource] = {}
    for source in sources:
        if source.module:
            unique.setdefault(source.module, source)
    return list(unique.values())


def import_mechanisms(module_name: str) -> tuple[Any, ...]:
    """The `MECHANISMS` a module declares, importing it; `PluginRejected` when it declares none."""
    declared = getattr(importlib.import_module(module_name), "MECHANISMS", None)
    if declared is None:
        raise PluginRejected("the module has no MECHANISMS (a tuple of attnbench Mechanism objects)")
    if isinstance(declared, str | bytes) or not hasattr(declared, "__iter__"):
        raise PluginRejected(f"MECHANISMS must be a tuple of Mechanism objects, got {type(declared).__name__}")
    return tuple(declared)


def _package_of(point: Any) -> str:
    """The distribution that declares an entry point (None-safe: entry points built by hand have none)."""
    distribution = getattr(point, "dist", None)
    return distribution.name if distribution is not None else "(unknown)"


def _first_line(exc: Exception) -> str:
    """An exception's message reduced to one line: reports stay one line per module, never a traceback."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"
