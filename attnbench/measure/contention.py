"""Is the machine busy? Contention evidence for one case, the rules that flag its row `noisy`, and case budgets.

A shared or loaded CPU inflates times without failing anything: a 0.3 ms call can read 48 ms. Four signals are
gathered around each case's timed samples, and any one past its limit flags the row (the sweep goes on):

- **load**: the 1-minute load average above `LOAD_PER_CORE` × the cores this process may use. The load counts
  runnable threads, the worker's own included; more of them than cores means some wait for a CPU.
- **probe**: a tiny matmul and copy, timed just before and after the samples, ran at under `PROBE_RATIO` of the
  best rate the same probe reached on this machine (`attnbench.measure.probe`): something else took the CPU or
  its memory bandwidth while the case ran.
- **cpu wait**: the worker's threads spent over `WAIT_FRACTION` of their time during the samples waiting in the
  kernel's run queue for a CPU (Linux `/proc/self/task/*/schedstat`), the most direct sign of contention.
- **spread**: the samples' p20–p80 spread over `SPREAD_LIMIT` of their median (on any device).

This module imports no torch: the runner uses `case_budget_s` and `noisy_summary` in its own light process.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOAD_PER_CORE = 1.5
PROBE_RATIO = 0.5
WAIT_FRACTION = 0.2
SPREAD_LIMIT = 0.25
# A case's budget grows with the machine's load by at most this factor: past it, the run is better stopped.
MAX_BUDGET_STRETCH = 10.0

# The first word of each reason, as `noisy_summary` counts them.
REASON_KINDS = {
    "load": "load above the cores",
    "probe": "probe slower than the machine's best",
    "cpu": "threads waiting for a CPU",
    "spread": "wide p20–p80 spread",
}


@dataclass(frozen=True)
class Evidence:
    """What was seen around one case's timed samples; None where a signal is not available here."""

    cores: int
    load1: float | None = None
    probe_ratio: float | None = None  # the probe's rate now over its best on this machine (1: as fast as ever)
    cpu_wait: float | None = None  # fraction of the worker's thread time spent waiting for a CPU
    spread: float | None = None  # (p80 - p20) / median of the timed samples

    def as_row(self) -> dict[str, Any]:
        """The evidence as a row records it (rounded; absent signals left out)."""
        fields = {"cores": self.cores, "load1": self.load1, "probe_ratio": self.probe_ratio}
        fields.update(cpu_wait=self.cpu_wait, spread=self.spread)
        return {key: round(value, 3) for key, value in fields.items() if value is not None}


def rules() -> dict[str, Any]:
    """The limits that flag a row `noisy`, and the budget rule, as a run's meta.json records them."""
    return {
        "load_per_core": LOAD_PER_CORE,
        "probe_ratio": PROBE_RATIO,
        "cpu_wait_fraction": WAIT_FRACTION,
        "spread_p20_p80": SPREAD_LIMIT,
        "budget": f"case_timeout_s x clamp(load1 / cores, 1, {MAX_BUDGET_STRETCH:g}), read when each case starts",
    }


def noisy_reasons(evidence: Evidence) -> list[str]:
    """Why a row's times cannot be trusted as a quiet machine's, one reason per signal past its limit."""
    reasons = []
    if evidence.load1 is not None and evidence.load1 > LOAD_PER_CORE * evidence.cores:
        reasons.append(f"load {evidence.load1:.1f} on {evidence.cores} cores")
    if evidence.probe_ratio is not None and evidence.probe_ratio < PROBE_RATIO:
        reasons.append(f"probe at {evidence.probe_ratio:.0%} of the machine's best rate")
    if evidence.cpu_wait is not None and evidence.cpu_wait > WAIT_FRACTION:
        reasons.append(f"cpu wait {evidence.cpu_wait:.0%} of the worker's thread time")
    if evidence.spread is not None and evidence.spread > SPREAD_LIMIT:
        reasons.append(f"spread p20–p80 {evidence.spread:.0%} of the median")
    return reasons


