"""Sweeps on a Ray cluster (`attnbench run SUITE --executor ray [--address auto]`).

One worker actor per GPU of the cluster (`num_gpus=1`, so Ray gives it one GPU of its own and sets its
`CUDA_VISIBLE_DEVICES`); on a run on the CPU, one actor per node, or N actors spread over the nodes with
`--devices cpu:N`. Each actor holds a `WorkerSlot`: the same isolated worker process, case budget and statuses
as a local run, on the actor's node. The driver hands each idle actor the longest case left and turns what
comes back into the runner's events: a row (`Arrived`), or the loss of the actor (`Lost`, a `crash` row
naming the actor and its host: it was killed, its process died, or its node left the cluster). A lost actor is
replaced (Ray places the new one where resources are free) and the sweep goes on; when no actor can be placed
for `WORKER_START_TIMEOUT_S`, the run stops as failed, with every finished row kept for `--resume`.

Ray is an optional dependency (`pip install 'attnbench[ray]'`) and is imported only here, only when a run
asks for it. The nodes need the same attnbench (and mechanism plug-ins) installed as the driver's machine.
Workers log on their own node, under the temporary folder's `attnbench-ray/`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnbench.run.devices import DeviceSlot, slot_description
from attnbench.run.executors import Event, Lost, Started, longest_first, outcome_event
from attnbench.run.folders import RunError
from attnbench.run.workers import WORKER_START_TIMEOUT_S, WorkerLost, WorkerSlot
from attnbench.suite.case import Case

INSTALL_HINT = "pip install 'attnbench[ray]'"
# Passed on to the actors, so that their workers load the same out-of-tree mechanisms as the driver.
FORWARDED_ENV = ("ATTNBENCH_MECHANISMS",)


def require_ray() -> None:
    """`RunError` with the install command when Ray is not installed here."""
    if importlib.util.find_spec("ray") is None:
        raise RunError(f"--executor ray needs Ray, which is not installed here: {INSTALL_HINT}")


def factory(device: str, slots: Sequence[DeviceSlot] | None, address: str | None):
    """How a run makes its Ray executor (checked now: Ray installed, `--devices` only `cpu:N` or `all`)."""
    require_ray()
    if slots and any(slot.kind == "cuda" for slot in slots):
        raise RunError(
            "--devices with --executor ray: the cluster's GPUs are used, one worker actor each; only 'all' or "
            "'cpu:N' (N CPU slots on a cluster without GPUs) go with it"
        )
    cpu_slots = len(slots) if slots and device == "cpu" and len(slots) > 1 else None
    return lambda log_dir, env: RayExecutor(device, address, env, cpu_slots)


class SlotActor:
    """A worker slot on a cluster node (a Ray actor: one process there, with its own GPU on a GPU run)."""

    def __init__(self, device: str, index: int, env: dict[str, str]):
        self.device, self.index = device, index
        log_dir = Path(tempfile.gettempdir()) / "attnbench-ray" / f"slot-{index}-{os.getpid()}"
        self.workers = WorkerSlot(device, log_dir, env)

    def describe(self) -> dict[str, Any]:
        """Where this actor runs: its host, the GPU Ray gave it (or its slot number on the CPU), and the device
        as its worker sees it. Asking the worker starts it now, with the other actors' (this process never
        imports torch, so it holds no CUDA context of its own on the GPU being measured)."""
        import ray

        gpus = ray.get_gpu_ids()
        slot = DeviceSlot(self.device, int(gpus[0]) if gpus else self.index)
        try:
            info = self.workers.get().request({"op": "device"}, WORKER_START_TIMEOUT_S)
        except WorkerLost as lost:  # its first case will say so too, as a crash
            self.workers.discard()
            info = {"type": self.device, "name": f"unknown (the worker did not start: {lost.reason})"}
        return slot_description(slot, info, socket.gethostname())

    def ceilings(self) -> dict[str, Any]:
        """The device's ceilings measured by this actor's worker, or `{"lost": reason}`."""
        try:
            return self.workers.get().request({"op": "ceilings"}, WORKER_START_TIMEOUT_S)
        except WorkerLost as lost:
            self.workers.discard()
            return {"lost": lost.reason}

    def measure(self, case: dict[str, Any], ceilings: dict[str, Any], case_timeout_s: float) -> dict[str, Any]:
        """One case measured by this actor's worker (`WorkerSlot.measure`)."""
        return self.workers.measure(case, ceilings, case_timeout_s)

    def close(self) -> None:
        """End the worker process."""
        self.workers.close()


@dataclass
class _Actor:
    """A started actor: its handle, its slot number, when it was started and (once ready) its description."""

    handle: Any
    number: int
    started: float
    description: dict[str, Any] | None = None


