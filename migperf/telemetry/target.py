"""What a run is pinned to, in NVML's terms: the physical GPU and, on MIG, the slice.

A worker is pinned by ``CUDA_VISIBLE_DEVICES`` (a GPU index, ``GPU-<uuid>``,
``MIG-<uuid>`` or the old ``MIG-GPU-<uuid>/<gi>/<ci>``). Telemetry needs the
same device as NVML sees it: the parent GPU for board sensors, the GPU
instance for per-slice memory and activity.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from migperf.errors import GpuNotFoundError
from migperf.nvml.facade import Nvml

__all__ = ["TelemetryTarget", "resolve_target"]

_OLD_MIG = re.compile(r"^MIG-(GPU-[0-9a-fA-F-]{36})/(\d+)/(\d+)$")
_PROFILE = re.compile(r"MIG (\S+)$")


@dataclass(frozen=True)
class TelemetryTarget:
    """The device one run uses.

    Attributes:
        gpu_index: The physical GPU.
        gpu_uuid: Its UUID.
        mig_uuid: The MIG device, when the run is pinned to one.
        gi_id: Its GPU instance id.
        ci_id: Its compute instance id.
        profile: Its profile name (``3g.40gb``), when known.
    """

    gpu_index: int
    gpu_uuid: str | None = None
    mig_uuid: str | None = None
    gi_id: int | None = None
    ci_id: int | None = None
    profile: str | None = None

    @property
    def label(self) -> str:
        """``GPU 0`` or ``GPU 0 MIG 3g.40gb (MIG-...)``."""
        if self.mig_uuid is None:
            return f"GPU {self.gpu_index}"
        return f"GPU {self.gpu_index} MIG {self.profile or f'GI {self.gi_id}'} ({self.mig_uuid})"


def resolve_target(
    nvml: Nvml, device: str | int | None, env: Mapping[str, str] | None = None
) -> TelemetryTarget | None:
    """Find the device a run uses, as NVML sees it.

    Args:
        nvml: Open NVML (real or simulated).
        device: What ``--device`` said: an index, ``cuda:N``, ``GPU-<uuid>``,
            ``MIG-<uuid>``, ``cpu``, or None / ``auto`` (the worker's
            ``CUDA_VISIBLE_DEVICES`` from ``env``, else GPU 0).
        env: The worker's environment, for ``auto``.

    Returns:
        The target, or None for the CPU or a machine without GPUs.

    Raises:
        GpuNotFoundError: when the GPU or MIG device does not exist.
    """
    text = None if device is None else str(device).strip()
    if text is None or text.lower() in ("", "auto"):
        visible = (env or {}).get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            first = visible.split(",")[0].strip()
            if not first:
                return None  # CUDA_VISIBLE_DEVICES="" hides every GPU
            return resolve_target(nvml, first)
        return _gpu(nvml, 0) if nvml.gpu_count() else None
    if text.lower() == "cpu":
        return None
    if text.lower().startswith("cuda:"):
        text = text[5:]
    if text.isdigit():
        return _gpu(nvml, int(text))
    if text.startswith("GPU-"):
        for g in nvml.gpus():
            if g.uuid == text:
                return TelemetryTarget(gpu_index=g.index, gpu_uuid=g.uuid)
        raise GpuNotFoundError(
            f"no GPU has UUID {text}", hint="list GPUs and their UUIDs with `migperf gpus`"
        )
    old = _OLD_MIG.match(text)
    for g in nvml.gpus():
        if not g.mig_devices:
            continue
        for d in nvml.mig_devices(g.index):
            if d.mig_uuid == text or (
                old is not None
                and g.uuid == old[1]
                and (d.gi_id, d.ci_id) == (int(old[2]), int(old[3]))
            ):
                m = _PROFILE.search(d.name)
                return TelemetryTarget(
                    gpu_index=g.index,
                    gpu_uuid=g.uuid,
                    mig_uuid=d.mig_uuid,
                    gi_id=d.gi_id,
                    ci_id=d.ci_id,
                    profile=m[1] if m else None,
                )
    raise GpuNotFoundError(
        f"no MIG device {text} on this machine",
        hint="list MIG devices with `migperf mig show` or `nvidia-smi -L`",
    )


def _gpu(nvml: Nvml, index: int) -> TelemetryTarget:
    count = nvml.gpu_count()
    if not 0 <= index < count:
        raise GpuNotFoundError(
            f"GPU {index} does not exist: this machine has {count} GPU(s)",
            hint="list them with `migperf gpus`",
        )
    info = nvml.gpu(index)
    return TelemetryTarget(gpu_index=index, gpu_uuid=info.uuid)
