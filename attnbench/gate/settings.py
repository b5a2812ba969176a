"""When the gate fails: its settings, the verdicts a case can get, the exit codes, and its input error."""

from __future__ import annotations

from dataclasses import dataclass

from attnbench.results.files import ResultsError

EXIT_CLEAN, EXIT_REGRESSION, EXIT_BAD_INPUT = 0, 1, 2

# Verdicts, most severe first; the first three fail the gate (regressions beyond the tolerated count).
VERDICTS = (
    "numerics_broke",
    "broke",
    "regressed",
    "improved",
    "noisy",
    "fixed",
    "failing",
    "ignored",
    "same",
    "unsupported",
)
FAILING_VERDICTS = VERDICTS[:3]
NORMALIZATIONS = ("auto", "median", "controls", "none")
# A suite's own spread of changes, and its median change, say something only over this many timed cases.
MIN_CASES_FOR_SUITE_NOISE = 20


class CompareError(ResultsError):
    """Input the gate cannot compare: a missing folder, an unreadable run or baseline, a bad ignore file."""


@dataclass(frozen=True)
class GateSettings:
    """When a case counts as regressed (see `attnbench.gate`) and how many regressions are tolerated.

    `ignore` holds case ids or `fnmatch` patterns (`*` and `?` only) over case labels (`sides.case_label`); an
    ignored case is still compared and shown, but its timing never fails the gate (its numerics and status
    still do).
    """

    threshold: float = 0.05
    floor_us: float = 1.0
    alpha: float = 0.01
    confidence: float = 0.95
    resamples: int = 2000
    max_regressions: int = 0
    ignore: tuple[str, ...] = ()
    # Drift shared by every case (a warmer GPU, a busier host) is divided out: by the median change over every
    # timed case ("median"), over the `controls` cases ("controls"), or not at all ("none"); "auto" picks
    # controls when some are named, the median when at least `MIN_CASES_FOR_SUITE_NOISE` cases are timed.
    normalize: str = "auto"
    controls: tuple[str, ...] = ()
    # The between-run drift of one case's median on this runner (a relative standard deviation, 0.01 = 1%),
    # which samples of one run cannot see. The gate uses the larger of this and what the suite shows.
    drift: float = 0.0

    def __post_init__(self) -> None:
        """Refuse settings that make no sense (a negative threshold, alpha outside (0, 1), ...)."""
        if self.threshold < 0 or self.floor_us < 0:
            raise ValueError(f"threshold and floor must be >= 0, got {self.threshold} and {self.floor_us}")
        if not (0 < self.alpha < 1 and 0 < self.confidence < 1):
            raise ValueError(f"alpha and confidence must lie in (0, 1), got {self.alpha} and {self.confidence}")
        if self.resamples < 100 or self.max_regressions < 0:
            raise ValueError(f"resamples must be >= 100 and max_regressions >= 0, got {self.resamples}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {list(NORMALIZATIONS)}, got {self.normalize!r}")
        if self.normalize == "controls" and not self.controls:
            raise ValueError("normalize 'controls' needs at least one control case pattern (--control)")
        if not 0 <= self.drift < 1:
            raise ValueError(f"drift must lie in [0, 1) (a relative standard deviation), got {self.drift}")

    def describe(self) -> str:
        """The rule in one line, as the reports print it."""
        drift = f"{self.drift:.1%}" if self.drift else "none given"
        return (
            f"regressed = median slower by > {self.threshold:.1%} and > {self.floor_us:g} µs after the shared drift "
            f"is divided out (normalize {self.normalize}), and beyond noise: one-sided z-test of the log median "
            f"ratio against the samples' bootstrap error and the between-run drift of one case (the larger of "
            f"--drift, {drift}, and the suite's spread), Benjamini–Hochberg over the cases at false discovery rate "
            f"{self.alpha:g}; in A/B runs also the one-sided Wilcoxon signed-rank p < {self.alpha:g} over the "
            f"paired rounds; {self.max_regressions} regression(s) tolerated"
        )


# The settings of `attnbench compare` without options.
DEFAULT_SETTINGS = GateSettings()
