"""The mechanism registry: every mechanism declared in one place, its implementations loaded lazily by name.

A mechanism lives in `attnbench/mechanisms/<name>/spec.py`, which builds a `Mechanism` (or several that share
code, as `mha`/`gqa`/`mqa` do) and lists it in `MECHANISMS`. Out-of-tree mechanisms are modules of the same shape,
registered by an installed package's entry point or named in `ATTNBENCH_MECHANISMS` (see `plugins.py`).

Importing this module is cheap (no torch): the spec modules are imported on the first `mechanisms()` call. Each
spec names its implementations as `"module:function"` strings, so loading the registry imports torch and the
references but never triton.

Every implementation has one signature: `fn(problem, tensors, **options) -> Tensor`, where `tensors` are the
core inputs and learned core parameters (see each mechanism's `make_tensors`), and the result is the core
output `[B, T, H, d]` (or the mechanism's own documented core layout). The layer level wraps any core
implementation in the mechanism's projections (`Mechanism.apply`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from attnbench.mechanisms import plugins
from attnbench.mechanisms.decoding import decode_unsupported
from attnbench.mechanisms.flops import (  # noqa: F401  (FlopCount and the convention are part of this API)
    ATTENTION_BWD_FACTOR,
    BWD_FACTOR,
    FLOP_CONVENTION_ID,
    NO_FLOPS,
    FlopCount,
    flash_recompute,
)
from attnbench.mechanisms.problem import DTYPES, TRAINING_MODES, Level, Mode, Problem

if TYPE_CHECKING:
    import torch

    Tensors = dict[str, torch.Tensor]

ALL_MODES = frozenset(TRAINING_MODES)
# Extra mechanism modules, comma-separated, loaded after the built-in ones and the installed plug-ins: a module on
# the path that is not installed as a package (the test suite's fault-injection mechanism) registers this way, and
# worker processes inherit it.
PLUGIN_ENV = plugins.PLUGIN_ENV
# The entry-point group through which an installed package registers its mechanism modules.
ENTRY_POINT_GROUP = plugins.ENTRY_POINT_GROUP
# The built-in mechanism modules, registered first and in this order.
MECHANISM_MODULES = (
    "attnbench.mechanisms.softmax.spec",
    "attnbench.mechanisms.tssa.spec",
    "attnbench.mechanisms.aft.spec",
    "attnbench.mechanisms.tpa.spec",
    "attnbench.mechanisms.xca.spec",
)

# Relative L2 error allowed against the float64 reference, per dtype. bf16 keeps 8 bits of mantissa
# (unit roundoff 2^-9 ≈ 2e-3): inputs rounded to bf16 and an fp32-accumulated kernel land near 5e-3 on
# outputs, a few times that on gradients that pass through a softmax or a norm, so 3e-2 leaves headroom
# without hiding a wrong result (those are O(1)). fp16 has 11 bits (≈5e-4 roundoff), so 8x tighter. fp32
# loses a few digits through long reductions over T; tf32 matmuls keep 10 bits.
DEFAULT_TOLERANCES: Mapping[str, float] = MappingProxyType(
    {"fp64": 1e-9, "fp32": 1e-4, "tf32": 5e-3, "bf16": 3e-2, "fp16": 4e-3}
)


class Unsupported(ValueError):
    """A combination the mechanism or implementation does not define (recorded as status `unsupported`)."""


@dataclass(frozen=True)
class Param:
    """One of a mechanism's own parameters. `choices` limits the values; `minimum` bounds an integer."""

    default: Any
    doc: str
    choices: tuple[Any, ...] | None = None
    minimum: int | None = None

    def check(self, mechanism: str, name: str, value: Any) -> Any:
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(f"{mechanism}: {name} must be one of {list(self.choices)}, got {value!r}")
            return value
        if self.default is None or isinstance(self.default, int):
            if value is None and self.default is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{mechanism}: {name} must be an integer, got {value!r}")
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"{mechanism}: {name} must be >= {self.minimum}, got {value}")
        return value


