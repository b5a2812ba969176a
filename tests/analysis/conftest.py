"""Fixtures of the analysis tests: a synthetic run of known scaling (see `synthetic_runs`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic_runs import write_seqlen_run


@pytest.fixture
def seqlen_run(tmp_path: Path) -> Path:
    return write_seqlen_run(tmp_path)
