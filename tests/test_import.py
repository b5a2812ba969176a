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
