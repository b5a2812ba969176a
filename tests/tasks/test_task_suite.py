"""Task suites: the `task:` section is validated as strictly as a sweep (file, key, value, what is allowed; exit 2
from the command), expands into one case per mechanism, cell, seed and dtype, and runs through the runner."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from attnbench.mechanisms import registry
from attnbench.suite.load import SUITES_DIR, SuiteError, check_suite, load_suite

TASK = """
name: recall
mechanisms:
  - name: mha
  - name: aft
    params: {variant: [simple, full]}
  - name: xca
impls: [sdpa, reference]
task:
  name: mqar
  seeds: [0, 1]
  cells:
    - {seq_len: [16, 24], kv_pairs: 4, vocab: 16, d_model: 12, heads: 2, layers: 1, steps: 20, batch: 8,
       lrs: [0.01, 0.003], train_size: 64, test_size: 16}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(SuiteError) as info:
        load_suite(write(tmp_path, text), device="cpu")
    return str(info.value)


def test_a_task_suite_expands_per_mechanism_cell_seed(tmp_path):
    suite = load_suite(write(tmp_path, TASK), device="cpu")
    assert len(suite.cases) == 4 * 2 * 2  # mha, aft:simple, aft:full, xca × two lengths × two seeds
    first = suite.cases[0]
    assert first.task.seq_len == 16 and first.task.lrs == (0.01, 0.003) and first.task.eval_every == 2
    assert (first.problem.B, first.problem.T, first.problem.H, first.problem.d) == (8, 16, 2, 6)
    assert first.problem.causal and first.problem.level.value == "layer" and first.mode.value == "fwd_bwd"
    assert {case.impl for case in suite.cases if case.problem.mechanism == "mha"} == {"sdpa"}
    assert {case.impl for case in suite.cases if case.problem.mechanism == "aft"} == {"reference"}
    unsupported = {case.problem.mechanism: case.unsupported for case in suite.cases if case.unsupported}
    assert unsupported == {"xca": "xca has no causal form"}
    assert len({case.case_id for case in suite.cases}) == len(suite.cases)
    rebuilt = type(first).from_dict(json.loads(json.dumps(first.to_dict())))
    assert rebuilt == first and rebuilt.case_id == first.case_id


def test_include_unlisted_adds_every_other_registered_mechanism(tmp_path):
    text = TASK.replace("  name: mqar\n", "  name: mqar\n  include_unlisted: true\n")
    named = {case.problem.mechanism for case in load_suite(write(tmp_path, text), device="cpu").cases}
    assert named == set(registry.mechanisms())


def test_the_shipped_suite_has_a_cpu_cell_and_the_gpu_cells(tmp_path):
    cpu = load_suite(SUITES_DIR / "mqar.yaml", device="cpu")
    cuda = load_suite(SUITES_DIR / "mqar.yaml", device="cuda")
    assert {(c.task.seq_len, c.task.kv_pairs) for c in cuda.cases} == {(256, 64), (512, 128)}
    assert {c.task.d_model for c in cuda.cases} == {64, 128} and {c.task.vocab for c in cuda.cases} == {8192}
    assert {(c.task.seq_len, c.task.kv_pairs, c.task.d_model) for c in cpu.cases} == {(32, 8, 32), (64, 16, 32)}
    causal = {name for name, mechanism in registry.mechanisms().items() if True in mechanism.causal}
    assert {c.problem.mechanism for c in cpu.cases if not c.unsupported} == causal


MALFORMED = {
    "unknown task": (("name: mqar", "name: copying"), "task.name: unknown value; got 'copying'; allowed: 'mqar'"),
    "unknown cell key": (("heads: 2,", "heads: 2, width: 3,"), "task.cells[0].width: unknown key; got 3"),
    "zero steps": (("steps: 20", "steps: 0"), "task.cells[0].steps: must be >= 1; got 0"),
    "string batch": (("batch: 8", "batch: eight"), "task.cells[0].batch: not an integer; got 'eight'"),
    "lr above one": (("lrs: [0.01, 0.003]", "lrs: [0.01, 3]"), "task.cells[0].lrs[1]: must be <= 1; got 3;"),
    "no cells": (("  cells:\n", "  cells: []\n  unused:\n"), "task"),
    "short sequence": (("seq_len: [16, 24]", "seq_len: [16, 12]"), "task.cells[0].seq_len: too short for kv_pairs=4"),
    "small vocab": (("vocab: 16", "vocab: 9"), "task.cells[0].vocab: too small for kv_pairs=4"),
    "width not divisible": (("d_model: 12", "d_model: 13"), "task.cells[0].d_model: not divisible by heads=2"),
    "eval after the end": (
        ("steps: 20,", "steps: 20, eval_every: 30,"),
        "task.cells[0].eval_every: more than steps=20",
    ),
    "sweep and task": (("name: recall", "name: recall\nsweep: {T: 8, H: 1, d: 4}"), "sweep: a task suite has no sweep"),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_a_malformed_task_section_names_the_file_key_and_what_is_allowed(tmp_path, name):
    (old, new), expected = MALFORMED[name]
    assert old in TASK
    message = error_of(tmp_path, TASK.replace(old, new, 1))
    assert message.startswith(str(tmp_path / "suite.yaml")) and expected in message, message


def test_a_suite_with_neither_sweep_nor_task_says_which_is_missing(tmp_path):
    message = error_of(tmp_path, "name: x\nmechanisms: [{name: mha}]\n")
    assert "sweep: required key missing" in message and "allowed: the shape axes" in message


def test_the_schema_stage_checks_a_task_suite_without_torch(tmp_path):
    path = write(tmp_path, TASK.replace("d_model: 12", "d_model: 13"))
    code = f"""
import sys
from attnbench.suite.load import SuiteError, check_suite
try:
    check_suite({str(path)!r}, device="cpu")
except SuiteError as exc:
    print(exc)
print("torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "not divisible by heads=2" in out and out.strip().endswith("False")
    check_suite(write(tmp_path, TASK), device="cpu")


def test_the_run_command_refuses_a_malformed_task_suite_with_exit_2(tmp_path):
    path = write(tmp_path, TASK.replace("steps: 20", "steps: -1"))
    done = subprocess.run(
        [sys.executable, "-m", "attnbench", "run", str(path), "--dry-run"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "task.cells[0].steps: must be >= 1" in done.stderr + done.stdout
