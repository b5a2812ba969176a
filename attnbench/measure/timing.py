"""Timing one call: device events on CUDA, `perf_counter` on the CPU, the same statistics for both.

The protocol follows `triton.testing.do_bench`: time-based warm-up, then enough timed repetitions to fill
`rep_ms` (bounded by `min_reps`/`max_reps`), the L2 cache flushed before each CUDA sample so every sample reads
its inputs from device memory. Untimed preparation (a fresh forward graph for a backward) runs outside the timed
region. The first call, which pays compilation and autotuning, is timed on its own and never enters the median.
Runs describe this method in their meta.json with `attnbench.measure.methods.timer_method`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attnbench.suite.case import TimingSettings

# Bigger than the L2 of any current GPU (H100: 50 MB, H200: 60 MB): zeroing it evicts the inputs.
L2_FLUSH_BYTES = 256 << 20


@dataclass(frozen=True)
class Timing:
    samples_ms: list[float]
    first_call_ms: float

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
    prepare: Callable[[], Any],
    device: str,
    settings: TimingSettings,
) -> Timing:
    """Time `call(prepare())`: `prepare` runs untimed before every sample."""
    cuda = device == "cuda"
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.int8, device="cuda") if cuda and settings.flush_l2 else None

    def sample() -> float:
        state = prepare()
        if flush is not None:
            flush.zero_()
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call(state)
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        begin = time.perf_counter()
        call(state)
        return (time.perf_counter() - begin) * 1e3

    first_call_ms = _first_call(call, prepare, cuda)
    warm_samples = []
    warm_deadline = time.perf_counter() + settings.warmup_ms / 1e3
    while not warm_samples or time.perf_counter() < warm_deadline:
        warm_samples.append(sample())
    estimate = max(float(np.median(warm_samples)), 1e-3)
    reps = int(min(settings.max_reps, max(settings.min_reps, settings.rep_ms / estimate)))
    return Timing(samples_ms=[sample() for _ in range(reps)], first_call_ms=first_call_ms)


def _first_call(call, prepare, cuda: bool) -> float:
    state = prepare()
    if cuda:
        torch.cuda.synchronize()
    begin = time.perf_counter()
    call(state)
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - begin) * 1e3
