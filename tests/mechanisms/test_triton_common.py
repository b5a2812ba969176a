"""The helpers every Triton kernel module shares (`attnbench/mechanisms/triton_common.py`): importing them stays
free of triton and CUDA, and each choice they make (configs, blocks, warps, dot precision, scratch) is pinned."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from attnbench.mechanisms import triton_common


def test_import_loads_neither_triton_nor_cuda():
    """Specs and other light modules may import the helpers: that must not pull in triton or start CUDA."""
    code = (
        "import sys, torch, attnbench.mechanisms.triton_common\n"
        "print('triton' in sys.modules, torch.cuda.is_initialized())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False False"


def test_interpreted_follows_the_environment(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert triton_common.interpreted()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not triton_common.interpreted()
    monkeypatch.delenv("TRITON_INTERPRET")
    assert not triton_common.interpreted()


def test_autotune_configs(monkeypatch):
    """Every size × warp count on a GPU; one config of the interpreter's block when interpreted."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    configs = triton_common.autotune_configs("BLOCK_C", (32, 64), warps=(4, 8))
    assert [(c.kwargs, c.num_warps) for c in configs] == [
        ({"BLOCK_C": 32}, 4),
        ({"BLOCK_C": 32}, 8),
        ({"BLOCK_C": 64}, 4),
        ({"BLOCK_C": 64}, 8),
    ]
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    (config,) = triton_common.autotune_configs("BLOCK_T", (32, 64, 128))
    assert config.kwargs == {"BLOCK_T": triton_common.INTERPRETED_BLOCK}


def test_autotune_configs_with_warps_per_size_and_stages(monkeypatch):
    """Warps chosen per block size (a mapping), each with every pipeline depth."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    configs = triton_common.autotune_configs("BLOCK_T", (32, 128), {32: (4,), 128: (8,)}, stages=(2, 3))
    assert [(c.kwargs["BLOCK_T"], c.num_warps, c.num_stages) for c in configs] == [
        (32, 4, 2),
        (32, 4, 3),
        (128, 8, 2),
        (128, 8, 3),
    ]


def test_meta_tensors_stand_for_an_h100():
    """Launches traced on meta tensors (the compile check) size their grids for 132 multiprocessors."""
    assert triton_common.multiprocessors(torch.device("meta"), cpu_stand_in=3) == 132


@pytest.mark.parametrize(
    ("n", "floor", "block"), [(1, 1, 1), (2, 1, 2), (3, 1, 4), (16, 1, 16), (17, 1, 32), (12, 16, 16)]
)
def test_power_of_2_at_least(n, floor, block):
    assert triton_common.power_of_2_at_least(n, floor) == block


def test_head_blocks():
    """All of a head's channels by about 4096 elements of tokens (16 to 128), 8 warps only past 4096."""
    assert triton_common.head_blocks(3, 12) == {"BLOCK_T": 128, "BLOCK_D": 16, "BLOCK_H": 4, "num_warps": 4}
    assert triton_common.head_blocks(16, 128) == {"BLOCK_T": 32, "BLOCK_D": 128, "BLOCK_H": 16, "num_warps": 4}
    assert triton_common.head_blocks(2, 24, block_t=8) == {"BLOCK_T": 8, "BLOCK_D": 32, "BLOCK_H": 2, "num_warps": 4}
    assert triton_common.head_blocks(1, 128, tile_elements=8192)["num_warps"] == 8
    assert triton_common.num_warps_for(64 * 64) == 4 and triton_common.num_warps_for(128 * 128) == 8


def test_multiprocessors_on_the_cpu():
    assert triton_common.multiprocessors(torch.device("cpu"), cpu_stand_in=3) == 3


@pytest.fixture
def tf32():
    """Sets torch's TF32 switch for matmuls (`tf32(True)`), restored after the test."""
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_tf32
    yield lambda allowed: setattr(matmul, "allow_tf32", allowed)
    matmul.allow_tf32 = before


def test_dot_precision_follows_torch_tf32_setting(tf32):
    tf32(False)
    assert triton_common.dot_precision(torch.float32) == "ieee"
    tf32(True)
    assert triton_common.dot_precision(torch.float32) == "tf32"
    assert triton_common.dot_precision(torch.float16) == "ieee"


def test_scratch_is_poisoned_on_request(monkeypatch):
    monkeypatch.setattr(triton_common, "POISON", True)
    buffer = triton_common.scratch((2, 3), torch.float16, torch.device("cpu"))
    assert buffer.shape == (2, 3) and buffer.dtype == torch.float16 and buffer.isnan().all()
    monkeypatch.setattr(triton_common, "POISON", False)
    assert triton_common.scratch((4,), torch.float32, torch.device("cpu")).shape == (4,)
