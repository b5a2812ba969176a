"""The device's ceilings, measured in a worker when a run starts: copy bandwidth and matmul rate.

Every row's `frac_copy_bw` and `frac_matmul_peak` divide its achieved rates by these, so a row says how close a
case came to what this very device, with this driver and these clocks, reached at that moment.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

REPETITIONS = 10


def measure_ceilings(device: str) -> dict[str, Any]:
    """The device's copy bandwidth (bytes read + written) and matmul rate, measured here and now.

    CUDA: a 1 GiB device-to-device copy and a bf16 8192³ matmul, timed with events. CPU: a 128 MiB copy and an
    fp32 1024³ matmul on torch's threads. Each is the median of several repetitions after a warm-up.
    """
    cuda = device == "cuda"
    copy_bytes = (1 << 30) if cuda else (128 << 20)
    n, dtype = (8192, torch.bfloat16) if cuda else (1024, torch.float32)
    src = torch.full((copy_bytes,), 7, dtype=torch.uint8, device=device)  # written, so its pages are real
    dst = torch.empty_like(src)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    copy_s = _median_seconds(lambda: dst.copy_(src), cuda)
    matmul_s = _median_seconds(lambda: a @ b, cuda)
    return {
        "copy_gbps": 2 * copy_bytes / copy_s / 1e9,
        "matmul_tflops": 2 * n**3 / matmul_s / 1e12,
        "matmul_dtype": "bf16" if cuda else "fp32",
        "method": f"{copy_bytes >> 20} MiB copy (read + write counted); {n}^3 matmul; "
        f"median of {REPETITIONS} after warm-up",
    }


def _median_seconds(fn: Callable[[], Any], cuda: bool, reps: int = REPETITIONS) -> float:
    """The median duration of `fn` over `reps` calls after three untimed ones (device events on CUDA)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            begin = time.perf_counter()
            fn()
            times.append(time.perf_counter() - begin)
    return sorted(times)[len(times) // 2]
