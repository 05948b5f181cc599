"""The simulated driver's process lists: compute, graphics and MPS, every version.

A process registered on a simulated GPU (:func:`migperf.nvml.sim.control.attach_process`)
is listed while it lives: on its GPU's handle and, when it runs on a MIG
device, on that device's handle, with its PID, framebuffer in use and GPU and
compute instance ids. Processes registered as MPS clients are listed by the
MPS functions instead of the compute ones (the MPS server is the compute
context a real driver lists). Simulated work is compute only, so the graphics
lists are always empty.

Each list exists as NVML exports it: ``_v3`` and ``_v2`` (the same record in
pynvml 13.615.71: pid, usedGpuMemory, gpuInstanceId, computeInstanceId) and
the unversioned v1 symbol (pid and usedGpuMemory only), which pynvml's
unversioned Python names no longer call but older clients (nvitop's fallback,
gpustat's) do; and ``nvmlDeviceGetRunningProcessDetailList``, the R550+
form nvitop prefers. Accounting is off, as on the recorded H200 and on every
MIG-enabled GPU ("On MIG-enabled GPUs, accounting mode would be set to
DISABLED", nvml.h): no accounting PIDs, no accounting stats.
"""

from __future__ import annotations

import ctypes
from typing import Any

import pynvml

from migperf.nvml.sim import workload
from migperf.nvml.sim.core import (
    E_INSUFFICIENT_SIZE,
    E_INVALID,
    E_NOT_FOUND,
    E_VERSION_MISMATCH,
    MIB,
    SimLibCore,
)
from migperf.nvml.sim.core import Fail as _Fail
from migperf.nvml.sim.core import nvml_call as _nvml
from migperf.nvml.sim.core import out as _out

#: What a record says for an id that does not apply (a process on a GPU without MIG).
NO_ID = 0xFFFFFFFF


