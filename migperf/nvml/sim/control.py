"""Things a person does to a real machine that NVML cannot: for tests and demos.

Start a "process" on a simulated GPU or MIG device (so destroy gets
``InUse`` and power rises), reset a GPU (so a pending MIG mode takes effect),
or clear fault counters. These act on the same state file the simulated
driver uses, under the same lock.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from migperf.errors import GpuInUseError, GpuNotFoundError
from migperf.nvml.catalog import get_model
from migperf.nvml.sim.state import MachineSpec, MachineState, parse_machine_spec
from migperf.nvml.sim.workload import credit_energy, extra_power_w
from migperf.procs import pid_alive


def _machine(spec: str | MachineSpec, root: Path | None) -> MachineState:
    return MachineState(parse_machine_spec(spec) if isinstance(spec, str) else spec, root)


def attach_process(
    spec: str | MachineSpec,
    gpu_index: int,
    *,
    mig_uuid: str | None = None,
    pid: int | None = None,
    used_mib: float = 1024.0,
    mps: bool = False,
    root: Path | None = None,
    follow_rss: bool = False,
) -> int:
    """Register a compute process on a GPU or on one MIG device.

    The process stays registered while ``pid`` (default: the caller) is alive,
    like a CUDA context. NVML lists it (``nvmlDeviceGetComputeRunningProcesses``
    on the GPU and on its MIG device) with ``used_mib`` of framebuffer; an MPS
    client (``mps``) is listed by ``nvmlDeviceGetMPSComputeRunningProcesses``
    instead. With ``follow_rss`` it reports the process's resident memory
    instead of ``used_mib`` (a CPU worker emulating a slice). Returns the pid.

    Raises:
        GpuNotFoundError: when the GPU or MIG device does not exist.
    """
    pid = os.getpid() if pid is None else pid
    with _machine(spec, root).transaction() as st:
        if not 0 <= gpu_index < len(st["gpus"]):
            raise GpuNotFoundError(f"simulated GPU {gpu_index} does not exist")
        gpu = st["gpus"][gpu_index]
        model = get_model(gpu["model"])
        entry: dict[str, object] = {"pid": pid, "used_mib": used_mib, "started_unix": time.time()}
        if follow_rss:
            entry["rss"] = True  # report the process's resident memory (workload.process_used_mib)
        if mps:
            entry["mps"] = True
        slices = model.compute_slices or 1
        if mig_uuid is not None:
            for gi in gpu["gpu_instances"]:
                for ci in gi["compute_instances"]:
                    if ci["uuid"] == mig_uuid:
                        entry.update(gi_id=gi["gi_id"], ci_id=ci["ci_id"], slices=ci["size"])
                        break
            if "gi_id" not in entry:
                raise GpuNotFoundError(f"no MIG device {mig_uuid} on simulated GPU {gpu_index}")
            share = int(entry["slices"]) / slices  # type: ignore[call-overload]
        else:
            share = 1.0
        entry["extra_power_w"] = extra_power_w(model, share)
        gpu["processes"].append(entry)
    return pid


def detach_process(
    spec: str | MachineSpec, gpu_index: int, pid: int, *, root: Path | None = None
) -> None:
    """Unregister a process (as if it exited), crediting its energy to the board counter."""
    with _machine(spec, root).transaction() as st:
        gpu = st["gpus"][gpu_index]
        keep = []
        for p in gpu["processes"]:
            if p["pid"] == pid:
                credit_energy(gpu, p)
            else:
                keep.append(p)
        gpu["processes"] = keep


def hold_mode_changes(
    spec: str, gpu_index: int, hold: bool = True, *, root: Path | None = None
) -> None:
    """Make MIG mode changes stay pending until :func:`reset_gpu` (a GPU some client keeps open)."""
    with _machine(spec, root).transaction() as st:
        st["gpus"][gpu_index]["hold_mode_change"] = hold


def reset_gpu(spec: str | MachineSpec, gpu_index: int, *, root: Path | None = None) -> None:
    """``nvidia-smi --gpu-reset``: apply a pending MIG mode, wipe every instance.

    GPU and compute instances do not survive a reset (or a reboot), even when
    MIG stays enabled: the MIG user guide says the GI/CI configuration is not
    persistent, and mig-parted re-applies it at boot for that reason
    (docs/reference/mig-facts.md 9). MIG devices, their UUIDs and handles are
    gone afterwards.

    Raises:
        GpuInUseError: when processes still use the GPU.
    """
    with _machine(spec, root).transaction() as st:
        gpu = st["gpus"][gpu_index]
        live = [p for p in gpu["processes"] if pid_alive(p["pid"])]
        if live:
            raise GpuInUseError(
                f"cannot reset simulated GPU {gpu_index}: {len(live)} process(es) use it",
                hint="stop them first",
            )
        gpu["mig_current"] = gpu["mig_pending"]
        gpu["hold_mode_change"] = False
        gpu["gpu_instances"] = []


def clear_fault_counters(spec: str, *, root: Path | None = None) -> None:
    """Start counting calls for ``MIGPERF_SIM_FAULTS`` from zero again."""
    with _machine(spec, root).transaction() as st:
        st["fault_calls"] = {}
