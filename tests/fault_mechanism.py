"""A mechanism whose implementations fail on purpose, to test that the runner records every failure.

Loaded through ATTNBENCH_MECHANISMS=fault_mechanism (with tests/ on PYTHONPATH), so worker processes see it too.
Its math is `y = 2·q`; each implementation fails in one way.
"""

from __future__ import annotations

import os
import signal
import time

import torch

from attnbench.mechanisms.common import Draw
from attnbench.mechanisms.registry import FlopCount, Impl, Mechanism

HERE = "fault_mechanism"


def reference(problem, tensors):
    return 2 * tensors["q"]


def raises(problem, tensors):
    raise ValueError("deliberate failure in the implementation")


def oom(problem, tensors):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB (simulated)")


def hang(problem, tensors):
    time.sleep(3600)


def dies(problem, tensors):
    os.kill(os.getpid(), signal.SIGKILL)


def poisoned(problem, tensors):
    raise RuntimeError("CUDA error: an illegal memory access was encountered (simulated)")


def wrong(problem, tensors):
    return 2 * tensors["q"] + 0.5


def slow(problem, tensors):
    time.sleep(0.05)
    return 2 * tensors["q"]


def make_tensors(problem, dtype, device, generator):
    return {"q": Draw(dtype, device, generator).normal(problem.B, problem.T, problem.H, problem.d)}


MECHANISMS = (
    Mechanism(
        name="faulty",
        title="Fault injection",
        paper="https://example.invalid/faulty",
        complexity="linear",
        make_tensors=make_tensors,
        reference=reference,
        project=lambda problem, tensors: tensors,
        output=lambda problem, tensors, out: out,
        flops=lambda problem: FlopCount(matmul=0, other=problem.B * problem.T * problem.D),
        min_bytes=lambda problem, mode, itemsize: 2 * itemsize * problem.B * problem.T * problem.D,
        impls=tuple(
            Impl(name, f"{HERE}:{name}", f"fails: {name}")
            for name in ("reference", "raises", "oom", "hang", "dies", "poisoned", "wrong", "slow")
        ),
    ),
)
