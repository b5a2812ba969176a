"""Run folders: a fresh one for every run, never an existing one, one writer at a time, torn rows kept aside.

A folder is named after what it holds and when it was started, `<suite>-<device>-<UTC time>` for a run and
`<suite>-<device>-ab-<UTC time>` for the pair of runs of an A/B job; a second run started within the same second
gets `-2`, `-3`, ... Creating the folder is what claims the name, so two runs started together never share one.
The process that writes a run holds its lock (`run.lock`, an advisory `flock` that the kernel releases when the
process ends, however it ends), so a second `--resume` of the same run is refused instead of duplicating rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from attnbench.results.files import LOCK_FILE, ROWS_FILE, ResultsError, refuse_results_path, timestamp

MAX_ATTEMPTS = 1000


class RunError(RuntimeError):
    """A run that cannot start or continue (no free folder name, a resume of another suite, no ceilings, ...)."""


def fresh_run_dir(out_dir: Path, prefix: str) -> Path:
    """Create and return `<out_dir>/<prefix>-<UTC time>` (or the first free `...-<n>` after it). `RunError` when
    `out_dir` is (or lies inside) a run folder, or the folder cannot be created there."""
    try:
        refuse_results_path(out_dir)
    except ResultsError as exc:
        raise RunError(f"{exc}: a new run goes in a folder of runs, such as results/ (-o)") from None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        return _claim(out_dir, prefix)
    except OSError as exc:
        raise RunError(f"{exc.filename or out_dir}: cannot create a run folder there ({exc.strerror or exc})") from None


def _claim(out_dir: Path, prefix: str) -> Path:
    """Create the first free `<out_dir>/<prefix>-<UTC time>[-<n>]` folder."""
    base = f"{prefix}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"
    for attempt in range(MAX_ATTEMPTS):
        path = out_dir / (base if attempt == 0 else f"{base}-{attempt + 1}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RunError(f"{out_dir}: could not find a free run folder name for {base}")


@contextlib.contextmanager
def locked_run(run_dir: Path) -> Iterator[None]:
    """Hold the run's lock for the block: `RunError` at once when another process holds it. The lock file
    records the holder's process id, for the message; the lock itself dies with the process."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunError(f"{path}: cannot open the run's lock ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunError(
                f"{run_dir}: another attnbench process (pid {holder}) is writing this run; let it finish, or stop "
                "it, before resuming"
            ) from None
        with contextlib.suppress(OSError):  # the pid is only for the message above
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


class RunStopped(RunError):
    """A run that started and then had to stop (a write failed): its folder holds every finished row, and
    `--resume` finishes it once the cause is fixed."""

    def __init__(self, message: str, run_dir: Path):
        super().__init__(message)
        self.run_dir = run_dir


def repair_rows(run_dir: Path) -> dict[str, Any] | None:
    """Cut a torn last line off a run's `rows.jsonl` (a row the run was killed while writing) and keep it aside
    in `rows.torn-<time>.jsonl`, so that the next row starts on a fresh line and nothing is silently dropped.

    Returns what was kept aside (`file`, `bytes`, `found_at`), or None when the file ends cleanly. A last line
    that is complete JSON but lacks its newline only gets the newline. Only the run's writer calls this.
    """
    path = Path(run_dir) / ROWS_FILE
    if not path.is_file():
        return None
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return None
    cut = data.rfind(b"\n") + 1
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        if isinstance(json.loads(data[cut:].decode()), dict):
            with open(path, "ab") as f:
                f.write(b"\n")
                os.fsync(f.fileno())
            return None
    found_at = timestamp()
    stamp = found_at.replace(":", "").replace("+0000", "Z")
    aside = next(
        path.with_name(name)
        for name in (f"rows.torn-{stamp}{f'-{n}' if n else ''}.jsonl" for n in range(1000))
        if not path.with_name(name).exists()
    )
    aside.write_bytes(data[cut:] + b"\n")
    with open(path, "r+b") as f:
        f.truncate(cut)
        os.fsync(f.fileno())
    return {"file": aside.name, "bytes": len(data) - cut, "found_at": found_at}
