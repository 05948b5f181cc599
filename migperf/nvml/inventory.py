"""What is on the machine: GPUs, MIG profiles, instances, MIG devices, processes.

:class:`NvmlInventory` adds the read-only queries to the NVML session
(:class:`~migperf.nvml.session.NvmlSession`) and speaks migperf's types
(:mod:`migperf.nvml.types`). Reads work for any user: where NVML wants
privileges (listing GPU instances, placements, free capacity, the whole GPU's
memory in MIG mode), the answer is rebuilt from what any user may read, or
marked unknown (None), never guessed; :meth:`NvmlInventory.unavailable` says
what could not be read and why, for commands to tell the user.
"""

from __future__ import annotations

import ctypes
import dataclasses
import types
from typing import Any

from migperf import errors
from migperf.nvml import catalog
from migperf.nvml.naming import compute_instance_profile_name, gpu_instance_profile_name
from migperf.nvml.session import NvmlSession
from migperf.nvml.types import (
    ComputeInstance,
    ComputeInstanceProfile,
    Engines,
    GpuInfo,
    GpuInstance,
    GpuInstanceProfile,
    MigDevice,
    MigMode,
    Placement,
    ProcessInfo,
)

_MIB = 1024 * 1024
_NA = 0xFFFFFFFF


class NvmlInventory(NvmlSession):
    """The read-only view of GPUs, MIG profiles and instances (``nvidia-smi -q``, ``nvidia-smi mig -l*``).

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
        super().__init__(
            module, simulated=simulated, read_only=read_only, fallback_reason=fallback_reason
        )
        # Each GPU's profiles and placements cannot change while NVML is open,
        # until its MIG mode changes.
        self._static_profiles: dict[int, list[GpuInstanceProfile]] = {}
        # GPU index -> {what: why} for what the latest reads could not get.
        self._unreadable: dict[int, dict[str, str]] = {}

    # ---------------------------------------------------------- what is missing

    def unavailable(self, gpu_index: int) -> dict[str, str]:
        """What the reads of a GPU so far could not get, and why (empty when nothing is missing).

        Keys: ``memory_mib`` (:meth:`gpu`), ``placements`` and
        ``instances_free`` (:meth:`gpu_instance_profiles`), ``gpu_instances``
        (:meth:`gpu_instances`: the view was rebuilt from MIG devices). Values
        name the NVML call and its error, e.g. ``Insufficient Permissions`` for
        a user without root: commands print them as notes, so a missing value
        is never silent.
        """
        return dict(self._unreadable.get(gpu_index, {}))

    def _mark(self, gpu_index: int, what: str, why: str | None) -> None:
        """Record (``why``) or clear (None) that ``what`` could not be read."""
        missing = self._unreadable.setdefault(gpu_index, {})
        if why is None:
            missing.pop(what, None)
        else:
            missing[what] = why

    def _refusal(self, fn_name: str, exc: Any) -> str:
        """``fn_name: error``, with what to do when it is a permission refusal."""
        why = f"{fn_name}: {exc}"
        if isinstance(exc, self.nvml.NVMLError_NoPermission):
            why += " (needs root or the MIG config capability, like `sudo nvidia-smi mig -lgi`)"
        return why

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

    def _memory_total_mib(self, h: Any, gpu_index: int) -> int | None:
        try:
            total = int(self.nvml.nvmlDeviceGetMemoryInfo(h).total // _MIB)
        except self.nvml.NVMLError as exc:
            # In MIG mode the parent's totals need privileges (docs/reference/mig-facts.md 8.4).
            why = f"nvmlDeviceGetMemoryInfo: {exc}"
            if isinstance(exc, self.nvml.NVMLError_NoPermission):
                why += (
                    " (in MIG mode NVML reports the whole GPU's memory to privileged callers"
                    " only; each MIG device's memory is readable: `migperf mig show`)"
                )
            self._mark(gpu_index, "memory_mib", why)
            return None
        self._mark(gpu_index, "memory_mib", None)
        return total

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
            memory_mib=self._memory_total_mib(h, gpu_index),
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
        total_mib = self._memory_total_mib(h, gpu_index)
        self._mark(gpu_index, "placements", None)
        self._mark(gpu_index, "instances_free", None)
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
        placements = self._profile_placements(gpu_index, h, pid)
        free: int | None = None
        if mig_on:
            try:
                free = int(n.nvmlDeviceGetGpuInstanceRemainingCapacity(h, pid))
            except n.NVMLError as exc:
                # Needs privileges: "unknown", never a guess.
                why = self._refusal("nvmlDeviceGetGpuInstanceRemainingCapacity", exc)
                self._mark(gpu_index, "instances_free", why)
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

    def _profile_placements(self, gpu_index: int, h: Any, pid: int) -> tuple[Placement, ...]:
        """A profile's placements (``-lgipp``); () when NVML refuses them to this user.

        Raises:
            MigperfError: NVML fails otherwise.
        """
        n = self.nvml
        count = ctypes.c_uint(0)
        what = f"list placements of profile {pid} on GPU {gpu_index}"
        fn = n.nvmlDeviceGetGpuInstancePossiblePlacements
        try:
            fn(h, pid, None, ctypes.byref(count))
            arr = (n.c_nvmlGpuInstancePlacement_t * max(count.value, 1))()
            fn(h, pid, arr, ctypes.byref(count))
        except n.NVMLError_NoPermission as exc:
            # "Requires privileged user" (nvml.h): unknown, and said so.
            why = self._refusal("nvmlDeviceGetGpuInstancePossiblePlacements", exc)
            self._mark(gpu_index, "placements", why)
            return ()
        except n.NVMLError as exc:
            raise self._translate(what, exc) from exc
        return tuple(Placement(int(arr[i].start), int(arr[i].size)) for i in range(count.value))

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
                    engines=Engines(
                        copy=int(attrs.sharedCopyEngineCount),
                        decoder=int(attrs.sharedDecoderCount),
                        encoder=int(attrs.sharedEncoderCount),
                        jpeg=int(attrs.sharedJpegCount),
                        ofa=int(attrs.sharedOfaCount),
                    ),
                )
            )
        return out

    def gpu_instances(self, gpu_index: int) -> list[GpuInstance]:
        """GPU instances with their compute instances and MIG devices.

        ``nvidia-smi mig -lgi`` and ``-lci`` together. Listing instances needs
        privileges; without them the view is rebuilt from the MIG devices,
        which any user can read: placements and compute-instance profile ids
        are then unknown (None), a GPU instance without a compute instance
        cannot be seen, and :meth:`unavailable` says so (``gpu_instances``).
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
        except n.NVMLError_NoPermission as exc:
            why = self._refusal("nvmlDeviceGetGpuInstances", exc) + (
                "; shown from the MIG devices any user may read: placements and"
                " compute-instance profile ids unknown, GPU instances without a compute"
                " instance not visible"
            )
            self._mark(gpu_index, "gpu_instances", why)
            return self._instances_from_devices(gpu_index, profiles, list(devices.values()))
        except n.NVMLError as exc:
            raise self._translate(f"list GPU instances of GPU {gpu_index}", exc) from exc
        self._mark(gpu_index, "gpu_instances", None)
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
            # Slices and memory leave 1g and 1g+me alike; their engines tell them
            # apart. Two profiles still alike: say neither rather than guess.
            matches = [
                p
                for p in profiles
                if p.compute_slices == d0.gpu_instance_slices
                and p.memory_mib == d0.memory_mib
                and (d0.engines is None or p.engines == d0.engines)
            ]
            match = matches[0] if len(matches) == 1 else None
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
                            # Not CI_ID_OF_SLICES: a REV1 or NVL variant
                            # has the size (and name) of a plain profile.
                            profile_id=None,
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
