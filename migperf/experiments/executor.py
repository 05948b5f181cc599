"""Where an experiment's runs execute: this machine, or every node of a cluster.

An :class:`Executor` turns a validated config into stored results in two
steps, so a caller can show the plan (``--dry-run``) before anything changes:

* :meth:`Executor.plan` binds the config to the GPUs it will use and expands
  the sweep; nothing changes anywhere. Unless it is a dry run, read-only mode
  refuses a config that changes layouts here.
* :meth:`Executor.run` executes that plan and stores every result in one
  :class:`~migperf.results.store.ResultsStore`, written by the calling
  process only, and reports progress as plain events
  (:mod:`migperf.experiments.events`).

Executors, chosen by ``migperf run --executor`` or the config's ``executor``
field (which is not part of the config hash, so the same sweep has the same
run keys wherever it runs), are listed with their import paths in
:data:`migperf.experiments.executor_spec.EXECUTORS`:

* ``local``: :class:`~migperf.experiments.local.LocalExecutor`, this
  machine's GPUs through :class:`~migperf.experiments.runner.ExperimentRunner`.
* ``ray`` or ``ray:ADDRESS``: :class:`~migperf.experiments.cluster.ray_executor.RayExecutor`,
  one agent per node of a Ray cluster (needs ``pip install "migperf[ray]"``).
* ``slurm`` or ``slurm:PARTITION``: :class:`~migperf.experiments.cluster.slurm.SlurmExecutor`,
  the runs spread over Slurm batch jobs (``sbatch``), each writing its own shard.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from migperf.experiments.executor_spec import EXECUTORS, ExecutorSpec, parse_executor

if TYPE_CHECKING:
    from migperf.experiments.config import ExperimentConfig
    from migperf.experiments.events import Event
    from migperf.experiments.runner import ExperimentReport
    from migperf.nvml.facade import Nvml
    from migperf.results.store import ResultsStore

__all__ = ["Executor", "PlanView", "open_executor"]


class PlanView(Protocol):
    """What every executor's plan shows its caller."""

    runs: Any

    def estimated_duration_s(self) -> float:
        """A rough duration estimate in seconds."""

    def headline(self) -> str:
        """One line: the experiment, its size, where it runs, the estimate."""

    def describe(self) -> list[str]:
        """The plan for people, a line each (``--dry-run``)."""


PlanT = TypeVar("PlanT", bound=PlanView)


class Executor(ABC, Generic[PlanT]):
    """Runs an experiment's sweep somewhere and stores every result.

    Use as a context manager: :meth:`close` gives back whatever the executor
    holds (NVML, cluster agents, a cluster connection).

    Attributes:
        notes: Things the user should know before the plan (e.g. that no
            driver was found and a simulated GPU is used).
    """

    NAME: ClassVar[str]
    notes: list[str]

    @classmethod
    @abstractmethod
    def open(
        cls,
        address: str | None,
        *,
        nvml: Nvml | None = None,
        simulate: str | None = None,
        read_only: bool | None = None,
        **options: Any,
    ) -> Executor[PlanT]:
        """Make the executor (see :func:`open_executor` for the arguments)."""

    @abstractmethod
    def plan(self, cfg: ExperimentConfig, source: str = "config", *, dry_run: bool = True) -> PlanT:
        """Bind the config to the GPUs that will run it; change nothing.

        Args:
            cfg: The validated config.
            source: Where it came from (for messages).
            dry_run: Only to look at. When False the plan is meant to run,
                and read-only mode refuses a config that changes layouts.

        Raises:
            ConfigError: the config does not fit those GPUs (every problem listed).
            ReadOnlyError: not a dry run, read-only, and the config changes layouts.
        """

    @abstractmethod
    def run(
        self,
        plan: PlanT,
        store: ResultsStore,
        *,
        resume: bool = False,
        rerun: bool = False,
        on_event: Event | None = None,
    ) -> ExperimentReport:
        """Execute a plan from :meth:`plan`, storing each result as it arrives.

        Args:
            plan: From :meth:`plan`.
            store: Where every result goes (written by this process only).
            resume: Run only what is missing and retry runs whose latest attempt failed.
            rerun: Measure every run again as a new attempt (old attempts are kept).
            on_event: Progress, as plain events (:mod:`migperf.experiments.events`).

        Raises:
            UsageError: the store already holds runs of this config and neither
                ``resume`` nor ``rerun`` is set (nothing ran).
            LockHeldError: another process leases a GPU of the plan (nothing ran).

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


def open_executor(
    spec: ExecutorSpec | str | Mapping[str, Any],
    *,
    nvml: Nvml | None = None,
    simulate: str | None = None,
    read_only: bool | None = None,
    **options: Any,
) -> Executor[Any]:
    """The executor a spec names, ready to plan.

    Args:
        spec: ``local``, ``ray``, ``ray:ADDRESS`` (or its parsed form).
        nvml: For ``local``: this machine's open NVML, which the caller
            closes (default: opened here, falling back to a simulated GPU
            when no driver is found, and closed with the executor).
        simulate: A ``--simulate`` spec: this machine's, or on a cluster the
            one every node uses instead of its driver (None: each node's
            ``MIGPERF_SIMULATE``, else its driver).
        read_only: Refuse GPU changes (None: ``MIGPERF_READ_ONLY``, on a
            cluster each node's).
        options: Executor-specific settings (e.g. ``heartbeat_timeout_s`` for Ray).

    Raises:
        UsageError: an unknown executor, or its engine is not installed.
    """
    parsed = spec if isinstance(spec, ExecutorSpec) else parse_executor(spec)
    module, _, name = EXECUTORS[parsed.kind].path.partition(":")
    cls: type[Executor[Any]] = getattr(importlib.import_module(module), name)
    options = {**parsed.options, **options}  # the config's `executor: {kind: {...}}` settings
    return cls.open(parsed.address, nvml=nvml, simulate=simulate, read_only=read_only, **options)
