"""Suite errors: a malformed suite or a bad argument fails before anything runs, with a message naming the file,
the key path, the problem, the value and what is allowed. Nothing is measured; every test runs in milliseconds.
"""

from __future__ import annotations

import pytest
from suite_helpers import BASE, error_of, load_text

from attnbench.suite.load import SuiteError, load_suite

# Each case: a suite text, and fragments its error message must contain.
MALFORMED = {
    "unknown top-level key": (
        BASE + "colour: blue\n",
        ["suite.yaml: colour: unknown key; got 'blue'; allowed: name, description, mechanisms", "devices"],
    ),
    "unknown timing key": (
        BASE + "timing: {rep_ms: 5, reps: 3}\n",
        ["suite.yaml: timing.reps: unknown key; got 3; allowed: warmup_ms, rep_ms, min_reps, max_reps, flush_l2"],
    ),
    "unknown limits key": (BASE + "limits: {timeout: 3}\n", ["limits.timeout: unknown key", "case_timeout_s"]),
    "unknown mechanism entry key": (
        BASE.replace("- name: mha", "- name: mha\n    impl: sdpa"),
        ["mechanisms[0].impl: unknown key; got 'sdpa'; allowed: name, params, impls"],
    ),
    "wrong type T": (
        BASE.replace("T: 32", "T: abc"),
        ["suite.yaml: sweep.T: not an integer; got 'abc'; allowed: an integer from 1 to 16777216 or a non-empty list"],
    ),
    "wrong type in a T list": (BASE.replace("T: 32", "T: [32, abc]"), ["sweep.T[1]: not an integer; got 'abc'"]),
    "float T": (BASE.replace("T: 32", "T: 32.5"), ["sweep.T: not an integer; got 32.5"]),
    "bool T": (BASE.replace("T: 32", "T: true"), ["sweep.T: not an integer; got True"]),
    "zero H": (BASE.replace("H: 4", "H: 0"), ["sweep.H: must be >= 1; got 0"]),
    "empty sweep": (BASE.replace("T: 32", "T: []"), ["suite.yaml: sweep.T: an empty sweep; got []"]),
    "unknown sweep axis": (BASE.replace("T: 32", "T: 32, L: 4"), ["sweep.L: unknown key; got 4; allowed: T, H, d"]),
    "missing T": (BASE.replace("T: 32, ", ""), ["sweep.T: required key missing"]),
    "missing sweep": ("name: x\nmechanisms: [{name: mha}]\n", ["suite.yaml: sweep: required key missing"]),
    "missing name": (BASE.replace("name: base", ""), ["suite.yaml: name: required key missing"]),
    "bad name": (BASE.replace("name: base", "name: my suite"), ["name: not a valid name; got 'my suite'"]),
    "no mechanisms": (
        "name: x\nmechanisms: []\nsweep: {T: 8, H: 1, d: 8}\n",
        ["mechanisms: empty list; got []; allowed: a non-empty list of mechanisms"],
    ),
    "unknown mechanism": (
        BASE.replace("name: mha", "name: mla"),
        ["suite.yaml: mechanisms[0].name: unknown mechanism; got 'mla'; allowed: mha, gqa, mqa"],
    ),
    "unknown impl": (
        BASE + "impls: [reference, flashier]\n",
        ["suite.yaml: impls[1]: unknown implementation; got 'flashier'; allowed:", "reference", "sdpa"],
    ),
    "impl the mechanism does not declare": (
        BASE.replace("- name: mha", "- name: mha\n    impls: [reference, flashier]"),
        ["mechanisms[0].impls[1]: not an implementation of mha; got 'flashier'; allowed: reference, sdpa"],
    ),
    "unknown dtype": (
        BASE + "dtypes: [fp32, fp8]\n",
        ["dtypes[1]: unknown value; got 'fp8'; allowed: 'fp64', 'fp32', 'tf32', 'bf16' or 'fp16'"],
    ),
    "unknown mode": (BASE + "modes: backward\n", ["modes: unknown value; got 'backward'; allowed: 'fwd', 'bwd'"]),
    "unknown level": (BASE + "levels: [core, block]\n", ["levels[1]: unknown value; got 'block'; allowed: 'core'"]),
    "causal not a bool": (BASE + "causal: sometimes\n", ["causal: not true or false; got 'sometimes'"]),
    "timing not a mapping": (BASE + "timing: 5\n", ["timing: not a mapping; got 5"]),
    "negative timing": (BASE + "timing: {rep_ms: -1}\n", ["timing.rep_ms: must be >= 0"]),
    "flush_l2 not a bool": (BASE + "timing: {flush_l2: 1}\n", ["timing.flush_l2: not true or false; got 1"]),
    "param not declared": (
        BASE.replace("- name: mha", "- name: mha\n    params: {G: 2}"),
        ["suite.yaml: mechanisms[0].params.G: not a parameter of mha; got 'G'; allowed: none"],
    ),
    "param of another mechanism": (
        BASE.replace("{G: 2}", "{G: 2, window: 4}"),
        ["mechanisms[1].params.window: not a parameter of gqa; got 'window'; allowed: G (key/value heads"],
    ),
    "param of the wrong type": (
        BASE.replace("{G: 2}", "{G: two}"),
        ["mechanisms[1].params.G: gqa: G must be an integer; got 'two'; allowed: an integer from 1 to 2147483647"],
    ),
    "param below its minimum": (BASE.replace("{G: 2}", "{G: [2, 0]}"), ["mechanisms[1].params.G", "got 0"]),
    "param not a scalar": (
        BASE.replace("{G: 2}", "{G: [[2]]}"),
        ["mechanisms[1].params.G: not a scalar (a list sweeps scalar values); got [2]"],
    ),
    "param empty sweep": (BASE.replace("{G: 2}", "{G: []}"), ["mechanisms[1].params.G: an empty sweep; got []"]),
    "impossible shape blamed on the param": (
        BASE.replace("{G: 2}", "{G: [2, 3]}").replace("H: 4", "H: 16"),
        [
            "suite.yaml: mechanisms[1].params.G: impossible shape at B=1 T=32 H=16 d=8",
            "gqa: H=16 must be divisible by G=3",
            "; got 3",
        ],
    ),
    "impossible shape blamed on the sweep": (
        BASE.replace("{G: 2}", "{}").replace("H: 4", "H: [4, 6]"),
        ["suite.yaml: sweep.H: impossible shape at B=1 T=32 H=6", "must be divisible by G=4", "; got 6"],
    ),
    "D not divisible by H": (
        BASE.replace("d: 8", "D: 30"),
        ["suite.yaml: sweep.D: D=30 is not divisible by H=4 (d = D/H); got 30"],
    ),
    "both d and D": (BASE.replace("d: 8", "d: 8, D: 32"), ["sweep: give d (head dim) or D (model width), not both"]),
    "neither d nor D": (BASE.replace(", d: 8", ""), ["sweep: missing the head dim; allowed: d (head dim) or D"]),
    "both B and tokens": (BASE.replace("d: 8", "d: 8, B: 2, tokens: 64"), ["sweep: give B or tokens, not both"]),
    "a repeated case": (BASE + "causal: [false, false]\n", ["mechanisms[0]: repeats the case mha[] core B=1 T=32"]),
    "bad YAML": (BASE + "modes: [fwd, bwd\n", ["suite.yaml: line ", "invalid YAML"]),
    "not a mapping": ("- name: mha\n", ["suite.yaml: a suite is a mapping of keys"]),
    "unknown device": (BASE + "devices: {tpu: {}}\n", ["suite.yaml: devices.tpu: unknown device; got 'tpu'"]),
    "mechanisms in a device section": (
        BASE + "devices: {cpu: {mechanisms: []}}\n",
        ["devices.cpu.mechanisms: cannot be set per device; allowed: description, impls, modes"],
    ),
    "unknown key in a device section": (
        BASE + "devices: {cpu: {sweeps: {T: 8}}}\n",
        ["suite.yaml: devices.cpu.sweeps: unknown key; got {'T': 8}"],
    ),
    "bad value in the other device's section": (
        BASE + "devices: {cuda: {sweep: {T: x}}}\n",
        ["suite.yaml: devices.cuda.sweep.T: not an integer; got 'x'"],
    ),
    "impossible shape only in the other device's section": (
        BASE + "devices: {cuda: {sweep: {H: 3}}}\n",
        ["suite.yaml: devices.cuda.sweep.H: impossible shape", "H=3 must be divisible by G=2", "got 3"],
    ),
    "a repeat only in the other device's settings": (
        BASE + "devices: {cuda: {causal: [true, true]}}\n",
        ["suite.yaml: mechanisms[0]: repeats the case mha[] core causal", "(with the cuda settings)"],
    ),
    "entry declaring none of the suite's impls": (
        BASE.replace("- name: mha", "- name: tssa") + "impls: [sdpa]\n",
        ["declares none of the suite's impls", "give this entry its own impls"],
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_suite_is_a_precise_error(tmp_path, case):
    text, fragments = MALFORMED[case]
    message = error_of(tmp_path, text)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_every_error_is_listed(tmp_path):
    with pytest.raises(SuiteError) as info:
        load_text(tmp_path, BASE + "colour: blue\ntiming: {reps: 3}\n")
    assert len(info.value.errors) == 2
    assert str(info.value) == "\n".join(info.value.errors)
    assert any("timing.reps: unknown key" in line for line in info.value.errors)


def test_a_causal_window_longer_than_t_max_blames_the_param(tmp_path):
    text = "name: x\nmechanisms: [{name: tssa, params: {t_max: 16}}]\ncausal: true\nsweep: {T: [16, 32], H: 2, d: 8}\n"
    message = error_of(tmp_path, text)
    assert "mechanisms[0].params.t_max: impossible shape at B=1 T=32" in message
    assert "; got 16" in message


def test_an_aft_window_longer_than_t_is_an_error(tmp_path):
    text = """
    name: x
    mechanisms: [{name: aft, params: {variant: local, window: 64}}]
    sweep: {T: [128, 32], H: 2, d: 8}
    """
    message = error_of(tmp_path, text)
    assert "impossible shape at B=1 T=32" in message
    assert "mechanisms[0].params.window" in message
    assert "; got 64" in message


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        (dict(only=["xca"]), ["--only: matches no mechanism of this suite; got 'xca'; allowed: gqa, mha"]),
        (dict(only=["gqa:simple"]), ["--only: matches no mechanism", "got 'gqa:simple'"]),
        (dict(impls=["triton"]), ["--impl: matches no implementation of this suite; got 'triton'; allowed:"]),
        (dict(overrides=["colour=blue"]), ["--set: unknown key 'colour'; got 'colour=blue'; allowed: KEY=VALUE"]),
        (dict(overrides=["mechanisms=[]"]), ["--set: unknown key 'mechanisms'"]),
        (dict(overrides=["T"]), ["--set: expected KEY=VALUE; got 'T'"]),
        (dict(overrides=["T=abc"]), ["sweep.T (from --set T=abc): not an integer; got 'abc'"]),
        (dict(overrides=["T=[1, 2"]), ["--set: the value is not YAML"]),
        (dict(overrides=["timing.reps=3"]), ["timing.reps (from --set timing.reps=3): unknown key; got 3"]),
        (dict(overrides=["H=3"]), ["sweep.H (from --set H=3): impossible shape", "got 3"]),
        (dict(device="tpu"), ["suite.yaml: device must be one of cpu, cuda; got 'tpu'"]),
    ],
)
def test_bad_arguments_are_precise_errors(tmp_path, kwargs, fragments):
    message = error_of(tmp_path, BASE + "impls: [reference, sdpa]\n", **kwargs)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_filters_matching_nothing_together(tmp_path):
    text = BASE.replace("- name: mha", "- name: mha\n    impls: [sdpa]") + "impls: [reference]\n"
    message = error_of(tmp_path, text, only=["gqa"], impls=["sdpa"])
    assert "--impl: matches no implementation of this suite; got 'sdpa'; allowed: reference" in message


def test_missing_file(tmp_path):
    with pytest.raises(SuiteError, match=r"nope\.yaml: no such suite file$"):
        load_suite(tmp_path / "nope.yaml", device="cpu")
