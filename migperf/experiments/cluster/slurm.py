"""The ``slurm`` executor: a sweep spread over Slurm batch jobs.

``migperf run CONFIG --executor slurm[:PARTITION]``, or ``executor: {slurm:
{partition, account, time, jobs, nodelist, gres, exclusive, sbatch_args,
...}}`` in the config (outside the config hash, like ``ray``; see
:class:`~migperf.experiments.cluster.slurm_cli.SlurmOptions`).

* Planning: one short job on a node Slurm gives with the sweep's request
  plans the config there (the login node has no GPUs) and answers as JSON.
* Two modes, named in the plan's headline. ``current`` layouts (the default
  on Slurm, where administrators create the MIG devices and offer them as
  typed GRES): each job measures what its node has, no layout is changed.
  Layout sweeps: only with whole nodes (``exclusive: true``), each job runs
  the single-node runner with its lease and journal and restores the node.
* Running: the runs are split in ``jobs`` contiguous chunks, one ``sbatch``
  job each; :class:`~migperf.experiments.cluster.slurm_driver.SlurmSweep`
  follows them, merges their shards and handles jobs that end early.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migperf.errors import ConfigError, MigperfError, UsageError
from migperf.experiments.cluster.assignment import ClusterPlan, ClusterReport, bind_plan
from migperf.experiments.cluster.slurm_cli import (
    SLURM_HINT,
    SlurmOptions,
    job_states,
    parse_options,
    sbatch,
    scancel,
)
from migperf.experiments.cluster.slurm_driver import SlurmSweep, chunk, job_script
from migperf.experiments.config import ExperimentConfig
from migperf.experiments.events import Event
from migperf.experiments.executor import Executor
from migperf.experiments.planning import refuse_read_only
from migperf.results.store import ResultsStore

if TYPE_CHECKING:
    from migperf.nvml.facade import Nvml

__all__ = ["SlurmExecutor", "SlurmPlan"]


class SlurmPlan:
    """A config bound to the node a planning job saw, split into Slurm jobs."""

    def __init__(
        self, cluster: ClusterPlan, opts: SlurmOptions, workdir: Path, planner_job: str
    ) -> None:
        self.cluster = cluster
        self.opts = opts
        self.workdir = workdir
        self.planner_job = planner_job
        self.config = cluster.config
        self.runs = cluster.runs
        self.layout_sweep = cluster.config.layouts != ["current"]

    def chunks(self) -> list[list[str]]:
        """The runs of each job, in plan order."""
        return chunk(list(self.runs), self.opts.jobs)

    def mode(self) -> str:
        """The mode, in words."""
        if self.layout_sweep:
            return "layout sweep on whole nodes (--exclusive): each job applies its layouts under the node's lease and journal and restores them"
        return (
            "current layouts: each job measures the MIG devices its node has, nothing is "
            "repartitioned (jobs do not narrow to the GRES slices Slurm granted: ask for whole GPUs)"
        )

    def estimated_duration_s(self) -> float:
        """The longest job's runs, as the local runner estimates them."""
        per_run = self.config.stop.min_duration_s + 6.0
        return (
            max((len(c) for c in self.chunks()), default=0) * per_run
            + len(self.config.layouts) * 2.0
        )

    def headline(self) -> str:
        """One line: size, where, mode, estimate."""
        node = next(iter(self.cluster.nodes.values()), None)
        sim = " SIMULATED (workloads run on the CPU)" if node and node.simulated else ""
        where = (
            f"partition {self.opts.partition}" if self.opts.partition else "the default partition"
        )
        return (
            f"{self.config.name}: {len(self.runs)} run(s) in {len(self.chunks())} Slurm job(s) on "
            f"{where} ({node.model if node else '?'}{sim}, planned by job {self.planner_job}); "
            f"mode: {self.mode()}; estimated {self.estimated_duration_s() / 60:.1f} min"
        )

    def describe(self) -> list[str]:
        """Each job's runs."""
        lines = [f"sbatch options: {' '.join(self.opts.sbatch_options(0))}"]
        for i, keys in enumerate(self.chunks()):
            lines.append(f"job {i + 1}: {len(keys)} run(s)")
            lines.extend(f"  {self.runs[k].description}" for k in keys)
        return lines


