"""One call measured honestly: its timing, peak memory, the kernels it ran, the energy it took, and whether the
machine was busy meanwhile, as the row fields that say so.

`measure_call` is what a case's worker runs on the call it built (`attnbench.measure.case`): the timed samples
first (`timing`), with the contention probe just before and after them on the CPU (`probe`, `contention`), then
one untimed call for the peak memory (`memory`), one profiled call for the kernels (`kernels`, CUDA; on the
CPU the memory profile's operators serve), and on CUDA the energy over at least `energy_s` seconds (`energy`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from attnbench.measure import contention, energy, kernels, memory, probe, timing
from attnbench.suite.case import TimingSettings


@dataclass(frozen=True)
class Measured:
    """What `measure_call` found: the timing, the peak memory, and the row fields on how the call was timed."""

    timing: timing.Timing
    peak: memory.Peak
    fields: dict[str, Any] = field(default_factory=dict)


def measure_call(
    call: Callable[[Any], Any],
    prepare: Callable[[], Any] | None,
    device: str,
    settings: TimingSettings,
    impl_options: Mapping[str, Any],
    ceilings: Mapping[str, Any] | None = None,
) -> Measured:
    """Time `call`, measure its memory, record its kernels, energy and the machine's contention.

    Raises `kernels.BackendNotRun` when the implementation pins a backend that did not run.
    """
    cuda = device == "cuda"
    ratio_before = None if cuda else probe.probe_ratio(dict(ceilings or {}))
    timed = timing.time_call(call, prepare, device, settings)
    ratio_after = None if cuda else probe.probe_ratio(dict(ceilings or {}))
    peak = memory.measure(call, prepare, device)
    ran = kernels.cuda_kernels(call, prepare) if cuda else kernels.computing_ops(peak.ops)
    kernels.check_backend(impl_options, ran, device)
    evidence = contention.Evidence(
        cores=contention.machine_cores(),
        load1=None if cuda else contention.load_average(),
        probe_ratio=None if cuda else min(ratio_before, ratio_after),
        cpu_wait=timed.cpu_wait,
        spread=contention.sample_spread(timed.p20_ms, timed.p80_ms, timed.median_ms),
    )
    joules = energy.energy_per_call_j(call, prepare, settings.energy_s, timed.median_ms) if cuda else None
    return Measured(timed, peak, timing_fields(device, timed, ran, evidence, joules))


def timing_fields(
    device: str,
    timed: timing.Timing,
    ran: list[str],
    evidence: contention.Evidence,
    joules: float | None,
) -> dict[str, Any]:
    """The row fields on how a call was timed: method, batch, launch-bound flag, kernels, contention, energy."""
    reasons = contention.noisy_reasons(evidence)
    return {
        "timing_method": timed.method,
        "calls_per_sample": timed.calls_per_sample,
        "launch_bound": timing.launch_bound(device, timed),
        "kernels": ran,
        "noisy": reasons or None,
        "contention": evidence.as_row(),
        "energy_j": joules,
    }
