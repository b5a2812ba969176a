"""The timing methods on the CPU (cold and back to back), their checks, and the launch-bound decision.

Calls here spin for a known time instead of computing, so that a per-call time can be checked from below (a
sample can never be shorter than its spin) on a machine whose load makes upper bounds loose.
"""

from __future__ import annotations

import math
import time

import pytest

from attnbench.measure import timing
from attnbench.measure.timing import Timing, check_method, launch_bound, time_call
from attnbench.mechanisms.registry import Unsupported
from attnbench.suite.case import TimingSettings

SPIN_MS = 0.3


def spin(ms: float = SPIN_MS) -> None:
    end = time.perf_counter() + ms / 1e3
    while time.perf_counter() < end:
        pass


def settings(**changes) -> TimingSettings:
    return TimingSettings(**{"warmup_ms": 5, "rep_ms": 20, "min_reps": 4, "max_reps": 40, **changes})


def test_cold_prepares_every_call_and_keeps_every_sample():
    log = []

    def prepare():
        log.append("prepare")
        return len(log)

    def call(state):
        assert log[-1] == "prepare" and state == len(log)  # a fresh state, prepared just before this call
        log.append("call")
        spin()

    measured = time_call(call, prepare, "cpu", settings())
    assert measured.method == "cold" and measured.calls_per_sample == 1 and measured.host_issue_ms is None
    assert 4 <= len(measured.samples_ms) <= 40
    assert log.count("prepare") == log.count("call")
    assert min(measured.samples_ms) >= SPIN_MS * 0.99


def test_back_to_back_batches_calls_and_divides_by_the_batch(monkeypatch):
    monkeypatch.setattr(timing, "BATCH_MS", 20.0)  # batches of several calls even when load inflates the estimate
    log, durations = [], []

    def prepare():
        log.append("p")

    def call(_):
        log.append("c")
        begin = time.perf_counter()
        spin()
        durations.append((time.perf_counter() - begin) * 1e3)

    measured = time_call(call, prepare, "cpu", settings(method="back_to_back", rep_ms=30))
    batch, samples = measured.calls_per_sample, measured.samples_ms
    # Sized from the warm-up's estimate, which is never below the spin.
    assert 1 <= batch <= math.ceil(timing.BATCH_MS / SPIN_MS)
    # The timed part: per sample, every state prepared first, then the calls one after another.
    assert "".join(log[-2 * batch * len(samples) :]) == ("p" * batch + "c" * batch) * len(samples)
    # Each sample is its batch's time per call: about the mean of the calls' own durations, not `batch` times it.
    timed_calls = durations[-batch * len(samples) :]
    per_batch = [sum(timed_calls[i * batch : (i + 1) * batch]) / batch for i in range(len(samples))]
    ratios = sorted(sample / mean for sample, mean in zip(samples, per_batch, strict=True))
    assert ratios[0] >= 0.99 and ratios[len(ratios) // 2] < 1.5


def test_a_call_without_state_is_timed_without_preparation():
    measured = time_call(lambda state: spin() if state is None else 1 / 0, None, "cpu", settings())
    assert min(measured.samples_ms) >= SPIN_MS * 0.99


def test_cpu_samples_record_how_long_threads_waited_for_a_core():
    measured = time_call(lambda _: spin(), None, "cpu", settings())
    if timing.thread_cpu_times() is None:
        pytest.skip("no schedstat on this platform")
    assert 0.0 <= measured.cpu_wait <= 1.0


def test_graph_replay_needs_cuda_and_a_call_without_fresh_state():
    with pytest.raises(Unsupported, match="CUDA device"):
        time_call(lambda _: None, None, "cpu", settings(method="graph"))
    with pytest.raises(Unsupported, match="fresh forward graph"):
        check_method("graph", "cuda", needs_fresh_state=True)
    check_method("graph", "cuda", needs_fresh_state=False)
    check_method("back_to_back", "cpu", needs_fresh_state=True)
    with pytest.raises(ValueError, match="cold, back_to_back, graph"):
        check_method("warm", "cpu", needs_fresh_state=False)


def _timing(median_ms: float, method: str = "cold", host_issue_ms: float | None = None) -> Timing:
    return Timing([median_ms] * 3, first_call_ms=1.0, method=method, host_issue_ms=host_issue_ms)


@pytest.mark.parametrize(
    ("device", "timed", "expected"),
    [
        ("cpu", _timing(0.001), None),  # only CUDA launches from a host
        ("cuda", _timing(0.03), True),  # a synchronised sample under 50 µs
        ("cuda", _timing(0.2), False),
        ("cuda", _timing(0.03, "graph"), True),  # a replay is synchronised too
        ("cuda", _timing(0.1, "back_to_back", host_issue_ms=0.095), True),  # the GPU waited for the host
        ("cuda", _timing(0.01, "back_to_back", host_issue_ms=0.002), False),  # launches ran ahead: short, not bound
    ],
)
def test_launch_bound_decision(device, timed, expected):
    assert launch_bound(device, timed) is expected
