"""What a run's `meta.json` says: which suite, where (device, versions, git state), how (timer, limits, memory
method, measured ceilings, FLOP convention) and when, and whether the run is still `running`, `complete`,
`interrupted` or `failed`. Its `fingerprint` pins the suite as resolved and the cases chosen, so that a resume
with an edited suite, other `--set` values, another device or other filters is caught instead of mixing two
settings in one run.

Built in the runner's process from light modules only: the method descriptions come from
`attnbench.measure.methods`, the ceilings from a worker.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from attnbench.measure import contention
from attnbench.measure.methods import energy_method, memory_method, timer_method
from attnbench.results.files import SCHEMA_VERSION, timestamp
from attnbench.run import environment

if TYPE_CHECKING:
    from attnbench.suite.load import Suite

# How the rows' `flops` are counted. Worded without naming a mechanism: each one's own model lives with it.
FLOP_CONVENTION = (
    "flops: forward FLOPs from each mechanism's model (2 per multiply-add; attention over a T×T score matrix "
    "4·B·H·T²·d, half when causal, the normalisation's work not counted); backward per term: the attention "
    "core 2.5× its forward (the scores recomputed, as FlashAttention's benchmarks count), every other term "
    "(projections, factor maps, element-wise work) 2×; the same for every implementation, so rates compare. "
    "flops_impl: what the implementation performs (2× the forward plus what its backward actually recomputes: "
    "nothing for a plain autograd backward, the scores for a fused kernel, whole blocks for a checkpoint). "
    "tflops is flops per second; matmul_tflops is the implementation's matmul FLOPs per second, and "
    "frac_matmul_peak divides it by the measured matmul ceiling of the row's own dtype (ceiling_dtype)"
)


def suite_fingerprint(suite: Suite) -> str:
    """A hash of what a run measures: the suite as resolved (after the device section and every `--set`), the
    device, and the cases chosen (after `--only` and `--impl`). Equal fingerprints, equal cases and settings."""
    pinned = {"resolved": suite.resolved, "device": suite.device, "cases": sorted(c.case_id for c in suite.cases)}
    return hashlib.sha256(json.dumps(pinned, sort_keys=True, default=str).encode()).hexdigest()


def stub_meta(suite: Suite, selection: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The meta a run writes the moment its folder exists, before anything slow (library versions, the device,
    the ceilings): enough to find, show and resume it whenever it is stopped."""
    return {
        "schema_version": SCHEMA_VERSION,
        "suite": {"name": suite.name, "path": str(suite.path), "device": suite.device, "resolved": suite.resolved},
        "selection": dict(selection or {}),
        "fingerprint": suite_fingerprint(suite),
        "cases": len(suite.cases),
        "ceilings": None,
        "started_at": timestamp(),
        "finished_at": None,
        "status": "running",
    }


def run_meta(suite: Suite, ceilings: dict[str, Any] | None) -> dict[str, Any]:
    """The meta of a run of `suite` that starts now, on a device whose measured ceilings are `ceilings` (None
    until they are measured)."""
    found = environment.versions()
    return {
        "schema_version": SCHEMA_VERSION,
        "suite": {"name": suite.name, "path": str(suite.path), "device": suite.device, "resolved": suite.resolved},
        "fingerprint": suite_fingerprint(suite),
        "attnbench_version": found["attnbench"],
        "git": environment.git_state(),
        "device": environment.device_info(suite.device),
        "versions": found,
        "tf32": environment.tf32_flags(),
        "timer": {**asdict(suite.timing), "clock": timer_method(suite.device, suite.timing.method)},
        "limits": asdict(suite.limits),
        "memory_method": memory_method(suite.device),
        "energy_method": energy_method(suite.device),
        "contention_rules": contention.rules(),
        "ceilings": ceilings,
        "flop_convention": FLOP_CONVENTION,
        "cases": len(suite.cases),
        "started_at": timestamp(),
        "finished_at": None,
        "status": "running",
        "command": environment.command_line(),
    }


def changes(meta: Mapping[str, Any], suite: Suite) -> list[str]:
    """What differs between the run `meta` describes and `suite` as loaded now, in words (empty: nothing)."""
    recorded = meta.get("suite") or {}
    if meta.get("fingerprint") in (None, suite_fingerprint(suite)) and recorded.get("resolved") in (
        None,
        suite.resolved,
    ):
        return []
    found = []
    if recorded.get("device") not in (None, suite.device):
        found.append(f"device {recorded.get('device')} then, {suite.device} now")
    before = recorded.get("resolved") or {}
    keys = sorted(key for key in {*before, *suite.resolved} if before.get(key) != suite.resolved.get(key))
    if keys:
        found.append("suite settings changed: " + ", ".join(keys))
    if meta.get("cases") is not None and meta["cases"] != len(suite.cases):
        found.append(f"{meta['cases']} cases then, {len(suite.cases)} now (--only, --impl or the sweep)")
    return found or ["the cases chosen differ (--only, --impl, or the mechanisms' parameters)"]


def record_devices(meta: dict[str, Any], devices: list[dict[str, Any]], host: str) -> None:
    """Record in `meta` where the run's workers ran (`devices`: host, index, name and class of each; the run's
    own device when the executor names none) and whether they were of more than one model (`mixed_devices`).
    A resumed run keeps the devices it ran on before, so a run finished on other machines says it is mixed."""
    if not devices:
        info = meta.get("device") or {}
        index = 0 if info.get("type") == "cuda" else None
        klass = info.get("class") or info.get("name")
        devices = [{"host": host, "index": index, "kind": info.get("type"), "name": info.get("name"), "class": klass}]
    known = list(meta.get("devices") or [])
    known += [device for device in devices if device not in known]
    meta["devices"] = known
    meta["mixed_devices"] = len({device.get("class") for device in known}) > 1
