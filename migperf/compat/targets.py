"""Where the matrix runs: one device, and a second one for the two-device checks.

A check process is pinned by its environment alone: ``CUDA_VISIBLE_DEVICES``
is the MIG device's ``MIG-<uuid>`` or the GPU's index (numbered like
``nvidia-smi``, ``CUDA_DEVICE_ORDER=PCI_BUS_ID``), and empty on the simulated
GPU, where the checks run on the CPU and every row says ``simulated``. The
devices come from NVML (:mod:`migperf.nvml`); nothing here changes a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from migperf.errors import UsageError

if TYPE_CHECKING:
    from migperf.nvml.facade import Nvml

__all__ = ["CompatTarget", "Exposure", "choose_target"]


@dataclass(frozen=True)
class Exposure:
    """One device as a check process gets it.

    Attributes:
        label: What rows say: ``MIG-<uuid>``, ``GPU 0``, with ``(simulated)`` on the simulator.
        cuda_visible: The ``CUDA_VISIBLE_DEVICES`` value (empty on the simulator).
        name: The device's name (``NVIDIA H200 MIG 1g.18gb``).
        memory_mib: Its memory as NVML reports it (None where NVML will not say).
        mig: A MIG device.
        gpu_index: The GPU it is (on).
    """

    label: str
    cuda_visible: str
    name: str
    memory_mib: int | None
    mig: bool
    gpu_index: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class CompatTarget:
    """The devices a matrix runs on.

    Attributes:
        first: The device every one-device check runs on.
        second: The other device of the two-device checks, or None.
        second_missing: Why there is no second device (the ``skipped`` reason).
        simulated: migperf's simulated GPU: checks run on the CPU.
        gpu_name: The (first) GPU's name.
        driver_version: The driver's version.
    """

    first: Exposure
    second: Exposure | None
    second_missing: str
    simulated: bool
    gpu_name: str
    driver_version: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return {
            "first": self.first.to_dict(),
            "second": self.second.to_dict() if self.second else None,
            "second_missing": self.second_missing or None,
            "simulated": self.simulated,
            "gpu_name": self.gpu_name,
            "driver_version": self.driver_version,
        }


def _inventory(nvml: Nvml) -> tuple[list[Any], dict[int, list[Any]]]:
    gpus = nvml.gpus()
    migs = {
        g.index: nvml.mig_devices(g.index)
        if g.mig_capable and g.mig_mode is not None and g.mig_mode.current
        else []
        for g in gpus
    }
    return gpus, migs


def _exposure(item: Any, gpu: Any, simulated: bool) -> Exposure:
    sim = " (simulated)" if simulated else ""
    if hasattr(item, "mig_uuid"):
        return Exposure(
            label=f"{item.mig_uuid}{sim}",
            cuda_visible="" if simulated else item.mig_uuid,
            name=item.name,
            memory_mib=item.memory_mib,
            mig=True,
            gpu_index=item.gpu_index,
        )
    return Exposure(
        label=f"GPU {gpu.index}{sim}",
        cuda_visible="" if simulated else str(gpu.index),
        name=gpu.name,
        memory_mib=gpu.memory_mib,
        mig=False,
        gpu_index=gpu.index,
    )


def _listing(gpus: list[Any], migs: dict[int, list[Any]]) -> str:
    items = [f"GPU {g.index}" for g in gpus if not migs[g.index]]
    items += [m.mig_uuid for g in gpus for m in migs[g.index]]
    return ", ".join(items) or "none"


def _resolve(spec: str, gpus: list[Any], migs: dict[int, list[Any]], simulated: bool) -> Exposure:
    by_index = {g.index: g for g in gpus}
    text = spec.strip()
    if text.startswith("MIG-"):
        for g in gpus:
            for m in migs[g.index]:
                if m.mig_uuid == text:
                    return _exposure(m, g, simulated)
        raise UsageError(
            f"no MIG device {text} on this machine",
            hint=f"devices: {_listing(gpus, migs)} (`migperf mig show` lists the MIG devices)",
        )
    if text.isdigit() and int(text) in by_index:
        gpu = by_index[int(text)]
        if migs[gpu.index] and not simulated:
            raise UsageError(
                f"GPU {gpu.index} is in MIG mode: CUDA runs on its MIG devices, not on the GPU",
                hint=f"pass --device MIG-<uuid>: {_listing(gpus, migs)}",
            )
        return _exposure(gpu, gpu, simulated)
    raise UsageError(
        f"--device {spec!r} is neither a GPU index nor a MIG device of this machine",
        hint=f"devices: {_listing(gpus, migs)}",
    )


def choose_target(nvml: Nvml, device: str | None = None, second: str | None = None) -> CompatTarget:
    """The devices to run on: the ones named, or the first MIG device (else GPU 0).

    Without ``second``, a MIG device's partner is another MIG device of the same
    GPU, from another GPU instance where there is one (data-parallel across the
    slices of one GPU is what operators ask about); a whole GPU's is the next GPU.

    Raises:
        UsageError: a named device does not exist, the two are the same, or no
            device can run CUDA (every GPU in MIG mode without MIG devices).
    """
    gpus, migs = _inventory(nvml)
    simulated = bool(nvml.simulated)
    if not gpus:
        raise UsageError(
            "NVML lists no GPU", hint="run on a machine with an NVIDIA GPU, or --simulate"
        )
    if device is not None:
        first = _resolve(device, gpus, migs, simulated)
    else:
        with_mig = [(g, m) for g in gpus for m in migs[g.index]]
        plain = [g for g in gpus if not (g.mig_mode is not None and g.mig_mode.current)]
        if with_mig:
            first = _exposure(with_mig[0][1], with_mig[0][0], simulated)
        elif plain or simulated:
            gpu = (plain or gpus)[0]
            first = _exposure(gpu, gpu, simulated)
        else:
            raise UsageError(
                "every GPU is in MIG mode without MIG devices: CUDA has nothing to run on",
                hint="create MIG devices first (`migperf mig apply`), or pass --device",
            )
    partner: Exposure | None = None
    if second is not None:
        partner = _resolve(second, gpus, migs, simulated)
        if partner.cuda_visible == first.cuda_visible and partner.label == first.label:
            raise UsageError(
                "--second-device names the same device as --device",
                hint="pick another MIG device of the same GPU (`migperf mig show`)",
            )
    elif first.mig:
        gpu = next(g for g in gpus if g.index == first.gpu_index)
        mine = next(m for m in migs[gpu.index] if m.mig_uuid in first.label)
        others = [m for m in migs[gpu.index] if m.mig_uuid != mine.mig_uuid]
        others.sort(key=lambda m: m.gi_id == mine.gi_id)  # another GPU instance first
        if others:
            partner = _exposure(others[0], gpu, simulated)
    else:
        rest = [g for g in gpus if g.index != first.gpu_index and not migs[g.index]]
        if rest:
            partner = _exposure(rest[0], rest[0], simulated)
    missing = ""
    if partner is None:
        missing = "needs two MIG devices" if first.mig else "needs two GPUs"
    gpu_name = next(g.name for g in gpus if g.index == first.gpu_index)
    try:
        driver: str | None = nvml.driver_version()
    except Exception:  # noqa: BLE001 - the version is a label, not a requirement
        driver = None
    return CompatTarget(
        first=first,
        second=partner,
        second_missing=missing,
        simulated=simulated,
        gpu_name=gpu_name,
        driver_version=driver,
    )
