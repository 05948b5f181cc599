"""Time-slicing: several processes on one device, each with its own CUDA context.

Time-slicing is what a GPU does by default: without MPS, the contexts of
processes that share a device take turns on it. It needs nothing set up,
only a compute mode that lets several processes open the device. In
``EXCLUSIVE_PROCESS`` (and the old ``EXCLUSIVE_THREAD``) mode only one
context may exist, so the second process fails to create one; in
``PROHIBITED`` mode none may. :func:`check_timeslicing` reads the mode of
each device through NVML, records it, and refuses a time-sliced run in those
modes before any worker starts. migperf never changes the compute mode: that
needs root (``sudo nvidia-smi -i N -c DEFAULT``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from migperf.errors import MigperfError

if TYPE_CHECKING:
    from migperf.nvml.facade import Nvml

__all__ = ["SHARED_MODES", "check_timeslicing", "compute_modes"]

#: Compute modes in which several processes may hold a context on one device.
SHARED_MODES = frozenset({"DEFAULT"})
_ONE_PROCESS = {
    "EXCLUSIVE_PROCESS": "only one process may use it at a time",
    "EXCLUSIVE_THREAD": "only one thread of one process may use it at a time",
    "PROHIBITED": "no process may use it",
}


def compute_modes(nvml: Nvml, gpu_index: int, devices: Iterable[str] = ()) -> dict[str, str]:
    """The compute mode of each device (``nvidia-smi --query-gpu=compute_mode``).

    Args:
        nvml: An open NVML facade.
        gpu_index: The physical GPU the devices are on.
        devices: GPU indices as text (``"0"``) or MIG device UUIDs; none: the GPU itself.

    Returns:
        Device -> ``DEFAULT``, ``EXCLUSIVE_PROCESS``, ``EXCLUSIVE_THREAD``,
        ``PROHIBITED``, or ``unknown`` where NVML does not report one.

    Raises:
        MigperfError: When NVML fails (a missing GPU or MIG device, no driver).
    """
    out: dict[str, str] = {}
    for device in list(devices) or [str(gpu_index)]:
        text = str(device)
        if text.startswith("MIG-"):
            mode = nvml.compute_mode(gpu_index, mig_uuid=text)
        else:
            mode = nvml.compute_mode(int(text) if text.isdigit() else gpu_index)
        out[text] = mode or "unknown"
    return out


def check_timeslicing(nvml: Nvml, gpu_index: int, devices: Iterable[str] = ()) -> dict[str, str]:
    """Check that several processes may share each device, and record its compute mode.

    Args:
        nvml: An open NVML facade.
        gpu_index: The physical GPU the devices are on.
        devices: GPU indices as text (``"0"``) or MIG device UUIDs; none: the GPU itself.

    Returns:
        Device -> compute mode (see :func:`compute_modes`), for the stored results.

    Raises:
        MigperfError: When a device is in ``EXCLUSIVE_PROCESS``,
            ``EXCLUSIVE_THREAD`` or ``PROHIBITED`` mode, or NVML fails.
    """
    modes = compute_modes(nvml, gpu_index, devices)
    refused = {d: m for d, m in modes.items() if m in _ONE_PROCESS}
    if refused:
        device, mode = next(iter(refused.items()))
        where = f"GPU {device}" if device.isdigit() else f"{device} on GPU {gpu_index}"
        others = f" (and {len(refused) - 1} more device(s))" if len(refused) > 1 else ""
        raise MigperfError(
            f"cannot time-slice {where}{others}: its compute mode is {mode}, so "
            f"{_ONE_PROCESS[mode]}; time-sliced processes need the DEFAULT compute mode",
            hint=f"an administrator can set it with `sudo nvidia-smi -i {gpu_index} -c DEFAULT` "
            "(migperf never changes the compute mode); or measure with MPS or MIG instead",
        )
    return modes
