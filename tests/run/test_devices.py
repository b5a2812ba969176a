"""`--devices`: which worker slots a value names (and the clear refusal of one that names none), the order in
which a sharded sweep hands out its cases, and a real sweep sharded over two CPU slots standing in for GPUs."""

from __future__ import annotations

import random

import pytest
from fault_runs import invoke, only_run, use_fault_mechanism, write_suite

from attnbench.mechanisms import registry
from attnbench.results.files import read_meta, read_rows
from attnbench.run.devices import DevicesError, DeviceSlot, cores_class, device_class, parse_devices
from attnbench.run.executors import case_cost, longest_first
from attnbench.run.runner import run_suite
from attnbench.suite.load import load_suite


@pytest.fixture
def faulty(monkeypatch):
    """Register the fault-injection mechanism here and in every worker process."""
    use_fault_mechanism(monkeypatch)
    yield
    registry.mechanisms.cache_clear()


def test_device_values_name_their_slots(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert parse_devices("all", "cuda", gpu_count=3) == [DeviceSlot("cuda", i, str(i)) for i in range(3)]
    assert [slot.env for slot in parse_devices("0, 2", "cuda", gpu_count=3)] == [
        {"CUDA_VISIBLE_DEVICES": "0"},
        {"CUDA_VISIBLE_DEVICES": "2"},
    ]
    assert parse_devices("cpu:3", "cpu") == [DeviceSlot("cpu", i) for i in range(3)]
    assert parse_devices("all", "cpu") == [DeviceSlot("cpu", 0)]  # the CPU is one device
    # Within an inherited CUDA_VISIBLE_DEVICES, index n is its n-th entry.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    assert [slot.visible for slot in parse_devices("1,0", "cuda", gpu_count=2)] == ["7", "5"]


@pytest.mark.parametrize(
    ("value", "device", "fragment"),
    [
        ("0,0", "cuda", "named twice"),
        ("4", "cuda", "GPU 4 does not exist; this machine shows 4 GPU(s), indexes 0..3"),
        ("one", "cuda", "'all', GPU indexes such as '0,1,3', or 'cpu:N'"),
        ("-1", "cuda", "'all', GPU indexes"),
        ("0", "cpu", "on the CPU"),
        ("cpu:0", "cpu", "from 1 to 64"),
        ("cpu:x", "cpu", "from 1 to 64"),
        ("cpu:2", "cuda", "go with a run on the CPU"),
    ],
)
def test_a_value_that_names_no_device_says_what_is_allowed(value, device, fragment):
    with pytest.raises(DevicesError, match=f"--devices '{value}'") as caught:
        parse_devices(value, device, gpu_count=4)
    assert fragment in str(caught.value)


def test_bad_devices_exit_2_before_any_folder_exists(faulty, tmp_path):
    suite = write_suite(tmp_path / "faults.yaml", ["reference"])
    result = invoke("run", suite, "--device", "cpu", "--devices", "cpu:none", "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "--devices 'cpu:none'" in result.output and "from 1 to 64" in result.output
    assert not (tmp_path / "out").exists()


def test_device_classes_group_hosts_by_model_and_thread_count():
    assert [cores_class(n) for n in (1, 2, 3, 4, 5, 8, 9, 64)] == [
        "1 thread",
        "2 threads",
        "3-4 threads",
        "3-4 threads",
        "5-8 threads",
        "5-8 threads",
        "9-16 threads",
        "33-64 threads",
    ]
    cpu = {"type": "cpu", "name": "Xeon (6 threads, torch uses 2)", "model": "Xeon", "multiprocessors": 6}
    assert device_class(cpu) == "Xeon / 5-8 threads"
    assert device_class({"type": "cuda", "name": "NVIDIA H100 80GB HBM3"}) == "NVIDIA H100 80GB HBM3"


def test_longest_cases_come_first(faulty, tmp_path):
    sizes = random.Random(7).sample(range(3, 40), 9)  # awkward, shuffled sizes
    suite = load_suite(write_suite(tmp_path / "faults.yaml", ["reference"], T=sizes), device="cpu")
    ordered = longest_first(suite.cases)
    costs = [case_cost(case) for case in ordered]
    assert costs == sorted(costs, reverse=True) and len(set(costs)) == len(costs)
    assert [case.problem.T for case in ordered] == sorted(sizes, reverse=True)
    assert sorted(case.case_id for case in ordered) == sorted(case.case_id for case in suite.cases)


@pytest.mark.slow
def test_a_sweep_sharded_over_two_slots_measures_the_same_cases(faulty, tmp_path):
    sizes = [5, 17, 9, 13, 6, 11, 15, 7]
    suite = load_suite(write_suite(tmp_path / "faults.yaml", ["slow"], T=sizes), device="cpu")
    started = []

    def on_case(index, total, case, row):
        if row is None:
            started.append(case.problem.T)

    sharded = run_suite(suite, tmp_path / "sharded", devices="cpu:2", on_case=on_case)
    single = run_suite(suite, tmp_path / "single")
    assert started == sorted(sizes, reverse=True)  # handed out longest first
    sharded_ids = sorted(row["case_id"] for row in sharded.rows)
    assert sharded_ids == sorted(row["case_id"] for row in single.rows) == sorted(c.case_id for c in suite.cases)
    rows = read_rows(sharded.run_dir)
    assert len(rows) == len(sizes) and {row["status"] for row in rows} == {"ok"}
    assert {row["device_index"] for row in rows} == {0, 1}
    assert all(row["host"] for row in rows)
    meta = read_meta(sharded.run_dir)
    assert [device["index"] for device in meta["devices"]] == [0, 1] and meta["mixed_devices"] is False
    assert {path.name for path in (sharded.run_dir / "workers").iterdir()} == {"cpu-0", "cpu-1"}
    assert {row["device_index"] for row in read_rows(single.run_dir)} == {None}


@pytest.mark.slow
def test_a_sharded_run_records_a_crash_for_its_case_only(faulty, tmp_path):
    suite_path = write_suite(tmp_path / "faults.yaml", ["reference", "dies"], T=(8, 12))
    out = tmp_path / "out"
    result = invoke("run", suite_path, "--device", "cpu", "--devices", "cpu:2", "-o", out)
    assert result.exit_code == 0, result.output
    rows = read_rows(only_run(out))
    statuses = sorted((row["impl"], row["T"], row["status"]) for row in rows)
    assert statuses == [("dies", 8, "crash"), ("dies", 12, "crash"), ("reference", 8, "ok"), ("reference", 12, "ok")]
    assert read_meta(only_run(out))["selection"]["devices"] == "cpu:2"


def test_an_executor_that_cannot_start_leaves_a_failed_run_to_resume(faulty, tmp_path):
    from attnbench.run.folders import RunError

    suite = load_suite(write_suite(tmp_path / "faults.yaml", ["reference"]), device="cpu")

    def unreachable(log_dir, env):
        raise RunError("--address node-9:6379: cannot reach a Ray cluster there (simulated)")

    with pytest.raises(RunError, match="cannot reach"):
        run_suite(suite, tmp_path / "out", executor=unreachable)
    run_dir = only_run(tmp_path / "out")
    assert read_meta(run_dir)["status"] == "failed" and not read_rows(run_dir)


def test_an_address_goes_only_with_ray(faulty, tmp_path):
    suite = write_suite(tmp_path / "faults.yaml", ["reference"])
    result = invoke("run", suite, "--device", "cpu", "--address", "auto", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "--address goes with --executor ray" in result.output
    assert not (tmp_path / "out").exists()
