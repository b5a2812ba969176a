"""Each row's complexity in T, what its fitted time exponent is checked against: recorded in the row by the runner,
or, for rows of runs written before rows recorded it, taken from the mechanism registry."""

from __future__ import annotations

from pathlib import Path

from synthetic_runs import LENGTHS, loaded, make_row, seqlen_rows, write_run

from attnbench.analysis import rows as analysis_rows
from attnbench.analysis.crossover import crossovers
from attnbench.analysis.fits import fit_series
from attnbench.mechanisms import registry


def _older(rows: list[dict]) -> list[dict]:
    """The rows as a run written before rows recorded their complexity holds them: without the key at all."""
    return [{key: value for key, value in row.items() if key != "complexity"} for row in rows]


def test_rows_of_an_older_run_get_their_verdict_from_the_registry(tmp_path: Path):
    recorded = write_run(tmp_path / "new" / "seqlen-gpu0", seqlen_rows(seed=1))
    older = write_run(tmp_path / "old" / "seqlen-gpu0", _older(seqlen_rows(seed=1)))
    assert '"complexity"' not in (older / "rows.jsonl").read_text()
    _, frame, series = loaded(older)
    assert dict(zip(frame["mechanism"], frame["complexity"], strict=True)) == {
        "mha": "quadratic", "tssa": "linear", "aft": "linear"
    }  # fmt: skip
    fits = fit_series(series).set_index(["name", "impl"])
    assert fits.loc["mha", "sdpa"].time_expected == 2.0 and fits.loc["tssa", "fast"].time_expected == 1.0
    assert fits.loc["mha", "sdpa"].time_verdict == fits.loc["tssa", "fast"].time_verdict == "agrees"
    # the same verdicts, and the same crossovers, as the run whose rows record their complexity
    now = fit_series(loaded(recorded)[2]).set_index(["name", "impl"])
    assert list(fits["time_verdict"]) == list(now["time_verdict"])
    assert set(crossovers(series)["name"]) == {"tssa", "aft:simple"}


def test_a_variant_of_an_older_run_gets_the_variants_complexity(tmp_path: Path):
    rows = [make_row("aft", "reference", T, variant="full", time_ms=1e-6 * T * T, mem=8.0 * T * T) for T in LENGTHS]
    _, frame, series = loaded(write_run(tmp_path / "run", _older(rows)))
    assert set(frame["complexity"]) == {registry.complexity("aft", "full")} == {"quadratic"}
    assert fit_series(series).iloc[0].time_verdict == "agrees"


def test_the_complexity_a_row_records_wins_over_the_registry(tmp_path: Path):
    # a mechanism registered elsewhere, and one whose declared complexity changed since the run: the rows say
    rows = [make_row("elsewhere", "reference", T, time_ms=1e-3 * T, mem=1e3 * T, complexity="linear") for T in LENGTHS]
    rows += [make_row("xca", "naive", T, time_ms=1e-6 * T * T, mem=1e3 * T, complexity="quadratic") for T in LENGTHS]
    series = loaded(write_run(tmp_path / "run", rows))[2]
    fits = fit_series(series).set_index("name")
    assert (fits.loc["elsewhere"].complexity, fits.loc["elsewhere"].time_expected) == ("linear", 1.0)
    assert (fits.loc["xca"].complexity, fits.loc["xca"].time_expected) == ("quadratic", 2.0)
    assert set(fits["time_verdict"]) == {"agrees"}


def test_an_unknown_mechanism_without_complexity_gets_no_verdict(tmp_path: Path):
    rows = _older([make_row("elsewhere", "reference", T, time_ms=1e-3 * T, mem=1e3 * T) for T in LENGTHS])
    record = fit_series(loaded(write_run(tmp_path / "run", rows))[2]).iloc[0]
    assert record.complexity is None and record.time_verdict == ""
    assert record.time_exponent > 0.9  # still fitted, only not checked


def test_the_registry_is_asked_once_per_mechanism_and_only_for_rows_without_complexity(tmp_path: Path, monkeypatch):
    asked = []
    registered = registry.complexity

    def complexity(mechanism: str, variant: str = "") -> str | None:
        asked.append((mechanism, variant))
        return registered(mechanism, variant)

    rows = _older(seqlen_rows(seed=1)) + [
        make_row("xca", "naive", T, time_ms=1e-3 * T, mem=1e3 * T, complexity="linear") for T in LENGTHS
    ]
    run = write_run(tmp_path / "run", rows)
    monkeypatch.setattr(analysis_rows.registry, "complexity", complexity)
    loaded(run)
    assert sorted(asked) == [("aft", "simple"), ("mha", ""), ("tssa", "")]


def test_a_rate_above_its_ceiling_is_never_taken_as_real():
    """A row flagged by the runner for a rate above the run's measured ceiling keeps its time, not its rates."""
    import pandas as pd

    from attnbench.analysis.rows import prepare

    rows = [
        {"mechanism": "m", "impl": "x", "mode": "fwd", "level": "core", "dtype": "fp32", "status": "ok",
         "time_ms": 1.0, "tflops": 5.0, "gbps": 900.0, "rate_flags": flags, "complexity": "linear"}
        for flags in (["gbps_above_copy_ceiling"], [], None)
    ]  # fmt: skip
    frame = prepare(pd.DataFrame(rows))
    assert frame["gbps"].isna().tolist() == [True, False, False]
    assert frame["tflops"].isna().tolist() == [True, False, False]
    assert frame["time_ms"].tolist() == [1.0, 1.0, 1.0]
