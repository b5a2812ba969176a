"""Peak memory of one call above what existed before it (its inputs excluded).

CUDA: the caching allocator's peak statistics (`max_memory_allocated` minus `memory_allocated` before the call,
and the peak reserved). CPU: the process's peak resident set size during the call (Linux `VmHWM`, reset through
`/proc/self/clear_refs`) above the resident size before it. For that to see every allocation, the worker runs with
glibc's mmap threshold fixed at 64 KiB (`MALLOC_MMAP_THRESHOLD_`): tensors above it are mapped and unmapped
individually instead of being recycled inside the heap, where RSS would not show them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

CPU_WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


@dataclass(frozen=True)
class Peak:
    allocated_bytes: int
    reserved_bytes: int | None


def method(device: str) -> str:
    if device == "cuda":
        return "torch.cuda.max_memory_allocated during the call minus memory_allocated before it (inputs excluded)"
    return (
        "peak resident set size during the call (VmHWM, reset via /proc/self/clear_refs) minus the resident size "
        "before it; glibc mmap threshold fixed at 64 KiB so freed tensors leave the process (smaller "
        "allocations may be served from the heap unseen)"
    )


def measure(call: Callable[[Any], Any], prepare: Callable[[], Any], device: str) -> Peak:
    state = prepare()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        call(state)
        torch.cuda.synchronize()
        return Peak(torch.cuda.max_memory_allocated() - before, torch.cuda.max_memory_reserved())
    if not Path("/proc/self/clear_refs").exists():
        return Peak(-1, None)
    _reset_peak_rss()
    before = _status_bytes("VmRSS")
    result = call(state)
    peak = _status_bytes("VmHWM")
    del result
    return Peak(max(0, peak - before), None)


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _status_bytes(key: str) -> int:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")
