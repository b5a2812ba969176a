"""Where a sweep's cases are measured, seen by the runner as a stream of events.

An executor takes the cases a run still lacks and reports, for each, that it started (`Started`) and then
either that its row arrived (`Arrived`) or that its worker was lost while measuring it (`Lost`: a timeout, a
dead process, a dead cluster node). The runner's one driver loop consumes these events and writes every row
to the run folder itself, whichever executor measured it, so the run folder, its lock, resume and the final
status behave the same everywhere.

- `SerialExecutor`: one worker on the suite's device, cases in the suite's order (a run without `--devices`);
- `PoolExecutor`: one worker per device slot (`--devices`), each fed by a thread, longest cases first;
- `attnbench.run.ray_executor.RayExecutor`: one worker actor per GPU of a Ray cluster (`--executor ray`).

Every worker is the same isolated process (`attnbench.run.worker`) behind a `WorkerSlot`, so the isolation,
the case budget and the statuses are the same in all three.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnbench.run.devices import DeviceSlot, slot_description
from attnbench.run.folders import RunError
from attnbench.run.workers import WORKER_START_TIMEOUT_S, WorkerLost, WorkerSlot
from attnbench.suite.case import Case


@dataclass(frozen=True)
class Started:
    """A case was handed to a worker (`slot` describes where: host, index, device)."""

    case: Case
    slot: dict[str, Any]


@dataclass(frozen=True)
class Arrived:
    """A case's row came back from its worker."""

    case: Case
    row: dict[str, Any]
    slot: dict[str, Any]


@dataclass(frozen=True)
class Lost:
    """The worker measuring a case was lost: `status` is `timeout` or `crash`, `reason` says how."""

    case: Case
    status: str
    reason: str
    wall_s: float
    slot: dict[str, Any]


Event = Started | Arrived | Lost


def outcome_event(case: Case, outcome: dict[str, Any], slot: dict[str, Any]) -> Arrived | Lost:
    """The event of a `WorkerSlot.measure` outcome."""
    if "lost" in outcome:
        lost = outcome["lost"]
        return Lost(case, lost["status"], lost["reason"], lost["wall_s"], slot)
    return Arrived(case, outcome["row"], slot)


def lost_row(case: Case, status: str, reason: str, wall_s: float) -> dict[str, Any]:
    """The row of a case whose worker was lost: the case's key, its status and the reason."""
    return {**case.empty_row(), "status": status, "reason": reason, "wall_s": wall_s}


def case_cost(case: Case) -> float:
    """An estimate of how long a case takes, for ordering only: its FLOPs by the mechanism's model (a case that
    will not run costs nothing)."""
    if case.unsupported:
        return 0.0
    from attnbench.mechanisms import registry  # light: the registry loads no kernel

    return float(registry.get(case.problem.mechanism).flops_for(case.problem, case.mode))


def longest_first(cases: Sequence[Case]) -> list[Case]:
    """The cases by estimated cost, largest first (ties in the suite's order), so that a sharded sweep does not
    end waiting on one long case that started last."""
    return sorted(cases, key=case_cost, reverse=True)


def device_ceilings(workers: WorkerSlot, run_dir: Path) -> dict[str, Any]:
    """The device's ceilings, measured by the slot's worker (which also proves that a worker starts)."""
    try:
        return workers.get().request({"op": "ceilings"}, WORKER_START_TIMEOUT_S)
    except WorkerLost as lost:
        raise RunError(f"{run_dir}: could not measure the device's ceilings: {lost.reason}") from None


def this_host() -> str:
    """The name of the machine this process runs on, as rows record it."""
    return socket.gethostname()


class SerialExecutor:
    """One worker on the suite's device, measuring the cases in the suite's order: the runner without
    `--devices`, exactly as it always ran. Rows record the host and device index 0 (GPU 0 as the worker sees
    it; None on the CPU)."""

    def __init__(self, device: str, log_dir: Path, env: dict[str, str] | None = None):
        self.device = device
        self.workers = WorkerSlot(device, log_dir, env)
        self.slot = {"host": this_host(), "index": 0 if device == "cuda" else None}

    def ceiling_workers(self) -> WorkerSlot:
        """The worker slot that measures the run's ceilings."""
        return self.workers

    def devices(self) -> list[dict[str, Any]]:
        """What the meta records of the devices (none beyond the run's own device)."""
        return []

    def events(self, cases: Sequence[Case], ceilings: dict[str, Any]) -> Iterator[Event]:
        """Measure the cases one by one, yielding each case's start and outcome."""
        for case in cases:
            yield Started(case, self.slot)
            outcome = self.workers.measure(case.to_dict(), ceilings, case.limits.case_timeout_s)
            yield outcome_event(case, outcome, self.slot)

    def close(self, at_once: bool = False) -> None:
        """End the worker (at once: without waiting for its case)."""
        self.workers.close(at_once=at_once)


@dataclass
class _Lane:
    """One device slot of a pool: its worker slot and how rows describe it."""

    slot: DeviceSlot
    workers: WorkerSlot
    description: dict[str, Any]


