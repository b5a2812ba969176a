"""A sweep that survives: cases measured in a worker process, rows written as each case ends.

The runner owns the run folder and holds its lock while it writes there. It writes `meta.json` first (status
`running`, the moment the folder exists), appends one row per finished case to `rows.jsonl`, and marks the run
`complete`, `interrupted` or `failed` at the end. A case that hangs past its budget is recorded as `timeout`, a
worker that dies as `crash`; either way the worker is replaced and the sweep goes on. `resume` checks that the
suite and its settings are the run's (the meta's fingerprint), keeps a torn last row aside, measures whatever
the run still lacks (its ceilings too, when it was stopped before them) and appends only the missing cases. A
full disk or another write error ends the run as `failed` with every finished row kept, ready for `resume`.

This process never imports the measuring code (torch kernels, timers, numerics): workers do the measuring. The
per-case step (`run_case`), the ceilings request and the stop-signal handling here are shared with the A/B runner.
Where the workers run is the executor's business (`attnbench.run.executors`: one worker, one per device, or one
per GPU of a Ray cluster); whichever it is, this process's one driver loop consumes its "row arrived" and
"worker lost" events and writes every row itself.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnbench.results.files import (
    LOCK_FILE,
    META_FILE,
    ROWS_FILE,
    append_row,
    read_meta,
    read_rows,
    timestamp,
    write_json,
)
from attnbench.run.devices import DevicesError, parse_devices
from attnbench.run.executors import (
    Lost,
    PoolExecutor,
    SerialExecutor,
    Started,
    device_ceilings,
    lost_row,
    outcome_event,
    this_host,
)
from attnbench.run.folders import RunError, RunStopped, fresh_run_dir, locked_run, repair_rows
from attnbench.run.meta import changes, record_devices, run_meta, stub_meta, suite_fingerprint
from attnbench.run.workers import WorkerSlot
from attnbench.suite.case import Case

if TYPE_CHECKING:
    from attnbench.suite.load import Suite

# The folder of the run that holds one log per worker process (`worker-<n>.log`).
WORKER_LOG = "workers"

# Called before each case (row None) and after it (with its row): index, number of cases, the case, the row.
OnCase = Callable[[int, int, Case, dict[str, Any] | None], None]
# Makes a run's executor once its folder exists: (the folder for worker logs, the workers' extra environment).
ExecutorFactory = Callable[[Path, "dict[str, str] | None"], Any]
EXECUTORS = ("local", "ray")


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: finished rows stay on disk and the run is marked interrupted."""


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


