"""The one gateway to NVML.

:class:`Nvml` wraps a pynvml-compatible module (nvidia-ml-py's ``pynvml`` on a
real machine, :mod:`migperf.nvml.sim` otherwise) and speaks migperf's types
(:mod:`migperf.nvml.types`). It is the only place that handles NVML handles,
ctypes buffers and ``NVMLError``; every NVML failure leaves it as a
:class:`~migperf.errors.MigperfError` that names the operation, the GPU and
the reason, with a hint.

It is built in layers, one job each: the session (:mod:`migperf.nvml.session`:
open, close, call, translate errors), the inventory
(:mod:`migperf.nvml.inventory`: GPUs, profiles, instances, processes), the
telemetry readings (:mod:`migperf.nvml.readings`), and here the calls that
change a GPU and the fake processes of a simulated one.

Reads work for any user. Calls that change a GPU (``set_mig_mode``,
``create_*``, ``destroy_*``) refuse in read-only mode.
"""

from __future__ import annotations

import ctypes
from typing import Any

from migperf import errors
from migperf.nvml.readings import NvmlReadings
from migperf.nvml.types import MigMode, Placement


class Nvml(NvmlReadings):
    """migperf's view of NVML on one machine.

    Use as a context manager (``with open_nvml() as nvml:``) or call
    :meth:`init` / :meth:`shutdown`.

    Args:
        module: ``pynvml`` or a module with the same surface (the simulator).
        simulated: Whether ``module`` is the simulator; results say so.
        read_only: Refuse every call that would change a GPU.
        fallback_reason: Why a simulator stands in for a missing driver, if it does.
    """

    # ------------------------------------------------- simulated workloads

    def attach_simulated_process(
        self, gpu_index: int, pid: int, mig_uuid: str | None = None, used_mib: float | None = None
    ) -> None:
        """Register ``pid`` as a compute process on a simulated GPU or MIG device.

        A benchmark on a simulated slot runs on the CPU; registering its
        worker makes the simulated GPU behave as if the worker used it
        (power and the energy counter rise, its memory is in use) until the
        process exits or :meth:`detach_simulated_process` is called. Its memory
        in use is ``used_mib``, or by default the worker's resident memory as it
        runs (the slice emulation caps it at the slice's memory).

        Raises:
            UsageError: on real hardware.
            GpuNotFoundError: when the GPU or MIG device does not exist.
        """
        from migperf.nvml.sim import control

        spec, root = self._sim_machine("register a simulated process")
        control.attach_process(
            spec,
            gpu_index,
            mig_uuid=mig_uuid,
            pid=pid,
            used_mib=1024.0 if used_mib is None else used_mib,
            root=root,
            follow_rss=used_mib is None,
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
