"""What the Triton kernels of every mechanism share: the interpreter check, autotune configs, block sizes, dot
precision and the scratch buffers that tests can fill with NaN.

Importing this module imports neither triton nor CUDA (triton is imported inside the one function that builds
triton objects), so a spec or any other light module may use it; the kernel modules that import triton are
only loaded when their implementation runs.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    import triton

# Tile edge under the interpreter: the smallest tl.dot accepts, and small tiles keep the interpreter's numpy
# work (and the tests) short while still spanning several tiles at small T.
INTERPRETED_BLOCK = 16
# Tests set this: every buffer from `scratch` then starts as NaN, so an element no program wrote shows up in the
# output or a gradient instead of passing with whatever the memory held.
POISON = False


def interpreted() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1) rather than compiling them.

    Triton decides this when a kernel is decorated, so it must be set before any kernel module is imported."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def autotune_configs(
    block: str,
    sizes: Sequence[int],
    warps: Sequence[int] | Mapping[int, Sequence[int]] = (4, 8),
    stages: Sequence[int] = (3,),
) -> list[triton.Config]:
    """Configs for `@triton.autotune` over one block size named `block`: every size × warp count × pipeline
    depth on a GPU (`warps` per size when a mapping), a single `INTERPRETED_BLOCK` config under the interpreter
    (where warps mean nothing and tuning is wasted)."""
    import triton

    if interpreted():
        return [triton.Config({block: INTERPRETED_BLOCK}, num_warps=1)]
    per_size = warps if isinstance(warps, Mapping) else dict.fromkeys(sizes, warps)
    return [triton.Config({block: n}, num_warps=w, num_stages=s) for n in sizes for w in per_size[n] for s in stages]


# The shared memory every autotuned config needs, per kernel and target, as Triton's compiler reports it
# (written by `python -m attnbench.mechanisms.triton_compile`, which compiles every launch for sm_90 and sm_80).
SHARED_MEMORY_FIGURES = "triton_shared_memory.json"
# Figures of the nearest target at or below a device's compute capability stand for it (sm_86/89 use sm_80's).
FIGURE_TARGETS = ((9, "sm_90"), (8, "sm_80"))


def config_key(dtype: str, meta: dict[str, Any]) -> str:
    """How a config is named in the figures: the kernel's first tensor dtype, its compile-time constants and
    the warps and pipeline stages, e.g. `bf16 BLOCK_C=64 CAUSAL=True num_stages=3 num_warps=4`."""
    return " ".join([dtype, *(f"{name}={meta[name]}" for name in sorted(meta))])


@functools.cache
def _shared_memory_figures() -> dict[str, dict[str, dict[str, int]]]:
    path = Path(__file__).with_name(SHARED_MEMORY_FIGURES)
    return json.loads(path.read_text()) if path.exists() else {}


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))


def device_properties(device: torch.device):
    """The CUDA device's properties (compute capability, shared memory per block), None off CUDA."""
    return torch.cuda.get_device_properties(device) if device.type == "cuda" else None


def launchable(kernel: str) -> dict[str, Callable[..., list]]:
    """`prune_configs_by` for `@triton.autotune` of `kernel` (`module:name`): an early prune that drops the
    configs whose recorded shared memory exceeds what the launch's GPU allows a block, so the autotuner never
    tries a config that cannot launch. Configs without a figure (a shape the compile check does not cover) stay.
    """

    def prune(configs: list, named_args: dict[str, Any], **kwargs: Any) -> list:
        tensors = [value for value in named_args.values() if isinstance(value, torch.Tensor)]
        properties = device_properties(tensors[0].device) if tensors else None
        if properties is None:
            return configs
        target = next((name for major, name in FIGURE_TARGETS if properties.major >= major), None)
        module, name = kernel.split(":")
        constant = [p.name for p in getattr(sys.modules[module], name).fn.params if p.is_constexpr]
        figures = _shared_memory_figures().get(kernel, {})
        kept = []
        for config in configs:
            meta = {**named_args, **kwargs, **config.all_kwargs()}
            meta = {key: meta[key] for key in [*constant, "num_warps", "num_stages"] if key in meta}
            need = figures.get(config_key(_dtype_name(tensors[0].dtype), meta), {}).get(target, 0)
            if need <= properties.shared_memory_per_block_optin:
                kept.append(config)
        if not kept:
            raise RuntimeError(f"{kernel}: no autotune config fits in this GPU's shared memory ({properties.name})")
        return kept

    return {"early_config_prune": prune}


def power_of_2_at_least(n: int, floor: int = 1) -> int:
    """The smallest power of two >= max(n, floor): a block that covers `n` elements (tl.arange needs a power of
    two; tl.dot needs every dimension >= 16, hence `floor`)."""
    return 1 << (max(n, floor) - 1).bit_length()


def num_warps_for(tile_elements: int) -> int:
    """Warps for a program whose largest tile holds `tile_elements` values: 4 up to 4096 (32 values a thread),
    8 above, so that the per-thread share, and with it register pressure, stays bounded."""
    return 4 if tile_elements <= 4096 else 8


def head_blocks(H: int, d: int, block_t: int | None = None, tile_elements: int = 4096) -> dict[str, int]:
    """Launch meta-parameters for kernels that tile `[tokens, d]` of one head: all of a head's channels
    (`BLOCK_D`, padded to a power of two) by `BLOCK_T` tokens, about `tile_elements` in all (16 to 128 tokens)
    unless `block_t` (a power of two) says otherwise, `BLOCK_H` covering the heads of a token, and the warps."""
    block_d = power_of_2_at_least(d)
    block_t = block_t or max(16, min(128, tile_elements // block_d))
    return {
        "BLOCK_T": block_t,
        "BLOCK_D": block_d,
        "BLOCK_H": power_of_2_at_least(H),
        "num_warps": num_warps_for(block_t * block_d),
    }


# Launches traced on meta tensors (the ahead-of-time compile check) size their grids for an H100 SXM.
META_MULTIPROCESSORS = 132


def multiprocessors(device: torch.device, cpu_stand_in: int) -> int:
    """Streaming multiprocessors of a CUDA `device`, which grids are sized to fill; META_MULTIPROCESSORS on the
    meta device; `cpu_stand_in` on the CPU (under the interpreter), chosen by each kernel so that small test
    shapes still split into several programs."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    if device.type == "meta":
        return META_MULTIPROCESSORS
    return cpu_stand_in


def dot_precision(dtype: torch.dtype) -> str:
    """`input_precision` of a tl.dot whose operands have `dtype`: fp32 operands get exact fp32 products unless
    torch allows TF32 for its own matmuls (the suite's `tf32` dtype); 16-bit operands go to the tensor cores as
    they are, where the setting does not apply."""
    return "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"


def scratch(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A buffer that the kernels must fill completely (an output, or statistics written by every program): left
    uninitialised, or NaN under `POISON`. Buffers that kernels accumulate into are zeroed instead, not here."""
    if POISON:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)
