"""Where an experiment's runs execute: this machine, or every node of a cluster.

An :class:`Executor` turns a validated config into stored results in two
steps, so a CLI can show the plan (``--dry-run``) before anything changes:

* :meth:`Executor.plan` binds the config to the GPUs it will use and expands
  the sweep; nothing changes anywhere.
* :meth:`Executor.run` executes that plan and stores every result in one
  :class:`~migperf.results.store.ResultsStore`, written by the calling
  process only.

Executors, chosen by ``migperf run --executor`` or the config's ``executor``
field (which is not part of the config hash, so the same sweep has the same
run keys wherever it runs):

* ``local``: :class:`LocalExecutor`, this machine's GPUs through
  :class:`~migperf.experiments.runner.ExperimentRunner` (what ``migperf run``
  always did).
* ``ray`` or ``ray:ADDRESS``: :class:`~migperf.experiments.ray_executor.RayExecutor`,
  one agent per node of a Ray cluster (needs ``pip install "migperf[ray]"``).

A new engine (Slurm, Kubernetes Jobs) is one more module with an
:class:`Executor` subclass that runs :mod:`migperf.experiments.node_runner`
on each node, plus one entry in :data:`EXECUTORS`.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from migperf.errors import UsageError

if TYPE_CHECKING:
    from migperf.experiments.config import ExperimentConfig
    from migperf.experiments.runner import Event, ExperimentPlan, ExperimentReport
    from migperf.nvml.facade import Nvml
    from migperf.results.store import ResultsStore

#: Executor kind -> what its address means (None: takes no address).
EXECUTORS: dict[str, str | None] = {
    "local": None,
    "ray": "a Ray cluster address (host:port, ray://host:10001, or auto)",
}

RAY_INSTALL_HINT = 'install Ray with `pip install "migperf[ray]"`'

PlanT = TypeVar("PlanT")


@dataclass(frozen=True)
class ExecutorSpec:
    """A parsed ``--executor`` value: ``local``, ``ray``, ``ray:10.0.0.5:6379``."""

    kind: str
    address: str | None = None

    def __str__(self) -> str:
        return self.kind if self.address is None else f"{self.kind}:{self.address}"


def parse_executor(text: str, source: str = "--executor") -> ExecutorSpec:
    """Parse ``KIND[:ADDRESS]``.

    Raises:
        UsageError: an unknown kind, or an address for an executor that takes none.
    """
    kind, sep, address = text.strip().partition(":")
    kind = kind.strip().lower()
    known = ", ".join(f"{k}[:ADDRESS]" if v else k for k, v in EXECUTORS.items())
    if kind not in EXECUTORS:
        raise UsageError(
            f"{source}: unknown executor {text!r}",
            hint=f"use one of {known}",
        )
    address = address.strip()
    if sep and EXECUTORS[kind] is None:
        raise UsageError(f"{source}: executor {kind!r} takes no address ({text!r})", hint=known)
    if sep and not address:
        raise UsageError(
            f"{source}: {text!r} names no address after the colon",
            hint=f"give {EXECUTORS[kind]}, or plain {kind!r}",
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


class Executor(ABC, Generic[PlanT]):
    """Runs an experiment's sweep somewhere and stores every result.

    Use as a context manager: :meth:`close` gives back whatever the executor
    holds (NVML, cluster agents, a cluster connection).
    """

    NAME: ClassVar[str]

    @abstractmethod
    def plan(self, cfg: ExperimentConfig, source: str = "config") -> PlanT:
        """Bind the config to the GPUs that will run it; change nothing.

        Raises:
            ConfigError: the config does not fit those GPUs (every problem listed).
        """

    @abstractmethod
    def run(
        self,
        plan: PlanT,
        store: ResultsStore,
        *,
        resume: bool = False,
        on_event: Event | None = None,
    ) -> ExperimentReport:
        """Execute a plan from :meth:`plan`, storing each result as it arrives.

        Returns:
            What was done; ``interrupted`` after Ctrl-C (every GPU is still restored).
        """

    def close(self) -> None:
        """Give back what the executor holds."""

    def __enter__(self) -> Executor[PlanT]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LocalExecutor(Executor["ExperimentPlan"]):
    """This machine's GPUs: :func:`plan_experiment` and :class:`ExperimentRunner`.

    Args:
        nvml: Open NVML (closed by the caller, not here).
        root: migperf state directory (tests).
    """

    NAME = "local"

    def __init__(self, nvml: Nvml, *, root: Path | None = None) -> None:
        self.nvml = nvml
        self.root = root

    def plan(self, cfg: ExperimentConfig, source: str = "config") -> ExperimentPlan:
        """See :meth:`Executor.plan`."""
        from migperf.experiments.runner import plan_experiment

        return plan_experiment(self.nvml, cfg, source)

    def run(
        self,
        plan: ExperimentPlan,
        store: ResultsStore,
        *,
        resume: bool = False,
        on_event: Event | None = None,
    ) -> ExperimentReport:
        """See :meth:`Executor.run`."""
        from migperf.experiments.runner import ExperimentRunner

        runner = ExperimentRunner(
            self.nvml, plan, store, resume=resume, on_event=on_event, root=self.root
        )
        return runner.run()


def open_executor(
    spec: ExecutorSpec | str,
    *,
    nvml: Nvml | None = None,
    simulate: str | None = None,
    read_only: bool | None = None,
    **options: Any,
) -> Executor[Any]:
    """The executor a spec names.

    Args:
        spec: ``local``, ``ray``, ``ray:ADDRESS`` (or its parsed form).
        nvml: For ``local``: this machine's open NVML.
        simulate: For clusters: a ``--simulate`` spec every node uses instead
            of its driver (None: each node's ``MIGPERF_SIMULATE``, else its driver).
        read_only: For clusters: refuse GPU changes on every node (None: each
            node's ``MIGPERF_READ_ONLY``).
        options: Executor-specific settings (e.g. ``heartbeat_timeout_s`` for Ray).

    Raises:
        UsageError: an unknown executor, or Ray is not installed.
    """
    parsed = parse_executor(spec) if isinstance(spec, str) else spec
    if parsed.kind == "local":
        if nvml is None:
            raise UsageError(
                "the local executor needs this machine's NVML", hint="pass nvml=open_nvml(...)"
            )
        return LocalExecutor(nvml, **options)
    require_ray(f"--executor {parsed}")
    from migperf.experiments.ray_executor import RayExecutor

    return RayExecutor(parsed.address, simulate=simulate, read_only=read_only, **options)
