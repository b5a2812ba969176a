"""Which kernels a call actually ran, recorded in each row's `kernels`, and the check of a pinned backend.

On CUDA one call, outside the timed samples, runs under `torch.profiler` with CUDA activities; the names of the
kernels it launched are kept in the order they first ran. On the CPU the operators come from the memory
measurement's own profile of one call (`attnbench.measure.memory`), at no extra cost; view and bookkeeping
operators, which do no arithmetic, are left out. Either list is bounded to `MAX_NAMES` names of at most
`MAX_NAME_CHARS` characters.

An implementation that pins a backend (`Impl.options["backend"]`) must show one of that backend's kernels: a
case pinned to FlashAttention where no flash kernel ran is an error, never a row timed as flash.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

MAX_NAMES = 16
MAX_NAME_CHARS = 120

# Operators that only reshape, alias or allocate: listing them would crowd out the ones that compute.
BOOKKEEPING_OPS = re.compile(
    r"^aten::(view|_unsafe_view|reshape|as_strided|t|transpose|permute|expand|unsqueeze|squeeze|select|slice|"
    r"empty|empty_like|empty_strided|zeros|zeros_like|ones_like|detach|alias|contiguous|clone|to|_to_copy|"
    r"lift_fresh|resolve_conj|resolve_neg|split|chunk|unbind|narrow|result_type|is_nonzero|item|"
    r"_local_scalar_dense|size|stride|numel|dim|_reshape_alias|flatten|unflatten|movedim|new_empty|"
    r"new_empty_strided|new_zeros)$"
)

# Kernel names that show a pinned SDPA backend ran. cuDNN's own flash kernels carry "flash" too, so they are
# excluded from the flash backend's pattern.
BACKEND_KERNELS = {
    "flash": (re.compile(r"flash", re.IGNORECASE), re.compile(r"cudnn|fort_native", re.IGNORECASE)),
    "efficient": (re.compile(r"fmha|mem_eff|efficient_attention", re.IGNORECASE), None),
    "cudnn": (re.compile(r"cudnn|fort_native", re.IGNORECASE), None),
}


class BackendNotRun(RuntimeError):
    """A case pinned to a backend whose kernels did not run (recorded as the case's `error`)."""


def bounded(names: Iterable[str]) -> list[str]:
    """Distinct names in the order they first appear, each shortened, at most `MAX_NAMES` of them (and a last
    entry saying how many more there were)."""
    distinct = list(dict.fromkeys(_shorten(name) for name in names))
    if len(distinct) <= MAX_NAMES:
        return distinct
    return [*distinct[: MAX_NAMES - 1], f"... {len(distinct) - MAX_NAMES + 1} more"]


def computing_ops(names: Iterable[str]) -> list[str]:
    """CPU operator names from a profile, bookkeeping operators left out, bounded."""
    return bounded(name for name in names if name.startswith("aten::") and not BOOKKEEPING_OPS.match(name))


def cuda_kernels(call: Callable[[Any], Any], prepare: Callable[[], Any] | None) -> list[str]:
    """The CUDA kernels one call launches (names in the order they first ran, bounded), from torch.profiler."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    state = prepare() if prepare is not None else None
    torch.cuda.synchronize()
    prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
    try:
        prof.start()
    except RuntimeError as exc:  # a profiler that cannot trace here: kernels unrecorded (`[]`), not a failure
        print(f"kernels not recorded: torch.profiler: {exc}", file=sys.stderr)
        return []
    try:
        call(state)
        torch.cuda.synchronize()
    finally:
        prof.stop()
    events = prof.events()
    launched = [event for event in events if event.device_type == DeviceType.CUDA]
    launched.sort(key=lambda event: event.time_range.start)
    return bounded(event.name for event in launched if not event.name.startswith(("Memcpy", "Memset")))


def check_backend(options: Mapping[str, Any], kernels: list[str], device: str) -> None:
    """Raise `BackendNotRun` when the implementation pins a backend and the recorded CUDA kernels show none of
    it. An empty list (the profiler recorded nothing: no CUPTI here) leaves the backend unchecked, as the row's
    empty `kernels` shows."""
    backend = options.get("backend")
    if device != "cuda" or backend not in BACKEND_KERNELS or not kernels:
        return
    wanted, excluded = BACKEND_KERNELS[backend]
    if not any(wanted.search(name) and not (excluded and excluded.search(name)) for name in kernels):
        raise BackendNotRun(f"pinned to the {backend} backend, but none of its kernels ran: {', '.join(kernels)}")


def warm_up() -> None:
    """Pay the CUDA profiler's one-time setup (CUPTI, seconds) when a worker starts, not in a case's budget."""
    cuda_kernels(lambda state: torch.ones(16, device="cuda") * 2, None)


def _shorten(name: str) -> str:
    """A kernel name cut to `MAX_NAME_CHARS` (C++ template arguments make some thousands of characters long)."""
    return name if len(name) <= MAX_NAME_CHARS else name[: MAX_NAME_CHARS - 3] + "..."
