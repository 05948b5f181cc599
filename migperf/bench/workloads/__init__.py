"""The workload registry: every benchmark workload by name.

The table here is static and imports nothing heavy, so the CLI can list and
validate names without torch. :func:`build_workload` imports the family
module (and with it torch and transformers) only when a workload is built,
which happens in the worker process.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from migperf.errors import UsageError

if TYPE_CHECKING:
    import torch

    from migperf.bench.spec import BenchSpec
    from migperf.bench.workloads.base import PreparedWorkload, Workload

__all__ = ["WorkloadInfo", "build_workload", "load_workload", "workload_info", "workload_names"]


@dataclass(frozen=True)
class WorkloadInfo:
    """A registered workload.

    Attributes:
        name: Registry name (``resnet50``).
        family: ``vision``, ``language``, ``micro`` or ``synthetic``.
        module: Module defining the class, relative to this package.
        cls: Class name in that module.
        tasks: Tasks the workload supports.
        description: One line for help texts.
    """

    name: str
    family: str
    module: str
    cls: str
    tasks: tuple[str, ...]
    description: str


_BOTH = ("train", "infer")
_REGISTRY: dict[str, WorkloadInfo] = {
    info.name: info
    for info in (
        WorkloadInfo(
            "resnet18", "vision", "vision", "ResNet18", _BOTH, "ResNet-18, 224x224 images"
        ),
        WorkloadInfo(
            "resnet34", "vision", "vision", "ResNet34", _BOTH, "ResNet-34, 224x224 images"
        ),
        WorkloadInfo(
            "resnet50", "vision", "vision", "ResNet50", _BOTH, "ResNet-50, 224x224 images"
        ),
        WorkloadInfo(
            "resnet101", "vision", "vision", "ResNet101", _BOTH, "ResNet-101, 224x224 images"
        ),
        WorkloadInfo(
            "vit-base", "vision", "vision", "VitBase", _BOTH, "ViT-Base/16, 224x224 images"
        ),
        WorkloadInfo(
            "bert-base", "language", "language", "BertBase", _BOTH, "BERT-Base classification"
        ),
        WorkloadInfo(
            "bert-large", "language", "language", "BertLarge", _BOTH, "BERT-Large classification"
        ),
        WorkloadInfo(
            "distilbert", "language", "language", "DistilBert", _BOTH, "DistilBERT classification"
        ),
        WorkloadInfo(
            "minilm", "language", "language", "MiniLM", _BOTH, "MiniLM-L12-H384 classification"
        ),
        WorkloadInfo("mpnet", "language", "language", "MPNet", _BOTH, "MPNet-Base classification"),
        WorkloadInfo(
            "roberta-base",
            "language",
            "language",
            "RobertaBase",
            _BOTH,
            "RoBERTa-Base classification",
        ),
        WorkloadInfo("gemm", "micro", "micro", "Gemm", ("infer",), "square matmul, TFLOP/s"),
        WorkloadInfo(
            "memcpy", "micro", "micro", "Memcpy", ("infer",), "device-to-device copy, GB/s"
        ),
        WorkloadInfo(
            "sleep",
            "synthetic",
            "synthetic",
            "Sleep",
            ("infer",),
            "SYNTHETIC fixed service time (model arg service_ms), no model; tests load generation",
        ),
    )
}


def workload_names() -> list[str]:
    """Registered workload names, in registry order."""
    return list(_REGISTRY)


def workload_info(name: str) -> WorkloadInfo:
    """The registry entry for ``name``.

    Raises:
        UsageError: When no workload has that name; the message suggests close names.
    """
    info = _REGISTRY.get(name) or _REGISTRY.get(name.lower())
    if info is not None:
        return info
    close = difflib.get_close_matches(name.lower(), list(_REGISTRY), n=3)
    suggestion = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UsageError(
        f"unknown workload {name!r}{suggestion}",
        hint="available: " + ", ".join(_REGISTRY),
    )


def load_workload(name: str) -> type[Workload]:
    """The workload class for ``name`` (imports its family module).

    Raises:
        UsageError: When no workload has that name.
    """
    info = workload_info(name)
    module = importlib.import_module(f"{__name__}.{info.module}")
    cls: type[Workload] = getattr(module, info.cls)
    return cls


def build_workload(spec: BenchSpec, device: torch.device) -> PreparedWorkload:
    """Build the spec's workload on ``device``, with the spec's fault injection applied.

    Raises:
        UsageError: For an unknown workload, an unsupported task, or an
            invalid model argument.
    """
    from migperf.bench.workloads.base import apply_faults

    cls = load_workload(spec.workload)
    prepared = cls(spec, device).prepare()
    prepared.step = apply_faults(prepared.step, spec)
    return prepared
