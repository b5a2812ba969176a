"""`attnbench plot`: fitted exponents, crossovers, OOM walls and figures, on synthetic runs of known scaling.

The runs are built row by row with `results.write_json`/`append_row` (the runner's on-disk format): time grows as
`a + c·T^p` with lognormal noise, so the exponents, the crossover length and the OOM walls are known exactly.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from attnbench.analysis import summary as analysis
from attnbench.cli.plot import METRICS as CLI_METRICS
from attnbench.cli.plot import X_AXES as CLI_AXES
from attnbench.cli.plot import plot
from attnbench.plots import figures as plots
from attnbench.results.files import ROW_FIELDS, SCHEMA_VERSION, append_row, write_json

LENGTHS = [2**k for k in range(7, 14)]  # 128 … 8192
NOISE = 0.02  # lognormal σ of every synthetic time
# time in ms: mha's best (sdpa) 1e-6·T², tssa 2e-3·T, so tssa is faster from T* = 2e-3 / 1e-6 = 2000
SDPA_C, TSSA_C = 1e-6, 2e-3
MHA_REFERENCE_OOM_FROM = 4096
NUMERICS_FAIL_AT = 8192  # tssa reference returns a wrong result here


def _row(
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
    row = dict.fromkeys(ROW_FIELDS)
    row.update(
        schema_version=SCHEMA_VERSION, case_id=f"{mechanism}-{impl}-{B}-{T}-{H}-{d}", mechanism=mechanism,
        variant=variant, impl=impl, mode="fwd", level="core", dtype="fp32", causal=False, B=B, T=T, H=H,
        G=H if mechanism == "mha" else None, D=H * d, d=d, params={}, status=status,
    )  # fmt: skip
    if status in ("ok", "numerics_fail") and time_ms is not None:
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


def _write_run(path: Path, rows: list[dict], *, suite: str = "seqlen", device: str = "Test GPU") -> Path:
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


def _seqlen_rows(seed: int, slowdown: float = 1.0) -> list[dict]:
    """mha (reference OOM from 4096, sdpa), tssa (reference with one numerics failure, a fast impl), aft:simple."""
    rng = np.random.default_rng(seed)

    def noisy(value: float) -> float:
        return float(value * slowdown * math.exp(rng.normal(0.0, NOISE)))

    rows = []
    for T in LENGTHS:
        # a fixed 0.02 ms launch cost: it bends the short end, the upper-range fit must still find 2
        rows.append(_row("mha", "sdpa", T, time_ms=noisy(0.02 + SDPA_C * T * T), mem=4096.0 * T))
        if T < MHA_REFERENCE_OOM_FROM:
            rows.append(_row("mha", "reference", T, time_ms=noisy(3 * SDPA_C * T * T), mem=8.0 * T * T))
        else:
            rows.append(_row("mha", "reference", T, status="oom"))
        if T == NUMERICS_FAIL_AT:
            # a wrong result 50x slower: were it fitted, the exponent would jump
            rows.append(_row("tssa", "reference", T, status="numerics_fail", time_ms=50 * TSSA_C * T, mem=4096.0 * T))
        else:
            rows.append(_row("tssa", "reference", T, time_ms=noisy(1.5 * TSSA_C * T), mem=4096.0 * T))
        rows.append(_row("tssa", "fast", T, time_ms=noisy(TSSA_C * T), mem=2048.0 * T))
        if T <= 2048:
            rows.append(_row("aft", "reference", T, variant="simple", time_ms=noisy(4 * TSSA_C * T), mem=3000.0 * T))
        else:
            rows.append(_row("aft", "reference", T, variant="simple", status="unsupported"))
    return rows


@pytest.fixture
def seqlen_run(tmp_path: Path) -> Path:
    return _write_run(tmp_path / "results" / "seqlen-gpu0", _seqlen_rows(seed=1))


def _loaded(path: Path, x: str = "T"):
    runs, frame = analysis.load_runs(path)
    return runs, frame, analysis.series_frame(frame, x)


def test_fit_recovers_exponent_and_interval_covers_it():
    rng = np.random.default_rng(7)
    xs = np.array(LENGTHS, dtype=float)
    covered, widths = 0, []
    for _ in range(300):
        ys = 3e-6 * xs**2 * np.exp(rng.normal(0, 0.05, len(xs)))
        fit = analysis.fit_exponent(xs, ys)
        covered += fit.low <= 2.0 <= fit.high
        widths.append(fit.high - fit.low)
        assert fit.points == tuple(xs[xs >= np.median(xs)])
    assert 0.90 <= covered / 300 <= 0.99  # a 95% interval
    assert np.median(widths) < 0.5


def test_fit_uses_upper_range_and_needs_three_points():
    xs = np.array(LENGTHS, dtype=float)
    overhead = 0.5 + 1e-6 * xs**2  # launch-bound at short T
    whole = np.polyfit(np.log(xs), np.log(overhead), 1)[0]
    fit = analysis.fit_exponent(xs, overhead)
    assert whole < 1.5 < fit.exponent
    assert len(fit.points) == 4 and fit.points[0] == 1024
    even = analysis.fit_exponent(xs[:6], overhead[:6])  # an even count: from the lower median, 4 points not 3
    assert even.points == (512, 1024, 2048, 4096)
    few = analysis.fit_exponent([128, 256, 512, 1024], [1.0, 2.0, 4.0, 8.0])
    assert few.points == (256, 512, 1024) and few.exponent == pytest.approx(1.0)
    none = analysis.fit_exponent([128, 256, 512], [1.0, float("nan"), 4.0])
    assert not none.ok and "2 usable points" in none.reason and "no fit" in none.text()


def test_exponents_per_series_and_agreement(seqlen_run: Path):
    _, _, series = _loaded(seqlen_run)
    fits = analysis.fit_series(series).set_index(["name", "impl"])
    sdpa, tssa = fits.loc["mha", "sdpa"], fits.loc["tssa", "fast"]
    assert sdpa.time_low < 2.0 < sdpa.time_high and abs(sdpa.time_exponent - 2) < 0.15
    assert tssa.time_low < 1.0 < tssa.time_high and abs(tssa.time_exponent - 1) < 0.1
    assert (sdpa.time_expected, tssa.time_expected) == (2.0, 1.0)
    assert sdpa.time_verdict == tssa.time_verdict == "agrees"
    # the numerics failure at 8192 left out: six lengths, fitted from the lower median up
    assert fits.loc["tssa", "reference"].time_points == "512;1024;2048;4096"
    assert abs(fits.loc["mha", "reference"].memory_exponent - 2) < 1e-6
    assert fits.loc["aft:simple", "reference"].time_verdict == "agrees"


def test_a_fit_that_disagrees_is_reported(tmp_path: Path):
    # a "linear" mechanism whose implementation materialises T×T: time grows as T²
    rows = [_row("xca", "naive", T, time_ms=1e-6 * T * T, mem=4.0 * T * T) for T in LENGTHS]
    _, frame = analysis.load_runs(_write_run(tmp_path / "run", rows))
    summary = analysis.summarize(frame, [], ["T"])
    record = summary.fits.iloc[0]
    assert record.time_verdict == "disagrees"
    assert "fitted 2.00 [2.00, 2.00], expected ~1 for a linear mechanism" in record.time_note
    assert "disagree" in summary.markdown and "grows faster than the mechanism's complexity" in summary.markdown


def test_token_budget_sweep_is_fitted_per_sequence(tmp_path: Path):
    # the GPU seqlen suite: B = max(1, 4096 // T), so B·T is fixed up to T = 4096 and grows beyond
    rows = [_row("mha", "sdpa", T, B=max(1, 4096 // T), time_ms=1e-6 * max(1, 4096 // T) * T * T) for T in LENGTHS]
    rows += [_row("tssa", "fast", T, B=max(1, 4096 // T), time_ms=1e-3 * max(1, 4096 // T) * T) for T in LENGTHS]
    _, frame, series = _loaded(_write_run(tmp_path / "run", rows))
    assert series.attrs["varying_axes"] == ("B",) and series.attrs["per_sequence"]
    fits = analysis.fit_series(series).set_index("name")
    assert fits.loc["mha"].fixed == "H=4 d=16" and fits.loc["mha"].varying == "B=32…1"
    assert fits.loc["mha"].time_exponent == pytest.approx(2.0) and fits.loc["tssa"].time_exponent == pytest.approx(1)
    assert fits.loc["mha"].time_verdict == "agrees"
    # B only follows T here (and is 1 at both 4096 and 8192): not an axis of its own
    assert analysis.swept_axes(frame) == ["T"]
    with pytest.raises(analysis.AnalysisError, match="do not sweep B"):
        analysis.check_swept(frame, "B")


def test_crossover_with_mha(seqlen_run: Path):
    _, _, series = _loaded(seqlen_run)
    table = analysis.crossovers(series).set_index(["name", "metric"])
    time = table.loc["tssa", "time"]
    # the launch cost moves the true crossing a little below 2000: solve 0.02 + c T² = 2e-3 T
    exact = (TSSA_C + math.sqrt(TSSA_C**2 - 4 * SDPA_C * 0.02)) / (2 * SDPA_C)
    assert time.kind == "within" and time.T_star == pytest.approx(exact, rel=0.08)
    assert time.impls == "fast vs mha sdpa at T=2048"
    # memory: tssa's 2048·T bytes against mha's best of 8·T² (reference) and 4096·T (sdpa): equal at T=256
    assert table.loc["tssa", "memory"].T_star == pytest.approx(256)
    assert table.loc["aft:simple", "time"].kind == "above"


def test_find_crossover_edges():
    assert analysis.find_crossover([1, 2, 4], [0.5, 0.4, 0.3]).kind == "below"
    assert analysis.find_crossover([1, 2, 4], [3.0, 2.0, 1.5]).text.startswith("above the swept range")
    assert analysis.find_crossover([], []).kind == "none"
    # noise around 1 at short lengths: the crossing reported is the last one, after which it stays ahead
    found = analysis.find_crossover([1, 2, 4, 8], [0.9, 1.1, 2.0, 0.5])
    assert found.kind == "within" and 4 < found.x < 8
    assert analysis.find_crossover([100, 400], [2.0, 0.5]).x == pytest.approx(200)


def test_oom_walls(seqlen_run: Path):
    _, _, series = _loaded(seqlen_run)
    fits = analysis.fit_series(series).set_index(["name", "impl"])
    reference = fits.loc["mha", "reference"]
    assert (reference.longest_x_before_oom, reference.first_oom_x) == (2048, MHA_REFERENCE_OOM_FROM)
    assert math.isnan(fits.loc["mha", "sdpa"].first_oom_x) and fits.loc["mha", "sdpa"].largest_x_run == 8192
    assert fits.loc["aft:simple", "reference"].not_run == "unsupported at 4096,8192"
    assert fits.loc["tssa", "reference"].numerics_failed_at == "8192"


def test_oom_and_numerics_marks_in_the_figure(seqlen_run: Path):
    runs, _, series = _loaded(seqlen_run)
    style = plots.Style.build(series["name"], series["impl"], [r.label for r in runs])
    figure = plots.time_figure(series, style, runs)
    lines = {line.get_gid(): line for ax in figure.axes for line in ax.get_lines() if line.get_gid()}
    oom = lines["oom-seqlen-gpu0-mha-reference"]
    assert list(oom.get_xdata()) == [4096, 8192]
    assert oom.get_color() == style.colours["mha"]
    assert list(lines["unsupported-seqlen-gpu0-aft-simple-reference"].get_xdata()) == [4096, 8192]
    assert list(lines["numerics-failed-seqlen-gpu0-tssa-reference"].get_xdata()) == [8192]


def test_plot_results_writes_every_figure_and_summary(seqlen_run: Path, tmp_path: Path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    report = plots.plot_results(seqlen_run.parent)
    assert report.out_dir == seqlen_run.parent / "plots"
    names = {p.name for p in report.files}
    for metric in ("time", "memory", "throughput", "speedup"):
        assert {f"{metric}_vs_seqlen.png", f"{metric}_vs_seqlen.svg"} <= names
    assert {"summary.md", "summary.csv", "crossover.csv"} <= names
    for path in report.files:
        assert path.stat().st_size > 0, path
    assert (seqlen_run.parent / "plots" / "time_vs_seqlen.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (seqlen_run.parent / "plots" / "time_vs_seqlen.svg").read_text()
    assert 'id="oom-seqlen-gpu0-mha-reference"' in svg
    markdown = (report.out_dir / "summary.md").read_text()
    assert "## Scaling exponents in T" in markdown and "T* ≈" in markdown and "| 2048 | 4096 |" in markdown
    assert "failed the numerics check" in markdown


def test_overlaid_runs_keep_one_colour_per_mechanism(tmp_path: Path):
    root = tmp_path / "results"
    _write_run(root / "a" / "seqlen", _seqlen_rows(seed=2), device="GPU A")
    _write_run(root / "b" / "seqlen", _seqlen_rows(seed=3, slowdown=1.5), device="GPU B")
    runs, frame = analysis.load_runs(root, labels={"a/seqlen": "gpu-a", "b/seqlen": "gpu-b"})
    assert [r.label for r in runs] == ["gpu-a", "gpu-b"]
    series = analysis.series_frame(frame, "T")
    style = plots.Style.build(series["name"], series["impl"], ["gpu-a", "gpu-b"])
    figure = plots.time_figure(series, style, runs)
    drawn = [line for ax in figure.axes for line in ax.get_lines() if line.get_color() == style.colours["tssa"]]
    assert {line.get_linestyle() for line in drawn if line.get_marker() == "o"} >= {"-", "--"}
    fits = analysis.summarize(frame, runs, ["T"]).fits
    assert set(fits["run"]) == {"gpu-a", "gpu-b"}


def test_other_axes_and_what_is_not_swept(tmp_path: Path):
    rows = [_row("xca", "reference", 1024, d=d, time_ms=1e-4 * d * d, mem=1e3 * d) for d in (16, 32, 64, 128)]
    rows += [_row("xca", "reference", T, time_ms=1e-4 * T, mem=1e3 * T) for T in (256, 512, 2048)]
    _, frame = analysis.load_runs(_write_run(tmp_path / "run", rows))
    # d is the knob the runs turned; D = H·d only mirrors it, so it is not drawn a second time
    assert analysis.swept_axes(frame) == ["T", "d"]
    series = analysis.series_frame(frame, "d")
    assert series.attrs["fixed_axes"] == ("B", "T", "H")
    fit = analysis.fit_series(series)
    assert fit.loc[fit["fixed"] == "B=2 T=1024 H=4", "time_exponent"].item() == pytest.approx(2.0)
    with pytest.raises(analysis.AnalysisError, match="do not sweep B: every row has B=2; swept: T, D, d"):
        analysis.check_swept(frame, "B")


def _cli() -> click.Group:
    @click.group()
    def group() -> None:
        pass

    group.add_command(plot)
    return group


def test_cli_plot(seqlen_run: Path, tmp_path: Path):
    out = tmp_path / "figures"
    result = CliRunner().invoke(
        _cli(), ["plot", str(seqlen_run), "-o", str(out), "--metric", "time", "-m", "mha", "-m", "tssa",
                 "--label", "seqlen-gpu0=H100"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "## Scaling exponents in T" in result.output and "| H100 |" in result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "crossover.csv", "summary.csv", "summary.md", "time_vs_seqlen.png", "time_vs_seqlen.svg"
    ]  # fmt: skip
    assert "aft" not in (out / "summary.csv").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{empty}"], "no attnbench runs found"),
        (["{missing}"], "no such file or folder"),
        (["{run}", "--x", "B"], "the runs do not sweep B"),
        (["{run}", "-m", "gpt"], "no rows for mechanism 'gpt'"),
        (["{run}", "--label", "nope=x"], "--label nope=x: no such run"),
        (["{run}", "--label", "nolabel"], "expected RUN=LABEL"),
    ],
)
def test_cli_errors(seqlen_run: Path, tmp_path: Path, args: list[str], message: str):
    (tmp_path / "empty").mkdir()
    where = {"empty": tmp_path / "empty", "missing": tmp_path / "missing", "run": seqlen_run}
    result = CliRunner().invoke(_cli(), ["plot", *(a.format(**where) for a in args)])
    assert result.exit_code == 2 and message in result.output, result.output


def test_cli_choices_match_the_library():
    assert CLI_AXES == analysis.AXES and CLI_METRICS == analysis.METRICS


def test_analysis_and_plots_import_no_matplotlib():
    code = "import sys, attnbench.analysis, attnbench.plots, attnbench.cli.plot; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


# A real CPU run of the seqlen suite, reduced to seconds (three lengths, forward only, mha against tssa), shared
# by the tests below: the runner's rows as they really are, plotted end to end.
SEQLEN_SUITE = Path(__file__).resolve().parents[1] / "suites" / "seqlen.yaml"
REAL_LENGTHS = [128, 256, 512]


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from attnbench.run.runner import run_suite
    from attnbench.suite.load import load_suite

    suite = load_suite(
        SEQLEN_SUITE,
        device="cpu",
        overrides=[f"T={','.join(map(str, REAL_LENGTHS))}", "modes=fwd", "timing.rep_ms=10"],
        only=["mha", "tssa"],
    )
    assert len(suite.cases) == 9  # mha reference and sdpa, tssa reference, at three lengths
    summary = run_suite(suite, tmp_path_factory.mktemp("cpu-results"))
    assert not summary.interrupted
    return summary.run_dir


def test_real_cpu_run_plotted_end_to_end(cpu_run: Path, tmp_path: Path):
    out = tmp_path / "plots"
    result = CliRunner().invoke(_cli(), ["plot", str(cpu_run.parent), "-o", str(out)])
    assert result.exit_code == 0, result.output
    for metric in ("time", "memory", "throughput", "speedup"):
        for fmt in ("png", "svg"):
            path = out / f"{metric}_vs_seqlen.{fmt}"
            assert path.is_file() and path.stat().st_size > 1000, path
    assert "## Scaling exponents in T" in result.output and "## Crossover with softmax MHA" in result.output
    fits = pd.read_csv(out / "summary.csv").set_index(["name", "impl"])
    assert {("mha", "reference"), ("mha", "sdpa"), ("tssa", "reference")} <= set(fits.index)
    for record in fits.itertuples():
        # three lengths, all of them fitted; the interval brackets the estimate
        assert record.time_points == "128;256;512" and record.memory_points == "128;256;512"
        assert record.time_low <= record.time_exponent <= record.time_high
        assert record.time_verdict in ("agrees", "disagrees", "inconclusive")
    assert fits.loc[("mha", "reference"), "complexity"] == "quadratic"
    assert fits.loc[("tssa", "reference"), "complexity"] == "linear"
    # peak memory is deterministic: the reference softmax holds T×T scores per sequence, tssa nothing of the kind
    assert fits.loc[("mha", "reference"), "memory_exponent"] > 1.5
    assert 0.8 < fits.loc[("tssa", "reference"), "memory_exponent"] < 1.2
    crossing = pd.read_csv(out / "crossover.csv")
    assert set(crossing["name"]) == {"tssa"} and set(crossing["metric"]) == {"time", "memory"}
    assert set(crossing["kind"]) <= {"within", "below", "above"}
    summary = (out / "summary.md").read_text()
    assert "No case ran out of memory (largest T run: 512)" in summary


def test_real_cpu_run_other_choices(cpu_run: Path, tmp_path: Path):
    report = plots.plot_results(cpu_run, tmp_path / "p", impls=["reference"], metrics=["time"])
    assert sorted(p.name for p in report.files if p.suffix == ".png") == ["time_vs_seqlen.png"]
    assert set(report.summary.fits["impl"]) == {"reference"}
    with pytest.raises(analysis.AnalysisError, match="the runs do not sweep d: every row has d=32"):
        plots.plot_results(cpu_run, tmp_path / "q", x="d")
    # B = 4096 // T: one B per T, so B "varies", but only as T does
    with pytest.raises(analysis.AnalysisError, match="do not sweep B on its own: they set it from T"):
        plots.plot_results(cpu_run, tmp_path / "q", x="B")
