"""A busy machine is noticed: each contention rule decides on synthetic evidence, a real run under an artificial
load is flagged, the case budget grows with the load, and the end-of-run summary counts the flagged rows."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from attnbench.measure import contention, probe
from attnbench.measure.call import measure_call
from attnbench.measure.contention import Evidence, noisy_reasons
from attnbench.suite.case import TimingSettings

QUIET = Evidence(cores=2, load1=1.9, probe_ratio=0.93, cpu_wait=0.03, spread=0.06)


def test_a_quiet_machine_is_not_flagged():
    assert noisy_reasons(QUIET) == []
    assert noisy_reasons(Evidence(cores=8)) == []  # no signal available: nothing to say


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"load1": 4.1}, "load"),
        ({"probe_ratio": 0.31}, "probe"),
        ({"cpu_wait": 0.45}, "cpu"),
        ({"spread": 0.6}, "spread"),
    ],
)
def test_each_signal_past_its_limit_flags_the_row(change, kind):
    reasons = noisy_reasons(Evidence(**{**QUIET.__dict__, **change}))
    assert [reason.split(" ", 1)[0] for reason in reasons] == [kind]


def test_the_limits_sit_where_documented():
    at_limits = Evidence(
        cores=4,
        load1=contention.LOAD_PER_CORE * 4,
        probe_ratio=contention.PROBE_RATIO,
        cpu_wait=contention.WAIT_FRACTION,
        spread=contention.SPREAD_LIMIT,
    )
    assert noisy_reasons(at_limits) == []
    past = Evidence(cores=4, load1=6.01, probe_ratio=0.49, cpu_wait=0.21, spread=0.26)
    assert len(noisy_reasons(past)) == 4


def test_the_spread_is_relative_to_the_median():
    assert contention.sample_spread(0.9, 1.3, 1.0) == pytest.approx(0.4)
    assert contention.sample_spread(0.0, 0.0, 0.0) is None


def test_cpu_wait_counts_only_threads_seen_twice():
    before = {"1": (100, 10), "2": (50, 0), "3": (500, 500)}
    after = {"1": (160, 50), "2": (110, 0), "4": (10, 900)}  # 3 ended, 4 started: neither has an interval
    assert contention.cpu_wait_fraction(before, after) == pytest.approx(40 / 160)
    assert contention.cpu_wait_fraction(None, after) is None
    assert contention.cpu_wait_fraction(before, before) is None  # no time passed


def test_thread_times_are_read_from_schedstat(tmp_path):
    for tid, line in {"11": "3000 700 5\n", "12": "1000 300 2\n"}.items():
        (tmp_path / tid).mkdir()
        (tmp_path / tid / "schedstat").write_text(line)
    (tmp_path / "13").mkdir()  # a thread without schedstat (ended meanwhile) is skipped
    assert contention.thread_cpu_times(tmp_path) == {"11": (3000, 700), "12": (1000, 300)}
    assert contention.thread_cpu_times(tmp_path / "missing") is None


def test_the_budget_grows_with_the_load_and_never_shrinks():
    assert contention.case_budget_s(60, load1=1.5, cores=2) == 60
    assert contention.case_budget_s(60, load1=4.0, cores=2) == pytest.approx(120)
    assert contention.case_budget_s(60, load1=500.0, cores=2) == 60 * contention.MAX_BUDGET_STRETCH
    assert 60 <= contention.case_budget_s(60) <= 60 * contention.MAX_BUDGET_STRETCH  # this machine's, now
    assert contention.case_budget_s(60, load1=0.1, cores=64) == 60


def test_the_summary_counts_flagged_rows_by_reason():
    rows = [
        {"time_ms": 1.0, "noisy": ["load 4.1 on 2 cores", "spread p20–p80 60% of the median"]},
        {"time_ms": 2.0, "noisy": ["load 4.0 on 2 cores"]},
        {"time_ms": 3.0, "noisy": None},
        {"time_ms": None, "noisy": None},  # not timed (unsupported, timeout): not counted
    ]
    summary = contention.noisy_summary(rows)
    assert summary.startswith("2 of 3 timed cases ran on a busy machine")
    assert "load above the cores: 2" in summary and "wide p20–p80 spread: 1" in summary
    assert contention.noisy_summary(rows[2:]) is None


def _spin(ms: float) -> None:
    """Busy for `ms` milliseconds of wall time (a call whose cost does not depend on a cache or a library)."""
    end = time.perf_counter() + ms / 1e3
    while time.perf_counter() < end:
        pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a busy subprocess per core, Linux only")
def test_a_run_under_artificial_load_is_flagged():
    """One busy process per core for the length of a tiny case. Only the flagged direction is asserted: this
    machine may be busy already, so a quiet run cannot be promised here (the rules are tested above)."""
    probe.warm_up()  # the probe's best rates, seen before the load starts
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(contention.machine_cores() + 1)]
    try:
        time.sleep(0.3)  # the hogs are spinning
        x = torch.randn(64)

        def call(_):
            _spin(0.2)
            return x * 2

        settings = TimingSettings(warmup_ms=10, rep_ms=100, min_reps=10, max_reps=200)
        measured = measure_call(call, None, "cpu", settings, {})
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert measured.fields["noisy"], measured.fields["contention"]
    assert measured.fields["contention"]["cores"] == contention.machine_cores()


def test_a_run_starting_on_a_busy_machine_says_so_first(tmp_path, monkeypatch):
    """Past the load rule before the first case, the run says so at its start, not only in its end summary."""
    from click.testing import CliRunner

    from attnbench.cli import cli

    assert contention.busy_before_start(load1=2.9, cores=2) is None  # 1.45 a core: within the rule
    line = contention.busy_before_start(load1=3.1, cores=2)
    assert "load 3.1 on 2 cores" in line and "noisy" in line
    suite = tmp_path / "tiny.yaml"
    suite.write_text(
        "name: tiny\nmechanisms: [{name: mha}]\nimpls: [reference]\nmodes: fwd\ndtypes: fp32\n"
        "sweep: {T: 16, H: 2, d: 8, B: 1}\ntiming: {warmup_ms: 1, rep_ms: 2, min_reps: 2, max_reps: 4}\n"
    )
    monkeypatch.setattr(contention, "load_average", lambda: 40.0 * contention.machine_cores())
    done = CliRunner().invoke(cli, ["run", str(suite), "--device", "cpu", "-o", str(tmp_path / "results")])
    assert done.exit_code == 0, done.output
    assert done.output.index("busy: the machine is busy before the run starts") < done.output.index("results:")


def test_the_rules_are_described_for_meta():
    described = contention.rules()
    assert described["cpu_wait_fraction"] == contention.WAIT_FRACTION and "load1 / cores" in described["budget"]
