"""Turn ``--device`` into a worker environment.

A worker is pinned to one device by its environment alone, never by code in
the worker: ``cpu`` hides every GPU (``CUDA_VISIBLE_DEVICES=""``), an index
selects that GPU (``CUDA_VISIBLE_DEVICES=0``, numbered like ``nvidia-smi`` via
``CUDA_DEVICE_ORDER=PCI_BUS_ID``), and ``MIG-<uuid>`` selects one MIG device
(``nvidia-smi -L`` lists the UUIDs). A simulated GPU slot (``simulated=True``)
always runs on the CPU and says so in its results.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from migperf.errors import UsageError

__all__ = ["DeviceSelection", "resolve_device", "worker_env"]

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# R470+ drivers name MIG devices MIG-<uuid>; older ones MIG-GPU-<uuid>/<gi>/<ci>.
_MIG_RE = re.compile(rf"^MIG-(?:{_UUID}|GPU-{_UUID}/\d+/\d+)$")
_GPU_RE = re.compile(rf"^GPU-{_UUID}$")

# Variables every worker gets, whatever the device: no network access for
# transformers (weights are random, nothing may be downloaded), GPU indices
# that match nvidia-smi, unbuffered stderr so a crash leaves its last lines.
_WORKER_DEFAULTS = {
    "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}


@dataclass(frozen=True)
class DeviceSelection:
    """Where a worker should run.

    Attributes:
        requested: What the user gave (``cpu``, ``0``, ``MIG-...``), ``None`` for the default.
        kind: ``cpu``, ``cuda``, or ``auto`` (CUDA when the worker sees a device, else CPU).
        cuda_visible_devices: Value for ``CUDA_VISIBLE_DEVICES``; ``None`` keeps the caller's.
        simulated: A simulated GPU slot: forced onto the CPU, results marked simulated.
    """

    requested: str | None
    kind: Literal["cpu", "cuda", "auto"]
    cuda_visible_devices: str | None
    simulated: bool = False

    @property
    def label(self) -> str:
        """A short description for tables (``cpu``, ``GPU 0``, ``MIG-...``)."""
        if self.simulated:
            return f"{self.requested or 'GPU'} (simulated, on CPU)"
        if self.kind == "cpu":
            return "cpu"
        if self.kind == "auto":
            return "auto"
        assert self.cuda_visible_devices is not None
        if self.cuda_visible_devices.isdigit():
            return f"GPU {self.cuda_visible_devices}"
        return self.cuda_visible_devices

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The full environment for a worker on this device.

        Args:
            base: Environment to start from (``os.environ`` when ``None``).

        Returns:
            A new dict; ``base`` is not modified.
        """
        env = dict(os.environ if base is None else base)
        env.update(_WORKER_DEFAULTS)
        if self.cuda_visible_devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.cuda_visible_devices
        return env


def resolve_device(device: str | int | None, *, simulated: bool = False) -> DeviceSelection:
    """Parse a ``--device`` value.

    Args:
        device: ``cpu``; a GPU index (``0``); ``MIG-<uuid>``; ``GPU-<uuid>``;
            ``None`` for auto (the first CUDA device the worker sees, else CPU).
        simulated: The device is a simulated GPU slot; the worker gets the CPU.

    Returns:
        The selection.

    Raises:
        UsageError: When the value is none of the accepted forms.
    """
    text = None if device is None else str(device).strip()
    if simulated:
        if text is not None and text.lower() != "cpu":
            _parse(text)  # still reject nonsense
        return DeviceSelection(requested=text, kind="cpu", cuda_visible_devices="", simulated=True)
    if text is None or text == "" or text.lower() == "auto":
        return DeviceSelection(requested=text or None, kind="auto", cuda_visible_devices=None)
    return _parse(text)


def _parse(text: str) -> DeviceSelection:
    if text.lower() == "cpu":
        return DeviceSelection(requested=text, kind="cpu", cuda_visible_devices="")
    if text.isdigit():
        return DeviceSelection(requested=text, kind="cuda", cuda_visible_devices=str(int(text)))
    if text.lower().startswith("cuda:") and text[5:].isdigit():
        return DeviceSelection(requested=text, kind="cuda", cuda_visible_devices=str(int(text[5:])))
    if _MIG_RE.match(text) or _GPU_RE.match(text):
        return DeviceSelection(requested=text, kind="cuda", cuda_visible_devices=text)
    raise UsageError(
        f"--device {text!r} is not a device: expected cpu, a GPU index (0), or a MIG device UUID "
        "(MIG-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
        hint="list GPU indices and MIG device UUIDs with `migperf gpus` or `nvidia-smi -L`",
    )


def worker_env(
    device: str | int | None,
    *,
    simulated: bool = False,
    base_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment for a worker on ``device`` (see :func:`resolve_device`).

    Raises:
        UsageError: When ``device`` is not an accepted form.
    """
    return resolve_device(device, simulated=simulated).env(base_env)
