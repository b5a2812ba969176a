"""The gate and baselines key on the device model: runs on two models are never compared (exit 2), a run whose
workers ran on several models says so and compares only where every case's model matches, and baselines are
stored per model (the GPU's name, or the CPU's model and thread-count class). Runs from timed_runs.py. A
comparison expected to pass uses copies of one run, so that only the device keys decide it: two back-to-back runs
on a shared CPU can drift past the default threshold (test_statistics.py allows for that)."""

from __future__ import annotations

import pytest
from timed_runs import derive, invoke

from attnbench.gate.settings import EXIT_BAD_INPUT, EXIT_CLEAN, CompareError
from attnbench.gate.verdicts import compare_paths
from attnbench.results import baseline
from attnbench.results.files import read_meta

OTHER_GPU = {"host": "node-2", "index": 1, "kind": "cuda", "name": "NVIDIA A100", "class": "NVIDIA A100"}


def on_model(name: str):
    """Meta function: the run measured on a device of model `name`."""

    def change(meta):
        meta["device"].update(name=name, type="cuda", **{"class": name})
        meta.pop("devices", None)
        return meta

    return change


def mixed(meta):
    """Meta function: a second worker slot on another model joined the run."""
    meta["devices"] = [*meta["devices"], OTHER_GPU]
    meta["mixed_devices"] = True
    return meta


def on_other_slot(row):
    """Row function: the row was measured on the other model's slot."""
    return {**row, "host": OTHER_GPU["host"], "device_index": OTHER_GPU["index"]}


def test_a_run_records_its_device_class(runs):
    meta = read_meta(runs[0])
    device = meta["device"]
    assert device["class"].startswith(device["model"]) and device["class"].endswith("threads")
    assert meta["mixed_devices"] is False and [slot["class"] for slot in meta["devices"]] == [device["class"]]


def test_runs_on_two_device_models_are_refused(runs, tmp_path):
    h100 = derive(runs[0], tmp_path / "h100", meta=on_model("NVIDIA H100 80GB HBM3"))
    a100 = derive(runs[1], tmp_path / "a100", meta=on_model("NVIDIA A100-SXM4-80GB"))
    with pytest.raises(CompareError, match="different device models"):
        compare_paths(h100, a100)
    result = invoke("compare", h100, a100)
    assert result.exit_code == EXIT_BAD_INPUT
    assert "'NVIDIA H100 80GB HBM3' in BASE, 'NVIDIA A100-SXM4-80GB' in HEAD" in " ".join(result.output.split())
    same = derive(runs[0], tmp_path / "h100-again", meta=on_model("NVIDIA H100 80GB HBM3"))
    assert compare_paths(h100, same).exit_code == EXIT_CLEAN


def test_a_run_that_mixed_models_compares_only_if_each_case_matches(runs, tmp_path):
    # Every row on the run's own model (a second model joined but measured nothing): comparable.
    joined = derive(runs[0], tmp_path / "joined", meta=mixed)
    assert compare_paths(runs[0], joined).exit_code == EXIT_CLEAN
    # One case measured on the other model: refused, naming it.
    moved = derive(
        runs[1], tmp_path / "moved", meta=mixed, rows=lambda row: on_other_slot(row) if row["impl"] == "sdpa" else row
    )
    with pytest.raises(CompareError, match=r"1 of 2 common case\(s\).*sdpa.*'NVIDIA A100' in HEAD"):
        compare_paths(runs[0], moved)
    assert invoke("compare", runs[0], moved).exit_code == EXIT_BAD_INPUT
    # Nor is such a run stored as a baseline.
    with pytest.raises(baseline.BaselineError, match="more than one device model"):
        baseline.save_baseline(moved, tmp_path / "store")


def test_baselines_are_stored_and_found_per_device_model(runs, tmp_path):
    store = tmp_path / "store"
    path = baseline.save_baseline(runs[0], store)
    meta = read_meta(runs[0])
    assert path.name == baseline.baseline_name("smoke", meta["device"]["class"])
    assert "threads" in path.name and "torch-uses" not in path.name  # the class, not the thread setting

    # A run on the same model with another torch thread setting finds it; a run on another model does not.
    def threads(meta):
        meta["device"]["name"] = meta["device"]["name"].replace("torch uses", "torch now uses")
        return meta

    assert compare_paths(store, derive(runs[0], tmp_path / "threads", meta=threads)).exit_code == EXIT_CLEAN
    elsewhere = derive(runs[1], tmp_path / "elsewhere", meta=on_model("NVIDIA H100 80GB HBM3"))
    result = invoke("compare", store, elsewhere)
    assert result.exit_code == EXIT_BAD_INPUT and "nvidia-h100-80gb-hbm3" in result.output