@dataclass(frozen=True)
class Impl:
    """An implementation of a mechanism's core.

    `target` is `"module:function"`, imported on first use. `needs` lists what it requires: `"cuda"` (a CUDA
    device) and/or `"triton"` (the triton package; on a CPU only under TRITON_INTERPRET=1). `options` are
    passed to the function as keyword arguments (the SDPA backend, say). `unsupported(problem)`, if given,
    says why the implementation does not define a problem (a variant it has no kernel for), or None.
    `recompute(problem, forward_flops)`, if given, is the forward work its backward computes again (see
    `flash_recompute`); the row's `flops_impl` adds it to twice the forward.
    `decode`, if given, is the `"module:function"` of its decode path (`attnbench.mechanisms.decoding`):
    `fn(problem, tensors, q_len, **options) -> Decoding`; without it, mode `decode` is unsupported.
    """

    name: str
    target: str
    description: str
    needs: tuple[str, ...] = ()
    modes: frozenset[Mode] = ALL_MODES
    causal: tuple[bool, ...] = (False, True)
    dtypes: frozenset[str] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    unsupported: Callable[[Problem], str | None] | None = None
    recompute: Callable[[Problem, FlopCount], FlopCount] | None = None
    decode: str | None = None

    def recomputed(self, problem: Problem, forward: FlopCount) -> FlopCount:
        """The forward work this implementation's backward does again (`recompute(problem, forward)`; none when
        it does not say): `flash_recompute` for a FlashAttention-style kernel, a whole block for a checkpoint."""
        return NO_FLOPS if self.recompute is None else self.recompute(problem, forward)

    def load(self) -> Callable[..., torch.Tensor]:
        fn = _load_target(self.target)
        if not self.options:
            return fn
        options = dict(self.options)
        return lambda problem, tensors: fn(problem, tensors, **options)

    def load_decode(self) -> Callable[..., Any]:
        """The decode path: `fn(problem, tensors, q_len) -> Decoding` (the implementation's options bound)."""
        if self.decode is None:
            raise Unsupported(f"{self.name}: no decode implementation")
        fn, options = _load_target(self.decode), dict(self.options)
        return lambda problem, tensors, q_len: fn(problem, tensors, q_len, **options)

    def unavailable_reason(self, device: str) -> str | None:
        """Why this implementation cannot run on `device` ("cpu" or "cuda"), or None when it can."""
        if "cuda" in self.needs and device != "cuda":
            return "needs a CUDA device"
        if "triton" in self.needs:
            if importlib.util.find_spec("triton") is None:
                return "needs the triton package"
            if device != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
                return "a Triton kernel: runs on a GPU, or on the CPU under TRITON_INTERPRET=1"
        return None

    def unsupported_reason(self, problem: Problem, mode: Mode, dtype: str) -> str | None:
        """Why this implementation does not define this case, or None when it does."""
        if mode is Mode.DECODE:
            why = f"{self.name}: no decode implementation" if self.decode is None else decode_unsupported(problem)
            if why:
                return why
        elif mode not in self.modes:
            return f"{self.name} does not support mode {mode.value}"
        if problem.causal not in self.causal:
            return f"{self.name} has no {'causal' if problem.causal else 'non-causal'} form"
        if self.dtypes is not None and dtype not in self.dtypes:
            return f"{self.name} supports dtypes {sorted(self.dtypes)}, not {dtype}"
        if self.unsupported is not None:
            return self.unsupported(problem)
        return None


def reference_recompute(problem: Problem, forward: FlopCount) -> FlopCount:
    """What the mechanism's reference computes again in its backward (`torch.compile` of it does the same)."""
    return get(problem.mechanism).impl("reference").recomputed(problem, forward)