class RayExecutor:
    """One `SlotActor` per GPU of the cluster (or per node, or `cpu_slots` of them, on a CPU run); the events
    of the cases they measure, as the runner's driver loop consumes them."""

    def __init__(self, device: str, address: str | None, env: dict[str, str] | None, cpu_slots: int | None):
        import ray

        self.ray, self.device = ray, device
        self.owns_cluster = not ray.is_initialized()
        if self.owns_cluster:
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise RunError(f"--address {address}: cannot reach a Ray cluster there ({exc})") from None
        forwarded = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        self.env = {**forwarded, **(env or {})}
        self.placements = self._placements(cpu_slots)
        self.actors = [self._start(number) for number in range(len(self.placements))]
        self._await_ready(self.actors)

    def _placements(self, cpu_slots: int | None) -> list[dict[str, Any]]:
        """The Ray options of each actor: one GPU each; on the CPU one per node (or `cpu_slots`, spread)."""
        ray = self.ray
        if self.device == "cuda":
            gpus = int(ray.cluster_resources().get("GPU", 0))
            if gpus < 1:
                raise RunError("the Ray cluster has no GPU: run with --device cpu, or add nodes with GPUs")
            return [{"num_gpus": 1, "num_cpus": 1}] * gpus
        if cpu_slots:
            return [{"num_cpus": 1, "scheduling_strategy": "SPREAD"}] * cpu_slots
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = [node["NodeID"] for node in ray.nodes() if node.get("Alive")]
        return [{"num_cpus": 1, "scheduling_strategy": NodeAffinitySchedulingStrategy(n, soft=True)} for n in nodes]

    def _start(self, number: int) -> _Actor:
        """Start slot `number`'s actor (placed by Ray when its resources are free)."""
        options = {**self.placements[number], "max_restarts": 0, "max_concurrency": 1}
        handle = self.ray.remote(SlotActor).options(**options).remote(self.device, number, self.env)
        return _Actor(handle, number, time.monotonic())

    def _await_ready(self, actors: Sequence[_Actor]) -> None:
        """Wait until every actor is placed and has described itself; `RunError` past the start timeout."""
        refs = [actor.handle.describe.remote() for actor in actors]
        try:
            found = self.ray.get(refs, timeout=WORKER_START_TIMEOUT_S)
        except self.ray.exceptions.GetTimeoutError:
            raise RunError(
                f"the Ray cluster did not place {len(actors)} worker actor(s) within {WORKER_START_TIMEOUT_S:g} s "
                "(are its resources taken by another job?)"
            ) from None
        for actor, description in zip(actors, found, strict=True):
            actor.description = description

    def devices(self) -> list[dict[str, Any]]:
        """Where each actor runs and what its device is, for the run's meta."""
        return [actor.description for actor in self.actors if actor.description]

    def ceilings(self, run_dir: Path) -> dict[str, Any]:
        """The ceilings measured by the first actor's worker (the rows' fractions of peak are against them)."""
        found = self.ray.get(self.actors[0].handle.ceilings.remote())
        if "lost" in found:
            raise RunError(f"{run_dir}: could not measure the device's ceilings: {found['lost']}")
        return found

    def events(self, cases: Sequence[Case], ceilings: dict[str, Any]) -> Iterator[Event]:
        """Hand each idle actor the longest case left; yield each case's start and outcome as they come."""
        todo, idle = deque(longest_first(cases)), deque(self.actors)
        running: dict[Any, tuple[_Actor, Case, float]] = {}
        starting: dict[Any, _Actor] = {}
        while todo or running:
            while todo and idle:
                actor, case = idle.popleft(), todo.popleft()
                ref = actor.handle.measure.remote(case.to_dict(), ceilings, case.limits.case_timeout_s)
                running[ref] = (actor, case, time.monotonic())
                yield Started(case, actor.description)
            if not running and todo:
                self._check_placement(starting, len(todo))
            done, _ = self.ray.wait([*running, *starting], num_returns=1, timeout=1.0)
            for ref in done:
                if ref in starting:
                    idle.append(self._ready(starting.pop(ref), ref))
                    continue
                actor, case, begin = running.pop(ref)
                try:
                    outcome = self.ray.get(ref)
                except self.ray.exceptions.RayError as exc:
                    wall_s = round(time.monotonic() - begin, 3)
                    yield Lost(case, "crash", _lost_reason(actor, exc), wall_s, actor.description or {})
                    replacement = self._replace(actor)
                    starting[replacement.handle.describe.remote()] = replacement
                    continue
                idle.append(actor)
                yield outcome_event(case, outcome, actor.description)

    def _ready(self, actor: _Actor, ref: Any) -> _Actor:
        """A replacement actor that has described itself, ready for cases."""
        actor.description = self.ray.get(ref)
        return actor

    def _replace(self, lost: _Actor) -> _Actor:
        """Drop a lost actor and start another in its place (Ray places it where resources are free)."""
        with contextlib.suppress(Exception):
            self.ray.kill(lost.handle)
        replacement = self._start(lost.number)
        self.actors[self.actors.index(lost)] = replacement
        return replacement

    def _check_placement(self, starting: dict[Any, _Actor], left: int) -> None:
        """`RunError` when cases are left, none is running, and no actor could be placed for the start timeout."""
        oldest = min((actor.started for actor in starting.values()), default=None)
        if oldest is None or time.monotonic() - oldest > WORKER_START_TIMEOUT_S:
            raise RunError(
                f"every worker actor was lost and none could be placed again within {WORKER_START_TIMEOUT_S:g} s; "
                f"{left} case(s) left: finish the run with --resume once the cluster has room"
            )

    def close(self, at_once: bool = False) -> None:
        """End every actor (asking its worker to exit first unless `at_once`), and the cluster if this run
        started it."""
        if not at_once:
            refs = [actor.handle.close.remote() for actor in self.actors]
            with contextlib.suppress(Exception):
                self.ray.wait(refs, num_returns=len(refs), timeout=15)
        for actor in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(actor.handle)
        if self.owns_cluster:
            self.ray.shutdown()


def _lost_reason(actor: _Actor, exc: BaseException) -> str:
    """Why a case has no row: the actor (and its host) that was lost, and Ray's first line about it."""
    where = (actor.description or {}).get("host") or "an unknown node"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"worker actor {actor.number} on {where} was lost ({type(exc).__name__}: {first[:300]})"
