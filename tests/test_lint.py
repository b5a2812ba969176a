"""The code stays ruff-clean (rules in pyproject.toml): ruff is a test dependency, so CI checks it with the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


PATHS = ("attnbench", "tests", "examples")


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff_is_clean():
    result = _ruff("check", "--no-cache", *PATHS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_applied():
    result = _ruff("format", "--check", "--no-cache", *PATHS)
    assert result.returncode == 0, result.stdout + result.stderr
