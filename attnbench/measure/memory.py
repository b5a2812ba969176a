"""Peak memory of one call above what existed before it (its inputs excluded).

CUDA: the caching allocator's peak statistics (`max_memory_allocated` minus `memory_allocated` before the call,
and the peak reserved). CPU: the same quantity for PyTorch's CPU allocator, from the profiler's allocation
events (every tensor allocation and free of the call, in order; the peak of the running sum). Scratch memory that
libraries allocate outside PyTorch's allocator (oneDNN, OpenMP) is not seen, as on CUDA.

Why not the process's resident set size: glibc recycles freed memory inside its heap, where RSS does not show it,
and after a call that grew the heap, small allocations re-touch pages scattered over it; measured that way, the
same AFT-local backward read 290 MiB in a fresh worker and 580–830 MiB after a few warm-up calls.

Runs describe this method in their meta.json with `attnbench.measure.methods.memory_method`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from attnbench.measure import kernels, probe


@dataclass(frozen=True)
class Peak:
    allocated_bytes: int
    reserved_bytes: int | None
    ops: tuple[str, ...] = ()  # CPU: the operators the call ran, in order (from the same profile), unfiltered


def measure(call: Callable[[Any], Any], prepare: Callable[[], Any] | None, device: str) -> Peak:
    """The call's peak memory above what its inputs and state held before it (`prepare` may be None)."""
    state = prepare() if prepare is not None else None
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        call(state)
        torch.cuda.synchronize()
        return Peak(torch.cuda.max_memory_allocated() - before, torch.cuda.max_memory_reserved())
    peak, ops = _cpu_allocator_peak(call, state)
    return Peak(peak, None, ops)


def warm_up(device: str) -> None:
    """Pay the profilers' one-time setup when a worker starts, before it reports ready, not in a case's budget;
    on the CPU, also seed the contention probe's best rates (`attnbench.measure.probe`)."""
    if device == "cuda":
        kernels.warm_up()
        return
    measure(lambda state: state * 2, lambda: torch.ones(16), device)
    probe.warm_up()


def _cpu_allocator_peak(call: Callable[[Any], Any], state: Any) -> tuple[int, tuple[str, ...]]:
    """The peak of the bytes live in the CPU allocator during `call(state)`, and the operators it ran."""
    # The autograd profiler, not torch.profiler.profile: the latter's first start costs ~3 s a process.
    from torch.autograd import DeviceType
    from torch.autograd.profiler import profile

    with profile(use_cpu=True, profile_memory=True) as prof:
        result = call(state)
        del result
    cpu_events = sorted(
        (event for event in prof.kineto_results.events() if event.device_type() == DeviceType.CPU),
        key=lambda event: event.start_ns(),
    )
    live = peak = 0
    for event in cpu_events:
        if event.name() == "[memory]":
            live += event.nbytes()  # an allocation is positive, a free negative
            peak = max(peak, live)
    return peak, tuple(event.name() for event in cpu_events if event.name() != "[memory]")