class SlurmExecutor(Executor[SlurmPlan]):
    """Runs a sweep as Slurm batch jobs (see the module docstring)."""

    NAME = "slurm"

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
    ) -> SlurmExecutor:
        """The executor for ``slurm[:PARTITION]`` with the config's options (``nvml``, ``fallback``: unused).

        Raises:
            UsageError: Slurm's commands are missing, or an option is invalid.
        """
        opts = parse_options(options, address)
        if shutil.which("sbatch") is None or shutil.which("squeue") is None:
            raise UsageError(
                "--executor slurm needs Slurm's client commands (sbatch, squeue, scancel), "
                "which are not on PATH here",
                hint=SLURM_HINT,
            )
        return cls(opts, simulate=simulate, read_only=read_only)

    def __init__(
        self, opts: SlurmOptions, *, simulate: str | None = None, read_only: bool | None = None
    ) -> None:
        self.opts = opts
        self.simulate = simulate
        self.read_only = read_only
        self.notes: list[str] = []

    def workdir(self, cfg: ExperimentConfig) -> Path:
        """Where this config's shards, job scripts and logs live (a shared folder)."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", cfg.name)
        base = Path(self.opts.workdir or ".migperf-slurm").expanduser().resolve()
        path = base / f"{safe}-{cfg.config_hash()[:12]}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def plan(
        self, cfg: ExperimentConfig, source: str = "config", *, dry_run: bool = True
    ) -> SlurmPlan:
        """Plan the config on a node Slurm gives (one short job); change nothing.

        Raises:
            ConfigError: a layout sweep without whole nodes, or the config does not fit the node.
            ReadOnlyError: not a dry run, read-only, and the config changes layouts.
            MigperfError: the planning job failed or did not finish in ``plan_timeout_s``.
        """
        import migperf

        if cfg.layouts != ["current"] and not self.opts.exclusive:
            raise ConfigError(
                f"{source}: layouts {cfg.layouts} change MIG, which a Slurm job may do only on "
                "a whole node",
                hint="set `executor: {slurm: {exclusive: true}}` (whole nodes), or use "
                "`layouts: [current]` to measure the MIG devices each job's node has",
            )
        if not dry_run and self.read_only:
            refuse_read_only(cfg, source)
        workdir = self.workdir(cfg)
        name = f"plan-{time.strftime('%Y%m%d-%H%M%S')}"
        request, answer = workdir / f"{name}.request.json", workdir / f"{name}.json"
        request.write_text(
            json.dumps(
                {
                    "config": cfg.model_dump(mode="json"),
                    "simulate": self.simulate,
                    "read_only": self.read_only,
                    "source": source,
                    "dry_run": dry_run,
                }
            )
        )
        script = workdir / f"{name}.sh"
        script.write_text(
            job_script(self.opts.python or sys.executable, "describe", request, answer)
        )
        log = workdir / f"{name}.out"
        job_id = sbatch(
            script,
            [f"--chdir={workdir}", *self.opts.sbatch_options(0)],
            log,
            f"migperf-plan-{cfg.name}"[:60],
        )
        self._wait(job_id)
        try:
            info: dict[str, Any] = json.loads(answer.read_text())
        except (OSError, ValueError):
            state = job_states([job_id])[job_id]
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            raise MigperfError(
                f"the planning job ({state.describe()}) left no plan: "
                + (" | ".join(tail) or f"no output in {log}"),
                hint="check the node's Python has migperf installed (set "
                "`executor: {slurm: {python: ...}}`) and the folder is shared: " + str(workdir),
            ) from None
        if info.get("error"):
            err = info["error"]
            cls = ConfigError if err.get("config") else MigperfError
            raise cls(
                f"{source} on {info.get('host')} (slurm job {job_id}): {err['message']}",
                hint=err.get("hint") or "",
            )
        if info.get("migperf_version") != migperf.__version__:
            raise UsageError(
                f"the nodes run migperf {info.get('migperf_version')}, this driver "
                f"{migperf.__version__}",
                hint="install the same migperf version on the login node and the compute nodes",
            )
        cluster = bind_plan(cfg, source, {"slurm": info})
        return SlurmPlan(cluster, self.opts, workdir, job_id)

    def _wait(self, job_id: str) -> None:
        deadline = time.monotonic() + self.opts.plan_timeout_s
        try:
            while job_states([job_id])[job_id].active:
                if time.monotonic() > deadline:
                    scancel([job_id])
                    raise MigperfError(
                        f"the planning job {job_id} did not finish in "
                        f"{self.opts.plan_timeout_s:g} s (cancelled)",
                        hint="`squeue -j JOB` says why it waits; raise plan_timeout_s, or pick "
                        "another partition",
                    )
                time.sleep(min(0.5, self.opts.poll_s))
        except KeyboardInterrupt:
            scancel([job_id])
            raise

    def run(
        self,
        plan: SlurmPlan,
        store: ResultsStore,
        *,
        resume: bool = False,
        rerun: bool = False,
        on_event: Event | None = None,
    ) -> ClusterReport:
        """Submit the jobs, merge their shards as they run (see :mod:`.slurm_driver`)."""
        return SlurmSweep(
            plan.cluster,
            self.opts,
            plan.workdir,
            store,
            resume=resume,
            rerun=rerun,
            emit=on_event or (lambda kind, **info: None),
            simulate=self.simulate,
            read_only=self.read_only,
        ).run()
