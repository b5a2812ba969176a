"""The compile check's findings as rows, problems and files (triton_compile runs it; triton_trace traces).

A row is one launch of one kernel under one config on one target in one traced case. `docs/KERNELS.md` gets a
table per kernel (distinct compilations, with the cases that reach them) and per mechanism the passes, bytes and
grids at the trace shape; `triton_shared_memory.json` gets every autotuned config's shared memory, which
`triton_common.launchable` reads to prune configs before launch.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict

from attnbench.mechanisms import triton_jobs, triton_trace
from attnbench.mechanisms.triton_common import SHARED_MEMORY_FIGURES, config_key

KERNELS_DOC = "docs/KERNELS.md"
FIGURES_FILE = f"attnbench/mechanisms/{SHARED_MEMORY_FIGURES}"
NOTES_MARK = "<!-- generated above; hand-written below -->"


def collect(workers: int | None, known: dict, save=None) -> tuple[list[dict], list, dict]:
    """Trace every case, compile every distinct job for every target (`known`: committed results by job key),
    and return the rows, the launches and the cached figures a fresh compile disagrees with."""
    rows, launches = [], []
    for case, mechanism, impl, problem in triton_trace.cases():
        traced = triton_trace.trace(case, mechanism, impl, problem)
        launches.extend(traced)
        for launch in traced:
            name = triton_trace.kernel_name(launch.kernel)
            autotuned = triton_jobs.configs_of(launch) != [None]
            for capability in triton_jobs.TARGETS:
                for job, meta in triton_jobs.jobs_of(launch, capability):
                    grid = launch.grid(meta) if callable(launch.grid) else launch.grid
                    rows.append(
                        dict(case=case, kernel=name, dtype=_first_tensor_dtype(launch), phase=launch.phase, autotuned=autotuned, meta=meta, job=job,
                             grid=math.prod(grid), bytes=launch.bytes_touched, capability=capability)
                    )  # fmt: skip
    figures, disagreeing = triton_jobs.compile_all((row["job"] for row in rows), workers, known, save)
    keys = {job: triton_jobs.job_key(job) for job in figures}
    for row in rows:
        row["figures"], row["key"] = figures[row["job"]], keys[row["job"]]
    return rows, launches, disagreeing


def _first_tensor_dtype(launch) -> str:
    first = next(arg for arg in launch.args if hasattr(arg, "dtype"))
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[str(first.dtype).split(".")[1]]


def _limit(capability: int) -> int:
    return triton_jobs.TARGETS[capability][1]


def problems(rows: list[dict], launches: list) -> list[str]:
    """What must be fixed: compile errors, fixed launches over their target's shared memory, autotuned launches
    with no config that fits, and kernels no traced case reaches."""
    found = set()
    by_launch = defaultdict(list)
    for row in rows:
        figures, where = row["figures"], f"{row['kernel']} [{row['case'].describe()}, sm_{row['capability']}]"
        if not figures.ok:
            found.add(f"compile error: {where} {_meta_text(row['meta'])}: {figures.error}")
        elif not row["autotuned"] and figures.shared > _limit(row["capability"]):
            found.add(f"over shared memory: {where} needs {figures.shared} B > {_limit(row['capability'])} B")
        by_launch[(row["kernel"], row["case"], row["phase"], row["capability"])].append(row)
    for (kernel, case, _, capability), group in by_launch.items():
        compiled = [row["figures"].shared for row in group if row["figures"].ok]
        if compiled and min(compiled) > _limit(capability):  # (a group that failed to compile is reported above)
            found.add(f"no config fits: {kernel} [{case.describe()}, sm_{capability}]")
    launched = {triton_trace.kernel_name(launch.kernel) for launch in launches}
    found.update(f"never launched by any traced case: {name}" for name in triton_trace.uncovered(launched))
    return sorted(found)


def _meta_text(meta: dict) -> str:
    """A row's compile-time constants, warps and stages, as `NAME=value` words."""
    return " ".join(f"{name}={value}" for name, value in sorted(meta.items()))


def shared_memory_figures(rows: list[dict]) -> str:
    """JSON: kernel -> `config_key` -> shared bytes per target, for autotuned launches (what pruning reads)."""
    figures: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        if row["autotuned"] and row["figures"].ok:
            key = config_key(row["dtype"], row["meta"])
            figures[row["kernel"]][key][f"sm_{row['capability']}"] = row["figures"].shared
    ordered = {kernel: dict(sorted(configs.items())) for kernel, configs in sorted(figures.items())}
    return json.dumps(ordered, indent=1, sort_keys=True) + "\n"


def _span(values) -> str:
    """The distinct values, in order (all of one type: head widths, dtypes or causal flags)."""
    return ",".join(str(value) for value in sorted(set(values)))


