"""What the worker records about where it ran: device, driver, library versions, host."""

from __future__ import annotations

import os
import platform
import re
import socket
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migperf import __version__
from migperf.bench.emulation import emulation_from_env
from migperf.bench.result import EnvironmentInfo

if TYPE_CHECKING:
    import torch

__all__ = ["collect_environment", "nvidia_driver_version"]

_PROC_DRIVER = Path("/proc/driver/nvidia/version")
_MIB = 1024 * 1024


def nvidia_driver_version(path: Path = _PROC_DRIVER) -> str | None:
    """The NVIDIA kernel driver version (``535.104.05``) from procfs, or ``None``.

    Read from ``/proc/driver/nvidia/version`` rather than NVML: only
    ``migperf.nvml`` may load NVML, and the worker must not depend on it.
    Same value as ``nvidia-smi --query-gpu=driver_version --format=csv``.
    """
    try:
        text = path.read_text()
    except OSError:
        return None
    match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", text)
    if match is None:
        match = re.search(r"\b(\d{3,}\.\d+(?:\.\d+)?)\b", text)
    return match.group(1) if match else None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def collect_environment(device: torch.device) -> EnvironmentInfo:
    """Describe the device and software the worker runs with.

    Args:
        device: The torch device the workload runs on.

    Returns:
        The environment record.
    """
    import torch

    try:
        cpus: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count()
    common: dict[str, Any] = {
        "torch_version": torch.__version__,
        "transformers_version": _version("transformers"),
        "migperf_version": __version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "cpu_count": cpus,
        "torch_num_threads": torch.get_num_threads(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "driver_version": nvidia_driver_version(),
        "cuda_runtime_version": torch.version.cuda,
    }
    if device.type != "cuda":
        emulation = emulation_from_env()
        return EnvironmentInfo(
            device_kind="cpu",
            device_name=_cpu_name(),
            emulation=emulation.describe() if emulation is not None else None,
            **common,
        )
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    uuid = getattr(props, "uuid", None)
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return EnvironmentInfo(
        device_kind="cuda",
        device_name=torch.cuda.get_device_name(index),
        device_uuid=str(uuid) if uuid is not None else None,
        sm_count=int(props.multi_processor_count),
        device_memory_mib=props.total_memory / _MIB,
        compute_capability=f"{props.major}.{props.minor}",
        cudnn_version=cudnn,
        **common,
    )
