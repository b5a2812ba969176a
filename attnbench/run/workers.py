"""Worker processes seen from the runner: started, sent one request at a time, watched against a deadline.

A worker (`python -m attnbench.run.worker`) measures cases; the runner only talks to it through JSON lines on
its stdin and stdout. A reply that does not come within its budget ends the worker (`timeout`), a worker that
exits without replying is a `crash`; either way `WorkerLost` says which, and the slot starts a fresh worker for
the next case. Each worker writes its own log (`workers/worker-<n>.log` in the run folder), and a crash's reason
quotes only what that worker wrote while measuring the case that killed it.
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
from pathlib import Path
from typing import Any

from attnbench.measure.contention import case_budget_s

# A worker's imports (torch, its compilers) and its ceilings measurement can take minutes on a cold machine.
WORKER_START_TIMEOUT_S = 300.0


class WorkerLost(Exception):
    """The worker gave no reply: `status` is `timeout` (it was killed at its deadline) or `crash` (it died)."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


class Worker:
    """One worker process: `request()` sends a JSON line and waits for the reply up to a deadline.

    `log_path` receives the worker's stderr (and its stdout: the protocol has a pipe of its own). `env` is added
    to this process's environment; `cwd` is the folder the worker starts in (it comes first on the worker's
    `sys.path`, which matters when that folder holds an `attnbench` package of its own).
    """

    def __init__(
        self, device: str, log_path: Path, env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None
    ):
        self.log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the worker; closed in close()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "attnbench.run.worker", "--device", device],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,  # Ctrl-C reaches the runner, which decides; kill() takes the whole group
        )
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.process.stdout, selectors.EVENT_READ)
        self.buffer = b""
        self.log_path = log_path
        self.log_start = 0  # where the current request's part of the log begins
        self._read_reply(WORKER_START_TIMEOUT_S, "the worker did not start")

    def request(self, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send `message` and return the worker's reply; `WorkerLost` when none comes within `timeout_s`."""
        self.log_start = _size(self.log_path)
        try:
            self.process.stdin.write((json.dumps(message) + "\n").encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            raise WorkerLost("crash", self._death_reason()) from None
        return self._read_reply(timeout_s, f"no result within the case budget of {timeout_s:g} s")

    def _read_reply(self, timeout_s: float, timeout_reason: str) -> dict[str, Any]:
        """The next JSON line from the worker; the worker is killed when none is complete by the deadline."""
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
        """How the worker ended (exit code or signal) and the last lines it wrote to its log during this request."""
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.process.returncode
        cause = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        tail = _log_tail(self.log_path, self.log_start)
        return f"worker process died ({cause})" + (f": {tail}" if tail else "")

    def kill(self) -> None:
        """End the worker and every process it started, at once."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def close(self) -> None:
        """Ask the worker to exit, kill it if it does not within 10 s, and release its pipes and log."""
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
    """The current worker, started on first use and replaced after a failure. Worker `n` logs to
    `<log_dir>/worker-<n>.log` (numbers continue after the logs already there, so a resumed run keeps its
    earlier logs); the other arguments are `Worker`'s."""

    def __init__(
        self, device: str, log_dir: Path, env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None
    ):
        self.device, self.log_dir, self.env, self.cwd = device, Path(log_dir), env, cwd
        self.worker: Worker | None = None

    def get(self) -> Worker:
        """The running worker, started now (with a log of its own) if there is none."""
        if self.worker is None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.worker = Worker(self.device, self._next_log(), self.env, self.cwd)
        return self.worker

    def measure(self, case: dict[str, Any], ceilings: dict[str, Any], case_timeout_s: float) -> dict[str, Any]:
        """Measure one case (`Case.to_dict()`) on this slot's worker within its budget (`case_timeout_s`
        stretched by this host's load): `{"row": ...}` when the worker replied, `{"lost": {"status", "reason",
        "wall_s"}}` when it timed out or died. A worker that cannot go on is discarded; the next case starts a
        fresh one. The local runners and the cluster's worker actors all measure through this."""
        begin = time.perf_counter()
        message = {"op": "case", "case": case, "ceilings": ceilings}
        try:
            reply = self.get().request(message, case_budget_s(case_timeout_s))
        except WorkerLost as lost:
            self.discard()
            wall_s = round(time.perf_counter() - begin, 3)
            return {"lost": {"status": lost.status, "reason": lost.reason, "wall_s": wall_s}}
        if reply.get("fatal"):
            self.discard()
        return {"row": reply["row"]}

    def _next_log(self) -> Path:
        """The first free `worker-<n>.log` in the log folder."""
        taken = {path.name for path in self.log_dir.glob("worker-*.log")}
        return self.log_dir / next(
            f"worker-{n}.log" for n in range(1, len(taken) + 2) if f"worker-{n}.log" not in taken
        )

    def discard(self, at_once: bool = False) -> None:
        """End the current worker (if any); the next `get()` starts a fresh one. `at_once` kills it without
        waiting for the case it is measuring (the run is being stopped)."""
        if self.worker is not None:
            if at_once:
                self.worker.kill()
            self.worker.close()
            self.worker = None

    close = discard


def _size(path: Path) -> int:
    """The size of a file in bytes (0 when it cannot be read)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _log_tail(path: Path, start: int = 0, lines: int = 3) -> str:
    """The last lines a worker wrote to its log from byte `start` on, on one line, for the reason of a crash
    (at most the last 64 KiB are read: a worker that printed megabytes still gets a short reason)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(start, _size(path) - (1 << 16)))
            text = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])[-600:]
