"""A sweep that survives: cases measured in a worker process, rows written as each case ends.

The runner owns the run folder. It writes `meta.json` first (status `running`), appends one row per finished
case to `rows.jsonl`, and marks the run `complete` or `interrupted` at the end. A case that hangs past its
budget is recorded as `timeout`, a worker that dies as `crash`; either way the worker is replaced and the sweep
goes on. `resume` appends only the cases whose rows are missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnbench.measure import timing
from attnbench.measure.case import empty_row
from attnbench.measure.memory import method as memory_method
from attnbench.results import files as results
from attnbench.run import environment
from attnbench.suite.case import Case

if TYPE_CHECKING:
    from attnbench.suite.load import Suite

FLOP_CONVENTION = (
    "forward FLOPs from each mechanism's model (2 per multiply-add; softmax attention 4·B·H·T²·d, half when "
    "causal, softmax work not counted); backward = bwd_flops_factor × forward (2.5 for softmax attention, with "
    "recompute, as FlashAttention's benchmarks; 2 otherwise)"
)
WORKER_START_TIMEOUT_S = 300.0


class RunError(RuntimeError):
    """A run that cannot start or continue (an existing folder, a resume of another suite, ...)."""


class Interrupted(Exception):
    """SIGTERM (or Ctrl-C) arrived: finished rows are on disk, the run is marked interrupted."""


class WorkerLost(Exception):
    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass
class RunSummary:
    run_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False

    @property
    def counts(self) -> Counter:
        return Counter(row["status"] for row in self.rows)


class Worker:
    """One worker process: `request()` sends a JSON line and waits for the reply up to a deadline."""

    def __init__(self, device: str, log_path: Path, env: dict[str, str] | None = None):
        worker_env = {**os.environ, **(env or {})}
        self.log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the worker; closed in close()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "attnbench.run.worker", "--device", device],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=worker_env,
            start_new_session=True,  # Ctrl-C reaches the runner, which decides; kill() takes the whole group
        )
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.process.stdout, selectors.EVENT_READ)
        self.buffer = b""
        self.log_path = log_path
        self._read_reply(WORKER_START_TIMEOUT_S, "the worker did not start")

    def request(self, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        try:
            self.process.stdin.write((json.dumps(message) + "\n").encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            raise WorkerLost("crash", self._death_reason()) from None
        return self._read_reply(timeout_s, f"no result within the case budget of {timeout_s:g} s")

    def _read_reply(self, timeout_s: float, timeout_reason: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise WorkerLost("timeout", timeout_reason)
            if not self.selector.select(timeout=min(remaining, 1.0)):
                continue
            chunk = os.read(self.process.stdout.fileno(), 1 << 20)
            if not chunk:
                raise WorkerLost("crash", self._death_reason())
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    def _death_reason(self) -> str:
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.process.returncode
        cause = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        tail = _log_tail(self.log_path)
        return f"worker process died ({cause})" + (f": {tail}" if tail else "")

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(b'{"op": "exit"}\n')
                self.process.stdin.flush()
                self.process.wait(timeout=10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                pass
        self.kill()
        self.selector.close()
        self.log.close()


class WorkerSlot:
    """The current worker, started on first use and replaced after a failure."""

    def __init__(self, device: str, log_path: Path, env: dict[str, str] | None):
        self.device, self.log_path, self.env = device, log_path, env
        self.worker: Worker | None = None

    def get(self) -> Worker:
        if self.worker is None:
            self.worker = Worker(self.device, self.log_path, self.env)
        return self.worker

    def discard(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None

    close = discard


def new_run_dir(out_dir: Path, suite: Suite) -> Path:
    """A fresh folder `<out>/<suite>-<device>-<UTC time>`; never an existing one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = f"{suite.name}-{suite.device}-{stamp}"
    for attempt in range(1000):
        path = out_dir / (base if attempt == 0 else f"{base}-{attempt + 1}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RunError(f"{out_dir}: could not find a free run folder name for {base}")


def run_meta(suite: Suite, ceilings: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema_version": results.SCHEMA_VERSION,
        "suite": {"name": suite.name, "path": str(suite.path), "device": suite.device, "resolved": suite.resolved},
        "attnbench_version": environment.versions()["attnbench"],
        "git": environment.git_state(),
        "device": environment.device_info(suite.device),
        "versions": environment.versions(),
        "tf32": environment.tf32_flags(),
        "timer": {"method": timing.method(suite.device), **_asdict(suite.timing)},
        "limits": _asdict(suite.limits),
        "memory_method": memory_method(suite.device),
        "ceilings": ceilings,
        "flop_convention": FLOP_CONVENTION,
        "cases": len(suite.cases),
        "started_at": _now(),
        "finished_at": None,
        "status": "running",
        "command": environment.command_line(),
    }


def run_suite(
    suite: Suite,
    out_dir: Path | str = "results",
    *,
    resume: Path | str | None = None,
    on_case: Callable[[int, int, Case, dict[str, Any] | None], None] | None = None,
    worker_env: dict[str, str] | None = None,
) -> RunSummary:
    """Measure every case of `suite` into a new run folder under `out_dir`, or finish `resume`'s missing cases.

    `on_case(index, total, case, row)` is called before each case (row None) and after it (with its row), for
    progress reporting. Returns the run's rows (all of them, earlier ones included when resuming).
    """
    if resume is not None:
        run_dir = Path(resume)
        meta = results.read_meta(run_dir)
        if meta["suite"]["name"] != suite.name or meta["suite"]["device"] != suite.device:
            raise RunError(
                f"{run_dir}: is a run of suite {meta['suite']['name']!r} on {meta['suite']['device']}, "
                f"not {suite.name!r} on {suite.device}"
            )
        done = {row["case_id"] for row in results.read_rows(run_dir)}
        meta.update(status="running", resumed_at=_now())
        results.write_json(run_dir / results.META_FILE, meta)
    else:
        run_dir = new_run_dir(Path(out_dir), suite)
        done = set()
        meta = None

    summary = RunSummary(run_dir, rows=results.read_rows(run_dir) if resume is not None else [])
    todo = [case for case in suite.cases if case.case_id not in done]
    log_path = run_dir / "worker.log"
    previous_handler = signal.signal(signal.SIGTERM, _raise_interrupted)
    workers = WorkerSlot(suite.device, log_path, worker_env)
    try:
        if meta is None:
            try:
                ceilings = workers.get().request({"op": "ceilings"}, WORKER_START_TIMEOUT_S)
            except WorkerLost as lost:
                raise RunError(f"{run_dir}: could not measure the device's ceilings: {lost.reason}") from None
            meta = run_meta(suite, ceilings)
            results.write_json(run_dir / results.META_FILE, meta)
        for index, case in enumerate(todo):
            if on_case:
                on_case(index, len(todo), case, None)
            row = _run_one(workers, case, meta["ceilings"], suite.device)
            results.append_row(run_dir, row)
            summary.rows.append(row)
            if on_case:
                on_case(index, len(todo), case, row)
    except (KeyboardInterrupt, Interrupted):
        summary.interrupted = True
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        workers.close()
        if meta is None:
            meta = {"schema_version": results.SCHEMA_VERSION, "suite": {"name": suite.name}, "status": "failed"}
        meta.update(status="interrupted" if summary.interrupted else "complete", finished_at=_now())
        results.write_json(run_dir / results.META_FILE, meta)
    return summary


def _run_one(workers: WorkerSlot, case: Case, ceilings: dict[str, Any], device: str) -> dict[str, Any]:
    """The case's row; the worker is replaced when it timed out, died or poisoned its CUDA context."""
    if case.unsupported:
        return {**empty_row(case), "status": "unsupported", "reason": case.unsupported, "wall_s": 0.0}
    reason = _impl(case).unavailable_reason(device)
    if reason:
        return {**empty_row(case), "status": "unsupported", "reason": reason, "wall_s": 0.0}
    begin = time.perf_counter()
    try:
        reply = workers.get().request(
            {"op": "case", "case": case.to_dict(), "ceilings": ceilings}, case.limits.case_timeout_s
        )
    except WorkerLost as lost:
        workers.discard()
        row = {**empty_row(case), "status": lost.status, "reason": lost.reason}
        row["wall_s"] = round(time.perf_counter() - begin, 3)
        return row
    if reply.get("fatal"):
        workers.discard()
    return reply["row"]


def _impl(case: Case):
    from attnbench.mechanisms import registry

    return registry.get(case.problem.mechanism).impl(case.impl)


def _raise_interrupted(signum, frame):
    raise Interrupted(f"signal {signum}")


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])[-600:]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _asdict(record) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(record)
