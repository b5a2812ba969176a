"""Every Triton kernel launch the `triton` implementations make, recorded without a GPU and without running one.

Each mechanism's `triton` implementation runs forward and backward on `meta` tensors (shapes and dtypes, no data)
while `KernelInterface.__getitem__` (what `kernel[grid](...)` calls) is replaced by a recorder. A launch is kept
with its grid and the exact arguments the launcher passed, so what the compile check builds is what the launchers
would launch: every autotune config of an autotuned kernel, and the meta-parameters, warps and dot precision the
launcher chose for the problem. Triton's own binder (the one `JITFunction.run` uses) then turns the arguments into
the signature, constants and alignment attributes of a compilation for a given GPU target.

Tracing needs TRITON_INTERPRET unset or 0 before any kernel module is imported (the interpreter replaces
`@triton.jit` functions at import time); `attnbench.mechanisms.triton_compile` runs it in such a process.
Nothing imports this module but the compile check's own modules.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

import attnbench.mechanisms
from attnbench.mechanisms import registry
from attnbench.mechanisms.problem import MAX_Q_LEN, Mode, Problem, itemsize, torch_dtype

# The shape every kernel is traced at: one long sequence (B = 1, T = 128K) of 16 heads (D = 2048 at d = 128).
TRACE_B, TRACE_T, TRACE_HEADS = 1, 131072, 16
# Head widths: the powers of two from 32 to 128 and one the launchers pad (96 -> 128).
HEAD_DIMS = (32, 64, 96, 128)
DTYPES = ("fp32", "tf32", "fp16", "bf16")
# The parameter sets a decode kernel is traced with, per mechanism (its compiled kernels depend on them): TPA's
# key/value ranks of suites/decode.yaml. A mechanism not named here is traced at its defaults.
DECODE_TRACE = {"tpa": ({"R_k": 1, "R_v": 1}, {"R_k": 2, "R_v": 2}, {"R_k": 4, "R_v": 4})}
# A decode kernel holds q_len·H query rows at once, padded to a power of two, and its tiles follow: one new token
# over TRACE_HEADS heads (16 rows), one and two over the decode suite's 32 heads (32 and 64: the suite's own
# launches), and MAX_Q_LEN new tokens over 32 heads (128 rows: the largest tiles, the most shared memory and
# registers).
DECODE_SHAPES = ((1, TRACE_HEADS), (1, 32), (2, 32), (MAX_Q_LEN, 32))


@dataclass(frozen=True)
class Case:
    """One problem a launch was traced in: mechanism, variant, causal, head width d and suite dtype name; for a
    decode step, the new tokens `q_len` (0: a forward and backward over the whole sequence) and the heads."""

    mechanism: str
    variant: str
    causal: bool
    d: int
    dtype: str
    q_len: int = 0
    heads: int = TRACE_HEADS

    def describe(self) -> str:
        variant = f":{self.variant}" if self.variant else ""
        decode = f" decode H={self.heads} q_len={self.q_len}" if self.q_len else ""
        return f"{self.mechanism}{variant} {'causal' if self.causal else 'non-causal'} d={self.d} {self.dtype}{decode}"


@dataclass
class Launch:
    """One `kernel[grid](*args, **kwargs)` call: the kernel object (a JITFunction or an Autotuner around one),
    the grid (a tuple, or the launcher's function of the meta-parameters), and whether the forward or the
    backward issued it."""

    kernel: Any
    grid: Any
    args: tuple
    kwargs: dict
    phase: str
    case: Case
    bytes_touched: int = field(default=0)
    model_bytes: int = field(default=0)


def kernel_modules() -> list[str]:
    """Every `triton_*` module under attnbench.mechanisms except the shared and checking machinery."""
    skip = {"triton_common", "triton_trace", "triton_compile", "triton_jobs", "triton_table"}
    found = []
    for info in pkgutil.walk_packages(attnbench.mechanisms.__path__, "attnbench.mechanisms."):
        leaf = info.name.rsplit(".", 1)[-1]
        if leaf.startswith("triton_") and leaf not in skip:
            found.append(info.name)
    return sorted(found)


def jit_functions() -> dict[str, Any]:
    """`module:name` -> JITFunction of every `@triton.jit` function defined in a kernel module."""
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    found = {}
    for module_name in kernel_modules():
        module = importlib.import_module(module_name)
        for name, value in vars(module).items():
            fn = value.fn if isinstance(value, Autotuner) else value
            if isinstance(fn, JITFunction) and fn.fn.__module__ == module_name:
                found[f"{module_name}:{name}"] = fn
    return found


def uncovered(launched: set[str]) -> list[str]:
    """The `@triton.jit` functions neither launched nor called (directly or through other jit functions) by a
    launched kernel: a kernel no traced problem reaches, which the compile check would otherwise miss."""
    functions = jit_functions()
    short = {key.rsplit(":", 1)[1]: key for key in functions}
    reached, todo = set(), [key for key in functions if key in launched]
    while todo:
        key = todo.pop()
        if key in reached:
            continue
        reached.add(key)
        for name in re.findall(r"\b(\w+)\s*\(", functions[key].src):
            if name in short:
                todo.append(short[name])
    return sorted(set(functions) - reached)


def kernel_name(kernel: Any) -> str:
    """`module:name` of a launched kernel (an Autotuner is named by the function it tunes)."""
    from triton.runtime.autotuner import Autotuner

    fn = (kernel.fn if isinstance(kernel, Autotuner) else kernel).fn
    return f"{fn.__module__}:{fn.__name__}"


@contextlib.contextmanager
def _recording(launches: list[Launch], state: dict) -> Iterator[None]:
    """Replace `kernel[grid](...)` by a recorder for the duration of the block."""
    from triton.runtime.jit import KernelInterface

    original = KernelInterface.__getitem__

    def record(kernel, grid):
        def call(*args, **kwargs):
            launches.append(Launch(kernel, grid, args, kwargs, state["phase"], state["case"]))

        return call

    KernelInterface.__getitem__ = record
    try:
        yield
    finally:
        KernelInterface.__getitem__ = original


@contextlib.contextmanager
def _tf32(allowed: bool) -> Iterator[None]:
    """torch's TF32 switch for matmuls (the suite's `tf32` dtype), which the launchers read for dot precision."""
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_tf32
    matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        matmul.allow_tf32 = before


def cases() -> Iterator[tuple[Case, registry.Mechanism, registry.Impl, Problem]]:
    """Every (variant, causal, d, dtype) that a mechanism's `triton` implementation defines, at the trace shape
    (TRACE_HEADS heads); variants are the choices of the mechanism's variant parameter."""
    for mechanism, impl in registry.all_impls():
        if impl.name != "triton":
            continue
        variants = [""]
        if mechanism.variant_param:
            variants = [str(choice) for choice in mechanism.params[mechanism.variant_param].choices]
        for variant, causal, d, dtype in (
            (v, c, d, t) for v in variants for c in impl.causal for d in HEAD_DIMS for t in DTYPES
        ):
            own = {mechanism.variant_param: variant} if variant else {}
            try:
                problem = mechanism.problem(B=TRACE_B, T=TRACE_T, H=TRACE_HEADS, d=d, causal=causal, **own)
            except ValueError:  # includes Unsupported: a combination the mechanism itself does not define
                continue
            if impl.unsupported_reason(problem, Mode.FWD_BWD, dtype) is None:
                yield Case(mechanism.name, variant, causal, d, dtype), mechanism, impl, problem
        if impl.decode is not None:
            yield from _decode_cases(mechanism, impl)


