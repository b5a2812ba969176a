"""The command that re-runs one case (`attnbench show RUN --repro CASE`, also on every row of the report): it
really re-runs that case, alone, with the run's settings; and it is refused when the suite cannot select it."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from attnbench.cli import cli
from attnbench.report.repro import repro_command


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "rows.jsonl").read_text().splitlines() if line.strip()]


def test_the_printed_command_re_runs_exactly_that_case(small_run, small_report, tmp_path):
    row = next(
        r
        for r in _rows(small_run)
        if r["status"] == "ok" and r["causal"] and r["T"] == 128 and r["impl"] != "reference"
    )
    result = CliRunner().invoke(cli, ["show", str(small_run), "--repro", row["case_id"][:10]])
    assert result.exit_code == 0, result.output
    command = result.output.strip()
    meta = json.loads((small_run / "meta.json").read_text())
    assert command == repro_command(meta, row)
    assert f'<code class="repro">{command}</code>' in small_report.read_text()  # the same command on the page
    words = shlex.split(command)
    assert words[:2] == ["attnbench", "run"]
    program = [sys.executable, "-c", "import sys; from attnbench.cli import main; sys.argv[0] = 'attnbench'; main()"]
    done = subprocess.run([*program, *words[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (new_run,) = (tmp_path / "results").iterdir()
    (again,) = _rows(new_run)
    assert again["case_id"] == row["case_id"] and again["status"] == "ok"
    resolved = json.loads((new_run / "meta.json").read_text())["suite"]["resolved"]
    assert resolved["timing"] == meta["suite"]["resolved"]["timing"]  # the run's own --set values kept


def test_a_case_the_suite_cannot_select_any_more_is_refused(small_run, tmp_path):
    copy = tmp_path / "results" / small_run.name
    shutil.copytree(small_run, copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta["suite"]["path"] = str(tmp_path / "moved.yaml")
    (copy / "meta.json").write_text(json.dumps(meta))
    case = _rows(copy)[0]["case_id"]
    result = CliRunner().invoke(cli, ["show", str(copy), "--repro", case])
    assert result.exit_code == 2 and "moved.yaml" in result.output and case in result.output
    unknown = CliRunner().invoke(cli, ["show", str(copy), "--repro", "zz"])
    assert unknown.exit_code == 2 and "no case with this id" in unknown.output


def test_a_run_that_recorded_no_options_is_reproduced_with_its_resolved_settings(small_run, tmp_path):
    copy = tmp_path / "results" / small_run.name
    shutil.copytree(small_run, copy)
    meta = json.loads((copy / "meta.json").read_text())
    del meta["selection"]  # as a run started from Python without a selection
    (copy / "meta.json").write_text(json.dumps(meta))
    row = next(r for r in _rows(copy) if r["status"] == "ok")
    result = CliRunner().invoke(cli, ["show", str(copy), "--repro", row["case_id"]])
    assert result.exit_code == 0, result.output
    assert "timing.rep_ms=3.0" in result.output and "timing.warmup_ms=1.0" in result.output
    # options recorded without the run's timing: the suite file alone would measure otherwise, so it is refused
    meta["selection"] = {"device": "cpu", "only": [], "impls": [], "overrides": []}
    (copy / "meta.json").write_text(json.dumps(meta))
    refused = CliRunner().invoke(cli, ["show", str(copy), "--repro", row["case_id"]])
    assert refused.exit_code == 2 and "timing" in refused.output


TWO_TPA_ENTRIES = """
name: two-ranks
mechanisms:
  - name: tpa
    params: {R_k: 1, R_v: 1}
  - name: tpa
    params: {R_k: 2, R_v: 2}
impls: [reference]
modes: fwd
dtypes: fp32
sweep: {T: 16, H: 2, d: 8, B: 1}
timing: {warmup_ms: 1, rep_ms: 2, min_reps: 2, max_reps: 5, flush_l2: false}
"""


def test_entries_differing_only_in_a_parameter_are_reproduced_one_by_one(tmp_path):
    """Two TPA entries differ only in their ranks (no variant tells them apart): the command pins the ranks in
    `--only`'s bracket and re-runs exactly the chosen case."""
    suite_file = tmp_path / "two.yaml"
    suite_file.write_text(TWO_TPA_ENTRIES)
    runner = CliRunner()
    first = runner.invoke(cli, ["run", str(suite_file), "--device", "cpu", "-o", str(tmp_path / "results")])
    assert first.exit_code == 0, first.output
    (run_dir,) = (tmp_path / "results").iterdir()
    row = next(r for r in _rows(run_dir) if r["params"]["R_k"] == 2)
    shown = runner.invoke(cli, ["show", str(run_dir), "--repro", row["case_id"]])
    assert shown.exit_code == 0, shown.output
    words = shlex.split(shown.output.strip())
    assert "tpa[" in words[words.index("--only") + 1] and "R_k=2" in words[words.index("--only") + 1]
    again_dir = tmp_path / "again"
    words[words.index("-o") + 1] = str(again_dir)
    second = runner.invoke(cli, words[1:])
    assert second.exit_code == 0, second.output
    (new_run,) = again_dir.iterdir()
    assert [r["case_id"] for r in _rows(new_run)] == [row["case_id"]]
