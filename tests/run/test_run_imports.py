"""The runner's process stays light: it starts workers, watches them and writes files, while the measuring code
(timers, peak memory, numerics, ceilings, and torch with them) is imported by the workers alone."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

MEASURING = (
    "attnbench.measure.case",
    "attnbench.measure.ceilings",
    "attnbench.measure.memory",
    "attnbench.measure.numerics",
    "attnbench.measure.timing",
)


def imported_after(module: str) -> set[str]:
    """The modules a fresh interpreter holds after importing `module`."""
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


@pytest.mark.parametrize("module", ["attnbench.run.runner", "attnbench.run.ab"])
def test_the_runners_do_not_import_the_measuring_code(module):
    loaded = imported_after(module)
    assert not loaded & set(MEASURING), sorted(loaded & set(MEASURING))
    assert "torch" not in loaded


def test_the_gate_reads_results_without_torch():
    loaded = imported_after("attnbench.gate.report")
    assert "torch" not in loaded and not any(name.startswith("attnbench.run") for name in loaded)