class _LaneDone:
    """A lane's thread has ended (no case left, or the run is stopping)."""


@dataclass(frozen=True)
class _LaneFailed:
    """A lane's thread failed outside any case (a bug, not a worker's failure): the run stops with it."""

    error: BaseException


class PoolExecutor:
    """One worker per device slot (`--devices`), each fed by a thread of its own from one queue of cases,
    longest first. Each worker sees only its device (`CUDA_VISIBLE_DEVICES`), logs to `<log_dir>/<slot>/`, and
    is replaced after a timeout or a crash like the serial runner's; the threads only wait on their workers,
    while the runner's thread writes every row."""

    def __init__(
        self,
        device: str,
        slots: Sequence[DeviceSlot],
        log_dir: Path,
        env: dict[str, str] | None = None,
        describe: Callable[[DeviceSlot], dict[str, Any]] | None = None,
    ):
        if not slots:
            raise RunError("no device to run on (--devices named none)")
        self.device = device
        self.lanes = [
            _Lane(
                slot,
                WorkerSlot(device, Path(log_dir) / slot.label.replace(":", "-"), {**(env or {}), **slot.env}),
                (describe or _describe_slot)(slot),
            )
            for slot in slots
        ]
        self.stopping = threading.Event()
        self.todo: deque[Case] = deque()
        self.todo_lock = threading.Lock()
        self.events_queue: queue.Queue = queue.Queue()
        self.threads: list[threading.Thread] = []
        self.waiting_lanes, self.all_ready = len(self.lanes), threading.Event()

    def ceiling_workers(self) -> WorkerSlot:
        """The first slot's worker measures the run's ceilings (then goes on to measure cases)."""
        return self.lanes[0].workers

    def devices(self) -> list[dict[str, Any]]:
        """Where each slot's worker runs and what its device is, for the run's meta."""
        return [lane.description for lane in self.lanes]

    def events(self, cases: Sequence[Case], ceilings: dict[str, Any]) -> Iterator[Event]:
        """Start one thread per slot and yield the events of every case as they come, until all are done."""
        self.todo.extend(longest_first(cases))
        self.threads = [
            threading.Thread(target=self._serve, args=(lane, ceilings), name=f"attnbench-{lane.slot.label}")
            for lane in self.lanes
        ]
        for thread in self.threads:
            thread.daemon = True
            thread.start()
        running = len(self.threads)
        while running:
            try:
                event = self.events_queue.get(timeout=0.5)  # wakes up so that Ctrl-C is handled promptly
            except queue.Empty:
                continue
            if isinstance(event, _LaneDone):
                running -= 1
            elif isinstance(event, _LaneFailed):
                raise event.error
            else:
                yield event

    def _serve(self, lane: _Lane, ceilings: dict[str, Any]) -> None:
        """A lane's thread: start its worker, wait for the other lanes' (so that the longest cases go one to
        each device, not all to the device whose worker was up first), then take the next case, measure it
        on the lane's worker and report, until none is left."""
        try:
            with contextlib.suppress(WorkerLost):  # a worker that cannot start is the first case's crash
                lane.workers.get()
            self._lane_ready()
            while not self.stopping.is_set():
                with self.todo_lock:
                    case = self.todo.popleft() if self.todo else None
                if case is None:
                    break
                self.events_queue.put(Started(case, lane.description))
                outcome = lane.workers.measure(case.to_dict(), ceilings, case.limits.case_timeout_s)
                if self.stopping.is_set():
                    break  # the run is stopping: its worker was killed under it, which is no crash of the case
                self.events_queue.put(outcome_event(case, outcome, lane.description))
        except BaseException as exc:  # reported to the runner's thread, which stops the run with it
            self.events_queue.put(_LaneFailed(exc))
        finally:
            self.events_queue.put(_LaneDone())

    def _lane_ready(self) -> None:
        """Count this lane as started, and wait (up to the start timeout) until every lane is."""
        with self.todo_lock:
            self.waiting_lanes -= 1
            if self.waiting_lanes == 0:
                self.all_ready.set()
        self.all_ready.wait(timeout=WORKER_START_TIMEOUT_S)

    def close(self, at_once: bool = False) -> None:
        """Stop handing out cases, end every worker (at once: killing those still measuring) and the threads."""
        self.stopping.set()
        self.all_ready.set()
        if at_once:
            for lane in self.lanes:
                worker = lane.workers.worker
                if worker is not None:
                    with contextlib.suppress(OSError):
                        worker.kill()
        for thread in self.threads:
            thread.join(timeout=30)
        for lane in self.lanes:
            lane.workers.close(at_once=at_once)


def _describe_slot(slot: DeviceSlot) -> dict[str, Any]:
    """A slot as the meta records it: this host, the slot's index, its device's name and class."""
    from attnbench.run import environment

    info = environment.device_info(slot.kind, slot.index if slot.kind == "cuda" else 0)
    return slot_description(slot, info)
