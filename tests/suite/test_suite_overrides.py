"""Device sections and `--set` overrides: merged into the top level in that order, mappings key by key, a sweep
axis replacing its alternative (d and D, B and tokens).
"""

from __future__ import annotations

import json

from suite_helpers import BASE, load_text

from attnbench.mechanisms.problem import Mode

DEVICES = """
name: devices
mechanisms: [{name: mha, impls: [reference]}]
dtypes: [bf16]
sweep: {T: [512, 1024], H: 8, D: 512, tokens: 4096}
timing: {warmup_ms: 20, rep_ms: 80}
devices:
  cpu:
    dtypes: fp32
    sweep: {T: [16, 32], d: 4, B: 1}
    timing: {rep_ms: 10}
"""


def test_device_sections_override_the_top_level(tmp_path):
    cpu = load_text(tmp_path, DEVICES, device="cpu")
    cuda = load_text(tmp_path, DEVICES, device="cuda")
    assert [(c.problem.T, c.problem.B, c.problem.d, c.dtype) for c in cpu.cases] == [
        (16, 1, 4, "fp32"),
        (32, 1, 4, "fp32"),
    ]
    assert [(c.problem.T, c.problem.B, c.problem.d, c.dtype) for c in cuda.cases] == [
        (512, 8, 64, "bf16"),
        (1024, 4, 64, "bf16"),
    ]
    assert (cpu.timing.warmup_ms, cpu.timing.rep_ms) == (20, 10)  # mappings merge key by key
    assert (cuda.timing.warmup_ms, cuda.timing.rep_ms) == (20, 80)
    assert cpu.resolved["sweep"] == {"T": [16, 32], "H": [8], "d": [4], "B": [1]}  # d replaced D, B tokens
    assert "devices" not in cpu.resolved
    json.dumps(cpu.resolved)
    json.dumps(cuda.resolved)


def test_set_overrides_apply_after_the_device_section(tmp_path):
    overrides = ["T=64,128", "timing.rep_ms=5", "dtypes=fp64", "tokens=256", "limits.check_numerics=false"]
    suite = load_text(tmp_path, DEVICES, device="cpu", overrides=overrides)
    assert [(c.problem.T, c.problem.B, c.dtype) for c in suite.cases] == [(64, 4, "fp64"), (128, 2, "fp64")]
    assert suite.timing.rep_ms == 5 and suite.timing.warmup_ms == 20
    assert suite.limits.check_numerics is False
    assert suite.resolved["sweep"]["tokens"] == [256] and "B" not in suite.resolved["sweep"]
    assert suite.resolved["timing"]["rep_ms"] == 5


def test_set_a_list_and_a_dotted_sweep_key(tmp_path):
    overrides = ["sweep.T=[8, 16]", "causal=[false, true]", "modes=fwd,bwd", "D=16"]
    suite = load_text(tmp_path, BASE, overrides=overrides)
    assert sorted({c.problem.T for c in suite.cases}) == [8, 16]
    assert {c.problem.d for c in suite.cases} == {4}  # D=16 over H=4 replaced the suite's d
    assert {c.problem.causal for c in suite.cases} == {False, True}
    assert {c.mode for c in suite.cases} == {Mode.FWD, Mode.BWD}
