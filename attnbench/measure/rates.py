"""A row's rates against the device's ceilings: FLOPs by the convention and as the implementation runs, the
fraction of the matmul ceiling of the row's own dtype, and flags for rates that no real run can reach.

A rate above the ceiling the same run measured (more GB/s than the copy bandwidth, more matmul TFLOP/s than the
device's matmul rate in that dtype) is not a rate: the data sat in a cache the copy did not fit, the time is
wrong (a loaded machine, a timer that missed work) or the model overcounts. The row keeps the number, flags it
in `rate_flags` and says why in its reason; plots and summaries leave flagged rates out.
"""

from __future__ import annotations

from typing import Any

from attnbench.mechanisms.problem import Mode, Problem
from attnbench.mechanisms.registry import FLOP_CONVENTION_ID, Mechanism

# How far above its ceiling a rate may read before it is flagged: the ceilings are medians of a few
# repetitions, and a case's own best conditions can beat them by a few percent.
CEILING_MARGIN = 1.05
ABOVE_MATMUL = "tflops_above_matmul_ceiling"
ABOVE_COPY = "gbps_above_copy_ceiling"
RATE_FLAGS = (ABOVE_MATMUL, ABOVE_COPY)


def matmul_ceiling(ceilings: dict[str, Any], dtype: str) -> tuple[float | None, str | None]:
    """The measured matmul TFLOP/s for `dtype` and the dtype it was measured in, or (None, None) when this run
    measured none for it (a run's meta from before per-dtype ceilings has one, in `matmul_dtype`)."""
    by_dtype = ceilings.get("matmul_tflops_by_dtype") or {}
    if by_dtype.get(dtype):
        return float(by_dtype[dtype]), dtype
    if ceilings.get("matmul_dtype") == dtype and ceilings.get("matmul_tflops"):
        return float(ceilings["matmul_tflops"]), dtype
    return None, None


def rate_fields(
    mechanism: Mechanism,
    problem: Problem,
    impl: str,
    mode: Mode,
    dtype: str,
    time_s: float,
    gbps: float,
    ceilings: dict[str, Any],
) -> tuple[dict[str, Any], list[str]]:
    """The row fields on FLOPs and ceilings, and the notes its reason gets for each flagged rate."""
    performed = mechanism.mode_flops(problem, mode, impl)
    impl_matmul_tflops = performed.matmul / time_s / 1e12
    fields: dict[str, Any] = {
        "flop_convention": FLOP_CONVENTION_ID,
        "flops_impl": performed.total,
        "impl_matmul_tflops": impl_matmul_tflops,
        "frac_matmul_peak": None,
        "ceiling_dtype": None,
        "frac_copy_bw": None,
    }
    flags, notes = [], []
    ceiling, ceiling_dtype = matmul_ceiling(ceilings, dtype)
    if ceiling and performed.matmul:
        fields.update(frac_matmul_peak=impl_matmul_tflops / ceiling, ceiling_dtype=ceiling_dtype)
        if impl_matmul_tflops > CEILING_MARGIN * ceiling:
            flags.append(ABOVE_MATMUL)
            notes.append(
                f"{ABOVE_MATMUL}: {impl_matmul_tflops:.3g} matmul TFLOP/s is above the {ceiling_dtype} matmul "
                f"ceiling of {ceiling:.3g} TFLOP/s this run measured, so it is not a real rate"
            )
    copy = ceilings.get("copy_gbps")
    if copy:
        fields["frac_copy_bw"] = gbps / copy
        if gbps > CEILING_MARGIN * copy:
            flags.append(ABOVE_COPY)
            notes.append(
                f"{ABOVE_COPY}: {gbps:.3g} GB/s is above the copy bandwidth of {copy:.3g} GB/s this run measured, "
                "so it is not a real rate (the data stayed in a cache, or the time is wrong)"
            )
    fields["rate_flags"] = flags
    return fields, notes
