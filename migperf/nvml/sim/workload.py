"""What simulated compute processes do to a simulated GPU: load, power, energy, clocks.

A simulated GPU is as busy as the compute slices its registered processes
(:func:`migperf.nvml.sim.control.attach_process`) occupy. Power, energy,
temperature, clocks, utilization and GPM activity follow from that load; the
simulated driver (:mod:`migperf.nvml.sim.lib`) answers NVML's telemetry calls
with these numbers. The functions act on a GPU's entry of the machine state
(:mod:`migperf.nvml.sim.state`), inside the caller's transaction.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import pynvml

from migperf.nvml import catalog
from migperf.nvml.catalog import GpuModel
from migperf.procs import pid_alive

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

# Percent of a fully busy entity each GPM metric reads, so tests can tell the
# metrics apart; metric ids not listed answer NOT_SUPPORTED [D].
GPM_BUSY_PCT: dict[int, float] = {
    pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL: 100.0,
    pynvml.NVML_GPM_METRIC_SM_UTIL: 95.0,
    pynvml.NVML_GPM_METRIC_SM_OCCUPANCY: 40.0,
    pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL: 30.0,
    pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL: 55.0,
}


def process_used_mib(entry: dict[str, Any]) -> float:
    """Framebuffer a simulated process uses, in MiB.

    A benchmark worker on a simulated slot runs on the CPU, so what it holds is
    host memory: an entry registered with ``rss`` reports the process's
    resident set (``/proc/<pid>/statm``), which the slice emulation caps at the
    slice's memory. It is *emulated* slice memory, not a constant drawn as a
    measurement; other entries report their registered ``used_mib``.
    """
    if entry.get("rss"):
        try:
            with open(f"/proc/{int(entry['pid'])}/statm", "rb") as f:
                resident_pages = int(f.read().split()[1])
            return resident_pages * _PAGE / (1024 * 1024)
        except (OSError, ValueError, IndexError):
            pass  # gone or unreadable: the registered value
    return float(entry["used_mib"])


def idle_used_mib(total_mib: int) -> int:
    """Framebuffer an idle GPU or MIG device reports in use, in MiB.

    Real idle devices never read 0: 11 to 249 MiB were observed on idle MIG
    devices and idle parents (reported on A100, H100, H200). Which size reads
    what is not known [U]; here it grows with the device's memory, 0.3 %
    within the observed range (a 1g.10gb reads 29 MiB, an 80 GB parent 246).

    Args:
        total_mib: The device's framebuffer total.
    """
    return max(11, min(249, round(total_mib * 0.003)))


def extra_power_w(model: GpuModel, share: float) -> float:
    """Power above idle drawn by work that keeps ``share`` of a GPU's compute slices busy.

    Args:
        model: The GPU model.
        share: Busy fraction of its compute slices, 0 to 1.
    """
    return (model.power_limit_w - model.idle_power_w) * 0.85 * share


def credit_energy(gpu: dict[str, Any], process: dict[str, Any]) -> None:
    """Add what a departing process drew above idle to its GPU's energy counter.

    Args:
        gpu: The GPU's state entry.
        process: One of its ``processes``, which is leaving them.
    """
    gpu["extra_energy_mj"] += (
        process.get("extra_power_w", 0.0) * (time.time() - process["started_unix"]) * 1000
    )


def prune_processes(gpu: dict[str, Any]) -> None:
    """Forget processes that have exited, as the driver does, crediting their energy.

    A zombie counts as exited: its GPU context is gone, so the driver no
    longer lists it (an orphan of a SIGKILLed runner may stay a zombie for
    as long as nobody reaps it, and must not block the restore).

    Args:
        gpu: The GPU's state entry.
    """
    alive = []
    for p in gpu["processes"]:
        if not pid_alive(p["pid"]):
            credit_energy(gpu, p)
            continue
        alive.append(p)
    gpu["processes"] = alive


def load_fraction(gpu: dict[str, Any]) -> float:
    """Share of the GPU's compute slices that its processes keep busy.

    Args:
        gpu: The GPU's state entry, its exited processes already pruned.
    """
    if not gpu["processes"]:
        return 0.0
    model = catalog.get_model(gpu["model"])
    if not gpu["mig_current"] or not model.mig_capable:
        return 1.0
    busy = set()
    for p in gpu["processes"]:
        # A process on the bare GPU counts as all of it, as its energy does (control.py).
        busy.add((p.get("gi_id"), p.get("ci_id"), p.get("slices", model.compute_slices)))
    return min(1.0, sum(s for _, _, s in busy) / model.compute_slices)


def gi_load(gpu: dict[str, Any], gi: dict[str, Any], gi_compute_slices: int) -> float:
    """Share of a GPU instance's compute slices that its processes keep busy.

    Args:
        gpu: The GPU's state entry, its exited processes already pruned.
        gi: One of its ``gpu_instances``.
        gi_compute_slices: The compute slices of that instance's profile.
    """
    busy = {
        (proc.get("ci_id"), proc.get("slices", 1))
        for proc in gpu["processes"]
        if proc.get("gi_id") == gi["gi_id"]
    }
    return min(1.0, sum(s for _, s in busy) / max(gi_compute_slices, 1))


def power_w(model: GpuModel, load: float) -> float:
    """Board power at a load, with a small ripple (``nvidia-smi --query-gpu=power.draw``).

    Args:
        model: The GPU model.
        load: Busy fraction of its compute slices (:func:`load_fraction`).
    """
    # A small deterministic ripple so traces are not flat lines.
    ripple = 1.0 + 0.01 * math.sin(time.time() * 2.0)
    return (model.idle_power_w + extra_power_w(model, load)) * ripple


def energy_mj(model: GpuModel, gpu: dict[str, Any], driver_loaded_unix: float, now: float) -> float:
    """The board's energy counter: idle since the driver loaded, plus what processes drew.

    ``nvidia-smi --query-gpu=total_energy_consumption`` (in mJ here).

    Args:
        model: The GPU model.
        gpu: The GPU's state entry, its exited processes already pruned.
        driver_loaded_unix: When the simulated driver loaded.
        now: The reading's time (Unix seconds).
    """
    mj = model.idle_power_w * (now - driver_loaded_unix) * 1000 + gpu["extra_energy_mj"]
    for p in gpu["processes"]:
        mj += p.get("extra_power_w", 0.0) * (now - p["started_unix"]) * 1000
    return float(mj)


def temperature_c(load: float) -> int:
    """GPU temperature at a load (``nvidia-smi --query-gpu=temperature.gpu``).

    Args:
        load: Busy fraction of the GPU's compute slices.
    """
    return int(31 + 40 * load)


def utilization_pct(load: float) -> tuple[int, int]:
    """``(gpu, memory)`` utilization at a load (``nvidia-smi --query-gpu=utilization.gpu,utilization.memory``).

    Args:
        load: Busy fraction of the GPU's compute slices.
    """
    return int(100 * load), int(60 * load)


def clock_mhz(model: GpuModel, clock_type: int, busy: bool) -> int | None:
    """A clock's frequency, or None for a clock type NVML does not have.

    ``nvidia-smi --query-gpu=clocks.sm,clocks.mem,clocks.video``.

    Args:
        model: The GPU model.
        clock_type: An ``NVML_CLOCK_*`` constant.
        busy: Whether work runs (or the maximum clock is asked for).
    """
    if clock_type in (pynvml.NVML_CLOCK_GRAPHICS, pynvml.NVML_CLOCK_SM):
        return model.max_sm_clock_mhz if busy else 210
    if clock_type == pynvml.NVML_CLOCK_MEM:
        return model.max_mem_clock_mhz
    if clock_type == pynvml.NVML_CLOCK_VIDEO:
        return 1275 if busy else 555
    return None
