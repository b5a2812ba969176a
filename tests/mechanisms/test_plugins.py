"""Out-of-tree mechanisms: the example plug-in installed and benchmarked, and broken plug-ins reported, not raised.

The example under `examples/linear-attention/` must be installed in the test environment (CI installs it after
the project): the generic tests in this folder then check it like a built-in mechanism, and the first test here
fails rather than letting them skip it silently. The rest load small plug-in modules written into a temporary
folder, through `ATTNBENCH_MECHANISMS` or a hand-made entry point, and check what a failure looks like.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from attnbench.cli import cli
from attnbench.mechanisms import registry

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "linear-attention"
EXAMPLE_MODULE = "attnbench_linear_attention.spec"
EXAMPLE_NAME = "linear_attn"
BUILT_IN = ("mha", "tssa", "aft", "tpa", "xca")

# Plug-in modules, by file name, for the failure tests.
VALID = "from dataclasses import replace\nfrom attnbench.mechanisms.xca.spec import MECHANISMS as XCA\n"
PLUGINS = {
    "copy_plugin": VALID + "MECHANISMS = (replace(XCA[0], name='xca_copy'),)\n",
    "clash_plugin": VALID + "MECHANISMS = (replace(XCA[0], title='a second xca'),)\n",
    "raising_plugin": "raise RuntimeError('broken on purpose\\nwith a second line')\n",
    "empty_plugin": "VALUE = 1\n",
    "wrong_plugin": "MECHANISMS = ('xca',)\n",
}


@pytest.fixture
def fresh_registry(monkeypatch, tmp_path):
    """A registry reloaded from scratch, with the plug-in modules above importable and no plug-in named yet."""
    for name, source in PLUGINS.items():
        (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(registry.PLUGIN_ENV, raising=False)
    registry.mechanisms.cache_clear()
    yield monkeypatch
    registry.mechanisms.cache_clear()


def _name(monkeypatch, *modules: str) -> None:
    monkeypatch.setenv(registry.PLUGIN_ENV, ",".join(modules))
    registry.mechanisms.cache_clear()


def test_the_example_plugin_is_installed(fresh_registry):
    installed = {point.value for point in entry_points(group=registry.ENTRY_POINT_GROUP)}
    assert EXAMPLE_MODULE in installed, f"install the example plug-in: pip install {EXAMPLE.relative_to(ROOT)}"
    assert EXAMPLE_NAME in registry.mechanisms()
    assert registry.load_errors() == ()
    registry.check_plugins()


@pytest.mark.slow
def test_the_example_suite_runs_ok_through_the_cli(fresh_registry, tmp_path):
    out = tmp_path / "results"
    args = ["run", str(EXAMPLE / "suite.yaml"), "--device", "cpu", "-o", str(out)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run_dir,) = out.iterdir()
    rows = [json.loads(line) for line in (run_dir / "rows.jsonl").read_text().splitlines()]
    assert {(row["mechanism"], row["impl"]) for row in rows} >= {(EXAMPLE_NAME, "reference"), (EXAMPLE_NAME, "matmul")}
    assert {row["causal"] for row in rows if row["mechanism"] == EXAMPLE_NAME} == {False, True}
    not_ok = [(row["mechanism"], row["impl"], row["mode"], row["status"], row["reason"]) for row in rows]
    assert all(row["status"] == "ok" for row in rows), [case for case in not_ok if case[3] != "ok"]


def test_a_module_that_fails_to_import_is_one_line_and_exit_2():
    """`ATTNBENCH_MECHANISMS=no_such_module attnbench list`, as a user runs it."""
    script = Path(sys.executable).with_name("attnbench")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "attnbench.cli"]
    env = {**os.environ, registry.PLUGIN_ENV: "no_such_module"}
    done = subprocess.run([*command, "list"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        "Error: mechanism module 'no_such_module' (from ATTNBENCH_MECHANISMS) failed to load: "
        "ModuleNotFoundError: No module named 'no_such_module'"
    ]
    for name in (*BUILT_IN, EXAMPLE_NAME):
        assert f"│ {name} " in done.stdout, f"{name} is not listed"


@pytest.mark.parametrize(
    ("module", "reason"),
    [
        ("clash_plugin", "mechanism 'xca' is already registered (by attnbench.mechanisms.xca.spec)"),
        ("raising_plugin", "RuntimeError: broken on purpose"),
        ("empty_plugin", "the module has no MECHANISMS (a tuple of attnbench Mechanism objects)"),
        ("wrong_plugin", "MECHANISMS holds a str, not a Mechanism"),
    ],
)
def test_a_broken_plugin_is_reported_and_the_others_still_load(fresh_registry, module, reason):
    _name(fresh_registry, module, "copy_plugin")
    result = CliRunner().invoke(cli, ["list", "--device", "cpu"])
    assert result.exit_code == 2, result.output
    expected = f"mechanism module {module!r} (from ATTNBENCH_MECHANISMS) failed to load: {reason}"
    assert result.stderr.strip().splitlines() == [f"Error: {expected}"]
    assert "Traceback" not in result.output
    assert registry.load_errors() == (expected,)
    assert {*BUILT_IN, EXAMPLE_NAME, "xca_copy"} <= set(registry.mechanisms())
    assert registry.get("xca").title != "a second xca", "the first registration of a name wins"


def test_commands_that_need_every_mechanism_can_refuse(fresh_registry):
    _name(fresh_registry, "no_such_module")
    with pytest.raises(registry.PluginError, match=r"^mechanism module 'no_such_module' .*No module named"):
        registry.check_plugins()
    with pytest.raises(ValueError, match=r"got 'missing'; mechanism module 'no_such_module' .* failed to load"):
        registry.get("missing")


def test_a_broken_entry_point_names_its_package(fresh_registry, tmp_path):
    """An installed package whose entry point names a module that does not import (a hand-made distribution)."""
    dist_info = tmp_path / "broken_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[attnbench.mechanisms]\nbroken = no_such_plugin_module\n")
    registry.mechanisms.cache_clear()
    assert registry.load_errors() == (
        "mechanism module 'no_such_plugin_module' (from entry point 'broken' of package broken-plugin) failed to "
        "load: ModuleNotFoundError: No module named 'no_such_plugin_module'",
    )
    assert EXAMPLE_NAME in registry.mechanisms()


def test_a_module_both_installed_and_named_loads_once(fresh_registry):
    _name(fresh_registry, EXAMPLE_MODULE, " ", EXAMPLE_MODULE)
    assert registry.load_errors() == ()
    assert list(registry.mechanisms()).count(EXAMPLE_NAME) == 1


def _recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """Linear attention as the paper's recurrence, one token at a time, a `d×d` state per (batch row, head)."""
    from attnbench_linear_attention.reference import EPS, feature_map

    phi_q, phi_k = feature_map(q), feature_map(k)
    keys = range(q.shape[1])
    out = torch.empty_like(v)
    for i in keys:
        seen = keys[: i + 1] if causal else keys
        state = sum(torch.einsum("bhc,bhe->bhce", phi_k[:, j], v[:, j]) for j in seen)
        normaliser = sum(phi_k[:, j] for j in seen)
        numerator = torch.einsum("bhc,bhce->bhe", phi_q[:, i], state)
        out[:, i] = numerator / ((phi_q[:, i] * normaliser).sum(-1, keepdim=True) + EPS)
    return out


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("T", "chunk"), [(1, 64), (9, 4), (13, 13), (20, 64)])
def test_the_example_reference_and_fast_path_follow_the_recurrence(T, chunk, causal, seed):
    from attnbench_linear_attention import matmul, reference

    generator = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, T, 3, 5, dtype=torch.float64, generator=generator) for _ in range(3))
    expected = _recurrent(q, k, v, causal)
    torch.testing.assert_close(reference.linear_attention(q, k, v, causal=causal), expected, rtol=1e-12, atol=1e-12)
    fast = matmul.linear_attention(q, k, v, causal=causal, chunk=chunk)
    torch.testing.assert_close(fast, expected, rtol=1e-12, atol=1e-12)
    if T == 1:  # one token attends to itself alone: its value, up to the normaliser's ε
        torch.testing.assert_close(fast, v, rtol=1e-5, atol=1e-5)
