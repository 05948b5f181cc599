"""A stand-in for ``libnvidia-ml.so``: the C functions, with C semantics.

pynvml's wrapper functions call ``nvmlLib.<symbol>(args...)`` with ctypes
arguments (``byref`` out-parameters, caller-allocated arrays, opaque handle
pointers) and turn the returned ``nvmlReturn_t`` into Python values or
``NVMLError`` subclasses. :class:`SimNvmlLib` implements those symbols over a
:class:`~migperf.nvml.sim.state.MachineState`, so pynvml's own Python code runs
unchanged against the simulation: same return types, same quirks, same
exceptions. A symbol that is not implemented raises ``AttributeError``, which
pynvml reports as ``NVMLError_FunctionNotFound``, as a real older driver would.

This module holds the device, MIG-mode and instance functions; the process
lists (:mod:`~migperf.nvml.sim.processes`), telemetry
(:mod:`~migperf.nvml.sim.telemetry`) and the board's static facts and modes
(:mod:`~migperf.nvml.sim.board`) are mixed in, all on
:class:`~migperf.nvml.sim.core.SimLibCore`.

Behaviour that docs/reference/mig-facts.md marks uncertain is chosen as documented here and
marked ``[U]``.
"""

from __future__ import annotations

import ctypes
import re
import time
from typing import Any

import pynvml

from migperf.nvml import catalog
from migperf.nvml.catalog import (
    CI_SLICES_OF_ID,
    SIM_CUDA_DRIVER_VERSION,
    SIM_DRIVER_VERSION,
    SIM_NVML_VERSION,
    ProfileFact,
)
from migperf.nvml.ci_profiles import CiProfileFact, ci_profile
from migperf.nvml.naming import compute_instance_profile_name
from migperf.nvml.sim import placement, workload
from migperf.nvml.sim.board import BoardQueries
from migperf.nvml.sim.core import (
    E_IN_USE,
    E_INSUFFICIENT_RESOURCES,
    E_INSUFFICIENT_SIZE,
    E_INVALID,
    E_NOT_FOUND,
    E_NOT_SUPPORTED,
    E_UNINIT,
    E_VERSION_MISMATCH,
    MIB,
    SUCCESS,
    fault_name,
)
from migperf.nvml.sim.core import Fail as _Fail
from migperf.nvml.sim.core import nvml_call as _nvml
from migperf.nvml.sim.core import out as _out
from migperf.nvml.sim.core import text as _text
from migperf.nvml.sim.core import val as _val
from migperf.nvml.sim.processes import ProcessQueries
from migperf.nvml.sim.state import mig_uuid
from migperf.nvml.sim.telemetry import TelemetryQueries

__all__ = ["SimNvmlLib", "fault_name"]

# A MIG device UUID in the pre-R470 form: MIG-GPU-<uuid>/<GI id>/<CI id>.
_OLD_MIG_UUID = re.compile(r"^MIG-(GPU-[0-9a-fA-F-]{36})/(\d+)/(\d+)$")


