"""How a run times calls and measures their memory, in words, as each run's meta.json records it.

These descriptions live apart from `timing` and `memory` because the runner writes them into meta.json, and the
runner's process must not import the torch-heavy measuring code that only its workers run.
"""

from __future__ import annotations

import importlib.util


def timer_method(device: str, method: str = "cold") -> str:
    """How `attnbench.measure.timing` times one call on `device` with timing method `method`."""
    clock = "torch.cuda.Event pairs" if device == "cuda" else "time.perf_counter"
    if method == "back_to_back":
        return f"{clock} around batches of calls issued back to back (about 2 ms a batch), time per call"
    if method == "graph":
        return f"{clock} around each replay of the call captured in a CUDA graph, L2 flushed before each sample"
    if device == "cuda":
        return f"{clock} around each call, L2 flushed before each sample, synchronised after it"
    return f"{clock} around each call"


def energy_method(device: str) -> str:
    """How `attnbench.measure.energy` measures energy per call on `device`, or why rows have none."""
    if device != "cuda":
        return "not measured: the energy counter read is the CUDA driver's (NVML)"
    if importlib.util.find_spec("pynvml") is None:
        return "not measured: pynvml is not installed (pip install nvidia-ml-py)"
    return (
        "NVML total energy counter read around at least timing.energy_s seconds of calls run back to back, "
        "divided by their number (a bwd call's forward preparation subtracted); None where the GPU has no counter"
    )


def memory_method(device: str) -> str:
    """How `attnbench.measure.memory` measures the peak memory of one call on `device`."""
    if device == "cuda":
        return "torch.cuda.max_memory_allocated during the call minus memory_allocated before it (inputs excluded)"
    return (
        "peak of the bytes live in PyTorch's CPU allocator during the call minus those live before it (inputs "
        "excluded), from torch.profiler's allocation events"
    )
