"""What a run's `meta.json` says: which suite, where (device, versions, git state), how (timer, limits, memory
method, measured ceilings, FLOP convention) and when, and whether the run is still `running`, `complete`,
`interrupted` or `failed`.

Built in the runner's process from light modules only: the method descriptions come from
`attnbench.measure.methods`, the ceilings from a worker.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from attnbench.measure.methods import memory_method, timer_method
from attnbench.results.files import SCHEMA_VERSION, timestamp
from attnbench.run import environment

if TYPE_CHECKING:
    from attnbench.suite.load import Suite

# How the rows' `flops` are counted. Worded without naming a mechanism: each one's own model lives with it.
FLOP_CONVENTION = (
    "forward FLOPs from each mechanism's model (2 per multiply-add; attention over a T×T score matrix "
    "4·B·H·T²·d, half when causal, the normalisation's work not counted); backward = the mechanism's "
    "bwd_flops_factor × forward (2.5 for attention over a T×T score matrix, with recompute, as FlashAttention's "
    "benchmarks; 2 otherwise)"
)


def run_meta(suite: Suite, ceilings: dict[str, Any]) -> dict[str, Any]:
    """The meta of a run of `suite` that starts now, on a device whose measured ceilings are `ceilings`."""
    found = environment.versions()
    return {
        "schema_version": SCHEMA_VERSION,
        "suite": {"name": suite.name, "path": str(suite.path), "device": suite.device, "resolved": suite.resolved},
        "attnbench_version": found["attnbench"],
        "git": environment.git_state(),
        "device": environment.device_info(suite.device),
        "versions": found,
        "tf32": environment.tf32_flags(),
        "timer": {"method": timer_method(suite.device), **asdict(suite.timing)},
        "limits": asdict(suite.limits),
        "memory_method": memory_method(suite.device),
        "ceilings": ceilings,
        "flop_convention": FLOP_CONVENTION,
        "cases": len(suite.cases),
        "started_at": timestamp(),
        "finished_at": None,
        "status": "running",
        "command": environment.command_line(),
    }


def failed_meta(suite: Suite) -> dict[str, Any]:
    """The meta of a run that failed before its device could be described (its ceilings were not measured)."""
    return {"schema_version": SCHEMA_VERSION, "suite": {"name": suite.name}, "status": "failed"}
