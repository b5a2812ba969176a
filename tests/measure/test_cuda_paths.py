"""The CUDA-only paths of timing, kernel checks and energy, driven on the CPU through stand-ins for the CUDA
runtime and NVML (each stand-in's clock is the host's, so every sample also measures real elapsed time), and
for real on a GPU in the tests marked `gpu`."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch

from attnbench.measure import energy, kernels, timing
from attnbench.measure.kernels import BackendNotRun, bounded, check_backend, computing_ops
from attnbench.suite.case import TimingSettings

SPIN_MS = 0.2


def spin(ms: float = SPIN_MS) -> None:
    end = time.perf_counter() + ms / 1e3
    while time.perf_counter() < end:
        pass


class FakeEvent:
    """A CUDA event whose timestamp is the host clock when it is recorded."""

    def __init__(self, enable_timing=False):
        self.at = None

    def record(self):
        self.at = time.perf_counter()

    def synchronize(self):
        pass

    def elapsed_time(self, end):
        return (end.at - self.at) * 1e3


class FakeStream:
    def wait_stream(self, other):
        pass


class FakeGraph:
    """A captured graph: replaying it spins as the captured kernels would run."""

    def __init__(self, log):
        self.log = log

    def replay(self):
        self.log.append("replay")
        spin()


@pytest.fixture
def fake_cuda(monkeypatch):
    """Stand-ins for the parts of torch.cuda that timing uses; returns the log of what happened."""
    log: list[str] = []
    stream = FakeStream()
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: _context(log, "side stream"))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: stream)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: FakeGraph(log))
    monkeypatch.setattr(torch.cuda, "graph", lambda graph: _context(log, "capture"))
    monkeypatch.setattr(timing, "l2_flush_buffer", lambda: SimpleNamespace(zero_=lambda: log.append("flush")))
    return log


class _context:
    def __init__(self, log, name):
        self.log, self.name = log, name

    def __enter__(self):
        self.log.append(f"enter {self.name}")

    def __exit__(self, *exc):
        self.log.append(f"exit {self.name}")


def test_graph_mode_captures_once_and_replays_each_sample(fake_cuda):
    log = fake_cuda

    def call(state):
        assert state is None
        log.append("call")

    settings = TimingSettings(warmup_ms=2, rep_ms=10, min_reps=5, max_reps=30, method="graph")
    measured = timing.time_call(call, None, "cuda", settings)
    # First call, three settling calls on a side stream, then one call inside the capture; never called again.
    assert log.count("call") == 5
    capture = log.index("enter capture")
    assert log[capture - 5 : capture] == ["enter side stream", "call", "call", "call", "exit side stream"]
    assert log[capture + 1 : capture + 3] == ["call", "exit capture"]
    replays = log[capture + 3 :]
    assert replays == ["flush", "replay"] * (len(replays) // 2)  # the L2 flushed before every replay
    assert len(replays) // 2 > len(measured.samples_ms) >= 5  # warm-up replays, then the timed ones
    assert measured.method == "graph" and min(measured.samples_ms) >= SPIN_MS * 0.99


def test_back_to_back_on_cuda_measures_the_hosts_issue_time(fake_cuda):
    """With host-clock events a call is as long to issue as to run: exactly a launch-bound GPU."""
    settings = TimingSettings(warmup_ms=2, rep_ms=10, min_reps=3, max_reps=30, method="back_to_back")
    measured = timing.time_call(lambda _: spin(), None, "cuda", settings)
    assert "flush" not in fake_cuda  # back to back means warm caches
    assert measured.host_issue_ms is not None and measured.host_issue_ms >= SPIN_MS * 0.99
    assert timing.launch_bound("cuda", measured) is True


def test_cold_on_cuda_flushes_before_each_sample(fake_cuda):
    settings = TimingSettings(warmup_ms=1, rep_ms=5, min_reps=3, max_reps=10)
    measured = timing.time_call(lambda _: fake_cuda.append("call"), None, "cuda", settings)
    assert fake_cuda[0] == "call" and fake_cuda[1:] == ["flush", "call"] * (len(fake_cuda) // 2)
    assert timing.launch_bound("cuda", measured) is True  # a call of microseconds


FLASH = "void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4, false>, true>(Flash_fwd_params)"
EFFICIENT = "fmha_cutlassF_bf16_aligned_64x128_rf_sm80(PyTorchMemEffAttention::AttentionKernel<...>::Params)"
CUDNN = "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x128_4x1x1_kernel0_0"
GEMM = "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off"


@pytest.mark.parametrize(
    ("backend", "ran", "ok"),
    [
        ("flash", [GEMM, FLASH], True),
        ("flash", [GEMM, EFFICIENT], False),
        ("flash", [CUDNN], False),  # cuDNN's flash kernels are not FlashAttention's
        ("efficient", [EFFICIENT], True),
        ("efficient", [FLASH], False),
        ("cudnn", [CUDNN], True),
        ("cudnn", [FLASH], False),
    ],
)
def test_a_pinned_backend_must_show_its_kernels(backend, ran, ok):
    if ok:
        check_backend({"backend": backend}, ran, "cuda")
    else:
        with pytest.raises(BackendNotRun, match=f"pinned to the {backend} backend"):
            check_backend({"backend": backend}, ran, "cuda")


def test_the_backend_is_checked_only_where_it_can_be():
    check_backend({"backend": "flash"}, [EFFICIENT], "cpu")  # CPU operators are not CUDA kernels
    check_backend({"backend": "flash"}, [], "cuda")  # nothing recorded: unchecked, and `kernels` shows []
    check_backend({}, [EFFICIENT], "cuda")  # PyTorch's own choice of backend: nothing to check
    check_backend({"backend": "math"}, [GEMM], "cuda")


def test_kernel_lists_are_bounded():
    names = [f"kernel_{i}" for i in range(40)] + ["kernel_3", "x" * 5000]
    listed = bounded(names)
    assert len(listed) == kernels.MAX_NAMES and listed[-1] == f"... {41 - kernels.MAX_NAMES + 1} more"
    assert listed[:3] == ["kernel_0", "kernel_1", "kernel_2"]
    assert max(len(name) for name in bounded(["y" * 5000])) == kernels.MAX_NAME_CHARS
    assert computing_ops(["aten::view", "aten::bmm", "aten::t", "aten::_softmax", "aten::bmm", "[memory]"]) == [
        "aten::bmm",
        "aten::_softmax",
    ]


class FakeNvml:
    """An energy counter (mJ) that each call advances by what the call would spend."""

    def __init__(self):
        self.millijoules = 1_000_000

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        assert handle == "gpu0"
        return self.millijoules


def test_energy_per_call_from_the_counter(monkeypatch):
    nvml = FakeNvml()
    monkeypatch.setattr(energy, "_nvml", lambda: nvml)
    monkeypatch.setattr(energy, "_device_handle", lambda: "gpu0")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)

    def call(_):
        nvml.millijoules += 7
        spin(0.05)

    def prepare():
        nvml.millijoules += 3  # a bwd's fresh forward: its energy is not the call's

    begin = time.perf_counter()
    assert energy.energy_per_call_j(call, None, seconds=0.05, estimate_ms=0.05) == pytest.approx(0.007)
    assert time.perf_counter() - begin >= 0.05  # at least the asked seconds of calls
    assert energy.energy_per_call_j(call, prepare, seconds=0.05, estimate_ms=0.05) == pytest.approx(0.007)
    assert energy.energy_per_call_j(call, None, seconds=0, estimate_ms=0.05) is None


def test_no_energy_without_nvml(monkeypatch):
    monkeypatch.setattr(energy, "_nvml", lambda: None)
    monkeypatch.setattr(energy, "_handle", None)
    assert energy.energy_per_call_j(lambda _: None, None, seconds=1.0, estimate_ms=1.0) is None


@pytest.mark.gpu
def test_graph_and_back_to_back_time_a_real_kernel():
    a = torch.randn(2048, 2048, device="cuda", dtype=torch.bfloat16)

    def call(_):
        return a @ a

    for method in ("cold", "back_to_back", "graph"):
        settings = TimingSettings(warmup_ms=5, rep_ms=20, min_reps=5, max_reps=100, method=method)
        measured = timing.time_call(call, None, "cuda", settings)
        assert 0 < measured.median_ms < 50, method
        assert timing.launch_bound("cuda", measured) is not None
    ran = kernels.cuda_kernels(call, None)
    assert ran and any("gemm" in name.lower() or "cutlass" in name.lower() for name in ran), ran


@pytest.mark.gpu
def test_flash_attention_shows_its_kernels():
    q = torch.randn(1, 8, 1024, 64, device="cuda", dtype=torch.bfloat16)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def call(_):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return torch.nn.functional.scaled_dot_product_attention(q, q, q)

    check_backend({"backend": "flash"}, kernels.cuda_kernels(call, None), "cuda")


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_the_kernel_profile_runs_one_call_and_keeps_only_device_kernels(monkeypatch):
    """On a CPU-only build the profile holds CPU operators alone: none of them is listed as a kernel, and an
    exception of the call itself is the case's own, never hidden as a profiler failure."""
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    calls = []
    x = torch.randn(32, 32)
    assert kernels.cuda_kernels(lambda state: calls.append(state) or x @ x, lambda: "fresh") == []
    assert calls == ["fresh"]
    with pytest.raises(ZeroDivisionError):
        kernels.cuda_kernels(lambda state: 1 / 0, None)
    assert kernels.cuda_kernels(lambda state: x @ x, None) == []  # the profiler was stopped and starts again
