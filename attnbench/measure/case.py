"""Measuring one case inside a worker process: first call, peak memory, timing, numerics, derived rates.

Every failure becomes the case's status instead of an exception: `oom`, `unsupported`, `error` (a Python
exception, with its message) or `crash` (a fatal CUDA error that poisons the process; the runner then replaces
the worker). `timeout` and a worker that dies are recorded by the runner, which watches the worker from outside.
"""

from __future__ import annotations

import gc
import time
import traceback
from typing import Any

import torch

from attnbench.measure import decode, memory, numerics, rates, timing
from attnbench.measure.call import measure_call
from attnbench.mechanisms import registry
from attnbench.mechanisms.problem import Mode, Problem, itemsize
from attnbench.suite.case import Case

# Messages of CUDA errors after which the process's CUDA context cannot be trusted.
FATAL_CUDA_MARKERS = (
    "illegal memory access",
    "device-side assert",
    "unspecified launch failure",
    "misaligned address",
    "illegal instruction",
    "CUDA error: an illegal",
)
OOM_MARKERS = ("out of memory", "can't allocate memory", "CUBLAS_STATUS_ALLOC_FAILED")


def measure_case(case: Case, device: str, ceilings: dict[str, Any] | None) -> tuple[dict[str, Any], bool]:
    """The row of one case, and whether the worker must be replaced (its CUDA context is poisoned)."""
    row = case.empty_row()
    begin = time.perf_counter()
    fatal = False
    try:
        _measure(case, device, ceilings or {}, row)
    except registry.Unsupported as exc:
        row.update(status="unsupported", reason=str(exc))
    except Exception as exc:  # every failure is recorded as the case's status, never swallowed
        message = f"{type(exc).__name__}: {exc}".strip()
        if _is_oom(exc):
            row.update(status="oom", reason=_first_line(message))
        elif any(marker in message for marker in FATAL_CUDA_MARKERS):
            row.update(status="crash", reason=_first_line(message))
            fatal = True
        else:
            row.update(status="error", reason=_with_location(message, exc))
    finally:
        row["wall_s"] = round(time.perf_counter() - begin, 3)
        # Free the case's cycles, then move the survivors (torch, its lazily imported compilers: ~300k objects)
        # out of the collector's view: a full collection over them took 0.2-0.4 s a case, as long as a tiny
        # case itself. What survives a full collection is reachable, so freezing it frees nothing later.
        gc.collect()
        gc.freeze()
        if device == "cuda" and not fatal:
            torch.cuda.empty_cache()
    return row, fatal


def _measure(case: Case, device: str, ceilings: dict[str, Any], row: dict[str, Any]) -> None:
    """Fill `row` with the case's timing, peak memory, derived rates and (when the suite asks) numerics; a task
    case's with what training and evaluating its model gave (`attnbench.tasks.run`)."""
    if case.task is not None:
        from attnbench.tasks.run import task_row

        row.update(task_row(case, device, memory.measure))
        return
    mechanism = registry.get(case.problem.mechanism)
    if Mode(case.mode) is Mode.DECODE:
        decode.measure_decode(case, mechanism, device, ceilings, row)
        return
    problem, mode, dtype = case.problem, Mode(case.mode), case.dtype
    core = mechanism.impl(case.impl).load()
    measured, peak, timed_fields = _time_and_peak(case, mechanism, core, device, ceilings)
    gc.collect()  # the inputs of the timed calls are gone before the numerics check allocates its own
    row.update(timed_fields)

    time_s = measured.median_ms / 1e3
    flops = mechanism.flops_for(problem, mode)
    moved = mechanism.min_bytes(problem, mode, itemsize(dtype))
    row.update(
        time_ms=measured.median_ms,
        time_p20_ms=measured.p20_ms,
        time_p80_ms=measured.p80_ms,
        time_samples_ms=[round(s, 6) for s in measured.samples_ms],
        first_call_ms=measured.first_call_ms,
        reps=len(measured.samples_ms),
        peak_mem_bytes=peak.allocated_bytes if peak.allocated_bytes >= 0 else None,
        peak_reserved_bytes=peak.reserved_bytes,
        flops=flops,
        bytes=moved,
        tflops=flops / time_s / 1e12,
        gbps=moved / time_s / 1e9,
    )
    rate_fields, rate_notes = rates.rate_fields(
        mechanism, problem, case.impl, mode, dtype, time_s, row["gbps"], ceilings
    )
    row.update(rate_fields)
    row["status"] = "ok"
    for note in rate_notes:
        numerics.add_reason(row, note)
    if case.limits.check_numerics:
        _check_numerics(case, mechanism, core, device, row)
    else:
        row.update(numerics_checked=False, numerics_ok=None)
        numerics.add_reason(row, "numerics not checked (check_numerics is false)")


