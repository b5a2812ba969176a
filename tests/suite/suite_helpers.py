"""What the suite tests share: a small valid suite to vary, and ways to load suite text or catch its error.

Imported by name (`from suite_helpers import ...`): pytest puts this folder on the import path for the tests in
it, and the name is unique across tests/.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from types import MappingProxyType

import pytest

from attnbench.mechanisms import registry
from attnbench.suite.load import Suite, SuiteError, load_suite

# Two mechanisms, one with a parameter, one shape: the tests replace parts of it to make a suite wrong or
# to try one feature at a time.
BASE = """
name: base
mechanisms:
  - name: mha
  - name: gqa
    params: {G: 2}
sweep: {T: 32, H: 4, d: 8}
"""


def write(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    """`text` (dedented) as a suite file under `tmp_path`."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load_text(tmp_path: Path, text: str, **kwargs) -> Suite:
    """`load_suite` on `text`, for the CPU unless `device` says otherwise."""
    kwargs.setdefault("device", "cpu")
    return load_suite(write(tmp_path, text), **kwargs)


def error_of(tmp_path: Path, text: str, **kwargs) -> str:
    """The message of the `SuiteError` that loading `text` must raise."""
    with pytest.raises(SuiteError) as info:
        load_text(tmp_path, text, **kwargs)
    return str(info.value)


def with_mechanism(monkeypatch, mechanism: registry.Mechanism) -> None:
    """Register `mechanism` (replacing one of the same name) for this test only."""
    found = dict(registry.mechanisms())
    found[mechanism.name] = mechanism
    monkeypatch.setattr(registry, "mechanisms", lambda: MappingProxyType(found))
