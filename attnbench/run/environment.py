"""What a run records about where it ran: device, driver, library versions, git state, measured ceilings."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attnbench

REPO_ROOT = Path(attnbench.__file__).resolve().parent.parent


def pick_device(requested: str | None = None) -> str:
    """`cuda` when a GPU is visible (or asked for), else `cpu`; asking for cuda without one is an error."""
    import torch

    if requested in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested not in ("cpu", "cuda"):
        raise ValueError(f"device must be one of ['auto', 'cpu', 'cuda'], got {requested!r}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for, but torch sees no CUDA device")
    return requested


def git_state(root: Path = REPO_ROOT) -> dict[str, Any]:
    """The commit attnbench runs from and whether its tree has uncommitted changes (None outside a checkout)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def device_info(device: str) -> dict[str, Any]:
    import torch

    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        return {
            "type": "cuda",
            "name": props.name,
            "memory_bytes": props.total_memory,
            "multiprocessors": props.multi_processor_count,
            "capability": f"{props.major}.{props.minor}",
            "driver": _nvidia_driver(),
            "cuda": torch.version.cuda,
        }
    return {
        "type": "cpu",
        "name": f"{_cpu_model()} ({os.cpu_count()} threads, torch uses {torch.get_num_threads()})",
        "memory_bytes": _total_memory(),
        "multiprocessors": os.cpu_count(),
        "capability": None,
        "driver": None,
        "cuda": None,
    }


def versions() -> dict[str, str | None]:
    import numpy
    import torch

    found: dict[str, str | None] = {
        "attnbench": attnbench.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
    }
    try:
        from importlib.metadata import version

        found["triton"] = version("triton")
    except Exception:
        found["triton"] = None
    return found


def tf32_flags() -> dict[str, bool]:
    import torch

    return {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}


def measure_ceilings(device: str) -> dict[str, Any]:
    """The device's copy bandwidth (bytes read + written) and matmul rate, measured here and now.

    CUDA: a 1 GiB device-to-device copy and a bf16 8192³ matmul, timed with events. CPU: a 128 MiB copy and an
    fp32 1024³ matmul on torch's threads. Each is the median of several repetitions after a warm-up.
    """
    import torch

    cuda = device == "cuda"
    copy_bytes = (1 << 30) if cuda else (128 << 20)
    n, dtype = (8192, torch.bfloat16) if cuda else (1024, torch.float32)
    src = torch.full((copy_bytes,), 7, dtype=torch.uint8, device=device)  # written, so its pages are real
    dst = torch.empty_like(src)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    copy_s = _median_seconds(lambda: dst.copy_(src), cuda)
    matmul_s = _median_seconds(lambda: a @ b, cuda)
    return {
        "copy_gbps": 2 * copy_bytes / copy_s / 1e9,
        "matmul_tflops": 2 * n**3 / matmul_s / 1e12,
        "matmul_dtype": "bf16" if cuda else "fp32",
        "method": f"{copy_bytes >> 20} MiB copy (read + write counted); {n}^3 matmul; median of 10 after warm-up",
    }


def _median_seconds(fn, cuda: bool, reps: int = 10) -> float:
    import torch

    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            begin = time.perf_counter()
            fn()
            times.append(time.perf_counter() - begin)
    return sorted(times)[len(times) // 2]


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _total_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
