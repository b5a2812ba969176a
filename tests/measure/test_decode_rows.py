"""Decode rows through the whole tool: a real (tiny) decode run, then `show`, `plot`, `compare` and the baseline
gate on it, like any other mode."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from attnbench.cli import cli
from attnbench.results.files import ROWS_FILE, find_runs

SUITE = {
    "name": "decode-tiny",
    "mechanisms": [
        {"name": "gqa", "params": {"G": 4}, "impls": ["sdpa"]},
        {"name": "tpa", "params": {"R_q": 2, "R_k": 1, "R_v": 1}, "impls": ["sdpa"]},
        {"name": "tssa", "impls": ["reference"]},
        {"name": "xca", "impls": ["reference"]},
    ],
    "modes": "decode",
    "q_len": [1, 3],
    "causal": True,
    "dtypes": "fp32",
    "sweep": {"T": [16, 64], "B": 2, "H": 4, "d": 6},
    "timing": {"warmup_ms": 1, "rep_ms": 5, "min_reps": 5, "max_reps": 50, "flush_l2": False, "energy_s": 0},
    "limits": {"case_timeout_s": 120},
}


@pytest.fixture(scope="module")
def decode_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("decode")
    suite = folder / "decode-tiny.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    result = CliRunner().invoke(cli, ["run", str(suite), "-o", str(folder / "results")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run,) = find_runs(folder / "results")
    return run


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / ROWS_FILE).read_text().splitlines()]


def test_a_decode_run_records_every_case(decode_run):
    rows = _rows(decode_run)
    assert len(rows) == 4 * 2 * 2  # four entries, two cache lengths, two q_len
    by_status = {(row["mechanism"], row["status"]) for row in rows}
    assert by_status == {("gqa", "ok"), ("tpa", "ok"), ("tssa", "ok"), ("xca", "unsupported")}
    for row in rows:
        assert row["mode"] == "decode" and row["q_len"] in (1, 3) and row["cache_len"] == row["T"]
        if row["status"] == "ok":
            assert row["cache_bytes"] == row["cache_model_bytes"] and row["numerics_ok"]
    assert len({row["case_id"] for row in rows}) == len(rows), "q_len is part of a decode case's key"
    # how a step's time grows with the cache: a KV or factor cache is read whole, a recurrent state is fixed
    complexity = {row["mechanism"]: row["complexity"] for row in rows if row["status"] == "ok"}
    assert complexity == {"gqa": "linear", "tpa": "linear", "tssa": "constant"}


def test_show_and_plot_a_decode_run(decode_run, tmp_path):
    shown = CliRunner().invoke(cli, ["show", str(decode_run)])
    assert shown.exit_code == 0 and "decode" in shown.output
    plotted = CliRunner().invoke(cli, ["plot", str(decode_run), "-o", str(tmp_path / "plots"), "--x", "T"])
    assert plotted.exit_code == 0, plotted.output
    for stem in ("decode_latency_vs_cache", "decode_cache_vs_cache", "time_vs_seqlen"):
        assert (tmp_path / "plots" / f"{stem}.png").stat().st_size > 0
    summary = (tmp_path / "plots" / "summary.md").read_text()
    assert "## Decode" in summary and "(R_k+R_v)(H+d)·s = (1+1)(4+6)·4 B per token" in summary
    assert "H·(2d+1) = 52 numbers" in summary  # TSSA's state, H = 4, d = 6
    assert "The cache length M* from which tpa" in summary


def test_compare_and_the_baseline_gate_take_decode_rows(decode_run, tmp_path):
    same = CliRunner().invoke(cli, ["compare", str(decode_run), str(decode_run)])
    assert same.exit_code == 0, same.output
    slower = tmp_path / "slower" / decode_run.name
    shutil.copytree(decode_run, slower)
    rows = _rows(slower)
    for row in rows:
        if row["status"] == "ok":
            row["time_samples_ms"] = [3 * t + 1.0 for t in row["time_samples_ms"]]
            for key in ("time_ms", "time_p20_ms", "time_p80_ms"):
                row[key] = 3 * row[key] + 1.0
    (slower / ROWS_FILE).write_text("".join(json.dumps(row) + "\n" for row in rows))
    gated = CliRunner().invoke(cli, ["compare", str(decode_run), str(slower)])
    assert gated.exit_code == 1, gated.output
    baselines = tmp_path / "baselines"
    saved = CliRunner().invoke(cli, ["baseline", "save", str(decode_run), "-o", str(baselines)])
    assert saved.exit_code == 0, saved.output
    (stored,) = baselines.glob("*.json")
    assert CliRunner().invoke(cli, ["compare", str(stored), str(decode_run)]).exit_code == 0
    against = CliRunner().invoke(cli, ["compare", str(stored), str(slower)])
    assert against.exit_code == 1, against.output