def _decode_cases(mechanism: registry.Mechanism, impl: registry.Impl):
    """A decode step on a cache of TRACE_T tokens at each of `DECODE_SHAPES` (new tokens, heads), for each of the
    mechanism's `DECODE_TRACE` parameter sets (the compiled kernels depend on them: TPA's ranks), head width and
    dtype."""
    for params, d, dtype, (q_len, heads) in (
        (p, d, t, shape)
        for p in DECODE_TRACE.get(mechanism.name, ({},))
        for d in HEAD_DIMS
        for t in DTYPES
        for shape in DECODE_SHAPES
    ):
        try:
            problem = mechanism.problem(B=TRACE_B, T=TRACE_T, H=heads, d=d, causal=True, **params)
        except ValueError:
            continue
        if impl.unsupported_reason(problem, Mode.DECODE, dtype) is None:
            variant = ",".join(f"{key}={value}" for key, value in params.items())
            yield Case(mechanism.name, variant, True, d, dtype, q_len=q_len, heads=heads), mechanism, impl, problem


def trace(case: Case, mechanism: registry.Mechanism, impl: registry.Impl, problem: Problem) -> list[Launch]:
    """The launches of one forward and backward of `problem` in `case.dtype` (a decode case: one decode step),
    on meta tensors."""
    if case.q_len:
        return _trace_decode(case, mechanism, impl, problem)
    launches: list[Launch] = []
    state = {"phase": "fwd", "case": case}
    tensors = mechanism.make_tensors(problem, torch_dtype(case.dtype), torch.device("meta"), None)
    for tensor in tensors.values():
        if tensor.is_floating_point():
            tensor.requires_grad_(True)
    with _tf32(case.dtype == "tf32"), _recording(launches, state):
        out = impl.load()(problem, tensors)
        state["phase"] = "bwd"
        out.backward(torch.empty_like(out))
    for launch in launches:
        launch.bytes_touched = _bytes_touched(launch, problem)
        launch.model_bytes = mechanism.min_bytes(problem, Mode(launch.phase), itemsize(case.dtype))
    return launches


def _trace_decode(case: Case, mechanism: registry.Mechanism, impl: registry.Impl, problem: Problem) -> list[Launch]:
    """The launches of one decode step on a cache of `problem.T` tokens; the model is the step's least bytes."""
    launches: list[Launch] = []
    state = {"phase": "decode", "case": case}
    whole = problem.with_(T=problem.T + case.q_len)
    tensors = mechanism.make_tensors(whole, torch_dtype(case.dtype), torch.device("meta"), None)
    with _tf32(case.dtype == "tf32"), _recording(launches, state):
        decoding = impl.load_decode()(problem, tensors, case.q_len)
        out = decoding.step()
    for launch in launches:
        launch.bytes_touched = _bytes_touched(launch, problem)
        launch.model_bytes = decoding.step_bytes(out)
    return launches


def _bytes_touched(launch: Launch, problem: Problem) -> int:
    """Bytes of the tensor arguments that grow with the tokens (numel >= T), each counted once: one read or one
    write of every such tensor, the pass model the table holds each kernel to (re-reads that the L2 cache may
    serve are not counted)."""
    tensors = [arg for arg in launch.args if isinstance(arg, torch.Tensor) and arg.numel() >= problem.T]
    return sum(t.numel() * t.element_size() for t in {id(t): t for t in tensors}.values())
