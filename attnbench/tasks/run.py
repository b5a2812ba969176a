"""One task case in the worker: draw the data, train at every learning rate of the grid, and fill the row.

The row reports the best held-out accuracy over the grid (as Zoology does) with every rate's in
`accuracy_by_lr`; the best rate's step time (median, p20, p80 over its steps; the first step alone in
`first_call_ms`), training throughput in tokens/s, steps and training time to `TASK_TARGET` held-out accuracy,
and final loss; the peak memory of one training step (`peak_mem_bytes`, measured as the benchmark measures a
call: `attnbench.measure.memory`); and the model's parameter count. A rate whose loss stops being finite is
noted in the reason; when every rate diverged, the case's status is `error` with that reason. An out-of-memory
error propagates and becomes the status `oom`, as for any case.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from attnbench.tasks.data import RecallData, recall_sequences
from attnbench.tasks.model import parameter_count
from attnbench.tasks.train import Outcome, Setup, build_model, optimizer_for, precision, train_rate, train_step

if TYPE_CHECKING:
    from attnbench.suite.case import Case

# Offsets of the two data streams' seeds: the held-out set never shares a sequence-drawing seed with training.
TRAIN_STREAM, TEST_STREAM = 1, 2
# A task's model is small: on the CPU one thread does its matmuls as fast as two, and on a shared machine
# two OpenMP threads waiting for each other made a training step 13× slower (1.2 s against 0.09 s, measured).
CPU_THREADS = 1


def make_setup(case: Case, device: str) -> Setup:
    """The data and settings every learning rate of the case shares (the same data for every mechanism)."""
    cell = case.task

    def draw(count: int, stream: int):
        data = recall_sequences(count, cell.seq_len, cell.kv_pairs, cell.vocab, 2 * cell.seed + stream, cell.power_a)
        return RecallData(data.inputs.to(device), data.labels.to(device))

    train, test = draw(cell.train_size, TRAIN_STREAM), draw(cell.test_size, TEST_STREAM)
    return Setup(case.problem, case.impl, cell, device, case.dtype, train, test)


def step_peak_bytes(setup: Setup, measure_peak: Callable) -> int | None:
    """Peak memory of one training step above what the model and optimiser state hold before it (one step is
    taken first, so the optimiser state exists)."""
    model = build_model(setup)
    optimizer = optimizer_for(model, min(setup.cell.lrs))
    inputs, labels = setup.train.inputs[: setup.cell.batch], setup.train.labels[: setup.cell.batch]
    with precision(setup.dtype, setup.device):
        train_step(model, optimizer, inputs, labels)
        peak = measure_peak(lambda _: train_step(model, optimizer, inputs, labels), None, setup.device)
    return peak.allocated_bytes if peak.allocated_bytes >= 0 else None


def _notes(outcomes: list[Outcome], cell) -> list[str]:
    """What the reason says about the grid: diverged rates, rates stopped early."""
    notes = []
    for outcome in outcomes:
        if outcome.diverged_at is not None:
            notes.append(f"lr {outcome.lr:g} diverged (loss {outcome.final_loss}) at step {outcome.diverged_at}")
        elif outcome.stopped_at is not None:
            notes.append(f"lr {outcome.lr:g} stopped at step {outcome.stopped_at} (accuracy >= {cell.stop_at:g})")
    return notes


def _timing_fields(best: Outcome, cell) -> dict[str, Any]:
    """The best rate's step times as a row's timing fields, and its throughput."""
    times_ms = [seconds * 1e3 for seconds in best.step_times_s]
    steady = times_ms[1:] or times_ms  # the first step pays one-time setup, as a benchmark's first call
    median = statistics.median(steady)
    return {
        "time_ms": median,
        "time_p20_ms": float(np.percentile(steady, 20)),
        "time_p80_ms": float(np.percentile(steady, 80)),
        "first_call_ms": times_ms[0],
        "reps": len(steady),
        "timing_method": "train_step",
        "tokens_per_s": cell.batch * cell.seq_len / (median / 1e3),
    }


@contextlib.contextmanager
def cpu_threads(device: str) -> Iterator[None]:
    """On the CPU, train on `CPU_THREADS` threads (restored after)."""
    saved = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(CPU_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def task_row(case: Case, device: str, measure_peak: Callable) -> dict[str, Any]:
    """The row fields of one task case (`measure_peak` is `attnbench.measure.memory.measure`)."""
    with cpu_threads(device):
        return _task_row(case, device, measure_peak)


def _task_row(case: Case, device: str, measure_peak: Callable) -> dict[str, Any]:
    setup = make_setup(case, device)
    outcomes = [train_rate(setup, lr) for lr in case.task.lrs]
    trained = [outcome for outcome in outcomes if outcome.accuracy is not None]
    notes = _notes(outcomes, case.task)
    fields: dict[str, Any] = {
        "accuracy_by_lr": {f"{outcome.lr:g}": outcome.accuracy for outcome in outcomes},
        "param_count": parameter_count(build_model(setup)),
        "numerics_checked": False,
    }
    if not trained:
        return {**fields, "status": "error", "reason": "diverged: " + "; ".join(notes)}
    best = max(trained, key=lambda outcome: (outcome.accuracy, -outcome.lr))
    if device == "cuda":
        torch.cuda.empty_cache()
    fields.update(
        _timing_fields(best, case.task),
        status="ok",
        reason="; ".join(notes) or None,
        accuracy=best.accuracy,
        best_lr=best.lr,
        steps_to_target=best.steps_to_target,
        time_to_target_s=best.time_to_target_s,
        final_loss=best.final_loss,
        peak_mem_bytes=step_peak_bytes(setup, measure_peak),
    )
    return fields
