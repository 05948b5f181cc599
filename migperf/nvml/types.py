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
    to look it up. ``instances_free`` is None when NVML cannot say (MIG off,
    or a caller without privileges). ``placements`` is empty, and
    ``memory_slices`` 0, when NVML refuses the placements to this caller.
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
        """Plain-JSON form (``migperf mig profiles --json``).

        Without placements (NVML refuses them to a user without root) the
        memory slices are unknown too: null, not 0.
        """
        d = asdict(self)
        d["placements"] = [{"start": p.start, "size": p.size} for p in self.placements]
        if not self.placements:
            d["memory_slices"] = None
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
    """A MIG device: what ``CUDA_VISIBLE_DEVICES=MIG-<uuid>`` selects.

    ``engines`` are the engines its GPU instance owns (``nvmlDeviceGetAttributes``),
    None where they were not read.
    """

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
    engines: Engines | None = None


@dataclass(frozen=True)
class ProcessInfo:
    """A compute process NVML sees on a GPU or MIG device."""

    pid: int
    used_memory_mib: float | None
    gi_id: int | None
    ci_id: int | None


# ----------------------------------------------------------------- telemetry

#: Board-level metrics :meth:`Nvml.sample_gpu` reads, by the name they carry in
#: :class:`GpuSample` (and in telemetry series columns).
GPU_METRICS: tuple[str, ...] = (
    "power_w",
    "power_instant_w",
    "energy_mj",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "temperature_c",
    "gpu_util_pct",
    "mem_util_pct",
    "memory_used_mib",
    "throttle_reasons",
)

#: Per-GPU-instance activity metrics from NVML GPM (``nvmlGpmMetricsGet``).
GPM_METRICS: tuple[str, ...] = (
    "graphics_util_pct",
    "sm_util_pct",
    "sm_occupancy_pct",
    "tensor_util_pct",
    "dram_bw_util_pct",
)

#: ``nvmlClocksEventReason*`` bits (values from nvml.h, stable across drivers).
THROTTLE_REASONS: dict[int, str] = {
    0x001: "gpu_idle",
    0x002: "applications_clocks_setting",
    0x004: "sw_power_cap",
    0x008: "hw_slowdown",
    0x010: "sync_boost",
    0x020: "sw_thermal_slowdown",
    0x040: "hw_thermal_slowdown",
    0x080: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
    0x200: "board_limit",
    0x400: "reliability",
}


def throttle_reason_names(mask: int | None) -> list[str]:
    """Names of the clock event (throttle) reasons set in ``mask``; [] for none or None."""
    if not mask:
        return []
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    rest = mask & ~sum(THROTTLE_REASONS)
    if rest:
        names.append(f"0x{rest:x}")
    return names


@dataclass(frozen=True)
class GpuSample:
    """One reading of a physical GPU's board-level telemetry.

    Power, energy, clocks and temperature are whole-GPU quantities: there is no
    per-slice sensor, so on a MIG-enabled GPU they are shared by every slice.
    A metric NVML cannot give is None, never 0: ``unsupported`` says why for
    metrics NVML does not support here (a property of the GPU, its MIG mode,
    the driver or the caller's privileges); ``errors`` holds failures of this
    one reading (a driver error), which the next reading may not repeat.

    Attributes:
        gpu_index: The GPU (``nvidia-smi -i N``).
        power_w: ``nvmlDeviceGetPowerUsage``: instantaneous on GA100 and older,
            a 1 s average on newer GPUs (NVML docs).
        power_instant_w: Field ``NVML_FI_DEV_POWER_INSTANT`` (instantaneous).
        energy_mj: ``nvmlDeviceGetTotalEnergyConsumption``: millijoules since
            the driver was loaded (Volta and newer).
        sm_clock_mhz: Current SM clock.
        mem_clock_mhz: Current memory clock.
        temperature_c: GPU core temperature.
        gpu_util_pct: ``nvmlDeviceGetUtilizationRates().gpu``; not supported
            on MIG-enabled GPUs.
        mem_util_pct: ``nvmlDeviceGetUtilizationRates().memory`` (same limits).
        memory_used_mib: Framebuffer used on the whole GPU (in MIG mode NVML
            reports the aggregate only to privileged callers).
        memory_total_mib: Framebuffer total, when ``memory_used_mib`` is known.
        throttle_reasons: ``nvmlDeviceGetCurrentClocksEventReasons`` bit mask
            (see :func:`throttle_reason_names`).
        unsupported: Metric name to the reason NVML does not give it here.
        errors: Metric name to the error this reading got.
    """

    gpu_index: int
    power_w: float | None = None
    power_instant_w: float | None = None
    energy_mj: int | None = None
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    temperature_c: int | None = None
    gpu_util_pct: int | None = None
    mem_util_pct: int | None = None
    memory_used_mib: float | None = None
    memory_total_mib: float | None = None
    throttle_reasons: int | None = None
    unsupported: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MigMemorySample:
    """Memory of one MIG device (its GPU instance's framebuffer), one reading.

    ``error`` is set (and the numbers None) when this reading failed.
    """

    gpu_index: int
    mig_uuid: str
    gi_id: int
    ci_id: int
    memory_used_mib: float | None
    memory_total_mib: float | None
    error: str | None = None


@dataclass(frozen=True)
class GpmActivity:
    """Activity of a GPU instance (or a whole GPU) between two NVML GPM samples.

    NVML GPM (Hopper and newer) is the only NVML route to per-MIG-instance
    activity; values are percentages over ``interval_s``. The first reading of
    an entity only starts the interval: ``interval_s`` is None and so are the
    metrics. ``unsupported`` / ``errors`` as in :class:`GpuSample`.

    Attributes:
        gpu_index: The physical GPU.
        gi_id: The GPU instance (None: the whole GPU).
        interval_s: Time between the two GPM samples.
        graphics_util_pct: ``NVML_GPM_METRIC_GRAPHICS_UTIL`` (engine active).
        sm_util_pct: ``NVML_GPM_METRIC_SM_UTIL`` (SMs busy).
        sm_occupancy_pct: ``NVML_GPM_METRIC_SM_OCCUPANCY`` (resident warps).
        tensor_util_pct: ``NVML_GPM_METRIC_ANY_TENSOR_UTIL``.
        dram_bw_util_pct: ``NVML_GPM_METRIC_DRAM_BW_UTIL``.
    """

    gpu_index: int
    gi_id: int | None
    interval_s: float | None = None
    graphics_util_pct: float | None = None
    sm_util_pct: float | None = None
    sm_occupancy_pct: float | None = None
    tensor_util_pct: float | None = None
    dram_bw_util_pct: float | None = None
    unsupported: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