class SimNvmlLib(ProcessQueries, TelemetryQueries, BoardQueries):
    """The simulated NVML shared library for one machine."""

    # ------------------------------------------------------ placement physics

    def _can_place(
        self,
        gpu: dict[str, Any],
        p: ProfileFact,
        start: int,
        extra: list[tuple[ProfileFact, int]] | None = None,
    ) -> int:
        """SUCCESS or the error creating ``p`` at ``start`` would get (:func:`placement.can_place`).

        ``extra`` are instances to count as placed too (a capacity probe).
        """
        placed = [
            (self._profile_by_id(gpu, gi["profile_id"]), gi["start"]) for gi in gpu["gpu_instances"]
        ]
        return placement.can_place(self._model(gpu), placed + (extra or []), p, start)

    def _next_serial(self, st: dict[str, Any]) -> int:
        st["serial"] += 1
        return int(st["serial"])

    def _create_gi(
        self, st: dict[str, Any], gpu: dict[str, Any], p: ProfileFact, start: int, out: Any
    ) -> None:
        model = self._model(gpu)
        uid = self._next_serial(st)
        gi = {
            "gi_id": placement.new_gi_id(gpu, model, start, p.memory_slices),
            "uid": uid,
            "profile_id": p.profile_id,
            "start": start,
            "size": p.memory_slices,
            "compute_instances": [],
        }
        gpu["gpu_instances"].append(gi)
        self._set_handle(out, ("gi", gpu["index"], uid))

    # ------------------------------------------------------- init / system

    def nvmlInitWithFlags(self, flags: Any) -> int:
        with self.machine.transaction():
            pass
        self._init_count += 1
        return SUCCESS

    def nvmlInit_v2(self) -> int:
        return self.nvmlInitWithFlags(0)

    def nvmlShutdown(self) -> int:
        if self._init_count <= 0:
            return E_UNINIT
        self._init_count -= 1
        return SUCCESS

    def nvmlErrorString(self, code: Any) -> bytes:
        strings = {
            E_IN_USE: b"In use by another client",
            E_INSUFFICIENT_RESOURCES: b"Insufficient Resources",
            E_VERSION_MISMATCH: b"Argument version mismatch",
        }
        return strings.get(_val(code), b"Unknown Error")

    @_nvml
    def nvmlSystemGetDriverVersion(self, st: dict[str, Any], buf: Any, size: Any) -> None:
        self._write_str(buf, size, SIM_DRIVER_VERSION)

    @_nvml
    def nvmlSystemGetNVMLVersion(self, st: dict[str, Any], buf: Any, size: Any) -> None:
        self._write_str(buf, size, SIM_NVML_VERSION)

    @_nvml
    def nvmlSystemGetCudaDriverVersion(self, st: dict[str, Any], ref: Any) -> None:
        _out(ref).value = SIM_CUDA_DRIVER_VERSION

    @_nvml
    def nvmlSystemGetCudaDriverVersion_v2(self, st: dict[str, Any], ref: Any) -> None:
        _out(ref).value = SIM_CUDA_DRIVER_VERSION

    @_nvml
    def nvmlDeviceGetCount_v2(self, st: dict[str, Any], ref: Any) -> None:
        _out(ref).value = len(st["gpus"])

    @_nvml
    def nvmlDeviceGetHandleByIndex_v2(self, st: dict[str, Any], index: Any, ref: Any) -> None:
        i = _val(index)
        self._gpu(st, i)
        self._set_handle(ref, ("gpu", i))

    @_nvml
    def nvmlDeviceGetHandleByUUID(self, st: dict[str, Any], uuid: Any, ref: Any) -> None:
        text = _text(uuid)
        old = _OLD_MIG_UUID.match(text)
        if old is not None:
            # Drivers before R470 named MIG devices MIG-<GPU UUID>/<GI id>/<CI id>,
            # and NVML still accepts that form (docs/reference/mig-facts.md 10).
            self._set_handle(ref, self._old_mig_key(st, old[1], int(old[2]), int(old[3])))
            return
        for gpu in st["gpus"]:
            if gpu["uuid"] == text:
                self._set_handle(ref, ("gpu", gpu["index"]))
                return
            for gi in gpu["gpu_instances"]:
                for ci in gi["compute_instances"]:
                    if ci["uuid"] == text:
                        self._set_handle(ref, ("mig", gpu["index"], ci["uid"]))
                        return
        raise _Fail(E_NOT_FOUND)

    @staticmethod
    def _old_mig_key(st: dict[str, Any], gpu_uuid: str, gi_id: int, ci_id: int) -> tuple[Any, ...]:
        """The handle key of the MIG device ``MIG-<gpu_uuid>/<gi_id>/<ci_id>``."""
        for gpu in st["gpus"]:
            if gpu["uuid"].lower() != gpu_uuid.lower():
                continue
            for gi in gpu["gpu_instances"]:
                for ci in gi["compute_instances"]:
                    if gi["gi_id"] == gi_id and ci["ci_id"] == ci_id:
                        return ("mig", gpu["index"], ci["uid"])
        raise _Fail(E_NOT_FOUND)

    @_nvml
    def nvmlDeviceGetHandleByPciBusId_v2(self, st: dict[str, Any], bus_id: Any, ref: Any) -> None:
        text = _text(bus_id).upper()
        for gpu in st["gpus"]:
            if gpu["pci_bus_id"].upper().endswith(text[-12:]):
                self._set_handle(ref, ("gpu", gpu["index"]))
                return
        raise _Fail(E_NOT_FOUND)

    # -------------------------------------------------------- device identity

    def _ci_name(self, gpu: dict[str, Any], gi: dict[str, Any], ci: dict[str, Any]) -> str:
        p = self._profile_by_id(gpu, gi["profile_id"])
        return compute_instance_profile_name(CI_SLICES_OF_ID[ci["profile_id"]], p.name)

    @_nvml
    def nvmlDeviceGetName(self, st: dict[str, Any], handle: Any, buf: Any, size: Any) -> None:
        gpu, gi, ci = self._device(st, handle)
        name = self._model(gpu).name
        if gi is not None and ci is not None:
            # "<parent> MIG <profile>" as CUDA shows it [V for CUDA, U for NVML].
            name = f"{name} MIG {self._ci_name(gpu, gi, ci)}"
        self._write_str(buf, size, name)

    @_nvml
    def nvmlDeviceGetUUID(self, st: dict[str, Any], handle: Any, buf: Any, size: Any) -> None:
        gpu, gi, ci = self._device(st, handle)
        self._write_str(buf, size, ci["uuid"] if ci is not None else gpu["uuid"])

    @_nvml
    def nvmlDeviceGetSerial(self, st: dict[str, Any], handle: Any, buf: Any, size: Any) -> None:
        gpu = self._parent(st, handle)
        self._write_str(buf, size, f"{1320000000000 + gpu['index']:013d}")

    @_nvml
    def nvmlDeviceGetIndex(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        gpu, gi, ci = self._device(st, handle)
        if ci is None:
            _out(ref).value = gpu["index"]
        else:
            _out(ref).value = self._mig_index(gpu, ci)

    @_nvml
    def nvmlDeviceGetMinorNumber(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        _out(ref).value = self._parent(st, handle)["index"]

    @_nvml
    def nvmlDeviceGetPciInfo_v3(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        gpu = self._parent(st, handle)
        info = _out(ref)
        bus = gpu["pci_bus_id"]
        info.busId = bus.encode()
        info.busIdLegacy = bus[4:].encode()
        info.domain = 0
        info.bus = int(bus.split(":")[1], 16)
        info.device = 0
        info.pciDeviceId = self._model(gpu).pci_device_id
        info.pciSubSystemId = 0x147E10DE

    @_nvml
    def nvmlDeviceGetCudaComputeCapability(
        self, st: dict[str, Any], handle: Any, major: Any, minor: Any
    ) -> None:
        gpu, _, _ = self._device(st, handle)
        cc = self._model(gpu).compute_capability
        _out(major).value, _out(minor).value = cc

    @_nvml
    def nvmlDeviceGetArchitecture(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        gpu, _, _ = self._device(st, handle)
        _out(ref).value = self._model(gpu).architecture

    @_nvml
    def nvmlDeviceGetMemoryInfo(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        self._memory(st, handle, _out(ref))

    @_nvml
    def nvmlDeviceGetMemoryInfo_v2(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        mem = _out(ref)
        if mem.version != pynvml.nvmlMemory_v2:
            raise _Fail(E_VERSION_MISMATCH)
        self._memory(st, handle, mem)
        mem.reserved = 0

    def _memory(self, st: dict[str, Any], handle: Any, mem: Any) -> None:
        gpu, gi, _ = self._device(st, handle)
        if gi is None and self._mig_on(gpu):
            # The parent in MIG mode gives "aggregate information, only if the
            # caller has appropriate privileges" (nvml.h); non-root users get
            # NoPermission (reported on A100, H100, H200; mig-facts.md 8.4).
            self._require_root(st)
        self._prune_once(gpu)
        if gi is None:
            total_mib = self._model(gpu).memory_total_mib
            procs = gpu["processes"]
        else:
            total_mib = self._profile_by_id(gpu, gi["profile_id"]).memory_mib
            procs = [p for p in gpu["processes"] if p.get("gi_id") == gi["gi_id"]]
        # Never 0 at idle: the driver keeps some framebuffer of every GPU and
        # MIG device for itself [U: workload.idle_used_mib].
        used_mib = workload.idle_used_mib(total_mib) + sum(workload.process_used_mib(p) for p in procs)
        used = int(used_mib * MIB)
        mem.total = total_mib * MIB
        mem.used = min(used, mem.total)
        mem.free = mem.total - mem.used

    # ------------------------------------------------------------- MIG mode

    @_nvml
    def nvmlDeviceGetMigMode(self, st: dict[str, Any], handle: Any, cur: Any, pending: Any) -> None:
        gpu = self._parent(st, handle)
        self._require_mig_capable(gpu)
        _out(cur).value = gpu["mig_current"]
        _out(pending).value = gpu["mig_pending"]

    @_nvml
    def nvmlDeviceSetMigMode(self, st: dict[str, Any], handle: Any, mode: Any, status: Any) -> None:
        gpu = self._parent(st, handle)
        self._require_mig_capable(gpu)
        self._require_root(st)
        m = _val(mode)
        if m not in (0, 1):
            raise _Fail(E_INVALID)
        if gpu["gpu_instances"] and m == 0:
            # Instances must be destroyed before MIG can be turned off [U].
            raise _Fail(E_IN_USE)
        gpu["mig_pending"] = m
        workload.prune_processes(gpu)
        if m == gpu["mig_current"]:
            _out(status).value = SUCCESS
        elif gpu["processes"] or gpu.get("hold_mode_change"):
            # Busy GPU: the change stays pending until a reset (S2: "pending
            # enable state ... In use by another client").
            _out(status).value = E_IN_USE
        else:
            gpu["mig_current"] = m
            _out(status).value = SUCCESS

    # --------------------------------------------------- GPU-instance profiles

    def _fill_gi_profile(self, gpu: dict[str, Any], p: ProfileFact, info: Any) -> None:
        info.id = p.profile_id
        info.isP2pSupported = 0
        info.sliceCount = p.compute_slices
        info.instanceCount = p.instances
        info.multiprocessorCount = p.sm_count
        info.copyEngineCount = p.copy_engines
        info.decoderCount = p.decoders
        info.encoderCount = p.encoders
        info.jpegCount = p.jpegs
        info.ofaCount = p.ofas
        info.memorySizeMB = p.memory_mib
        if hasattr(info, "name"):
            # The driver's own name string [U: very likely "MIG <profile>"].
            info.name = f"MIG {p.name}".encode()

    def _profile_by_index(self, gpu: dict[str, Any], index: int) -> ProfileFact:
        if not 0 <= index < catalog.PROFILE_COUNT:
            raise _Fail(E_INVALID)
        p = self._model(gpu).profile_by_index(index)
        if p is None:
            raise _Fail(E_NOT_SUPPORTED)
        return p

    @_nvml
    def nvmlDeviceGetGpuInstanceProfileInfo(
        self, st: dict[str, Any], handle: Any, index: Any, ref: Any
    ) -> None:
        # v1: documented to fail only when the GPU lacks MIG, so it answers
        # with MIG disabled too (docs/reference/mig-facts.md 8.2).
        gpu = self._parent(st, handle)
        self._require_mig_capable(gpu)
        self._fill_gi_profile(gpu, self._profile_by_index(gpu, _val(index)), _out(ref))

    @_nvml
    def nvmlDeviceGetGpuInstanceProfileInfoV(
        self, st: dict[str, Any], handle: Any, index: Any, ref: Any
    ) -> None:
        gpu = self._parent(st, handle)
        info = _out(ref)
        if info.version != pynvml.nvmlGpuInstanceProfileInfo_v2:
            raise _Fail(E_VERSION_MISMATCH)
        self._require_mig_on(gpu)
        self._fill_gi_profile(gpu, self._profile_by_index(gpu, _val(index)), info)

    @_nvml
    def nvmlDeviceGetGpuInstanceProfileInfoByIdV(
        self, st: dict[str, Any], handle: Any, profile_id: Any, ref: Any
    ) -> None:
        gpu = self._parent(st, handle)
        info = _out(ref)
        if info.version != pynvml.nvmlGpuInstanceProfileInfo_v2:
            raise _Fail(E_VERSION_MISMATCH)
        self._require_mig_on(gpu)
        p = self._model(gpu).profile_by_id(_val(profile_id))
        if p is None:
            raise _Fail(E_NOT_SUPPORTED)
        self._fill_gi_profile(gpu, p, info)

    @_nvml
    def nvmlDeviceGetGpuInstancePossiblePlacements_v2(
        self, st: dict[str, Any], handle: Any, profile_id: Any, arr: Any, count: Any
    ) -> None:
        # Works "regardless of whether MIG is enabled or not", but "requires
        # privileged user" (nvml.h; docs/reference/mig-facts.md 9).
        gpu = self._parent(st, handle)
        self._require_mig_capable(gpu)
        self._require_root(st)
        p = self._profile_by_id(gpu, _val(profile_id))
        cnt = _out(count)
        if arr is None:
            cnt.value = len(p.starts)
            return
        if cnt.value < len(p.starts):
            cnt.value = len(p.starts)
            raise _Fail(E_INSUFFICIENT_SIZE)
        for i, s in enumerate(p.starts):
            arr[i].start = s
            arr[i].size = p.memory_slices
        cnt.value = len(p.starts)

    @_nvml
    def nvmlDeviceGetGpuInstanceRemainingCapacity(
        self, st: dict[str, Any], handle: Any, profile_id: Any, ref: Any
    ) -> None:
        gpu = self._parent(st, handle)
        self._require_mig_on(gpu)
        self._require_root(st)
        p = self._profile_by_id(gpu, _val(profile_id))
        # How many more could be placed, greedily from the lowest start
        # (optimal for one aligned profile) [U: docs/reference/mig-facts.md 14.6].
        extra: list[tuple[ProfileFact, int]] = []
        for s in p.starts:
            if self._can_place(gpu, p, s, extra) == SUCCESS:
                extra.append((p, s))
        _out(ref).value = len(extra)

    # ------------------------------------------------ GPU-instance lifecycle

    @_nvml
    def nvmlDeviceCreateGpuInstance(
        self, st: dict[str, Any], handle: Any, profile_id: Any, out: Any
    ) -> None:
        gpu = self._parent(st, handle)
        self._require_mig_on(gpu)
        self._require_root(st)
        p = self._profile_by_id(gpu, _val(profile_id))
        # Default placement: the order the driver was seen to try (A100/H100:
        # 1g at 6,4,5,0,1,2,3, 2g at 4,0,2, 3g at 4 first; A30 lowest first),
        # which reproduces the creation-order failures the MIG guide describes
        # [U: observed patterns, not a documented rule; catalog create_order].
        for s in p.default_starts():
            if self._can_place(gpu, p, s) == SUCCESS:
                self._create_gi(st, gpu, p, s, out)
                return
        raise _Fail(E_INSUFFICIENT_RESOURCES)

    @_nvml
    def nvmlDeviceCreateGpuInstanceWithPlacement(
        self, st: dict[str, Any], handle: Any, profile_id: Any, placement: Any, out: Any
    ) -> None:
        gpu = self._parent(st, handle)
        self._require_mig_on(gpu)
        self._require_root(st)
        p = self._profile_by_id(gpu, _val(profile_id))
        pl = _out(placement)
        if pl.size != p.memory_slices:
            raise _Fail(E_INVALID)
        code = self._can_place(gpu, p, pl.start)
        if code != SUCCESS:
            raise _Fail(code)
        self._create_gi(st, gpu, p, pl.start, out)

    @_nvml
    def nvmlGpuInstanceDestroy(self, st: dict[str, Any], handle: Any) -> None:
        gpu, gi = self._gi_handle(st, handle)
        self._require_root(st)
        workload.prune_processes(gpu)
        if gi["compute_instances"] or any(p.get("gi_id") == gi["gi_id"] for p in gpu["processes"]):
            raise _Fail(E_IN_USE)
        gpu["gpu_instances"].remove(gi)

    @_nvml
    def nvmlDeviceGetGpuInstances(
        self, st: dict[str, Any], handle: Any, profile_id: Any, arr: Any, count: Any
    ) -> None:
        gpu = self._parent(st, handle)
        self._require_mig_on(gpu)
        self._require_root(st)
        pid = _val(profile_id)
        self._profile_by_id(gpu, pid)
        gis = sorted(
            (g for g in gpu["gpu_instances"] if g["profile_id"] == pid), key=lambda g: g["gi_id"]
        )
        self._fill_handles(
            arr, count, pynvml.c_nvmlGpuInstance_t, [("gi", gpu["index"], g["uid"]) for g in gis]
        )

    @_nvml
    def nvmlDeviceGetGpuInstanceById(
        self, st: dict[str, Any], handle: Any, gi_id: Any, out: Any
    ) -> None:
        gpu = self._parent(st, handle)
        self._require_mig_on(gpu)
        self._require_root(st)
        for gi in gpu["gpu_instances"]:
            if gi["gi_id"] == _val(gi_id):
                self._set_handle(out, ("gi", gpu["index"], gi["uid"]))
                return
        raise _Fail(E_NOT_FOUND)

    @_nvml
    def nvmlGpuInstanceGetInfo(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        gpu, gi = self._gi_handle(st, handle)
        info = _out(ref)
        dev = pynvml.c_nvmlDevice_t()
        self._set_handle(ctypes.byref(dev), ("gpu", gpu["index"]))
        info.device = dev
        info.id = gi["gi_id"]
        info.profileId = gi["profile_id"]
        info.placement.start = gi["start"]
        info.placement.size = gi["size"]

    # ------------------------------------------------ compute instances

    def _ci_profile(
        self, gpu: dict[str, Any], gi: dict[str, Any], ci_profile_id: int
    ) -> CiProfileFact:
        """A CI profile inside ``gi`` (:func:`migperf.nvml.ci_profiles.ci_profiles`)."""
        if not 0 <= ci_profile_id < pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT:
            raise _Fail(E_INVALID)
        fact = ci_profile(
            self._model(gpu), self._profile_by_id(gpu, gi["profile_id"]), ci_profile_id
        )
        if fact is None:
            raise _Fail(E_NOT_SUPPORTED)
        return fact

    def _fill_ci_profile(
        self, gpu: dict[str, Any], gi: dict[str, Any], ci_profile_id: int, info: Any
    ) -> None:
        p = self._profile_by_id(gpu, gi["profile_id"])
        f = self._ci_profile(gpu, gi, ci_profile_id)
        c = f.compute_slices
        info.id = ci_profile_id
        info.sliceCount = c
        info.instanceCount = f.instances
        info.multiprocessorCount = f.sm_count
        info.sharedCopyEngineCount = p.copy_engines
        info.sharedDecoderCount = p.decoders
        info.sharedEncoderCount = p.encoders
        info.sharedJpegCount = p.jpegs
        info.sharedOfaCount = p.ofas
        if hasattr(info, "name"):
            info.name = f"MIG {compute_instance_profile_name(c, p.name)}".encode()

    @_nvml
    def nvmlGpuInstanceGetComputeInstanceProfileInfo(
        self, st: dict[str, Any], handle: Any, profile: Any, eng: Any, ref: Any
    ) -> None:
        gpu, gi = self._gi_handle(st, handle)
        if _val(eng) != pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED:
            raise _Fail(E_INVALID)
        self._fill_ci_profile(gpu, gi, _val(profile), _out(ref))

    @_nvml
    def nvmlGpuInstanceGetComputeInstanceProfileInfoV(
        self, st: dict[str, Any], handle: Any, profile: Any, eng: Any, ref: Any
    ) -> None:
        gpu, gi = self._gi_handle(st, handle)
        info = _out(ref)
        if info.version != pynvml.nvmlComputeInstanceProfileInfo_v2:
            raise _Fail(E_VERSION_MISMATCH)
        if _val(eng) != pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED:
            raise _Fail(E_INVALID)
        self._fill_ci_profile(gpu, gi, _val(profile), info)

    def _ci_fits(
        self, gpu: dict[str, Any], gi: dict[str, Any], f: CiProfileFact, start: int
    ) -> int:
        """SUCCESS or the error creating a compute instance of ``f`` at ``start`` would get.

        Free compute slices where it starts, the profile's instance limit, and
        the GPU instance's SMs: a 26-SM REV1 instance and a 16-SM one do not
        both fit a 32-SM H100 2g instance, whatever the slices say [D].
        """
        if start not in f.starts:
            return int(E_INVALID)
        p = self._profile_by_id(gpu, gi["profile_id"])
        if start not in placement.ci_free_starts(gi, p.compute_slices, f.compute_slices, f.starts):
            return int(E_INSUFFICIENT_RESOURCES)
        same = sum(1 for ci in gi["compute_instances"] if ci["profile_id"] == f.profile_id)
        if same + 1 > f.instances:
            return int(E_INSUFFICIENT_RESOURCES)
        model = self._model(gpu)
        sms = 0
        for ci in gi["compute_instances"]:
            other = ci_profile(model, p, ci["profile_id"])
            sms += other.sm_count if other is not None else 0
        if sms + f.sm_count > p.sm_count:
            return int(E_INSUFFICIENT_RESOURCES)
        return int(SUCCESS)

    @_nvml
    def nvmlGpuInstanceGetComputeInstanceRemainingCapacity(
        self, st: dict[str, Any], handle: Any, profile_id: Any, ref: Any
    ) -> None:
        gpu, gi = self._gi_handle(st, handle)
        self._require_root(st)  # "Requires privileged user" (nvml.h)
        f = self._ci_profile(gpu, gi, _val(profile_id))
        # How many more fit, greedily from the lowest start [U, as for GPU instances].
        probe = dict(gi, compute_instances=list(gi["compute_instances"]))
        n = 0
        for s in f.starts:
            if self._ci_fits(gpu, probe, f, s) == SUCCESS:
                probe["compute_instances"].append(
                    {"start": s, "size": f.compute_slices, "profile_id": f.profile_id}
                )
                n += 1
        _out(ref).value = n

    @_nvml
    def nvmlGpuInstanceGetComputeInstancePossiblePlacements(
        self, st: dict[str, Any], handle: Any, profile_id: Any, arr: Any, count: Any
    ) -> None:
        gpu, gi = self._gi_handle(st, handle)
        self._require_root(st)  # "Requires privileged user" (nvml.h)
        f = self._ci_profile(gpu, gi, _val(profile_id))
        c, starts = f.compute_slices, f.starts
        cnt = _out(count)
        if arr is None:
            cnt.value = len(starts)
            return
        if cnt.value < len(starts):
            cnt.value = len(starts)
            raise _Fail(E_INSUFFICIENT_SIZE)
        for i, s in enumerate(starts):
            arr[i].start = s
            arr[i].size = c
        cnt.value = len(starts)

    def _create_ci(
        self,
        st: dict[str, Any],
        gpu: dict[str, Any],
        gi: dict[str, Any],
        ci_profile_id: int,
        start: int | None,
        out: Any,
    ) -> None:
        self._require_root(st)
        f = self._ci_profile(gpu, gi, ci_profile_id)
        if start is None:
            # The driver picks: the lowest start that fits [U], so `-cci 0,1` on
            # a 3g instance makes 1c at 0:1, then 2c at 1:2, as real drivers do.
            start = next((s for s in f.starts if self._ci_fits(gpu, gi, f, s) == SUCCESS), None)
            if start is None:
                raise _Fail(E_INSUFFICIENT_RESOURCES)
        code = self._ci_fits(gpu, gi, f, start)
        if code != SUCCESS:
            raise _Fail(code)
        c = f.compute_slices
        taken = {ci["ci_id"] for ci in gi["compute_instances"]}
        uid = self._next_serial(st)
        gi["compute_instances"].append(
            {
                "ci_id": next(i for i in range(64) if i not in taken),
                "uid": uid,
                "profile_id": ci_profile_id,
                "start": start,
                "size": c,
                "uuid": mig_uuid(gpu["uuid"], uid),
            }
        )
        self._set_handle(out, ("ci", gpu["index"], uid))

    @_nvml
    def nvmlGpuInstanceCreateComputeInstance(
        self, st: dict[str, Any], handle: Any, profile_id: Any, out: Any
    ) -> None:
        gpu, gi = self._gi_handle(st, handle)
        self._create_ci(st, gpu, gi, _val(profile_id), None, out)

    @_nvml
    def nvmlGpuInstanceCreateComputeInstanceWithPlacement(
        self, st: dict[str, Any], handle: Any, profile_id: Any, placement: Any, out: Any
    ) -> None:
        gpu, gi = self._gi_handle(st, handle)
        pl = _out(placement)
        if pl.size != self._ci_profile(gpu, gi, _val(profile_id)).compute_slices:
            raise _Fail(E_INVALID)
        self._create_ci(st, gpu, gi, _val(profile_id), pl.start, out)

    @_nvml
    def nvmlComputeInstanceDestroy(self, st: dict[str, Any], handle: Any) -> None:
        gpu, gi, ci = self._ci_handle(st, handle)
        self._require_root(st)
        workload.prune_processes(gpu)
        if any(
            p.get("gi_id") == gi["gi_id"] and p.get("ci_id") == ci["ci_id"]
            for p in gpu["processes"]
        ):
            raise _Fail(E_IN_USE)
        gi["compute_instances"].remove(ci)

    @_nvml
    def nvmlGpuInstanceGetComputeInstances(
        self, st: dict[str, Any], handle: Any, profile_id: Any, arr: Any, count: Any
    ) -> None:
        gpu, gi = self._gi_handle(st, handle)
        self._require_root(st)  # "Requires privileged user" (nvml.h)
        pid = _val(profile_id)
        self._ci_profile(gpu, gi, pid)
        cis = sorted(
            (c for c in gi["compute_instances"] if c["profile_id"] == pid), key=lambda c: c["ci_id"]
        )
        self._fill_handles(
            arr,
            count,
            pynvml.c_nvmlComputeInstance_t,
            [("ci", gpu["index"], c["uid"]) for c in cis],
        )

    @_nvml
    def nvmlGpuInstanceGetComputeInstanceById(
        self, st: dict[str, Any], handle: Any, ci_id: Any, out: Any
    ) -> None:
        gpu, gi = self._gi_handle(st, handle)
        self._require_root(st)  # "Requires privileged user" (nvml.h)
        for ci in gi["compute_instances"]:
            if ci["ci_id"] == _val(ci_id):
                self._set_handle(out, ("ci", gpu["index"], ci["uid"]))
                return
        raise _Fail(E_NOT_FOUND)

    @_nvml
    def nvmlComputeInstanceGetInfo_v2(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        gpu, gi, ci = self._ci_handle(st, handle)
        info = _out(ref)
        dev = pynvml.c_nvmlDevice_t()
        self._set_handle(ctypes.byref(dev), ("gpu", gpu["index"]))
        gih = pynvml.c_nvmlGpuInstance_t()
        self._set_handle(ctypes.byref(gih), ("gi", gpu["index"], gi["uid"]))
        info.device = dev
        info.gpuInstance = gih
        info.id = ci["ci_id"]
        info.profileId = ci["profile_id"]
        info.placement.start = ci["start"]
        info.placement.size = ci["size"]

    @_nvml
    def nvmlDeviceIsMigDeviceHandle(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        _out(ref).value = 1 if self._key(handle)[0] == "mig" else 0

    @_nvml
    def nvmlDeviceGetGpuInstanceId(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        _, gi, _ = self._device(st, handle)
        if gi is None:
            # A GPU handle is not a MIG device: INVALID_ARGUMENT [V: H200, driver 580.159.04].
            raise _Fail(E_INVALID)
        _out(ref).value = gi["gi_id"]

    @_nvml
    def nvmlDeviceGetComputeInstanceId(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        _, _, ci = self._device(st, handle)
        if ci is None:
            raise _Fail(E_INVALID)  # as nvmlDeviceGetGpuInstanceId [V]
        _out(ref).value = ci["ci_id"]

    @_nvml
    def nvmlDeviceGetMaxMigDeviceCount(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        gpu = self._parent(st, handle)
        model = self._model(gpu)
        # "Returns zero if MIG is not supported or enabled"; 7 on an A100.
        _out(ref).value = model.compute_slices if model.mig_capable and self._mig_on(gpu) else 0

    @_nvml
    def nvmlDeviceGetMigDeviceHandleByIndex(
        self, st: dict[str, Any], handle: Any, index: Any, out: Any
    ) -> None:
        gpu = self._parent(st, handle)
        self._require_mig_on(gpu)
        order = self._mig_order(gpu)
        i = _val(index)
        if not 0 <= i < len(order):
            raise _Fail(E_NOT_FOUND)
        self._set_handle(out, ("mig", gpu["index"], order[i][1]["uid"]))

    @_nvml
    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(
        self, st: dict[str, Any], handle: Any, out: Any
    ) -> None:
        key = self._key(handle)
        if key[0] != "mig":
            raise _Fail(E_INVALID)
        self._set_handle(out, ("gpu", key[1]))

    @_nvml
    def nvmlDeviceGetAttributes_v2(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        gpu, gi, ci = self._device(st, handle)
        if gi is None or ci is None:
            # "This API currently only supports MIG device handles."
            raise _Fail(E_NOT_SUPPORTED)
        p = self._profile_by_id(gpu, gi["profile_id"])
        f = ci_profile(self._model(gpu), p, ci["profile_id"])
        a = _out(ref)
        a.multiprocessorCount = (
            f.sm_count
            if f is not None
            else catalog.ci_sm_count(p.sm_count, p.compute_slices, ci["size"])
        )
        a.sharedCopyEngineCount = p.copy_engines
        a.sharedDecoderCount = p.decoders
        a.sharedEncoderCount = p.encoders
        a.sharedJpegCount = p.jpegs
        a.sharedOfaCount = p.ofas
        a.gpuInstanceSliceCount = p.compute_slices
        a.computeInstanceSliceCount = ci["size"]
        a.memorySizeMB = p.memory_mib

    # ------------------------------------------------------------------ GPM

    def _require_gpm(self, gpu: dict[str, Any]) -> None:
        # NVML GPM exists on Hopper and newer only (docs/reference/telemetry-and-sharing.md 1.1).
        if self._model(gpu).architecture < catalog.ARCH_HOPPER:
            raise _Fail(E_NOT_SUPPORTED)

    def _gi_load(self, gpu: dict[str, Any], gi: dict[str, Any]) -> float:
        """Share of a GPU instance's compute slices that simulated processes keep busy."""
        self._prune_once(gpu)
        p = self._profile_by_id(gpu, gi["profile_id"])
        return workload.gi_load(gpu, gi, p.compute_slices)

    def _gpm_record(self, sample: Any, entity: tuple[int, int | None], load: float) -> None:
        addr = ctypes.cast(sample, ctypes.c_void_p).value or 0
        if addr not in self._gpm_buffers:
            raise _Fail(E_INVALID)
        self._gpm_samples[addr] = (entity, time.monotonic(), load)

    @_nvml
    def nvmlGpmQueryDeviceSupport(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        gpu, _, _ = self._device(st, handle)
        support = _out(ref)
        if support.version != pynvml.NVML_GPM_SUPPORT_VERSION:
            raise _Fail(E_VERSION_MISMATCH)
        support.isSupportedDevice = int(self._model(gpu).architecture >= catalog.ARCH_HOPPER)

    @_nvml
    def nvmlGpmSampleAlloc(self, st: dict[str, Any], ref: Any) -> None:
        buf = ctypes.create_string_buffer(16)
        self._gpm_buffers[ctypes.addressof(buf)] = buf
        ptr = _out(ref)
        ctypes.c_void_p.from_address(ctypes.addressof(ptr)).value = ctypes.addressof(buf)

    @_nvml
    def nvmlGpmSampleFree(self, st: dict[str, Any], sample: Any) -> None:
        addr = ctypes.cast(sample, ctypes.c_void_p).value or 0
        if self._gpm_buffers.pop(addr, None) is None:
            raise _Fail(E_INVALID)
        self._gpm_samples.pop(addr, None)

    @_nvml
    def nvmlGpmSampleGet(self, st: dict[str, Any], handle: Any, sample: Any) -> None:
        gpu = self._parent(st, handle)
        self._require_gpm(gpu)
        self._gpm_record(sample, (gpu["index"], None), self._load_fraction(gpu))

    @_nvml
    def nvmlGpmMigSampleGet(self, st: dict[str, Any], handle: Any, gi_id: Any, sample: Any) -> None:
        gpu = self._parent(st, handle)
        self._require_gpm(gpu)
        self._require_mig_on(gpu)
        gi = next((g for g in gpu["gpu_instances"] if g["gi_id"] == _val(gi_id)), None)
        if gi is None or not gi["compute_instances"]:
            # No GPM sample for a GPU instance without compute instances: there
            # is nothing in it to count [U: the exact code; NOT_FOUND chosen].
            raise _Fail(E_NOT_FOUND)
        self._gpm_record(sample, (gpu["index"], gi["gi_id"]), self._gi_load(gpu, gi))

    @_nvml
    def nvmlGpmMetricsGet(self, st: dict[str, Any], ref: Any) -> None:
        request = _out(ref)
        if request.version != pynvml.NVML_GPM_METRICS_GET_VERSION:
            raise _Fail(E_VERSION_MISMATCH)
        first = self._gpm_samples.get(ctypes.cast(request.sample1, ctypes.c_void_p).value or 0)
        second = self._gpm_samples.get(ctypes.cast(request.sample2, ctypes.c_void_p).value or 0)
        if first is None or second is None or first[0] != second[0] or second[1] <= first[1]:
            raise _Fail(E_INVALID)
        # The mean of the two ends: a process that came and went in between is missed.
        load = (first[2] + second[2]) / 2
        for k in range(min(int(request.numMetrics), len(request.metrics))):
            metric = request.metrics[k]
            busy = workload.GPM_BUSY_PCT.get(int(metric.metricId))
            if busy is None:
                metric.nvmlReturn = E_NOT_SUPPORTED
                continue
            metric.value = busy * load
            metric.nvmlReturn = SUCCESS
