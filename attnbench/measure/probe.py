"""A tiny CPU probe, timed around every case: a small fp32 matmul and a small copy, on torch's own threads.

Its rates are compared with the best the same probe has reached in this worker (and in the run's ceilings when
they hold a probe): a probe running at a fraction of its best means that something else took the CPU or its
memory bandwidth while the case ran. The probe takes a few milliseconds, so it can run before and after each
case's samples; a like-for-like probe is needed because a small matmul or copy never reaches the rate of the
large ones that measure the ceilings.
"""

from __future__ import annotations

import time
from typing import Any

import torch

MATMUL_N = 256
COPY_BYTES = 8 << 20
REPEATS = 3

# The best rates this worker's probe has reached: the machine's own, quiet rate as far as this worker has seen.
_best: dict[str, float] = {}


def probe_rates() -> dict[str, float]:
    """The probe's rates now, the best of a few repetitions: matmul GFLOP/s and copy GB/s (read + write)."""
    a = torch.randn(MATMUL_N, MATMUL_N)
    b = torch.randn(MATMUL_N, MATMUL_N)
    src = torch.full((COPY_BYTES,), 3, dtype=torch.uint8)
    dst = torch.empty_like(src)
    matmul_s = _best_seconds(lambda: torch.mm(a, b))
    copy_s = _best_seconds(lambda: dst.copy_(src))
    return {"probe_matmul_gflops": 2 * MATMUL_N**3 / matmul_s / 1e9, "probe_copy_gbps": 2 * COPY_BYTES / copy_s / 1e9}


def probe_ratio(ceilings: dict[str, Any] | None = None) -> float:
    """The probe's rate now over the best it has reached (here, or in `ceilings` when they hold probe rates),
    the lower of matmul and copy: 1.0 means as fast as this machine has ever been seen."""
    now = probe_rates()
    ratios = []
    for key, rate in now.items():
        best = max(_best.get(key, 0.0), float((ceilings or {}).get(key) or 0.0), rate)
        _best[key] = best
        ratios.append(rate / best)
    return min(ratios)


def warm_up() -> None:
    """Seed the machine's best rates when a worker starts (and pay the first call's setup there)."""
    for _ in range(REPEATS):
        probe_ratio()


def _best_seconds(fn) -> float:
    """The shortest of a few timed calls after one untimed one: the probe's rate when nothing interferes."""
    fn()
    times = []
    for _ in range(REPEATS):
        begin = time.perf_counter()
        fn()
        times.append(time.perf_counter() - begin)
    return max(min(times), 1e-9)
