"""Which devices a sweep runs on: `--devices all`, a list of GPU indexes, or `cpu:N` worker slots.

One worker process runs on each device, so two timed cases never share a GPU. A GPU slot's worker starts with
`CUDA_VISIBLE_DEVICES` set to that GPU alone (the index as this process numbers the GPUs it sees: within an
inherited `CUDA_VISIBLE_DEVICES` list, its n-th entry). `cpu:N` runs N workers on the CPU: they share its cores,
so their timings contend with each other; it exists so that sharding can be tested and used without a GPU, and
for sweeps whose numerics matter more than their timings. On a machine without a GPU `all` is one CPU slot, the
same as no `--devices`.

Also what identifies a device model across machines (`device_class`): the GPU's name, or the CPU's model with a
class of its thread count, which is what baselines and the gate key on.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

DEVICES_FORMS = "'all', GPU indexes such as '0,1,3', or 'cpu:N' (N CPU worker slots)"


class DevicesError(ValueError):
    """A `--devices` value that names no device here; the message says which forms are allowed."""


@dataclass(frozen=True)
class DeviceSlot:
    """One device a worker runs on: `kind` is `cuda` or `cpu`, `index` the GPU index (or CPU slot number),
    `visible` what the worker's `CUDA_VISIBLE_DEVICES` is set to (None: left as it is)."""

    kind: str
    index: int
    visible: str | None = None

    @property
    def env(self) -> dict[str, str]:
        """What the slot's worker adds to its environment."""
        return {} if self.visible is None else {"CUDA_VISIBLE_DEVICES": self.visible}

    @property
    def label(self) -> str:
        """`cuda:1` or `cpu:0`, as logs and messages name the slot."""
        return f"{self.kind}:{self.index}"


def parse_devices(spec: str, device: str, gpu_count: int | None = None) -> list[DeviceSlot]:
    """The worker slots `spec` names for a suite on `device` (`cpu` or `cuda`); `DevicesError` for a value that
    names no device here. `gpu_count` is how many GPUs this process sees (asked of torch when None)."""
    text = spec.strip().lower()
    if text.startswith("cpu:"):
        return _cpu_slots(spec, text[4:], device)
    if device != "cuda":
        if text == "all":
            return [DeviceSlot("cpu", 0)]
        raise DevicesError(f"--devices {spec!r}: this run is on the CPU (no GPU to index); use 'all' or 'cpu:N'")
    count = _visible_gpus() if gpu_count is None else gpu_count
    indexes = list(range(count)) if text == "all" else _gpu_indexes(spec, count)
    if not indexes:
        raise DevicesError(f"--devices {spec!r}: no GPU is visible here")
    visible = _visible_list(count)
    return [DeviceSlot("cuda", index, visible[index]) for index in indexes]


def _cpu_slots(spec: str, number: str, device: str) -> list[DeviceSlot]:
    """`cpu:N`: N CPU worker slots (N from 1 to 64), only for a run on the CPU."""
    if device != "cpu":
        raise DevicesError(f"--devices {spec!r}: CPU slots go with a run on the CPU (--device cpu), not {device}")
    if not number.isdigit() or not 1 <= int(number) <= 64:
        raise DevicesError(f"--devices {spec!r}: N in 'cpu:N' must be a whole number from 1 to 64")
    return [DeviceSlot("cpu", index) for index in range(int(number))]


def _gpu_indexes(spec: str, count: int) -> list[int]:
    """The distinct GPU indexes of a comma list, each below `count`."""
    parts = [part.strip() for part in spec.split(",")]
    if not all(part.isdigit() for part in parts):
        raise DevicesError(f"--devices {spec!r}: must be {DEVICES_FORMS}")
    indexes = [int(part) for part in parts]
    if len(set(indexes)) != len(indexes):
        raise DevicesError(f"--devices {spec!r}: a GPU is named twice (two timed cases never share a GPU)")
    beyond = [index for index in indexes if index >= count]
    if beyond:
        raise DevicesError(
            f"--devices {spec!r}: GPU {beyond[0]} does not exist; this machine shows {count} GPU(s), "
            f"indexes 0..{count - 1}"
        )
    return indexes


def _visible_list(count: int) -> list[str]:
    """What each GPU index of this process is in the device numbering its workers inherit."""
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    if inherited:
        entries = [entry.strip() for entry in inherited.split(",") if entry.strip()]
        if len(entries) >= count:
            return entries[:count]
    return [str(index) for index in range(count)]


def _visible_gpus() -> int:
    """How many GPUs torch sees in this process."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def cores_class(threads: int | None) -> str:
    """A class of thread counts (`2 threads`, `3-4 threads`, `5-8 threads`, ...): hosts in one class time a CPU
    case alike closely enough to share a baseline, and a 4-thread laptop never gates a 64-thread server."""
    if not threads or threads < 1:
        return "unknown threads"
    upper = 1 << (threads - 1).bit_length()
    lower = upper // 2 + 1
    return f"{threads} thread{'s' if threads > 1 else ''}" if lower >= upper else f"{lower}-{upper} threads"


def device_class(info: dict[str, Any]) -> str:
    """The model a device's timings belong to: the GPU's name, or `<CPU model> / <threads class>`."""
    if info.get("type") == "cpu":
        return f"{info.get('model') or info.get('name')} / {cores_class(info.get('multiprocessors'))}"
    return str(info.get("name"))


def slot_description(slot: DeviceSlot, info: dict[str, Any], host: str | None = None) -> dict[str, Any]:
    """What a run's meta records of one worker slot: where it ran and what the device is."""
    return {
        "host": host or socket.gethostname(),
        "index": slot.index,
        "kind": slot.kind,
        "name": info.get("name"),
        "class": info.get("class") or device_class(info),
    }
