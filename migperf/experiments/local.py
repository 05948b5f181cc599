"""The ``local`` executor: this machine's GPUs, one run at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from migperf.experiments.config import ExperimentConfig
from migperf.experiments.events import Event, plain_events
from migperf.experiments.executor import Executor
from migperf.experiments.planning import ExperimentPlan, plan_experiment
from migperf.experiments.runner import ExperimentReport, ExperimentRunner
from migperf.nvml.facade import Nvml
from migperf.results.store import ResultsStore

__all__ = ["LocalExecutor"]


class LocalExecutor(Executor[ExperimentPlan]):
    """This machine's GPUs: :func:`plan_experiment` and :class:`ExperimentRunner`.

    Args:
        nvml: Open NVML.
        root: migperf state directory (tests).
        owns_nvml: Close ``nvml`` with the executor.
    """

    NAME = "local"

    def __init__(self, nvml: Nvml, *, root: Path | None = None, owns_nvml: bool = False) -> None:
        self.nvml = nvml
        self.root = root
        self.owns_nvml = owns_nvml
        self.notes = (
            [f"{nvml.fallback_reason}. Every result is marked simulated."]
            if nvml.fallback_reason
            else []
        )

    @classmethod
    def open(
        cls,
        address: str | None,
        *,
        nvml: Nvml | None = None,
        simulate: str | None = None,
        read_only: bool | None = None,
        fallback: str | None = None,
        **options: Any,
    ) -> LocalExecutor:
        """This machine's executor; opens NVML (with the simulator fallback) unless given one.

        ``fallback`` is the simulated machine to use when there is no driver
        (see :func:`migperf.experiments.fallback.simulated_machine_for`).
        """
        if nvml is not None:
            return cls(nvml, **options)
        from migperf.nvml import open_nvml

        opened = open_nvml(simulate, allow_fallback=True, read_only=read_only, fallback=fallback)
        return cls(opened, owns_nvml=True, **options)

    def plan(
        self, cfg: ExperimentConfig, source: str = "config", *, dry_run: bool = True
    ) -> ExperimentPlan:
        """See :meth:`Executor.plan`."""
        return plan_experiment(self.nvml, cfg, source, dry_run=dry_run)

    def run(
        self,
        plan: ExperimentPlan,
        store: ResultsStore,
        *,
        resume: bool = False,
        rerun: bool = False,
        on_event: Event | None = None,
    ) -> ExperimentReport:
        """See :meth:`Executor.run`."""
        runner = ExperimentRunner(
            self.nvml,
            plan,
            store,
            resume=resume,
            rerun=rerun,
            on_event=plain_events(on_event) if on_event is not None else None,
            root=self.root,
        )
        return runner.run()

    def close(self) -> None:
        """Close NVML if this executor opened it."""
        if self.owns_nvml:
            self.nvml.shutdown()
            self.owns_nvml = False
