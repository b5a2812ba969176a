"""Run folders: a fresh one for every run, never an existing one.

A folder is named after what it holds and when it was started, `<suite>-<device>-<UTC time>` for a run and
`<suite>-<device>-ab-<UTC time>` for the pair of runs of an A/B job; a second run started within the same second
gets `-2`, `-3`, ... Creating the folder is what claims the name, so two runs started together never share one.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

MAX_ATTEMPTS = 1000


class RunError(RuntimeError):
    """A run that cannot start or continue (no free folder name, a resume of another suite, no ceilings, ...)."""


def fresh_run_dir(out_dir: Path, prefix: str) -> Path:
    """Create and return `<out_dir>/<prefix>-<UTC time>` (or the first free `...-<n>` after it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base = f"{prefix}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"
    for attempt in range(MAX_ATTEMPTS):
        path = out_dir / (base if attempt == 0 else f"{base}-{attempt + 1}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RunError(f"{out_dir}: could not find a free run folder name for {base}")
