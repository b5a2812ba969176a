"""Energy per call on CUDA, from the driver's cumulative energy counter (NVML), recorded in each row's `energy_j`.

The counter (`nvmlDeviceGetTotalEnergyConsumption`, millijoules since the driver loaded; Volta and later) ticks
coarsely, so it is read around at least `TimingSettings.energy_s` seconds of calls run back to back, outside the
timed samples, and divided by their number. When a call needs fresh state (`bwd`: a forward graph), the
preparation's own energy, measured the same way, is subtracted. Without `pynvml` (the `nvidia-ml-py` package),
off CUDA, on a GPU whose driver has no counter (MIG slices among them), or with `energy_s: 0`, nothing is
measured and `energy_j` stays None; `attnbench.measure.methods.energy_method` says which in meta.json.
"""

from __future__ import annotations

import importlib
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

_handle: Any = None


def energy_per_call_j(
    call: Callable[[Any], Any], prepare: Callable[[], Any] | None, seconds: float, estimate_ms: float
) -> float | None:
    """Joules per call over at least `seconds` of calls, or None when the counter cannot be read here."""
    handle = _device_handle() if seconds > 0 else None
    if handle is None:
        return None
    if prepare is None:
        return _joules_per_call(handle, lambda: call(None), seconds, estimate_ms)
    with_state = _joules_per_call(handle, lambda: call(prepare()), seconds, estimate_ms)
    preparation = _joules_per_call(handle, prepare, seconds, estimate_ms)
    if with_state is None or preparation is None:
        return None
    return max(with_state - preparation, 0.0)


def _joules_per_call(handle: Any, run: Callable[[], Any], seconds: float, estimate_ms: float) -> float | None:
    """Joules per `run()` between two counter readings at least `seconds` apart (synchronised around them)."""
    nvml = _nvml()
    batch = max(1, math.ceil(0.1 * 1e3 / max(estimate_ms, 1e-3)))  # about 100 ms of calls between clock checks
    torch.cuda.synchronize()
    before = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    begin, calls = time.perf_counter(), 0
    while calls == 0 or time.perf_counter() - begin < seconds:
        for _ in range(batch):
            run()
        calls += batch
        torch.cuda.synchronize()
    after = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    return (after - before) / 1e3 / calls if after > before else None


def _nvml() -> Any:
    """The pynvml module, or None when it is not installed."""
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        return None


def _device_handle() -> Any:
    """The NVML handle of torch's current CUDA device, found by UUID (CUDA_VISIBLE_DEVICES renumbers devices),
    or None when NVML or its energy counter is not available."""
    global _handle
    if _handle is not None:
        return _handle or None
    nvml = _nvml()
    if nvml is None or not torch.cuda.is_available():
        _handle = False
        return None
    try:
        nvml.nvmlInit()
        handle = _handle_of_current_device(nvml)
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # raises NVMLError_NotSupported where there is none
    except Exception as exc:  # any NVML failure means no energy counter here: rows say None, the log says why
        print(f"energy per call not measured: NVML: {type(exc).__name__}: {exc}", file=sys.stderr)
        _handle = False
        return None
    _handle = handle
    return handle


def _handle_of_current_device(nvml: Any) -> Any:
    """NVML's handle for torch's current device: by its UUID, else by the index torch maps it to."""
    device = torch.cuda.current_device()
    try:
        uuid = str(torch.cuda.get_device_properties(device).uuid)
        return nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
    except Exception:  # an older driver or torch without UUIDs: torch's own CUDA_VISIBLE_DEVICES mapping
        return nvml.nvmlDeviceGetHandleByIndex(torch.cuda._get_nvml_device_index(device))
