"""Stored baselines: one compact JSON file per suite and device, under `results/baselines/`.

A baseline keeps what the regression gate needs from a run and nothing else: the run's meta (device, driver,
library versions, timer settings, git commit) and, per case key, its status, median, p20/p80, numerics verdict
and its timing samples, thinned to at most `max_samples` evenly spaced order statistics (the thinned samples
have the run's distribution, so the gate's bootstrap reads them like a run).

    {"format": "attnbench-baseline", "format_version": 1, "schema_version": 1, "saved_at": ..., "source_run": ...,
     "meta": {...}, "cases": {"<case_id>": {"mechanism": ..., "status": "ok", "time_ms": ..., "samples_ms": [...]}}}

Files are named `<suite>-<device slug>.json` (`seqlen-nvidia-h100-80gb-hbm3.json`), so a folder of baselines
serves every device a team runs on and the gate picks the one for the device at hand. The device part is the
device's class (`device_key`): the GPU's name, or the CPU's model with a class of its thread count
(`seqlen-intel-r-xeon-r-processor-2-threads.json`), so hosts of one model share a baseline and no other does.
A run whose workers ran on more than one device model (`mixed_devices` in its meta) is never stored.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnbench.results.files import (
    KEY_FIELDS,
    SCHEMA_VERSION,
    ResultsError,
    check_row,
    read_single_run,
    refuse_results_path,
    timestamp,
)

FORMAT = "attnbench-baseline"
FORMAT_VERSION = 1
DEFAULT_DIR = Path("results") / "baselines"
DEFAULT_MAX_SAMPLES = 200

# What the gate reads from a run's meta: where and how it was measured.
KEPT_META = (
    "schema_version",
    "suite",
    "attnbench_version",
    "git",
    "device",
    "versions",
    "tf32",
    "timer",
    "limits",
    "memory_method",
    "started_at",
    "finished_at",
    "status",
    "devices",
    "mixed_devices",
)
# What the gate reads from a row, besides its samples.
KEPT_ROW = (
    "case_id",
    *KEY_FIELDS,
    "variant",
    "status",
    "reason",
    "time_ms",
    "time_p20_ms",
    "time_p80_ms",
    "reps",
    "numerics_ok",
    "rel_err",
    "tolerance",
    "host",
    "device_index",
)


class BaselineError(ResultsError):
    """A baseline that cannot be written, found or read."""


def device_slug(name: str) -> str:
    """`NVIDIA H100 80GB HBM3` → `nvidia-h100-80gb-hbm3`: the device part of a baseline's file name."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:80].rstrip("-") or "unknown-device"


def baseline_name(suite_name: str, device_name: str) -> str:
    """The file name of the baseline of a suite on a device (its `device_key`): `<suite>-<device slug>.json`."""
    return f"{suite_name}-{device_slug(device_name)}.json"


def device_key(meta: Mapping[str, Any]) -> str | None:
    """The device model a run's timings belong to: its device's `class` (the GPU's name, or the CPU's model
    and thread-count class), or its name for runs recorded before classes were."""
    device = meta.get("device") or {}
    return device.get("class") or device.get("name")


def row_device_key(meta: Mapping[str, Any], row: Mapping[str, Any]) -> str | None:
    """The device model one row was measured on: the class of the worker slot the row names (its `host` and
    `device_index` among the meta's `devices`), else the run's own device."""
    for device in meta.get("devices") or ():
        if device.get("host") == row.get("host") and device.get("index") == row.get("device_index"):
            return device.get("class") or device.get("name")
    return device_key(meta)


def thin_samples(samples: Sequence[float], max_samples: int) -> list[float]:
    """At most `max_samples` evenly spaced order statistics of `samples` (all of them, sorted, when fewer):
    the same distribution, median and quantiles as the full set, in a fraction of the bytes."""
    ordered = np.sort(np.asarray(samples, dtype=float))
    if len(ordered) > max_samples:
        ordered = ordered[np.round(np.linspace(0, len(ordered) - 1, max_samples)).astype(int)]
    return [float(value) for value in ordered]


def make_baseline(
    meta: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], *, source: str, max_samples: int
) -> dict[str, Any]:
    """The baseline document of one run (`meta`, `rows` as `read_meta`/`read_rows` give them)."""
    cases: dict[str, dict[str, Any]] = {}
    for row in rows:
        case = {name: row.get(name) for name in KEPT_ROW}
        samples = row.get("time_samples_ms")
        case["samples_ms"] = thin_samples(samples, max_samples) if samples else None
        cases[row["case_id"]] = case
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "schema_version": SCHEMA_VERSION,
        "saved_at": timestamp(),
        "source_run": source,
        "max_samples": max_samples,
        "meta": {name: meta.get(name) for name in KEPT_META},
        "cases": cases,
    }


