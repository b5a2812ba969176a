"""The noise of a whole suite: the drift every case shares, the drift of each case between runs, and the tests
of every case at once, corrected for how many cases were compared.

Two runs differ by more than their samples show. A drift shared by every case (a warmer GPU, another job on the
host) moves every median alike: it is divided out, by the median change over all timed cases or over designated
control cases. Each case also drifts on its own between runs (clocks, memory placement, code alignment), which
the samples of one run cannot see: the between-run drift of one case, the larger of what the user measured on
the runner (`GateSettings.drift`) and the spread of the suite's own changes (robust, so that a few real
regressions do not inflate it), is added to each case's bootstrap error. Each case past the threshold is then
tested (one-sided z-test of its log median ratio), and Benjamini–Hochberg over the cases keeps the expected
share of false regressions among those flagged at `alpha`, whether the suite has 2 cases or 300.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from attnbench.gate.settings import MIN_CASES_FOR_SUITE_NOISE, CompareError, GateSettings
from attnbench.gate.stats import Change, log_median_ratio_errors, paired, round_test

MIN_MS = 1e-12
MAD_TO_SD = 1.4826  # the median absolute deviation times this estimates a normal standard deviation


@dataclass(frozen=True)
class SuiteNoise:
    """What the gate took for noise in one comparison."""

    normalize: str  # what was divided out: "median", "controls" or "none"
    shared: float  # the shared drift divided out of every case, as a ratio (1.0 when none)
    cases: int  # timed cases
    controls: int  # control cases among them
    drift_given: float  # `GateSettings.drift`
    drift_estimated: float | None  # the spread of the suite's changes (1.4826·MAD of log ratios); None: too few
    drift: float  # the between-run drift of one case used (log standard deviation)

    def describe(self) -> str:
        """One line for the reports: what was divided out, and the drift used."""
        if self.normalize == "none":
            shared = f"shared drift not divided out ({self.cases} timed case(s); name --control cases)"
        else:
            over = f"{self.controls} control case(s)" if self.normalize == "controls" else f"{self.cases} cases"
            shared = f"shared drift {self.shared - 1:+.2%} divided out (median over {over})"
        if self.drift_estimated is None and not self.drift_given:
            return (
                f"{shared}; between-run drift of one case not accounted for (no --drift given, too few cases to "
                "estimate it): only the samples' own noise and the threshold guard against it"
            )
        estimated = "" if self.drift_estimated is None else f", the suite's spread {self.drift_estimated:.2%}"
        return f"{shared}; between-run drift of one case {self.drift:.2%} (given {self.drift_given:.2%}{estimated})"

    def to_dict(self) -> dict[str, float | int | str | None]:
        """The numbers, as the JSON report writes them."""
        return {**self.__dict__, "text": self.describe()}


def suite_changes(
    pairs: Sequence[tuple[Sequence[float], Sequence[float]]],
    settings: GateSettings,
    is_control: Sequence[bool] = (),
    rounds: Sequence[tuple[Sequence[float] | None, Sequence[float] | None]] = (),
) -> tuple[list[Change], SuiteNoise]:
    """The `Change` of every timed case, given its (BASE, HEAD) timing samples, and the noise of the suite.

    `is_control` marks control cases (for `normalize` "controls"); `rounds` holds per case the per-round medians
    of a paired A/B run (or Nones). Raises `CompareError` when control cases are asked for and none is timed.
    """
    # A timer's zero (a call shorter than its resolution) is clipped to a femtosecond: every log stays finite.
    pairs = [
        (np.maximum(np.asarray(b, dtype=float), MIN_MS), np.maximum(np.asarray(h, dtype=float), MIN_MS))
        for b, h in pairs
    ]
    base_ms = np.array([np.median(base) for base, _ in pairs], dtype=float)
    head_ms = np.array([np.median(head) for _, head in pairs], dtype=float)
    log_ratio = np.log(head_ms) - np.log(base_ms)
    method, shared, controls = _shared_drift(log_ratio, np.asarray(is_control, dtype=bool), settings)
    adjusted = log_ratio - shared
    estimated = None
    if len(adjusted) >= MIN_CASES_FOR_SUITE_NOISE:
        estimated = float(MAD_TO_SD * np.median(np.abs(adjusted - np.median(adjusted))))
    drift = max(math.log1p(settings.drift), estimated or 0.0)
    noise = SuiteNoise(method, math.exp(shared), len(pairs), controls, settings.drift, estimated, drift)
    changes = [
        Change(float(b), float(h), len(pair[0]), len(pair[1]), float(math.exp(a)), float(math.exp(r)))
        for b, h, pair, a, r in zip(base_ms, head_ms, pairs, adjusted, log_ratio, strict=True)
    ]
    tested = np.flatnonzero(np.abs(adjusted) > math.log1p(settings.threshold))
    if len(tested):
        changes = _tested(changes, adjusted, tested, [pairs[i] for i in tested], drift, settings)
    for index, (base_rounds, head_rounds) in enumerate(rounds):
        if paired(base_rounds, head_rounds):
            changes[index] = replace(changes[index], n_rounds=len(base_rounds))
            if index in tested:
                slower, faster = round_test(base_rounds, head_rounds)
                changes[index] = replace(changes[index], p_rounds_slower=slower, p_rounds_faster=faster)
    return changes, noise


def _shared_drift(log_ratio: np.ndarray, is_control: np.ndarray, settings: GateSettings) -> tuple[str, float, int]:
    """(method used, the shared log drift, control cases timed) under `settings.normalize`."""
    controls = int(is_control.sum()) if len(is_control) else 0
    method = settings.normalize
    if method == "auto":
        if settings.controls:
            method = "controls"
        else:
            method = "median" if len(log_ratio) >= MIN_CASES_FOR_SUITE_NOISE else "none"
    if method == "controls":
        if not controls:
            raise CompareError(
                f"no timed case matches the control patterns {list(settings.controls)}: the shared drift cannot "
                "be measured (check the patterns against the case labels of `attnbench compare --all`)"
            )
        return method, float(np.median(log_ratio[is_control])), controls
    if method == "median" and len(log_ratio):
        return method, float(np.median(log_ratio)), controls
    return "none", 0.0, controls


def _tested(
    changes: list[Change],
    adjusted: np.ndarray,
    tested: np.ndarray,
    pairs: Sequence[tuple[Sequence[float], Sequence[float]]],
    drift: float,
    settings: GateSettings,
) -> list[Change]:
    """`changes` with the interval, p-values and q-values of the cases past the threshold (`tested`).

    Every other case counts in the correction with p = 1: it can never be flagged, and treating it as
    untested keeps the correction conservative."""
    from scipy.stats import false_discovery_control, norm

    errors = log_median_ratio_errors(pairs, settings.resamples)
    sd = np.sqrt(drift**2 + errors**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = adjusted[tested] / sd
    untestable = ~np.isfinite(sd)  # a side with one sample: nothing says how far its median may wander
    p_slower, p_faster = np.ones(len(adjusted)), np.ones(len(adjusted))
    p_slower[tested] = np.where(untestable, 1.0, norm.sf(z))
    p_faster[tested] = np.where(untestable, 1.0, norm.cdf(z))
    q_slower, q_faster = false_discovery_control(p_slower), false_discovery_control(p_faster)
    half = norm.ppf(0.5 + settings.confidence / 2) * sd
    changed = list(changes)
    for k, index in enumerate(tested):
        interval = (np.exp(adjusted[index] - half[k]), np.exp(adjusted[index] + half[k]))
        low, high = (float(interval[0]), float(interval[1])) if np.isfinite(half[k]) else (None, None)
        changed[index] = replace(
            changes[index], low=low, high=high,
            p_slower=float(p_slower[index]), p_faster=float(p_faster[index]),
            q_slower=float(q_slower[index]), q_faster=float(q_faster[index]), noise=float(sd[k]),
        )  # fmt: skip
    return changed
