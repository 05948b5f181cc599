"""Which executors exist, and parsing ``--executor KIND[:ADDRESS]``.

A leaf module (it imports no executor): the config schema validates its
``executor`` field here, and :func:`migperf.experiments.executor.open_executor`
loads the class an entry names by its import path, so adding an engine
(Slurm, Kubernetes Jobs) is one module plus one entry in :data:`EXECUTORS`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from migperf.errors import UsageError

__all__ = [
    "EXECUTORS",
    "RAY_INSTALL_HINT",
    "ExecutorEntry",
    "ExecutorSpec",
    "parse_executor",
    "ray_available",
    "require_ray",
]

RAY_INSTALL_HINT = 'install Ray with `pip install "migperf[ray]"`'


@dataclass(frozen=True)
class ExecutorEntry:
    """One kind of executor.

    Attributes:
        path: ``module:Class`` of its :class:`~migperf.experiments.executor.Executor`.
        address: What its address means; None when it takes none.
    """

    path: str
    address: str | None = None


#: Executor kind -> where its class lives and what its address means.
EXECUTORS: dict[str, ExecutorEntry] = {
    "local": ExecutorEntry("migperf.experiments.local:LocalExecutor"),
    "ray": ExecutorEntry(
        "migperf.experiments.cluster.ray_executor:RayExecutor",
        "a Ray cluster address (host:port, ray://host:10001, or auto)",
    ),
    "slurm": ExecutorEntry(
        "migperf.experiments.cluster.slurm:SlurmExecutor",
        "a Slurm partition",
    ),
}


@dataclass(frozen=True)
class ExecutorSpec:
    """A parsed ``--executor`` value: ``local``, ``ray``, ``ray:10.0.0.5:6379``.

    ``options``: the settings of the mapping form (``executor: {slurm: {...}}``).
    """

    kind: str
    address: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __str__(self) -> str:
        return self.kind if self.address is None else f"{self.kind}:{self.address}"


def parse_executor(text: str | Mapping[str, Any], source: str = "--executor") -> ExecutorSpec:
    """Parse ``KIND[:ADDRESS]``, or the mapping form ``{KIND[:ADDRESS]: {option: value}}``.

    Raises:
        UsageError: an unknown kind, an address for an executor that takes
            none, or a mapping that is not one kind with its options.
    """
    if isinstance(text, Mapping):
        if len(text) != 1 or not isinstance(next(iter(text.values())) or {}, Mapping):
            raise UsageError(
                f"{source}: give one executor with its options, e.g. {{slurm: {{partition: gpu}}}}",
                hint=f"got {dict(text)!r}",
            )
        name, options = next(iter(text.items()))
        spec = parse_executor(str(name), source)
        return ExecutorSpec(spec.kind, spec.address, dict(options or {}))
    kind, sep, address = text.strip().partition(":")
    kind = kind.strip().lower()
    known = ", ".join(f"{k}[:ADDRESS]" if v.address else k for k, v in EXECUTORS.items())
    if kind not in EXECUTORS:
        raise UsageError(
            f"{source}: unknown executor {text!r}",
            hint=f"use one of {known}",
        )
    address = address.strip()
    if sep and EXECUTORS[kind].address is None:
        raise UsageError(f"{source}: executor {kind!r} takes no address ({text!r})", hint=known)
    if sep and not address:
        raise UsageError(
            f"{source}: {text!r} names no address after the colon",
            hint=f"give {EXECUTORS[kind].address}, or plain {kind!r}",
        )
    return ExecutorSpec(kind, address or None)


def require_ray(what: str = "--executor ray") -> ModuleType:
    """Import Ray, or explain how to get it.

    Raises:
        UsageError: Ray is not installed.
    """
    try:
        import ray
    except ImportError as exc:
        raise UsageError(
            f"{what} needs Ray, which is not installed in this Python ({exc})",
            hint=RAY_INSTALL_HINT + " on the driver and on every node",
        ) from None
    return ray


def ray_available() -> bool:
    """Whether Ray can be imported (without importing it)."""
    return importlib.util.find_spec("ray") is not None
