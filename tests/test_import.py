"""Importing attnbench must be safe on any machine: no triton, no GPU, no failure without CUDA."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_import_loads_neither_torch_nor_triton():
    assert _run("import sys, attnbench; print('torch' in sys.modules, 'triton' in sys.modules)") == "False False"


def test_registry_and_cli_do_not_import_triton_or_touch_cuda():
    code = (
        "import sys, attnbench.mechanisms.registry as r, attnbench.cli\n"
        "r.mechanisms()\n"
        "import torch\n"
        "print('triton' in sys.modules, torch.cuda.is_initialized())"
    )
    assert _run(code) == "False False"


def test_importing_the_registry_loads_no_mechanism():
    """Mechanism modules (built-in and plug-ins) load on the first `mechanisms()` call, not on import."""
    code = (
        "import sys, attnbench.mechanisms.registry\n"
        "print(sorted(m for m in sys.modules if m.endswith('.spec') or m in ('torch', 'importlib.metadata')))"
    )
    assert _run(code) == "[]"
