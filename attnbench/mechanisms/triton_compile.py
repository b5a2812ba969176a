"""Ahead-of-time compilation of every Triton kernel launch for NVIDIA GPUs, on a machine without one.

`python -m attnbench.mechanisms.triton_compile` traces every launch of every `triton` implementation
(triton_trace), compiles each distinct one for sm_90 (H100/H200) and sm_80 (A100) with Triton's own compiler
and the wheel's ptxas (triton_jobs), and writes `docs/KERNELS.md`, the shared-memory figures that
`triton_common.launchable` prunes autotune configs with, and the results cache (triton_table). `--check`
writes nothing and exits 1 on a compile error, a launch that cannot fit its target's shared memory, a kernel
no traced case reaches, or a committed file that differs from what it would write.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from attnbench.mechanisms.triton_jobs import Figures

# Every job's figures by `job_key`, committed: the check compiles only jobs missing from it (plus one probe per
# kernel and target), which keeps it to minutes on two cores when few kernels changed.
CACHE_FILE = "attnbench/mechanisms/triton_compile_cache.json"


def load_cache(path: Path) -> dict[str, Figures]:
    """The committed results, `job_key` -> Figures (empty when the file is missing)."""
    return {key: Figures(**value) for key, value in json.loads(path.read_text()).items()} if path.exists() else {}


def dump_cache(figures: dict[str, Figures]) -> str:
    """JSON of figures by `job_key`, what `load_cache` reads."""
    return json.dumps({key: asdict(value) for key, value in sorted(figures.items())}, indent=0) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Trace, compile, and write (or `--check`) the table, the shared-memory figures and the results cache."""
    parser = argparse.ArgumentParser(prog="python -m attnbench.mechanisms.triton_compile", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if anything fails or the committed files differ")
    parser.add_argument("--fresh", action="store_true", help="compile every job, ignoring the committed results")
    parser.add_argument("--workers", type=int, default=None, help="compile processes (default: one per CPU)")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2], help="repository root")
    args = parser.parse_args(argv)
    os.environ["TRITON_INTERPRET"] = "0"  # before any kernel module is imported: compile, do not interpret
    from attnbench.mechanisms import triton_table

    cache_path = args.root / CACHE_FILE
    known = {} if args.fresh else load_cache(cache_path)
    started = time.perf_counter()
    save = None if args.check else (lambda figures: cache_path.write_text(dump_cache(figures)))
    rows, launches, disagreeing = triton_table.collect(args.workers, known, save)
    problems = triton_table.problems(rows, launches)
    problems += [f"cached figures disagree with a fresh compile of {job.kernel} (sm_{job.capability}): {was}; "
                 "rerun with --fresh" for job, was in disagreeing.items()]  # fmt: skip
    doc = args.root / triton_table.KERNELS_DOC
    notes = doc.read_text().split(triton_table.NOTES_MARK, 1)[-1].lstrip("\n") if doc.exists() else ""
    current = {row["key"]: row["figures"] for row in rows}
    written = {**triton_table.outputs(rows, launches, notes), CACHE_FILE: dump_cache(current)}
    stale = []
    for relative, text in written.items():
        path = args.root / relative
        if args.check and (not path.exists() or path.read_text() != text):
            stale.append(f"{relative} is not current: run python -m attnbench.mechanisms.triton_compile")
        elif not args.check:
            path.write_text(text)
    for problem in problems + stale:
        print(problem, file=sys.stderr)
    compiled = len({row["key"] for row in rows})
    print(f"{len(rows)} launch configs, {compiled} compilations, {len(problems)} problems, "
          f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    return 1 if problems or stale else 0


if __name__ == "__main__":
    sys.exit(main())
