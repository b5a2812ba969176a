"""The decode summary on rows of known timing: the cache length from which the challenger's step overtakes the
baseline's (`attnbench.analysis.decode`), and the cache table against the formula."""

from __future__ import annotations

import numpy as np
import pandas as pd

from attnbench.analysis.decode import cache_table, decode_rows, overtakes
from attnbench.analysis.rows import prepare
from attnbench.mechanisms.decoding import DECODE_BASELINE, DECODE_CHALLENGER
from attnbench.results.files import ROW_FIELDS

LENGTHS = [2**k for k in range(12, 20)]  # 4K … 512K


def _row(mechanism: str, params: dict, M: int, time_ms: float, rng: np.random.Generator, kept: int) -> dict:
    row = dict.fromkeys(ROW_FIELDS)
    samples = time_ms * np.exp(rng.normal(0, 0.02, 40))
    row.update(
        run="synthetic", mechanism=mechanism, variant="", impl="sdpa", mode="decode", level="core", dtype="bf16",
        causal=True, B=1, T=M, H=32, d=64, params=params, status="ok", time_ms=float(np.median(samples)),
        time_p20_ms=float(np.quantile(samples, 0.2)), time_p80_ms=float(np.quantile(samples, 0.8)),
        time_samples_ms=samples.tolist(), q_len=1, cache_len=M, cache_bytes=kept * (M + 1),
        cache_model_bytes=kept * (M + 1), cache_bytes_per_token=float(kept), cache_formula=f"{kept} B per token",
        complexity="linear",
    )  # fmt: skip
    return row


def _frame(challenger_ms, baseline_ms, mismatch: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for M in LENGTHS:
        rows.append(_row(*DECODE_CHALLENGER[:1], {**DECODE_CHALLENGER[1], "R_k": 1}, M, challenger_ms(M), rng, 384))
        rows.append(_row(DECODE_BASELINE[0], dict(DECODE_BASELINE[1]), M, baseline_ms(M), rng, 1024))
    if mismatch:
        rows[-1]["cache_model_bytes"] += 1
    return prepare(pd.DataFrame(rows))


def test_the_overtaking_length_is_found_with_its_interval():
    # the baseline reads 1024 B per token, the challenger 384 B after a fixed 0.05 ms: equal at M = 0.05 / (640e-9)
    frame = _frame(lambda M: 0.05 + 384e-9 * M, lambda M: 1024e-9 * M)
    (found,) = overtakes(decode_rows(frame)).itertuples()
    assert found.kind == "within" and 0.8 * 78125 < found.M_star < 1.25 * 78125
    assert found.M_low <= found.M_star <= found.M_high
    never = overtakes(decode_rows(_frame(lambda M: 2e-6 * M, lambda M: 1e-6 * M)))
    assert list(never["kind"]) == ["above"]


def test_the_cache_table_says_when_a_row_disagrees_with_its_formula():
    lines = {line[0]: line for line in cache_table(decode_rows(_frame(lambda M: 1.0, lambda M: 1.0)))}
    assert {line[5] for line in lines.values()} == {"yes"}
    assert sorted(line[3] for line in lines.values()) == ["1024", "384"]  # measured bytes per token
    broken = cache_table(decode_rows(_frame(lambda M: 1.0, lambda M: 1.0, mismatch=True)))
    assert "**no**" in {line[5] for line in broken}