def save_baseline(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike = DEFAULT_DIR,
    *,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    allow_incomplete: bool = False,
) -> Path:
    """Store run `run_dir` as `<out_dir>/<suite>-<device slug>.json` (replacing the previous baseline of that
    suite and device; keep the folder under version control to keep their history). Returns the file written.

    Refuses a run that did not complete (an interrupted run lacks cases) unless `allow_incomplete`.
    """
    if max_samples < 1:
        raise BaselineError(f"max_samples must be >= 1, got {max_samples}")
    source, meta, rows = read_single_run(run_dir)
    if meta.get("status") != "complete" and not allow_incomplete:
        raise BaselineError(
            f"{run_dir}: the run is {meta.get('status')!r}, not 'complete' (finish it with --resume, or save it "
            "anyway with --allow-incomplete: its missing cases will be listed as new by every comparison)"
        )
    if not isinstance(device_key(meta), str):
        raise BaselineError(f"{source}: the run's meta names no device (it stopped before describing it)")
    if meta.get("mixed_devices"):
        models = sorted({str(device.get("class")) for device in meta.get("devices") or ()})
        raise BaselineError(
            f"{source}: the run's cases ran on more than one device model ({'; '.join(models)}); a baseline holds "
            "one model's timings: store a run made on one model (--devices with GPUs of one kind)"
        )
    document = make_baseline(meta, rows, source=source.name, max_samples=max_samples)
    path = Path(out_dir) / baseline_name(meta["suite"]["name"], device_key(meta))
    refuse_results_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(path, document)
    except OSError as exc:
        raise BaselineError(f"{exc.filename or path}: cannot write the baseline ({exc.strerror or exc})") from None
    return path


def _write(path: Path, document: Mapping[str, Any]) -> None:
    """JSON with one case per line, so a baseline update reads as a per-case diff in review."""
    head = {name: value for name, value in document.items() if name != "cases"}
    lines = [json.dumps(head, indent=2, default=str)[:-2] + ",", '  "cases": {']
    cases = list(document["cases"].items())
    for index, (case_id, case) in enumerate(cases):
        comma = "," if index < len(cases) - 1 else ""
        lines.append(f"    {json.dumps(case_id)}: {json.dumps(case, default=str)}{comma}")
    lines += ["  }", "}"]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def is_baseline_file(path: str | os.PathLike) -> bool:
    """Whether `path` is a file that can be a baseline (a .json file; `read_baseline` checks its content)."""
    return Path(path).is_file() and Path(path).suffix == ".json"


def read_baseline(path: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A baseline's run meta and its cases as rows (`time_samples_ms` holding the thinned samples)."""
    path = Path(path)
    try:
        document = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read the baseline ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise BaselineError(f"{path}: not a baseline (binary: byte {exc.start} is not UTF-8 text)") from None
    except ValueError as exc:
        raise BaselineError(f"{path}: not JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise BaselineError(f'{path}: not an attnbench baseline (no "format": "{FORMAT}")')
    if document.get("format_version") != FORMAT_VERSION or document.get("schema_version") != SCHEMA_VERSION:
        raise BaselineError(
            f"{path}: baseline format {document.get('format_version')!r} / results schema "
            f"{document.get('schema_version')!r}; this attnbench reads {FORMAT_VERSION} / {SCHEMA_VERSION} "
            "(save the baseline again from a fresh run)"
        )
    meta, cases = document.get("meta"), document.get("cases")
    if not isinstance(meta, dict) or not isinstance(cases, dict):
        raise BaselineError(f"{path}: keys 'meta' and 'cases' must be objects (a baseline saved by attnbench)")
    rows = []
    for case_id, case in cases.items():
        if not isinstance(case, dict):
            raise BaselineError(f"{path}: cases[{case_id!r}]: not an object")
        row = {name: value for name, value in case.items() if name != "samples_ms"}
        row = {**row, "case_id": case_id, "time_samples_ms": case.get("samples_ms")}
        rows.append(check_row(f"{path}: case {case_id}", row))
    return meta, rows


def find_baseline(folder: str | os.PathLike, suite_name: str, device_name: str) -> Path:
    """The baseline of `suite_name` on `device_name` in `folder`; the error lists what the folder holds."""
    folder = Path(folder)
    path = folder / baseline_name(suite_name, device_name)
    if path.is_file():
        return path
    held = sorted(p.name for p in folder.glob("*.json")) if folder.is_dir() else []
    raise BaselineError(
        f"{folder}: no baseline {path.name} for suite {suite_name!r} on {device_name!r}; "
        f"it holds {', '.join(held) if held else 'no baselines'} "
        f"(store one with: attnbench baseline save RUN_DIR -o {folder})"
    )
