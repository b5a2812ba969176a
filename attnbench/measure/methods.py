"""How a run times calls and measures their memory, in words, as each run's meta.json records it.

These descriptions live apart from `timing` and `memory` because the runner writes them into meta.json, and the
runner's process must not import the torch-heavy measuring code that only its workers run.
"""

from __future__ import annotations


def timer_method(device: str) -> str:
    """How `attnbench.measure.timing` times one call on `device`."""
    if device == "cuda":
        return "torch.cuda.Event pairs around each call, L2 flushed before each sample"
    return "time.perf_counter around each call"


def memory_method(device: str) -> str:
    """How `attnbench.measure.memory` measures the peak memory of one call on `device`."""
    if device == "cuda":
        return "torch.cuda.max_memory_allocated during the call minus memory_allocated before it (inputs excluded)"
    return (
        "peak of the bytes live in PyTorch's CPU allocator during the call minus those live before it (inputs "
        "excluded), from torch.profiler's allocation events"
    )
