"""The statistics of one case: how its timing changed from BASE to HEAD, and whether that is beyond the noise.

`timing_change` computes the change (medians, their ratio, and, where a verdict depends on them, the bootstrap
interval of the ratio, the rank test of the samples and, in paired A/B runs, the signed-rank test of the
rounds); `timing_verdict` reads it as `same`, `regressed`, `improved` or `noisy` under the gate's settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from attnbench.gate.settings import GateSettings
from attnbench.results.baseline import thin_samples

MAX_BOOTSTRAP_SAMPLES = 1000  # larger sides are thinned to this many order statistics before resampling


@dataclass(frozen=True)
class Change:
    """HEAD against BASE for one case's timing samples."""

    base_ms: float  # median of BASE's samples
    head_ms: float
    n_base: int
    n_head: int
    ratio: float  # head_ms / base_ms
    low: float | None = None  # bootstrap interval of the ratio; computed only where a verdict depends on it
    high: float | None = None
    p_slower: float | None = None  # one-sided Mann–Whitney U: HEAD's samples tend to be larger
    p_faster: float | None = None
    # Paired A/B runs only: the number of paired rounds and the one-sided Wilcoxon signed-rank p-values of the
    # per-round log ratios of medians (HEAD slower, HEAD faster); see `round_test`.
    n_rounds: int | None = None
    p_rounds_slower: float | None = None
    p_rounds_faster: float | None = None

    @property
    def diff_us(self) -> float:
        """HEAD's median minus BASE's, in microseconds."""
        return (self.head_ms - self.base_ms) * 1e3


def median_ratio_interval(
    base: np.ndarray, head: np.ndarray, confidence: float, resamples: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile bootstrap interval of median(head) / median(base), each side resampled on its own."""
    base, head = _thinned(base), _thinned(head)
    tail = (1 - confidence) / 2
    ratios = np.median(rng.choice(head, (resamples, len(head))), axis=1) / np.median(
        rng.choice(base, (resamples, len(base))), axis=1
    )
    low, high = np.quantile(ratios, [tail, 1 - tail])
    return float(low), float(high)


def _thinned(samples: np.ndarray) -> np.ndarray:
    """Evenly spaced order statistics of a very large side: the same distribution, a bootstrap 4x cheaper per
    4x fewer samples, and an interval only slightly wider (so never more eager to flag)."""
    if len(samples) <= MAX_BOOTSTRAP_SAMPLES:
        return samples
    return np.asarray(thin_samples(samples, MAX_BOOTSTRAP_SAMPLES))


def rank_test(base: np.ndarray, head: np.ndarray) -> tuple[float, float]:
    """One-sided Mann–Whitney U p-values: (HEAD slower, HEAD faster). Both 1 when every sample is equal."""
    from scipy.stats import mannwhitneyu

    if np.ptp(np.concatenate([base, head])) == 0:
        return 1.0, 1.0
    slower = mannwhitneyu(head, base, alternative="greater").pvalue
    faster = mannwhitneyu(head, base, alternative="less").pvalue
    return float(slower), float(faster)


def round_test(base_rounds: Sequence[float], head_rounds: Sequence[float]) -> tuple[float, float]:
    """One-sided Wilcoxon signed-rank p-values (HEAD slower, HEAD faster) of the per-round log ratios of paired
    rounds. Samples within a round share the machine's state of that moment, so in an A/B run the round, not
    the sample, is the independent unit: this test sees the noise between rounds that the rank test of the
    pooled samples mistakes for a difference. Both 1 when every round ties."""
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


def timing_change(
    base_samples: Sequence[float],
    head_samples: Sequence[float],
    settings: GateSettings,
    seed: int = 0,
    base_rounds: Sequence[float] | None = None,
    head_rounds: Sequence[float] | None = None,
) -> Change:
    """The change of one case; the noise tests run only when the change passes the threshold and floor.
    `base_rounds`, `head_rounds`: per-round medians of a paired A/B run (round i of each side measured back to
    back), which add the round-level test to the noise criterion."""
    base, head = np.asarray(base_samples, dtype=float), np.asarray(head_samples, dtype=float)
    base_ms, head_ms = float(np.median(base)), float(np.median(head))
    change = Change(base_ms, head_ms, len(base), len(head), head_ms / base_ms)
    paired = _paired(base_rounds, head_rounds)
    if paired:
        change = replace(change, n_rounds=len(base_rounds))
    if not past_threshold(change, settings):
        return change
    rng = np.random.default_rng(seed)
    low, high = median_ratio_interval(base, head, settings.confidence, settings.resamples, rng)
    p_slower, p_faster = rank_test(base, head)
    change = replace(change, low=low, high=high, p_slower=p_slower, p_faster=p_faster)
    if paired:
        p_rounds_slower, p_rounds_faster = round_test(base_rounds, head_rounds)
        change = replace(change, p_rounds_slower=p_rounds_slower, p_rounds_faster=p_rounds_faster)
    return change


def _paired(base_rounds: Sequence[float] | None, head_rounds: Sequence[float] | None) -> bool:
    """Whether both sides have per-round medians of equally many rounds (at least two) to pair."""
    return bool(base_rounds) and bool(head_rounds) and len(base_rounds) == len(head_rounds) >= 2


def past_threshold(change: Change, settings: GateSettings) -> bool:
    """Whether the change is big enough to matter: past the relative threshold and the absolute floor."""
    slower = change.ratio > 1 + settings.threshold and change.diff_us > settings.floor_us
    faster = 1 / change.ratio > 1 + settings.threshold and -change.diff_us > settings.floor_us
    return slower or faster


def timing_verdict(change: Change, settings: GateSettings) -> str:
    """`same` (within threshold or floor), `regressed` or `improved` (beyond the noise), else `noisy`."""
    if not past_threshold(change, settings):
        return "same"
    if change.ratio > 1:
        beyond_noise = change.p_slower < settings.alpha and change.low > 1
        if change.p_rounds_slower is not None:
            beyond_noise = beyond_noise and change.p_rounds_slower < settings.alpha
        return "regressed" if beyond_noise else "noisy"
    beyond_noise = change.p_faster < settings.alpha and change.high < 1
    if change.p_rounds_faster is not None:
        beyond_noise = beyond_noise and change.p_rounds_faster < settings.alpha
    return "improved" if beyond_noise else "noisy"
