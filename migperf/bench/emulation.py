"""Simulated slices that behave like slices: a share of the CPU and a memory limit.

On a simulated GPU every worker runs on this host's CPU. Left alone, a
simulated 1g slice would measure as fast as a 7g one and hold as much memory
as the host has, and the numbers would say nothing about MIG. A worker on a
simulated device is therefore *emulated* (the word results use; numbers stay
``simulated: true``):

* **Compute**: the device gets the share of this host's CPU cores that its
  SMs are of the whole GPU's (14 of 98 SMs on an A100: 1/7 of the cores); a
  whole GPU gets every core. An MPS client gets its
  ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` of its device's share; time-sliced
  processes on one device take turns inside the device's share, without a
  quota each. The parent enforces it while the worker measures
  (:mod:`migperf.bench.throttle`).
* **Memory**: a worker may not hold more than its device's memory (an MPS
  client no more than its ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` either). The
  worker limits its data segment (``RLIMIT_DATA``, which counts the anonymous
  mappings tensors live in) to what it holds after importing torch plus the
  device's memory, so a working set that would not fit fails to allocate and
  the run ends ``oom`` naming the device's memory, as a CUDA OOM would.

The parent resolves a device's facts from NVML (:func:`resolve_emulation`) in
:func:`migperf.bench.launch.launch` and hands them to the worker in one
environment variable, :data:`EMULATION_ENV` (:func:`emulation_env`,
:func:`emulation_from_env`). Everything here but :func:`resolve_emulation`
uses the standard library only; torch is imported inside
:func:`limit_memory`, in the worker.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from migperf.errors import MigperfError

if TYPE_CHECKING:
    from migperf.nvml.facade import Nvml

__all__ = [
    "EMULATION_ENV",
    "SliceEmulation",
    "emulation_env",
    "emulation_from_env",
    "host_cores",
    "limit_memory",
    "mps_client_emulation",
    "oom_message",
    "resolve_emulation",
]

#: The worker's environment variable with its device's facts (JSON).
EMULATION_ENV = "MIGPERF_EMULATION"

# CUDA's names for an MPS client's limits (the client reads them at context creation).
_THREAD_ENV = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"
_PINNED_ENV = "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"
_PINNED = re.compile(r"(?:^|,)\s*0\s*=\s*(\d+(?:\.\d+)?)\s*([MG])", re.IGNORECASE)
_TRIED = re.compile(r"tried to allocate (\d+) bytes", re.IGNORECASE)
_MIB = 1024 * 1024


@dataclass(frozen=True)
class SliceEmulation:
    """What a worker on a simulated device may use of this host.

    Attributes:
        device: The device label (``MIG-<uuid>`` or a GPU index).
        name: What the device is (``MIG 1g.10gb``, ``NVIDIA A100-SXM4-80GB``).
        memory_mib: The device's memory; ``None``: no memory limit.
        sm_count: The device's SMs; ``None`` for a whole GPU.
        gpu_sm_count: The SMs of the whole GPU (its largest MIG profile's).
        thread_percentage: ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` of an MPS client.
        pinned_mem_limit_mib: ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` of an MPS client, in MiB.
        host_cores: The CPU cores the whole GPU stands for (set by the launch).
        group: The processes that share one device in one launch (set by the
            launch): they take turns within the device's share.
    """

    device: str
    name: str
    memory_mib: int | None = None
    sm_count: int | None = None
    gpu_sm_count: int | None = None
    thread_percentage: float | None = None
    pinned_mem_limit_mib: int | None = None
    host_cores: float | None = None
    group: str | None = None

    @property
    def sm_share(self) -> float:
        """The device's SMs over the whole GPU's (1.0 for a whole GPU)."""
        if not self.sm_count or not self.gpu_sm_count:
            return 1.0
        return min(1.0, self.sm_count / self.gpu_sm_count)

    @property
    def device_cores(self) -> float | None:
        """CPU cores the device stands for, shared by its processes (``None``: unknown host)."""
        if self.host_cores is None:
            return None
        return self.host_cores * self.sm_share

    @property
    def client_cores(self) -> float | None:
        """CPU cores this MPS client may use on its own; ``None``: no own quota."""
        cores = self.device_cores
        if cores is None or self.thread_percentage is None:
            return None
        return cores * min(100.0, max(0.0, self.thread_percentage)) / 100.0

    @property
    def throttled(self) -> bool:
        """Whether the worker gets less than the whole host's CPU."""
        if self.host_cores is None:
            return False
        return self.sm_share < 1.0 or (
            self.thread_percentage is not None and self.thread_percentage < 100.0
        )

    @property
    def memory_limit_mib(self) -> int | None:
        """The memory the worker may hold: the device's, or an MPS client's pinned limit if lower."""
        limits = [m for m in (self.memory_mib, self.pinned_mem_limit_mib) if m is not None]
        return min(limits) if limits else None

    def describe(self) -> str:
        """One line for results: what is emulated and with how much of this host."""
        parts = []
        cores = self.device_cores
        if cores is not None:
            share = (
                f"{self.sm_count} of {self.gpu_sm_count} SMs"
                if self.sm_count and self.gpu_sm_count
                else "the whole GPU"
            )
            parts.append(f"{share} -> {cores:.2f} of {self.host_cores:g} CPU cores")
        client = self.client_cores
        if client is not None:
            parts.append(f"MPS client at {self.thread_percentage:g} % -> {client:.2f} cores")
        limit = self.memory_limit_mib
        if limit is not None:
            parts.append(f"{limit} MiB memory limit")
        return f"emulated {self.name}: " + (", ".join(parts) or "no limits")


def host_cores() -> int:
    """The CPU cores this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def resolve_emulation(nvml: Nvml, device: str) -> SliceEmulation | None:
    """A device's emulation facts, from NVML: its memory, its SMs and the whole GPU's.

    Args:
        nvml: Open NVML (the simulator, for emulation to make sense).
        device: A GPU index, ``cuda:N``, ``GPU-<uuid>`` or ``MIG-<uuid>``.

    Returns:
        The facts, without ``host_cores`` and ``group``; ``None`` for the CPU.

    Raises:
        MigperfError: When the device does not exist or NVML fails.
    """
    from migperf.telemetry.target import resolve_target

    target = resolve_target(nvml, device)
    if target is None:
        return None
    if target.mig_uuid is None:
        info = nvml.gpu(target.gpu_index)
        return SliceEmulation(device=device, name=info.name, memory_mib=info.memory_mib)
    dev = next(
        (d for d in nvml.mig_devices(target.gpu_index) if d.mig_uuid == target.mig_uuid), None
    )
    if dev is None:  # vanished between the two reads
        raise MigperfError(f"MIG device {target.mig_uuid} disappeared while it was being read")
    # The largest GPU-instance profile is the whole GPU as MIG sees it (7g: 98 SMs on an A100).
    whole = max((p.sm_count for p in nvml.gpu_instance_profiles(target.gpu_index)), default=0)
    return SliceEmulation(
        device=device,
        name=f"MIG {target.profile}" if target.profile else dev.name,
        memory_mib=dev.memory_mib,
        sm_count=dev.sm_count,
        gpu_sm_count=max(whole, dev.sm_count),
    )


def mps_client_emulation(emulation: SliceEmulation, env: Mapping[str, str]) -> SliceEmulation:
    """``emulation`` with the MPS limits an MPS client's environment sets, if any."""
    pct: float | None = None
    raw = env.get(_THREAD_ENV)
    if raw:
        try:
            pct = float(raw)
        except ValueError:
            pct = None
    pinned: int | None = None
    match = _PINNED.search(env.get(_PINNED_ENV, ""))
    if match is not None:
        size = float(match[1]) * (1024 if match[2].upper() == "G" else 1)
        pinned = int(size)
    if pct is None and pinned is None:
        return emulation
    return replace(emulation, thread_percentage=pct, pinned_mem_limit_mib=pinned)


def emulation_env(emulation: SliceEmulation) -> dict[str, str]:
    """The worker environment entries that hand it ``emulation``."""
    return {EMULATION_ENV: json.dumps(asdict(emulation), sort_keys=True)}


def emulation_from_env(env: Mapping[str, str] | None = None) -> SliceEmulation | None:
    """The emulation a worker was handed (``os.environ`` by default); ``None`` when none or unreadable."""
    raw = (os.environ if env is None else env).get(EMULATION_ENV)
    if not raw:
        return None
    try:
        data: Any = json.loads(raw)
        if not isinstance(data, dict):
            return None
        return SliceEmulation(**data)
    except (ValueError, TypeError):
        return None


def _vm_data_bytes() -> int | None:
    """This process's data segment as the kernel counts it for ``RLIMIT_DATA`` (``VmData``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _host_available_mib() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def limit_memory(emulation: SliceEmulation) -> list[str]:
    """Limit this process to the device's memory (call it in the worker, before building).

    The limit is ``RLIMIT_DATA``: since Linux 4.7 it counts every private
    writable mapping, where torch's CPU tensors live, and not the shared
    libraries' code, so torch's own virtual reservations do not eat into the
    slice as they would under ``RLIMIT_AS``. What the process holds after
    importing torch is the baseline, as a CUDA context takes its share of a
    real slice; the device's memory comes on top of it. A working set that
    does not fit then fails to allocate (``DefaultCPUAllocator: can't
    allocate memory``), which the worker reports as ``oom``.

    Args:
        emulation: The worker's device.

    Returns:
        Warnings for the result (the limit could not be set, or the host has
        less memory than the device).
    """
    limit_mib = emulation.memory_limit_mib
    if limit_mib is None:
        return []
    import importlib

    # The baseline includes torch, which every workload imports, like a CUDA context.
    importlib.import_module("torch")
    base = _vm_data_bytes()
    try:
        import resource
    except ImportError:
        return [f"{emulation.name}: no memory limit on this platform (no resource module)"]
    if base is None:
        return [f"{emulation.name}: no memory limit: /proc/self/status has no VmData"]
    want = base + limit_mib * _MIB
    warnings = []
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard != resource.RLIM_INFINITY and hard < want:
            warnings.append(
                f"{emulation.name}: the hard data limit ({hard // _MIB} MiB) is below the device's "
                f"memory: the worker may hold less than {limit_mib} MiB"
            )
            want = hard
        resource.setrlimit(resource.RLIMIT_DATA, (want, hard))
    except (ValueError, OSError) as exc:
        return [f"{emulation.name}: the memory limit could not be set ({exc})"]
    available = _host_available_mib()
    if available is not None and available < limit_mib:
        warnings.append(
            f"{emulation.name} has {limit_mib} MiB, this host {available} MiB available: a "
            "working set between the two fails for want of host memory, not as the slice would"
        )
    return warnings


def oom_message(emulation: SliceEmulation, exc: BaseException) -> str:
    """What ran out, in a CUDA OOM's terms: the allocation that failed and the device's capacity."""
    limit = emulation.memory_limit_mib
    tried = _TRIED.search(str(exc))
    if tried is not None:  # the CPU allocator's words, in CUDA's
        what = f"tried to allocate {_size(int(tried[1]))}; "
    else:  # e.g. an injected OutOfMemoryError: keep what it said
        lines = str(exc).strip().splitlines()
        what = f"{lines[0]}; " if lines else ""
    capacity = (
        f"has a total capacity of {_size(limit * _MIB)} ({limit} MiB)"
        if limit is not None
        else "has no memory limit"
    )
    return f"{what}{emulation.name} {capacity} (simulated GPU, emulated on this host's CPU)"


def _size(n: float) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", _MIB)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} bytes"