@dataclass(frozen=True)
class Mechanism:
    """Everything attnbench knows about one mechanism.

    - `make_tensors(problem, dtype, device, generator) -> dict`: fresh random inputs and learned parameters
      for the problem's level (core: projected inputs + core parameters; layer: `x` + every weight).
    - `reference(problem, core_tensors) -> Tensor`: the core, written to mirror the equations.
    - `project(problem, tensors) -> core_tensors` and `output(problem, tensors, core_out) -> y`: the layer's
      input and output projections; the layer output is `output(project(...), core(...))`.
    - `check(problem)`: raises ValueError naming the argument for impossible combinations.
    - `flops(problem) -> FlopCount` (forward, at the problem's level: the layer adds its projections; the
      attention core over a T×T score matrix, if any, named in `attention`) and
      `min_bytes(problem, mode, itemsize) -> int` (the fewest bytes a fused implementation moves).
    - `complexity`: "linear" or "quadratic" in T, what a plot's fitted exponent is compared with;
      `variant_complexity` overrides it per variant (AFT-full is quadratic, its other variants linear).
    - `variant_param`: the parameter that names the variant in result rows (AFT's `variant`), if any.
    - `derived(problem)`: shape-derived values that result rows record (softmax attention's `G`).
    - `cache_model(problem, itemsize) -> CacheModel`: what its decode cache or state holds, by formula
      (`attnbench.mechanisms.decoding`); the decode rows check the measured tensors against it.
    - `test_problems`: keyword sets for `problem()` at small awkward shapes (odd T, widths that are not powers
      of two, B = 1, T = 1) on which the generic tests check every implementation against the reference.
    """

    name: str
    title: str
    paper: str
    complexity: str
    make_tensors: Callable[..., Tensors]
    reference: Callable[[Problem, Tensors], torch.Tensor]
    project: Callable[[Problem, Tensors], Tensors]
    output: Callable[[Problem, Tensors, torch.Tensor], torch.Tensor]
    flops: Callable[[Problem], FlopCount]
    min_bytes: Callable[[Problem, Mode, int], int]
    impls: tuple[Impl, ...]
    params: Mapping[str, Param] = field(default_factory=dict)
    causal: tuple[bool, ...] = (False, True)
    check: Callable[[Problem], None] = lambda problem: None
    tolerances: Mapping[str, float] = field(default_factory=lambda: DEFAULT_TOLERANCES)
    variant_param: str | None = None
    variant_complexity: Mapping[str, str] = field(default_factory=dict)
    derived: Callable[[Problem], Mapping[str, Any]] = lambda problem: {}
    test_problems: tuple[Mapping[str, Any], ...] = ()
    notes: str = ""
    cache_model: Callable[[Problem, int], Any] | None = None

    def __post_init__(self) -> None:
        names = [impl.name for impl in self.impls]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: implementation names repeat: {names}")

    @property
    def impl_names(self) -> tuple[str, ...]:
        return tuple(impl.name for impl in self.impls)

    def impl(self, name: str) -> Impl:
        for impl in self.impls:
            if impl.name == name:
                return impl
        raise ValueError(f"{self.name}: implementation must be one of {list(self.impl_names)}, got {name!r}")

    def problem(
        self,
        *,
        B: int,
        T: int,
        H: int,
        d: int,
        causal: bool = False,
        level: Level | str = Level.CORE,
        **params: Any,
    ) -> Problem:
        """A checked `Problem` with this mechanism's defaults filled in; ValueError names any bad argument."""
        for axis, value in (("B", B), ("T", T), ("H", H), ("d", d)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{self.name}: {axis} must be a positive integer, got {value!r}")
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise ValueError(f"{self.name}: unknown parameter {unknown[0]!r}; parameters are {sorted(self.params)}")
        if causal not in self.causal:
            raise Unsupported(f"{self.name} has no {'causal' if causal else 'non-causal'} form")
        resolved = {
            name: spec.check(self.name, name, params.get(name, spec.default)) for name, spec in self.params.items()
        }
        problem = Problem(self.name, B=B, T=T, H=H, d=d, causal=causal, level=Level(level), params=resolved)
        self.check(problem)
        return problem

    def variant(self, problem: Problem) -> str:
        return str(problem.params[self.variant_param]) if self.variant_param else ""

    def complexity_of(self, variant: str = "") -> str:
        """ "linear" or "quadratic" in T for one of this mechanism's variants (or the mechanism itself)."""
        return self.variant_complexity.get(variant, self.complexity)

    def tolerance(self, dtype: str) -> float:
        return self.tolerances.get(dtype, DEFAULT_TOLERANCES[dtype])

    def apply(self, core: Callable[[Problem, Tensors], torch.Tensor], problem: Problem, tensors: Tensors):
        """Run `core` at the problem's level: directly, or wrapped in the layer's projections."""
        if problem.level is Level.CORE:
            return core(problem, tensors)
        return self.output(problem, tensors, core(problem, self.project(problem, tensors)))

    def run_reference(self, problem: Problem, tensors: Tensors) -> torch.Tensor:
        return self.apply(self.reference, problem, tensors)

    def mode_flops(self, problem: Problem, mode: Mode, impl: str | None = None) -> FlopCount:
        """FLOPs of one call in `mode`: by the convention (`impl` None: the attention term's backward 2.5×, every
        other term's 2×), or what implementation `impl` performs (2× plus what it declares it recomputes)."""
        forward = self.flops(problem)
        recomputed = flash_recompute(problem, forward) if impl is None else self.impl(impl).recomputed(problem, forward)
        return forward.in_mode(mode, recomputed)

    def flops_for(self, problem: Problem, mode: Mode, impl: str | None = None) -> int:
        """Total FLOPs of one call in `mode`, by the convention or (with `impl`) as that implementation runs."""
        return self.mode_flops(problem, mode, impl).total


def _load_target(target: str):
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


class PluginError(ValueError):
    """Out-of-tree mechanism modules failed to load; the message holds one line per module."""


# What the last registry load could not register, one line per plug-in module (see `load_errors`).
_load_errors: tuple[str, ...] = ()


@cache
def mechanisms() -> Mapping[str, Mechanism]:
    """Every registered mechanism by name, in registration order.

    First the built-in modules (`MECHANISM_MODULES`), then the modules that installed packages declare in the
    `attnbench.mechanisms` entry-point group, then those named in `ATTNBENCH_MECHANISMS`. A built-in module that
    fails to load is a bug, and raises. A plug-in module that fails to import, declares no `MECHANISMS` or
    registers a name already taken is left out whole and reported by `load_errors()`: one broken plug-in never
    hides the other mechanisms. `mechanisms.cache_clear()` makes the next call load everything again.
    """
    global _load_errors
    found: dict[str, Mechanism] = {}
    owners: dict[str, str] = {}
    for module_name in MECHANISM_MODULES:
        _register(found, owners, module_name, plugins.import_mechanisms(module_name))
    errors = []
    for source in plugins.plugin_sources():
        try:
            _register(found, owners, source.module, plugins.import_mechanisms(source.module))
        except Exception as exc:  # whatever a third-party module raises on import, the others still load
            errors.append(source.failure(exc))
    _load_errors = tuple(errors)
    return MappingProxyType(found)


def _register(found: dict[str, Mechanism], owners: dict[str, str], module_name: str, declared: tuple) -> None:
    """Add one module's mechanisms, all or none: `PluginRejected` names the first that cannot be registered."""
    names: list[str] = []
    for mechanism in declared:
        if not isinstance(mechanism, Mechanism):
            raise plugins.PluginRejected(f"MECHANISMS holds a {type(mechanism).__name__}, not a Mechanism")
        if mechanism.name in owners or mechanism.name in names:
            owner = owners.get(mechanism.name, module_name)
            raise plugins.PluginRejected(f"mechanism {mechanism.name!r} is already registered (by {owner})")
        names.append(mechanism.name)
    for mechanism in declared:
        found[mechanism.name] = mechanism
        owners[mechanism.name] = module_name


def load_errors() -> tuple[str, ...]:
    """One line per plug-in module that failed to load (empty when every one loaded), loading the registry first."""
    mechanisms()
    return _load_errors


def check_plugins() -> None:
    """Raise `PluginError` when a plug-in module failed to load: for commands that must not run, or record
    results, with a mechanism silently missing."""
    errors = load_errors()
    if errors:
        raise PluginError("\n".join(errors))


def get(name: str) -> Mechanism:
    """The mechanism called `name`; ValueError lists the registered names otherwise, and the plug-in modules that
    failed to load (the mechanism may be one of theirs)."""
    registered = mechanisms()
    if name not in registered:
        message = f"mechanism must be one of {list(registered)}, got {name!r}"
        if _load_errors:
            message += "; " + "; ".join(_load_errors)
        raise ValueError(message)
    return registered[name]


def all_impls() -> Iterable[tuple[Mechanism, Impl]]:
    for mechanism in mechanisms().values():
        for impl in mechanism.impls:
            yield mechanism, impl


def complexity(mechanism: str, variant: str = "") -> str | None:
    """ "linear" or "quadratic" in T for a registered mechanism (and variant), or None for one not registered here
    (results of a mechanism registered elsewhere: their rows carry it)."""
    found = mechanisms().get(mechanism)
    return found.complexity_of(variant) if found else None


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return dtype
