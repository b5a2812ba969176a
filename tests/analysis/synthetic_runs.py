"""Synthetic runs of known scaling, shared by the analysis and the plots tests.

The runs are built row by row with `write_json`/`append_row` (the runner's on-disk format): time grows as
`a + c·T^p` with lognormal noise, so the exponents, the crossover length and the OOM walls are known exactly.
Every timed row keeps 30 timing samples around its median, as the runner does.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from attnbench.analysis.runs import RunInfo, load_runs
from attnbench.analysis.series import series_frame
from attnbench.mechanisms import registry
from attnbench.results.files import ROW_FIELDS, SCHEMA_VERSION, append_row, write_json

LENGTHS = [2**k for k in range(7, 14)]  # 128 … 8192
NOISE = 0.02  # lognormal σ of every synthetic time
SAMPLES, SAMPLE_SPREAD = 30, 0.03  # timing samples kept per row, and their lognormal σ around the row's median
# time in ms: mha's best (sdpa) 1e-6·T², tssa 2e-3·T, so tssa is faster from T* = 2e-3 / 1e-6 = 2000
SDPA_C, TSSA_C = 1e-6, 2e-3
MHA_REFERENCE_OOM_FROM = 4096
NUMERICS_FAIL_AT = 8192  # tssa reference returns a wrong result here


def make_row(
    mechanism: str,
    impl: str,
    T: int,
    *,
    status: str = "ok",
    time_ms: float | None = None,
    mem: float | None = None,
    variant: str = "",
    B: int = 2,
    H: int = 4,
    d: int = 16,
    **extra,
) -> dict:
    """One result row as the runner writes it, complexity included (from the registry, as the runner takes it)."""
    row = dict.fromkeys(ROW_FIELDS)
    row.update(
        schema_version=SCHEMA_VERSION, case_id=f"{mechanism}-{impl}-{B}-{T}-{H}-{d}", mechanism=mechanism,
        variant=variant, impl=impl, mode="fwd", level="core", dtype="fp32", causal=False, B=B, T=T, H=H,
        G=H if mechanism == "mha" else None, D=H * d, d=d, params={}, status=status,
        complexity=registry.complexity(mechanism, variant),
    )  # fmt: skip
    if status in ("ok", "numerics_fail") and time_ms is not None:
        row["time_samples_ms"] = timing_samples(row["case_id"], time_ms)
        flops = 4 * B * H * T * T * d if mechanism in ("mha", "gqa") else 15 * B * T * H * d
        moved = 16 * B * T * H * d
        row.update(
            time_ms=time_ms, time_p20_ms=time_ms * 0.97, time_p80_ms=time_ms * 1.04, peak_mem_bytes=mem,
            flops=flops, bytes=moved, tflops=flops / time_ms / 1e9, gbps=moved / time_ms / 1e6,
            numerics_ok=status == "ok",
        )  # fmt: skip
    if status == "oom":
        row["reason"] = "OutOfMemoryError: CUDA out of memory"
    row.update(extra)
    return row


def timing_samples(case_id: str, median_ms: float, n: int = SAMPLES, spread: float = SAMPLE_SPREAD) -> list[float]:
    """`n` timing samples of one case, lognormal with σ `spread`, scaled so that their median is `median_ms`
    exactly (what the row reports); drawn from a seed of the case id, so a run is the same every time."""
    draws = np.exp(np.random.default_rng(zlib.crc32(case_id.encode())).normal(0.0, spread, n))
    return [float(value) for value in draws * (median_ms / np.median(draws))]


def write_run(path: Path, rows: list[dict], *, suite: str = "seqlen", device: str = "Test GPU") -> Path:
    """A run folder at `path` holding `rows`."""
    path.mkdir(parents=True)
    meta = {
        "schema_version": SCHEMA_VERSION,
        "suite": {"name": suite, "device": "cuda"},
        "device": {"type": "cuda", "name": device},
        "git": {"commit": "0123456789abcdef", "dirty": False},
        "ceilings": {"copy_gbps": 3000.0, "matmul_tflops": 750.0, "matmul_dtype": "bf16"},
        "status": "complete",
    }
    write_json(path / "meta.json", meta)
    for row in rows:
        append_row(path, row)
    return path


def seqlen_rows(seed: int, slowdown: float = 1.0) -> list[dict]:
    """mha (reference OOM from 4096, sdpa), tssa (reference with one numerics failure, a fast impl), aft:simple."""
    rng = np.random.default_rng(seed)

    def noisy(value: float) -> float:
        return float(value * slowdown * math.exp(rng.normal(0.0, NOISE)))

    rows = []
    for T in LENGTHS:
        # a fixed 0.02 ms launch cost: it bends the short end, the upper-range fit must still find 2
        rows.append(make_row("mha", "sdpa", T, time_ms=noisy(0.02 + SDPA_C * T * T), mem=4096.0 * T))
        if T < MHA_REFERENCE_OOM_FROM:
            rows.append(make_row("mha", "reference", T, time_ms=noisy(3 * SDPA_C * T * T), mem=8.0 * T * T))
        else:
            rows.append(make_row("mha", "reference", T, status="oom"))
        if T == NUMERICS_FAIL_AT:
            # a wrong result 50x slower: were it fitted, the exponent would jump
            rows.append(
                make_row("tssa", "reference", T, status="numerics_fail", time_ms=50 * TSSA_C * T, mem=4096.0 * T)
            )
        else:
            rows.append(make_row("tssa", "reference", T, time_ms=noisy(1.5 * TSSA_C * T), mem=4096.0 * T))
        rows.append(make_row("tssa", "fast", T, time_ms=noisy(TSSA_C * T), mem=2048.0 * T))
        if T <= 2048:
            rows.append(make_row("aft", "reference", T, variant="simple", time_ms=noisy(4 * TSSA_C * T), mem=3e3 * T))
        else:
            rows.append(make_row("aft", "reference", T, variant="simple", status="unsupported"))
    return rows


def write_seqlen_run(root: Path) -> Path:
    """The synthetic seqlen run, as `root/results/seqlen-gpu0`."""
    return write_run(root / "results" / "seqlen-gpu0", seqlen_rows(seed=1))


def loaded(path: Path, x: str = "T") -> tuple[list[RunInfo], pd.DataFrame, pd.DataFrame]:
    """The runs at `path`, their prepared rows, and the series frame along `x`."""
    runs, frame = load_runs(path)
    return runs, frame, series_frame(frame, x)