def sample_spread(p20_ms: float, p80_ms: float, median_ms: float) -> float | None:
    """The p20–p80 spread relative to the median, or None for a median of zero."""
    return (p80_ms - p20_ms) / median_ms if median_ms > 0 else None


def machine_cores() -> int:
    """The cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load_average() -> float | None:
    """The 1-minute load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def thread_cpu_times(task_dir: Path = Path("/proc/self/task")) -> dict[str, tuple[int, int]] | None:
    """Per thread of this process, the nanoseconds it has spent running and waiting in a run queue (Linux
    schedstat), or None where that is not available."""
    times = {}
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return None
    for task in tasks:
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:  # the thread ended meanwhile, or schedstats are off
            continue
        times[task.name] = (int(fields[0]), int(fields[1]))
    return times or None


def cpu_wait_fraction(
    before: Mapping[str, tuple[int, int]] | None, after: Mapping[str, tuple[int, int]] | None
) -> float | None:
    """The share of thread time spent waiting for a CPU between two `thread_cpu_times` readings, over the
    threads present in both (a thread that ended or started in between has no interval to compare)."""
    if before is None or after is None:
        return None
    common = before.keys() & after.keys()
    ran = sum(after[tid][0] - before[tid][0] for tid in common)
    waited = sum(after[tid][1] - before[tid][1] for tid in common)
    return waited / (ran + waited) if ran + waited > 0 else None


def case_budget_s(base_s: float, load1: float | None = None, cores: int | None = None) -> float:
    """The wall-clock budget of one case: the suite's `case_timeout_s` stretched by the machine's current load.

    With L runnable threads sharing C cores each gets about C/L of a core, so a case takes about L/C times as
    long as on a quiet machine. The budget grows by that factor (never shrinks, at most `MAX_BUDGET_STRETCH`
    times): a loaded machine records slow cases as slow rather than as timeouts, and a hang is still cut off.
    `load1` and `cores` default to this machine's, read now.
    """
    load1 = load_average() if load1 is None else load1
    cores = machine_cores() if cores is None else cores
    if load1 is None or cores <= 0:
        return base_s
    return base_s * min(MAX_BUDGET_STRETCH, max(1.0, load1 / cores))


def busy_before_start(load1: float | None = None, cores: int | None = None) -> str | None:
    """One line for the start of a run when the machine is already past the load rule (`LOAD_PER_CORE` per
    core), or None: the rows will be flagged and the run will take longer, which is better known before it starts
    than after. `load1` and `cores` default to this machine's, read now."""
    load1 = load_average() if load1 is None else load1
    cores = machine_cores() if cores is None else cores
    if load1 is None or load1 <= LOAD_PER_CORE * cores:
        return None
    return (
        f"the machine is busy before the run starts (load {load1:.1f} on {cores} cores): expect its times to read "
        "high, its rows flagged noisy and the run to take longer; for numbers to trust, run it on a quiet machine."
    )


def noisy_summary(rows: Iterable[Mapping[str, Any]]) -> str | None:
    """One paragraph for the end of a run when some of its rows were timed on a busy machine, or None.

    Counts the flagged rows by reason, so the user knows that those times may read high and why.
    """
    rows = list(rows)
    measured = [row for row in rows if row.get("time_ms") is not None]
    flagged = [row for row in measured if row.get("noisy")]
    if not flagged:
        return None
    kinds = Counter(reason.split(" ", 1)[0] for row in flagged for reason in row["noisy"])
    because = ", ".join(f"{REASON_KINDS.get(kind, kind)}: {count}" for kind, count in kinds.most_common())
    return (
        f"{len(flagged)} of {len(measured)} timed cases ran on a busy machine ({because}); their times may read "
        "high. The `noisy` column of rows.jsonl says why; rerun those cases on a quiet machine before trusting them."
    )
