"""Planning an experiment on this machine: the config bound to its GPUs, nothing changed.

:func:`plan_experiment` resolves and solves every layout on every GPU the
config names (all problems reported at once), expands the sweep into runs
(:mod:`migperf.experiments.sweep`) and returns an :class:`ExperimentPlan`
that :class:`~migperf.experiments.runner.ExperimentRunner` executes. Read-only
mode is checked here, before anything is measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from migperf.errors import ConfigError, MigperfError, ReadOnlyError
from migperf.experiments.config import ExperimentConfig
from migperf.experiments.estimates import RunTimes
from migperf.experiments.sweep import CURRENT, DISABLED, RunPlan, expand
from migperf.mig.manager import target_for_layout
from migperf.mig.snapshot import MigSnapshot, take_snapshot
from migperf.nvml.facade import Nvml

__all__ = ["ExperimentPlan", "changes_layouts", "plan_experiment", "refuse_read_only"]

READ_ONLY_HINT = "use `layouts: [current]` to measure the GPU as it is, or drop --read-only"


@dataclass
class ExperimentPlan:
    """A validated config bound to this machine's GPUs."""

    config: ExperimentConfig
    gpus: list[int]
    targets: dict[tuple[int, int], MigSnapshot | None]
    runs: list[RunPlan]
    simulated: bool = False
    run_times: RunTimes | None = None

    @property
    def changes_layouts(self) -> bool:
        """Whether running it changes a MIG layout (any layout other than ``current``)."""
        return changes_layouts(self.config)

    def estimated_duration_s(self) -> float:
        """The expected wall time: each run from this machine's history, else a default."""
        times = self.run_times or RunTimes(Path("/nonexistent"))
        stop = self.config.stop
        warm = getattr(self.config, "workers", "fresh") == "warm"
        total = sum(
            times.seconds(
                r.job.workload, r.job.task, self.simulated, stop.min_duration_s, warm=warm
            )[0]
            for r in self.runs
        )
        return total + len(self.config.layouts) * len(self.gpus) * 2.0

    def learned(self) -> bool:
        """Whether every run's estimate comes from runs this machine has done."""
        times = self.run_times or RunTimes(Path("/nonexistent"))
        stop = self.config.stop
        return all(
            times.seconds(r.job.workload, r.job.task, self.simulated, stop.min_duration_s)[1]
            for r in self.runs
        )

    def headline(self) -> str:
        """``quickstart: 3 layout(s) x 1 GPU(s), 9 run(s); estimated 1.2 min``."""
        sim = (
            " on a SIMULATED GPU (workloads run on the CPU; every result is marked simulated)"
            if self.simulated
            else ""
        )
        return (
            f"{self.config.name}: {len(self.config.layouts)} layout(s) x {len(self.gpus)} GPU(s), "
            f"{len(self.runs)} run(s){sim}; estimated {self.estimated_duration_s() / 60:.1f} min"
            + (
                ""
                if self.learned()
                else " (a first guess: this machine has not run these jobs yet)"
            )
        )

    def describe(self) -> list[str]:
        """The plan for people: each layout on each GPU, then every run."""
        lines = []
        for (li, gpu), snap in sorted(self.targets.items()):
            layout = self.config.layouts[li]
            shown = snap.describe() if snap is not None else "(GPU as it is, MIG off)"
            lines.append(f"layout {li + 1}: {layout} on GPU {gpu}: {shown}")
        lines.extend(f"  run {i}: {run.describe()}" for i, run in enumerate(self.runs, 1))
        return lines


def changes_layouts(cfg: ExperimentConfig) -> bool:
    """Whether a config asks for any layout other than ``current``."""
    return any(layout.strip().lower() != CURRENT for layout in cfg.layouts)


def refuse_read_only(cfg: ExperimentConfig, source: str) -> None:
    """The read-only rule for experiments: only ``current`` layouts may run.

    Raises:
        ReadOnlyError: the config changes layouts.
    """
    if changes_layouts(cfg):
        raise ReadOnlyError(
            f"refusing to run {source}: it changes MIG layouts and read-only mode is on",
            hint=READ_ONLY_HINT,
        )


def _gpus(nvml: Nvml, cfg: ExperimentConfig) -> list[int]:
    count = nvml.gpu_count()
    if cfg.gpus == "all":
        return list(range(count))
    missing = [g for g in cfg.gpus if g >= count]
    if missing:
        raise ConfigError(
            f"gpus: GPU {', '.join(map(str, missing))} does not exist; this machine has {count} GPU(s)",
            hint="list them with `migperf gpus`",
        )
    return list(cfg.gpus)


def plan_experiment(
    nvml: Nvml, cfg: ExperimentConfig, source: str = "config", *, dry_run: bool = True
) -> ExperimentPlan:
    """Bind a config to this machine and expand it into runs, changing nothing.

    Args:
        nvml: Open NVML.
        cfg: The validated config.
        source: Where the config came from (for messages).
        dry_run: Only look at the plan. When False the plan is meant to run,
            and read-only mode refuses a config that changes layouts here,
            before anything is measured.

    Raises:
        ConfigError: a GPU does not exist, or layouts do not fit (every problem listed).
        ReadOnlyError: not ``dry_run``, read-only mode is on, and the config changes layouts.
    """
    if not dry_run and nvml.read_only:
        refuse_read_only(cfg, source)
    gpus = _gpus(nvml, cfg)
    targets: dict[tuple[int, int], MigSnapshot | None] = {}
    problems: list[str] = []
    for gpu in gpus:
        info = nvml.gpu(gpu)
        mig_on = bool(info.mig_mode and info.mig_mode.current)
        current = take_snapshot(nvml, gpu) if mig_on else None
        for li, layout in enumerate(cfg.layouts):
            if layout.strip().lower() == CURRENT:
                targets[(li, gpu)] = current
                continue
            if layout.strip().lower() == DISABLED:
                # The whole GPU without MIG; a GPU without MIG already is one.
                off = info.mig_mode is not None
                targets[(li, gpu)] = MigSnapshot(gpu, info.uuid, False, ()) if off else None
                continue
            if not mig_on:
                problems.append(
                    f"layouts[{li}] {layout!r}: MIG mode is {'not supported' if info.mig_mode is None else 'disabled'} "
                    f"on GPU {gpu} ({info.name})"
                )
                continue
            try:
                targets[(li, gpu)] = target_for_layout(nvml, gpu, layout)
            except MigperfError as exc:
                problems.append(
                    f"layouts[{li}] {layout!r} on GPU {gpu} ({info.name}): {exc.message}"
                )
    if problems:
        head = (
            f"{len(problems)} problem(s) in {source}:\n  " if len(problems) > 1 else f"{source}: "
        )
        raise ConfigError(
            head + "\n  ".join(problems),
            hint="fix the layouts (check them with `migperf mig check LAYOUT --gpu N`), or enable MIG "
            "with `migperf mig enable`; `current` uses the GPU as it is",
        )
    runs = expand(cfg, targets)
    if not runs:
        raise ConfigError(
            f"{source}: the experiment plans no runs: its layouts leave no slot matching "
            f"instances: {cfg.instances!r} (a `current` layout of a MIG-enabled GPU without instances has none)",
            hint="create instances first (`migperf mig apply`), disable MIG to measure the whole GPU, "
            "or list layouts to sweep",
        )
    return ExperimentPlan(
        cfg, gpus, targets, runs, simulated=nvml.simulated, run_times=RunTimes.load()
    )
