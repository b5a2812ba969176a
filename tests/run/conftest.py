"""Fixtures of the runner's tests: one local Ray cluster for the whole session, started only by the tests that
ask for it (`-m ray` selects them)."""

from __future__ import annotations

import os

import pytest
from fault_runs import TESTS_DIR


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster of two CPU slots, as cheap as Ray allows (no dashboard, no log forwarding). Its
    processes find the fault-injection mechanism (tests/ on their path), as every worker of these tests does."""
    import ray

    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), before]))
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before
    yield ray
    ray.shutdown()
