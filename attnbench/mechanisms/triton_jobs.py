"""Compile jobs for NVIDIA targets without a GPU: what Triton's binder makes of a traced launch (`jobs_of`), one
compilation with Triton's compiler and the wheel's ptxas (`compile_job`), its resources from `cuobjdump`, and a
process pool over many jobs with committed results reused by key (`compile_all`). triton_compile drives it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# Targets: compute capability -> (name, the most shared memory one block may opt in to, in bytes).
TARGETS = {90: ("sm_90", 232448), 80: ("sm_80", 166912)}


@dataclass(frozen=True)
class Job:
    """One compilation: a kernel, Triton's signature, constants and attributes as its binder makes them for the
    launch, the compile options (warps, stages, ...) and the target's compute capability."""

    kernel: str
    signature: tuple
    constexprs: tuple
    attrs: tuple
    options: tuple
    capability: int


@dataclass(frozen=True)
class Figures:
    """What a compilation reports: whether it succeeded (else the error's first lines), shared memory in bytes,
    registers per thread and local memory (spills and stack) in bytes per thread."""

    ok: bool
    shared: int = 0
    registers: int = 0
    local: int = 0
    error: str = ""


def _frozen(value):
    """A hashable, picklable copy of nested dicts and lists (compile jobs are keys of a dict)."""
    if isinstance(value, dict):
        return tuple(sorted((repr(key), _frozen(item)) for key, item in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(item) for item in value)
    return getattr(value, "value", value)  # tl.constexpr -> its value


def _thawed_constexprs(frozen: tuple) -> dict:
    return {eval(key): value for key, value in frozen}  # keys are repr() of tuples of ints


def config_kwargs(launch, config) -> dict:
    """The keyword arguments the launch passes to the JITFunction under one autotune config (None: untuned)."""
    return {**launch.kwargs, **(config.all_kwargs() if config is not None else {})}


def jit_function(kernel):
    """The JITFunction behind a kernel object (itself, or the function an Autotuner tunes)."""
    from triton.runtime.autotuner import Autotuner

    return kernel.fn if isinstance(kernel, Autotuner) else kernel


def configs_of(launch) -> list:
    """Every config the launch may run with: all of an autotuned kernel's configs (pruning happens on the
    device, from the figures this module records), or None for a kernel launched with fixed meta-parameters."""
    from triton.runtime.autotuner import Autotuner

    return list(launch.kernel.configs) if isinstance(launch.kernel, Autotuner) else [None]


def jobs_of(launch, capability: int) -> list[tuple[Job, dict]]:
    """The compile jobs of one launch on one target, each with the meta-parameters it was bound with."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    from attnbench.mechanisms.triton_trace import kernel_name

    fn = jit_function(launch.kernel)
    backend = make_backend(GPUTarget("cuda", capability, 32))
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    found = []
    for config in configs_of(launch):
        # What JITFunction.run adds before binding, so that the options are the ones a launch compiles with.
        kwargs = {"debug": False, "instrumentation_mode": "", **config_kwargs(launch, config)}
        bound, specialization, _ = binder(*launch.args, **kwargs)
        options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, None)
        constant = [param.name for param in fn.params if param.is_constexpr]
        meta = {name: _frozen(bound[name]) for name in constant}
        job = Job(
            kernel_name(launch.kernel), _frozen(signature), _frozen(constexprs), _frozen(attrs),
            _frozen(options.__dict__), capability,
        )  # fmt: skip
        found.append((job, {**meta, "num_warps": options.num_warps, "num_stages": options.num_stages}))
    return found


def _cuobjdump() -> Path:
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def resource_usage(cubin: bytes) -> tuple[int, int]:
    """(registers, local bytes) per thread of the one function in `cubin`, from cuobjdump."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kernel.cubin"
        path.write_bytes(cubin)
        report = subprocess.run(
            [_cuobjdump(), "--dump-resource-usage", path], capture_output=True, text=True, check=True
        ).stdout
    fields = dict(item.split(":") for line in report.splitlines() if "REG:" in line for item in line.split())
    return int(fields["REG"]), int(fields["LOCAL"])


def compile_job(job: Job) -> Figures:
    """Compile one job with Triton for its target; a failure is recorded, not raised."""
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    module, name = job.kernel.split(":")
    fn = jit_function(getattr(importlib.import_module(module), name))
    signature = dict((eval(key), value) for key, value in job.signature)
    source = ASTSource(fn, signature, _thawed_constexprs(job.constexprs), dict(_thawed_constexprs(job.attrs)))
    options = {eval(key): value for key, value in job.options}
    try:
        compiled = triton.compile(source, target=GPUTarget("cuda", job.capability, 32), options=options)
    except Exception as error:  # a compile error of any kind is the finding, recorded with its message
        return Figures(ok=False, error=" ".join(str(error).split())[-300:])
    registers, local = resource_usage(compiled.asm["cubin"])
    return Figures(ok=True, shared=compiled.metadata.shared, registers=registers, local=local)


def _init_worker() -> None:
    os.environ["TRITON_INTERPRET"] = "0"


def job_key(job: Job) -> str:
    """A name for a job's result that changes whenever its outcome could: Triton's version, the kernel's source
    with every jit function it calls (Triton's own `cache_key`), the signature, constants and options."""
    import importlib

    import triton

    module, name = job.kernel.split(":")
    source_key = jit_function(getattr(importlib.import_module(module), name)).cache_key
    # The options name files inside the Triton package (libdevice) by absolute path: the same job in another
    # environment (a fresh CI clone, another venv) must get the same key, so that path is written relative.
    text = repr((triton.__version__, source_key, job)).replace(str(Path(triton.__file__).parent), "<triton>")
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def compile_all(
    jobs: Iterable[Job], workers: int | None = None, known: dict[str, Figures] | None = None, save=None
) -> tuple[dict[Job, Figures], dict[Job, Figures]]:
    """Figures of every distinct job, compiled in a pool of `workers` processes (default: one per CPU), sm_90
    first. Jobs whose `job_key` is in `known` (the committed results) take those figures, except one sm_90 job
    per kernel, which is always compiled and must agree with them: a check that the cache still matches the
    installed compiler. `save(figures_by_key)`, if given, is called every few dozen results (a long first
    run that is interrupted keeps what it compiled). Returns the figures and the disagreeing probes."""
    distinct = sorted(set(jobs), key=lambda job: (-job.capability, job.kernel, repr(job)))
    keys = {job: job_key(job) for job in distinct}
    known = dict(known or {})
    probes = {job.kernel: job for job in distinct if keys[job] in known and job.capability == max(TARGETS)}
    todo = [job for job in distinct if keys[job] not in known or probes.get(job.kernel) is job]
    fresh: dict[Job, Figures] = {}
    with ProcessPoolExecutor(min(workers or os.cpu_count() or 1, max(1, len(todo))), initializer=_init_worker) as pool:
        for count, (job, figures) in enumerate(zip(todo, pool.map(compile_job, todo, chunksize=1), strict=True), 1):
            fresh[job] = figures
            if save is not None and count % 25 == 0:
                save({**known, **{keys[done]: result for done, result in fresh.items()}})
    disagreeing = {job: known[keys[job]] for job in probes.values() if known[keys[job]] != fresh[job]}
    return {job: fresh.get(job) or known[keys[job]] for job in distinct}, disagreeing
