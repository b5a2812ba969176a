"""The page's case table on rows of several kinds: columns for whatever numeric fields rows add, failures first,
the filters' values, and a reproduce command (or the reason there is none) on every line."""

from __future__ import annotations

import numpy as np

from attnbench.report.cases import case_table, is_failure

META = {"suite": {"path": "suites/x.yaml", "device": "cpu"}, "selection": {"overrides": ["timing.rep_ms=4"]}}


def _row(rng: np.random.Generator, k: int, **extra) -> dict:
    return {
        "case_id": f"id{k:03d}", "mechanism": "alpha", "variant": "", "impl": "reference", "mode": "fwd",
        "level": "core", "dtype": "fp32", "causal": False, "B": 2, "T": int(rng.integers(16, 4096)), "H": 3, "d": 8,
        "params": {}, "status": "ok", "numerics_ok": True, "time_ms": float(rng.uniform(0.01, 50)),
        "peak_mem_bytes": float(rng.integers(1, 2**30)), "rel_err": float(rng.uniform(1e-9, 1e-4)), **extra,
    }  # fmt: skip


def test_rows_of_new_kinds_add_their_columns_and_failures_come_first(seed):
    rng = np.random.default_rng(seed)
    plain = [_row(rng, k) for k in range(5)]
    decode = [_row(rng, 10 + k, mode="decode", q_len=1, cache_bytes=float(rng.integers(1, 1e6))) for k in range(3)]
    broken = _row(rng, 20, status="error", reason="RuntimeError: boom", time_ms=None)
    wrong = _row(rng, 21, status="numerics_fail", numerics_ok=False, reason="max error 3e-2 over 1e-3")
    table = case_table([("run-a", META, [*plain, broken, *decode, wrong])])
    assert "cache_bytes" in table.headers and "q_len" in table.headers and "run" not in table.headers
    assert [line["case_id"] for line in table.rows[:2]] == ["id020", "id021"]
    assert all(line["failed"] for line in table.rows[:2]) and not any(line["failed"] for line in table.rows[2:])
    assert table.filters["mode"] == ["decode", "fwd"]
    assert table.filters["status"] == ["ok", "numerics_fail", "error"]
    column = table.headers.index("cache_bytes")
    cached = {line["case_id"]: line["cells"][column] for line in table.rows}
    for row in decode:
        assert cached[row["case_id"]].sort == row["cache_bytes"]
    assert cached["id000"].text == "" and cached["id000"].sort is None
    for line in table.rows:
        assert line["repro"].startswith("attnbench run suites/x.yaml --device cpu")
        assert "--set timing.rep_ms=4" in line["repro"] and f"--set T={line['cells'][7].text}" in line["repro"]


def test_a_row_without_its_shape_says_why_it_cannot_be_reproduced(seed):
    row = _row(np.random.default_rng(seed), 1, T=None)
    (line,) = case_table([("run", META, [row]), ("other", META, [])]).rows
    assert line["repro"].startswith("# cannot reproduce") and "T" in line["repro"]
    assert is_failure({"status": "ok", "numerics_ok": False}) and not is_failure({"status": "oom"})
