"""Timing one call: device events on CUDA, `perf_counter` on the CPU, the same statistics for both.

Three methods (`TimingSettings.method`), each with time-based warm-up and then enough timed samples to fill
`rep_ms` within `[min_reps, max_reps]`, as `triton.testing.do_bench`:

- `cold` (the default): one call per sample, its fresh state prepared untimed before it, the L2 cache flushed
  before each CUDA sample so every sample reads its inputs from device memory, and a synchronisation after it.
  On CUDA a call under ~50 µs is then bound by the host's launch and synchronisation: such rows are flagged
  `launch_bound`.
- `back_to_back`: a batch of calls issued without waiting in between (warm caches, launches overlapping the
  previous call's work), one sample per batch, its time divided by the batch. The batch fills `BATCH_MS`. On
  CUDA the host's own time to issue the batch is measured too: when it is as long as the device's, the GPU was
  waiting for launches, and the row is flagged `launch_bound`.
- `graph` (CUDA only): the call captured once in a CUDA graph and replayed, one replay per sample (L2 flushed
  as for `cold`): the kernels' time without the host's per-kernel launch cost. A `bwd` call needs a fresh
  forward graph every time, which a capture cannot replay: that case is `unsupported` with this method.

The first call, which pays compilation and autotuning, is timed on its own and never enters the median.
Runs describe these methods in their meta.json with `attnbench.measure.methods.timer_method`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attnbench.measure.contention import cpu_wait_fraction, thread_cpu_times
from attnbench.mechanisms.registry import Unsupported
from attnbench.suite.case import TIMING_METHODS, TimingSettings

# Bigger than the L2 of any current GPU (H100: 50 MB, H200: 60 MB): zeroing it evicts the inputs.
L2_FLUSH_BYTES = 256 << 20
# Below this a synchronised CUDA sample is mostly launch and synchronisation (5-20 µs of host work per call).
LAUNCH_BOUND_MS = 0.05
# A back-to-back batch whose issue took the host at least this share of the device's time was fed by the host.
HOST_BOUND_SHARE = 0.9
# A back-to-back sample lasts about this long, so that per-call gaps and the synchronisation are amortised.
BATCH_MS = 2.0
MAX_BATCH_CALLS = 1000

Sample = tuple[float, float]  # (device ms per call, host ms per call spent issuing it)


@dataclass(frozen=True)
class Timing:
    samples_ms: list[float]
    first_call_ms: float
    method: str = "cold"
    calls_per_sample: int = 1
    host_issue_ms: float | None = None  # median host time to issue one call (CUDA); None on the CPU
    cpu_wait: float | None = None  # CPU: share of the threads' time spent waiting for a core during the samples

    @property
    def median_ms(self) -> float:
        return float(np.median(self.samples_ms))

    @property
    def p20_ms(self) -> float:
        return float(np.percentile(self.samples_ms, 20))

    @property
    def p80_ms(self) -> float:
        return float(np.percentile(self.samples_ms, 80))


def time_call(
    call: Callable[[Any], Any],
    prepare: Callable[[], Any] | None,
    device: str,
    settings: TimingSettings,
) -> Timing:
    """Time `call(prepare())` with `settings.method`; `prepare` (None when the call needs no fresh state) runs
    untimed before every call."""
    cuda, method = device == "cuda", settings.method
    check_method(method, device, needs_fresh_state=prepare is not None)
    first_call_ms = _first_call(call, prepare, cuda)
    flush = l2_flush_buffer() if cuda and settings.flush_l2 and method != "back_to_back" else None
    captured = None
    if method == "graph":
        captured = capture_graph(call)
        sample = _replay_sampler(captured[0], flush)
    else:
        sample = _cold_sampler(call, prepare, cuda, flush)
    estimate = _warm_up(sample, settings.warmup_ms)
    calls = 1
    if method == "back_to_back":
        calls = int(min(MAX_BATCH_CALLS, max(1, math.ceil(BATCH_MS / estimate))))
        sample = _back_to_back_sampler(call, prepare, cuda, calls)
        sample()  # one untimed batch: its first allocations of `calls` states settle the allocator
    reps = int(min(settings.max_reps, max(settings.min_reps, settings.rep_ms / (estimate * calls))))
    threads_before = None if cuda else thread_cpu_times()
    measured = [sample() for _ in range(reps)]
    cpu_wait = None if cuda else cpu_wait_fraction(threads_before, thread_cpu_times())
    del captured  # the graph and its memory pool live until every replay is done
    return Timing(
        samples_ms=[device_ms for device_ms, _ in measured],
        first_call_ms=first_call_ms,
        method=method,
        calls_per_sample=calls,
        host_issue_ms=float(np.median([host_ms for _, host_ms in measured])) if cuda else None,
        cpu_wait=cpu_wait,
    )


def check_method(method: str, device: str, needs_fresh_state: bool) -> None:
    """Raise `Unsupported` (the case's status) when `method` cannot time this call on `device`."""
    if method not in TIMING_METHODS:
        raise ValueError(f"timing method {method!r}: allowed {', '.join(TIMING_METHODS)}")
    if method == "graph" and device != "cuda":
        raise Unsupported("timing method graph replays a CUDA graph: it needs a CUDA device")
    if method == "graph" and needs_fresh_state:
        raise Unsupported(
            "timing method graph cannot replay a call that needs a fresh forward graph each time (bwd): "
            "time it with cold or back_to_back"
        )


def launch_bound(device: str, timing: Timing) -> bool | None:
    """Whether a CUDA timing is bound by the host's launches rather than the kernels; None off CUDA.

    Synchronised samples (`cold`, `graph`) under `LAUNCH_BOUND_MS` are; a `back_to_back` batch is when the host
    took about as long to issue it as the device took to run it (the GPU was waiting for launches).
    """
    if device != "cuda":
        return None
    if timing.method == "back_to_back":
        return timing.host_issue_ms is not None and timing.host_issue_ms >= HOST_BOUND_SHARE * timing.median_ms
    return timing.median_ms < LAUNCH_BOUND_MS


def l2_flush_buffer() -> torch.Tensor:
    """A device buffer larger than the L2 cache; zeroing it before a sample evicts the call's inputs."""
    return torch.empty(L2_FLUSH_BYTES, dtype=torch.int8, device="cuda")


def capture_graph(call: Callable[[Any], Any]) -> tuple[Any, Any]:
    """`call(None)` captured in a CUDA graph, and its outputs (kept alive with the graph).

    A few calls first run on a side stream, as CUDA graph capture requires: they settle the allocator, cuBLAS
    workspaces and any autotuning, none of which may happen during the capture.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            call(None)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = call(None)
    torch.cuda.synchronize()
    return graph, outputs


def _interval(cuda: bool, run: Callable[[], Any]) -> Sample:
    """The device time of `run()` in ms (events on CUDA, wall time on the CPU) and the host's time issuing it."""
    if not cuda:
        begin = time.perf_counter()
        run()
        elapsed = (time.perf_counter() - begin) * 1e3
        return elapsed, elapsed
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    begin = time.perf_counter()
    run()
    host_ms = (time.perf_counter() - begin) * 1e3
    end.record()
    end.synchronize()
    return start.elapsed_time(end), host_ms


def _cold_sampler(call, prepare, cuda: bool, flush) -> Callable[[], Sample]:
    """One call per sample, its state prepared and the L2 flushed (when asked) before it, untimed."""

    def sample() -> Sample:
        state = prepare() if prepare is not None else None
        if flush is not None:
            flush.zero_()
        return _interval(cuda, lambda: call(state))

    return sample


def _back_to_back_sampler(call, prepare, cuda: bool, calls: int) -> Callable[[], Sample]:
    """`calls` calls issued one after another with no wait between them; their states are prepared first."""

    def sample() -> Sample:
        states = [prepare() for _ in range(calls)] if prepare is not None else [None] * calls

        def run() -> None:
            for state in states:
                call(state)

        device_ms, host_ms = _interval(cuda, run)
        return device_ms / calls, host_ms / calls

    return sample


def _replay_sampler(graph, flush) -> Callable[[], Sample]:
    """One replay of a captured CUDA graph per sample, the L2 flushed (when asked) before it."""

    def sample() -> Sample:
        if flush is not None:
            flush.zero_()
        return _interval(True, graph.replay)

    return sample


def _warm_up(sample: Callable[[], Sample], warmup_ms: float) -> float:
    """Run samples untimed for about `warmup_ms` (at least one); the median per-call time, as an estimate."""
    times = []
    deadline = time.perf_counter() + warmup_ms / 1e3
    while not times or time.perf_counter() < deadline:
        times.append(sample()[0])
    return max(float(np.median(times)), 1e-3)


def _first_call(call, prepare, cuda: bool) -> float:
    """The first call's wall time in ms: compilation and autotuning included."""
    state = prepare() if prepare is not None else None
    if cuda:
        torch.cuda.synchronize()
    begin = time.perf_counter()
    call(state)
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - begin) * 1e3