class ProcessQueries(SimLibCore):
    """Process lists and accounting over the simulated machine."""

    def _processes(self, st: dict[str, Any], handle: Any, kind: str) -> list[dict[str, Any]]:
        """The processes of ``kind`` (compute, mps, graphics) a handle lists."""
        gpu, gi, ci = self._device(st, handle)
        if gi is None and self._mig_on(gpu):
            # In MIG mode the parent lists every instance's processes to
            # privileged callers only (nvml.h, mig-facts.md 8.4); stricter [U]:
            # NoPermission rather than an empty list.
            self._require_root(st)
        if kind == "graphics":
            return []
        workload.prune_processes(gpu)
        procs = [p for p in gpu["processes"] if bool(p.get("mps")) == (kind == "mps")]
        if gi is not None and ci is not None:
            procs = [
                p for p in procs if p.get("gi_id") == gi["gi_id"] and p.get("ci_id") == ci["ci_id"]
            ]
        return procs

    @staticmethod
    def _fill_processes(procs: list[dict[str, Any]], count: Any, arr: Any) -> None:
        """Fill a caller-allocated record array, or report the size it needs."""
        cnt = _out(count)
        if not procs:
            cnt.value = 0
            return
        if arr is None or cnt.value < len(procs):
            cnt.value = len(procs)
            raise _Fail(E_INSUFFICIENT_SIZE)
        for i, p in enumerate(procs):
            record = arr[i]
            record.pid = p["pid"]
            record.usedGpuMemory = int(workload.process_used_mib(p) * MIB)
            if hasattr(record, "gpuInstanceId"):  # v2/v3 records; v1 has pid and memory only
                gi_id, ci_id = p.get("gi_id"), p.get("ci_id")
                record.gpuInstanceId = gi_id if gi_id is not None else NO_ID
                record.computeInstanceId = ci_id if ci_id is not None else NO_ID
        cnt.value = len(procs)

    def _list(self, st: dict[str, Any], handle: Any, count: Any, arr: Any, kind: str) -> None:
        self._fill_processes(self._processes(st, handle, kind), count, arr)

    @_nvml
    def nvmlDeviceGetComputeRunningProcesses_v3(
        self, st: dict[str, Any], handle: Any, count: Any, arr: Any
    ) -> None:
        self._list(st, handle, count, arr, "compute")

    @_nvml
    def nvmlDeviceGetComputeRunningProcesses_v2(
        self, st: dict[str, Any], handle: Any, count: Any, arr: Any
    ) -> None:
        self._list(st, handle, count, arr, "compute")

    @_nvml
    def nvmlDeviceGetComputeRunningProcesses(
        self, st: dict[str, Any], handle: Any, count: Any, arr: Any
    ) -> None:
        self._list(st, handle, count, arr, "compute")

    @_nvml
    def nvmlDeviceGetGraphicsRunningProcesses_v3(
        self, st: dict[str, Any], handle: Any, count: Any, arr: Any
    ) -> None:
        self._list(st, handle, count, arr, "graphics")

    @_nvml
    def nvmlDeviceGetGraphicsRunningProcesses_v2(
        self, st: dict[str, Any], handle: Any, count: Any, arr: Any
    ) -> None:
        self._list(st, handle, count, arr, "graphics")

    @_nvml
    def nvmlDeviceGetGraphicsRunningProcesses(
        self, st: dict[str, Any], handle: Any, count: Any, arr: Any
    ) -> None:
        self._list(st, handle, count, arr, "graphics")

    @_nvml
    def nvmlDeviceGetMPSComputeRunningProcesses_v3(
        self, st: dict[str, Any], handle: Any, count: Any, arr: Any
    ) -> None:
        self._list(st, handle, count, arr, "mps")

    @_nvml
    def nvmlDeviceGetMPSComputeRunningProcesses_v2(
        self, st: dict[str, Any], handle: Any, count: Any, arr: Any
    ) -> None:
        self._list(st, handle, count, arr, "mps")

    @_nvml
    def nvmlDeviceGetMPSComputeRunningProcesses(
        self, st: dict[str, Any], handle: Any, count: Any, arr: Any
    ) -> None:
        self._list(st, handle, count, arr, "mps")

    @_nvml
    def nvmlDeviceGetRunningProcessDetailList(
        self, st: dict[str, Any], handle: Any, ref: Any
    ) -> None:
        details = _out(ref)
        if details.version != pynvml.nvmlProcessDetailList_v1:
            raise _Fail(E_VERSION_MISMATCH)
        kind = {0: "compute", 1: "graphics", 2: "mps"}.get(int(details.mode))
        if kind is None:
            raise _Fail(E_INVALID)
        procs = self._processes(st, handle, kind)
        if not procs:
            details.numProcArrayEntries = 0
            return
        if not details.procArray or details.numProcArrayEntries < len(procs):
            details.numProcArrayEntries = len(procs)
            raise _Fail(E_INSUFFICIENT_SIZE)
        self._fill_processes(procs, ctypes.c_uint(len(procs)), details.procArray)
        for i in range(len(procs)):
            details.procArray[i].usedGpuCcProtectedMemory = 0  # confidential computing off
        details.numProcArrayEntries = len(procs)

    # ------------------------------------------------------------ accounting

    @_nvml
    def nvmlDeviceGetAccountingMode(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        self._device(st, handle)
        _out(ref).value = 0  # NVML_FEATURE_DISABLED [V on the H200 record; nvml.h for MIG]

    @_nvml
    def nvmlDeviceGetAccountingPids(
        self, st: dict[str, Any], handle: Any, count: Any, pids: Any
    ) -> None:
        self._device(st, handle)
        _out(count).value = 0  # accounting off: nothing recorded [V: [] on the H200]

    @_nvml
    def nvmlDeviceGetAccountingBufferSize(self, st: dict[str, Any], handle: Any, ref: Any) -> None:
        self._device(st, handle)
        _out(ref).value = 4000  # the driver's circular buffer size [U]

    @_nvml
    def nvmlDeviceGetAccountingStats(
        self, st: dict[str, Any], handle: Any, pid: Any, ref: Any
    ) -> None:
        self._device(st, handle)
        # "NVML_ERROR_NOT_FOUND if process stats were not found" (nvml.h): none are kept.
        raise _Fail(E_NOT_FOUND)