def kernel_rows(rows: list[dict]) -> list[str]:
    """Markdown lines: one row per kernel, dtype and compile-time config, with both targets' figures."""
    groups = defaultdict(list)
    for row in rows:
        job = row["job"]
        groups[(row["kernel"], job.signature, job.constexprs, job.attrs, _meta_text(row["meta"]))].append(row)
    lines = [
        "| kernel | dtypes | config | d | causal | sm_90 smem KB / regs / spill B | sm_80 smem KB / regs / spill B |",
        "|---|---|---|---|---|---|---|",
    ]
    for (kernel, *_), group in sorted(groups.items(), key=lambda item: (item[0][0], _meta_text(item[1][0]["meta"]))):
        cells = []
        for capability in triton_jobs.TARGETS:
            target = [row["figures"] for row in group if row["capability"] == capability]
            figures = target[0]
            if not figures.ok:
                cells.append("**fails to compile**")
                continue
            over = " **over**" if figures.shared > _limit(capability) else ""
            spill = f"**{figures.local}**" if figures.local else "0"
            cells.append(f"{figures.shared / 1024:.1f}{over} / {figures.registers} / {spill}")
        cases = [row["case"] for row in group]
        name = kernel.split(":")[1] + (" (tuned)" if group[0]["autotuned"] else "")
        lines.append(
            f"| `{kernel.split(':')[0].rsplit('.', 1)[1]}.{name}` | {_span(c.dtype for c in cases)} | "
            f"{_meta_text(group[0]['meta'])} | {_span(c.d for c in cases)} | {_span(c.causal for c in cases)} | "
            f"{cells[0]} | {cells[1]} |"
        )
    return lines


def pass_rows(rows: list[dict], launches: list) -> list[str]:
    """Markdown lines: per mechanism, variant, causal and phase at d = 128 bf16 on sm_90, the kernels in launch
    order with their grid (the first config's) and tensor bytes, the total passes over one `[B, T, H·d]` tensor,
    and the passes of the mechanism's minimal-bytes model (`min_bytes` of its spec)."""
    lines = [
        "| case | phase | kernels (grid) | tensor bytes | passes | model passes |",
        "|---|---|---|---|---|---|",
    ]
    seen = set()
    for launch in launches:
        case = launch.case
        if case.d != 128 or case.dtype != "bf16" or (case, launch.phase) in seen:
            continue
        seen.add((case, launch.phase))
        same = [item for item in launches if item.case == case and item.phase == launch.phase]
        grids = []
        for item in same:
            name = triton_trace.kernel_name(item.kernel)
            row = next(r for r in rows if r["kernel"] == name and r["case"] == case and r["capability"] == 90)
            grids.append(f"`{name.split(':')[1]}` ({row['grid']})")
        total = sum(item.bytes_touched for item in same)
        one_pass = triton_trace.TRACE_B * triton_trace.TRACE_T * triton_trace.TRACE_HEADS * 128 * 2
        lines.append(
            f"| {case.describe()} | {launch.phase} | {', '.join(grids)} | {total / 2**20:.0f} MiB | "
            f"{total / one_pass:.1f} | {launch.model_bytes / one_pass:.1f} |"
        )
    return lines


def outputs(rows: list[dict], launches: list, notes: str) -> dict[str, str]:
    """The files the check writes: `docs/KERNELS.md` (generated tables above `NOTES_MARK`, `notes` below) and
    the shared-memory figures."""
    b, t, heads = triton_trace.TRACE_B, triton_trace.TRACE_T, triton_trace.TRACE_HEADS
    head = [
        "# Triton kernels: what they compile to",
        "",
        "Generated by `python -m attnbench.mechanisms.triton_compile` (do not edit above the mark; the design notes",
        "below it are kept). Every launch of every `triton` implementation is traced on meta tensors at B = "
        f"{b}, T = {t}, H = {heads},",
        f"d ∈ {{{_span(triton_trace.HEAD_DIMS)}}}, dtypes {', '.join(triton_trace.DTYPES)}, causal and not, "
        "and compiled for sm_90 and sm_80 with Triton's",
        "own compiler. Shared memory is per block (limits: 227 KB sm_90, 163 KB sm_80; tuned configs over the",
        "limit are pruned before launch); registers and spill (local) bytes are per thread, from `cuobjdump`.",
        "",
        "## Compilations",
        "",
        *kernel_rows(rows),
        "",
        "## Passes over memory (d = 128, bf16, sm_90 grid of the first config)",
        "",
        "Tensor bytes count every argument that grows with T once (one read or one write each); passes divide",
        "them by one `[B, T, H·d]` bf16 tensor. The minimal-bytes model of each case is in the design notes.",
        "",
        *pass_rows(rows, launches),
        "",
        NOTES_MARK,
    ]
    return {KERNELS_DOC: "\n".join(head) + "\n" + notes, FIGURES_FILE: shared_memory_figures(rows)}
