"""Simulated suites for the gate's suite-level statistics: hundreds of cases whose true times, drifts and slowdowns
are known, fed through the gate's own functions.

Each case has a true median drawn log-uniformly between 10 µs and 50 ms. BASE draws `n` samples around it with a
lognormal per-sample spread `cv`; HEAD draws `n` samples around it times a drift every case shares, times a drift
of its own (normal in log, `own`), times its slowdown. The samples of one run cannot see either drift.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attnbench.gate.noise import suite_changes
from attnbench.gate.settings import DEFAULT_SETTINGS, GateSettings
from attnbench.gate.sides import Side
from attnbench.gate.stats import timing_verdict


def simulated_pairs(
    rng: np.random.Generator,
    cases: int = 300,
    n: int = 30,
    *,
    shared: float = 0.02,
    own: float = 0.01,
    cv: float = 0.02,
    slowdowns: dict[int, float] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(BASE samples, HEAD samples) of every case of one simulated pair of runs; `slowdowns` maps a case's index
    to the factor HEAD's code made it slower by."""
    true_ms = np.exp(rng.uniform(np.log(0.01), np.log(50.0), cases))
    factor = np.ones(cases)
    for index, slowdown in (slowdowns or {}).items():
        factor[index] = slowdown
    head_ms = true_ms * (1 + shared) * np.exp(rng.normal(0.0, own, cases)) * factor
    base = true_ms[:, None] * np.exp(rng.normal(0.0, cv, (cases, n)))
    head = head_ms[:, None] * np.exp(rng.normal(0.0, cv, (cases, n)))
    return list(zip(base, head, strict=True))


def flagged(pairs, settings: GateSettings = DEFAULT_SETTINGS) -> set[int]:
    """The indices of the cases the gate calls regressed."""
    changes, _ = suite_changes(pairs, settings)
    return {index for index, change in enumerate(changes) if timing_verdict(change, settings) == "regressed"}


def side(pairs, which: int, *, name: str = "run", controls: int = 0) -> Side:
    """One side (0: BASE, 1: HEAD) of simulated pairs as the gate reads a run; the first `controls` cases are
    SDPA cases, the rest reference cases, each at its own T."""
    rows = {}
    for index, pair in enumerate(pairs):
        samples = [float(value) for value in pair[which]]
        case_id = f"{index:016x}"
        rows[case_id] = {
            "case_id": case_id, "mechanism": "mha", "params": {}, "impl": "sdpa" if index < controls else "reference",
            "mode": "fwd", "level": "core", "dtype": "fp32", "causal": False, "B": 1, "T": 16 + index, "H": 2, "d": 8,
            "status": "ok", "numerics_ok": True, "time_samples_ms": samples, "time_ms": float(np.median(samples)),
        }  # fmt: skip
    meta = {"status": "complete", "suite": {"name": "simulated"}, "device": {"name": "simulated device"}}
    return Side(Path(name), "run", meta, rows)
