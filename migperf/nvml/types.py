"""migperf's own types for what NVML reports.

These frozen dataclasses are what the :mod:`migperf.nvml` facade returns; no
ctypes struct or NVML handle leaves the ``nvml`` package. Field names carry
units (``memory_mib``) because they become DataFrame columns and JSON keys.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Placement:
    """Where an instance sits: ``start`` and ``size`` in placement units.

    For GPU instances the unit is a memory slice (8 per A100/H100, 4 per A30,
    12 per RTX PRO 6000 Blackwell); for compute instances it is a compute slice
    of the parent GPU instance. Printed as nvidia-smi does: ``4:4``.
    """

    start: int
    size: int

    def slices(self) -> range:
        """The placement units this placement occupies."""
        return range(self.start, self.start + self.size)

    def __str__(self) -> str:
        return f"{self.start}:{self.size}"


@dataclass(frozen=True)
class MigMode:
    """MIG mode as NVML reports it: the current mode and the one pending a reset."""

    current: bool
    pending: bool

    @property
    def is_pending_change(self) -> bool:
        """True when a mode change waits for a GPU reset or reboot."""
        return self.current != self.pending


@dataclass(frozen=True)
class GpuInfo:
    """One physical GPU.

    ``mig_mode`` is None for GPUs that do not support MIG.
    ``memory_mib`` is the framebuffer total NVML reports for the parent device,
    or None where NVML refuses to report it (parent in MIG mode, unprivileged).
    """

    index: int
    name: str
    uuid: str
    pci_bus_id: str
    pci_device_id: int
    memory_mib: int | None
    mig_capable: bool
    mig_mode: MigMode | None
    mig_devices: int
    architecture: str
    cuda_compute_capability: tuple[int, int] | None

    @property
    def pci_device_id_hex(self) -> str:
        """The PCI device id as mig-parted's ``device-filter`` spells it (``0x20B010DE``)."""
        return f"0x{self.pci_device_id:08X}"

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (``migperf gpus --json``)."""
        return {
            "index": self.index,
            "name": self.name,
            "uuid": self.uuid,
            "pci_bus_id": self.pci_bus_id,
            "pci_device_id": self.pci_device_id_hex,
            "memory_mib": self.memory_mib,
            "mig_capable": self.mig_capable,
            "mig_mode": (
                {"current": self.mig_mode.current, "pending": self.mig_mode.pending}
                if self.mig_mode is not None
                else None
            ),
            "mig_devices": self.mig_devices,
            "architecture": self.architecture,
            "cuda_compute_capability": (
                list(self.cuda_compute_capability) if self.cuda_compute_capability else None
            ),
        }


@dataclass(frozen=True)
class Engines:
    """Engines a GPU-instance profile owns (copy, video decode/encode, JPEG, optical flow)."""

    copy: int
    decoder: int
    encoder: int
    jpeg: int
    ofa: int


@dataclass(frozen=True)
class GpuInstanceProfile:
    """A GPU-instance profile as ``nvidia-smi mig -lgip`` and ``-lgipp`` show it.

    ``profile_id`` is the number nvidia-smi prints (e.g. 19); ``index`` is the
    NVML profile constant (``NVML_GPU_INSTANCE_PROFILE_1_SLICE`` = 0, ...) used
    to look it up. ``instances_free`` is None when NVML cannot say (MIG off).
    """

    profile: str
    profile_id: int
    index: int
    compute_slices: int
    memory_slices: int
    instances_total: int
    instances_free: int | None
    sm_count: int
    memory_mib: int
    engines: Engines
    placements: tuple[Placement, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (``migperf mig profiles --json``)."""
        d = asdict(self)
        d["placements"] = [{"start": p.start, "size": p.size} for p in self.placements]
        return d


@dataclass(frozen=True)
class ComputeInstanceProfile:
    """A compute-instance profile inside a GPU instance (``nvidia-smi mig -lcip``)."""

    profile: str
    profile_id: int
    compute_slices: int
    instances_total: int
    instances_free: int | None
    sm_count: int


@dataclass(frozen=True)
class ComputeInstance:
    """A compute instance and the MIG device CUDA sees for it."""

    ci_id: int
    profile: str
    profile_id: int | None
    placement: Placement | None
    mig_uuid: str
    memory_mib: int
    sm_count: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "ci_id": self.ci_id,
            "profile": self.profile,
            "profile_id": self.profile_id,
            "placement": (
                {"start": self.placement.start, "size": self.placement.size}
                if self.placement is not None
                else None
            ),
            "mig_uuid": self.mig_uuid,
            "memory_mib": self.memory_mib,
            "sm_count": self.sm_count,
        }


@dataclass(frozen=True)
class GpuInstance:
    """A GPU instance with its compute instances."""

    gpu_index: int
    gi_id: int
    profile: str
    profile_id: int | None
    placement: Placement | None
    compute_instances: tuple[ComputeInstance, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (``migperf mig show --json``)."""
        return {
            "gi_id": self.gi_id,
            "profile": self.profile,
            "profile_id": self.profile_id,
            "placement": (
                {"start": self.placement.start, "size": self.placement.size}
                if self.placement is not None
                else None
            ),
            "compute_instances": [ci.to_dict() for ci in self.compute_instances],
        }


@dataclass(frozen=True)
class MigDevice:
    """A MIG device: what ``CUDA_VISIBLE_DEVICES=MIG-<uuid>`` selects."""

    gpu_index: int
    index: int
    mig_uuid: str
    name: str
    gi_id: int
    ci_id: int
    memory_mib: int
    sm_count: int
    gpu_instance_slices: int
    compute_instance_slices: int


@dataclass(frozen=True)
class ProcessInfo:
    """A compute process NVML sees on a GPU or MIG device."""

    pid: int
    used_memory_mib: float | None
    gi_id: int | None
    ci_id: int | None
