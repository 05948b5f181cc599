"""The one gateway to NVML.

:class:`Nvml` wraps a pynvml-compatible module (nvidia-ml-py's ``pynvml`` on a
real machine, :mod:`migperf.nvml.sim` otherwise) and speaks migperf's types
(:mod:`migperf.nvml.types`). It is the only place that handles NVML handles,
ctypes buffers and ``NVMLError``; every NVML failure leaves it as a
:class:`~migperf.errors.MigperfError` that names the operation, the GPU and
the reason, with a hint.

Reads work for any user. Calls that change a GPU (``set_mig_mode``,
``create_*``, ``destroy_*``) refuse in read-only mode.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import time
import types
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, TypeVar

from migperf import errors
from migperf.nvml import catalog
from migperf.nvml.naming import compute_instance_profile_name, gpu_instance_profile_name
from migperf.nvml.types import (
    ComputeInstance,
    ComputeInstanceProfile,
    Engines,
    GpmActivity,
    GpuInfo,
    GpuInstance,
    GpuInstanceProfile,
    GpuSample,
    MigDevice,
    MigMemorySample,
    MigMode,
    Placement,
    ProcessInfo,
)

T = TypeVar("T")
_MIB = 1024 * 1024
_NA = 0xFFFFFFFF


class Nvml:
    """migperf's view of NVML on one machine.

    Use as a context manager (``with open_nvml() as nvml:``) or call
    :meth:`init` / :meth:`shutdown`.

    Args:
        module: ``pynvml`` or a module with the same surface (the simulator).
        simulated: Whether ``module`` is the simulator; results say so.
        read_only: Refuse every call that would change a GPU.
        fallback_reason: Why a simulator stands in for a missing driver, if it does.
    """

    def __init__(
        self,
        module: types.ModuleType,
        *,
        simulated: bool,
        read_only: bool = False,
        fallback_reason: str | None = None,
    ) -> None:
        self.nvml = module
        self.simulated = simulated
        self.read_only = read_only
        self.fallback_reason = fallback_reason
        self._initialized = False
        # Facts that cannot change while NVML is open: the GPU count, and each
        # GPU's profiles and placements (until its MIG mode changes).
        self._gpu_count: int | None = None
        self._static_profiles: dict[int, list[GpuInstanceProfile]] = {}
        # Telemetry reads many times a second: handles are looked up once.
        self._board_handles: dict[int, Any] = {}
        self._mig_handles: dict[str, Any] = {}
        self._gpm_previous: dict[tuple[int, int | None], tuple[Any, float]] = {}
        self._gpm_spare: list[Any] = []

    # ---------------------------------------------------------------- set-up

    def init(self) -> Nvml:
        """Initialise NVML (``nvmlInit``).

        Raises:
            NvmlUnavailableError: when the driver or library is missing.
        """
        if not self._initialized:
            self._call("initialise NVML", self.nvml.nvmlInit)
            self._initialized = True
        return self

    def shutdown(self) -> None:
        """Release NVML (``nvmlShutdown``); errors on the way out are ignored."""
        if self._initialized:
            self._free_gpm_samples()
            self._initialized = False
            with contextlib.suppress(self.nvml.NVMLError):
                self.nvml.nvmlShutdown()

    def __enter__(self) -> Nvml:
        return self.init()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @property
    def machine(self) -> str | None:
        """The simulated machine's name (``a100-80gb-x8``), or None on real hardware."""
        spec = getattr(self.nvml, "MACHINE", None)
        return spec.machine_name if spec is not None else None

    # ------------------------------------------------------------- plumbing

    def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """Call an NVML function, turning NVMLError into a MigperfError about ``what``."""
        try:
            return fn(*args)
        except self.nvml.NVMLError as exc:
            raise self._translate(what, exc) from exc

    def _translate(self, what: str, exc: Any) -> errors.MigperfError:
        n = self.nvml
        reason = str(exc)
        msg = f"cannot {what}: {reason}"
        if isinstance(exc, (n.NVMLError_LibraryNotFound, n.NVMLError_DriverNotLoaded)):
            return errors.NvmlUnavailableError(
                f"cannot {what}: the NVIDIA driver is not available ({reason})",
                hint="install the NVIDIA driver (nvidia-smi must work), or use "
                "`migperf --simulate a100-80gb ...` to run on a simulated GPU",
            )
        if isinstance(exc, n.NVMLError_NoPermission):
            return errors.NvmlPermissionError(
                msg,
                hint="run as root, or grant the MIG config capability "
                "(/proc/driver/nvidia/capabilities/mig/config); the same call needs "
                "`sudo nvidia-smi mig ...`",
            )
        if isinstance(exc, n.NVMLError_InUse):
            return errors.GpuInUseError(
                msg,
                hint="stop the processes using it (see `nvidia-smi` or `migperf mig show`) "
                "and destroy its compute instances first, or pass --force where offered",
            )
        if isinstance(exc, n.NVMLError_InsufficientResources):
            return errors.InsufficientResourcesError(
                msg,
                hint="free the slices it needs (`migperf mig reset`), or pick a layout "
                "from `migperf mig layouts`",
            )
        if isinstance(exc, n.NVMLError_ResetRequired):
            return errors.ResetRequiredError(
                msg, hint="reset the GPU (`nvidia-smi --gpu-reset -i N`) or reboot"
            )
        if isinstance(exc, n.NVMLError_NotSupported):
            return errors.MigNotSupportedError(
                msg,
                hint="check that the GPU supports MIG and that MIG mode is enabled "
                "(`migperf gpus`; `nvidia-smi -i N -mig 1` enables it)",
            )
        if isinstance(exc, n.NVMLError_NotFound):
            return errors.GpuNotFoundError(msg, hint="list what exists with `migperf mig show`")
        if isinstance(exc, n.NVMLError_InvalidArgument):
            return errors.NvmlCallError(
                msg,
                hint="the instance may have been destroyed meanwhile; re-run `migperf mig show`",
            )
        return errors.NvmlCallError(msg, hint="check `nvidia-smi` and the kernel log (dmesg)")

    def require_writable(self, what: str) -> None:
        """Raise ReadOnlyError when read-only mode is on; ``what`` names the refused change."""
        if self.read_only:
            raise errors.ReadOnlyError(
                f"refusing to {what}: migperf is in read-only mode",
                hint="drop --read-only / unset MIGPERF_READ_ONLY to allow changes to the GPU",
            )

    def _handle(self, gpu_index: int) -> Any:
        count = self.gpu_count()
        if not 0 <= gpu_index < count:
            raise errors.GpuNotFoundError(
                f"GPU {gpu_index} does not exist: this machine has {count} GPU(s)"
                + (f" (0-{count - 1})" if count else ""),
                hint="list them with `migperf gpus`",
            )
        return self._call(
            f"get a handle for GPU {gpu_index}", self.nvml.nvmlDeviceGetHandleByIndex, gpu_index
        )

    def _gi_handle(self, gpu_index: int, gi_id: int) -> Any:
        h = self._handle(gpu_index)
        return self._call(
            f"find GPU instance {gi_id} on GPU {gpu_index}",
            self.nvml.nvmlDeviceGetGpuInstanceById,
            h,
            gi_id,
        )

    # --------------------------------------------------------------- system

    def driver_version(self) -> str:
        """The driver version (``nvidia-smi --query-gpu=driver_version``)."""
        return self._call("read the driver version", self.nvml.nvmlSystemGetDriverVersion)

    def cuda_driver_version(self) -> int | None:
        """The CUDA version the driver supports, e.g. 13000, or None if unknown."""
        try:
            return int(self.nvml.nvmlSystemGetCudaDriverVersion())
        except self.nvml.NVMLError:
            return None

    def gpu_count(self) -> int:
        """Number of physical GPUs (``nvidia-smi -L`` without the MIG lines)."""
        if self._gpu_count is None:
            self._gpu_count = int(self._call("count GPUs", self.nvml.nvmlDeviceGetCount))
        return self._gpu_count

    # ------------------------------------------------------------------ GPUs

    def mig_mode(self, gpu_index: int) -> MigMode | None:
        """Current and pending MIG mode, or None if the GPU has no MIG.

        ``nvidia-smi -i N --query-gpu=mig.mode.current,mig.mode.pending``.
        """
        h = self._handle(gpu_index)
        try:
            cur, pending = self.nvml.nvmlDeviceGetMigMode(h)
        except self.nvml.NVMLError_NotSupported:
            return None
        except self.nvml.NVMLError as exc:
            raise self._translate(f"read the MIG mode of GPU {gpu_index}", exc) from exc
        return MigMode(current=bool(cur), pending=bool(pending))

    def _memory_total_mib(self, h: Any) -> int | None:
        try:
            return int(self.nvml.nvmlDeviceGetMemoryInfo(h).total // _MIB)
        except self.nvml.NVMLError:
            # In MIG mode the parent's totals need privileges (mig-facts.md 8.4).
            return None

    def gpu(self, gpu_index: int) -> GpuInfo:
        """One GPU's identity, memory and MIG state (``nvidia-smi -q -i N``)."""
        n = self.nvml
        h = self._handle(gpu_index)
        where = f"GPU {gpu_index}"
        pci = self._call(f"read the PCI info of {where}", n.nvmlDeviceGetPciInfo, h)
        bus_id = pci.busId.decode() if isinstance(pci.busId, bytes) else str(pci.busId)
        mode = self.mig_mode(gpu_index)
        try:
            arch = catalog.ARCH_NAMES.get(int(n.nvmlDeviceGetArchitecture(h)), "unknown")
        except n.NVMLError:
            arch = "unknown"
        try:
            cc: tuple[int, int] | None = tuple(n.nvmlDeviceGetCudaComputeCapability(h))  # type: ignore[assignment]
        except n.NVMLError:
            cc = None
        return GpuInfo(
            index=gpu_index,
            name=self._call(f"read the name of {where}", n.nvmlDeviceGetName, h),
            uuid=self._call(f"read the UUID of {where}", n.nvmlDeviceGetUUID, h),
            pci_bus_id=bus_id,
            pci_device_id=int(pci.pciDeviceId),
            memory_mib=self._memory_total_mib(h),
            mig_capable=mode is not None,
            mig_mode=mode,
            mig_devices=len(self.mig_devices(gpu_index))
            if mode is not None and mode.current
            else 0,
            architecture=arch,
            cuda_compute_capability=cc,
        )

    def gpus(self) -> list[GpuInfo]:
        """Every GPU on the machine (``nvidia-smi -L``)."""
        return [self.gpu(i) for i in range(self.gpu_count())]

    # ------------------------------------------------------------- profiles

    def gpu_instance_profiles(self, gpu_index: int) -> list[GpuInstanceProfile]:
        """The GPU-instance profiles with their placements (``nvidia-smi mig -lgip`` and ``-lgipp``).

        Works with MIG disabled too (people plan before they enable): the v2
        profile query refuses then, so the v1 query is used, and the free
        counts are None because NVML only reports them with MIG on.

        Raises:
            MigNotSupportedError: when the GPU has no MIG.
        """
        n = self.nvml
        h = self._handle(gpu_index)
        mode = self.mig_mode(gpu_index)
        if mode is None:
            name = self._call(f"read the name of GPU {gpu_index}", n.nvmlDeviceGetName, h)
            raise errors.MigNotSupportedError(
                f"GPU {gpu_index} ({name}) does not support MIG",
                hint="MIG needs an A100, A30, H100, H200, B200 or RTX PRO Blackwell GPU; "
                "list GPUs with `migperf gpus`",
            )
        version = 2 if mode.current else 1
        total_mib = self._memory_total_mib(h)
        profiles = []
        for index in range(catalog.PROFILE_COUNT + 16):
            try:
                info = n.nvmlDeviceGetGpuInstanceProfileInfo(h, index, version)
            except n.NVMLError_InvalidArgument:
                break  # past the last constant this driver knows
            except n.NVMLError_NotSupported:
                continue  # a constant this GPU does not offer
            except n.NVMLError as exc:
                raise self._translate(
                    f"read GPU-instance profile {index} of GPU {gpu_index}", exc
                ) from exc
            profiles.append(self._profile(gpu_index, h, index, info, total_mib, mode.current))
        profiles.sort(key=lambda p: (-p.memory_slices, -p.compute_slices, p.profile_id))
        self._static_profiles[gpu_index] = [
            dataclasses.replace(p, instances_free=None) for p in profiles
        ]
        return profiles

    def _profiles_static(self, gpu_index: int) -> list[GpuInstanceProfile]:
        """Profiles without free counts, cached: for lookups by id."""
        if gpu_index not in self._static_profiles:
            self.gpu_instance_profiles(gpu_index)
        return self._static_profiles[gpu_index]

    def _profile(
        self, gpu_index: int, h: Any, index: int, info: Any, total_mib: int | None, mig_on: bool
    ) -> GpuInstanceProfile:
        n = self.nvml
        pid = int(info.id)
        count = ctypes.c_uint(0)
        what = f"list placements of profile {pid} on GPU {gpu_index}"
        self._call(
            what, n.nvmlDeviceGetGpuInstancePossiblePlacements, h, pid, None, ctypes.byref(count)
        )
        arr = (n.c_nvmlGpuInstancePlacement_t * max(count.value, 1))()
        self._call(
            what, n.nvmlDeviceGetGpuInstancePossiblePlacements, h, pid, arr, ctypes.byref(count)
        )
        placements = tuple(
            Placement(int(arr[i].start), int(arr[i].size)) for i in range(count.value)
        )
        free: int | None = None
        if mig_on:
            try:
                free = int(n.nvmlDeviceGetGpuInstanceRemainingCapacity(h, pid))
            except n.NVMLError:
                free = None  # needs privileges; "unknown", never a guess
        if total_mib and index in catalog.SLICES_OF_INDEX:
            name = gpu_instance_profile_name(index, int(info.memorySizeMB), total_mib * _MIB)
        else:
            raw = getattr(info, "name", b"")
            raw = raw.decode() if isinstance(raw, bytes) else str(raw)
            name = raw.removeprefix("MIG ").strip() or f"profile-{pid}"
        return GpuInstanceProfile(
            profile=name,
            profile_id=pid,
            index=index,
            compute_slices=int(info.sliceCount),
            memory_slices=placements[0].size if placements else 0,
            instances_total=int(info.instanceCount),
            instances_free=free,
            sm_count=int(info.multiprocessorCount),
            memory_mib=int(info.memorySizeMB),
            engines=Engines(
                copy=int(info.copyEngineCount),
                decoder=int(info.decoderCount),
                encoder=int(info.encoderCount),
                jpeg=int(info.jpegCount),
                ofa=int(info.ofaCount),
            ),
            placements=placements,
        )

    def compute_instance_profiles(self, gpu_index: int, gi_id: int) -> list[ComputeInstanceProfile]:
        """Compute-instance profiles a GPU instance offers (``nvidia-smi mig -lcip -gi ID``)."""
        n = self.nvml
        gih = self._gi_handle(gpu_index, gi_id)
        gi_profile = self._gi_profile_name(gpu_index, gih)
        out = []
        for index in range(n.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
            try:
                info = n.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                    gih, index, n.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
                )
            except n.NVMLError_NotSupported:
                continue
            except n.NVMLError_InvalidArgument:
                break
            except n.NVMLError as exc:
                raise self._translate(
                    f"read compute-instance profiles of GPU instance {gi_id} on GPU {gpu_index}",
                    exc,
                ) from exc
            try:
                free: int | None = int(
                    n.nvmlGpuInstanceGetComputeInstanceRemainingCapacity(gih, int(info.id))
                )
            except n.NVMLError:
                free = None
            out.append(
                ComputeInstanceProfile(
                    profile=compute_instance_profile_name(int(info.sliceCount), gi_profile),
                    profile_id=int(info.id),
                    compute_slices=int(info.sliceCount),
                    instances_total=int(info.instanceCount),
                    instances_free=free,
                    sm_count=int(info.multiprocessorCount),
                )
            )
        return out

    def _gi_profile_name(self, gpu_index: int, gih: Any) -> str:
        info = self._call("read GPU-instance info", self.nvml.nvmlGpuInstanceGetInfo, gih)
        for p in self._profiles_static(gpu_index):
            if p.profile_id == int(info.profileId):
                return p.profile
        return f"profile-{int(info.profileId)}"

    # ------------------------------------------------------------ instances

    def mig_devices(self, gpu_index: int) -> list[MigDevice]:
        """MIG devices of a GPU in NVML order (``nvidia-smi -L``). Needs no privileges."""
        n = self.nvml
        h = self._handle(gpu_index)
        parent_name = self._call(f"read the name of GPU {gpu_index}", n.nvmlDeviceGetName, h)
        try:
            count = int(n.nvmlDeviceGetMaxMigDeviceCount(h))
        except n.NVMLError:
            return []
        out = []
        for i in range(count):
            try:
                m = n.nvmlDeviceGetMigDeviceHandleByIndex(h, i)
            except (n.NVMLError_NotFound, n.NVMLError_InvalidArgument, n.NVMLError_NotSupported):
                # Indices can have holes; robust tools skip them (nomad, nvitop).
                continue
            except n.NVMLError as exc:
                raise self._translate(f"open MIG device {i} of GPU {gpu_index}", exc) from exc
            what = f"read MIG device {i} of GPU {gpu_index}"
            attrs = self._call(what, n.nvmlDeviceGetAttributes, m)
            name = self._call(what, n.nvmlDeviceGetName, m)
            mem = self._call(what, n.nvmlDeviceGetMemoryInfo, m)
            out.append(
                MigDevice(
                    gpu_index=gpu_index,
                    index=i,
                    mig_uuid=self._call(what, n.nvmlDeviceGetUUID, m),
                    name=name if name.startswith(parent_name) else f"{parent_name} {name}",
                    gi_id=int(self._call(what, n.nvmlDeviceGetGpuInstanceId, m)),
                    ci_id=int(self._call(what, n.nvmlDeviceGetComputeInstanceId, m)),
                    memory_mib=int(mem.total // _MIB),
                    sm_count=int(attrs.multiprocessorCount),
                    gpu_instance_slices=int(attrs.gpuInstanceSliceCount),
                    compute_instance_slices=int(attrs.computeInstanceSliceCount),
                )
            )
        return out

    def gpu_instances(self, gpu_index: int) -> list[GpuInstance]:
        """GPU instances with their compute instances and MIG devices.

        ``nvidia-smi mig -lgi`` and ``-lci`` together. Listing instances needs
        privileges; without them the view is rebuilt from the MIG devices,
        which any user can read, and placements are then unknown (None).
        """
        n = self.nvml
        mode = self.mig_mode(gpu_index)
        if mode is None or not mode.current:
            return []
        h = self._handle(gpu_index)
        profiles = self._profiles_static(gpu_index)
        devices = {(d.gi_id, d.ci_id): d for d in self.mig_devices(gpu_index)}
        out: list[GpuInstance] = []
        try:
            for p in profiles:
                arr = (n.c_nvmlGpuInstance_t * max(p.instances_total, 1))()
                cnt = ctypes.c_uint(p.instances_total)
                n.nvmlDeviceGetGpuInstances(h, p.profile_id, arr, ctypes.byref(cnt))
                for k in range(cnt.value):
                    info = n.nvmlGpuInstanceGetInfo(arr[k])
                    out.append(
                        GpuInstance(
                            gpu_index=gpu_index,
                            gi_id=int(info.id),
                            profile=p.profile,
                            profile_id=p.profile_id,
                            placement=Placement(
                                int(info.placement.start), int(info.placement.size)
                            ),
                            compute_instances=tuple(self._compute_instances(arr[k], p, devices)),
                        )
                    )
        except n.NVMLError_NoPermission:
            return self._instances_from_devices(gpu_index, profiles, list(devices.values()))
        except n.NVMLError as exc:
            raise self._translate(f"list GPU instances of GPU {gpu_index}", exc) from exc
        out.sort(key=lambda gi: gi.gi_id)
        return out

    def _compute_instances(
        self, gih: Any, p: GpuInstanceProfile, devices: dict[tuple[int, int], MigDevice]
    ) -> list[ComputeInstance]:
        n = self.nvml
        gi_id = int(n.nvmlGpuInstanceGetInfo(gih).id)
        out = []
        for index in range(n.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
            try:
                cinfo = n.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                    gih, index, n.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
                )
            except n.NVMLError_NotSupported:
                continue
            except n.NVMLError_InvalidArgument:
                break
            arr = (n.c_nvmlComputeInstance_t * max(int(cinfo.instanceCount), 1))()
            cnt = ctypes.c_uint(int(cinfo.instanceCount))
            n.nvmlGpuInstanceGetComputeInstances(gih, int(cinfo.id), arr, ctypes.byref(cnt))
            for k in range(cnt.value):
                ci = n.nvmlComputeInstanceGetInfo(arr[k])
                dev = devices.get((gi_id, int(ci.id)))
                out.append(
                    ComputeInstance(
                        ci_id=int(ci.id),
                        profile=compute_instance_profile_name(int(cinfo.sliceCount), p.profile),
                        profile_id=int(cinfo.id),
                        placement=Placement(int(ci.placement.start), int(ci.placement.size)),
                        mig_uuid=dev.mig_uuid if dev else "",
                        memory_mib=dev.memory_mib if dev else p.memory_mib,
                        sm_count=dev.sm_count if dev else int(cinfo.multiprocessorCount),
                    )
                )
        out.sort(key=lambda c: c.ci_id)
        return out

    @staticmethod
    def _instances_from_devices(
        gpu_index: int, profiles: list[GpuInstanceProfile], devices: list[MigDevice]
    ) -> list[GpuInstance]:
        by_gi: dict[int, list[MigDevice]] = {}
        for d in devices:
            by_gi.setdefault(d.gi_id, []).append(d)
        out = []
        for gi_id, devs in sorted(by_gi.items()):
            d0 = devs[0]
            match = next(
                (
                    p
                    for p in profiles
                    if p.compute_slices == d0.gpu_instance_slices and p.memory_mib == d0.memory_mib
                ),
                None,
            )
            gi_name = (
                match.profile
                if match
                else f"{d0.gpu_instance_slices}g.{round(d0.memory_mib / 1024)}gb"
            )
            out.append(
                GpuInstance(
                    gpu_index=gpu_index,
                    gi_id=gi_id,
                    profile=gi_name,
                    profile_id=match.profile_id if match else None,
                    placement=None,
                    compute_instances=tuple(
                        ComputeInstance(
                            ci_id=d.ci_id,
                            profile=compute_instance_profile_name(
                                d.compute_instance_slices, gi_name
                            ),
                            profile_id=catalog.CI_ID_OF_SLICES.get(d.compute_instance_slices),
                            placement=None,
                            mig_uuid=d.mig_uuid,
                            memory_mib=d.memory_mib,
                            sm_count=d.sm_count,
                        )
                        for d in sorted(devs, key=lambda d: d.ci_id)
                    ),
                )
            )
        return out

    def processes(self, gpu_index: int, mig_uuid: str | None = None) -> list[ProcessInfo]:
        """Compute processes on a GPU or on one MIG device (``nvidia-smi --query-compute-apps``)."""
        n = self.nvml
        if mig_uuid is None:
            h = self._handle(gpu_index)
        else:
            h = self._call(f"open MIG device {mig_uuid}", n.nvmlDeviceGetHandleByUUID, mig_uuid)
        procs = self._call(
            f"list processes on GPU {gpu_index}", n.nvmlDeviceGetComputeRunningProcesses, h
        )
        out = []
        for p in procs:
            mem = getattr(p, "usedGpuMemory", None)
            gi = getattr(p, "gpuInstanceId", _NA)
            ci = getattr(p, "computeInstanceId", _NA)
            out.append(
                ProcessInfo(
                    pid=int(p.pid),
                    used_memory_mib=None if mem is None else mem / _MIB,
                    gi_id=None if gi in (None, _NA) else int(gi),
                    ci_id=None if ci in (None, _NA) else int(ci),
                )
            )
        return out

    def compute_mode(self, gpu_index: int, mig_uuid: str | None = None) -> str | None:
        """The compute mode of a GPU or MIG device; None where NVML does not report one.

        One of ``DEFAULT``, ``EXCLUSIVE_THREAD``, ``PROHIBITED``,
        ``EXCLUSIVE_PROCESS`` (``nvidia-smi -i N --query-gpu=compute_mode``).
        Read-only: migperf never changes it (``nvidia-smi -c`` needs root). On a
        MIG-enabled GPU NVML answers only for MIG device handles, so the bare
        GPU reads as None there.
        """
        n = self.nvml
        if mig_uuid is None:
            h = self._handle(gpu_index)
        else:
            h = self._call(f"open MIG device {mig_uuid}", n.nvmlDeviceGetHandleByUUID, mig_uuid)
        try:
            mode = int(n.nvmlDeviceGetComputeMode(h))
        except n.NVMLError_NotSupported:
            return None
        except n.NVMLError as exc:
            where = mig_uuid or f"GPU {gpu_index}"
            raise self._translate(f"read the compute mode of {where}", exc) from exc
        names = {
            n.NVML_COMPUTEMODE_DEFAULT: "DEFAULT",
            n.NVML_COMPUTEMODE_EXCLUSIVE_THREAD: "EXCLUSIVE_THREAD",
            n.NVML_COMPUTEMODE_PROHIBITED: "PROHIBITED",
            n.NVML_COMPUTEMODE_EXCLUSIVE_PROCESS: "EXCLUSIVE_PROCESS",
        }
        return names.get(mode, f"UNKNOWN({mode})")

    # ------------------------------------------------------------ telemetry

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group the NVML reads this thread makes inside the block (one telemetry reading).

        On the simulator every NVML call locks the machine's state file and
        checks it for changes; inside the block that happens once for all the
        calls, which is most of a simulated reading's cost. Other threads' and
        processes' calls wait for the block to end, so keep it to one reading.
        A real driver needs nothing: there the block does nothing.
        """
        batch = getattr(getattr(self.nvml, "sim_lib", None), "batch", None)
        if not self.simulated or batch is None:
            yield
            return
        with batch():
            yield

    def _board_handle(self, gpu_index: int) -> Any:
        handle = self._board_handles.get(gpu_index)
        if handle is None:
            handle = self._board_handles[gpu_index] = self._handle(gpu_index)
        return handle

    def _telemetry_reason(
        self, gpu_index: int, metric: str, fn_name: str, exc: Any
    ) -> tuple[bool, str]:
        """``(permanent, reason)`` for a telemetry read that failed.

        Permanent means "NVML does not give this here" (not supported, not in
        this driver, not for this user): asking again would not help.
        """
        n = self.nvml
        if isinstance(exc, n.NVMLError_NotSupported):
            why = f"{fn_name}: Not Supported"
            if metric in ("gpu_util_pct", "mem_util_pct") and self._mig_on(gpu_index):
                why += (
                    " (NVML does not report utilization on MIG-enabled GPUs, nvidia-smi shows"
                    " N/A; per-instance activity comes from NVML GPM on Hopper and newer, or"
                    " from DCGM: --dcgm-url)"
                )
            return True, why
        if isinstance(exc, n.NVMLError_FunctionNotFound):
            return True, f"{fn_name} is not in this driver's NVML library (Function Not Found)"
        if isinstance(exc, n.NVMLError_NoPermission):
            why = f"{fn_name}: Insufficient Permissions"
            if metric == "memory_used_mib" and self._mig_on(gpu_index):
                why += (
                    " (in MIG mode NVML reports whole-GPU memory to privileged callers only;"
                    " per-slice memory is read from each MIG device)"
                )
            return True, why
        return False, f"{fn_name}: {exc}"

    def _mig_on(self, gpu_index: int) -> bool:
        try:
            mode = self.mig_mode(gpu_index)
        except errors.MigperfError:
            return False
        return bool(mode and mode.current)

    def sample_gpu(self, gpu_index: int, skip: Collection[str] = ()) -> GpuSample:
        """Read a physical GPU's board-level telemetry once.

        Never raises for a metric NVML refuses: that metric is None, with the
        reason in ``unsupported`` (not supported here) or ``errors`` (this
        reading failed). ``nvidia-smi -i N --query-gpu=power.draw,
        clocks.sm,clocks.mem,temperature.gpu,utilization.gpu,memory.used,
        clocks_event_reasons.active --format=csv`` shows the same.

        Args:
            gpu_index: The GPU.
            skip: Metric names (:data:`~migperf.nvml.types.GPU_METRICS`) not to
                read, e.g. those already known to be unsupported.

        Raises:
            GpuNotFoundError: when the GPU does not exist.
        """
        n = self.nvml
        h = self._board_handle(gpu_index)
        unsupported: dict[str, str] = {}
        failed: dict[str, str] = {}
        skipped = skip if isinstance(skip, frozenset) else frozenset(skip)

        def read(metrics: tuple[str, ...], *calls: tuple[str, tuple[Any, ...]]) -> Any:
            if skipped.issuperset(metrics):
                return None
            for k, (fn_name, args) in enumerate(calls):
                try:
                    fn = getattr(n, fn_name, None)
                    if fn is None:
                        raise n.NVMLError(n.NVML_ERROR_FUNCTION_NOT_FOUND)
                    return fn(h, *args)
                except n.NVMLError as exc:
                    if k + 1 < len(calls) and isinstance(exc, n.NVMLError_FunctionNotFound):
                        continue  # an older or newer name for the same reading
                    permanent, why = self._telemetry_reason(gpu_index, metrics[0], fn_name, exc)
                    for m in metrics:
                        (unsupported if permanent else failed)[m] = why
                    return None
            return None

        power = read(("power_w",), ("nvmlDeviceGetPowerUsage", ()))
        instant = self._power_instant_w(h, gpu_index, skip, unsupported, failed)
        energy = read(("energy_mj",), ("nvmlDeviceGetTotalEnergyConsumption", ()))
        sm = read(("sm_clock_mhz",), ("nvmlDeviceGetClockInfo", (n.NVML_CLOCK_SM,)))
        mem_clock = read(("mem_clock_mhz",), ("nvmlDeviceGetClockInfo", (n.NVML_CLOCK_MEM,)))
        temp = read(
            ("temperature_c",),
            ("nvmlDeviceGetTemperature", (n.NVML_TEMPERATURE_GPU,)),
            ("nvmlDeviceGetTemperatureV", (n.NVML_TEMPERATURE_GPU,)),
        )
        util = read(("gpu_util_pct", "mem_util_pct"), ("nvmlDeviceGetUtilizationRates", ()))
        memory = read(("memory_used_mib",), ("nvmlDeviceGetMemoryInfo", ()))
        reasons = read(
            ("throttle_reasons",),
            ("nvmlDeviceGetCurrentClocksEventReasons", ()),
            ("nvmlDeviceGetCurrentClocksThrottleReasons", ()),
        )
        return GpuSample(
            gpu_index=gpu_index,
            power_w=None if power is None else int(power) / 1000.0,
            power_instant_w=instant,
            energy_mj=None if energy is None else int(energy),
            sm_clock_mhz=None if sm is None else int(sm),
            mem_clock_mhz=None if mem_clock is None else int(mem_clock),
            temperature_c=None if temp is None else int(temp),
            gpu_util_pct=None if util is None else int(util.gpu),
            mem_util_pct=None if util is None else int(util.memory),
            memory_used_mib=None if memory is None else int(memory.used) / _MIB,
            memory_total_mib=None if memory is None else int(memory.total) / _MIB,
            throttle_reasons=None if reasons is None else int(reasons),
            unsupported=unsupported,
            errors=failed,
        )

    def _power_instant_w(
        self,
        h: Any,
        gpu_index: int,
        skip: Collection[str],
        unsupported: dict[str, str],
        failed: dict[str, str],
    ) -> float | None:
        # On Ampere (but GA100) and newer nvmlDeviceGetPowerUsage is a 1 s
        # average; the instantaneous reading is a field value.
        n = self.nvml
        if "power_instant_w" in skip:
            return None
        fn_name = "nvmlDeviceGetFieldValues"
        try:
            field = n.nvmlDeviceGetFieldValues(h, [n.NVML_FI_DEV_POWER_INSTANT])[0]
            if int(field.nvmlReturn) != n.NVML_SUCCESS:
                raise n.NVMLError(int(field.nvmlReturn))
        except n.NVMLError as exc:
            permanent, why = self._telemetry_reason(
                gpu_index, "power_instant_w", f"{fn_name}(NVML_FI_DEV_POWER_INSTANT)", exc
            )
            (unsupported if permanent else failed)["power_instant_w"] = why
            return None
        kind = int(field.valueType)
        member = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal"}
        value = getattr(field.value, member.get(kind, "uiVal"))
        return float(value) / 1000.0

    def mig_memory(
        self, gpu_index: int, devices: Sequence[MigDevice] | None = None
    ) -> list[MigMemorySample]:
        """Memory used and total of each MIG device (its GPU instance's framebuffer).

        ``nvidia-smi`` shows it in the "MIG devices" table. A device whose
        reading fails gets a sample with ``error`` set instead of raising.

        Args:
            gpu_index: The physical GPU.
            devices: The MIG devices to read, as :meth:`mig_devices` listed
                them (pass them to avoid listing again on every reading);
                None lists them now.
        """
        n = self.nvml
        if devices is None:
            devices = self.mig_devices(gpu_index)
        out = []
        for dev in devices:
            used = total = None
            error = None
            for attempt in range(2):
                try:
                    h = self._mig_handles.get(dev.mig_uuid)
                    if h is None:
                        h = n.nvmlDeviceGetHandleByUUID(dev.mig_uuid)
                        self._mig_handles[dev.mig_uuid] = h
                    mem = n.nvmlDeviceGetMemoryInfo(h)
                    used, total, error = int(mem.used) / _MIB, int(mem.total) / _MIB, None
                    break
                except n.NVMLError as exc:
                    # A stale handle (the instance was recreated) is looked up again once.
                    self._mig_handles.pop(dev.mig_uuid, None)
                    error = f"nvmlDeviceGetMemoryInfo({dev.mig_uuid}): {exc}"
                    stale = isinstance(exc, (n.NVMLError_InvalidArgument, n.NVMLError_NotFound))
                    if not stale or attempt:
                        break
            out.append(
                MigMemorySample(
                    gpu_index=gpu_index,
                    mig_uuid=dev.mig_uuid,
                    gi_id=dev.gi_id,
                    ci_id=dev.ci_id,
                    memory_used_mib=used,
                    memory_total_mib=total,
                    error=error,
                )
            )
        return out

    def gpm_support(self, gpu_index: int) -> str | None:
        """Why NVML GPM (per-instance activity) is not available on a GPU; None when it is.

        GPM needs a Hopper or newer GPU and a driver that has it; on Ampere
        (A100, A30) per-instance activity needs DCGM profiling instead.
        """
        n = self.nvml
        h = self._board_handle(gpu_index)
        fn_name = "nvmlGpmQueryDeviceSupport"
        try:
            fn = getattr(n, fn_name, None)
            if fn is None:
                raise n.NVMLError(n.NVML_ERROR_FUNCTION_NOT_FOUND)
            support = fn(h)
        except n.NVMLError as exc:
            return self._telemetry_reason(gpu_index, "gpm", fn_name, exc)[1]
        if not int(support.isSupportedDevice):
            try:
                arch = catalog.ARCH_NAMES.get(int(n.nvmlDeviceGetArchitecture(h)), "unknown")
            except n.NVMLError:
                arch = "unknown"
            return (
                f"GPU {gpu_index} ({arch}) has no NVML GPM (Hopper and newer only); per-instance "
                "activity on it needs DCGM profiling (--dcgm-url)"
            )
        return None

    def gpm_activity(self, gpu_index: int, gi_id: int | None = None) -> GpmActivity:
        """Activity of a GPU instance (``gi_id``) or the whole GPU since the previous call.

        Takes an NVML GPM sample (``nvmlGpmMigSampleGet`` / ``nvmlGpmSampleGet``)
        and computes the metrics between it and the previous one for the
        same entity; the first call only takes the first sample. NVML wants
        samples more than 100 ms apart. ``dcgmi dmon -e 1001,1002,1003,1004,1005``
        shows the DCGM equivalents. Never raises for an NVML refusal.
        """
        n = self.nvml
        h = self._board_handle(gpu_index)
        key = (gpu_index, gi_id)
        metric_ids = (
            ("graphics_util_pct", "NVML_GPM_METRIC_GRAPHICS_UTIL"),
            ("sm_util_pct", "NVML_GPM_METRIC_SM_UTIL"),
            ("sm_occupancy_pct", "NVML_GPM_METRIC_SM_OCCUPANCY"),
            ("tensor_util_pct", "NVML_GPM_METRIC_ANY_TENSOR_UTIL"),
            ("dram_bw_util_pct", "NVML_GPM_METRIC_DRAM_BW_UTIL"),
        )
        names = [m for m, _ in metric_ids]

        def refused(fn_name: str, exc: Any) -> GpmActivity:
            permanent, why = self._telemetry_reason(gpu_index, "gpm", fn_name, exc)
            table = dict.fromkeys(names, why)
            if permanent:
                return GpmActivity(gpu_index=gpu_index, gi_id=gi_id, unsupported=table)
            return GpmActivity(gpu_index=gpu_index, gi_id=gi_id, errors=table)

        try:
            sample = self._gpm_spare.pop() if self._gpm_spare else n.nvmlGpmSampleAlloc()
        except n.NVMLError as exc:
            return refused("nvmlGpmSampleAlloc", exc)
        fn_name = "nvmlGpmSampleGet" if gi_id is None else "nvmlGpmMigSampleGet"
        try:
            if gi_id is None:
                n.nvmlGpmSampleGet(h, sample)
            else:
                n.nvmlGpmMigSampleGet(h, gi_id, sample)
        except n.NVMLError as exc:
            self._gpm_spare.append(sample)
            return refused(fn_name, exc)
        now = time.monotonic()
        previous = self._gpm_previous.get(key)
        self._gpm_previous[key] = (sample, now)
        if previous is None:
            return GpmActivity(gpu_index=gpu_index, gi_id=gi_id)
        old, then = previous
        self._gpm_spare.append(old)
        request = n.c_nvmlGpmMetricsGet_t()
        request.version = n.NVML_GPM_METRICS_GET_VERSION
        request.numMetrics = len(metric_ids)
        request.sample1 = old
        request.sample2 = sample
        for k, (_, const) in enumerate(metric_ids):
            request.metrics[k].metricId = getattr(n, const)
        try:
            n.nvmlGpmMetricsGet(request)
        except n.NVMLError as exc:
            return refused("nvmlGpmMetricsGet", exc)
        values: dict[str, float | None] = {}
        unsupported: dict[str, str] = {}
        failed: dict[str, str] = {}
        for k, (name, const) in enumerate(metric_ids):
            m = request.metrics[k]
            code = int(m.nvmlReturn)
            if code == n.NVML_SUCCESS:
                values[name] = float(m.value)
                continue
            values[name] = None
            permanent, why = self._telemetry_reason(
                gpu_index, name, f"nvmlGpmMetricsGet({const})", n.NVMLError(code)
            )
            (unsupported if permanent else failed)[name] = why
        return GpmActivity(
            gpu_index=gpu_index,
            gi_id=gi_id,
            interval_s=now - then,
            unsupported=unsupported,
            errors=failed,
            **values,
        )

    def _free_gpm_samples(self) -> None:
        samples = [s for s, _ in self._gpm_previous.values()] + self._gpm_spare
        self._gpm_previous.clear()
        self._gpm_spare.clear()
        for s in samples:
            with contextlib.suppress(self.nvml.NVMLError):
                self.nvml.nvmlGpmSampleFree(s)

    # ------------------------------------------------- simulated workloads

    def attach_simulated_process(
        self, gpu_index: int, pid: int, mig_uuid: str | None = None, used_mib: float = 1024.0
    ) -> None:
        """Register ``pid`` as a compute process on a simulated GPU or MIG device.

        A benchmark on a simulated slot runs on the CPU; registering its
        worker makes the simulated GPU behave as if the worker used it
        (power and the energy counter rise, its memory is in use) until the
        process exits or :meth:`detach_simulated_process` is called.

        Raises:
            UsageError: on real hardware.
            GpuNotFoundError: when the GPU or MIG device does not exist.
        """
        from migperf.nvml.sim import control

        spec, root = self._sim_machine("register a simulated process")
        control.attach_process(
            spec, gpu_index, mig_uuid=mig_uuid, pid=pid, used_mib=used_mib, root=root
        )

    def detach_simulated_process(self, gpu_index: int, pid: int) -> None:
        """Unregister a process from a simulated GPU, as if it had exited."""
        from migperf.nvml.sim import control

        spec, root = self._sim_machine("unregister a simulated process")
        control.detach_process(spec, gpu_index, pid, root=root)

    def _sim_machine(self, what: str) -> tuple[Any, Any]:
        spec = getattr(self.nvml, "MACHINE", None)
        lib = getattr(self.nvml, "sim_lib", None)
        if not self.simulated or spec is None or lib is None:
            raise errors.UsageError(
                f"cannot {what}: this is a real GPU", hint="only simulated GPUs take fake processes"
            )
        # The state file is <root>/sim/<machine>.json.
        return spec, lib.machine.path.parent.parent

    # --------------------------------------------------------- changes (root)

    def set_mig_mode(self, gpu_index: int, enabled: bool) -> tuple[MigMode, int]:
        """Request MIG mode on or off (``nvidia-smi -i N -mig 1|0``).

        Returns:
            The mode afterwards and NVML's activation status (0 when the change
            took effect; e.g. ``NVML_ERROR_IN_USE`` when it stays pending until
            the GPU is reset). pynvml does not raise on a failed activation.

        Raises:
            ReadOnlyError, MigNotSupportedError, NvmlPermissionError, GpuInUseError.
        """
        what = f"{'enable' if enabled else 'disable'} MIG mode on GPU {gpu_index}"
        self.require_writable(what)
        h = self._handle(gpu_index)
        status = self._call(what, self.nvml.nvmlDeviceSetMigMode, h, 1 if enabled else 0)
        self._static_profiles.pop(gpu_index, None)
        mode = self.mig_mode(gpu_index)
        assert mode is not None
        return mode, int(status)

    def create_gpu_instance(
        self, gpu_index: int, profile_id: int, start: int | None = None, size: int | None = None
    ) -> int:
        """Create a GPU instance, at an explicit placement when ``start`` is given.

        ``nvidia-smi mig -i N -cgi ID`` (placement: ``-cgi ID:START``).

        Returns:
            The new GPU instance's id.
        """
        where = f" at {start}:{size}" if start is not None else ""
        what = f"create a GPU instance of profile {profile_id}{where} on GPU {gpu_index}"
        self.require_writable(what)
        n = self.nvml
        h = self._handle(gpu_index)
        if start is None:
            gih = self._call(what, n.nvmlDeviceCreateGpuInstance, h, profile_id)
        else:
            if size is None:
                info = self._call(what, n.nvmlDeviceGetGpuInstanceProfileInfoById, h, profile_id)
                placements = self._placements(h, int(info.id))
                size = placements[0].size if placements else 0
            placement = n.c_nvmlGpuInstancePlacement_t(start, size)
            gih = self._call(
                what,
                n.nvmlDeviceCreateGpuInstanceWithPlacement,
                h,
                profile_id,
                ctypes.byref(placement),
            )
        return int(self._call(what, n.nvmlGpuInstanceGetInfo, gih).id)

    def _placements(self, h: Any, profile_id: int) -> list[Placement]:
        n = self.nvml
        count = ctypes.c_uint(0)
        n.nvmlDeviceGetGpuInstancePossiblePlacements(h, profile_id, None, ctypes.byref(count))
        arr = (n.c_nvmlGpuInstancePlacement_t * max(count.value, 1))()
        n.nvmlDeviceGetGpuInstancePossiblePlacements(h, profile_id, arr, ctypes.byref(count))
        return [Placement(int(arr[i].start), int(arr[i].size)) for i in range(count.value)]

    def create_compute_instance(
        self, gpu_index: int, gi_id: int, ci_profile_id: int, start: int | None = None
    ) -> int:
        """Create a compute instance in a GPU instance (``nvidia-smi mig -i N -gi G -cci ID``).

        Returns:
            The new compute instance's id.
        """
        what = f"create a compute instance of profile {ci_profile_id} in GPU instance {gi_id} on GPU {gpu_index}"
        self.require_writable(what)
        n = self.nvml
        gih = self._gi_handle(gpu_index, gi_id)
        if start is None:
            cih = self._call(what, n.nvmlGpuInstanceCreateComputeInstance, gih, ci_profile_id)
        else:
            info = self._call(
                what,
                n.nvmlGpuInstanceGetComputeInstanceProfileInfo,
                gih,
                ci_profile_id,
                n.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED,
            )
            placement = n.c_nvmlComputeInstancePlacement_t(start, int(info.sliceCount))
            cih = self._call(
                what,
                n.nvmlGpuInstanceCreateComputeInstanceWithPlacement,
                gih,
                ci_profile_id,
                ctypes.byref(placement),
            )
        return int(self._call(what, n.nvmlComputeInstanceGetInfo, cih).id)

    def destroy_compute_instance(self, gpu_index: int, gi_id: int, ci_id: int) -> None:
        """Destroy a compute instance (``nvidia-smi mig -i N -gi G -ci C -dci``)."""
        what = f"destroy compute instance {ci_id} of GPU instance {gi_id} on GPU {gpu_index}"
        self.require_writable(what)
        n = self.nvml
        gih = self._gi_handle(gpu_index, gi_id)
        cih = self._call(what, n.nvmlGpuInstanceGetComputeInstanceById, gih, ci_id)
        self._call(what, n.nvmlComputeInstanceDestroy, cih)

    def destroy_gpu_instance(self, gpu_index: int, gi_id: int) -> None:
        """Destroy a GPU instance that has no compute instances (``nvidia-smi mig -i N -gi G -dgi``)."""
        what = f"destroy GPU instance {gi_id} on GPU {gpu_index}"
        self.require_writable(what)
        gih = self._gi_handle(gpu_index, gi_id)
        self._call(what, self.nvml.nvmlGpuInstanceDestroy, gih)
