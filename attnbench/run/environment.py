"""What a run records about where it ran: device, driver, library versions, TF32 flags, git state, command line.

Light to import: torch is imported inside the functions that need it. The device's measured ceilings come from a
worker (`attnbench.measure.ceilings`), since measuring them is measurement code.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import attnbench
from attnbench.run.devices import device_class

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


def device_info(device: str, index: int = 0) -> dict[str, Any]:
    """The device a run measures on (GPU `index` on CUDA): its name, memory, multiprocessors (CPU threads),
    compute capability, driver and CUDA version (None where they do not apply), and its `class`, the model
    that baselines and the gate key on (`attnbench.run.devices.device_class`)."""
    import torch

    if device == "cuda":
        props = torch.cuda.get_device_properties(index)
        info = {
            "type": "cuda",
            "name": props.name,
            "memory_bytes": props.total_memory,
            "multiprocessors": props.multi_processor_count,
            "capability": f"{props.major}.{props.minor}",
            "driver": _nvidia_driver(),
            "cuda": torch.version.cuda,
        }
    else:
        info = {
            "type": "cpu",
            "name": f"{_cpu_model()} ({os.cpu_count()} threads, torch uses {torch.get_num_threads()})",
            "model": _cpu_model(),
            "memory_bytes": _total_memory(),
            "multiprocessors": os.cpu_count(),
            "capability": None,
            "driver": None,
            "cuda": None,
        }
    return {**info, "class": device_class(info)}


def versions() -> dict[str, str | None]:
    """The versions of attnbench, Python, torch, numpy and triton (None when triton is not installed)."""
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
    """Whether torch lets fp32 matmuls and convolutions use TF32 (which changes fp32 timings and errors)."""
    import torch

    return {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}


def _nvidia_driver() -> str | None:
    """The NVIDIA driver version as nvidia-smi reports it, or None without nvidia-smi."""
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
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _total_memory() -> int | None:
    """The machine's physical memory in bytes, where the OS says."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def command_line() -> str:
    """The command that started this process, as the user typed it (program name without its folder)."""
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
