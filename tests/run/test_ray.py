"""Sweeps on a Ray cluster (a local one, two CPU slots standing in for GPUs): the same cases as a local run,
a lost worker actor costs only its case, an interrupted run resumes, and Ray stays an optional extra."""

from __future__ import annotations

import shlex
import sys

import pytest
from fault_runs import invoke, use_fault_mechanism, write_suite
from test_run_imports import imported_after

from attnbench.mechanisms import registry
from attnbench.results.files import read_meta, read_rows
from attnbench.run import ray_executor
from attnbench.run.runner import run_suite
from attnbench.suite.load import load_suite

pytestmark = pytest.mark.ray


@pytest.fixture
def faulty(monkeypatch):
    """Register the fault-injection mechanism here and in every worker process."""
    use_fault_mechanism(monkeypatch)
    yield
    registry.mechanisms.cache_clear()


def statuses(rows) -> dict[str, str]:
    """Each case id's status."""
    return {row["case_id"]: row["status"] for row in rows}


def test_an_interrupted_ray_run_resumes_to_the_cases_of_a_local_run(ray_cluster, faulty, tmp_path):
    path = write_suite(tmp_path / "faults.yaml", ["reference", "raises", "wrong"], T=(6, 11))
    suite = load_suite(path, device="cpu")
    seen = []

    def stop_after_two(index, total, case, row):
        seen.extend([row] if row else [])
        if len(seen) == 2:
            raise KeyboardInterrupt

    stopped = run_suite(suite, tmp_path / "ray", executor="ray", devices="cpu:2", on_case=stop_after_two)
    assert stopped.interrupted and read_meta(stopped.run_dir)["status"] == "interrupted"
    assert 2 <= len(read_rows(stopped.run_dir)) < 6

    command = ["run", path, "--device", "cpu", "--executor", "ray", "--devices", "cpu:2", "--resume", stopped.run_dir]
    resumed = invoke(*command)
    assert resumed.exit_code == 0, resumed.output
    rows = read_rows(stopped.run_dir)
    assert len(rows) == 6 and len({row["case_id"] for row in rows}) == 6  # every case once
    local = run_suite(suite, tmp_path / "local")
    assert statuses(rows) == statuses(local.rows)
    assert set(statuses(rows).values()) == {"ok", "error", "numerics_fail"}
    assert {row["device_index"] for row in rows} <= {0, 1} and all(row["host"] for row in rows)
    meta = read_meta(stopped.run_dir)
    assert meta["status"] == "complete" and meta["mixed_devices"] is False and len(meta["devices"]) == 2


def test_a_killed_worker_actor_costs_its_case_only(ray_cluster, faulty, tmp_path):
    path = write_suite(tmp_path / "faults.yaml", ["reference", "slow"], T=(5, 9), timeout_s=120)
    suite = load_suite(path, device="cpu")
    held = {}

    def make_executor(log_dir, env):  # one actor (one node), so the actor measuring the long case is known
        held["executor"] = ray_executor.RayExecutor("cpu", None, env, None)
        return held["executor"]

    def kill_the_hang(index, total, case, row):
        if row is None and case.impl == "slow" and not held.get("killed"):
            held["killed"] = True
            ray_cluster.kill(held["executor"].actors[0].handle)

    summary = run_suite(suite, tmp_path / "out", executor=make_executor, on_case=kill_the_hang)
    rows = {(row["impl"], row["T"]): row for row in read_rows(summary.run_dir)}
    assert len(rows) == 4 and held["killed"]
    lost = [row for row in rows.values() if row["status"] == "crash"]
    assert len(lost) == 1 and lost[0]["impl"] == "slow", [(row["impl"], row["reason"]) for row in lost]
    assert "worker actor 0" in lost[0]["reason"] and "was lost" in lost[0]["reason"]
    assert lost[0]["wall_s"] < 60  # recorded when the actor died, not at the case's budget
    assert sum(row["status"] == "ok" for row in rows.values()) == 3  # the other three, the replacement's too
    assert read_meta(summary.run_dir)["status"] == "complete"


def test_without_ray_the_option_says_how_to_install_it(faulty, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    path = write_suite(tmp_path / "faults.yaml", ["reference"])
    result = invoke("run", path, "--device", "cpu", "--executor", "ray", "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "pip install 'attnbench[ray]'" in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


def test_ray_is_imported_only_when_a_run_asks_for_it():
    for module in ("attnbench", "attnbench.cli", "attnbench.run.runner", "attnbench.run.ray_executor"):
        assert "ray" not in imported_after(module), module


def test_the_resume_command_keeps_the_executor():
    from attnbench.cli.run import resume_hint

    selection = {"device": "cpu", "only": (), "impls": (), "overrides": (), "devices": "cpu:2", "executor": "ray"}
    words = shlex.split(resume_hint("s.yaml", {**selection, "address": "auto"})("results/r"))
    assert words[words.index("--executor") + 1] == "ray" and words[words.index("--address") + 1] == "auto"
    assert words[words.index("--devices") + 1] == "cpu:2"
