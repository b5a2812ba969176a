"""What the Triton kernels of every mechanism share: the interpreter check, autotune configs, block sizes, dot
precision and the scratch buffers that tests can fill with NaN.

Importing this module imports neither triton nor CUDA (triton is imported inside the one function that builds
triton objects), so a spec or any other light module may use it; the kernel modules that import triton are
only loaded when their implementation runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

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


def autotune_configs(block: str, sizes: Sequence[int], warps: Sequence[int] = (4, 8)) -> list[triton.Config]:
    """Configs for `@triton.autotune` over one block size named `block`: every size × warp count on a GPU, a
    single `INTERPRETED_BLOCK` config under the interpreter (where warps mean nothing and tuning is wasted)."""
    import triton

    if interpreted():
        return [triton.Config({block: INTERPRETED_BLOCK}, num_warps=1)]
    return [triton.Config({block: size}, num_warps=w) for size in sizes for w in warps]


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


def multiprocessors(device: torch.device, cpu_stand_in: int) -> int:
    """Streaming multiprocessors of a CUDA `device`, which grids are sized to fill; `cpu_stand_in` on the CPU
    (under the interpreter), chosen by each kernel so that small test shapes still split into several programs."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return cpu_stand_in


def dot_precision(dtype: torch.dtype) -> str:
    """`input_precision` of a tl.dot whose operands have `dtype`: fp32 operands get exact fp32 products unless
    torch allows TF32 for its own matmuls (the suite's `tf32` dtype); 16-bit operands go to the tensor cores as
    they are, where the setting does not apply."""
    return "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"


def cancelling_dot_precision(dtype: torch.dtype) -> str:
    """`input_precision` of a tl.dot on fp32 operands whose products then cancel, in a problem of `dtype`: exact
    fp32 for fp32 problems without TF32, otherwise three TF32 passes (fp32 accuracy at tensor-core speed), since
    rounding the operands to fewer bits would leave an error far above the cancelled result."""
    return "ieee" if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32 else "tf32x3"


def scratch(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A buffer that the kernels must fill completely (an output, or statistics written by every program): left
    uninitialised, or NaN under `POISON`. Buffers that kernels accumulate into are zeroed instead, not here."""
    if POISON:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)
