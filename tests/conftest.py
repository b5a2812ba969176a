"""Shared test setup.

Triton decides at decoration time whether a kernel is interpreted, so TRITON_INTERPRET must be set before any
kernel module is imported; it is set once here, for the whole session, rather than per test. Importing
attnbench itself never touches triton (tests/test_import.py checks that in a clean subprocess).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture
def seed(request) -> int:
    """A seed of each test's own (derived from its id), so tests do not all share one draw, and the same on every
    run, so that a Monte Carlo test (hundreds of simulated suites or fits, checked against a rate) cannot fail by
    chance in CI. ATTNBENCH_TEST_SEED=N draws other inputs for every test: run with several N to see how close to
    its bound each such test is."""
    import zlib

    extra = os.environ.get("ATTNBENCH_TEST_SEED", "")
    return zlib.crc32(f"{request.node.nodeid}|{extra}".encode() if extra else request.node.nodeid.encode()) & 0xFFFF


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    """NumPy's generator on the test's own seed."""
    return np.random.default_rng(seed)
