"""Runs for the gate's tests: real CPU measurements of one tiny suite, and runs derived from them.

The tiny suite is MHA, reference and SDPA, T=32, fp32: two cases of 300 to 400 timing samples each. Derived runs
rescale or relabel real samples (a case slowed by 10% is its real samples times 1.10), so the statistics meet
real timing noise, not a textbook distribution.

Workers run single-threaded (OMP_NUM_THREADS=1): this machine's two cores are shared, and a two-thread kernel
that loses a core waits out whole scheduler slices, which turns 0.05 ms into 20 ms.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from attnbench.cli import cli
from attnbench.gate.stats import log_median_ratio_errors
from attnbench.results.files import META_FILE, append_row, read_meta, read_rows, write_json
from attnbench.suite.load import load_suite

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "suites" / "smoke.yaml"
# Two cases, 300 to 400 timing samples each.
TINY = ["modes=fwd", "levels=core", "causal=false", "timing.rep_ms=30", "timing.min_reps=300", "timing.max_reps=400"]
TINY_CLI = ["--device", "cpu", "--only", "mha", "--impl", "reference,sdpa", *[x for s in TINY for x in ("--set", s)]]
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
FAILING = ("numerics_broke", "broke", "regressed")


def tiny_suite():
    """The tiny suite, expanded for the CPU."""
    return load_suite(SMOKE, device="cpu", overrides=TINY, only=("mha",), impls=("reference", "sdpa"))


def resolves(samples, change: float = 0.10) -> bool:
    """Whether a measurement pins its median tightly enough to tell a `change` from noise: the 95% interval of its
    log median ratio against an independent measurement like it (1.96 bootstrap errors) lies within ±change/2.
    Not so when the machine flipped between two speeds during the case (another job on the sibling core): the
    gate then rightly says `noisy`."""
    (error,) = log_median_ratio_errors([(samples, samples)], 2000)
    return 1.96 * error < math.log1p(change / 2)


def derive(source: Path, dest: Path, *, rows=None, meta=None) -> Path:
    """A copy of run `source` at `dest`, its rows (and meta) passed through the given functions."""
    dest.mkdir(parents=True)
    data = read_meta(source)
    write_json(dest / META_FILE, meta(copy.deepcopy(data)) if meta else data)
    for row in read_rows(source):
        changed = rows(copy.deepcopy(row)) if rows else row
        if changed is not None:
            append_row(dest, changed)
    return dest


def scaled(factor: float, impl: str | None = None):
    """Row function: the row's samples and statistics times `factor` (only rows of `impl`, when given)."""

    def change(row):
        if impl is None or row["impl"] == impl:
            row["time_samples_ms"] = [sample * factor for sample in row["time_samples_ms"]]
            for key in ("time_ms", "time_p20_ms", "time_p80_ms"):
                row[key] *= factor
        return row

    return change


def half(parity: int):
    """Row function: one of two halves of the samples, interleaved in time and drawn at random (a fixed seed, so
    `half(0)` and `half(1)` split one run between them). Not simply the even and odd samples: a timer whose every
    other call runs slower (seen on this CPU: 6% between even and odd calls) would put that pattern between the
    halves, which then no longer share one distribution."""

    def change(row):
        times = row["time_samples_ms"]
        order = np.random.default_rng(0).permutation(len(times))
        samples = [times[i] for i in sorted(order[parity::2])]
        row.update(time_samples_ms=samples, time_ms=float(np.median(samples)), reps=len(samples))
        return row

    return change


def verdicts(comparison) -> dict[str, str]:
    """Each compared case's verdict, by implementation."""
    return {case.head["impl"]: case.verdict for case in comparison.cases}


def invoke(*args: str):
    """`attnbench ARGS` through click's test runner."""
    return CliRunner().invoke(cli, [str(arg) for arg in args])