def _time_and_peak(
    case: Case, mechanism, core, device: str, ceilings: dict[str, Any]
) -> tuple[timing.Timing, memory.Peak, dict[str, Any]]:
    """Time the call and measure its peak memory on one set of inputs (freed when this returns), with the row
    fields on how it was timed (`attnbench.measure.call`)."""
    problem, mode = case.problem, Mode(case.mode)
    tensors = numerics.make_inputs(mechanism, problem, case.dtype, device, case.seed, mode.needs_grad)
    leaves = list(tensors.values())

    def forward():
        return mechanism.apply(core, problem, tensors)

    with numerics.matmul_precision(case.dtype):
        if mode is Mode.FWD:
            prepare = None

            def call(_):
                with torch.no_grad():
                    return forward()
        else:
            grad_out = numerics.output_grad(forward().detach(), case.seed)

            def backward(out):
                return torch.autograd.grad(out, leaves, grad_out, allow_unused=True)

            if mode is Mode.BWD:
                prepare, call = forward, backward
            else:
                prepare = None

                def call(_):
                    return backward(forward())

        options = mechanism.impl(case.impl).options
        measured = measure_call(call, prepare, device, case.timing, options, ceilings)
        return measured.timing, measured.peak, measured.fields


def _check_numerics(case: Case, mechanism, core, device: str, row: dict[str, Any]) -> None:
    """Compare the implementation with the float64 reference and record the errors and the verdict in `row`:
    `numerics_checked` true, `numerics_T` the T it was checked at (the case's own whenever the float64 reference
    fits `reference_max_elements`), `numerics_score` the worst error over its allowance (above 1 fails)."""
    problem = numerics_problem(mechanism, case.problem, case.limits.reference_max_elements, Mode(case.mode))
    result = numerics.compare(mechanism, core, problem, case.dtype, device, mode=Mode(case.mode), seed=case.seed)
    numerics.record(row, result, problem.T, case.problem.T)


def numerics_problem(mechanism, problem: Problem, max_elements: int, mode: Mode) -> Problem:
    """The problem itself, or the same problem at the largest halved T whose float64 reference fits the budget."""
    factor = 4 if mode.needs_grad else 2  # inputs, their float64 copies, and gradients of both
    candidate = problem
    while _elements(mechanism, candidate) * factor > max_elements and candidate.T > 1:
        try:
            smaller = mechanism.problem(
                B=candidate.B,
                T=candidate.T // 2,
                H=candidate.H,
                d=candidate.d,
                causal=candidate.causal,
                level=candidate.level,
                **dict(candidate.params),
            )
        except ValueError:
            break
        candidate = smaller
    return candidate


def _elements(mechanism, problem: Problem) -> int:
    """Elements of the problem's inputs and output (counted on the meta device: nothing is allocated)."""
    tensors = mechanism.make_tensors(problem, torch.float32, "meta", None)
    return sum(t.numel() for t in tensors.values()) + problem.B * problem.T * problem.D


def _is_oom(exc: BaseException) -> bool:
    """Whether the exception means the device (or host) ran out of memory."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(exc, oom_type) or any(marker in str(exc) for marker in OOM_MARKERS)


def _first_line(message: str) -> str:
    """The first line of a message, at most 500 characters, for a row's reason."""
    return message.splitlines()[0][:500] if message else message


def _with_location(message: str, exc: BaseException) -> str:
    """The message's first line and the file and line where the exception was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    return _first_line(message) + where
