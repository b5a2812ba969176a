"""Every Triton kernel compiles for Hopper (sm_90) and Ampere (sm_80), checked on a CPU-only machine.

`python -m attnbench.mechanisms.triton_compile --check` traces every launch of every `triton` implementation
(every autotune config; fp32, tf32, fp16, bf16; d = 32, 64, 96, 128; causal and not) and compiles each with
Triton's own compiler and ptxas. It fails on a compile error, on a fixed launch over its target's shared memory,
on an autotuned launch with no config that fits, on a kernel no traced case reaches, and when `docs/KERNELS.md`,
the shared-memory figures or the results cache are not what it would write. Jobs already in the committed cache
(keyed by Triton's version and each kernel's source) are not recompiled, except one sm_90 probe per kernel.

The pruning that keeps configs over a GPU's shared memory from ever being launched is checked here on its own.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from attnbench.mechanisms import triton_common

ROOT = Path(__file__).resolve().parents[2]


def _has_nvidia_tools() -> bool:
    spec = importlib.util.find_spec("triton")
    if spec is None or spec.origin is None:
        return False
    tools = Path(spec.origin).parent / "backends" / "nvidia" / "bin"
    return (tools / "ptxas").exists() and (tools / "cuobjdump").exists()


@pytest.mark.skipif(not _has_nvidia_tools(), reason="needs the triton wheel's NVIDIA backend (ptxas, cuobjdump)")
def test_every_kernel_compiles_and_the_table_is_current():
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
    command = [sys.executable, "-m", "attnbench.mechanisms.triton_compile", "--check", "--workers", "2"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stderr[-6000:]
    assert " 0 problems" in result.stdout


def _fake_kernel(monkeypatch, figures: dict[str, dict[str, int]]) -> str:
    """A module holding one autotuned kernel `k` with constants BLOCK (tuned) and CAUSAL, and its figures."""
    params = [types.SimpleNamespace(name=name, is_constexpr=name.isupper()) for name in ("x", "n", "CAUSAL", "BLOCK")]
    module = types.ModuleType("fake_kernels")
    module.k = types.SimpleNamespace(fn=types.SimpleNamespace(params=params))
    monkeypatch.setitem(sys.modules, "fake_kernels", module)
    monkeypatch.setattr(triton_common, "_shared_memory_figures", lambda: {"fake_kernels:k": figures})
    return "fake_kernels:k"


def _device(monkeypatch, major: int, shared: int) -> None:
    properties = types.SimpleNamespace(major=major, shared_memory_per_block_optin=shared, name=f"sm_{major}x")
    monkeypatch.setattr(triton_common, "device_properties", lambda device: properties)


def test_configs_over_the_shared_memory_limit_are_pruned_before_launch(monkeypatch):
    triton = pytest.importorskip("triton")
    figures = {
        "fp16 BLOCK=64 CAUSAL=True num_stages=3 num_warps=4": {"sm_90": 100_000, "sm_80": 100_000},
        "fp16 BLOCK=128 CAUSAL=True num_stages=3 num_warps=8": {"sm_90": 200_000, "sm_80": 200_000},
        "fp16 BLOCK=256 CAUSAL=True num_stages=3 num_warps=8": {"sm_90": 240_000, "sm_80": 240_000},
    }
    prune = triton_common.launchable(_fake_kernel(monkeypatch, figures))["early_config_prune"]
    configs = [triton.Config({"BLOCK": b}, num_warps=w, num_stages=3) for b, w in ((64, 4), (128, 8), (256, 8))]
    args = {"x": torch.empty(3, dtype=torch.float16), "n": 3}

    _device(monkeypatch, 9, 232448)  # H100: the 240 KB config goes
    assert [c.kwargs["BLOCK"] for c in prune(configs, args, CAUSAL=True)] == [64, 128]
    _device(monkeypatch, 8, 166912)  # A100: only the 100 KB config stays
    assert [c.kwargs["BLOCK"] for c in prune(configs, args, CAUSAL=True)] == [64]
    _device(monkeypatch, 8, 101376)  # sm_86/89 take sm_80's figures against their own 99 KB
    assert [c.kwargs["BLOCK"] for c in prune(configs, args, CAUSAL=True)] == [64] and 100_000 < 101376
    assert [c.kwargs["BLOCK"] for c in prune(configs, args, CAUSAL=False)] == [64, 128, 256]  # no figures: kept
    _device(monkeypatch, 8, 50_000)
    with pytest.raises(RuntimeError, match="no autotune config fits"):
        prune(configs, args, CAUSAL=True)


def test_no_pruning_off_cuda():
    """On the CPU (the interpreter) every config is kept: there is no shared memory limit to apply."""
    triton = pytest.importorskip("triton")
    configs = [triton.Config({"BLOCK": 16}, num_warps=1)]
    prune = triton_common.launchable("attnbench.nothing:k")["early_config_prune"]
    assert prune(configs, {"x": torch.empty(2)}) == configs


def test_committed_figures_name_configs_as_the_prune_does():
    """Every key of the committed figures has the dtype first and `name=value` words after, sorted."""
    figures = triton_common._shared_memory_figures()
    assert figures, f"attnbench/mechanisms/{triton_common.SHARED_MEMORY_FIGURES} is missing"
    for kernel, configs in figures.items():
        assert ":" in kernel
        for key, targets in configs.items():
            dtype, *words = key.split()
            assert dtype in ("fp32", "fp16", "bf16") and words == sorted(words), key
            assert set(targets) <= {"sm_90", "sm_80"}, key
