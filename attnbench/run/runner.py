"""A sweep that survives: cases measured in a worker process, rows written as each case ends.

The runner owns the run folder. It writes `meta.json` first (status `running`), appends one row per finished
case to `rows.jsonl`, and marks the run `complete`, `interrupted` or `failed` at the end. A case that hangs past
its budget is recorded as `timeout`, a worker that dies as `crash`; either way the worker is replaced and the
sweep goes on. `resume` appends only the cases whose rows are missing.

This process never imports the measuring code (torch kernels, timers, numerics): workers do the measuring. The
per-case step (`run_case`), the ceilings request and the SIGTERM handling here are shared with the A/B runner.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnbench.results.files import META_FILE, append_row, read_meta, read_rows, timestamp, write_json
from attnbench.run.folders import RunError, fresh_run_dir
from attnbench.run.meta import failed_meta, run_meta
from attnbench.run.workers import WORKER_START_TIMEOUT_S, WorkerLost, WorkerSlot
from attnbench.suite.case import Case

if TYPE_CHECKING:
    from attnbench.suite.load import Suite

WORKER_LOG = "worker.log"

# Called before each case (row None) and after it (with its row): index, number of cases, the case, the row.
OnCase = Callable[[int, int, Case, dict[str, Any] | None], None]


class Interrupted(KeyboardInterrupt):
    """SIGTERM arrived: handled as Ctrl-C is, finished rows stay on disk and the run is marked interrupted."""


@dataclass
class RunSummary:
    """A run's folder, its rows (earlier ones included when resuming) and whether it was interrupted."""

    run_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False

    @property
    def counts(self) -> Counter:
        """Cases per status."""
        return Counter(row["status"] for row in self.rows)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block SIGTERM raises `Interrupted` (a KeyboardInterrupt), so that a run stopped by a job
    scheduler ends as one stopped by Ctrl-C does: rows kept, meta marked, workers closed."""

    def interrupt(signum, frame):
        raise Interrupted(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_suite(
    suite: Suite,
    out_dir: Path | str = "results",
    *,
    resume: Path | str | None = None,
    on_case: OnCase | None = None,
    worker_env: dict[str, str] | None = None,
) -> RunSummary:
    """Measure every case of `suite` into a new run folder under `out_dir`, or finish `resume`'s missing cases.

    `on_case(index, total, case, row)` is called before each case (row None) and after it (with its row), for
    progress reporting. `worker_env` is added to the workers' environment. Returns the run's rows (all of them,
    earlier ones included when resuming). Raises `RunError` when the run cannot start.
    """
    run_dir, meta = _resume(Path(resume), suite) if resume is not None else (_new_run(Path(out_dir), suite), None)
    summary = RunSummary(run_dir, rows=read_rows(run_dir) if resume is not None else [])
    done = {row["case_id"] for row in summary.rows}
    todo = [case for case in suite.cases if case.case_id not in done]
    workers = WorkerSlot(suite.device, run_dir / WORKER_LOG, worker_env)
    status = "failed"
    try:
        with sigterm_interrupts():
            if meta is None:
                meta = run_meta(suite, device_ceilings(workers, run_dir))
                write_json(run_dir / META_FILE, meta)
            for index, case in enumerate(todo):
                if on_case:
                    on_case(index, len(todo), case, None)
                row = run_case(workers, case, meta["ceilings"], suite.device)
                append_row(run_dir, row)
                summary.rows.append(row)
                if on_case:
                    on_case(index, len(todo), case, row)
        status = "complete"
    except KeyboardInterrupt:
        summary.interrupted, status = True, "interrupted"
    finally:
        workers.close()
        meta = meta if meta is not None else failed_meta(suite)
        meta.update(status=status, finished_at=timestamp())
        write_json(run_dir / META_FILE, meta)
    return summary


def _new_run(out_dir: Path, suite: Suite) -> Path:
    """A fresh folder `<out>/<suite>-<device>-<UTC time>` for a new run of `suite`."""
    return fresh_run_dir(out_dir, f"{suite.name}-{suite.device}")


def _resume(run_dir: Path, suite: Suite) -> tuple[Path, dict[str, Any]]:
    """The folder and meta of a run of `suite` to finish, its meta marked running again."""
    meta = read_meta(run_dir)
    if meta["suite"]["name"] != suite.name or meta["suite"]["device"] != suite.device:
        raise RunError(
            f"{run_dir}: is a run of suite {meta['suite']['name']!r} on {meta['suite']['device']}, "
            f"not {suite.name!r} on {suite.device}"
        )
    meta.update(status="running", resumed_at=timestamp())
    write_json(run_dir / META_FILE, meta)
    return run_dir, meta


def device_ceilings(workers: WorkerSlot, run_dir: Path) -> dict[str, Any]:
    """The device's ceilings, measured by the slot's worker (which also proves that a worker starts)."""
    try:
        return workers.get().request({"op": "ceilings"}, WORKER_START_TIMEOUT_S)
    except WorkerLost as lost:
        raise RunError(f"{run_dir}: could not measure the device's ceilings: {lost.reason}") from None


def run_case(
    workers: WorkerSlot,
    case: Case,
    ceilings: dict[str, Any],
    device: str,
    lacks: Callable[[str], str | None] | None = None,
) -> dict[str, Any]:
    """The case's row, measured by the slot's worker. A case that cannot run here is `unsupported` without
    reaching a worker; one whose worker timed out, died or poisoned its CUDA context gets that status, and the
    worker is replaced. `lacks(target)` may give one more reason an implementation cannot run (the A/B runner's
    side without that implementation's module)."""
    why = unsupported_reason(case, device, lacks)
    if why:
        return {**case.empty_row(), "status": "unsupported", "reason": why, "wall_s": 0.0}
    begin = time.perf_counter()
    message = {"op": "case", "case": case.to_dict(), "ceilings": ceilings}
    try:
        reply = workers.get().request(message, case.limits.case_timeout_s)
    except WorkerLost as lost:
        workers.discard()
        wall_s = round(time.perf_counter() - begin, 3)
        return {**case.empty_row(), "status": lost.status, "reason": lost.reason, "wall_s": wall_s}
    if reply.get("fatal"):
        workers.discard()
    return reply["row"]


def unsupported_reason(case: Case, device: str, lacks: Callable[[str], str | None] | None = None) -> str | None:
    """Why `case` cannot run on `device` (the suite says so, `lacks` says so, or its implementation is not
    available here), or None when it can."""
    if case.unsupported:
        return case.unsupported
    from attnbench.mechanisms import registry  # the registry itself is light: it loads no kernel

    impl = registry.get(case.problem.mechanism).impl(case.impl)
    return (lacks(impl.target) if lacks else None) or impl.unavailable_reason(device)
