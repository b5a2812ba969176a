"""Measuring one `decode` case: a step of `q_len` new tokens on a prefilled cache of `M = T` tokens.

The core tensors are drawn for all `M + q_len` tokens; the implementation's decode path builds its cache (or
state) from the first `M` (the prefill, not timed) and returns the step, which is timed like any call
(`attnbench.measure.call`). The row records what the implementation keeps, measured from its tensors, beside the
mechanism's formula for it; the bytes one step must move (everything kept, the new tokens' inputs, the output)
and the rate that makes against the run's copy ceiling; and the step's outputs against the last `q_len` rows of
the mechanism's causal reference over all `M + q_len` tokens in float64.
"""

from __future__ import annotations

import gc
from typing import Any

import torch

from attnbench.measure import numerics, rates
from attnbench.measure.call import measure_call
from attnbench.mechanisms.decoding import check_q_len
from attnbench.mechanisms.problem import Problem, itemsize
from attnbench.mechanisms.registry import Mechanism, Unsupported
from attnbench.suite.case import Case


def full_problem(mechanism: Mechanism, problem: Problem, q_len: int) -> Problem:
    """The problem over the whole `M + q_len` tokens (what the inputs are drawn for); Unsupported when the
    mechanism does not define it (a bias that covers too few positions)."""
    try:
        return mechanism.problem(
            B=problem.B,
            T=problem.T + q_len,
            H=problem.H,
            d=problem.d,
            causal=problem.causal,
            level=problem.level,
            **dict(problem.params),
        )
    except ValueError as exc:
        raise Unsupported(f"a cache of M={problem.T} tokens and q_len={q_len} new ones: {exc}") from None


def measure_decode(case: Case, mechanism: Mechanism, device: str, ceilings: dict[str, Any], row: dict) -> None:
    """Fill `row` with the step's timing, memory, cache bytes, bytes moved and rate, and (when the suite asks)
    numerics."""
    problem, dtype, q_len = case.problem, case.dtype, check_q_len(case.q_len)
    impl = mechanism.impl(case.impl)
    build = impl.load_decode()
    measured, kept, moved = _timed_step(case, mechanism, build, device, ceilings)
    gc.collect()  # the cache is gone before the numerics check allocates its own
    time_s = measured.timing.median_ms / 1e3
    row.update(measured.fields)
    row.update(
        time_ms=measured.timing.median_ms,
        time_p20_ms=measured.timing.p20_ms,
        time_p80_ms=measured.timing.p80_ms,
        time_samples_ms=[round(s, 6) for s in measured.timing.samples_ms],
        first_call_ms=measured.timing.first_call_ms,
        reps=len(measured.timing.samples_ms),
        peak_mem_bytes=measured.peak.allocated_bytes if measured.peak.allocated_bytes >= 0 else None,
        peak_reserved_bytes=measured.peak.reserved_bytes,
        bytes=moved,
        gbps=moved / time_s / 1e9,
        status="ok",
    )
    _rate_fields(row, ceilings)
    _cache_fields(row, mechanism, problem, dtype, q_len, kept)
    if case.limits.check_numerics:
        _check_numerics(case, mechanism, build, device, q_len, row)
    else:
        row.update(numerics_checked=False, numerics_ok=None)
        numerics.add_reason(row, "numerics not checked (check_numerics is false)")


def _timed_step(case: Case, mechanism: Mechanism, build, device: str, ceilings: dict[str, Any]):
    """The step timed on a prefilled cache (`measure_call`), the bytes the implementation keeps and the bytes one
    step moves; the cache is freed when this returns."""
    q_len = case.q_len
    full = full_problem(mechanism, case.problem, q_len)
    with torch.no_grad(), numerics.matmul_precision(case.dtype):
        tensors = numerics.make_inputs(mechanism, full, case.dtype, device, case.seed, False)
        decoding = build(case.problem, tensors, q_len)
        del tensors  # the implementation keeps what it needs

        def call(_):
            return decoding.step()

        options = mechanism.impl(case.impl).options
        measured = measure_call(call, None, device, case.timing, options, ceilings)
        out = decoding.step()
    return measured, decoding.kept_bytes, decoding.step_bytes(out)


