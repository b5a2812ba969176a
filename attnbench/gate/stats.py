"""The statistics of one case: how its timing changed from BASE to HEAD, and whether that is beyond the noise.

`Change` holds one case's numbers (computed for a whole suite at once by `attnbench.gate.noise.suite_changes`);
`timing_verdict` reads it as `same`, `regressed`, `improved` or `noisy` under the gate's settings. Also here: the
bootstrap error of a log median ratio (`scipy.stats.bootstrap`) and, for paired A/B runs, the round-level test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from attnbench.gate.settings import GateSettings
from attnbench.results.baseline import thin_samples

MAX_BOOTSTRAP_SAMPLES = 1000  # larger sides are thinned to this many order statistics before resampling
BOOTSTRAP_SEED = 0  # one fixed seed: the same two runs always get the same verdicts


@dataclass(frozen=True)
class Change:
    """HEAD against BASE for one case's timing samples.

    `ratio` is the change the verdict reads: median(HEAD) / median(BASE) divided by the drift shared by every
    case (`raw_ratio` before that division). `low`, `high`, the p-values and q-values are computed only where a
    verdict depends on them (the change is past the threshold)."""

    base_ms: float  # median of BASE's samples
    head_ms: float
    n_base: int
    n_head: int
    ratio: float
    raw_ratio: float
    low: float | None = None  # interval of `ratio` at the gate's confidence, drift included
    high: float | None = None
    p_slower: float | None = None  # one-sided z-test of the log ratio against `noise`: HEAD slower
    p_faster: float | None = None
    q_slower: float | None = None  # p_slower adjusted for the number of cases compared (Benjamini–Hochberg)
    q_faster: float | None = None
    noise: float | None = None  # standard deviation of the log ratio: the samples' error and the between-run drift
    # Paired A/B runs only: the number of paired rounds and the one-sided Wilcoxon signed-rank p-values of the
    # per-round log ratios of medians (HEAD slower, HEAD faster); see `round_test`.
    n_rounds: int | None = None
    p_rounds_slower: float | None = None
    p_rounds_faster: float | None = None

    @property
    def diff_us(self) -> float:
        """How much slower HEAD's median is than BASE's, in microseconds, shared drift divided out."""
        return self.base_ms * (self.ratio - 1) * 1e3


def thinned(samples: Sequence[float]) -> np.ndarray:
    """Evenly spaced order statistics of a very large side: the same distribution, a bootstrap 4x cheaper per
    4x fewer samples, and an error only slightly larger (so never more eager to flag)."""
    samples = np.asarray(samples, dtype=float)
    if len(samples) <= MAX_BOOTSTRAP_SAMPLES:
        return samples
    return np.asarray(thin_samples(samples, MAX_BOOTSTRAP_SAMPLES))


def log_median_ratio_errors(pairs: Sequence[tuple[Sequence[float], Sequence[float]]], resamples: int) -> np.ndarray:
    """The bootstrap standard error of log(median(head) / median(base)) of each (base, head) pair of sample sets,
    each side resampled on its own (`scipy.stats.bootstrap`). Pairs of equal sizes are resampled in one batch.
    NaN where a side has fewer than two samples (nothing to resample)."""
    from scipy.stats import bootstrap

    sides = [(np.log(thinned(base)), np.log(thinned(head))) for base, head in pairs]
    errors = np.full(len(sides), np.nan)
    groups: dict[tuple[int, int], list[int]] = {}
    for index, (base, head) in enumerate(sides):
        if len(base) >= 2 and len(head) >= 2:
            groups.setdefault((len(base), len(head)), []).append(index)
    for members in groups.values():
        base = np.stack([sides[i][0] for i in members])
        head = np.stack([sides[i][1] for i in members])
        if np.ptp(base) == 0 and np.ptp(head) == 0:
            errors[members] = 0.0  # every sample equal: nothing varies (scipy refuses degenerate data)
            continue
        result = bootstrap(
            (base, head), _log_median_difference, n_resamples=resamples, axis=-1, vectorized=True,
            method="percentile", batch=max(1, 2_000_000 // (base.shape[0] * (base.shape[1] + head.shape[1]))),
            random_state=np.random.default_rng(BOOTSTRAP_SEED),
        )  # fmt: skip
        errors[members] = result.standard_error
    return errors


def _log_median_difference(base: np.ndarray, head: np.ndarray, axis: int = -1) -> np.ndarray:
    """median(head) − median(base) of log samples, along `axis` (the statistic the bootstrap resamples)."""
    return np.median(head, axis=axis) - np.median(base, axis=axis)


def round_test(base_rounds: Sequence[float], head_rounds: Sequence[float]) -> tuple[float, float]:
    """One-sided Wilcoxon signed-rank p-values (HEAD slower, HEAD faster) of the per-round log ratios of paired
    rounds. Samples within a round share the machine's state of that moment, so in an A/B run the round, not
    the sample, is the independent unit: this test sees the noise between rounds that the pooled samples
    mistake for a difference. Both 1 when every round ties."""
    from scipy.stats import wilcoxon

    logs = np.log(np.asarray(head_rounds, dtype=float)) - np.log(np.asarray(base_rounds, dtype=float))
    if not np.any(logs):
        return 1.0, 1.0
    slower = wilcoxon(logs, alternative="greater", zero_method="zsplit").pvalue
    faster = wilcoxon(logs, alternative="less", zero_method="zsplit").pvalue
    return float(slower), float(faster)


def min_round_p(rounds: int) -> float:
    """The smallest one-sided p-value the signed-rank test of `rounds` paired rounds can give (all agree)."""
    return 0.5**rounds


def rounds_needed(alpha: float) -> int:
    """The fewest paired rounds whose signed-rank test can reach p < `alpha`."""
    rounds = 2
    while min_round_p(rounds) >= alpha:
        rounds += 1
    return rounds


def paired(base_rounds: Sequence[float] | None, head_rounds: Sequence[float] | None) -> bool:
    """Whether both sides have per-round medians of equally many rounds (at least two) to pair."""
    return bool(base_rounds) and bool(head_rounds) and len(base_rounds) == len(head_rounds) >= 2


def past_threshold(change: Change, settings: GateSettings) -> bool:
    """Whether the change is big enough to matter: past the relative threshold and the absolute floor."""
    slower = change.ratio > 1 + settings.threshold and change.diff_us > settings.floor_us
    faster = 1 / change.ratio > 1 + settings.threshold and -change.diff_us > settings.floor_us
    return slower or faster


def timing_verdict(change: Change, settings: GateSettings) -> str:
    """`same` (within threshold or floor), `regressed` or `improved` (beyond the noise, after the correction for
    the number of cases), else `noisy`."""
    if not past_threshold(change, settings):
        return "same"
    if change.ratio > 1:
        beyond_noise = change.q_slower is not None and change.q_slower < settings.alpha
        if change.p_rounds_slower is not None:
            beyond_noise = beyond_noise and change.p_rounds_slower < settings.alpha
        return "regressed" if beyond_noise else "noisy"
    beyond_noise = change.q_faster is not None and change.q_faster < settings.alpha
    if change.p_rounds_faster is not None:
        beyond_noise = beyond_noise and change.p_rounds_faster < settings.alpha
    return "improved" if beyond_noise else "noisy"