# Shared by nested `stop_signals` blocks (the command's around the runner's): whether a stop was asked for.
_stopping = {"depth": 0, "asked": False}


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Within the block SIGINT (Ctrl-C) and SIGTERM (a job scheduler) raise `Interrupted`, once: signals that
    arrive after that, while the run stops (and, in nested blocks, until the outermost one ends), are ignored,
    so a second Ctrl-C cannot cut short the clean-up that marks the run and prints how to resume it (`kill -9`
    still stops at once, and the finished rows are safe even then)."""

    def interrupt(signum, frame):
        if _stopping["asked"]:
            with contextlib.suppress(OSError):
                os.write(2, b"attnbench: already stopping; keeping the finished rows\n")
            return
        _stopping["asked"] = True
        raise Interrupted(f"signal {signal.Signals(signum).name}")

    if _stopping["depth"] == 0:
        _stopping["asked"] = False
    _stopping["depth"] += 1
    previous = {number: signal.signal(number, interrupt) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _stopping["depth"] -= 1


sigterm_interrupts = stop_signals  # the A/B runner's name for it


def run_suite(
    suite: Suite,
    out_dir: Path | str = "results",
    *,
    resume: Path | str | None = None,
    force: bool = False,
    selection: Mapping[str, Any] | None = None,
    on_case: OnCase | None = None,
    worker_env: dict[str, str] | None = None,
    devices: str | None = None,
    executor: str | ExecutorFactory = "local",
    address: str | None = None,
) -> RunSummary:
    """Measure every case of `suite` into a new run folder under `out_dir`, or finish `resume`'s missing cases.

    `on_case(index, total, case, row)` is called before each case (row None) and after it (with its row), for
    progress reporting. `worker_env` is added to the workers' environment. `selection` (the filters and
    overrides the suite was loaded with) is recorded in the meta. A resume whose suite or settings differ from
    the run's is refused unless `force` (then recorded in the meta). Returns the run's rows (earlier ones
    included when resuming). Raises `RunError` when the run cannot start (`RunStopped` when it stopped on a
    write error) and `ResultsError` when the run to resume cannot be read.

    Where the cases run: without `devices`, one worker on the suite's device (`executor` "local"); `devices`
    (`all`, GPU indexes `0,1,3`, or `cpu:N`) runs one worker per device, longest cases first; `executor` "ray"
    runs one worker actor per GPU of the Ray cluster at `address` (or a local one). A factory of an executor
    may be given instead of a name. Bad values are a `RunError` before any folder is created.
    """
    make_executor = executor if callable(executor) else executor_factory(suite, devices, executor, address)
    with stop_signals():
        run_dir = _resumable(Path(resume)) if resume is not None else _new_run(Path(out_dir), suite)
        with locked_run(run_dir):
            executor_for = functools.partial(make_executor, run_dir / WORKER_LOG, worker_env)
            return _Sweep(suite, run_dir, on_case, executor_for).run(resume is not None, force, selection)


def executor_factory(suite: Suite, devices: str | None, executor: str, address: str | None) -> ExecutorFactory:
    """How a run of `suite` makes its executor; `RunError` for devices or an executor that cannot be had here
    (checked now, before the run's folder exists)."""
    if executor not in EXECUTORS:
        raise RunError(f"--executor {executor!r}: must be one of {list(EXECUTORS)}")
    try:
        slots = parse_devices(devices, suite.device) if devices is not None else None
    except DevicesError as exc:
        raise RunError(str(exc)) from None
    if executor == "ray":
        from attnbench.run import ray_executor

        return ray_executor.factory(suite.device, slots, address)
    if address is not None:
        raise RunError("--address goes with --executor ray (the Ray cluster to run on)")
    if slots is None:
        return lambda log_dir, env: SerialExecutor(suite.device, log_dir, env)
    return lambda log_dir, env: PoolExecutor(suite.device, slots, log_dir, env)


def _new_run(out_dir: Path, suite: Suite) -> Path:
    """A fresh folder `<out>/<suite>-<device>-<UTC time>` for a new run of `suite`."""
    return fresh_run_dir(out_dir, f"{suite.name}-{suite.device}")


def _resumable(run_dir: Path) -> Path:
    """`run_dir` if it is a run folder to resume (one whose runner was stopped before it could even write its
    meta holds nothing but the lock file); `RunError` otherwise, before anything is written there."""
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run folder")
    if not (run_dir / META_FILE).exists():
        if _only_lock(run_dir):
            return run_dir
        raise RunError(f"{run_dir}: not an attnbench run (no {META_FILE})")
    read_meta(run_dir)  # both files checked before the lock file is created: a foreign folder stays untouched
    read_rows(run_dir)
    return run_dir


def _only_lock(run_dir: Path) -> bool:
    """Whether the folder holds the run's lock file and nothing else."""
    try:
        return [path.name for path in run_dir.iterdir()] == [LOCK_FILE]
    except OSError:
        return False


class _Sweep:
    """One run while the runner holds its lock: its suite, folder, meta, rows and executor (made once the meta
    is written, so that an executor that cannot start, such as an unreachable cluster, leaves a failed run)."""

    def __init__(self, suite: Suite, run_dir: Path, on_case: OnCase | None, make_executor: Callable[[], Any]):
        self.suite, self.run_dir, self.on_case = suite, run_dir, on_case
        self.summary = RunSummary(run_dir)
        self.meta: dict[str, Any] | None = None
        self.make_executor, self.executor = make_executor, None
        self.started, self.total = 0, 0

    def run(self, resuming: bool, force: bool, selection: Mapping[str, Any] | None) -> RunSummary:
        """Start (or resume), measure, and mark the run with how it ended, whatever ended it."""
        status, failure = "failed", None
        try:
            if resuming and (self.run_dir / META_FILE).exists():
                self._resume(force, selection)
            else:
                self._start(selection)
            self.executor = self.make_executor()
            self._measure()
            status = "complete"
        except KeyboardInterrupt:
            self.summary.interrupted, status = True, "interrupted"
        except OSError as exc:
            failure = self._stopped(exc, self.run_dir / ROWS_FILE)
        finally:
            if self.executor is not None:
                self.executor.close(at_once=status != "complete")
            failure = self._finish(status) or failure
        if failure is not None:
            raise failure
        return self.summary

    def _start(self, selection: Mapping[str, Any] | None) -> None:
        """Write the new run's meta: a stub at once (the run is resumable from here on), then the full one."""
        self.meta = stub_meta(self.suite, selection)
        write_json(self.run_dir / META_FILE, self.meta)
        self._describe()

    def _describe(self) -> None:
        """Fill in what the meta still lacks (versions, device, git state: slow to find) and write it."""
        for key, value in run_meta(self.suite, None).items():
            self.meta.setdefault(key, value)
        write_json(self.run_dir / META_FILE, self.meta)

    def _resume(self, force: bool, selection: Mapping[str, Any] | None) -> None:
        """Check that the run is one of this suite with these settings (`force` lets other settings through,
        recorded), read its rows, keep a torn last row aside, and mark the run running again."""
        meta = read_meta(self.run_dir)
        recorded = meta["suite"]
        if recorded["name"] != self.suite.name or recorded.get("device", self.suite.device) != self.suite.device:
            raise RunError(
                f"{self.run_dir}: is a run of suite {recorded['name']!r} on {recorded.get('device')}, "
                f"not {self.suite.name!r} on {self.suite.device}"
            )
        found = changes(meta, self.suite)
        if found and not force:
            raise RunError(
                f"{self.run_dir}: the run was made with other settings ({'; '.join(found)}); resuming would mix "
                "two settings in one run. Resume with the run's own options, start a new run, or resume anyway "
                "with --force (recorded in its meta.json)"
            )
        self.summary.rows = read_rows(self.run_dir)  # every row checked before anything is written
        torn = repair_rows(self.run_dir)
        if torn:
            meta.setdefault("torn_rows", []).append(torn)
        resumed = {"at": timestamp(), "forced": bool(found), "changes": found, "selection": dict(selection or {})}
        meta.setdefault("resumes", []).append({**resumed, "fingerprint": suite_fingerprint(self.suite)})
        meta.update(status="running", finished_at=None)
        self.meta = meta
        self._describe()

    def _measure(self) -> None:
        """Measure the ceilings if the run lacks them, then every case it lacks: the driver loop. Cases that
        cannot run here are recorded at once; the executor's events bring the others' rows (or the loss of
        their worker), and this process appends each row as it arrives, whichever worker measured it."""
        if not self.meta.get("ceilings"):
            workers = getattr(self.executor, "ceiling_workers", None)
            found = device_ceilings(workers(), self.run_dir) if workers else self.executor.ceilings(self.run_dir)
            self.meta["ceilings"] = found
            write_json(self.run_dir / META_FILE, self.meta)
        record_devices(self.meta, self.executor.devices(), this_host())
        write_json(self.run_dir / META_FILE, self.meta)
        done = {row["case_id"] for row in self.summary.rows}
        todo = [case for case in self.suite.cases if case.case_id not in done]
        self.total = len(todo)
        here = {"host": this_host(), "index": None}
        runnable = []
        for case in todo:
            why = unsupported_reason(case, self.suite.device)
            if why is None:
                runnable.append(case)
                continue
            self._started(case)
            self._record(case, {**case.empty_row(), "status": "unsupported", "reason": why, "wall_s": 0.0}, here)
        for event in self.executor.events(runnable, self.meta["ceilings"]):
            if isinstance(event, Started):
                self._started(event.case)
            elif isinstance(event, Lost):
                self._record(event.case, lost_row(event.case, event.status, event.reason, event.wall_s), event.slot)
            else:
                self._record(event.case, event.row, event.slot)

    def _started(self, case: Case) -> None:
        """A case was handed to a worker: progress is told."""
        self.started += 1
        if self.on_case:
            self.on_case(self.started - 1, self.total, case, None)

    def _record(self, case: Case, row: dict[str, Any], slot: dict[str, Any]) -> None:
        """Append a finished case's row, with where it ran, to the run (and tell progress)."""
        row = {**row, "host": slot.get("host"), "device_index": slot.get("index")}
        append_row(self.run_dir, row)
        self.summary.rows.append(row)
        if self.on_case:
            self.on_case(self.started - 1, self.total, case, row)

    def _finish(self, status: str) -> RunStopped | None:
        """Mark the run `status` in its meta (once it has one); the error to raise when that cannot be written."""
        if self.meta is None:
            return None
        self.meta.update(status=status, finished_at=timestamp())
        try:
            write_json(self.run_dir / META_FILE, self.meta)
        except OSError as exc:
            return self._stopped(exc, self.run_dir / META_FILE)
        return None

    def _stopped(self, exc: OSError, path: Path) -> RunStopped:
        """The error that ends a run on a failed write: which file, why, and that the run can be finished."""
        return RunStopped(
            f"{exc.filename or path}: cannot write ({exc.strerror or exc}); the run stopped, every finished row is "
            f"kept ({len(self.summary.rows)} in {ROWS_FILE}). Make room (or fix the permissions) and finish it "
            "with --resume",
            self.run_dir,
        )


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
    event = outcome_event(case, workers.measure(case.to_dict(), ceilings, case.limits.case_timeout_s), {})
    return lost_row(case, event.status, event.reason, event.wall_s) if isinstance(event, Lost) else event.row


def unsupported_reason(case: Case, device: str, lacks: Callable[[str], str | None] | None = None) -> str | None:
    """Why `case` cannot run on `device` (the suite says so, `lacks` says so, or its implementation is not
    available here), or None when it can."""
    if case.unsupported:
        return case.unsupported
    from attnbench.mechanisms import registry  # the registry itself is light: it loads no kernel

    impl = registry.get(case.problem.mechanism).impl(case.impl)
    return (lacks(impl.target) if lacks else None) or impl.unavailable_reason(device)