def _rate_fields(row: dict, ceilings: dict[str, Any]) -> None:
    """The step's rate as a fraction of the copy bandwidth this run measured (flagged above it)."""
    copy = ceilings.get("copy_gbps")
    row["rate_flags"] = []
    if copy:
        row["frac_copy_bw"] = row["gbps"] / copy
        if row["gbps"] > rates.CEILING_MARGIN * copy:
            row["rate_flags"] = [rates.ABOVE_COPY]
            note = f"{row['gbps']:.3g} GB/s is above the copy bandwidth of {copy:.3g} GB/s this run measured"
            numerics.add_reason(row, f"{rates.ABOVE_COPY}: {note} (the cache stayed in a CPU or GPU cache)")


def _cache_fields(row: dict, mechanism: Mechanism, problem: Problem, dtype: str, q_len: int, kept: int) -> None:
    """What the implementation keeps, measured, beside the mechanism's formula; a mismatch is an error."""
    row.update(cache_len=problem.T, q_len=q_len, cache_bytes=kept)
    if mechanism.cache_model is None:
        return
    model = mechanism.cache_model(problem, itemsize(dtype))
    expected = model.total(problem.T, q_len)
    row.update(cache_model_bytes=expected, cache_formula=model.formula)
    if model.per_token and model.window is None:
        row["cache_bytes_per_token"] = (kept - model.fixed) / (problem.B * (problem.T + q_len))
    if kept != expected:
        row["status"] = "error"
        numerics.add_reason(row, f"the implementation keeps {kept} bytes, its mechanism's formula says {expected}")


def check_problem(mechanism: Mechanism, problem: Problem, q_len: int, max_elements: int) -> Problem:
    """The problem itself, or the same at the largest halved cache length whose float64 reference over the
    `M + q_len` tokens fits the budget (inputs and output, twice for their float64 copies)."""
    candidate = problem
    while candidate.T > 1 and 2 * _elements(mechanism, full_problem(mechanism, candidate, q_len)) > max_elements:
        candidate = candidate.with_(T=candidate.T // 2)
    return candidate


def _elements(mechanism: Mechanism, problem: Problem) -> int:
    tensors = mechanism.make_tensors(problem, torch.float32, "meta", None)
    return sum(t.numel() for t in tensors.values()) + problem.B * problem.T * problem.D


def decode_comparison(mechanism: Mechanism, build, problem: Problem, q_len: int, dtype: str, device: str, seed: int):
    """The step's outputs in `dtype` against the last `q_len` rows of the causal reference over all `M + q_len`
    tokens in float64, the allowance scaled by the same reference run in `dtype` (`numerics.judge_all`)."""
    full = full_problem(mechanism, problem, q_len)
    tensors = numerics.make_inputs(mechanism, full, dtype, device, seed, False)
    with torch.no_grad(), numerics.matmul_precision(dtype):
        actual = build(problem, {name: t.clone() for name, t in tensors.items()}, q_len).step()
        truth = mechanism.reference(full, {name: t.double() for name, t in tensors.items()})[:, problem.T :]
        low = None
        if dtype != "fp64":
            try:
                low = {"out": mechanism.reference(full, tensors)[:, problem.T :]}
            except Exception:  # the reference may not run in this dtype; the fixed tolerance then decides
                low = {}
    return numerics.judge_all({"out": actual}, {"out": truth}, low, dtype, mechanism.tolerance(dtype))


def _check_numerics(case: Case, mechanism: Mechanism, build, device: str, q_len: int, row: dict) -> None:
    problem = check_problem(mechanism, case.problem, q_len, case.limits.reference_max_elements)
    result = decode_comparison(mechanism, build, problem, q_len, case.dtype, device, case.seed)
    numerics.record(row, result, problem.T, case.problem.T, axis="M")
