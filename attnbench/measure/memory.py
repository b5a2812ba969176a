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


@dataclass(frozen=True)
class Peak:
    allocated_bytes: int
    reserved_bytes: int | None


def measure(call: Callable[[Any], Any], prepare: Callable[[], Any], device: str) -> Peak:
    state = prepare()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        call(state)
        torch.cuda.synchronize()
        return Peak(torch.cuda.max_memory_allocated() - before, torch.cuda.max_memory_reserved())
    return Peak(_cpu_allocator_peak(call, state), None)


def warm_up(device: str) -> None:
    """Pay the profiler's one-time setup when a worker starts, before it reports ready, not in a case's budget."""
    if device != "cuda":
        measure(lambda state: state * 2, lambda: torch.ones(16), device)


def _cpu_allocator_peak(call: Callable[[Any], Any], state: Any) -> int:
    # The autograd profiler, not torch.profiler.profile: the latter's first start costs ~3 s a process.
    from torch.autograd import DeviceType
    from torch.autograd.profiler import profile

    with profile(use_cpu=True, profile_memory=True) as prof:
        result = call(state)
        del result
    events = [
        event
        for event in prof.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == DeviceType.CPU
    ]
    live = peak = 0
    for event in sorted(events, key=lambda event: event.start_ns()):
        live += event.nbytes()  # an allocation is positive, a free negative
        peak = max(peak, live)
    return peak
