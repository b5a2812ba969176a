"""The device's ceilings, measured in a worker when a run starts: copy bandwidth and a matmul rate per dtype.

A row's `frac_copy_bw` divides its GB/s by the copy bandwidth, and its `frac_matmul_peak` divides the matmul
FLOPs its implementation performs per second by the matmul rate of the row's own dtype (`ceiling_dtype`): an
fp32 row against the fp32 rate, a tf32 row against the rate with TF32 matmuls allowed, and so on. A row says how
close a case came to what this very device, with this driver and these clocks, reached at that moment; a rate
above its ceiling is flagged (`attnbench.measure.rates`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from attnbench.measure.numerics import matmul_precision
from attnbench.measure.probe import probe_rates
from attnbench.mechanisms.problem import torch_dtype

REPETITIONS = 10
# The dtypes whose matmul rate a run measures: every dtype a suite can ask for.
MATMUL_DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp64")
# Matmul sizes: large enough to reach the device's rate; on a CPU small enough that the whole step takes a few
# seconds (half-precision matmuls are slow there), with at most `CPU_SECONDS_PER_DTYPE` of repetitions each.
CUDA_MATMUL_N = 8192
CPU_MATMUL_N = {"fp32": 1024, "bf16": 512, "fp16": 512, "fp64": 512}
CPU_SECONDS_PER_DTYPE = 0.5


def measure_ceilings(device: str) -> dict[str, Any]:
    """The device's copy bandwidth (bytes read + written) and matmul rate per dtype, measured here and now.

    CUDA: a 1 GiB device-to-device copy and an 8192³ matmul per dtype, timed with events (tf32 with TF32
    matmuls allowed, fp32 without; bf16 where the device supports it). CPU: a 128 MiB copy and an fp32 1024³
    matmul, bf16, fp16 and fp64 at 512³ with fewer repetitions; tf32 is fp32 there (the TF32 switch acts on
    CUDA matmuls only). Each is the median of its repetitions after a warm-up. `matmul_tflops` and
    `matmul_dtype` name the device's headline rate (bf16 on CUDA, fp32 on the CPU).
    """
    cuda = device == "cuda"
    copy_bytes = (1 << 30) if cuda else (128 << 20)
    copy_s = _copy_seconds(device, copy_bytes, cuda)
    by_dtype, sizes = {}, {}
    for dtype in _matmul_dtypes(device):
        if dtype == "tf32" and not cuda:
            continue
        sizes[dtype] = n = CUDA_MATMUL_N if cuda else CPU_MATMUL_N[dtype]
        by_dtype[dtype] = _matmul_tflops(device, dtype, n, cuda)
    if not cuda:
        by_dtype["tf32"] = by_dtype["fp32"]
    headline = "bf16" if "bf16" in by_dtype and cuda else "fp32"
    # The CPU's contention probe, at the run's start: each case's probe is held against it (`measure.contention`).
    probe = {} if cuda else probe_rates()
    matmuls = ", ".join(f"{dtype} {n}^3" for dtype, n in sizes.items())
    return {
        "copy_gbps": 2 * copy_bytes / copy_s / 1e9,
        "matmul_tflops": by_dtype[headline],
        "matmul_dtype": headline,
        "matmul_tflops_by_dtype": by_dtype,
        "method": f"{copy_bytes >> 20} MiB copy (read + write counted); matmuls {matmuls}"
        + ("" if cuda else " (tf32 = fp32: the CPU has no TF32 matmuls)")
        + f"; median of up to {REPETITIONS} after warm-up",
        **probe,
    }


def _copy_seconds(device: str, copy_bytes: int, cuda: bool) -> float:
    """The median time of one copy of `copy_bytes` bytes (its buffers freed on return)."""
    src = torch.full((copy_bytes,), 7, dtype=torch.uint8, device=device)  # written, so its pages are real
    dst = torch.empty_like(src)
    return _median_seconds(lambda: dst.copy_(src), cuda)


def _matmul_dtypes(device: str) -> list[str]:
    """The dtypes whose matmul this device runs (bf16 on CUDA needs a device that supports it)."""
    if device == "cuda" and not torch.cuda.is_bf16_supported():
        return [dtype for dtype in MATMUL_DTYPES if dtype != "bf16"]
    return list(MATMUL_DTYPES)


def _matmul_tflops(device: str, dtype: str, n: int, cuda: bool) -> float:
    """TFLOP/s of an `n`³ matmul in `dtype` (with TF32 allowed exactly for `tf32`)."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=torch_dtype(dtype), generator=generator)
    b = torch.randn(n, n, device=device, dtype=torch_dtype(dtype), generator=generator)
    with matmul_precision(dtype):
        reps = REPETITIONS if cuda else _reps_within(lambda: a @ b, CPU_SECONDS_PER_DTYPE)
        seconds = _median_seconds(lambda: a @ b, cuda, reps)
    return 2 * n**3 / seconds / 1e12


def _reps_within(fn: Callable[[], Any], budget_s: float) -> int:
    """How many repetitions of `fn` fit `budget_s` (3 to `REPETITIONS`), from one untimed call and one timed."""
    fn()
    begin = time.perf_counter()
    fn()
    once = time.perf_counter() - begin
    return max(3, min(REPETITIONS, int(budget_s / max(once, 1e-9))))


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
