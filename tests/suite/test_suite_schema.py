"""The parts under the loader: the schema mirrors the case settings, and error lines point at the key to edit."""

from __future__ import annotations

import dataclasses

import pytest

from attnbench.suite.case import Limits, TimingSettings
from attnbench.suite.errors import ErrorContext, SuiteError, format_path
from attnbench.suite.schema import FIXED_KEYS, OVERRIDABLE, SETTING_RANGES, LimitsSpec, SuiteSpec, TimingSpec


@pytest.mark.parametrize(("record", "spec"), [(TimingSettings, TimingSpec), (Limits, LimitsSpec)])
def test_settings_models_mirror_their_dataclass(record, spec):
    defaults = {field.name: field.default for field in dataclasses.fields(record)}
    assert spec().model_dump() == defaults


def test_every_key_but_the_fixed_ones_is_overridable():
    assert set(OVERRIDABLE) == set(SuiteSpec.model_fields) - set(FIXED_KEYS)
    assert {"sweep", "timing", "limits", "dtypes"} <= set(OVERRIDABLE)


def test_format_path():
    assert format_path(("mechanisms", 1, "params", "G")) == "mechanisms[1].params.G"
    assert format_path(("sweep",)) == "sweep"
    assert format_path(()) == ""


def test_an_error_line_names_where_a_value_came_from():
    document = {"dtypes": "fp32", "sweep": {"T": [8, 16], "H": 2}}
    origins = {("sweep", "T"): "devices.cpu", ("sweep", "H"): "H=2"}
    ctx = ErrorContext("mine.yaml", document, origins)
    assert ctx.line(("sweep", "T", 1), "bad", 16) == "mine.yaml: devices.cpu.sweep.T[1]: bad; got 16"
    assert ctx.line(("sweep", "H"), "bad", allowed=[1, 2]) == "mine.yaml: sweep.H (from --set H=2): bad; allowed: 1, 2"
    assert ctx.line(("dtypes", 0), "bad") == "mine.yaml: dtypes: bad"  # the scalar was never a list
    assert ctx.line("--only", "bad", "x", "a, b") == "mine.yaml: --only: bad; got 'x'; allowed: a, b"
    assert ctx.line("", "bad") == "mine.yaml: bad"


def test_a_suite_error_lists_its_lines():
    assert SuiteError("one").errors == ("one",)
    assert SuiteError("one\ntwo", ["one", "two"]).errors == ("one", "two")


@pytest.mark.parametrize("record", [TimingSettings, Limits])
def test_every_number_of_the_settings_has_a_range(record):
    """A numeric field added to TimingSettings or Limits must say what range a suite may give it."""
    numbers = [field.name for field in dataclasses.fields(record) if field.type in ("int", "float", int, float)]
    assert numbers
    missing = [name for name in numbers if name not in SETTING_RANGES]
    assert not missing, f"add these to attnbench.suite.schema.SETTING_RANGES: {missing}"
    for name in numbers:
        bounds = SETTING_RANGES[name]
        default = getattr(record(), name)
        assert bounds.low <= default <= bounds.high and (default > bounds.low or not bounds.low_open), name
