"""The A/B runner: two revisions' mechanisms measured interleaved on one device, then gated B against A.

Each side is a package assembled in a temporary folder (`checkout`): this checkout's harness with the side's
`attnbench/mechanisms/`. Each side has its own worker, started in its folder, so each measures its own code.
Case by case, each side measures the case in `rounds` rounds, alternating the order (A B, B A, ...), so that a
drift in the machine's state hits both sides alike; the rounds' rows are merged into one row per side.

The sides reuse the runner's pieces: its worker slot, its per-case step (`run_case`, unsupported and unavailable
cases included), its folder naming, its meta and its SIGTERM handling.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from attnbench.gate.settings import DEFAULT_SETTINGS, GateSettings
from attnbench.gate.verdicts import Comparison, compare_paths
from attnbench.results.baseline import device_slug
from attnbench.results.files import META_FILE, append_row, timestamp, write_json
from attnbench.run import environment
from attnbench.run.folders import RunError, fresh_run_dir
from attnbench.run.meta import run_meta
from attnbench.run.runner import WORKER_LOG, OnCase, device_ceilings, run_case, sigterm_interrupts
from attnbench.run.workers import WorkerSlot
from attnbench.suite.case import Case

if TYPE_CHECKING:
    from attnbench.suite.load import Suite

TIMED_STATUSES = ("ok", "numerics_fail")  # statuses whose rows carry timing samples


@dataclass(frozen=True)
class Checkout:
    """One side of an A/B run: a folder holding an `attnbench` package, whose code the side's worker runs.

    `files` lists the mechanism files the side's revision has (paths below `attnbench/`, as
    `mechanisms/softmax/sdpa.py`); an implementation whose module is not among them is recorded as unsupported on
    that side. None: the package is the revision's whole, nothing to check.
    """

    label: str  # "A" or "B"
    ref: str  # as the user named it: a git revision or a folder
    root: Path
    commit: str | None
    env: Mapping[str, str] = field(default_factory=dict)  # extra environment of the side's worker
    files: frozenset[str] | None = None

    def lacks(self, target: str) -> str | None:
        """Why this side cannot run the implementation `module:function`, or None when it can."""
        module = target.split(":", 1)[0]
        if self.files is None or not module.startswith("attnbench.mechanisms."):
            return None
        path = module.removeprefix("attnbench.").replace(".", "/")
        if f"{path}.py" in self.files or f"{path}/__init__.py" in self.files:
            return None
        return f"{self.ref} has no attnbench/{path}.py"

    def worker_env(self) -> dict[str, str]:
        """The environment that makes a worker import this side's package: its folder first on the path.

        The worker also starts in that folder: `python -m` puts the working folder first on `sys.path`, ahead of
        PYTHONPATH, so a worker started from a checkout of attnbench would import that checkout whatever the side
        (PYTHONSAFEPATH drops that entry where Python has it)."""
        path = os.pathsep.join(filter(None, [str(self.root.resolve()), os.environ.get("PYTHONPATH")]))
        return {"PYTHONPATH": path, "PYTHONSAFEPATH": "1", **self.env}


def checkout(ref: str, dest: str | os.PathLike, label: str, *, repo: str | os.PathLike = ".") -> Checkout:
    """A package for one side: this checkout's harness (suite, worker, timing, numerics: the same for both
    sides, so both are measured alike) with `attnbench/mechanisms/` (specs, references, kernels) from `ref`.

    `ref` is a folder holding `attnbench/` (a working tree with uncommitted changes, say) or a git revision of
    `repo`, read with `git archive` (read-only: no worktree, branch or index of the repository is touched).
    Mechanism folders `ref` lacks keep this checkout's files, so the registry still imports; their
    implementations are recorded as unsupported on that side (`Checkout.lacks`). Raises `RunError`.
    """
    import attnbench

    package = Path(dest) / "attnbench"
    shutil.copytree(Path(attnbench.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    folder = Path(ref)
    if (folder / "attnbench" / "mechanisms").is_dir():
        state = environment.git_state(folder.resolve())
        commit = state["commit"] and state["commit"] + ("-dirty" if state["dirty"] else "")
        source = folder / "attnbench" / "mechanisms"
        shutil.copytree(
            source, package / "mechanisms", dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
        )
        files = {f"mechanisms/{path.relative_to(source).as_posix()}" for path in source.rglob("*") if path.is_file()}
        return Checkout(label, ref, Path(dest), commit, files=frozenset(files))
    commit = _git(repo, "rev-parse", "--verify", "--end-of-options", f"{ref}^{{commit}}").decode().strip()
    archive = _git(repo, "archive", "--format=tar", commit, "--", "attnbench/mechanisms")
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        members = [member for member in tar.getmembers() if member.isfile()]
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")  # refuses links and paths that leave dest
        else:
            tar.extractall(dest)
    files = {member.name.removeprefix("attnbench/") for member in members}
    return Checkout(label, ref, Path(dest), commit, files=frozenset(files))


def _git(repo: str | os.PathLike, *args: str) -> bytes:
    """The output of `git -C repo ARGS`; `RunError` with git's message when it fails."""
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RunError(f"git {' '.join(args[:1])} failed: {exc}") from None
    if done.returncode != 0:
        raise RunError(f"git {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def merge_rounds(case: Case, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One row from the rounds of one case on one side: the samples of every round, their statistics, the
    numerics of the first round (the only one that checks them); the first failing round's status wins."""
    failed = next((index for index, row in enumerate(rows) if row["status"] not in TIMED_STATUSES), None)
    if failed is not None:
        row = dict(rows[failed])
        if len(rows) > 1:
            row["reason"] = f"round {failed + 1} of {len(rows)}: {row.get('reason')}"
        return {**row, **case.row_base()}
    samples = [sample for row in rows for sample in row["time_samples_ms"]]
    median = float(np.median(samples))
    first = rows[0]
    merged = {
        **first,
        "time_ms": median,
        "time_p20_ms": float(np.percentile(samples, 20)),
        "time_p80_ms": float(np.percentile(samples, 80)),
        "time_samples_ms": samples,
        "reps": len(samples),
        "round_medians_ms": [float(np.median(row["time_samples_ms"])) for row in rows],
        "peak_mem_bytes": max((r["peak_mem_bytes"] for r in rows if r.get("peak_mem_bytes") is not None), default=None),
        "wall_s": round(sum(r.get("wall_s") or 0 for r in rows), 3),
    }
    scale = first["time_ms"] / median  # rates follow the merged median
    for rate in ("tflops", "gbps", "frac_matmul_peak", "frac_copy_bw"):
        if first.get(rate) is not None:
            merged[rate] = first[rate] * scale
    return {**merged, **case.row_base()}  # HEAD's case key, whatever the side's code computes for it


class AbSide:
    """One side of an A/B job while it runs: its checkout, run folder, meta and worker slot."""

    def __init__(self, checkout: Checkout, run_dir: Path, device: str):
        self.checkout, self.run_dir, self.device = checkout, run_dir, device
        self.workers = WorkerSlot(device, run_dir / WORKER_LOG, checkout.worker_env(), cwd=checkout.root.resolve())
        self.meta: dict[str, Any] = {}

    @property
    def label(self) -> str:
        """The side's label, `A` or `B`."""
        return self.checkout.label

    def start(self, suite: Suite, rounds: int, job: str, others: Sequence[Path]) -> None:
        """Create the side's run folder and write its meta: the runner's, with the side's revision as its git
        state and an `ab` section that names the job (shared by the sides, whose rounds are paired)."""
        self.run_dir.mkdir()
        self.meta = run_meta(suite, device_ceilings(self.workers, self.run_dir))
        commit = self.checkout.commit
        self.meta["git"] = {"commit": commit, "dirty": bool(commit and commit.endswith("-dirty"))}
        self.meta["ab"] = {
            "side": self.checkout.label,
            "ref": self.checkout.ref,
            "commit": commit,
            "rounds": rounds,
            "job": job,
            "mechanisms_from": self.checkout.ref,
            "harness": environment.git_state(),
            "with": [str(other) for other in others],
        }
        write_json(self.run_dir / META_FILE, self.meta)

    def measure(self, case: Case) -> dict[str, Any]:
        """The case's row from this side's worker (unsupported where the side lacks the implementation)."""
        return run_case(self.workers, case, self.meta["ceilings"], self.device, lacks=self.checkout.lacks)

    def finish(self, status: str) -> None:
        """Close the worker and, once the meta was written, mark the run `status`."""
        self.workers.close()
        if self.meta:
            self.meta.update(status=status, finished_at=timestamp())
            write_json(self.run_dir / META_FILE, self.meta)


def run_ab(
    suite: Suite,
    sides: Sequence[Checkout],
    out_dir: str | os.PathLike = "results",
    *,
    rounds: int = 8,
    on_case: OnCase | None = None,
) -> list[Path]:
    """Measure every case of `suite` with each side's code, interleaved: case by case, `rounds` rounds in the
    order A B, B A, A B, ... (a drift in time hits both sides alike), each side in its own worker process.
    Writes one run folder per side under `<out_dir>/<suite>-<device>-ab-<time>/` and returns them. SIGTERM or
    Ctrl-C marks both runs interrupted and raises KeyboardInterrupt."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    group = fresh_run_dir(Path(out_dir), f"{suite.name}-{suite.device}-ab")
    ab = [AbSide(side, group / f"{side.label}-{device_slug(side.ref)[:40]}", suite.device) for side in sides]
    status = "interrupted"
    try:
        with sigterm_interrupts():
            for side in ab:
                side.start(suite, rounds, group.name, [other.run_dir for other in ab if other is not side])
            for index, case in enumerate(suite.cases):
                if on_case:
                    on_case(index, len(suite.cases), case, None)
                rows = _interleave(case, ab, rounds)
                for side in ab:
                    append_row(side.run_dir, rows[side.label])
                if on_case:
                    on_case(index, len(suite.cases), case, rows[ab[-1].label])
        status = "complete"
    finally:
        for side in ab:
            side.finish(status)
    return [side.run_dir for side in ab]


def _interleave(case: Case, sides: Sequence[AbSide], rounds: int) -> dict[str, dict[str, Any]]:
    """One case, `rounds` rounds over the sides (alternating their order); numerics are checked in round 1."""
    measured: dict[str, list[dict[str, Any]]] = {side.label: [] for side in sides}
    for round_index in range(rounds):
        timed = case if round_index == 0 else replace(case, limits=replace(case.limits, check_numerics=False))
        for side in sides if round_index % 2 == 0 else sides[::-1]:
            done = measured[side.label]
            if done and done[-1]["status"] not in TIMED_STATUSES:
                continue  # a failed (or unsupported) case is not measured again
            done.append(side.measure(timed))
    return {label: merge_rounds(case, rows) for label, rows in measured.items()}


def ab_compare(
    ref_a: str,
    ref_b: str,
    suite_path: str | os.PathLike,
    *,
    repo: str | os.PathLike = ".",
    device: str | None = None,
    overrides: Sequence[str] = (),
    only: Sequence[str] = (),
    impls: Sequence[str] = (),
    rounds: int = 8,
    out_dir: str | os.PathLike = "results",
    settings: GateSettings = DEFAULT_SETTINGS,
    on_case: OnCase | None = None,
) -> Comparison:
    """Run `suite_path` (expanded by this checkout's suite code) with REF_A's and REF_B's implementations
    interleaved on one device, then compare B (HEAD) against A (BASE). Raises `RunError` (a revision or folder
    that cannot be read, a worker that cannot start), `SuiteError`, `CompareError`."""
    from attnbench.suite.load import load_suite

    suite = load_suite(suite_path, device=device, overrides=overrides, only=only, impls=impls)
    with tempfile.TemporaryDirectory(prefix="attnbench-ab-") as tmp:
        sides = [checkout(ref_a, Path(tmp) / "A", "A", repo=repo), checkout(ref_b, Path(tmp) / "B", "B", repo=repo)]
        run_a, run_b = run_ab(suite, sides, out_dir, rounds=rounds, on_case=on_case)
    return compare_paths(run_a, run_b, settings)
